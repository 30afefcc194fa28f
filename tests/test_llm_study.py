"""A tiny LLM-track study (tiny from-config Llama saved locally, reasoning-gym prompts) through
the one study machinery: every method writes one record per budget, no method spends more than
H, base draws are shared across n, a rerun skips everything, the report renders, a changed base
model is refused, and config errors stop before any work."""

import dataclasses
import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from veriscale.cli import main
from veriscale.config import ConfigError, from_dict, to_dict
from veriscale.learn.verifier import VerifierConfig, load_verifier
from veriscale.search import repeat_each
from veriscale.study.grid import expand
from veriscale.study.execute import artifact_dir
from veriscale.study.jobs import DRAW_FILE, SCORES_FILE, held_out
from veriscale.study.analysis import Report
from veriscale.study.report import write_report
from veriscale.study.search_choice import widths
from veriscale.study.spec import study_from_dict
from veriscale.study.store import load_records, rows
from veriscale.study.sweep import load_study, run_study
from veriscale.study.verdicts import data_side, prediction_check


def _study(lm_dir, **kw):
    data = {"name": "tiny-llm", "policy": f"hf:{lm_dir}", "task": "gym:basic_arithmetic", "budgets": [24, 32],
            "n": [8, 12], "seeds": [0], "eval_prompts": 6, "samples_per_problem": 2, "accounting": ["shared"],
            "diagnose_prompts": 3, "diagnose_samples": 2, "gym": {"grade_workers": 1},
            "forcing": {"answer_tokens": 4}, "samples": {"r": 2, "val_prompts": 3},
            "sft": {"val_traces": 3, "test_traces": 3, "eval_batch": 8, "optim": {"steps": 2, "batch_size": 4}},
            "verifier": {"train_layers": 1, "min_positives": 0, "optim": {"steps": 2, "batch_size": 4}},
            "rl": {"steps": 1, "prompts_per_step": 2, "G": 2, "adv_norm": "std"},
            # a random tiny model never succeeds, so it has no search traces (tested on hand-made
            # samples in test_text_learners.py)
            "methods": ["base", "sft", "bon", "maj", "wmaj", "rl_outcome"], "forced_methods": ["sft"],
            "search_validation": 3, **kw}
    return study_from_dict(data)


@pytest.fixture(scope="module")
def done(lm_dir, tmp_path_factory):
    study = _study(lm_dir)
    out = tmp_path_factory.mktemp("llm-study")
    counts = run_study(study, out, workers=1, threads=1, progress=False)
    return study, out, counts


def test_every_method_records_every_budget_within_budget(done):
    study, out, counts = done
    assert counts["error"] == 0, counts["errors"]
    flat = rows(load_records(out), study.n)
    assert {(r["method"], r["n"], r["budget"]) for r in flat} == \
        {(lab, n, H) for lab in study.labels() for n in study.n for H in study.budgets}
    for r in flat:
        assert 0 <= r["tokens"] <= r["budget"] and 0 <= r["success"] <= 1
    diag = [r for r in load_records(out) if r["config"]["method"] == "diagnose"]
    assert len(diag) == 1 and diag[0]["metrics"][0]["budget"] == 32  # the base's diagnosis at H_max


def test_base_draws_are_shared_across_n_and_forced_draws_are_per_budget(done):
    study, _, _ = done
    jobs = expand(study)
    evals = [j for j in jobs if j.kind == "eval"]
    base = {json.dumps(j.config["draws"]) for j in evals if j.config["method"] == "base"}
    assert len(base) == 1  # the base policy's traces do not depend on n
    sft = [j for j in evals if j.config["method"] == "sft" and j.config.get("schedule") == "fixed"][0]
    assert sorted(sft.config["draws"]) == ["24", "32"]
    draws = {j.id: j for j in jobs if j.kind == "draw"}
    for H, draw_id in sft.config["draws"].items():  # s1's two edits: the cap, and "Wait" before extend_share x H
        forcing = draws[draw_id].config["forcing"]
        assert forcing["min_tokens"] == round(study.extend_share * int(H)) and forcing["cap"]
    for schedule in (None, "fixed"):  # N chosen on validation, and the fixed N
        search = {json.dumps(j.config["draws"]) for j in evals
                  if j.config["method"] in ("bon", "maj", "wmaj") and j.config.get("schedule") == schedule}
        assert len(search) == 1  # one pool of base samples serves every selection rule and n


def test_a_search_pool_is_scored_once_as_the_per_example_reference_scores_it(done):
    study, out, _ = done
    jobs = {j.id: j for j in expand(study)}
    evals = [j for j in jobs.values() if j.kind == "eval" and j.config["method"] in ("bon", "wmaj")
             and j.config.get("schedule") is None]  # N chosen on validation: the pool of N samples of H_max
    assert len(evals) == 2 * len(study.n) and len({j.config["scores"] for j in evals}) == len(study.n)
    scores = jobs[evals[0].config["scores"]]
    c, task = scores.config, scores.world.make_task()
    verifier = load_verifier(artifact_dir(out, c["verifier"]), task)
    stored = load_file(str(artifact_dir(out, evals[0].config["scores"]) / SCORES_FILE))["scores"]
    d = json.loads((artifact_dir(out, c["draw"]) / DRAW_FILE).read_text())
    prompts = repeat_each(task.prompts("test", c["prompts"], 0), d["per_prompt"])
    ro = verifier.policy.rollouts(d["ids"], d["width"])
    assert stored.shape == (study.eval_prompts * study.samples_per_problem, d["width"])
    assert torch.allclose(stored, verifier.score_reference(prompts, ro), atol=1e-5)


def test_shared_best_of_n_reads_its_N_chosen_on_scored_validation_prompts(done):
    """Every shared best-of-N row names the N validation chose; the validation pool is scored on
    its own prompts (outside the test set) exactly as the per-example reference scores them."""
    study, out, _ = done
    jobs = {j.id: j for j in expand(study)}
    flat = [r for r in rows(load_records(out), study.n) if r["method"] in ("bon:shared", "maj:shared", "wmaj:shared")]
    assert len(flat) == 3 * len(study.n) * len(study.budgets)
    assert all(r["search"]["N"] in widths(study.samples_per_problem) and r["tokens"] <= r["budget"] for r in flat)
    choice = next(j for j in jobs.values() if j.kind == "search_choice" and j.scores)
    sc = jobs[choice.scores]
    task = sc.world.make_task()
    val = held_out(task, sc.prompts, sc.validation)
    assert len(val) == study.search_validation
    assert not {p.text for p in val} & {p.text for p in task.prompts("test", study.eval_prompts, 0)}
    verifier = load_verifier(artifact_dir(out, sc.verifier), task)
    d = json.loads((artifact_dir(out, sc.draw) / DRAW_FILE).read_text())
    stored = load_file(str(artifact_dir(out, sc.id) / SCORES_FILE))["scores"]
    ro = verifier.policy.rollouts(d["ids"], d["width"])
    assert torch.allclose(stored, verifier.score_reference(repeat_each(val, d["per_prompt"]), ro), atol=1e-5)


def test_rerun_skips_everything_and_report_renders(done):
    study, out, _ = done
    again = run_study(study, out, workers=1, threads=1, progress=False)
    assert again["ok"] == 0 and again["skipped"] == again["jobs"]
    html = write_report(out).read_text()
    assert "transformers model" in html and "Apache-2.0" not in html and (out / "fig_tokens.png").is_file()
    assert "(h) The learners" in html and (out / "fig_h_learners.png").is_file()  # verifier and RL curves


def test_records_alone_resume_without_rebuilding_artifacts(done, tmp_path):
    """A study kept as records/ + study.json (artifacts deleted) reruns nothing; a new seed
    builds only its own artifacts."""
    study, out, counts = done
    shutil.copytree(out / "records", tmp_path / "records")
    shutil.copy(out / "study.json", tmp_path / "study.json")
    again = run_study(study, tmp_path, workers=1, threads=1, progress=False)
    assert again["ok"] == again["error"] == 0 and again["skipped"] == again["jobs"]
    wider = dataclasses.replace(study, seeds=[0, 1], methods=["base", "sft"])
    new = [j for j in expand(wider) if j.id not in {k.id for k in expand(study)}]
    ran = run_study(wider, tmp_path, workers=1, threads=1, progress=False)
    assert ran["ok"] == len(new) > 0 and ran["error"] == 0  # no artifact of seed 0 was rebuilt


def test_a_study_stored_before_decode_attention_existed_keeps_its_job_ids(done, tmp_path):
    """A study.json without `hf.decode_attention` ran with SDPA decoding: it loads so, and its jobs
    hash their settings as they did before the knob existed; the bmm default makes new jobs."""
    study, out, _ = done
    data = json.loads((out / "study.json").read_text())
    assert data["hf"]["decode_attention"] == "bmm"
    data["hf"].pop("decode_attention")
    (tmp_path / "study.json").write_text(json.dumps(data))
    stored = load_study(tmp_path)
    assert stored.hf.decode_attention == "sdpa"
    old, new = expand(stored), expand(study)
    assert all("decode_attention" not in json.dumps(j.config) for j in old)
    assert {j.id for j in old}.isdisjoint(j.id for j in new)  # every job of a text study hashes the settings


def test_figure_legends_name_each_methods_role(done):
    from veriscale.study.analysis import Report
    study, out, _ = done
    rep = Report(study, out)
    assert [rep.legend(m) for m in ("base", "sft", "bon:shared", "maj:shared", "rl_outcome")] == \
        ["base", "sft (VF)", "bon:shared (VB)", "maj:shared", "rl_outcome (VB)"]
    rep.vf = "sft_search"  # the LLM studies' reference: gold-trace SFT becomes the drawn control
    assert rep.legend("sft") == "sft (VF control)" and rep.legend("sft_search") == "sft_search (VF)"
    # figure titles tell two studies of one dataset apart by the settings that differ from the defaults
    assert rep.where("gym:basic_arithmetic") == "gym:basic_arithmetic"
    terms = Report(dataclasses.replace(study, gym=dataclasses.replace(study.gym, max_terms=3)), out)
    assert terms.where("gym:basic_arithmetic") == "gym:basic_arithmetic, max_terms=3"


def test_records_carry_the_learners_curves(done):
    study, out, _ = done
    recs = {r["config"]["method"]: r for r in load_records(out) if r["config"]["method"] in ("bon", "rl_outcome")}
    ver, rl = recs["bon"]["learner"]["verifier"], recs["rl_outcome"]["learner"]["rl"]
    assert [p["step"] for p in ver["curve"]][0] == -1 and all("heldout_auc_final" in p for p in ver["curve"])
    assert len(rl["curve"]) == rl["steps"] == study.rl["steps"] and rl["stopped"] == "steps"
    assert recs["rl_outcome"]["data"]["reward_queries"] == rl["steps"] * study.rl["prompts_per_step"] * study.rl["G"]



def test_a_changed_base_model_is_never_reused(done, lm_dir, tmp_path):
    import shutil

    study, _, _ = done
    copy = tmp_path / "lm"
    shutil.copytree(lm_dir, copy)
    moved = _study(copy)
    ids = {j.id for j in expand(moved)}
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size, other weights
    assert not ids & {j.id for j in expand(_study(copy))}  # the digest is part of every job id


def test_llm_study_config_errors_name_the_field(lm_dir, tmp_path):
    with pytest.raises(ConfigError, match="methods"):
        _study(lm_dir, methods=["base", "nope"])
    with pytest.raises(ConfigError, match="expert needs a planted task"):
        _study(lm_dir, methods=["base", "expert"])
    with pytest.raises(ConfigError, match="forced_methods"):
        _study(lm_dir, forced_methods=["bon"])
    bad = tmp_path / "bad.toml"
    bad.write_text(f'policy = "hf:{lm_dir}"\ntask = "gym:basic_arithmetic"\nmethods = ["base"]\n[rl]\nstepz = 3\n')
    res = CliRunner().invoke(main, ["reproduce", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "rl." in res.output and not (tmp_path / "x").exists()
    res = CliRunner().invoke(main, ["reproduce", str(bad), "--sampler", "vllm", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and not (tmp_path / "y").exists()
    res = CliRunner().invoke(main, ["reproduce", str(bad), "--quick", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "bad-quick.toml" in res.output and not (tmp_path / "z").exists()
    (tmp_path / "bad-quick.toml").write_text(bad.read_text().replace("stepz", "stepq"))  # --quick reads the sibling
    res = CliRunner().invoke(main, ["reproduce", str(bad), "--quick", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "stepq" in res.output and not (tmp_path / "z").exists()


def test_vllm_sampler_without_vllm_or_gpu_is_a_clear_error(lm_dir, tmp_path):
    res = CliRunner().invoke(main, ["diagnose", "--policy", f"hf:{lm_dir}", "--task", "gym:basic_arithmetic",
                                    "--sampler", "vllm", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "vllm" in res.output.lower() and not (tmp_path / "d").exists()


def test_learners_train_with_transformers_under_the_vllm_sampler(lm_dir):
    from veriscale.policy.hf_sampler import HFSampler
    from veriscale.policy.vllm import BackendUnavailable
    from veriscale.policy.text import HFConfig
    from veriscale.study.world import World
    from veriscale.tasks.gym import GymConfig

    world = World("gym:basic_arithmetic", GymConfig(), None, f"hf:{lm_dir}", None, HFConfig())
    assert isinstance(world.base_policy(None).sampler, HFSampler)  # a learner never needs vLLM
    with pytest.raises(BackendUnavailable):  # sampling jobs do ask for vLLM (absent here)
        world.base_policy(None, "vllm")


def test_relearn_repeats_a_studys_learner_and_changes_only_what_is_set(done, tmp_path):
    study, out, _ = done
    ver = next(j for j in expand(study) if j.kind == "verifier")
    runner = CliRunner()
    head = lambda d: load_file(str(d / "value_head.safetensors"))  # noqa: E731
    same = runner.invoke(main, ["relearn", str(out), ver.id, "--out", str(tmp_path / "same")])
    assert same.exit_code == 0, same.output
    kept, again = head(artifact_dir(out, ver.id)), head(tmp_path / "same")
    assert kept.keys() == again.keys() and all(torch.equal(kept[k], again[k]) for k in kept)
    one = runner.invoke(main, ["relearn", str(out), ver.id, "--set", "optim.steps=1", "--set", "patience=0",
                               "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    meta = json.loads((tmp_path / "one" / "veriscale.json").read_text())
    assert meta["steps_planned"] == 1 and meta["run"]["patience"] == 0
    want = to_dict(from_dict(VerifierConfig, ver.config["cfg"]))  # the study's config, every field
    assert {**meta["run"], "optim": None} == {**want, "patience": 0, "optim": None} \
        and meta["run"]["optim"] == {**want["optim"], "steps": 1}
    bad = runner.invoke(main, ["relearn", str(out), ver.id, "--set", "optim.stepz=1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "verifier.optim.stepz" in bad.output and not (tmp_path / "bad").exists()
    draw = next(j for j in expand(study) if j.kind == "draw")
    not_learner = runner.invoke(main, ["relearn", str(out), draw.id, "--out", str(tmp_path / "draw")])
    assert not_learner.exit_code == 2 and "not a learner" in not_learner.output


def test_one_search_pool_serves_both_accountings(lm_dir):
    """search_pool = "one": a single pool of H_max tokens a sample per seed, scored once, read by
    both accountings (and by shared best-of-N at its N chosen on validation); per_accounting
    draws and scores one pool each (H_max / N wide for the fixed N sharing H)."""
    for choice, pools in (("one", 1), ("per_accounting", 2)):
        study = _study(lm_dir, accounting=["shared", "per_sample"], search_pool=choice, n=[8])
        jobs = {j.id: j for j in expand(study)}
        search = [j for j in jobs.values() if j.kind == "eval" and j.config["method"] in ("bon", "maj", "wmaj")]
        draw_ids = {d for j in search for d in j.config["draws"].values()}
        scores = {j.config["scores"] for j in search if j.config["scores"]}
        assert len(search) == 9 and len(draw_ids) == pools and len(scores) == pools  # shared, shared:fixed, per_sample
        widths = sorted(jobs[d].config["width"] for d in draw_ids)
        assert widths == ([32] if choice == "one" else [16, 32])  # H_max = 32, N = 2
    # with the shared accounting alone the fixed N's pool is H_max / N wide; the chosen N reads H_max
    study = _study(lm_dir, accounting=["shared"], search_pool="one", n=[8])
    jobs = {j.id: j for j in expand(study)}
    widths = {j.config.get("schedule"): {jobs[d].config["width"] for d in j.config["draws"].values()}
              for j in jobs.values() if j.kind == "eval" and j.config["method"] == "bon"}
    assert widths == {"fixed": {16}, None: {32}}


def test_the_cloned_datas_returns_reach_the_prediction_check(done):
    """The SFT record keeps the first-success index of every trace it cloned, and the prediction
    check reads the VF data's J_H from them: the mean over seeds of mean(max(H - T + 1, 0))."""
    study, out, _ = done
    rep = Report(study, out)
    recs = [r for r in load_records(out) if r["config"]["method"] == "sft" and r["config"]["n"] == max(study.n)]
    Ts = [r["learner"]["sft"]["data_T"] for r in recs]
    assert Ts and all(len(T) == r["data"]["expert_traces"] for T, r in zip(Ts, recs))
    for H in study.budgets:
        J, _ = data_side(rep, study.task, H)
        want = sum(sum(max(H - t + 1, 0) if t is not None else 0 for t in T) / len(T) for T in Ts) / len(Ts)
        assert J["value"] == pytest.approx(want)
    entry = prediction_check(rep)[0]
    assert entry["predicted"] is not None, entry["predicted_sign"]
