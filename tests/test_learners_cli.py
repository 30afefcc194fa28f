"""The learner and evaluation commands end to end on a transformers policy (conftest's tiny
Llama `lm_dir`, no download), through `veriscale.cli.main`: `train sft | verifier | rl` write run
directories that reload with `load_policy` / `load_verifier` and record their stage, and
`evaluate` prints one table row per method and budget (an SFT run on its own recorded task;
best-of-N and majority on the base policy with the trained verifier). Bad input exits 2 with one
line naming the flag."""

import re

import pytest
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.learn.verifier import Verifier, load_verifier
from veriscale.policy.base import PolicyError, read_meta
from veriscale.policy.hf import HFPolicy
from veriscale.policy.load import load_policy

TASK = "gym:basic_arithmetic"
SFT = ["--set", "n=8", "--set", "optim.steps=2", "--set", "optim.batch_size=4", "--set", "val_traces=4",
       "--set", "test_traces=4", "--set", "eval_batch=8"]
VERIFIER = ["--set", "horizon=16", "--set", "min_positives=0", "--set", "n=8", "--set", "samples.val_prompts=4", "--set", "optim.steps=2",
            "--set", "optim.batch_size=4", "--set", "eval_batch=8"]
RL = ["--set", "horizon=16", "--set", "steps=1", "--set", "n=4", "--set", "prompts_per_step=2", "--set", "G=2"]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(res):
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def _table(stdout: str) -> list[list[str]]:
    """The rows of the last plain-text table of `stdout`, cells split on runs of 2+ spaces."""
    lines = stdout.rstrip().splitlines()
    rule = max(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    return [re.split(r"\s{2,}", line.strip()) for line in lines[rule + 1:]]


@pytest.fixture(scope="module")
def runs(lm_dir, tmp_path_factory):
    """Run directories of `train sft` and `train verifier` from the tiny base, and their results."""
    root = tmp_path_factory.mktemp("cli-runs")
    sft = _ok(_cli("train", "sft", "--base", f"hf:{lm_dir}", "--task", TASK, "--out", root / "A", *SFT))
    ver = _ok(_cli("train", "verifier", "--base", f"hf:{lm_dir}", "--task", TASK, "--out", root / "V", *VERIFIER))
    return {"A": root / "A", "V": root / "V", "sft": sft, "verifier": ver, "root": root}


def test_train_sft_writes_a_policy_run(runs):
    A = runs["A"]
    assert f"wrote {A}; kept step" in runs["sft"].stdout
    meta = read_meta(A)
    assert meta["stage"] == "sft" and meta["policy"] == "hf" and meta["task_spec"] == TASK
    assert meta["training_traces"] == 8 and meta["validation_traces"] == 4 and meta["run"]["n"] == 8
    assert isinstance(load_policy(A), HFPolicy)


def test_train_verifier_writes_a_verifier_run(runs):
    V = runs["V"]
    assert f"wrote {V}; kept step" in runs["verifier"].stdout
    meta = read_meta(V)
    assert meta["stage"] == "verifier" and meta["horizon"] == 16 and meta["task_spec"] == TASK
    assert meta["training_traces"] == 8 and meta["validation_traces"] == 4
    assert isinstance(load_verifier(V), Verifier)
    with pytest.raises(PolicyError, match="verifier"):
        load_policy(V)  # a verifier's body is not a policy to sample


def test_train_rl_outcome_and_verifier_reward(runs, lm_dir):
    R = runs["root"] / "R"
    _ok(_cli("train", "rl", "--base", f"hf:{lm_dir}", "--task", TASK, "--out", R, *RL))
    meta = read_meta(R)
    assert meta["stage"] == "rl" and meta["step"] == 1 and meta["horizon"] == 16 and meta["run"]["reward"] == "outcome"
    assert isinstance(load_policy(R), HFPolicy)
    RV = runs["root"] / "RV"
    _ok(_cli("train", "rl", "--base", f"hf:{lm_dir}", "--task", TASK, "--out", RV, "--verifier", runs["V"],
             "--set", "reward=verifier", *RL))
    assert read_meta(RV)["run"]["reward"] == "verifier" and isinstance(load_policy(RV), HFPolicy)


def test_evaluate_sft_run_on_its_own_task(runs):
    res = _ok(_cli("evaluate", "--policy", runs["A"], "--method", "sft", "--budgets", "16,24", "--prompts", "4"))
    assert res.stdout.startswith(f"{TASK}: 4 held-out prompts")  # the task the run recorded
    rows = _table(res.stdout)
    assert [(r[0], r[1]) for r in rows] == [("sft", "16"), ("sft", "24")]
    for r in rows:
        assert float(r[4]) <= int(r[1]) and float(r[5]) == 0 and r[6] == "4"  # mean tokens <= H, no verifier
    forced = _ok(_cli("evaluate", "--policy", runs["A"], "--method", "sft", "--budgets", "16,24", "--prompts", "4",
                      "--force-budget"))
    assert "budget-forced per H" in forced.stdout
    assert [(r[0], r[1]) for r in _table(forced.stdout)] == [("sft", "16"), ("sft", "24")]


def test_evaluate_search_with_the_trained_verifier(runs, lm_dir):
    res = _ok(_cli("evaluate", "--policy", f"hf:{lm_dir}", "--task", TASK, "--method", "bon,maj",
                   "--verifier", runs["V"], "--budgets", "16", "--prompts", "3"))
    rows = _table(res.stdout)
    assert [(r[0], r[1]) for r in rows] == [("bon", "16"), ("maj", "16")]
    calls = {r[0]: float(r[5]) for r in rows}
    assert calls == {"bon": 4.0, "maj": 0.0}  # best-of-4 scores each of its 4 samples; majority never asks
    assert all(float(r[4]) <= 16 and r[6] == "3" for r in rows)


def test_bad_input_exits_2_with_one_line(runs, lm_dir, tmp_path):
    base = ["--base", f"hf:{lm_dir}", "--task", TASK]
    cases = [
        (["train", "sft", *base, "--out", runs["A"], *SFT], "--out: "),  # not empty
        (["train", "verifier", *base, "--out", tmp_path / "v", "--set", "n=2"], "horizon"),  # text task: H needed
        (["train", "sft", "--base", f"hf:{tmp_path / 'missing'}", "--out", tmp_path / "s"], "--base: "),
        (["train", "sft", "--base", f"hf:{lm_dir}", "--task", "planted", "--out", tmp_path / "s"], "--task: "),
        (["train", "rl", *base, "--out", tmp_path / "r", "--set", "reward=verifier", *RL], "--verifier: "),
        (["evaluate", "--policy", runs["V"], "--method", "base", "--budgets", "16"], "--policy: "),
        (["evaluate", "--policy", f"hf:{lm_dir}", "--method", "base", "--budgets", "16"], "--task: "),
        (["evaluate", "--policy", f"hf:{lm_dir}", "--task", TASK, "--method", "bon", "--budgets", "16"],
         "--verifier: "),
    ]
    for args, where in cases:
        res = _cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert isinstance(res.exception, SystemExit), (args, res.exception)  # no traceback
        errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]  # beside progress bars
        assert len(errors) == 1 and where in errors[0], (args, res.stderr)


def test_train_sft_and_evaluate_on_a_data_file(lm_dir, tmp_path):
    """`--task file:PATH`: SFT on the file's gold solutions, validated on other training rows,
    then evaluated on the file's test rows by the run's recorded task."""
    import json

    data = tmp_path / "gsm.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i % 7}?",
                                          "answer": f"{i} + {i % 7} = {i + i % 7}.\n#### {i + i % 7}"})
                              for i in range(60)))
    out = tmp_path / "A"
    _ok(_cli("train", "sft", "--base", f"hf:{lm_dir}", "--task", f"file:{data}", "--task-set", "test_share=0.2",
             "--out", out, *SFT))
    meta = read_meta(out)
    assert meta["task_spec"] == f"file:{data}" and meta["training_traces"] == 8 and meta["validation_traces"] == 4
    res = _ok(_cli("evaluate", "--policy", out, "--method", "sft", "--budgets", "16", "--prompts", "3"))
    rows = _table(res.stdout)
    assert [r[:2] for r in rows] == [["sft", "16"]] and f"file:{data}" in res.stdout


def test_evaluate_takes_hf_settings_and_threads(lm_dir):
    """`--set hf.KEY=VALUE` and `--threads` reach the transformers policy evaluate loads (hf.chat=on
    is refused by a tokenizer without a chat template); a bad setting, or a key evaluate has no
    config for, is one line naming it."""
    args = ["evaluate", "--policy", f"hf:{lm_dir}", "--task", TASK, "--budgets", "8", "--prompts", "2"]
    res = _ok(_cli(*args, "--set", "hf.progress=false", "--set", "hf.batch_size=2", "--threads", "1"))
    assert [r[:2] for r in _table(res.stdout)] == [["base", "8"]]
    bad = _cli(*args, "--set", "hf.batch_sise=2")
    assert bad.exit_code == 2 and bad.output.startswith("error: --set: hf.batch_sise: unknown key (valid keys: ")
    chat = _cli(*args, "--set", "hf.chat=on")
    assert chat.exit_code == 2 and "hf.chat=on but the tokenizer has no chat template" in chat.output
    other = _cli(*args, "--set", "n=3")
    assert other.exit_code == 2 and "only hf.KEY=VALUE applies, not 'n=3'" in other.output


def test_a_learner_takes_hf_settings_and_threads(lm_dir, tmp_path):
    res = _cli("train", "sft", "--base", f"hf:{lm_dir}", "--task", TASK, "--out", tmp_path / "s", *SFT,
               "--set", "hf.batch_sise=2")
    assert res.exit_code == 2 and "hf.batch_sise: unknown key" in res.output and not (tmp_path / "s").exists()
    _ok(_cli("train", "sft", "--base", f"hf:{lm_dir}", "--task", TASK, "--out", tmp_path / "t", *SFT,
             "--set", "hf.progress=false", "--threads", "1"))
    assert read_meta(tmp_path / "t")["run"]["threads"] == 1
