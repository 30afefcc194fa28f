"""The one method table: every method a study can run, what it trains, how it is evaluated, and on
which tasks it makes sense (a study refuses the others, saying why)."""

from __future__ import annotations

from dataclasses import dataclass, field

from veriscale.search import SearchPlan


@dataclass(frozen=True)
class Method:
    name: str
    evaluation: str  # the evaluation kind of evaluate.py: base | expert | sft | rl | bon | maj | wmaj | oracle | early_stop
    doc: str
    learner: str | None = None  # None (no training) | "sft" | "rl"
    options: dict = field(default_factory=dict)  # learner fields the method fixes
    verifier: bool = False  # scores with, or trains against, the learned verifier
    pessimistic: bool = False  # ... the pessimistic one: the study's [pessimistic] verifier fields set
    samples: bool = False  # trains on checked base samples shared with the verifier (search-trace SFT)
    vb: bool = False  # a verifier-based method (VB), compared with the VF reference
    needs: str | None = None  # "planted" | "text": the only tasks where it makes sense
    why: str = ""  # why not elsewhere

    @property
    def uses_data(self) -> bool:
        """Whether the method uses training data (else one run per seed, shown at every n)."""
        return self.learner is not None or self.verifier

    @property
    def search(self) -> bool:
        return self.evaluation in ("bon", "maj", "wmaj", "oracle", "early_stop")

    def plan(self, N: int, accounting: str | None) -> SearchPlan:
        """How this search method draws and charges (accounting None: a one-trace method)."""
        return SearchPlan(self.evaluation, N, accounting or "shared")

    @property
    def best_of_n(self) -> bool:
        """Best-of-N search, run once per best-of-N accounting."""
        return self.evaluation in ("bon", "maj", "wmaj", "oracle")


TABLE = [
    Method("base", "base", "the base policy pi_b, one sequential trace"),
    Method("expert", "expert", "the planted task's expert process itself: what VF clones", needs="planted",
           why="a text task's expert is its gold solutions, which are written, not sampled at a budget"),
    Method("sft", "sft", "VF: SFT on the task's expert traces (planted: the level's expert; text: gold solutions)",
           learner="sft", options={"expert": "expert"}),
    Method("sft_homogeneous", "sft", "VF control: SFT on the homogeneous expert (filler 0, always right)",
           learner="sft", options={"expert": "homogeneous"}, needs="planted",
           why="a text task's gold solutions are already its homogeneous expert (method sft)"),
    Method("sft_search", "sft", "VF: SFT on search traces (failed attempts, then a success) from base samples",
           learner="sft", options={"expert": "search"}, samples=True, needs="text",
           why="search traces join text attempts; the planted expert already writes them (task.expert_q)"),
    Method("bon", "bon", "VB: best-of-N by the learned verifier", verifier=True, vb=True),
    Method("maj", "maj", "majority vote over N samples (search without a verifier)"),
    Method("wmaj", "wmaj", "VB: verifier-weighted majority over N samples", verifier=True, vb=True),
    Method("oracle", "oracle", "pass@N: any correct sample (the upper bound of search)"),
    Method("early_stop", "early_stop", "VB: one trace stopped at the first prefix the verifier accepts",
           verifier=True, vb=True),
    Method("rl_outcome", "rl", "VB: RL on the 0/1 outcome reward (the paper's)", learner="rl",
           options={"reward": "outcome"}, vb=True),
    Method("rl_outcome_unlimited", "rl", "VB: rl_outcome without a label budget (not data-matched)", learner="rl",
           options={"reward": "outcome", "label_budget": 0}, vb=True),
    Method("rl_return", "rl", "VB: RL on the shaped return R_H/H (ours)", learner="rl", options={"reward": "return"},
           vb=True),
    Method("rl_verifier", "rl", "VB: RL against the learned verifier", learner="rl", options={"reward": "verifier"},
           verifier=True, vb=True),
    # The paper's fast rate is for a pessimistic reward (learn/ensemble.py): the same selection
    # and RL against the study's pessimistic verifier, beside the point-verifier methods above.
    Method("bon_pess", "bon", "VB: best-of-N by the pessimistic verifier (ensemble; [pessimistic])", verifier=True,
           pessimistic=True, vb=True),
    Method("wmaj_pess", "wmaj", "VB: weighted majority by the pessimistic verifier (ensemble; [pessimistic])",
           verifier=True, pessimistic=True, vb=True),
    Method("rl_verifier_pess", "rl", "VB: RL against the pessimistic verifier (ensemble; [pessimistic])",
           learner="rl", options={"reward": "verifier"}, verifier=True, pessimistic=True, vb=True),
]
METHODS = {m.name: m for m in TABLE}


def label(method: str, tag: str | None) -> str:
    """The name a run is reported under: best-of-N methods carry their accounting, a forced
    method's fixed-schedule twin "fixed", best-of-N's fixed-N twin "shared:fixed" (StudyConfig.tags)."""
    return f"{method}:{tag}" if tag else method


def split_tag(method: Method, tag: str | None) -> tuple[str | None, str | None]:
    """(accounting, schedule) of one run of `method`: a best-of-N tag is its accounting, then
    ":fixed" for the fixed-N twin; any other tag is a schedule."""
    if not method.best_of_n:
        return None, tag
    acc, _, schedule = (tag or "").partition(":")
    return acc or None, schedule or None


def record_label(config: dict) -> str:
    """The label of a stored evaluation record, from its config."""
    tag = ":".join(t for t in (config.get("accounting"), config.get("schedule")) if t)
    return label(config["method"], tag or None)


def search_bases(labels: list[str]) -> list[str]:
    """The best-of-N methods among report labels, once each (`bon` of `bon:shared`, ...)."""
    return list(dict.fromkeys(b for m in labels if (b := m.split(":")[0]) != m and METHODS[b].best_of_n))
