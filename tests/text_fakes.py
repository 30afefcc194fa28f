"""Hand-written text traces and the smallest text task, shared by the text search, leak and label
tests: no model, only `GradingConfig`'s grading of what the traces spell."""

import torch

from veriscale.grading import GradingConfig
from veriscale.tasks.base import Rollouts


class TextTask:
    """The smallest text task: prompts are TextProblems, grading and answers from GradingConfig
    (its checker and judges are what the leak tests replace)."""

    name = "text"

    def __init__(self):
        self.cfg = GradingConfig(grade_workers=1)

    def check(self, prompts, rollouts):
        return self.cfg.first_success(prompts, rollouts)

    def answer_keys(self, prompts, rollouts):
        return self.cfg.answer_keys(prompts, rollouts)


def text_rollouts(samples: list[str]) -> Rollouts:
    """Rollouts whose row i spells samples[i], one pseudo-token per "|"-separated piece."""
    pieces = [s.split("|") for s in samples]
    counts = torch.tensor([len(p) for p in pieces])
    width = int(counts.max())
    offsets = [[len("".join(p[:i + 1])) for i in range(len(p))] for p in pieces]
    mask = torch.arange(width) < counts[:, None]
    tokens = torch.where(mask, torch.arange(1, width + 1), 0)  # ids are never read by text grading
    return Rollouts(tokens, mask, counts, ["".join(p) for p in pieces], offsets)
