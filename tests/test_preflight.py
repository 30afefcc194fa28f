"""A study whose task, data file or numbers cannot work stops before any directory exists: one
line naming the field (or file and line), exit 2, nothing written."""

import pytest
from click.testing import CliRunner

from veriscale.cli import main

PLANTED = """
name = "pf"
budgets = [4, 8]
n = [8]
heterogeneity = ["high"]
methods = ["base"]
seeds = [0]
eval_prompts = 8
diagnose_prompts = 0
[planted]
vocab = 8
prompt_len = 3
answer_len = 3
test_prompts = 32
"""


def _text_study(tmp_path, task: str, extra: str = "") -> str:
    p = tmp_path / "study.toml"
    p.write_text(f'name = "pf"\npolicy = "hf:{tmp_path / "no-model"}"\ntask = "{task}"\nmethods = ["base"]\n'
                 f'budgets = [8]\nn = [4]\nseeds = [0]\neval_prompts = 4\ndiagnose_prompts = 0\n{extra}')
    return str(p)


def _refused(tmp_path, study: str, *args) -> str:
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["reproduce", study, "--out", str(out), "--workers", "1", "--threads", "1", *args])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert not out.exists()  # no study.json, no lock, no errors/ or records/
    return lines[0]


def _data(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return f"file:{path}"


GSM = b'{"question": "1 + 1?", "answer": "#### 2"}\n'


@pytest.mark.parametrize("case,needle", [
    ("gym:nosuch", "not a reasoning-gym dataset"),
    ("gym:countdown", "countdown is not supported"),
    ("missing", "file not found"),
    ("empty", "no rows"),
    ("malformed", ":2: not valid JSON"),
    ("no answer field", ":1: expected string fields question+answer"),
    ("binary", ":2: not UTF-8 text"),
])
def test_a_bad_task_stops_the_study_before_any_work(tmp_path, case, needle):
    task = {"missing": f"file:{tmp_path / 'nope.jsonl'}",
            "empty": _data(tmp_path, "empty.jsonl", b""),
            "malformed": _data(tmp_path, "bad.jsonl", GSM + b'{"question": "2 + 2?"\n'),
            "no answer field": _data(tmp_path, "noans.jsonl", b'{"question": "1 + 1?"}\n'),
            "binary": _data(tmp_path, "bin.jsonl", GSM + b"\x00\xf5\xff\xfe garbage\n"),
            }.get(case, case)
    line = _refused(tmp_path, _text_study(tmp_path, task))
    assert line.startswith("error: config: task:") and needle in line, line
    if task.startswith("file:"):
        assert task[5:] in line  # the file is named


def test_a_split_too_small_for_the_grid_names_the_field(tmp_path):
    data = _data(tmp_path, "few.jsonl", b"".join(b'{"question": "%d + 1?", "answer": "#### %d"}\n' % (i, i + 1)
                                                for i in range(3)))
    line = _refused(tmp_path, _text_study(tmp_path, data))
    assert "eval_prompts" in line and "asked for 4 test problems but the file has 3" in line, line


def test_too_few_prompts_for_the_forcing_validation_name_the_field(tmp_path):
    rows = b"".join(b'{"question": "%d + 1?", "answer": "#### %d"}\n' % (i, i + 1) for i in range(40))
    study = _text_study(tmp_path, _data(tmp_path, "some.jsonl", rows),
                        'forced_methods = ["base"]\nforcing_validation = 500\n[forcing]\nanswer_tokens = 2\n'
                        '[files]\ntest_share = 0.5\n')
    line = _refused(tmp_path, study)
    assert "forcing_validation (4 + 500 prompts)" in line, line


def test_too_few_prompts_for_the_shaped_bases_name_the_field(tmp_path):
    rows = b"".join(b'{"question": "%d + 1?", "answer": "#### %d"}\n' % (i, i + 1) for i in range(40))
    study = _text_study(tmp_path, _data(tmp_path, "some.jsonl", rows),
                        'shaped_bases = true\nheterogeneity = ["none"]\n[files]\ntest_share = 0.5\nreserve_share = 0.3\n')
    line = _refused(tmp_path, study)
    assert "shape.prompts (96 + 16 validation prompts)" in line, line


def test_an_unloadable_policy_stops_the_study(tmp_path):
    data = _data(tmp_path, "ok.jsonl", b"".join(b'{"question": "%d + 1?", "answer": "#### %d"}\n' % (i, i + 1)
                                              for i in range(40)))
    line = _refused(tmp_path, _text_study(tmp_path, data, "[files]\ntest_share = 0.5\n"))
    assert "policy:" in line and "no-model" in line, line


@pytest.mark.parametrize("setting", ["temperature=nan", "base.optim.lr=inf", "sft.optim.lr=-inf",
                                     "planted.q=nan", "extend_share=nan"])
def test_non_finite_numbers_stop_the_study(tmp_path, setting):
    study = tmp_path / "p.toml"
    study.write_text(PLANTED)
    line = _refused(tmp_path, str(study), "--set", setting)
    assert setting.split("=")[0].split(".")[-1] in line and "finite" in line, line
