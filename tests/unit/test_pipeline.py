"""One microbatch through the model side: vectors resolved, text encoded, states updated, ranked."""

from __future__ import annotations

from encoders import TextEncoder
from interest_state import Event, EventType, UpdateParams
from streams.pipeline import Pipeline
from streams.schemas import ItemMessage

TITLES = [
    "space battle saga",
    "romantic comedy in paris",
    "animated toys adventure",
    "war drama",
    "cooking show",
    "space station thriller",
]


def pipeline(encoder: TextEncoder) -> Pipeline:
    p = Pipeline(encoder, UpdateParams(), top_k=3)
    p.add_items([ItemMessage(str(i), t, t, ()) for i, t in enumerate(TITLES)])
    return p


def ev(
    event_id: str,
    user: str,
    item: str,
    kind: EventType = EventType.CLICK,
    text: str | None = None,
    ts: float = 1000.0,
) -> Event:
    return Event(event_id, user, item, kind, ts, text=text)


def test_a_batch_updates_each_user_once_and_ranks_unseen_items(tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    events = [ev("a", "u1", "0"), ev("b", "u2", "1"), ev("c", "u1", "5", ts=1001.0)]
    result = p.process(events, {})
    assert set(result.users) == {"u1", "u2"} and result.rejected == []
    u1 = result.users["u1"]
    assert u1.applied == ("a", "c") and u1.state.n_events == 2
    assert len(u1.recommendations) == 3
    assert not {"0", "5"} & {r.item_id for r in u1.recommendations}


def test_unknown_items_are_rejected_with_their_position(tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    result = p.process([ev("a", "u1", "0"), ev("b", "u1", "nope")], {})
    assert result.rejected == [(1, "unknown item_id 'nope'")]
    assert result.users["u1"].applied == ("a",)


def test_replayed_events_are_duplicates_and_do_not_move_the_state(
    tiny_encoder: TextEncoder,
) -> None:
    p = pipeline(tiny_encoder)
    first = p.process([ev("a", "u1", "0", EventType.COMMENT, text="love space")], {})
    state = first.users["u1"].state
    again = p.process([ev("a", "u1", "0", EventType.COMMENT, text="love space")], {"u1": state})
    outcome = again.users["u1"]
    assert outcome.applied == () and outcome.duplicates == ("a",)
    assert outcome.state.n_events == 1
    assert (outcome.state.short_term == state.short_term).all()


def test_comment_text_moves_the_interest_beyond_the_item(tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    plain = p.process([ev("a", "u1", "3")], {}).users["u1"].state
    commented = (
        p.process([ev("a", "u1", "3", EventType.COMMENT, text="cooking show")], {})
        .users["u1"]
        .state
    )
    assert not (plain.short_term == commented.short_term).all()
