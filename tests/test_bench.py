"""`veriscale bench engine` runs end to end at a tiny size and prints every measured row.
Speed is never asserted: the figures depend on the machine and its load."""

from click.testing import CliRunner

from veriscale.cli import main


def test_bench_engine_prints_every_row():
    result = CliRunner().invoke(main, ["bench", "engine", "--batches", "4", "--new-tokens", "8", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    rows = {line.split("|")[1].strip() for line in result.output.splitlines() if line.startswith("| ")}
    assert rows >= {"engine (KV cache)", "reference (full recompute)", "transformers generate (KV cache)",
                    "pretraining step (fwd+bwd+AdamW)", "fp32 matmul peak (2048^3 torch.mm)"}
    assert "MFU" in result.output and "GFLOP/s" in result.output
