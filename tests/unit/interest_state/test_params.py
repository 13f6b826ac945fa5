"""The browse weight: any integer dwell, however large, gives a weight between a glance's and a
full read's (an ``int`` too large for a float used to overflow in the division)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interest_state import UpdateParams

PARAMS = UpdateParams()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(dwell=st.integers() | st.integers(0, 6000).map(lambda n: 10**n) | st.none())
def test_any_dwell_weighs_between_a_glance_and_a_full_read(dwell: int | None) -> None:
    weight = PARAMS.browse_weight(dwell)
    assert 0.5 * PARAMS.weight_browse <= weight <= 1.5 * PARAMS.weight_browse


@pytest.mark.parametrize(
    ("dwell", "factor"),
    [(None, 1.0), (-5, 0.5), (0, 0.5), (15_000, 1.0), (30_000, 1.5), (10**400, 1.5)],
)
def test_the_documented_weights(dwell: int | None, factor: float) -> None:
    assert PARAMS.browse_weight(dwell) == pytest.approx(factor * PARAMS.weight_browse)
