"""`gym:NAME` for any reasoning-gym dataset: validation, number and free-text grading, the table of
checkers that execute model text (kept honest against the installed source), and that such
checkers never run; plus diagnose's group-size default."""

import ast
import builtins
import inspect
import textwrap
import time
import types
from dataclasses import replace

import pytest
import torch

from veriscale.config import ConfigError, from_dict
from veriscale.diagnose import DiagnoseConfig
from veriscale.tasks import gym_checkers as gym
from veriscale.tasks.base import NEVER, Rollouts
from veriscale.tasks.gym import DEFAULT_INSTRUCTION, GymConfig, GymTask
from veriscale.tasks.gym_checkers import (CHECKER, EXECUTING_CHECKERS, OWN_COMPARISON, REFUSED, UNSOUND_CHECKERS,
                                          text_answer_span)


def _rollouts(texts):
    """Rollouts of texts cut into one-character 'tokens' (offsets 1, 2, ...)."""
    L = max(len(t) for t in texts)
    counts = torch.tensor([len(t) for t in texts])
    return Rollouts(tokens=torch.zeros(len(texts), L, dtype=torch.long), mask=torch.arange(L)[None] < counts[:, None],
                    counts=counts, texts=texts, offsets=[list(range(1, len(t) + 1)) for t in texts])


def _task(name, **kw):
    return GymTask(GymConfig(name=name, grade_workers=1, **kw))


def test_names_are_validated_with_a_one_line_reason():
    assert GymConfig(name="letter_counting").name == "letter_counting"
    with pytest.raises(ConfigError, match=r"^name: 'letter_count' is not a reasoning-gym dataset .*letter_counting"):
        GymConfig(name="letter_count")
    with pytest.raises(ConfigError, match=r"^gym\.name: 'nope' is not a reasoning-gym dataset"):
        from_dict(GymConfig, {"name": "nope"}, "gym.")
    for name in REFUSED:
        with pytest.raises(ConfigError, match=rf"^name: {name} is not supported: ") as e:
            GymConfig(name=name)
        assert "\n" not in str(e.value)
    assert set(REFUSED) == {n for n in EXECUTING_CHECKERS if n not in OWN_COMPARISON} | {"composite"}


def test_a_number_dataset_uses_the_strict_number_grader():
    task = _task("letter_counting")
    a, b = task.prompts("test", 6, seed=2), task.prompts("test", 6, seed=2)
    assert a == b and task.numeric and task.source.startswith("reasoning-gym letter_counting")
    assert not {p.text for p in a} & {p.text for p in task.prompts("train", 12, seed=2)}
    for p in a:
        assert p.text.endswith(DEFAULT_INSTRUCTION) and (p.form, p.judge) == ("number", "exact")
        assert p.gold.isdigit() and p.solution == ""  # no gold worked solution in this dataset
    p = a[0]
    texts = [f"Counting.\nFinal answer: {p.gold}<eos>", f"Final answer: {int(p.gold) + 1}<eos>",
             f"Final answer: {p.gold}"]  # right; wrong; cut at the budget
    assert task.check([p] * 3, _rollouts(texts)).tolist() == [len(texts[0]) - len("<eos>"), NEVER, NEVER]


def test_a_text_dataset_is_graded_by_its_own_checker_strictly():
    task = _task("spell_backward")
    p = task.prompts("test", 1, seed=0)[0]
    assert (p.form, p.judge) == ("text", CHECKER) and not task.numeric and p.group.startswith("seed 0, ")
    gold = p.gold
    texts = [f"Reversing it.\nFinal answer: {gold}<|im_end|>",
             f"Final answer: {gold[:-1]}x<|im_end|>",  # the checker's partial credit counts as 0
             f"Final answer: {gold}",  # cut at the budget
             f"The answer is {gold}<|im_end|>",  # no cue: no answer
             f"Final answer: \\boxed{{{gold}}} done<|im_end|>"]
    T = task.check([p] * 5, _rollouts(texts)).tolist()
    assert T == [len(texts[0]) - len("<|im_end|>"), NEVER, NEVER, NEVER, texts[4].index("}")]
    keys, valid = task.answer_keys([p] * 5, _rollouts(texts))
    assert valid.tolist() == [True, True, False, False, True] and keys[0] == keys[4] != keys[1]
    # A problem made by another task instance (another process) is rebuilt from its provenance.
    assert _task("spell_backward").check([p], _rollouts(texts[:1])).tolist() == T[:1]


def test_multi_line_answers_and_mixed_batches():
    grid = _task("mini_sudoku")
    p = grid.prompts("test", 1, seed=0)[0]
    assert "\n" in p.gold and text_answer_span(f"Final answer:\n{p.gold}\n<eos>") == (14, 14 + len(p.gold))
    texts = [f"Solved.\nFinal answer:\n{p.gold}\n<eos>", f"Final answer:\n{p.gold[:-1]}9\n<eos>"]
    assert grid.check([p] * 2, _rollouts(texts)).tolist() == [texts[0].index("\n<eos>"), NEVER]
    # A mixed batch: the same coin_flip entry as a number and as free text (its checker is unsound,
    # so both are compared by us; the free-text one is rebuilt from its provenance).
    coin = _task("coin_flip")
    num = next(q for q in coin.prompts("test", 20, seed=0) if 0 < float(q.gold) < 1)
    rows = [num, num, replace(num, form="text", judge=CHECKER)] * 2
    texts = [f"Final answer: {num.gold}<eos>"] * 3 + ["Final answer: 0<eos>"] * 3  # its checker gives "0" 1.0
    right = len(texts[0]) - len("<eos>")
    assert coin.check(rows, _rollouts(texts)).tolist() == [right] * 3 + [NEVER] * 3


def test_an_unsound_checker_is_replaced_by_text_equality():
    assert set(UNSOUND_CHECKERS) <= set(OWN_COMPARISON)  # every checker known to credit junk is never called
    task = _task("game_of_life_halting")
    p = task.prompts("test", 1, seed=0)[0]
    assert task._gold(p).accepted == (p.gold,)
    texts = [f"Final answer: {p.gold}<eos>", "Final answer: banana<eos>"]  # its checker scores both 1.0
    assert gym.checker("game_of_life_halting").score_answer("banana", task._entry(p)) == 1.0
    assert task.check([p] * 2, _rollouts(texts)).tolist() == [len(texts[0]) - 5, NEVER]


def test_checker_errors_and_overruns_score_zero(monkeypatch):
    task = GymTask(GymConfig(name="spell_backward", grade_workers=1, grade_timeout=0.5))
    p = task.prompts("test", 1, seed=0)[0]
    text = [f"Final answer: {p.gold}<eos>"]
    assert task.check([p], _rollouts(text)).tolist() == [len(text[0]) - 5]

    def boom(answer, entry):
        raise RecursionError("deeply nested model text")

    def hang(answer, entry):
        time.sleep(30)
        return 1.0

    for fn in (boom, hang):  # forked grading workers inherit the patched checker
        monkeypatch.setattr(gym.checker("spell_backward"), "score_answer", fn)
        start = time.monotonic()
        assert task.check([p], _rollouts(text)).tolist() == [NEVER]
        assert time.monotonic() - start < 5


def test_an_executing_checker_never_runs_on_model_text(monkeypatch, tmp_path):
    """string_insertion's checker eval()s an answer that differs from the gold (to read a Python
    list); ours compares text. A patched eval leaves a mark, seen across the forked workers."""
    mark = tmp_path / "eval-called"

    def spy(*args, **kwargs):
        mark.write_text(repr(args)[:200])
        raise RuntimeError("eval must not run on model text")

    task = _task("string_insertion")
    p = task.prompts("test", 1, seed=0)[0]
    as_list = repr(list(p.gold))  # "['A', 'B', ...]": the form its checker evals
    texts = [f"Final answer: {p.gold}<eos>", f"Final answer: {as_list}<eos>", "Final answer: __import__('os')<eos>"]
    monkeypatch.setattr(builtins, "eval", spy)
    assert task.check([p] * 3, _rollouts(texts)).tolist() == [len(texts[0]) - 5, NEVER, NEVER]
    assert not mark.exists()
    # the control: reasoning-gym's own checker does eval that text
    gym.checker("string_insertion").score_answer(as_list, task._entry(p))
    assert mark.exists()


# ---- keeping EXECUTING_CHECKERS honest: scan every dataset's score_answer code path ------------
# Calls that execute text, and sympy's parsers (parse_expr evals); any other use of sympy on the
# path is flagged too, since sympy functions sympify strings they are given.
EXEC_BUILTINS = (builtins.eval, builtins.exec, builtins.compile, builtins.__import__)
SYMPY_PARSERS = {"parse_expr", "sympify", "parse_latex", "lambdify"}
# eval() on the path, but only of reasoning-gym's own generated text, never of the answer
# (read in the source): bitwise_arithmetic's verify_solution evals metadata["problem"] and
# int()s the answer; number_sorting evals entry["answer"] when json.loads fails on it.
EVALS_GENERATED_TEXT_ONLY = {"bitwise_arithmetic", "number_sorting"}


def _ours(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("reasoning_gym")


def _scan(fn, cls, instance, seen: set, hits: set) -> None:
    """Add to `hits` every executing call on the code path of `fn`: its own body, methods of `cls`
    it calls (class or instance attributes), reasoning-gym functions and classes it references
    (all their methods), recursively. Code outside reasoning-gym (json, numpy) is not followed."""
    fn = getattr(fn, "__func__", fn)  # a classmethod or staticmethod: its function
    if not isinstance(fn, types.FunctionType) or not _ours(fn) or fn in seen:
        return
    seen.add(fn)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):  # generated code (a dataclass __init__): no source
        return

    def resolve(node):
        if isinstance(node, ast.Name):
            return builtins.__dict__.get(node.id) if node.id not in fn.__globals__ else fn.__globals__[node.id]
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                found = getattr(cls, node.attr, None)
                return found if found is not None else getattr(instance(), node.attr, None)
            base = resolve(node.value)
            return getattr(base, node.attr, None) if base is not None else None
        return None

    for node in ast.walk(tree):
        if not isinstance(node, (ast.Name, ast.Attribute)) or getattr(node, "id", None) in ("self", "cls"):
            continue
        obj = resolve(node)
        if obj is None:
            continue
        name = node.id if isinstance(node, ast.Name) else node.attr
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None) or ""
        if any(obj is b for b in EXEC_BUILTINS) or (name in SYMPY_PARSERS and not _ours(obj)) \
                or module.startswith("sympy"):
            hits.add(f"{name} in {fn.__qualname__}")
        if not isinstance(obj, (type, types.FunctionType, types.MethodType, types.ModuleType)) and _ours(type(obj)):
            obj = type(obj)  # an instance attribute (self._game = Game()): scan its class
        if isinstance(obj, type) and _ours(obj):
            for klass in obj.__mro__:
                for member in list(vars(klass).values()) if _ours(klass) else []:
                    _scan(member, obj, lambda: None, seen, hits)
        elif callable(obj):
            _scan(obj, cls, instance, seen, hits)


def test_executing_checkers_table_matches_the_installed_reasoning_gym():
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    found = {}
    for name, (cls, _) in sorted(DATASETS.items()):
        made = []

        def instance(name=name, made=made):  # made on demand: few checkers use instance attributes
            if not made:
                try:
                    made.append(reasoning_gym.create_dataset(name, size=1, seed=0))
                except Exception:  # composite has no default config
                    made.append(None)
            return made[0]

        hits: set = set()
        _scan(cls.score_answer, cls, instance, set(), hits)
        if hits:
            found[name] = hits
    assert found["bitwise_arithmetic"] == {"eval in verify_solution"}  # the scan follows helpers
    assert set(found) - EVALS_GENERATED_TEXT_ONLY == set(EXECUTING_CHECKERS), found
    # composite only forwards to the datasets it mixes; it is refused for that reason
    assert "composite" in REFUSED


# ---- diagnose: the group size follows samples unless set ---------------------------------------
def test_group_size_default_follows_samples():
    assert DiagnoseConfig().group_size == 8
    assert DiagnoseConfig(samples=2).group_size == 2 and DiagnoseConfig(samples=5).group_size == 5
    assert DiagnoseConfig(samples=4, group_size=3).group_size == 3
    with pytest.raises(ConfigError, match="group_size: 8 exceeds samples=4"):
        DiagnoseConfig(samples=4, group_size=8)
    with pytest.raises(ConfigError, match="group_size: 1 is below 2"):
        DiagnoseConfig(group_size=1)
