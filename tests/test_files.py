"""User data files: GSM8K and MATH rows from JSONL and Parquet, graded with math-verify;
malformed rows are reported with file and line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from veriscale.tasks.base import NEVER, Rollouts
from veriscale.tasks.files import DataFileError, FilesConfig, FileTask, read_problems

GSM = {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}
MATH = {"problem": "What is $1/2 + 1/4$?", "solution": "We get $\\boxed{\\frac{3}{4}}$."}


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_gsm8k_and_math_rows(tmp_path):
    path = _jsonl(tmp_path / "mix.jsonl", [GSM, "", MATH, {**GSM, "answer": "#### 1,200", "id": 5}])
    gsm, math_, big = read_problems(path)
    assert (gsm.gold, gsm.form, gsm.judge, gsm.group) == ("7", "number", "exact", f"{path}:1")
    assert gsm.text.startswith(GSM["question"]) and "Final answer:" in gsm.text
    assert (math_.gold, math_.form, math_.group) == ("\\frac{3}{4}", "boxed", f"{path}:3")
    assert "\\boxed{}" in math_.text
    assert big.gold == "1200"


@pytest.mark.parametrize("line, match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"question": "q"}), "expected string fields"),
    (json.dumps({"question": "q", "answer": "the answer is 7"}), "must end with '#### N'"),
    (json.dumps({"problem": "p", "solution": "so \\boxed{3"}), "no complete \\\\boxed"),
    (json.dumps([1, 2]), "expected an object"),
])
def test_malformed_jsonl_row_names_file_and_line(tmp_path, line, match):
    path = _jsonl(tmp_path / "bad.jsonl", [GSM, MATH, line])
    with pytest.raises(DataFileError, match=match) as err:
        read_problems(path)
    assert str(err.value).startswith(f"{path}:3: ")


def test_parquet_rows_and_malformed_row(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist([GSM, GSM]), good)
    assert [p.gold for p in read_problems(good)] == ["7", "7"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([GSM, {"question": "q", "answer": "no marker"}]), bad)
    with pytest.raises(DataFileError, match=f"{bad}:row 2: GSM8K"):
        read_problems(bad)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataFileError, match="not a readable Parquet"):
        read_problems(tmp_path / "junk.parquet")
    with pytest.raises(DataFileError, match="file not found"):
        read_problems(tmp_path / "missing.jsonl")


def test_file_task_grades_numbers_exactly_and_boxes_with_math_verify(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [GSM, MATH])
    task = FileTask(FilesConfig(path=str(path)))
    gsm, math_ = read_problems(path)
    texts = ["3 + 4 = 7. Final answer: 7.<eos>", "so it is \\boxed{0.75}", "so it is \\boxed{\\frac{3}{5}}"]
    L = max(map(len, texts))
    counts = torch.tensor([len(t) for t in texts])
    r = Rollouts(tokens=torch.zeros(3, L, dtype=torch.long), mask=torch.arange(L)[None] < counts[:, None],
                 counts=counts, texts=texts, offsets=[list(range(1, len(t) + 1)) for t in texts])
    T = task.check([gsm, math_, math_], r)
    assert T.tolist() == [texts[0].index("7.<") + 1, len(texts[1]) - 1, NEVER]
    assert len(task.prompts("test", 2, seed=0)) == 2
    with pytest.raises(ValueError, match="has 2"):
        task.prompts("test", 3, seed=0)


def test_file_task_validation_prompts_and_gold_solutions(tmp_path):
    rows = [{**GSM, "question": f"Tom has {i} apples and buys 4. How many?",
             "answer": f"{i} + 4 = {i + 4}\n#### {i + 4}"} for i in range(6)]
    task = FileTask(FilesConfig(path=str(_jsonl(tmp_path / "d.jsonl", rows + [MATH])), test_share=0.0))
    train = task.prompts("train", 3, seed=0)
    val = task.validation_prompts(train, 4, seed=1)
    assert len(val) == 4 and not {p.text for p in val} & {p.text for p in train}
    with pytest.raises(ValueError):  # 7 problems: 3 taken, only 4 left
        task.validation_prompts(train, 5, seed=1)
    traces = task.expert_traces(task.problems, seed=0)
    assert traces[0] == "0 + 4 = 4\n#### 4" and traces[-1] == MATH["solution"]  # the file's worked solutions
    with pytest.raises(ValueError, match="homogeneous"):
        task.expert_traces(train, seed=0, homogeneous=True)
