"""Pre-flight of a study: everything a sweep would trip over, checked before any directory exists.

`preflight(study)` validates the learners' configs, builds the study's task at every grid point
(a reasoning-gym name, a data file opened and every row read, the planted task per level and H),
checks that each split holds the prompts the grid asks for, and loads the base policy of a text
study (converting SmolLM2's GGUF once). Any failure is a `ConfigError` naming the study field, so
`reproduce` answers with one line and exit 2 having written nothing; without it every draw of
the sweep would fail on its own, each with a traceback.
"""

from __future__ import annotations

from dataclasses import replace

from veriscale.config import ConfigError, from_dict
from veriscale.study.grid import check_learner_configs, learner_config
from veriscale.study.methods import METHODS
from veriscale.study.spec import LEARNER_CONFIGS, StudyConfig
from veriscale.tasks.base import Task
from veriscale.tasks.load import make_task


def preflight(study: StudyConfig) -> None:
    """Raise ConfigError (one line naming the field) if the study cannot run as configured."""
    check_learner_configs(study)
    for task in _tasks(study):
        _check_splits(study, task)
    if study.text:
        _check_policy(study)


def _tasks(study: StudyConfig) -> list[Task]:
    """The study's task at every grid point: the text task, or the planted task per level and H."""
    try:
        if study.task.startswith("gym:"):
            return [make_task(study.task, gym=study.gym)]
        if study.task.startswith("file:"):
            return [make_task(study.task, files=study.files)]
        horizons = [max(study.budgets)] if study.mode == "test-time" else sorted(study.budgets)
        return [make_task("planted", planted=replace(study.planted, heterogeneity=het, horizon=H))
                for het in study.heterogeneity for H in horizons]
    except ConfigError as e:
        raise ConfigError(f"task: {study.task}: {e}") from None
    except (ValueError, OSError) as e:  # a data file that is missing, empty, malformed or binary
        raise ConfigError(f"task: {e}") from None


def _check_splits(study: StudyConfig, task: Task) -> None:
    """Each split holds the prompts asked of it: the held-out evaluation (and diagnosis) prompts,
    and per seed the n training prompts plus the learners' validation prompts beside them."""
    wants = [("eval_prompts", "test", study.eval_prompts, 0)]
    if study.diagnose_prompts:
        wants.append(("diagnose_prompts", "test", study.diagnose_prompts, 0))
    val = _validation_prompts(study)
    for seed in study.seeds:
        wants.append((f"n ({max(study.n)} + {val} validation prompts)" if val else "n", "train", max(study.n) + val,
                      seed))
        if study.forced_methods and study.forcing_validation:  # the forcing's own validation prompts (study/forcing_choice.py)
            wants.append((f"forcing_validation ({max(study.n)} + {study.forcing_validation} prompts)", "train",
                          max(study.n) + study.forcing_validation, seed))
        if "shared" in study.accounting and study.search_validation and any(METHODS[m].best_of_n
                                                                            for m in study.methods):
            wants.append((f"search_validation ({max(study.n)} + {study.search_validation} prompts)", "train",
                          max(study.n) + study.search_validation, seed))  # best-of-N's N (study/search_choice.py)
    for field, split, n, seed in wants:
        _draw(task, field, split, n, seed)
    if study.text and study.shaped_bases:  # the shaped bases' samples (learn/shape.py), from the reserved share
        sh, table = study.shape, study.text_table
        shaping = make_task(study.task, **{table: replace(getattr(study, table), reserved=True)})
        _draw(shaping, f"shape.prompts ({sh.prompts} + {sh.val_prompts} validation prompts)", "train",
              sh.prompts + sh.val_prompts, sh.data_seed)


def _draw(task: Task, field: str, split: str, n: int, seed: int) -> None:
    try:
        task.prompts(split, n, seed)
    except ValueError as e:
        raise ConfigError(f"{field}: {e}") from None


def _validation_prompts(study: StudyConfig) -> int:
    """The most validation prompts one learner of the study draws beside its n training prompts."""
    methods = [METHODS[m] for m in study.methods]
    need = [0]
    H, n, seed = max(study.budgets), min(study.n), study.seeds[0]
    if any(m.learner == "sft" for m in methods):
        need.append(from_dict(LEARNER_CONFIGS["sft"], learner_config(study, "sft", n, seed, H)).val_traces)
    if any(m.verifier or m.samples for m in methods):
        need.append(study.samples.val_prompts)
    return max(need)


def _check_policy(study: StudyConfig) -> None:
    from veriscale.policy.base import PolicyError
    from veriscale.policy.load import load_policy
    from veriscale.policy.vllm import BackendUnavailable, check_vllm

    try:
        if study.sampler == "vllm":
            check_vllm()
        load_policy(study.policy, hf=study.hf)
    except (PolicyError, BackendUnavailable) as e:
        raise ConfigError(f"policy: {e}") from None
