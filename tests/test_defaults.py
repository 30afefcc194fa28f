"""Defaults that work together: every command given only its required arguments succeeds on a
shipped task, here on tiny models; where a task cannot supply a default count, it adapts."""

import pytest
from click.testing import CliRunner

from veriscale.cli import main


def _ok(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


@pytest.fixture(scope="module")
def learned(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("defaults")
    for learner in ("sft", "verifier", "rl"):
        _ok("train", learner, "--base", base, "--out", root / learner)
    return root


@pytest.mark.parametrize("learner", ["sft", "verifier", "rl"])
def test_each_learner_runs_on_its_defaults(learned, learner):
    assert (learned / learner / "veriscale.json").is_file()


def test_evaluate_and_diagnose_run_on_their_defaults(base, learned, tmp_path):
    res = _ok("evaluate", "--policy", base)  # budgets up to the tiny GPT's own horizon
    assert "H=16" in res.output
    _ok("evaluate", "--policy", learned / "sft")
    _ok("diagnose", "--policy", base, "--out", tmp_path / "d")  # H = the horizon


def test_diagnose_adapts_its_default_prompts_to_a_small_task(lm_dir, tmp_path):
    res = _ok("diagnose", "--policy", f"hf:{lm_dir}", "--task", "gym:basic_arithmetic", "--budget", "8",
              "--samples-per-prompt", "2", "--out", tmp_path / "d")
    assert "supplies 44 distinct test problems: diagnosing 44 prompts" in res.stderr
    res = CliRunner().invoke(main, ["diagnose", "--policy", f"hf:{lm_dir}", "--task", "gym:basic_arithmetic",
                                    "--budget", "8", "--prompts", "48", "--out", str(tmp_path / "e")])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "only 44 distinct test problems" in errors[0], res.output
    assert not (tmp_path / "e").exists()


def test_a_learner_adapts_unset_validation_counts_and_names_what_it_cannot(lm_dir, tmp_path):
    args = ["train", "sft", "--base", f"hf:{lm_dir}", "--task", "gym:basic_arithmetic", "--set", "optim.steps=1",
            "--set", "n=8", "--set", "eval_batch=8"]
    res = _ok(*args, "--out", tmp_path / "a")
    assert "test_traces=44 (default 256" in res.stderr  # the one-digit task has 44 test problems
    res = CliRunner().invoke(main, [*args, "--set", "test_traces=100", "--out", str(tmp_path / "b")])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert "--set test_traces=100" in errors[0] and "--task-set test_share" in errors[0] and "gym." not in errors[0]
