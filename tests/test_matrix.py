"""tests/matrix.py: which real-kernel cases the default run keeps (every dimension on every kernel)."""
from __future__ import annotations

import itertools

import matrix
import pytest
import samples

SCENARIOS = list(samples.SCENARIOS) + ["kdl_new"]  # a scenario added later gets its cases too
FORMS = [(s, kind, kaslr) for s in SCENARIOS for kind in ("phys", "kdump", "kdump-filtered") for kaslr in (False, True)]


def _values(cases: list[tuple[str, tuple, bool]], kernel: str) -> list[set]:
    kept = [case for k, case, default in cases if k == kernel and default]
    return [set(column) for column in zip(*kept)]


@pytest.mark.parametrize("default_product", [True, False])
def test_every_value_on_every_kernel_and_every_case_somewhere(default_product: bool) -> None:
    cases = matrix.cases(FORMS, default_product=default_product)
    assert {case for _, case, _ in cases} == set(FORMS) and len(cases) == len(FORMS) * len(samples.KERNELS)
    for kernel in samples.KERNELS:
        assert _values(cases, kernel) == [set(SCENARIOS), {"phys", "kdump", "kdump-filtered"}, {False, True}], kernel
        kept = sum(1 for k, _, default in cases if k == kernel and default)
        if kernel == samples.DEFAULT_KERNEL and default_product:
            assert kept == len(FORMS)  # every form with every scenario, KASLR on and off
        else:
            assert kept == len(SCENARIOS)  # no more than the largest dimension needs
    # The kernels do not all get the same pairs.
    others = [{case for k, case, default in cases if k == kernel and default} for kernel in samples.KERNELS[1:]]
    assert len(others) < 2 or others[0] != others[1]


def test_covering_balances_the_small_dimensions() -> None:
    chosen = matrix.covering(FORMS)
    kaslr = [case[2] for case in chosen]
    assert abs(kaslr.count(True) - kaslr.count(False)) <= 1
    assert chosen == [case for case in FORMS if case in chosen]  # in the order declared
    assert matrix.covering([]) == []


def test_one_dimension_and_a_few_cases_on_other_kernels() -> None:
    kernels = (samples.DEFAULT_KERNEL, "6.12-a", "6.12-b", "6.1-c")  # the default kernel and three others
    single = matrix.cases(SCENARIOS, kernels)
    for kernel in kernels:
        assert {case for k, case, default in single if k == kernel and default} == {(s,) for s in SCENARIOS}
    live = matrix.cases(SCENARIOS, kernels, other_kernels=2)
    picked = {k: [case for kk, case, default in live if kk == k and default] for k in kernels}
    assert len(picked[samples.DEFAULT_KERNEL]) == len(SCENARIOS)
    assert all(len(picked[k]) == 2 for k in kernels if k != samples.DEFAULT_KERNEL)
    assert len({c for k in kernels if k != samples.DEFAULT_KERNEL for c in picked[k]}) == 2 * (len(kernels) - 1)
    named = matrix.cases(SCENARIOS, kernels, other_kernels=2, default_cases=SCENARIOS[:3])
    assert [case for k, case, default in named if k == samples.DEFAULT_KERNEL and default] == [(s,) for s in SCENARIOS[:3]]
    assert [c for k, c, d in named if d and k != samples.DEFAULT_KERNEL] == \
        [c for k, c, d in live if d and k != samples.DEFAULT_KERNEL]


def test_over_marks_the_rest_full() -> None:
    if samples.DEFAULT_KERNEL not in samples.KERNELS:
        pytest.skip(f"KDLGDB_KERNELS leaves out {samples.DEFAULT_KERNEL}, whose cases this checks")
    mark = matrix.over("scenario, kaslr", list(itertools.product(SCENARIOS, (False, True))))
    names, params = mark.args[0], mark.args[1]
    assert names == "real_kernel,scenario, kaslr" and mark.kwargs["indirect"] == ["real_kernel"]
    assert len(params) == 2 * len(SCENARIOS) * len(samples.KERNELS)
    full = [p for p in params if p.marks]
    assert all(m.name == "full" for p in full for m in p.marks)
    assert not [p for p in full if p.values[0] == samples.DEFAULT_KERNEL]
    assert f"{samples.DEFAULT_KERNEL}-kdl_abba-nokaslr" in {p.id for p in params}
