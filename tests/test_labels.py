"""The verifier's labels are the grader's verdicts: on a text task, the label of every prefix h is
exactly what the task's checker says of the trace cut to h tokens, for late answers, answers
cut by the budget, and a right answer that a later one overrides."""

from types import SimpleNamespace

import torch

from veriscale.grading import TextProblem
from veriscale.learn.verifier import labelled
from veriscale.tasks.base import NEVER
from veriscale.tasks.gym import GymConfig, GymTask

from text_fakes import text_rollouts

# "|" separates the pseudo-tokens of each trace; the gold answer is 7.
TRACES = {
    "late": ("So| 3+4=7.| Final| answer:| 7|<eos>", [0, 0, 0, 0, 0, 1]),
    "overridden": ("Final| answer:| 7|\n|Wait|,| Final| answer:| 8|<eos>", [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]),
    "corrected": ("Final| answer:| 8|\n|Final| answer:| 7|<eos>", [0, 0, 0, 0, 0, 0, 0, 1]),
    "sentence": ("Final| answer:| 7.| Done|<eos>", [0, 0, 0, 1, 1]),  # "7." alone might become "7.5"
    "cut": ("Final| answer:| 7", [0, 0, 0]),
}


def test_labels_are_the_graders_verdict_at_every_prefix():
    task = GymTask(GymConfig(grade_workers=1))
    ro = text_rollouts([t for t, _ in TRACES.values()])
    problems = [TextProblem(text="3 + 4?", gold="7")] * len(ro)
    verdicts = task.prefix_verdicts(problems, ro)
    L = ro.tokens.shape[1]
    graded = torch.stack([task.check(problems, ro.truncate(h)) != NEVER for h in range(1, L + 1)], 1)  # (B, L)
    assert torch.equal(verdicts, graded)
    for i, (_, expected) in enumerate(TRACES.values()):
        assert verdicts[i].int().tolist() == expected + [expected[-1]] * (L - len(expected))
    # 1{h >= T} of the whole trace would say otherwise: the overridden trace's T is NEVER
    T = task.check(problems, ro)
    assert T[1] == NEVER and verdicts[1].any()
    policy = SimpleNamespace(encode_prompts=lambda ps: [[0, 1]] * len(ps), pad_id=0)
    rows = labelled(SimpleNamespace(policy=policy), task, problems, ro)
    assert torch.equal(rows["labels"], verdicts.float())
    assert torch.equal(rows["mask"].sum(1), ro.counts)
