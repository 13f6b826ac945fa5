"""The public surface of :mod:`interest_state`: what ``__all__`` promises is really there."""

from __future__ import annotations

import inspect

import interest_state
from interest_state import InterestStateError


def test_exported_members() -> None:
    exported = set(interest_state.__all__)
    public = {name for name in vars(interest_state) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(interest_state, name))}
    assert exported == public - modules - {"annotations"}
    for name in exported:
        member = getattr(interest_state, name)
        assert getattr(member, "__module__", "interest_state").startswith("interest_state"), name


def test_every_error_descends_from_the_root() -> None:
    errors = [
        getattr(interest_state, name)
        for name in interest_state.__all__
        if name.endswith("Error") and name != "InterestStateError"
    ]
    assert len(errors) == 5
    assert all(issubclass(error, InterestStateError) for error in errors)
