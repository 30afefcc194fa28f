"""The report's statistics against closed forms and hand computations, and the results store's
integrity checks."""

import json
import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from veriscale.study.jobs import config_id
from veriscale.study.store import load_records, read_record, rows, write_record
from veriscale.study.sweep import _schedule, levels
from veriscale.theory import crossing, fit_power_law, scaled, t_interval, vb_shape, vf_shape

X = [8, 16, 32, 64, 128]


class Job(NamedTuple):
    """What the store and the scheduler read of a job: its id, kind, config and dependencies."""

    id: str
    kind: str
    config: dict
    deps: tuple = ()


def test_power_law_fit_recovers_a_noiseless_exponent_exactly():
    fit = fit_power_law(X, {s: [3.0 * x**0.5 for x in X] for s in range(4)})
    assert abs(fit["alpha"] - 0.5) < 1e-12 and abs(fit["lo"] - 0.5) < 1e-12 and abs(fit["hi"] - 0.5) < 1e-12
    assert fit["points"] == 5 and fit["nonpositive"] == [] and fit["boot_too_few"] == 0 and fit["ci_note"] is None


def test_seed_bootstrap_ci_covers_the_true_exponent_on_noisy_seeds():
    rng = np.random.default_rng(7)
    per_seed = {s: list(2.0 * np.array(X) ** -1.0 * np.exp(rng.normal(0, 0.2, len(X)))) for s in range(6)}
    fit = fit_power_law(X, per_seed, seed=1)
    assert fit["lo"] < -1.0 < fit["hi"] and fit["lo"] < fit["alpha"] < fit["hi"] and fit["hi"] - fit["lo"] < 0.5
    # the slope is of log(seed mean), not a fit through the per-seed points
    means = np.mean([per_seed[s] for s in range(6)], axis=0)
    assert math.isclose(fit["alpha"], np.polyfit(np.log(X), np.log(means), 1)[0])


def test_non_positive_means_are_listed_and_the_positive_means_fitted():
    per_seed = {0: [-3.0, 1.0, 4.0, 9.0, 16.0], 1: [1.0, -1.0, 4.0, 7.0, 16.0]}
    fit = fit_power_law(X, per_seed)
    assert fit["nonpositive"] == [{"x": 8.0, "mean": -1.0}, {"x": 16.0, "mean": 0.0}]
    assert fit["points"] == 3 and fit["seed_values_nonpositive"] == 2
    assert math.isclose(fit["alpha"], np.polyfit(np.log(X[2:]), np.log([4.0, 8.0, 16.0]), 1)[0])
    # a resample of seed 0 alone has 4 positive means, of seed 1 alone 4: every draw fits
    assert fit["boot_too_few"] == 0 and np.isfinite(fit["lo"])
    few = fit_power_law(X[:3], {0: [1.0, 2.0, 0.0], 1: [1.0, 2.0, -1.0]})
    assert few["points"] == 2 and np.isfinite(few["alpha"]) and math.isnan(few["lo"])
    assert few["ci_note"] == "fewer than 3 positive means: no CI"
    missing = fit_power_law(X[:3], {0: [1.0, float("nan"), 4.0]})
    assert missing["missing"] == [16.0] and missing["points"] == 2 and math.isclose(missing["alpha"], 1.0)


def test_t_interval_matches_a_hand_computation():
    v = [0.31, 0.42, 0.27, 0.38]
    half = stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2.0
    iv = t_interval(v)
    assert iv["k"] == 4 and math.isclose(iv["mean"], np.mean(v))
    assert math.isclose(iv["lo"], np.mean(v) - half) and math.isclose(iv["hi"], np.mean(v) + half)
    one = t_interval([0.5, float("nan")])
    assert one["k"] == 1 and one["mean"] == 0.5 and math.isnan(one["lo"])


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


def test_schedule_with_slots_starts_the_longest_chain_first_and_keeps_slots_full():
    """With one slot, a job that others wait on starts before an earlier-listed one that fewer
    do, and a learner that becomes ready mid-sweep starts before a draw that was ready before it."""
    draw = Job("draw-1", "draw", {})                                  # level 1: one eval reads it
    samples = Job("samples-1", "samples", {})                         # level 3: verifier -> rl -> eval
    ver = Job("verifier-1", "verifier", {}, ("samples-1",))
    draw2 = Job("draw-2", "draw", {}, ("samples-1",))                  # ready with the verifier, level 1
    rl = Job("rl-1", "rl", {}, ("verifier-1",))
    evals = [Job("eval-1", "eval", {}, ("draw-1",)), Job("eval-2", "eval", {}, ("rl-1", "draw-2"))]
    jobs = [draw, samples, draw2, ver, rl, *evals]
    assert levels(jobs) == {"draw-1": 1, "samples-1": 3, "draw-2": 1, "verifier-1": 2, "rl-1": 1,
                            "eval-1": 0, "eval-2": 0}
    running, order = [], []

    def submit(job):
        assert len(running) < 1, "more jobs submitted than slots"
        running.append(job.id)
        order.append(job.id)

    def wait_any():
        return {"id": running.pop(), "status": "ok"}

    done = [r["id"] for r in _schedule(jobs, submit, wait_any, slots=1)]
    assert sorted(done) == sorted(j.id for j in jobs)
    # the verifier, ready after samples-1, starts before draw-1, ready from the start; then level 1
    # in list order
    assert order == ["samples-1", "verifier-1", "draw-1", "draw-2", "rl-1", "eval-1", "eval-2"]


def test_schedule_starts_a_job_once_its_dependencies_end_and_never_waits_for_others():
    base = Job("base-1", "base", {})
    ver = Job("verifier-1", "verifier", {}, ("base-1",))
    rl = Job("rl-1", "rl", {}, ("base-1", "verifier-1"))
    ev = Job("eval-1", "eval", {}, ("base-1", "rl-1"))
    other = Job("eval-2", "eval", {}, ("done-elsewhere",))  # a finished dependency is not in the list
    running, ended, log = [], set(), []

    def submit(job):
        assert all(d in ended or d == "done-elsewhere" for d in job.deps), job.id
        running.append(job.id)
        log.append(("start", job.id))

    def wait_any():  # the most recent start ends first: a slow first job must not hold back the rest
        job = running.pop()
        ended.add(job)
        log.append(("end", job))
        return {"id": job, "status": "ok"}

    done = [r["id"] for r in _schedule([base, ver, rl, ev, other], submit, wait_any)]
    assert sorted(done) == ["base-1", "eval-1", "eval-2", "rl-1", "verifier-1"]
    assert log[:2] == [("start", "base-1"), ("start", "eval-2")]  # both ready at once, no stage barrier
    assert log.index(("start", "verifier-1")) > log.index(("end", "base-1"))
    assert log.index(("start", "eval-1")) > log.index(("end", "rl-1"))
