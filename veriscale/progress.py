"""Progress bars (tqdm: rate and ETA) for long loops, made in one place so that a sweep, which
shows a single bar across runs, can silence the per-run bars of the learners it calls."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_silenced = 0


def bar(iterable: Iterable[T], desc: str, unit: str = "step", **kwargs) -> "tqdm[T]":
    """A tqdm bar over `iterable`, disabled inside `silenced()`."""
    disable = kwargs.pop("disable", False)  # popped first: `or` below must not skip it
    return tqdm(iterable, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0,
                disable=_silenced > 0 or disable, **kwargs)


@contextmanager
def silenced() -> Iterator[None]:
    """Within this block, `bar` makes no output."""
    global _silenced
    _silenced += 1
    try:
        yield
    finally:
        _silenced -= 1
