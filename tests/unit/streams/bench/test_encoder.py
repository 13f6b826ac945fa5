"""The encoder section's batches: the texts wrap around."""

from __future__ import annotations

from streams.bench.encoder import cycling


def test_cycling_wraps_around_the_texts() -> None:
    seen: list[list[str]] = []
    step = cycling(seen.append, ["a", "b", "c"], 2)
    assert step() == 2 and step() == 2
    assert seen == [["a", "b"], ["c", "a"]]
