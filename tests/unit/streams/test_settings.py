from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.errors import SettingsError
from streams.settings import ENV_VARS, Settings


def test_environment_variables_map_onto_settings() -> None:
    s = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP": "k:9092",
            "INTEREST_STREAM_PARTITIONS": "8",
            "INTEREST_STREAM_TOPIC_CLICK": "c",
            "INTEREST_STREAM_HOME": "/x",
            "INTEREST_STREAM_WEB_ENABLED": "false",
        }
    )
    assert (s.bootstrap, s.partitions, s.topics.click, s.home, s.web_enabled) == (
        "k:9092",
        8,
        "c",
        Path("/x"),
        False,
    )
    assert s.topics.event_type_of("c") == "click"


def test_every_env_var_names_a_real_field() -> None:
    fields = set(Settings.__dataclass_fields__) | {
        f"topic_{n}"
        for n in ("click", "browse", "comment", "items", "recommendations", "dlq", "control",
                  "dislike")  # fmt: skip
    }
    assert {attr for attr, _ in ENV_VARS.values()} <= fields


def test_the_variable_table_is_read_only() -> None:
    assert not isinstance(ENV_VARS, MutableMapping)  # configuration is a Settings, never kept here


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"INTEREST_STREAM_PARTITIONS": "four"}, "INTEREST_STREAM_PARTITIONS"),
        ({"INTEREST_STREAM_PARTITIONS": "0"}, "partitions"),
        ({"INTEREST_STREAM_STORE": "redis"}, "store"),
        ({"INTEREST_STREAM_TOPIC_DLQ": "events.click"}, "differ"),
        ({"INTEREST_STREAM_TOPIC_CONTROL": "events.dlq"}, "differ"),
        ({"INTEREST_STREAM_WEB_ENABLED": "maybe"}, "true or false"),
        ({"INTEREST_STREAM_CANDIDATE_INDEX": "hnsw"}, "candidate_index must be one of auto, fa"),
    ],
)
def test_bad_values_fail_with_the_variable_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_the_control_topic_and_admin_token_come_from_the_environment() -> None:
    s = Settings.from_env(
        {"INTEREST_STREAM_TOPIC_CONTROL": "ops", "INTEREST_STREAM_ADMIN_TOKEN": "s3cret"}
    )
    assert (s.topics.control, s.admin_token) == ("ops", "s3cret")
    assert (Settings().topics.control, Settings().admin_token) == ("control", "")
    assert "s3cret" not in repr(s)  # a logged Settings never shows the token


def test_replace_ignores_unset_flags() -> None:
    s = Settings().replace(partitions=None, top_k=5)
    assert (s.partitions, s.top_k) == (4, 5)


def test_sequence_model_settings_have_defaults_and_limits() -> None:
    s = Settings.from_env({"INTEREST_STREAM_HOME": "/h"})
    assert s.resolved_sequence_model_dir == Path("/h/models/sequence")
    assert (s.blend_weight, s.model_poll_s) == (0.95, 5.0)
    s = Settings.from_env(
        {
            "INTEREST_STREAM_SEQUENCE_MODEL_DIR": "/m/seq",
            "INTEREST_STREAM_BLEND_WEIGHT": "0.25",
            "INTEREST_STREAM_MODEL_POLL_S": "0.5",
        }
    )
    assert (s.resolved_sequence_model_dir, s.blend_weight, s.model_poll_s) == (
        Path("/m/seq"),
        0.25,
        0.5,
    )
    for env, words in [
        ({"INTEREST_STREAM_BLEND_WEIGHT": "1.5"}, "blend_weight"),
        ({"INTEREST_STREAM_MODEL_POLL_S": "0"}, "model_poll_s"),
        ({"INTEREST_STREAM_HISTORY_LEN": "0"}, "history_len"),
    ]:
        with pytest.raises(SettingsError, match=words):
            Settings.from_env(env)


def test_a_worker_caps_numpys_blas_pool() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from streams.worker.runtime import limit_blas_threads

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas, "numpy links a BLAS library"
    before = {p["filepath"]: p["num_threads"] for p in blas}
    try:
        threadpool_limits(limits=2, user_api="blas")  # a pool wider than one, as on any 2+ cores
        assert any(p["num_threads"] > 1 for p in threadpool_info() if p["user_api"] == "blas")
        limit_blas_threads(1)
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        assert Settings.from_env().blas_threads == 1  # the default a worker applies
    finally:
        threadpool_limits(limits=max(before.values()), user_api="blas")


def test_the_int8_setting_makes_the_worker_quantise_and_serve_the_int8_encoder(
    tiny_export, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    import shutil

    from encoders.runtime.metadata import INT8_FILE
    from streams.worker.runtime import build_pipeline, ensure_model

    model_dir = tmp_path / "encoder"
    shutil.copytree(tiny_export.out_dir, model_dir)
    settings = Settings.from_env({"INTEREST_STREAM_ENCODER_INT8": "true"}).replace(
        model_dir=model_dir
    )
    assert settings.encoder_int8 and not (model_dir / INT8_FILE).exists()
    ensure_model(settings)  # what a worker, the evaluator and the bench do first
    assert (model_dir / INT8_FILE).is_file()
    fp32 = build_pipeline(settings.replace(encoder_int8=False)).encoder
    int8 = build_pipeline(settings).encoder
    texts = ["a quiet film about the sea", "loud robots fight in space"]
    a, b = fp32.encode(texts), int8.encode(texts)
    assert not np.array_equal(a, b)  # another graph ran
    assert float(np.min(np.sum(a * b, axis=1))) > 0.9  # and it is still the same encoder


def test_deployment_settings_default_to_todays_behaviour() -> None:
    s = Settings.from_env({})
    assert (s.processing_guarantee, s.replication_factor, s.compacted_cleanup_policy) == (
        "at_least_once", 1, "compact")  # fmt: skip
    assert s.security_protocol == "PLAINTEXT"
    from streams.worker.kafka_auth import client_options, faust_credentials

    assert client_options(s) == {} and faust_credentials(s) is None  # clients built as before


def test_deployment_settings_come_from_the_environment() -> None:
    s = Settings.from_env({
        "INTEREST_STREAM_PROCESSING_GUARANTEE": "exactly_once",
        "INTEREST_STREAM_REPLICATION_FACTOR": "3",
        "INTEREST_STREAM_COMPACTED_CLEANUP_POLICY": "compact,delete",
        "INTEREST_STREAM_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "INTEREST_STREAM_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "INTEREST_STREAM_KAFKA_SASL_USERNAME": "svc",
        "INTEREST_STREAM_KAFKA_SASL_PASSWORD": "s3cret",
    })  # fmt: skip
    assert (s.processing_guarantee, s.replication_factor, s.compacted_cleanup_policy) == (
        "exactly_once", 3, "compact,delete")  # fmt: skip
    assert (s.security_protocol, s.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert "s3cret" not in repr(s)
    from faust.types.enums import ProcessingGuarantee

    from streams.worker.kafka_auth import client_options
    from streams.worker.transport import faust_app

    assert client_options(s) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc", "sasl_plain_password": "s3cret", "ssl_context": None,
    }  # fmt: skip
    conf: Any = faust_app(s.replace(bootstrap="k:9092")).conf
    assert conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE
    assert conf.topic_replication_factor == 3
    assert conf.broker_credentials.username == "svc"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"INTEREST_STREAM_PROCESSING_GUARANTEE": "exactly-once"}, "processing_guarantee must"),
        ({"INTEREST_STREAM_REPLICATION_FACTOR": "0"}, "replication_factor must be 1..32"),
        ({"INTEREST_STREAM_COMPACTED_CLEANUP_POLICY": "delete"}, "compacted_cleanup_policy"),
        ({"INTEREST_STREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "security_protocol must be one"),
        ({"INTEREST_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs sasl_username"),
        ({"INTEREST_STREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "sasl_mechanism must be one"),
        ({"INTEREST_STREAM_KAFKA_SSL_CAFILE": "/ca.pem"}, "PLAINTEXT uses no TLS"),
        ({"INTEREST_STREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
          "INTEREST_STREAM_KAFKA_SSL_KEYFILE": "/k.pem"}, "ssl_keyfile needs ssl_certfile"),
    ],
)
def test_bad_deployment_settings_are_refused(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_tls_files_that_are_not_there_are_a_settings_error(tmp_path: Path) -> None:
    from streams.worker.kafka_auth import client_options, ssl_context

    s = Settings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match="ssl_cafile .*missing.pem is not a readable file"):
        client_options(s)
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(SettingsError, match="cannot load the TLS files"):
        ssl_context(Settings(security_protocol="SSL", ssl_cafile=tmp_path / "bad.pem"))
    assert client_options(Settings(security_protocol="SSL"))["security_protocol"] == "SSL"
