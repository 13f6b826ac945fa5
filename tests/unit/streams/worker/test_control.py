"""The control message contract (``interest-stream forget``); the CLI refuses without a token."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from streams.cli import cli
from streams.errors import EventRejected
from streams.settings import Settings
from streams.worker.app import topic_specs
from streams.worker.control import MAX_CONTROL_BYTES, Forget, forget_record, parse_control

TOKEN = "s3cret-token"  # noqa: S105 (a test's token)


def _body(**changes: object) -> bytes:
    body = {"op": "forget", "user_id": "u1", "token": TOKEN, "requested_at": 1_764_000_000.5}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_a_forget_with_the_workers_token_is_read_back_as_published() -> None:
    key, value = forget_record("user-42", TOKEN, 1_764_000_000.25)
    assert key == b"user-42"
    assert parse_control(key, value, TOKEN, 128) == Forget("user-42", 1_764_000_000.25)


@pytest.mark.parametrize(
    ("key", "value", "token", "words"),
    [
        (b"u1", _body(), "", "this worker has no admin token"),
        (b"u1", _body(token="guess"), TOKEN, "wrong or missing token"),  # noqa: S106
        (b"u1", _body(token=None), TOKEN, "wrong or missing token"),
        (b"u1", _body(token=12345), TOKEN, "wrong or missing token"),
        (b"u1", _body(token=TOKEN + "x"), TOKEN, "wrong or missing token"),
        (b"u1", None, TOKEN, "without a value"),
        (b"u1", b"{not json", TOKEN, "not JSON"),
        (b"u1", b"\xff\xfe{}", TOKEN, "not UTF-8"),
        (b"u1", b"[" * 5_000 + b"]" * 5_000, TOKEN, "nested deeper"),
        (b"u1", b" " * (MAX_CONTROL_BYTES + 1), TOKEN, f"at most {MAX_CONTROL_BYTES}"),
        (b"u1", b'["forget", "u1"]', TOKEN, "must be a JSON object, got list"),
        (b"u1", _body(op="drop_all"), TOKEN, "unknown control op 'drop_all'"),
        (b"u1", _body(op=None), TOKEN, "unknown control op"),
        (b"u1", _body(user_id=None), TOKEN, "'user_id' must be a string of 1 to 128"),
        (b"", _body(user_id=""), TOKEN, "'user_id' must be a string of 1 to 128"),
        (b"u1", _body(user_id=["u1"]), TOKEN, "'user_id' must be a string"),
        (b"u" * 129, _body(user_id="u" * 129), TOKEN, "1 to 128 characters"),
        (b"u1", _body(user_id="\ud800"), TOKEN, "'user_id' is not valid Unicode"),
        (b"u2", _body(), TOKEN, "key must be the user id"),
        (None, _body(), TOKEN, "key must be the user id"),
        (b"u1", _body(requested_at="yesterday"), TOKEN, "'requested_at' must be epoch seconds"),
        (b"u1", _body(requested_at=True), TOKEN, "'requested_at' must be epoch seconds"),
        (b"u1", _body(requested_at=None), TOKEN, "'requested_at' must be epoch seconds"),
        (b"u1", _body().replace(b"1764000000.5", b"1e999"), TOKEN, "'requested_at'"),
    ],
    ids=lambda value: None if isinstance(value, str) and len(value) < 60 else "",
)
def test_every_refused_control_message_says_why(
    key: bytes | None, value: bytes | None, token: str, words: str
) -> None:
    with pytest.raises(EventRejected) as refused:
        parse_control(key, value, token, 128)
    assert words in refused.value.reason


def test_the_token_is_checked_before_the_command_is_read() -> None:
    """Without the token a sender learns nothing about what the worker would accept."""
    with pytest.raises(EventRejected, match="wrong or missing token"):
        parse_control(b"u2", _body(op="drop_all", token="guess"), TOKEN, 128)  # noqa: S106


def test_the_control_topic_has_one_partition_and_is_compacted() -> None:
    settings = Settings(partitions=8)
    specs = {spec.name: spec for spec in topic_specs(settings)}
    control = specs[settings.topics.control]
    assert (control.partitions, control.compacted) == (1, True)
    assert specs[settings.topics.dlq].partitions == 8


def test_forget_refuses_without_an_admin_token() -> None:
    result = CliRunner().invoke(
        cli,
        ["--bootstrap", "127.0.0.1:1", "forget", "user-1"],
        env={"INTEREST_STREAM_ADMIN_TOKEN": ""},
    )
    assert result.exit_code == 2, result.output
    assert "no admin token: set INTEREST_STREAM_ADMIN_TOKEN" in result.output


def test_forget_needs_a_broker_address() -> None:
    result = CliRunner().invoke(
        cli, ["forget", "user-1"], env={"INTEREST_STREAM_ADMIN_TOKEN": TOKEN, "KAFKA_BOOTSTRAP": ""}
    )
    assert result.exit_code == 2, result.output
    assert "KAFKA_BOOTSTRAP" in result.output
