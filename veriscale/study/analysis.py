"""Every number of a study's report, computed once from its stored records (`Report`); the
figures (figures.py, curves.py), the verdicts (verdicts.py) and the page (html.py) read it.

Statistics (veriscale/theory.py): intervals are 95% Student-t intervals over seeds; with one
seed, a cell shows the run's own interval over prompts where it has one and no interval
otherwise, and says which. The verdicts' differences (`contrast`) take a t-interval over seeds
and prompts where records keep per-problem outcomes (resample.py). Exponents are slopes of
log(seed mean) on log x with a 95% CI from bootstrapping the seeds; non-positive means are
listed with their values, never dropped silently.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import fields
from pathlib import Path

from veriscale.config import to_dict
from veriscale.grading import GradingConfig
from veriscale.study.grid import expand
from veriscale.study.methods import METHODS, record_label, search_bases
from veriscale.study.resample import contrast
from veriscale.study.store import diagnoses, load_records, rows
from veriscale.tasks.gym import GymConfig
from veriscale.theory import band, crossing, diagonal, fit_power_law, fit_text, fmt, interval, num

# What the learners table states per run: data consumed, and the evidence that each learner moved.
LEARNER_FIELDS = ([f"data.{k}" for k in ("prompts", "expert_traces", "labelled_traces", "reward_queries",
                                         "validation_traces", "labels", "choice_labels")]
                  + [f"learner.sft.{k}" for k in ("test_nll_before", "test_nll_after", "val_nll_before",
                                                   "val_nll_after", "best_step", "steps_planned")]
                  + [f"learner.verifier.{k}" for k in ("start.heldout_loss", "kept.heldout_loss",
                                                       "start.heldout_auc_at_length", "kept.heldout_auc_at_length",
                                                       "start.heldout_auc_final", "kept.heldout_auc_final",
                                                       "best_step", "steps_planned")]
                  + [f"learner.rl.{k}" for k in ("reward_first", "reward_last", "return_first", "return_last",
                                                 "kl_last", "steps")])
NAN = math.nan
# Labels of the data-matched VB methods whose suboptimality J*_H - J_H is read against 1/n.
DATA_MATCHED_VB = ("bon", "wmaj", "rl_verifier")


def spread_text(task, het: str, H: int) -> str:
    """The configured filler-length distribution of a level at budget H, with numbers."""
    if het == "none":
        return f"l = {task.fixed_filler} (fixed)"
    if het in ("low", "high"):
        s = task.low_scale if het == "low" else task.spread_scale
        b = task.spread_exponent
        return f"l ~ U{{0..floor({s:g}·H^{b:g})}} = U{{0..{math.floor(s * H**b)}}} at H = {H}"
    return f"l weights {task.custom_weights}"


class Report:
    """Every number of the report, computed once from the records; figures read it from here."""

    def __init__(self, study, study_dir: Path):
        self.study, self.dir = study, study_dir
        wanted = {j.id for j in expand(study) if j.kind == "eval"}
        self.records = [r for r in load_records(study_dir) if r["id"] in wanted]
        self.expected = len(wanted)
        self.budgets, self.ns = sorted(study.budgets), sorted(study.n)
        self.Hmax, self.nmax = self.budgets[-1], self.ns[-1]
        self.flat = rows(self.records, self.ns)
        self.cells: dict[tuple, dict[int, dict]] = defaultdict(dict)  # (het, n, label, H) -> seed -> row
        for r in self.flat:
            self.cells[(r["heterogeneity"], r["n"], r["method"], r["budget"])][r["seed"]] = r
        present = {r["method"] for r in self.flat}
        labels = study.labels()
        self.labels = [m for m in labels if m in present]
        self.hets = [h for h in study.levels if any(r["heterogeneity"] == h for r in self.flat)]
        self.vf = study.vf_reference
        self.vb = [m for m in self.labels if m in study.vb_methods]
        # each VB method at its setting chosen on validation: not the fixed-N twins (`:shared:fixed`)
        self.vb_chosen = [m for m in self.vb if not m.endswith(":fixed")]
        self.didactic = study.track == "didactic"
        # the task's own settings that differ from the defaults (not the grader's, not the name)
        own = {f.name for f in fields(GymConfig)} - {f.name for f in fields(GradingConfig)} - {"name"}
        default = to_dict(GymConfig())
        self.gym = {k: v for k, v in to_dict(study.gym).items() if k in own and v != default[k]}
        self.diag = diagnoses(self.records)
        # (level, H) -> how a text study's shaped base was built (its diagnosis record's learner)
        self.shaped = {(r["config"]["heterogeneity"], r["config"]["horizon"]): r["learner"]["shaped_base"]
                       for r in self.records if r["config"]["method"] == "diagnose"
                       and "shaped_base" in r.get("learner", {})}
        self.c, self.pairs = diagonal(self.budgets, self.ns)
        self.runs: dict[tuple, list[dict]] = defaultdict(list)  # (het, horizon, n, label) -> records
        for r in self.records:
            c = r["config"]
            label = record_label(c)
            self.runs[(c["heterogeneity"], c["horizon"], c["n"], label)].append(r)
        self.findings: list[str] = []

    def mode(self) -> str:
        """How H was swept, for every caption."""
        if not self.didactic:
            chosen = (" (forcing chosen per H on validation prompts; the fixed schedule as method:fixed)"
                      if self.study.forcing_validation and self.study.forced_methods else "")
            return (f"sequential methods in forced_methods sampled once per H with budget forcing{chosen}, the others "
                    "once at H_max and truncated (re-graded); search truncates N samples of floor(H_max/N) tokens"
                    f"{self.n_choice()}")
        return ("test-time mode: learners trained once at H_max, sampled once and truncated"
                if self.study.mode == "test-time" else "horizon mode: task and learners built per H") + self.n_choice()

    def n_choice(self) -> str:
        """How shared best-of-N's N was set, for the captions."""
        return ("; shared best-of-N's N chosen per H on validation prompts (the fixed N as method:shared:fixed)"
                if any(m.endswith(":shared:fixed") for m in self.labels) else "")

    # ---- cells -----------------------------------------------------------------------------
    def where(self, het: str) -> str:
        """What a figure calls one group: "level high", or a gym task with the settings that tell
        two studies of one dataset apart ("gym:basic_arithmetic, max_terms=3")."""
        if self.didactic or self.study.shaped_bases:
            return f"level {het}"
        return ", ".join([het, *(f"{k}={v}" for k, v in self.gym.items())]) if het.startswith("gym:") else het

    def values(self, het, n, label, H, key) -> dict[int, float]:
        """seed -> the metric `key` of one grid cell (J: mean return in tokens; sigma_over_H: the
        sd of the first-success index over successful traces, per budget token)."""
        return {s: r["T_std"] / r["budget"] if key == "sigma_over_H" else r.get(key, NAN)  # NaN: an older record
                for s, r in self.cells.get((het, n, label, H), {}).items()}

    def legend(self, label: str) -> str:
        """A method's label with its role in the comparison: the VF reference, a VB method, or
        another SFT policy drawn as a control (e.g. gold-trace SFT beside search-trace SFT)."""
        method = METHODS[label.split(":")[0]]
        role = ("VF" if method.name == self.vf else "VB" if method.vb else
                "VF control" if method.learner == "sft" else None)
        return f"{label} ({role})" if role else label

    def iv(self, het, n, label, H, key) -> dict:
        """Interval of one cell's metric: over seeds and prompts for a return or success rate whose
        records keep per-problem outcomes (every seed shares the held-out prompts, so the prompt
        part of the variance is the one more seeds do not shrink; cut to the metric's range), else
        over seeds; one seed without outcomes: its within-run interval if stored."""
        if key in ("J", "J_norm", "success") and (het, n, label, H) in self.cells:
            crossed = self.contrast(key, [(1.0, (het, n, label, H))])
            if crossed and crossed.get("how") == "crossed":
                return crossed
        vals = self.values(het, n, label, H, key)
        out = interval(vals.values())
        if out["k"] == 1:
            r = self.cells[(het, n, label, H)][next(s for s, v in vals.items() if math.isfinite(v))]
            lo, hi = ((r["J_norm_lo"] * H, r["J_norm_hi"] * H) if key == "J"
                      else (r.get(f"{key}_lo"), r.get(f"{key}_hi")))
            if lo is not None and hi is not None:
                out.update(lo=lo, hi=hi, how="within-run")
        return out

    def gap_values(self, het, n, label, ref, H, key="J") -> dict[int, float]:
        """seed -> value(label) - value(ref) over the seeds both have."""
        a, b = self.values(het, n, label, H, key), self.values(het, n, ref, H, key)
        return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}

    def contrast(self, key: str, terms: list[tuple[float, tuple]]) -> dict | None:
        """Interval of sum_i w_i · key(cell_i) for `terms` (w_i, (het, n, label, H)), paired by seed
        and prompt: a t-interval over both, or over seeds alone (resample.contrast)."""
        return contrast([(w, self.cells.get(cell, {})) for w, cell in terms], key, self.study.eval_samples)

    def learner(self, het, H, n, label, field: str) -> dict:
        """Interval over seeds of a number in the records' data/learner sections ("learner.sft.best_step");
        records without the field do not count (a stored NaN, e.g. an undefined AUC, does)."""
        vals = []
        for v in self.runs.get((het, H, n, label), []):
            for p in field.split("."):
                v = v.get(p) if isinstance(v, dict) else None
            if v is not None:
                vals.append(v)
        return interval(vals)

    def series(self, keys: list[tuple], per_key) -> tuple[dict, list[dict]]:
        """(seed -> values along `keys`, NaN where missing; the interval at each key)."""
        vals = [per_key(*k) for k in keys]
        seeds = sorted(set().union(*vals)) if vals else []
        return {s: [v.get(s, NAN) for v in vals] for s in seeds}, [interval(v.values()) for v in vals]

    # ---- analyses ----------------------------------------------------------------------------
    def levels(self) -> list[dict]:
        """Table 1: each heterogeneity level at H_max and the largest n."""
        out, Hm, n = [], self.Hmax, self.nmax
        for het in self.hets:
            d = self.diag.get((het, Hm))
            diag = None
            if d:
                i = min(range(len(d["eps"])), key=lambda j: abs(d["eps"][j] - d["eps_ref"]))
                diag = {"sigma_over_H": d["sigma_over_H"], "pass_rate": d["pass_rate"], "verdict": d["verdict"],
                        "c_ref": {"eps": d["eps"][i], **{k: d["mean_c"][k][i] for k in ("value", "lo", "hi")}}}
            row = {"heterogeneity": het, "H": Hm, "n": n, "spread": spread_text(self.study.planted, het, Hm),
                   "expert_sigma_over_H": self.iv(het, n, "expert", Hm, "sigma_over_H"),
                   "base_sigma_over_H": self.iv(het, n, "base", Hm, "sigma_over_H"), "diagnosis": diag,
                   "base_success": {H: self.iv(het, n, "base", H, "success") for H in self.budgets}}
            out.append(row)
            dtext = (f"diagnosis sigma(R)/H = {band(diag['sigma_over_H'])}, c(eps = {diag['c_ref']['eps']:g}) = "
                     f"{band(diag['c_ref'])}, verdict: {diag['verdict']}") if diag else "no diagnosis record"
            self.findings.append(f"Level {het} ({row['spread']}): measured sigma(T)/H at H = {Hm} of the expert's "
                                 f"successful traces {fmt(row['expert_sigma_over_H'])}, of the base policy's "
                                 f"{fmt(row['base_sigma_over_H'])}; {dtext}.")
        return out

    def bases(self) -> list[dict]:
        """A text study's shaped bases at H_max, least to most heterogeneous as designed: how each
        was built (traces, tokens, validation NLL before/after; the mean and sd of its training
        traces' first-success index) and what its diagnosis measured."""
        out = []
        for het in self.hets:
            b, d = self.shaped.get((het, self.Hmax)), self.diag.get((het, self.Hmax))
            if b is None:
                continue
            T = [t for t in b["data_T"] if t is not None]
            i = d["eps"].index(d["eps_ref"]) if d else 0
            out.append({"level": het, **{k: v for k, v in b.items() if k != "data_T"},
                        "data_T_mean": statistics.fmean(T) if T else None,
                        "data_T_sd": statistics.pstdev(T) if T else None,
                        "diagnosis": None if d is None else {
                            "H": self.Hmax, "sigma_over_H": d["sigma_over_H"],
                            "sigma_median_over_H": d.get("sigma_median_over_H"), "pass_rate": d["pass_rate"],
                            "c_ref": {"eps": d["eps_ref"], **{k: d["mean_c"][k][i] for k in ("value", "lo", "hi")}},
                            "verdict": d["verdict"]}})
        return out

    def clones(self) -> list[dict]:
        """Each VF clone at H_max and the largest n next to the target it clones."""
        out, Hm, n, m = [], self.Hmax, self.nmax, getattr(self.study.planted, "answer_len", None)
        for het in self.hets:
            for label in ("sft", "sft_homogeneous"):
                if (het, n, label, Hm) not in self.cells:
                    continue
                if label == "sft":
                    target = {k: self.iv(het, n, "expert", Hm, k) for k in ("success", "T_mean", "sigma_over_H")}
                    name = f"expert of level {het}"
                else:  # the homogeneous control expert answers at once, always right
                    target = {k: {"mean": v, "lo": v, "hi": v, "k": 1, "how": "exact"}
                              for k, v in (("success", 1.0), ("T_mean", float(m)), ("sigma_over_H", 0.0))}
                    name = f"homogeneous control (T = m = {m}, sigma = 0)"
                row = {"heterogeneity": het, "method": label, "target": name, "H": Hm, "n": n,
                       "nll_before": self.learner(het, Hm, n, label, "learner.sft.test_nll_before"),
                       "nll_after": self.learner(het, Hm, n, label, "learner.sft.test_nll_after"),
                       **{k: self.iv(het, n, label, Hm, k) for k in ("success", "T_mean", "sigma_over_H")},
                       **{f"target_{k}": v for k, v in target.items()}}
                out.append(row)
                self.findings.append(
                    f"{label} at level {het} (n = {n}, H = {Hm}) against its target, the {name}: success "
                    f"{fmt(row['success'])} vs {fmt(row['target_success'])}; mean T {fmt(row['T_mean'])} vs "
                    f"{fmt(row['target_T_mean'])}; sigma(T)/H {fmt(row['sigma_over_H'])} vs "
                    f"{fmt(row['target_sigma_over_H'])}; test NLL {fmt(row['nll_before'])} -> {fmt(row['nll_after'])}.")
        return out

    def suboptimality(self) -> list[dict]:
        """Suboptimality vs n at H_max: VF = J(expert) - J(sft), VB = J*_H - J(VB), fitted."""
        out, Hm = [], self.Hmax
        jstar = Hm - self.study.planted.answer_len + 1  # answering at once, correctly
        keys = [(n,) for n in self.ns]
        for het in self.hets:
            todo = [("VF", self.vf, -0.5, lambda n, h=het: self.gap_values(h, n, "expert", self.vf, Hm))]
            todo += [("VB", m, -1.0,
                      lambda n, h=het, m=m: {s: jstar - v for s, v in self.values(h, n, m, Hm, "J").items()})
                     for m in self.vb if m.startswith(DATA_MATCHED_VB)]
            for kind, label, slope, per_n in todo:
                per, pts = self.series(keys, per_n)
                if not per:
                    self.findings.append(f"{kind} suboptimality of {label} at level {het} cannot be computed: it needs "
                                         + (f"records of both expert and {label}." if kind == "VF" else "its records."))
                    continue
                fit = fit_power_law(self.ns, per)
                what = f"J_H(expert) - J_H({label})" if kind == "VF" else f"J*_H - J_H({label}), J*_H = {jstar}"
                out.append({"heterogeneity": het, "kind": kind, "method": label, "quantity": what, "H": Hm,
                            "theory_slope": slope, "points": [{"n": n, **p} for n, p in zip(self.ns, pts)], "fit": fit})
                self.findings.append(f"{kind} suboptimality {what} (tokens) vs n at H = {Hm}, level {het}: "
                                     f"{fit_text(fit)}; theory: slope {slope:g} "
                                     f"({'sigma*sqrt(1/n)' if kind == 'VF' else '1/n, the fast rate'}).")
        return out

    def gaps(self) -> list[dict]:
        """VB - VF gap vs H in tokens, at the largest n and on the diagonal n = c*H."""
        settings = [("fixed_n", [(H, self.nmax) for H in self.budgets])]
        if self.pairs:
            settings.append(("diagonal", self.pairs))
        else:
            self.findings.append(f"The grid (budgets {self.budgets}, n {self.ns}) has no diagonal n = c*H with at "
                                 "least two points: the gap with data growing with compute cannot be fitted.")
        out = []
        for setting, pairs in settings:
            for het in self.hets:
                for m in self.vb:
                    per, pts = self.series(pairs, lambda H, n: self.gap_values(het, n, m, self.vf, H))
                    _, spts = self.series(pairs, lambda H, n: self.gap_values(het, n, m, self.vf, H, "success"))
                    if not per:
                        continue
                    fit = fit_power_law([H for H, _ in pairs], per)
                    out.append({"setting": setting, "heterogeneity": het, "method": m, "reference": self.vf,
                                "points": [{"H": H, "n": n, "J_gap": p, "success_gap": sp}
                                           for (H, n), p, sp in zip(pairs, pts, spts)], "fit": fit})
                    group = f"{'heterogeneity' if self.didactic or self.study.shaped_bases else 'task'} {het}"
                    where = (f"{group}, n = {self.nmax}" if setting == "fixed_n" else
                             f"{group}, diagonal n = {self.c}*H, pairs (H, n) = {pairs}")
                    theory = ("reference slopes 1 and 1/2 drawn; the theory's alpha = 1/2 is for data growing "
                              "with compute (the diagonal)" if setting == "fixed_n" else
                              "theory: alpha = 1/2 (VB scales test-time compute by H^(1/2) over VF)")
                    self.findings.append(f"Gap {m} - {self.vf} ({where}): J_H gap in tokens vs H: {fit_text(fit)}; "
                                         f"{theory}. Success@H gap at H = {pairs[-1][0]}: {fmt(spts[-1])}.")
        return out

    def sigma_vs_H(self) -> list[dict]:
        """Horizon mode: measured sigma(T) of the expert and the base policy vs H, fitted."""
        out, beta = [], self.study.planted.spread_exponent
        for het in self.hets:
            for label in ("expert", "base"):
                per, pts = self.series([(H,) for H in self.budgets],
                                       lambda H, h=het, m=label: self.values(h, self.nmax, m, H, "T_std"))
                if not per:
                    continue
                fit = fit_power_law(self.budgets, per)
                conf = 0.0 if het == "none" else beta if het in ("low", "high") else None
                out.append({"heterogeneity": het, "method": label, "configured_beta": conf,
                            "points": [{"H": H, **p} for H, p in zip(self.budgets, pts)], "fit": fit})
                self.findings.append(f"sigma(T) of {label} at level {het} vs H (horizon mode): {fit_text(fit)}; "
                                     f"configured: the filler spread grows like H^{num(conf)}.")
        return out

    def best_of_n(self) -> None:
        """Findings only (the numbers are in `results`): both accountings at H_max."""
        Hm, n, N = self.Hmax, self.nmax, self.study.samples_per_problem
        for het in self.hets:
            for base in search_bases(self.labels):
                parts = [f"{acc}: success {fmt(self.iv(het, n, f'{base}:{acc}', Hm, 'success'))} with "
                         f"{fmt(self.iv(het, n, f'{base}:{acc}', Hm, 'tokens'))} tokens drawn per problem"
                         for acc in ("shared", "per_sample") if (het, n, f"{base}:{acc}", Hm) in self.cells]
                self.findings.append(f"Best-of-{N} {base} at level {het}, H = {Hm}, n = {n}: " + "; ".join(parts) +
                                     f" (shared draws at most H = {Hm}; per_sample up to N*H = {N * Hm}).")

    def unmoved(self) -> None:
        """Findings only: every learner run that never left its start, per seed. The learners
        table pools seeds, so one seed's untrained verifier would hide in a mean."""
        readers: dict[str, list[str]] = defaultdict(list)  # verifier artifact -> methods that read it
        stuck: dict[str, str] = {}  # verifier artifact -> what happened, in words
        policies: dict[str, str] = {}  # SFT or RL policy artifact -> the same
        for r in self.records:
            c, learner = r["config"], r.get("learner") or {}
            label = record_label(c)
            where = f"level {c['heterogeneity']}, H = {c['horizon']}, n = {c['n']}, seed {c['seed']}"
            if (v := learner.get("verifier")) and v["best_step"] == -1:
                readers[c["verifier"]].append(label)
                ran = v["curve"][-1]["step"] + 1 if v.get("curve") else "?"
                stuck[c["verifier"]] = (f"The verifier of {where} kept its untrained start: its validation "
                                        f"{v.get('select', 'loss')} never improved on the start's in {ran} steps, "
                                        "so its score is one constant (the base rate)")
            if (sft := learner.get("sft")) and sft["best_step"] == -1:
                policies[c["policy"]] = f"{label} ({where}): SFT kept its start; its held-out NLL never fell."
            if (rl := learner.get("rl")) and len({p["reward"] for p in rl.get("curve", [])}) == 1:
                policies[c["policy"]] = (f"{label} ({where}): RL's training reward was the same at every step "
                                         f"({num(rl['curve'][0]['reward'])}), so it had no learning signal.")
        self.findings += policies.values()  # once per trained policy, however many records read it
        for vid, text in stuck.items():
            self.findings.append(f"{text}; {', '.join(sorted(set(readers[vid])))} read it (best-of-N then takes "
                                 "the first of its samples, the weighted vote is the plain vote, RL gets no signal).")

    def learners(self) -> list[dict]:
        """Table 5: data consumed and learner evidence per level, H, n and method (seed means)."""
        keys = sorted((k for k, rs in self.runs.items()
                       if any(r.get("learner") or any((r.get("data") or {}).values()) for r in rs)),
                      key=lambda k: (self.hets.index(k[0]) if k[0] in self.hets else 0, k[1], k[2] or 0, k[3]))
        out = []
        for het, H, n, label in keys:
            row = {"heterogeneity": het, "H": H, "n": n, "method": label}
            for f in LEARNER_FIELDS:
                if (iv := self.learner(het, H, n, label, f))["k"]:
                    row[f.removeprefix("learner.")] = iv["mean"]
            out.append(row)
        return out

    def results(self) -> list[dict]:
        """Every grid cell: J_H/H, J_H (tokens), success@H and tokens, with intervals."""
        return [{"heterogeneity": het, "n": n, "method": m, "H": H, "seeds": len(self.cells[(het, n, m, H)]),
                 **{k: self.iv(het, n, m, H, k) for k in ("J_norm", "J", "success", "tokens")}}
                for het in self.hets for n in self.ns for m in self.labels for H in self.budgets
                if (het, n, m, H) in self.cells]

    def multipliers(self) -> list[dict]:
        """Tokens (and data) the VF reference needs to reach each VB method's mean success: the
        crossing of VF's curve, interpolated in log x, over what the VB method was allowed (a
        per-sample method draws N samples of H tokens: N·H); "at most" when VF is already above the
        target at the grid's first point (the true crossing may lie below the grid)."""
        def mean(*cell):
            return self.iv(*cell, "success")["mean"] if cell in self.cells else NAN

        out = []
        for het in self.hets:
            for m in self.vb:
                times = self.study.samples_per_problem if m.endswith(":per_sample") else 1
                for axis, xs, cell in (("tokens", self.budgets, lambda x, lab: (het, self.nmax, lab, x)),
                                       ("data", self.ns, lambda x, lab: (het, x, lab, self.Hmax))):
                    vf = [mean(*cell(x, self.vf)) for x in xs]
                    for x in xs:
                        target = mean(*cell(x, m))
                        hit = crossing(xs, vf, target) if math.isfinite(target) else None
                        kind = ("not reached" if hit is None else "at most" if hit == xs[0] and vf[0] > target
                                else "interpolated")
                        allowed = x * times if axis == "tokens" else x
                        out.append({"heterogeneity": het, "method": m, "axis": axis, "at": x,
                                    "multiplier": None if hit is None else hit / allowed, "kind": kind})
        return out
