"""The study layer end to end on a tiny grid: kill -9 and resume, corrupted records, the report,
and the Ray executor against the local one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import load_config
from veriscale.study.grid import expand
from veriscale.study.jobs import held_out
from veriscale.study.methods import METHODS
from veriscale.study.search_choice import widths
from veriscale.study.spec import StudyConfig
from veriscale.study.store import load_records, rows
from veriscale.study.sweep import run_study

TINY = """
name = "tiny"
budgets = [4, 8]
n = [8, 16]
heterogeneity = ["high"]
methods = ["base", "sft", "bon", "rl_outcome"]
seeds = [0]
eval_prompts = 16
samples_per_problem = 2
diagnose_prompts = 4
diagnose_samples = 2
[planted]
vocab = 8
prompt_len = 3
answer_len = 3
test_prompts = 32
[base]
traces = 128
heldout_traces = 16
[base.model]
n_layer = 1
n_head = 2
d_model = 32
[base.optim]
steps = 4
batch_size = 16
eval_every = 2
[sft]
val_traces = 8
test_traces = 8
optim = { steps = 2, batch_size = 4, eval_every = 1 }
[samples]
r = 2
val_prompts = 8
[verifier]
min_positives = 0  # a 4-step base rarely succeeds; the sweep's mechanics are what is tested
optim = { steps = 2, batch_size = 4, eval_every = 1 }
[rl]
steps = 2
prompts_per_step = 2
G = 2
"""


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("study") / "tiny.toml"
    p.write_text(TINY)
    return p


def _metrics(study_dir: Path) -> dict[str, list]:
    return {r["id"]: r["metrics"] for r in load_records(study_dir)}


@pytest.fixture(scope="module")
def uninterrupted(tiny_toml, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "study"
    counts = run_study(load_config(StudyConfig, tiny_toml), out, threads=1, progress=False)
    assert counts["error"] == 0, counts["errors"]
    return out


def test_grid_expands_to_one_record_per_point(tiny_toml, uninterrupted):
    study = load_config(StudyConfig, tiny_toml)
    evals = [j for j in expand(study) if j.kind == "eval"]
    # sft, bon:shared (N chosen on validation), bon:shared:fixed, bon:per_sample, rl
    per_n = [lab for m, lab in study.runs() if METHODS[m].uses_data]
    data_free = len(study.labels()) - len(per_n)  # base: once per seed, whatever n
    cells = len(study.seeds) * len(study.heterogeneity)
    assert len(per_n) == 5 and data_free == 1
    assert len(evals) == cells * (len(study.n) * len(per_n) + data_free) + len(study.heterogeneity)  # + diagnoses
    assert sorted(_metrics(uninterrupted)) == sorted(j.id for j in evals)
    for rec in load_records(uninterrupted):
        rows, c = rec["metrics"], rec["config"]
        if c["method"] == "diagnose":
            continue
        cap = study.samples_per_problem if c["accounting"] == "per_sample" else 1  # per_sample draws N*H tokens
        assert [r["budget"] for r in rows] == [4, 8] and all(r["tokens"] <= cap * r["budget"] for r in rows)
        d = rec["data"]
        assert set(d) == {"prompts", "expert_traces", "labelled_traces", "reward_queries", "validation_traces",
                          "labels", "choice_labels"}
        # verdicts spent choosing a setting on validation: shared best-of-N's pool of N samples a prompt
        chosen = c["method"] == "bon" and c["accounting"] == "shared" and not c.get("schedule")
        assert d["choice_labels"] == (study.search_validation * study.eval_samples * study.samples_per_problem
                                      if chosen else 0)
        if c["method"] == "sft":
            assert d["expert_traces"] == c["n"] and "test_nll_before" in rec["learner"]["sft"]
            assert d["labels"] == d["expert_traces"] + d["validation_traces"]
        if c["method"] == "bon":
            assert d["labelled_traces"] == c["n"] * 2  # r = 2 rollouts per prompt in TINY
            assert d["labels"] == d["labelled_traces"] + d["validation_traces"]
        if c["method"] == "rl_outcome":
            assert d["reward_queries"] == d["labels"] == rec["learner"]["rl"]["steps"] * 2 * 2  # B x G per step
        if c["method"] == "base":
            assert d["labels"] == 0


def test_records_keep_every_problems_outcome(uninterrupted):
    """Per-problem first-success indices reproduce each row's success and J_H, so intervals can
    resample prompts and gaps can be paired by prompt."""
    for rec in load_records(uninterrupted):
        if rec["config"]["method"] == "diagnose":
            continue
        for row in rec["metrics"]:
            T, H = row["T_per_problem"], row["budget"]
            assert len(T) == row["n"] and all(t is None or 1 <= t <= H for t in T)
            assert abs(sum(t is not None for t in T) / len(T) - row["success"]) < 1e-12
            assert abs(sum((H - t + 1) / H for t in T if t is not None) / len(T) - row["J_norm"]) < 1e-9


def test_shared_best_of_n_runs_at_the_N_validation_chose_beside_the_fixed_N(tiny_toml, uninterrupted):
    study = load_config(StudyConfig, tiny_toml)
    flat = [r for r in rows(load_records(uninterrupted), study.n) if r["method"].startswith("bon:shared")]
    assert {(r["method"], r["budget"], r["n"]) for r in flat} == \
        {(m, H, n) for m in ("bon:shared", "bon:shared:fixed") for H in study.budgets for n in study.n}
    for r in flat:
        if r["method"] == "bon:shared:fixed":
            assert "search" not in r
            continue
        c = r["search"]
        assert c["N"] in widths(study.samples_per_problem) and c["fixed_N"] == study.samples_per_problem
        assert c["val_success"] >= c["fixed_val_success"] and r["tokens"] <= r["budget"]


def test_the_N_is_chosen_on_prompts_outside_the_test_and_training_prompts(tiny_toml):
    study = load_config(StudyConfig, tiny_toml)
    choices = [j for j in expand(study) if j.kind == "search_choice"]
    assert len(choices) == len(study.n) * len(study.seeds)  # one per verifier (bon: its n, seed)
    for choice in choices:
        task, (n, seed) = choice.world.make_task(), choice.validation
        drawn = held_out(task, choice.prompts, choice.validation)
        assert len(drawn) == choice.prompts == study.search_validation
        val = {tuple(p) for p in drawn.tolist()}
        assert not val & {tuple(p) for p in task.prompts("test", study.eval_prompts, 0).tolist()}
        assert not val & {tuple(p) for p in task.prompts("train", n, seed).tolist()}


def test_rerun_skips_finished_runs(tiny_toml, uninterrupted):
    before = {p.name: p.stat().st_mtime_ns for p in (uninterrupted / "records").glob("*.json")}
    counts = run_study(load_config(StudyConfig, tiny_toml), uninterrupted, progress=False)
    assert counts["ok"] == 0 and counts["skipped"] == counts["jobs"]
    assert before == {p.name: p.stat().st_mtime_ns for p in (uninterrupted / "records").glob("*.json")}


def test_kill_9_then_resume_loses_and_duplicates_nothing(tiny_toml, uninterrupted, tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "veriscale.cli", "reproduce", str(tiny_toml), "--out", str(out), "--no-report",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    total = len(_metrics(uninterrupted))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "records").is_dir() and any((out / "records").glob("*.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(_metrics(out)) < total  # killed mid-sweep
    res = CliRunner().invoke(main, ["reproduce", str(tiny_toml), "--out", str(out), "--no-report", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert _metrics(out) == _metrics(uninterrupted)
    assert len(list((out / "records").glob("*.json"))) == total  # no duplicates, no leftovers
    assert not list((out / "records").glob(".*"))


def test_corrupted_record_is_redone(tiny_toml, uninterrupted, tmp_path):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    victim = sorted((out / "records").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:-20])
    counts = run_study(load_config(StudyConfig, tiny_toml), out, threads=1, progress=False)
    assert counts["ok"] == 1
    assert _metrics(out) == _metrics(uninterrupted)


def test_results_and_report_render_from_stored_records(uninterrupted, tmp_path):
    res = CliRunner().invoke(main, ["results", str(uninterrupted), "--parquet", str(tmp_path / "r.parquet")])
    assert res.exit_code == 0, res.output
    assert "rl_outcome" in res.output and (tmp_path / "r.parquet").stat().st_size > 0
    import pyarrow.parquet as pq
    budget_records = [r for r in load_records(uninterrupted) if r["config"]["method"] != "diagnose"]
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 2 * len(budget_records)
    res = CliRunner().invoke(main, ["report", str(uninterrupted)])
    assert res.exit_code == 0, res.output
    html = (uninterrupted / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    findings = json.loads((uninterrupted / "summary.json").read_text())["findings"]
    for method in ("bon:shared", "bon:per_sample", "rl_outcome"):  # the findings name every VB gap over SFT
        assert any(f.startswith(f"Gap {method} - sft (heterogeneity high, n = 16)") for f in findings)
    assert "<h2>The paper's claims on this grid</h2>" in html
    for name in ["fig_a_vs_H.png", "fig_b_vs_n.png", "fig_c_gap_vs_H.png", "fig_e_multiplier.png",
                 "fig_f_best_of_n_accounting.png"]:
        assert (uninterrupted / name).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert {"levels", "gap_vs_H", "learners", "findings"} <= set(summary)


def test_study_config_errors_exit_2_before_work(tiny_toml, tmp_path):
    out = tmp_path / "never"
    for bad, field in [("methods=['base','magic']", "methods"), ("rl.G=1", "rl.G"), ("budgets=[0]", "budgets"),
                       ("methods=['base','sft_search']", "methods: sft_search needs a text task"),
                       ("forced_methods=['sft']", "forced_methods"), ("policy='smollm2'", "policy")]:
        res = CliRunner().invoke(main, ["reproduce", str(tiny_toml), "--out", str(out), "--set", bad])
        assert res.exit_code == 2 and field in res.output, res.output
    assert not out.exists()


def test_ray_backend_gives_the_same_records(tiny_toml, uninterrupted, tmp_path):
    import ray  # the test extra installs it, so this runs in CI

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        counts = run_study(load_config(StudyConfig, tiny_toml), tmp_path / "ray", executor="ray", threads=1,
                           progress=False)
    finally:
        ray.shutdown()
    assert counts["error"] == 0, counts["errors"]
    assert _metrics(tmp_path / "ray") == _metrics(uninterrupted)
