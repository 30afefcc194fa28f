"""The report's fits against closed forms, and the results store's integrity checks."""

import json
import math

import numpy as np

from veriscale.study.jobs import Job, config_id
from veriscale.study.store import load_records, read_record, rows, write_record
from veriscale.study.sweep import levels
from veriscale.theory import crossing, fit_power_law, scaled, vb_shape, vf_shape


def test_power_law_fit_recovers_exponent():
    H = [8, 16, 32, 64, 8, 16, 32, 64]
    y = [3.0 * h**0.5 * (1.05 if i % 2 else 0.95) for i, h in enumerate(H)]
    fit = fit_power_law(H, y)
    assert abs(fit["alpha"] - 0.5) < 0.05 and fit["lo"] <= fit["alpha"] <= fit["hi"]
    exact = fit_power_law([2, 4, 8], [4, 16, 64])
    assert abs(exact["alpha"] - 2.0) < 1e-9 and abs(exact["lo"] - 2.0) < 1e-9
    neg = fit_power_law([2, 4, 8], [-1, 2, 4])
    assert neg["excluded"] == 1 and neg["points"] == 2


def test_crossing_interpolates_in_log_x_and_reports_not_reached():
    xs, ys = [8, 16, 32], [0.2, 0.4, 0.6]
    assert crossing(xs, ys, 0.1) == 8
    assert math.isclose(crossing(xs, ys, 0.3), math.sqrt(8 * 16))
    assert crossing(xs, ys, 0.7) is None


def test_theory_shapes_scale_through_one_point():
    n = np.array([10.0, 100.0, 1000.0])
    assert np.allclose(vf_shape(n, sigma=2.0), 2.0 / np.sqrt(n))
    s = scaled(vb_shape(n), 2, 0.5)
    assert math.isclose(s[2], 0.5) and math.isclose(s[0], 50.0)


def _job(i: int) -> Job:
    cfg = {"method": "base", "heterogeneity": "high", "horizon": 8, "n": 4, "seed": i, "mode": "test-time"}
    return Job(config_id("eval", cfg), "eval", cfg)


def test_records_round_trip_and_corruption_is_detected(tmp_path):
    metrics = [{"budget": 8, "J_norm": 0.5, "success": 0.75}]
    paths = [write_record(tmp_path, _job(i), {"status": "ok", "metrics": metrics}) for i in range(3)]
    assert len(load_records(tmp_path)) == 3
    assert rows(load_records(tmp_path))[0]["J_norm"] == 0.5
    # A hand edit breaks the digest; a truncated write is not valid JSON: both read as missing.
    rec = json.loads(paths[0].read_text())
    rec["metrics"][0]["success"] = 1.0
    paths[0].write_text(json.dumps(rec))
    paths[1].write_text(paths[1].read_text()[:40])
    assert read_record(paths[0]) is None and read_record(paths[1]) is None
    assert [r["id"] for r in load_records(tmp_path)] == [_job(2).id]
    assert not list(tmp_path.glob("records/.*.tmp"))  # atomic writes leave no temporaries


def test_config_id_is_stable_and_sensitive():
    a = config_id("eval", {"x": 1, "y": [1, 2]})
    assert a == config_id("eval", {"y": [1, 2], "x": 1})
    assert a != config_id("eval", {"x": 2, "y": [1, 2]})


def test_levels_respect_dependencies_and_finished_deps():
    base = Job("base-1", "base", {})
    ver = Job("verifier-1", "verifier", {}, ("base-1",))
    rl = Job("rl-1", "rl", {}, ("base-1", "verifier-1"))
    ev = Job("eval-1", "eval", {}, ("base-1", "rl-1"))
    assert [[j.id for j in lvl] for lvl in levels([base, ver, rl, ev])] == \
        [["base-1"], ["verifier-1"], ["rl-1"], ["eval-1"]]
    assert [[j.id for j in lvl] for lvl in levels([rl, ev])] == [["rl-1"], ["eval-1"]]
