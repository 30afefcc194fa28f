"""A forced method's forcing is chosen per budget on validation prompts, never on the test set:
the rule (highest validation success among targets H' <= H, the fixed schedule on a tie), the
prompts it reads (outside the learner's training prompts and the test prompts), and a tiny LLM
study's chosen draws and records (the choice beside each row, the fixed schedule reported as
`sft:fixed`, the chosen draw graded as a test draw of that forcing)."""

import json

import pytest

from veriscale.study.execute import artifact_dir
from veriscale.study.forcing_choice import CHOICES_FILE, candidates, choose
from veriscale.study.grid import expand
from veriscale.study.jobs import CHOICE_FILE, DRAW_FILE, DrawJob, held_out
from veriscale.study.store import load_records, rows
from veriscale.study.sweep import run_study
from veriscale.tasks.load import make_task

from test_llm_study import _study


def test_candidates_are_the_targets_up_to_H_fixed_schedule_first():
    assert candidates([32, 64, 128], 64, [0.25, 0.0]) == [(64, 0.25), (64, 0.0), (32, 0.25), (32, 0.0)]
    assert candidates([32, 64, 128], 32, [0.0]) == [(32, 0.0)]


def test_choice_takes_the_best_validation_success_and_the_fixed_schedule_on_a_tie():
    budgets, shares = [32, 64, 128], [0.25, 0.0]
    success = {(32, 0.25): 0.5, (32, 0.0): 0.4, (64, 0.25): 0.3, (64, 0.0): 0.3, (128, 0.25): 0.2, (128, 0.0): 0.6}
    assert choose(success, budgets, 32, shares)["target"] == 32
    at64 = choose(success, budgets, 64, shares)  # a shorter target beats the fixed schedule
    assert (at64["target"], at64["extend_share"], at64["val_success"], at64["fixed_val_success"]) == \
        (32, 0.25, 0.5, 0.3)
    at128 = choose(success, budgets, 128, shares)  # extension off at the full budget
    assert (at128["target"], at128["extend_share"]) == (128, 0.0)
    tie = {c: 0.5 for c in success}
    for H in budgets:
        assert (choose(tie, budgets, H, shares)["target"], choose(tie, budgets, H, shares)["extend_share"]) == \
            (H, 0.25)


@pytest.fixture(scope="module")
def chosen(lm_dir, tmp_path_factory):
    study = _study(lm_dir, methods=["base", "sft"], n=[8], forcing_validation=4)
    out = tmp_path_factory.mktemp("forcing-choice")
    counts = run_study(study, out, workers=1, threads=1, progress=False)
    assert counts["error"] == 0, counts["errors"]
    return study, out


def test_validation_prompts_avoid_the_test_and_training_prompts(chosen):
    study, _ = chosen
    task = make_task(study.task, gym=study.gym)
    choice = next(j for j in expand(study) if j.kind == "forcing_choice")
    n, seed = choice.validation
    val = {p.text for p in held_out(task, choice.prompts, choice.validation)}
    assert len(val) == choice.prompts
    assert not val & {p.text for p in task.prompts("test", study.eval_prompts, 0)}
    assert not val & {p.text for p in task.prompts("train", n, seed)}


def test_records_carry_the_choice_and_the_fixed_schedule_beside_it(chosen):
    study, out = chosen
    assert study.labels() == ["base", "sft", "sft:fixed"]
    flat = [r for r in rows(load_records(out), study.n) if r["method"].startswith("sft")]
    assert {(r["method"], r["budget"]) for r in flat} == {(m, H) for m in ("sft", "sft:fixed") for H in study.budgets}
    for r in flat:
        if r["method"] == "sft":
            f = r["forcing"]
            assert f["target"] <= r["budget"] and f["extend_share"] in study.forcing_shares
            assert f["val_success"] >= f["fixed_val_success"]
        else:
            assert "forcing" not in r
    # the verdicts spent on the choice: every candidate's validation draw, counted beside `labels`
    candidates = len(next(j for j in expand(study) if j.kind == "forcing_choice").draws)
    for rec in load_records(out):
        if rec["config"]["method"] == "sft":
            want = 0 if rec["config"].get("schedule") else candidates * study.forcing_validation * study.eval_samples
            assert rec["data"]["choice_labels"] == want


def test_a_chosen_draw_is_the_test_draw_of_its_forcing(chosen):
    study, out = chosen
    jobs = {j.id: j for j in expand(study)}
    choice = next(j for j in jobs.values() if j.kind == "forcing_choice")
    picked = json.loads((artifact_dir(out, choice.id) / CHOICES_FILE).read_text())["chosen"]
    for j in (j for j in jobs.values() if j.kind == "chosen_draw"):
        d = artifact_dir(out, j.id)
        c = json.loads((d / CHOICE_FILE).read_text())
        assert (c["target"], c["extend_share"]) == (picked[str(j.width)]["target"], picked[str(j.width)]["extend_share"])
        drawn = json.loads((d / DRAW_FILE).read_text())
        assert drawn["width"] == c["target"] <= j.width
        assert all(len(ids) <= c["target"] for ids in drawn["ids"])
        if c["draw"] == j.fixed:  # the fixed schedule chosen: the very same traces
            assert drawn == json.loads((artifact_dir(out, j.fixed) / DRAW_FILE).read_text())


def test_a_choice_other_than_the_fixed_schedule_draws_that_forcing(chosen, tmp_path):
    """A choice of target 24 at budget 32 without extension: the chosen draw holds exactly what
    the DrawJob of that forcing draws, 24 tokens wide."""
    study, out = chosen
    j = next(j for j in expand(study) if j.kind == "chosen_draw" and j.width == 32)
    fake = {"chosen": {"32": {"target": 24, "extend_share": 0.0, "val_success": 1.0, "fixed_val_success": 0.0}}}
    (tmp_path / "choice").mkdir()
    (tmp_path / "choice" / CHOICES_FILE).write_text(json.dumps(fake))
    dep = lambda i: tmp_path / "choice" if i == j.choice else artifact_dir(out, i)  # noqa: E731
    j.make(dep, tmp_path / "chosen")
    c = json.loads((tmp_path / "chosen" / CHOICE_FILE).read_text())
    reference = DrawJob(j.world, j.policy, j.prompts, j.per_prompt, 24, j.forcing.at(24, 0.0), j.temperature,
                        j.seed, j.sampler)
    assert c["draw"] == reference.id != j.fixed
    reference.make(dep, tmp_path / "reference")
    assert json.loads((tmp_path / "chosen" / DRAW_FILE).read_text()) == \
        json.loads((tmp_path / "reference" / DRAW_FILE).read_text())
