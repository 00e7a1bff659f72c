"""Ordered parallel map with a progress bar: what the data stage and the evaluation share.

Results come back in input order, so nothing the study computes depends on the number of workers. Workers are forked
where the platform can (they inherit the loaded modules and ``initargs`` without pickling); work that runs dlib's
neural networks (the CNN face detector, the face embeddings) asks for ``start="spawn"`` instead: dlib's thread pool
does not survive a fork, and a network used in the parent before the fork deadlocks in the child.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_SHARED: dict[str, Any] = {}  # what ``indexed_map`` hands each worker (and this process, with one worker)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, initializer=None, initargs=(),
                chunksize: int = 8, start: str = "fork") -> Iterator[Any]:
    """``fn`` over ``items`` in ``workers`` processes (one: in this process), yielding results in input order.

    ``initializer(*initargs)`` runs once in each worker (in this process when ``workers`` <= 1). ``start``: how the
    workers start, "fork" (where the platform can) or "spawn" (see the module text).
    """
    if workers <= 1:
        if initializer:
            initializer(*initargs)
        for it in items:
            yield fn(it)
        return
    method = start if start in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar updated at most every 2 s; off when ``enabled`` is false (and by tqdm without a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=None if enabled else True, mininterval=2.0)


def ordered_map_with_progress(fn: Callable[[Any], Any], items: Iterable[Any], total: int, desc: str, workers: int,
                              progress_bar: bool = True, initializer=None, initargs=(), chunksize: int = 8,
                              start: str = "fork") -> list[Any]:
    """``ordered_map`` collected into a list, with a progress bar of ``total`` steps."""
    out = []
    with progress(total, desc, progress_bar) as bar:
        for r in ordered_map(fn, items, workers, initializer, initargs, chunksize, start):
            out.append(r)
            bar.update(1)
    return out


def _share(fn: Callable[[Any, int], Any], data: Any) -> None:
    _SHARED.update(fn=fn, data=data)


def _call_shared(i: int) -> Any:
    return _SHARED["fn"](_SHARED["data"], i)


def indexed_map(fn: Callable[[Any, int], Any], data: Any, n: int, desc: str, workers: int, progress_bar: bool = True,
                chunksize: int = 16) -> list[Any]:
    """``[fn(data, i) for i in range(n)]`` in ``workers`` forked processes, with a progress bar: ``data`` (arrays, a
    dict of them) reaches each worker once, by the fork, not with every item; ``fn`` is a module-level function."""
    try:
        return ordered_map_with_progress(_call_shared, range(n), n, desc, workers, progress_bar, initializer=_share,
                                         initargs=(fn, data), chunksize=chunksize)
    finally:
        _SHARED.clear()
