"""Config validation and the CLI: one-line errors naming the field, exit code 2, nothing written."""

import pytest
from click.testing import CliRunner

from veriscale.cli import main
from veriscale.config import ConfigError, load_config
from veriscale.learn.pretrain import PretrainConfig


@pytest.mark.parametrize("override,field", [
    ("task.vocab=abc", "task.vocab"),
    ("task.q=1.5", "task.q"),
    ("optim.steps=0", "optim.steps"),
    ("bogus=1", "bogus"),
    ("task.heterogeneity=medium", "task.heterogeneity"),
    ("model.d_model=30", "model.d_model"),
    ("task.custom_weights=[1, 'a']", "task.custom_weights[1]"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, None, [override])
    assert str(e.value).startswith(field + ":")


def test_toml_file_and_override_precedence(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('out = "x"\n[task]\nvocab = 12\nq = 0.3\n')
    cfg = load_config(PretrainConfig, p, ["task.q=0.6"])
    assert cfg.out == "x" and cfg.task.vocab == 12 and cfg.task.q == 0.6
    assert isinstance(cfg.task.q, float)


def test_extends_merges_table_by_table_and_refuses_cycles(tmp_path):
    (tmp_path / "base.toml").write_text('out = "b"\n[task]\nvocab = 12\nq = 0.3\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[task]\nq = 0.5\n')
    (tmp_path / "grandchild.toml").write_text('extends = "child.toml"\nout = "g"\n')
    cfg = load_config(PretrainConfig, tmp_path / "grandchild.toml", ["task.vocab=14"])
    assert (cfg.out, cfg.task.vocab, cfg.task.q) == ("g", 14, 0.5)
    (tmp_path / "base.toml").write_text('extends = "grandchild.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(PretrainConfig, tmp_path / "child.toml")


def test_llm_studies_state_only_what_differs():
    """The quick grids and the second task extend studies/llm.toml (and each other) and differ
    from it only where they say so."""
    from veriscale.study.commands import STUDIES
    from veriscale.study.spec import load_study_config
    full, quick, terms = (load_study_config(STUDIES / f"{f}.toml") for f in ("llm", "llm-quick", "llm-terms-quick"))
    assert quick.methods == full.methods and quick.gym == full.gym and set(quick.budgets) <= set(full.budgets)
    assert (quick.eval_prompts, full.eval_prompts, len(full.seeds)) == (24, 200, 3)
    assert terms.rl == quick.rl and (terms.gym.max_terms, terms.gym.max_digits) == (3, 1)


def test_cli_config_error_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "pretrain", "--set", f"out={out}", "--set", "task.horizon=-3"])
    assert res.exit_code == 2
    assert "task.horizon" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_missing_config_file(tmp_path):
    res = CliRunner().invoke(main, ["train", "pretrain", "--config", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "not found" in res.output


def test_cli_evaluate_rejects_bad_budgets_and_missing_run(tmp_path):
    res = CliRunner().invoke(main, ["evaluate", "--policy", str(tmp_path), "--budgets", "a,b"])
    assert res.exit_code == 2 and "--budgets" in res.output
    res = CliRunner().invoke(main, ["evaluate", "--policy", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no such directory" in res.output and len(res.output.strip().splitlines()) == 1


def test_old_spellings_are_refused_with_the_new_name(tmp_path):
    res = CliRunner().invoke(main, ["reproduce", "--quick", "--set", "search_n=4", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "search_n: renamed samples_per_problem" in res.output
    assert not (tmp_path / "s").exists()
    res = CliRunner().invoke(main, ["evaluate", "--policy", "x", "--search-n", "2"])
    assert res.exit_code == 2 and "renamed --samples-per-problem" in res.output


def test_config_study_shows_only_the_tables_its_task_reads():
    text = CliRunner().invoke(main, ["config", "study", "--preset", "studies/llm.toml"]).output
    sections = [line for line in text.splitlines() if line.startswith("[")]
    assert sections == ["[gym]", "[hf]", "[forcing]", "[samples]", "[sft]", "[verifier]", "[rl]"]
    assert "tables this study does not read: planted, base, files" in text
    assert "sft.lora_r" in text and "rl.label_budget" in text  # the learners' tables, typed, every field
    assert "\nheterogeneity " not in text  # a planted-only field
    planted = CliRunner().invoke(main, ["config", "study"]).output
    assert [line for line in planted.splitlines() if line.startswith("[")][:2] == ["[planted]", "[base]"]
    assert "rl_verifier" in planted and "VB: RL against the learned verifier" in planted  # the method table
