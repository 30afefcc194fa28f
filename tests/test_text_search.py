"""Best-of-N, majority, weighted majority and oracle on a text task, by hand: hand-written
candidates (no model) whose token boundaries are marked with "|", graded by `GradingConfig`."""

import dataclasses

import pytest
import torch

from veriscale.evaluate import draw, grade_search
from veriscale.grading import GradingConfig, TextProblem, answer_key
from veriscale.search import Pool, SearchPlan, repeat_each, search_budgets, select
from veriscale.tasks.base import NEVER
from veriscale.tasks.files import FilesConfig, FileTask

from text_fakes import TextTask, text_rollouts

PROBLEM = TextProblem(text="What is 3 + 4? End with 'Final answer: N'.", gold="7")
# Four samples of one problem; the "<eos>" piece stands for the EOS marker text samplers keep.
SAMPLES = ["Final| answer:| 5|<eos>",                # wrong answer 5, 4 tokens
           "Final| answer:| 7.0|<eos>",              # right (7.0 = 7), 4 tokens, T = 3
           "So| 3+4=7.| Final| answer:| 7|<eos>",    # right, 6 tokens, T = 5: its answer needs all 6
           "I| am| not| sure|<eos>"]                 # no answer, 5 tokens
N = len(SAMPLES)


def scores() -> torch.Tensor:
    """(1, N, 6) verifier scores: 0.5 except where a sample's budget ends (H = 24, 20, 16 give
    6, 5, 4 tokens per sample), so only the score of each sample's last used token matters."""
    s = torch.full((1, N, 6), 0.5)
    s[0, 0, 3], s[0, 1, 3] = 0.8, 0.3  # samples 0 and 1 end at token 4 at every budget
    s[0, 2, 5], s[0, 2, 4] = 0.4, 0.05  # sample 2: final score at 6 tokens, at 5 tokens
    s[0, 3, 4] = 0.9  # sample 3 ends at token 5
    return s


@pytest.fixture
def pool() -> Pool:
    return Pool(TextTask(), [PROBLEM], text_rollouts(SAMPLES), SearchPlan("bon", N), scores())


def _search(pool: Pool, budgets: list[int], rule: str) -> list[dict]:
    """search_budgets with the pool's plan set to selection `rule`."""
    return search_budgets(dataclasses.replace(pool, plan=dataclasses.replace(pool.plan, selection=rule)), budgets)


def test_truncate_keeps_texts_offsets_and_counts_aligned():
    ro = text_rollouts(SAMPLES)
    cut = ro.truncate(4)
    assert cut.tokens.shape == cut.mask.shape == (4, 4) and cut.counts.tolist() == [4, 4, 4, 4]
    assert cut.texts == ["Final answer: 5<eos>", "Final answer: 7.0<eos>", "So 3+4=7. Final answer:", "I am not sure"]
    assert cut.offsets == [[5, 13, 15, 20], [5, 13, 17, 22], [2, 9, 15, 23], [1, 4, 8, 13]]
    for L in range(1, 9):
        cut = ro.truncate(L)
        assert cut.counts.tolist() == [min(L, len(s.split("|"))) for s in SAMPLES]
        assert cut.mask.sum(1).tolist() == cut.counts.tolist() == [len(o) for o in cut.offsets]
        assert cut.texts == ["".join(s.split("|")[:L]) for s in SAMPLES]
        assert [len(t) for t in cut.texts] == [o[-1] for o in cut.offsets]
    assert ro.truncate(9).tokens.shape == (4, 6)  # a cut never pads
    with pytest.raises(ValueError):
        ro.truncate(0)


def test_answer_keys_vote_by_value():
    texts = ["Final| answer:| 7|<eos>", "Final| answer:| 7.0|<eos>", "Final| answer:| 1000|<eos>",
             "Final| answer:| 1,000|<eos>", "\\boxed{x+1}|<eos>", "so| 7|<eos>", "Final| answer:| 7"]
    problems = [PROBLEM] * 4 + [TextProblem("?", "x+1", form="boxed")] + [PROBLEM] * 2
    answers, valid = GradingConfig().answer_keys(problems, text_rollouts(texts))
    assert answers.shape == (7, 1) and answers.dtype == torch.long
    # no cue: no answer; the last is cut right after its "7"
    assert valid.tolist() == [True] * 5 + [False, False]
    a = answers[:, 0].tolist()
    assert a[0] == a[1] == answer_key("7") and a[2] == answer_key("1000") != a[0]
    assert a[3] == answer_key("1,000") != a[2]  # a thousands separator is not a canonical number
    assert a[4] == answer_key("x+1") and a[5] == a[6] == 0
    assert all(0 <= k < 2**63 for k in a)
    assert answer_key("7") != answer_key("7 apples") == answer_key(" 7 apples ")


def test_rules_select_by_hand(pool):
    task, rep = pool.task, repeat_each(pool.prompts, N)
    ro = pool.rollouts.truncate(6)
    assert task.check(rep, ro).tolist() == [NEVER, 3, 5, NEVER]
    answers, valid = task.answer_keys(rep, ro)
    assert valid.tolist() == [True, True, True, False]  # sample 3 abstains
    correct = torch.tensor([[False, True, True, False]])
    final = torch.tensor([[0.8, 0.3, 0.4, 0.9]])  # scores at each sample's last token
    args = answers.view(1, N, 1), valid.view(1, N)
    assert select("bon", correct, final, *args).item() == 3  # highest final score, answer or not
    assert select("maj", correct, None, *args).item() == 1  # "7.0" and "7" outvote "5"; lowest index
    assert select("wmaj", correct, final, *args).item() == 0  # "5" 0.8 beats "7" 0.3 + 0.4
    assert select("oracle", correct, final, *args).item() == 1
    # With sample 2 answerless (its budget cut), "5" and "7" tie at one vote: the lowest index wins.
    assert select("maj", correct, None, answers.view(1, N, 1), torch.tensor([[True, True, False, False]])).item() == 0


def test_search_budgets_by_hand(pool):
    # Tokens per sample 6, 5, 4 at H = 24, 20, 16: samples charge min(count, H/N) of (4, 4, 6, 5).
    spent = {24: 19, 20: 18, 16: 16}
    success = {"bon": [0, 0, 0],  # picks the answerless sample 3 (0.9), at H = 16 sample 0 (0.8)
               "maj": [1, 0, 0],  # at H <= 20 sample 2 loses its "7": "5" (index 0) wins the tie
               "wmaj": [0, 0, 0],  # "5" (0.8) always outweighs "7"
               "oracle": [1, 1, 1]}  # sample 1 is right at every budget
    for rule, ok in success.items():
        rows = _search(pool, [16, 20, 24], rule)
        assert [r["budget"] for r in rows] == [16, 20, 24]
        for r, good in zip(rows, reversed(ok)):
            H = r["budget"]
            assert r["success"] == good and r["tokens"] == spent[H] <= H
            assert r["J"] == (H - spent[H] + 1) * good
            assert r["verifier_calls"] == (N if rule in ("bon", "wmaj") else 0)


def test_truncated_answer_is_lost(pool):
    rep = repeat_each(pool.prompts, N)
    for L, T, valid in [(6, 5, True), (5, NEVER, False), (4, NEVER, False)]:
        ro = pool.rollouts.truncate(L)
        assert pool.task.check(rep, ro)[2].item() == T  # "...Final answer: 7" needs a character after it
        assert pool.task.answer_keys(rep, ro)[1][2].item() == valid


def test_no_method_spends_more_than_its_budget(pool):
    for rule in ("bon", "maj", "wmaj", "oracle"):
        for r in _search(pool, list(range(4, 25)), rule):
            H = r["budget"]
            assert r["tokens"] == sum(min(c, H // N) for c in (4, 4, 6, 5)) <= H


def test_a_search_draw_repeats_list_prompts():
    """The study's path on text prompts (a list): the draw repeats each prompt N times and the
    pool is graded per prompt."""
    other = TextProblem(text="What is 2 + 2?", gold="4")

    class Canned:
        def sample(self, prompts, max_new_tokens, **kw):
            assert prompts == [PROBLEM] * N + [other] * N and max_new_tokens == 6
            return text_rollouts(SAMPLES + ["Final| answer:| 4|<eos>"] * N)

    plan = SearchPlan("maj", N)
    ro = draw(Canned(), [PROBLEM, other], N, plan.sample_len(27))
    assert len(ro) == 2 * N and ro.texts[N:] == ["Final answer: 4<eos>"] * N
    assert [r["success"] for r in grade_search(plan, TextTask(), [PROBLEM, other], ro, [16, 24])] \
        == [0.5, 1.0]


def test_file_task_answer_keys_delegate(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text('{"question": "3 + 4?", "answer": "#### 7"}\n')
    task = FileTask(FilesConfig(path=str(path)))
    ro = text_rollouts(["Final| answer:| 7.0|<eos>"])
    answers, valid = task.answer_keys(task.problems, ro)
    assert answers.tolist() == [[answer_key("7")]] and valid.tolist() == [True]


def test_early_stop_grades_the_prefix_it_stopped_at():
    # 7 is right; a later "Final answer: 8" overrides it in the whole trace
    ro = text_rollouts(["Final| answer:| 7|\nWait|,| Final| answer:| 8|<eos>"])
    problems = [TextProblem(text="3 + 4?", gold="7")]
    h = torch.arange(1, ro.tokens.shape[1] + 1)

    def success(passes_from: int) -> float:
        scores = (h >= passes_from).float()[None, None]  # (1, 1, L): the verifier passes from that token on
        (row,) = search_budgets(Pool(TextTask(), problems, ro, SearchPlan("early_stop", 1), scores), [9])
        return row["success"]

    assert success(4) == 1.0  # stopped after "7\n": the prefix it stopped at is right
    assert success(99) == 0.0  # never stopped: the whole trace, whose final answer is 8
