"""An item's optional ``vector``: parsed by the one contract, one length per catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.contract import (
    MAX_VECTOR_LEN,
    ItemRecord,
    catalog_vector_length,
    item_to_obj,
    load_json,
    parse_item,
)
from streams.data.formats import read_items, write_items
from streams.errors import DatasetError, EventRejected


def _item(vector: object) -> dict[str, object]:
    return {"item_id": "a", "title": "a film", "vector": vector}


def test_a_vector_is_parsed_and_written_back() -> None:
    item = parse_item(_item([1, 2.5, -3e-3]))
    assert item.vector == (1.0, 2.5, -0.003)
    assert parse_item(item_to_obj(item)) == item
    assert parse_item(_item(None)).vector is None and "vector" not in item_to_obj(
        ItemRecord("b", "t", "t")
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"item_id": "a", "title": "t", "vector": [1, NaN]}', "finite numbers, got nan at 1"),
        (b'{"item_id": "a", "title": "t", "vector": [1e999]}', "finite numbers, got inf at 0"),
        (b'{"item_id": "a", "title": "t", "vector": []}', "a non-empty list of numbers"),
        (b'{"item_id": "a", "title": "t", "vector": [1, "2"]}', "hold numbers, got '2' at 1"),
        (b'{"item_id": "a", "title": "t", "vector": [true]}', "hold numbers, got True at 0"),
        (b'{"item_id": "a", "title": "t", "vector": {"x": 1}}', "a non-empty list of numbers"),
    ],
)
def test_a_bad_vector_is_rejected_with_a_clear_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventRejected, match="field 'vector'") as caught:
        parse_item(load_json(raw))
    assert reason in caught.value.reason


def test_a_vector_too_long_is_rejected() -> None:
    with pytest.raises(EventRejected, match=f"at most {MAX_VECTOR_LEN}"):
        parse_item(_item([0.0] * (MAX_VECTOR_LEN + 1)))


def test_one_vector_length_per_catalog(tmp_path: Path) -> None:
    three = ItemRecord("a", "t", "t", (), (1.0, 2.0, 3.0))
    assert catalog_vector_length(three, None) == 3
    assert catalog_vector_length(ItemRecord("b", "t", "t"), 3) == 3  # none: fine
    with pytest.raises(EventRejected, match="has 2 numbers, the catalog's vectors 3"):
        catalog_vector_length(ItemRecord("c", "t", "t", (), (1.0, 2.0)), 3)
    path = tmp_path / "items.jsonl"
    write_items(path, [three, ItemRecord("b", "t", "t", ("x",), (1.0, 2.0))])
    with pytest.raises(DatasetError, match=r"items.jsonl:2: field 'vector' has 2 numbers"):
        read_items(path)
