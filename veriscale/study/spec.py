"""A study: the grid n x H x heterogeneity x method x seed, and the configs of every stage.

Shipped studies live in `studies/*.toml`; every field is validated like any other config.
Two ways to sweep H (SPEC §2):
- `test-time`: learners are trained once at H_max = max(budgets) and each trained policy is
  sampled once at H_max; every smaller budget is read off by truncation (search methods: the
  same sample pool truncated to floor(H/N) tokens per sample).
- `horizon`: the task, its teacher data and every learner are built for each H separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from veriscale.config import ConfigError, knob
from veriscale.learn.loop import OptimConfig
from veriscale.policy.gpt import GPTConfig
from veriscale.tasks.planted import PlantedConfig

METHODS = ("base", "sft", "sft_homogeneous", "bon", "maj", "wmaj", "oracle", "rl_outcome", "rl_verifier")
VB_METHODS = ("bon", "wmaj", "rl_outcome", "rl_verifier")
VF_METHOD = "sft"


@dataclass
class BaseStage:
    """Pretraining of pi_b, shared by every run with the same heterogeneity (and H in horizon mode)."""

    traces: int = knob(16384, "teacher traces in the pretraining set", min=1)
    heldout_traces: int = knob(256, "held-out teacher traces for the loss curve", min=1)
    data_seed: int = knob(0, "seed of the pretraining data", min=0)
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class StudyConfig:
    name: str = knob("didactic", "study name (used in the report title)")
    mode: Literal["test-time", "horizon"] = knob("test-time", "how H is swept (see module docstring)")
    budgets: list[int] = knob([16, 32, 64, 128], "token budgets H (test-time: evaluated by truncation)", min=1)
    n: list[int] = knob([64, 256], "training-data sizes n (prompts with expert traces / rollouts)", min=1)
    heterogeneity: list[str] = knob(["low", "high"], "heterogeneity levels of the teacher (task.heterogeneity)")
    methods: list[str] = knob(list(METHODS[:2]) + ["bon", "rl_outcome", "rl_verifier"],
                              f"methods to run, from {', '.join(METHODS)}")
    seeds: list[int] = knob([0, 1], "learner seeds (data draw, init, sampling)", min=0)
    eval_prompts: int = knob(256, "held-out prompts every method is evaluated on", min=1)
    eval_samples: int = knob(1, "sequential traces per prompt for sequential methods", min=1)
    search_n: int = knob(4, "N of best-of-N / majority: N samples of floor(H/N) tokens each", min=1)
    temperature: float = knob(1.0, "sampling temperature at evaluation", min=0.0)
    vf_reference: str = knob("sft", "the VF method gaps are measured against")
    # task.horizon is set by the study: max(budgets) in test-time mode, each H in horizon mode.
    task: PlantedConfig = field(default_factory=PlantedConfig)
    base: BaseStage = field(default_factory=BaseStage)
    sft: dict = knob({}, "overrides of SFTConfig fields (listed by `veriscale config sft`)")
    verifier: dict = knob({}, "overrides of VerifierConfig fields (`veriscale config verifier`)")
    rl: dict = knob({}, "overrides of RLConfig fields (`veriscale config rl`)")

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"methods: unknown method {m!r} (valid: {', '.join(METHODS)})")
        for h in self.heterogeneity:
            if h not in ("low", "high", "custom"):
                raise ConfigError(f"heterogeneity: unknown level {h!r} (valid: low, high, custom)")
        if self.vf_reference not in METHODS:
            raise ConfigError(f"vf_reference: unknown method {self.vf_reference!r}")
        for key in ("budgets", "n", "seeds", "methods", "heterogeneity"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        if self.search_n > min(self.budgets):
            raise ConfigError(f"search_n: {self.search_n} samples need budgets >= {self.search_n}")
