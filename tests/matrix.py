"""Which real-kernel cases run: every dimension on every kernel, not every product of dimensions.

A real-kernel test that runs over samples (scenarios, KASLR on and off, dump forms, report formats, ...)
declares its cases with :func:`over`, which adds the kernel. By default:

- on the default kernel (``samples.DEFAULT_KERNEL``, 6.1) every case the test declares, so every form
  with every scenario, KASLR on and off;
- on every other kernel a covering subset: each value of each of the test's dimensions (each scenario,
  each form, each KASLR setting, ...) in at least one case, the pairs rotated from kernel to kernel.

A test whose every case is costly and whose products another test already runs (crash: ~6 s of CPU to
start, for each dump) asks for the covering subset on the default kernel too (``default_product=False``);
one whose cases are boots of a guest (a live kernel: ~8 s each) and whose every value the dump tests
already run on every kernel asks for ``other_kernels=N`` cases on each other kernel, rotated, and names
the few it runs on the default kernel (``default_cases``).

The other cases are marked ``full`` and run only with ``python3 -m pytest --full`` (before a release).
A scenario added to ``SCENARIOS`` gets its cases on every kernel this way, without a test changing.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import pytest

import samples

FULL = "full"  # the marker of the cases only --full runs


def covering(values: Sequence[tuple[Any, ...]], rotate: int = 0) -> list[tuple[Any, ...]]:
    """Few cases of ``values`` (greedily) that hold every value of every position at least once, in the
    order given: each pick covers the most values not yet covered, then uses the values used least so far
    (KASLR on and off alternate, forms spread over scenarios); ``rotate`` moves where the picking starts,
    so each kernel gets other pairs."""
    if not values:
        return []
    start = (rotate * len(values)) // max(len(samples.KERNELS), 1)
    order = list(values[start:]) + list(values[:start])
    uncovered = {(axis, value) for case in values for axis, value in enumerate(case)}
    used: dict[tuple[int, Any], int] = {}
    chosen: list[tuple[Any, ...]] = []
    while uncovered:
        def score(case: tuple[Any, ...]) -> tuple[int, int]:
            pairs = set(enumerate(case))
            return len(pairs & uncovered), -sum(used.get(p, 0) for p in pairs)

        best = max((case for case in order if case not in chosen), key=score)  # the first of the best
        chosen.append(best)
        uncovered -= set(enumerate(best))
        for pair in enumerate(best):
            used[pair] = used.get(pair, 0) + 1
    return [case for case in values if case in chosen]


def cases(values: Iterable[Any], kernels: Sequence[str] = samples.KERNELS, default_product: bool = True,
          other_kernels: Optional[int] = None,
          default_cases: Optional[Iterable[Any]] = None) -> list[tuple[str, tuple[Any, ...], bool]]:
    """(kernel, case, in the default run) for every kernel and case; a case that is not a tuple is one value.
    ``default_cases``: on the default kernel only these (a guest boot each), instead of every case."""
    values = [v if isinstance(v, tuple) else (v,) for v in values]
    chosen = None if default_cases is None else {v if isinstance(v, tuple) else (v,) for v in default_cases}
    assert chosen is None or chosen <= set(values), chosen - set(values)
    others = [kernel for kernel in kernels if kernel != samples.DEFAULT_KERNEL]
    out = []
    for k, kernel in enumerate(kernels):
        if kernel == samples.DEFAULT_KERNEL and chosen is not None:
            default = chosen
        elif kernel == samples.DEFAULT_KERNEL and default_product:
            default = set(values)
        elif kernel != samples.DEFAULT_KERNEL and other_kernels is not None:
            # Spread over the values, each other kernel its own: the j-th takes j, j + m, j + 2m, ... (m = how
            # many other kernels), stretched over the values, so no two kernels share a case while values last.
            n, j, m = len(values), others.index(kernel), len(others)
            step = max(1, n // (m * other_kernels))
            default = {values[((j + i * m) * step) % n] for i in range(min(other_kernels, n))}
        else:
            default = set(covering(values, k))
        out += [(kernel, case, case in default) for case in values]
    return out


def over(names: str, values: Iterable[Any], default_product: bool = True,
         other_kernels: Optional[int] = None, default_cases: Optional[Iterable[Any]] = None) -> pytest.MarkDecorator:
    """``@pytest.mark.parametrize`` of ``real_kernel`` and ``names`` (comma-separated, as parametrize takes
    them) over ``values`` on every kernel, the cases beyond the default run marked ``full``; a case's id is
    the kernel and its values (KASLR as ``kaslr``/``nokaslr``).
    """
    params = []
    for kernel, case, default in cases(values, default_product=default_product, other_kernels=other_kernels,
                                   default_cases=default_cases):
        params.append(pytest.param(kernel, *case, id="-".join([kernel, *(_id(v) for v in case)]),
                                   marks=() if default else (pytest.mark.full,)))
    return pytest.mark.parametrize("real_kernel," + names, params, indirect=["real_kernel"])


def _id(value: Any) -> str:
    if isinstance(value, bool):
        return "kaslr" if value else "nokaslr"
    return str(value)
