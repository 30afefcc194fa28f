"""Diagnostics: estimators against closed forms, the verdict, tiny GPTs pretrained with low and
high heterogeneity, and the `veriscale diagnose` command end to end."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import ConfigError
from veriscale.diagnose import DiagnoseConfig, diagnose, per_prompt, plot_report, resolve, summarize
from veriscale.learn.loop import OptimConfig
from veriscale.learn.pretrain import PretrainConfig, pretrain
from veriscale.policy.gpt import GPTConfig
from veriscale.tasks.base import NEVER, Rollouts
from veriscale.tasks.planted import PlantedConfig, PlantedTask

H = 10


def test_per_prompt_closed_forms():
    T = torch.tensor([[1, 1, NEVER, NEVER],  # R = 10 10 0 0
                      [NEVER] * 4,  # all fail: sigma 0
                      [1, 2, 3, 4]])  # R = 10 9 8 7
    eps = [0.0, 0.25, 1.0]
    sq = per_prompt(T, H, eps, "sqrt", group_size=2)
    sd0, sd2 = math.sqrt(100 / 3), math.sqrt(5 / 3)  # unbiased sds
    assert sq["sigma"].tolist() == pytest.approx([sd0, 0.0, sd2])
    assert sq["mean"].tolist() == pytest.approx([5.0, 0.0, 8.5])
    assert sq["pass"].tolist() == [0.5, 0.0, 1.0]
    assert sq["sigma_correct"][0] == 0.0 and sq["sigma_correct"][1].isnan()  # successes alike / none
    assert sq["sigma_correct"][2] == pytest.approx(sd2)
    # Row 0: thresholds 5, 5 + 0.5*sd0 = 7.9, 5 + sd0 = 10.8.  Row 1 degenerate -> 0.
    # Row 2: thresholds 8.5, 8.5 + 0.5*sd2 = 9.15, 8.5 + sd2 = 9.79.
    assert sq["c"].tolist() == [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.5, 0.25, 0.25]]
    lin = per_prompt(T, H, eps, "linear", group_size=2)
    # linear: eps=0.25 -> margin 0.25: row 2 threshold 8.5 + 0.32 = 8.82 -> 9, 10 above.
    assert lin["c"][2].tolist() == [0.5, 0.5, 0.25]
    # All-equal groups of G=2 among 4 traces with k successes: (C(k,2) + C(4-k,2)) / C(4,2).
    assert sq["all_equal"].tolist() == pytest.approx([2 / 6, 1.0, 1.0])


def test_bernoulli_returns_match_closed_form():
    """Each trace answers at T=1 (R=H) with probability p, else fails: sigma = H sqrt(p(1-p)),
    and c(eps) = p while margin(eps) sigma < H(1-p), 0 beyond."""
    p, N, M = 0.3, 64, 200
    g = torch.Generator().manual_seed(0)
    T = torch.where(torch.rand(N, M, generator=g) < p, 1, NEVER)
    cfg = DiagnoseConfig(budget=H, samples=M, prompts=N, eps=[0.0, 1.0, 4.0], eps_ref=1.0, bootstrap=200)
    s = summarize(T, cfg)
    assert s["sigma_over_H"]["value"] == pytest.approx(math.sqrt(p * (1 - p)), abs=0.02)
    lo, hi = s["sigma_over_H"]["lo"], s["sigma_over_H"]["hi"]
    assert lo < s["sigma_over_H"]["value"] < hi
    # sqrt margin: the success level sits sqrt((1-p)/p) = 1.53 sds above the mean.
    assert s["mean_c"]["value"][0] == pytest.approx(p, abs=0.03)  # eps 0
    assert s["mean_c"]["value"][1] == pytest.approx(p, abs=0.03)  # margin 1 < 1.53
    assert s["mean_c"]["value"][2] == 0.0  # margin 2 > 1.53
    assert s["pass_rate"]["value"] == pytest.approx(p, abs=0.02)
    assert s["verdict"].startswith("YES")


@pytest.mark.parametrize("T_row, start", [([NEVER] * 8, "CANNOT JUDGE: pass rate too low to judge"),
                                          ([1] * 8, "NO: homogeneous")])
def test_verdict_no(T_row, start):
    cfg = DiagnoseConfig(budget=H, samples=8, prompts=4, bootstrap=50)
    s = summarize(torch.tensor([T_row] * 4), cfg)
    assert s["verdict"].startswith(start)
    assert s["degenerate_share"] == 1.0 and s["all_equal_share"]["value"] == 1.0


def test_low_pass_rate_cannot_be_judged_whatever_its_spread():
    """1 success in 64 traces (pass rate 0.016): too low to judge, not "homogeneous" nor "not
    anti-concentrated", whichever prompt the success falls on."""
    cfg = DiagnoseConfig(budget=H, samples=8, prompts=8, bootstrap=200)
    for row in range(2):
        T = torch.full((8, 8), NEVER)
        T[row * 7, 0] = 3
        assert summarize(T, cfg)["verdict"].startswith("CANNOT JUDGE: pass rate too low to judge")


def test_median_sigma_and_low_quantile_of_c():
    """Half the prompts spread (R = 10 or 0: sigma 5.35 over 8 traces), half all-equal (sigma 0, c 0):
    the root-mean-square sigma is sqrt(mean sigma^2), the median sits between the halves, and the
    low quantile of c is 0 while the mean is a half of the spread prompts' 1/2."""
    T = torch.tensor([[1, NEVER] * 4] * 4 + [[1] * 8] * 4)
    cfg = DiagnoseConfig(budget=H, samples=8, prompts=8, eps=[0.0, 0.25], eps_ref=0.25, bootstrap=200)
    s = summarize(T, cfg)
    sd = torch.tensor([10.0, 0.0] * 4).std().item()
    assert s["sigma_over_H"]["value"] == pytest.approx(math.sqrt(sd**2 / 2) / H)
    assert s["sigma_median_over_H"]["value"] == pytest.approx(sd / 2 / H)
    assert s["mean_c"]["value"][0] == pytest.approx(0.25) and s["low_c"]["value"][0] == 0.0


def test_vf_data_file_and_prediction(tmp_path):
    """A VF data file of traces finishing at T = 1 (return H) against a base that finishes half the
    time: VF ahead, and the file's bad rows are refused with their reason."""
    from veriscale.diagnose import prediction, vf_traces

    path = tmp_path / "vf.jsonl"
    path.write_text("".join(json.dumps({"T": 1}) + "\n" for _ in range(16)) + json.dumps({"T": None}) + "\n")
    cfg = DiagnoseConfig(budget=H, samples=4, prompts=4, vf_data=str(path), bootstrap=100)
    T_vf = vf_traces(cfg, None, None)
    assert T_vf.tolist() == [1] * 16 + [NEVER]
    base = torch.tensor([[1, NEVER] * 2] * 4)
    s = summarize(base, cfg)
    p = prediction(base, T_vf, s, cfg)
    assert p["sign"] == "-" and p["text"].startswith("VF ahead at H = 10")
    assert [g["H"] for g in p["gaps"]] == [1, 2, 5, 10]
    path.write_text('{"T": "x"}\n')
    with pytest.raises(ConfigError, match="first-success index or null"):
        vf_traces(cfg, None, None)


def test_config_validation():
    with pytest.raises(ConfigError, match="eps_ref"):
        DiagnoseConfig(eps=[0.0, 1.0], eps_ref=0.5)
    with pytest.raises(ConfigError, match="group_size"):
        DiagnoseConfig(samples=4, group_size=8)
    with pytest.raises(ConfigError, match="text task"):
        resolve(DiagnoseConfig(policy="hf:/nowhere", task="planted"))
    with pytest.raises(ConfigError, match="gym.name"):
        resolve(DiagnoseConfig(policy="smollm2", task="gym:nope"))


# ---- the planted task: teacher closed form and tiny pretrained GPTs ---------------------------
HORIZON, SPREAD = 16, 0.75  # high: filler l uniform on 0..12, so T = l + 1 and R = H - l


def _task_cfg(het: str) -> PlantedConfig:
    # One prompt token and a one-token answer, q = 1: every teacher trace succeeds, so the spread
    # of returns is the configured spread of filler lengths and nothing else.
    return PlantedConfig(vocab=8, prompt_len=1, answer_len=1, horizon=HORIZON, q=1.0, heterogeneity=het,
                         fixed_filler=2, spread_scale=SPREAD, test_prompts=4)


class TeacherSampler:
    def __init__(self, task: PlantedTask):
        self.task = task

    def sample(self, prompts, max_new_tokens, *, temperature=1.0, seed=0) -> Rollouts:
        return self.task.teacher(prompts, torch.Generator().manual_seed(seed), budget=max_new_tokens)


def _uniform_sd(n_values: int) -> float:
    return math.sqrt((n_values**2 - 1) / 12)


def test_teacher_sigma_closed_form():
    cfg = DiagnoseConfig(budget=HORIZON, samples=64, prompts=16, bootstrap=100)
    high = diagnose(TeacherSampler(PlantedTask(_task_cfg("high"))), PlantedTask(_task_cfg("high")), cfg)
    low = diagnose(TeacherSampler(PlantedTask(_task_cfg("none"))), PlantedTask(_task_cfg("none")), cfg)
    assert low["sigma_over_H"]["value"] == 0.0 and low["pass_rate"]["value"] == 1.0
    expected = _uniform_sd(int(SPREAD * HORIZON) + 1) / HORIZON
    assert high["sigma_over_H"]["value"] == pytest.approx(expected, rel=0.1)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny GPTs pretrained on low- and high-heterogeneity teachers (a few seconds each). 1000 steps,
    not fewer: at 500 the high one's pass rate was 1.0 on an AMD EPYC and 0.48 on an Intel Xeon (float
    rounding differs between CPUs); at 1000 it is 1.0 on the Xeon."""
    runs = {}
    for het in ("none", "high"):
        cfg = PretrainConfig(out=str(tmp_path_factory.mktemp(het)), traces=1024, heldout_traces=32, budget_mix=[1.0],
                             task=_task_cfg(het), model=GPTConfig(n_layer=2, n_head=2, d_model=32),
                             optim=OptimConfig(steps=1000, batch_size=64, lr=1e-2, warmup=20, eval_every=1000))
        runs[het] = pretrain(cfg)
    return runs


def test_pretrained_low_and_high_differ_in_sigma_as_configured(tiny_runs):
    # The training split's 4 prompts: the tiny model memorises g there, so sigma measures lengths.
    cfg = {het: DiagnoseConfig(policy=str(d), budget=HORIZON, samples=32, prompts=16, split="train", bootstrap=200)
           for het, d in tiny_runs.items()}
    out = {het: diagnose(*resolve(c), c) for het, c in cfg.items()}
    low, high = out["none"], out["high"]
    assert low["pass_rate"]["value"] > 0.9 and high["pass_rate"]["value"] > 0.9
    assert low["sigma_over_H"]["value"] < 0.05  # fixed filler: every trace finishes at T = 3
    teacher = _uniform_sd(int(SPREAD * HORIZON) + 1) / HORIZON  # 0.234
    assert high["sigma_over_H"]["value"] == pytest.approx(teacher, abs=0.06)
    assert high["sigma_over_H"]["lo"] > low["sigma_over_H"]["hi"]
    assert low["verdict"].startswith("NO: homogeneous") and high["verdict"].startswith("YES")


def test_cli_diagnose_writes_json_pngs_and_table(tiny_runs, tmp_path):
    out = tmp_path / "diag"
    res = CliRunner().invoke(main, ["diagnose", "--policy", str(tiny_runs["high"]), "--budget", "16", "--samples-per-prompt", "8",
                                    "--prompts", "6", "--out", str(out), "--set", "bootstrap=50",
                                    "--set", "margin=linear", "--set", "split=train", "--vf-data", "expert"])
    assert res.exit_code == 0, res.output
    assert "verdict: YES" in res.output and "sigma / H (median over prompts)" in res.output
    assert "prediction (VF data expert, 48 traces):" in res.output
    s = json.loads((out / "diagnosis.json").read_text())
    assert s["margin"] == "linear" and len(s["per_prompt"]["T"]) == 6 and len(s["per_prompt"]["T"][0]) == 8
    for name in ("sigma_hist.png", "anticoncentration.png", "pass_rate_hist.png"):
        (out / name).unlink()
    assert {p.name for p in plot_report(out / "diagnosis.json")} == {"sigma_hist.png", "anticoncentration.png",
                                                                    "pass_rate_hist.png"}


def test_cli_diagnose_errors(tiny_runs):
    res = CliRunner().invoke(main, ["diagnose", "--policy", str(tiny_runs["none"]), "--task", "gym:chain_sum"])
    assert res.exit_code == 2 and "own planted task" in res.output
    res = CliRunner().invoke(main, ["diagnose", "--policy", str(tiny_runs["none"]), "--budget", "99"])
    assert res.exit_code == 2 and "horizon" in res.output
    res = CliRunner().invoke(main, ["diagnose", "--policy", str(tiny_runs["none"]), "--set", "margin=cubic"])
    assert res.exit_code == 2 and "margin" in res.output
    res = CliRunner().invoke(main, ["diagnose", "--policy", str(tiny_runs["none"]), "--budget", "8", "--prompts", "2",
                                    "--samples-per-prompt", "2", "--vf-data", "no/such.jsonl"])
    assert res.exit_code == 2 and "vf_data: cannot read no/such.jsonl" in res.output
