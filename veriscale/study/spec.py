"""A study: the grid n x H x heterogeneity x method x seed, and the configs of every stage.

Shipped studies live in `studies/*.toml`; every field is validated like any other config.
Two ways to sweep H (SPEC §2):
- `test-time`: learners are trained once at H_max = max(budgets) and each trained policy is
  sampled once at H_max; every smaller budget is read off by truncation (search methods: the
  same sample pool truncated to the per-sample length of each budget).
- `horizon`: the task, its teacher data and every learner are built for each H separately.

Methods: `base` (pi_b), `expert` (the level's expert process itself, the target VF clones),
`sft` (VF on the level's expert), `sft_homogeneous` (VF on the homogeneous control expert), the
best-of-N selections `bon`, `maj`, `wmaj`, `oracle` (each run under every best-of-N `accounting`
and labelled `bon:shared`, `bon:per_sample`, ...), and RL: `rl_outcome` (0/1 reward, the
paper's), `rl_return` (shaped return, ours), `rl_verifier` (against the learned verifier).
`base` and `expert` do not depend on n: they are evaluated once per seed and drawn at every n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from veriscale.config import ConfigError, apply_overrides, from_dict, knob, read_toml
from veriscale.learn.loop import OptimConfig
from veriscale.policy.gpt import GPTConfig
from veriscale.tasks.planted import PlantedConfig

METHODS = ("base", "expert", "sft", "sft_homogeneous", "bon", "maj", "wmaj", "oracle",
           "rl_outcome", "rl_return", "rl_verifier")
SEARCH = ("bon", "maj", "wmaj", "oracle")
NO_DATA = ("base", "expert")  # methods that use no training data: one run per seed, shown at every n
VB_METHODS = ("bon", "wmaj", "rl_outcome", "rl_return", "rl_verifier")
ACCOUNTINGS = ("shared", "per_sample")
LEVELS = ("none", "low", "high", "custom")


def method_label(method: str, accounting: str | None) -> str:
    """The name a run is reported under: search methods carry their accounting."""
    return f"{method}:{accounting}" if accounting else method


@dataclass
class BaseStage:
    """Pretraining of pi_b, shared by every run with the same heterogeneity (and H in horizon mode).
    Defaults (ours, measured in BENCHMARKS.md): a curriculum over filler spreads of H/8, H/4, H/2
    and H, which is what lets the base learn the hidden map at H = 128 under heterogeneous filler."""

    traces: int = knob(16384, "teacher traces in the pretraining set", min=1)
    heldout_traces: int = knob(256, "held-out teacher traces for the loss curve", min=1)
    data_seed: int = knob(0, "seed of the pretraining data", min=0)
    budget_mix: list[float] = knob([0.125, 0.25, 0.5, 1.0], "fractions f of H whose filler spreads the "
                                   "pretraining curriculum covers (see `veriscale config pretrain`)", min=0.0, max=1.0)
    curriculum: bool = knob(True, "train on the budget_mix shares in increasing order")
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=800))


@dataclass
class StudyConfig:
    name: str = knob("didactic", "study name (used in the report title)")
    mode: Literal["test-time", "horizon"] = knob("test-time", "how H is swept (see module docstring)")
    budgets: list[int] = knob([8, 16, 32, 64, 128], "token budgets H (test-time: evaluated by truncation)", min=1)
    n: list[int] = knob([16, 32, 64, 128, 256], "training-data sizes n (prompts with expert traces / rollouts)",
                        min=1)
    heterogeneity: list[str] = knob(["none", "low", "high"], "heterogeneity levels (task.heterogeneity)")
    methods: list[str] = knob(["base", "expert", "sft", "bon", "wmaj", "rl_outcome", "rl_verifier"],
                              f"methods to run, from {', '.join(METHODS)}")
    accounting: list[str] = knob(list(ACCOUNTINGS), "best-of-N accountings: shared (N samples share H) and/or "
                                 "per_sample (each sample gets H); see veriscale/search.py")
    seeds: list[int] = knob([0, 1, 2, 3, 4], "learner seeds (data draw, init, sampling)", min=0)
    eval_prompts: int = knob(512, "held-out prompts every method is evaluated on", min=1)
    eval_samples: int = knob(1, "sequential traces per prompt for sequential methods", min=1)
    search_n: int = knob(4, "N of best-of-N / majority", min=1)
    temperature: float = knob(1.0, "sampling temperature at evaluation", min=0.0)
    vf_reference: str = knob("sft", "the VF method gaps are measured against")
    diagnose_prompts: int = knob(128, "prompts of the base policy's diagnosis (heterogeneity, anti-concentration)",
                                 min=2)
    diagnose_samples: int = knob(16, "traces per prompt of the base policy's diagnosis", min=2)
    # task.horizon is set by the study: max(budgets) in test-time mode, each H in horizon mode.
    task: PlantedConfig = field(default_factory=PlantedConfig)
    base: BaseStage = field(default_factory=BaseStage)
    sft: dict = knob({}, "overrides of SFTConfig fields (listed by `veriscale config sft`)")
    verifier: dict = knob({}, "overrides of VerifierConfig fields (`veriscale config verifier`)")
    rl: dict = knob({}, "overrides of RLConfig fields (`veriscale config rl`)")

    track = "didactic"

    @property
    def vb_methods(self) -> tuple[str, ...]:
        """Labels of the VB methods this study runs (search methods once per accounting)."""
        return tuple(method_label(m, a) for m in self.methods if m in VB_METHODS
                     for a in (self.accounting if m in SEARCH else [None]))

    def labels(self) -> list[str]:
        """Every method label this study reports, in the order of `methods`."""
        return [method_label(m, a) for m in self.methods for a in (self.accounting if m in SEARCH else [None])]

    def describe(self) -> str:
        """One paragraph for the report: the task, its data source and the protocol."""
        t = self.task
        return (f"Task: the planted-subsequence task (synthetic data generated by veriscale; V = {t.vocab}, "
                f"k = {t.prompt_len}, m = {t.answer_len}, teacher q = {t.q}, expert q = {t.expert_q}); "
                f"heterogeneity levels {self.heterogeneity}; best-of-{self.search_n} accountings {self.accounting}.")

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"methods: unknown method {m!r} (valid: {', '.join(METHODS)})")
        for h in self.heterogeneity:
            if h not in LEVELS:
                raise ConfigError(f"heterogeneity: unknown level {h!r} (valid: {', '.join(LEVELS)})")
        for a in self.accounting:
            if a not in ACCOUNTINGS:
                raise ConfigError(f"accounting: unknown accounting {a!r} (valid: {', '.join(ACCOUNTINGS)})")
        if self.vf_reference not in METHODS:
            raise ConfigError(f"vf_reference: unknown method {self.vf_reference!r}")
        for key in ("budgets", "n", "seeds", "methods", "heterogeneity", "accounting"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        if "shared" in self.accounting and self.search_n > min(self.budgets):
            raise ConfigError(f"search_n: {self.search_n} samples sharing H need budgets >= {self.search_n}")


def study_from_dict(data: dict):
    """A StudyConfig, or an LLMStudyConfig when the data says `track = "llm"`."""
    if data.get("track", "didactic") == "llm":
        from veriscale.study.llm_spec import LLMStudyConfig

        return from_dict(LLMStudyConfig, data)
    if "track" in data and data["track"] != "didactic":
        raise ConfigError(f"track: unknown track {data['track']!r} (valid: didactic, llm)")
    return from_dict(StudyConfig, {k: v for k, v in data.items() if k != "track"})


def load_study_config(path, overrides: list[str] | None = None):
    """Read a study TOML, apply `--set` overrides and validate it (either track)."""
    return study_from_dict(apply_overrides(read_toml(path), overrides or []))
