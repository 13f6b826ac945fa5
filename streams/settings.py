"""All configuration in one frozen class; every environment variable is named here.

``Settings.from_env()`` reads the environment; the CLI flags override single fields with
``dataclasses.replace``. Nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from streams.contract import MAX_USER_ID_LEN
from streams.errors import SettingsError

__all__ = [
    "CLEANUP_POLICIES",
    "ENV_VARS",
    "PROCESSING_GUARANTEES",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "Settings",
    "TopicNames",
]


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Kafka topic names; each is configurable."""

    click: str = "events.click"
    browse: str = "events.browse"
    comment: str = "events.comment"
    items: str = "items"
    recommendations: str = "recommendations"
    dlq: str = "events.dlq"
    control: str = "control"
    dislike: str = "events.dislike"

    @property
    def events(self) -> tuple[str, str, str, str]:
        return (self.click, self.browse, self.comment, self.dislike)

    def event_type_of(self, topic: str) -> str | None:
        """Which event type a source topic carries (``click``/``browse``/``comment``/
        ``dislike``)."""
        kinds = {self.click: "click", self.browse: "browse", self.comment: "comment",
                 self.dislike: "dislike"}  # fmt: skip
        return kinds.get(topic)


CANDIDATE_INDEXES = ("auto", "faiss", "device")
"""Where a large catalog's candidates come from: faiss IVF-PQ on the CPU
(:class:`encoders.index.ann.AnnIndex`), exact candidates from the text encoder's ONNX Runtime device
(:class:`encoders.index.device.DeviceIndex`: the GPU with CUDA), or ``auto``: the device when
the encoder runs on CUDA, faiss otherwise."""

PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")
"""``at_least_once`` (the default, any broker): a redelivered event changes nothing (each state
keeps the offsets it includes). ``exactly_once``: Kafka transactions (faust's transactional
producer per partition); refused at start by a broker without them, such as the embedded one."""

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CLEANUP_POLICIES = ("compact", "compact,delete")
"""``cleanup.policy`` of the compacted topics (catalog, changelog, control) created here."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the CLI and the demo need to know."""

    bootstrap: str | None = None
    #: Faust's app id: the consumer group id and the prefix of the changelog topic.
    app_id: str = "interest-stream"
    partitions: int = 4
    replication_factor: int = 1
    compacted_cleanup_policy: str = "compact"
    processing_guarantee: str = "at_least_once"
    #: How every Kafka client of the process connects (:mod:`streams.worker.kafka_auth`).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    topics: TopicNames = field(default_factory=TopicNames)
    home: Path = Path(".cache/interest-stream")
    model_dir: Path | None = None
    provider: str = "auto"
    store: str = "rocksdb"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_enabled: bool = True
    batch_size: int = 512
    batch_wait_s: float = 0.001
    fetch_max_wait_ms: int = 10
    session_timeout_s: float = 10.0
    broker_wait_s: float = 300.0
    top_k: int = 10
    half_life_s: float = 6 * 3600.0
    history_len: int = 50
    sequence_model_dir: Path | None = None
    #: A/B (:mod:`streams.worker.ab`): variant B's model folder (``None``: no A/B), the share
    #: of users it serves, and the salt of the users' hash (a new salt, a new split).
    ab_model_dir: Path | None = None
    ab_share: float = 0.5
    ab_salt: str = "interest-stream-ab"
    blend_weight: float = 0.95
    mmr_lambda: float = 0.5
    interests: int = 4
    interest_slots: int = 1
    explore_slots: int = 0
    negative_dwell_ms: int = 3000
    personal_after: int = 3
    trending_window_s: float = 3600.0
    trending_hop_s: float = 300.0
    model_poll_s: float = 5.0
    blas_threads: int = 1
    encoder_int8: bool = False
    ann_min_items: int = 20_000
    candidate_index: str = "auto"
    max_user_id_len: int = MAX_USER_ID_LEN
    log_level: str = "info"
    store_block_cache_mb: int = 256
    store_write_buffer_mb: int = 16
    vector_cache: bool = True
    #: The shared secret of control messages (``interest-stream forget``): empty, a worker
    #: refuses every control message and the CLI refuses to send one. Kept out of ``repr``.
    admin_token: str = field(default="", repr=False)

    @property
    def data_dir(self) -> Path:
        """Faust's data folder (RocksDB tables live below it)."""
        return self.home / "worker" / self.app_id

    @property
    def vector_cache_dir(self) -> Path:
        """Catalog text vectors by content and model (:mod:`streams.worker.vector_cache`): kept
        apart from ``data_dir``, which a fresh embedded broker wipes."""
        return self.home / "cache" / "vectors"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.home / "models" / "all-MiniLM-L6-v2"

    @property
    def resolved_sequence_model_dir(self) -> Path:
        """Where the worker looks for (and hot-reloads) the sequence Transformer."""
        return self.sequence_model_dir or self.home / "models" / "sequence"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, (attr, convert) in ENV_VARS.items():
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[attr] = convert(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r}: {exc}") from exc
        topic_values = {k[6:]: v for k, v in values.items() if k.startswith("topic_")}
        plain = {k: v for k, v in values.items() if not k.startswith("topic_")}
        return cls(topics=TopicNames(**topic_values), **plain).validated()

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``; ``None`` values are ignored (unset CLI flags keep defaults)."""
        return dataclasses.replace(
            self, **{k: v for k, v in changes.items() if v is not None}
        ).validated()

    def validated(self) -> Settings:
        checks = [
            (self.partitions >= 1, "partitions must be >= 1"),
            (self.store in ("rocksdb", "memory"), "store must be 'rocksdb' or 'memory'"),
            (self.provider in ("auto", "cpu", "cuda"), "provider must be auto, cpu or cuda"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.batch_wait_s > 0, "batch_wait_s must be > 0"),
            (0 <= self.fetch_max_wait_ms <= 5000, "fetch_max_wait_ms must be 0..5000"),
            (1 <= self.top_k <= 1000, "top_k must be 1..1000"),
            (self.half_life_s > 0, "half_life_s must be > 0"),
            (self.broker_wait_s >= 0, "broker_wait_s must be >= 0 (0: do not wait)"),
            (1 <= self.history_len <= 1024, "history_len must be 1..1024"),
            (0.0 <= self.blend_weight <= 1.0, "blend_weight must be in [0, 1]"),
            (0.0 <= self.ab_share <= 1.0, "ab_share must be in [0, 1] (the share of users in B)"),
            (0.0 <= self.mmr_lambda <= 1.0, "mmr_lambda must be in [0, 1] (1: no re-ranking)"),
            (1 <= self.interests <= 16, "interests must be 1..16"),
            (0 <= self.interest_slots and 0 <= self.explore_slots
             and self.interest_slots + self.explore_slots < self.top_k,
             "interest_slots and explore_slots must be >= 0 (0: off), together below top_k"),
            (self.negative_dwell_ms >= 0, "negative_dwell_ms must be >= 0 (0: off)"),
            (self.personal_after >= 0, "personal_after must be >= 0"),
            (self.trending_hop_s >= 1 and float(self.trending_hop_s).is_integer(),
             "trending_hop_s must be whole seconds, at least 1"),
            (self.trending_window_s >= self.trending_hop_s,
             "trending_window_s must be >= trending_hop_s"),
            (self.model_poll_s > 0, "model_poll_s must be > 0"),
            (0 <= self.blas_threads <= 256, "blas_threads must be 0..256 (0: numpy's default)"),
            (1 <= self.web_port <= 65535, "web_port must be 1..65535"),
            (self.ann_min_items >= 0, "ann_min_items must be >= 0 (0: always exact)"),
            (self.candidate_index in CANDIDATE_INDEXES,
             f"candidate_index must be one of {', '.join(CANDIDATE_INDEXES)}"),
            (1 <= self.store_block_cache_mb <= 65536, "store_block_cache_mb must be 1..65536"),
            (1 <= self.store_write_buffer_mb <= 4096, "store_write_buffer_mb must be 1..4096"),
            (len(set(dataclasses.astuple(self.topics))) == 8, "topic names must differ"),
            *self._kafka_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        return self

    def _kafka_checks(self) -> list[tuple[bool, str]]:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        return [
            (1 <= self.replication_factor <= 32, "replication_factor must be 1..32"),
            (self.compacted_cleanup_policy in CLEANUP_POLICIES,
             f"compacted_cleanup_policy must be one of {', '.join(CLEANUP_POLICIES)}"),
            (self.processing_guarantee in PROCESSING_GUARANTEES,
             f"processing_guarantee must be one of {', '.join(PROCESSING_GUARANTEES)}"),
            (self.security_protocol in SECURITY_PROTOCOLS,
             f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}"),
            (self.sasl_mechanism in SASL_MECHANISMS,
             f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}"),
            (not sasl or bool(self.sasl_username and self.sasl_password),
             f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"),
            (tls or not (self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile),
             f"ssl files are given but security_protocol {self.security_protocol} uses no TLS"),
            (not self.ssl_keyfile or bool(self.ssl_certfile), "ssl_keyfile needs ssl_certfile"),
        ]


def _bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


#: Environment variable -> (Settings field, converter); the README's configuration table.
#: Read-only: configuration is the ``Settings`` a caller holds, never state kept here.
ENV_VARS: Mapping[str, tuple[str, Any]] = MappingProxyType({
    "KAFKA_BOOTSTRAP": ("bootstrap", str),
    "INTEREST_STREAM_APP_ID": ("app_id", str),
    "INTEREST_STREAM_PARTITIONS": ("partitions", int),
    "INTEREST_STREAM_REPLICATION_FACTOR": ("replication_factor", int),
    "INTEREST_STREAM_COMPACTED_CLEANUP_POLICY": ("compacted_cleanup_policy", str),
    "INTEREST_STREAM_PROCESSING_GUARANTEE": ("processing_guarantee", str),
    "INTEREST_STREAM_KAFKA_SECURITY_PROTOCOL": ("security_protocol", str.upper),
    "INTEREST_STREAM_KAFKA_SASL_MECHANISM": ("sasl_mechanism", str.upper),
    "INTEREST_STREAM_KAFKA_SASL_USERNAME": ("sasl_username", str),
    "INTEREST_STREAM_KAFKA_SASL_PASSWORD": ("sasl_password", str),
    "INTEREST_STREAM_KAFKA_SSL_CAFILE": ("ssl_cafile", Path),
    "INTEREST_STREAM_KAFKA_SSL_CERTFILE": ("ssl_certfile", Path),
    "INTEREST_STREAM_KAFKA_SSL_KEYFILE": ("ssl_keyfile", Path),
    "INTEREST_STREAM_HOME": ("home", Path),
    "INTEREST_STREAM_MODEL_DIR": ("model_dir", Path),
    "INTEREST_STREAM_PROVIDER": ("provider", str),
    "INTEREST_STREAM_STORE": ("store", str),
    "INTEREST_STREAM_WEB_HOST": ("web_host", str),
    "INTEREST_STREAM_WEB_PORT": ("web_port", int),
    "INTEREST_STREAM_WEB_ENABLED": ("web_enabled", _bool),
    "INTEREST_STREAM_BATCH_SIZE": ("batch_size", int),
    "INTEREST_STREAM_BATCH_WAIT_S": ("batch_wait_s", float),
    "INTEREST_STREAM_FETCH_MAX_WAIT_MS": ("fetch_max_wait_ms", int),
    "INTEREST_STREAM_SESSION_TIMEOUT_S": ("session_timeout_s", float),
    "INTEREST_STREAM_BROKER_WAIT_S": ("broker_wait_s", float),
    "INTEREST_STREAM_TOP_K": ("top_k", int),
    "INTEREST_STREAM_HALF_LIFE_S": ("half_life_s", float),
    "INTEREST_STREAM_HISTORY_LEN": ("history_len", int),
    "INTEREST_STREAM_SEQUENCE_MODEL_DIR": ("sequence_model_dir", Path),
    "INTEREST_STREAM_AB_MODEL_DIR": ("ab_model_dir", Path),
    "INTEREST_STREAM_AB_SHARE": ("ab_share", float),
    "INTEREST_STREAM_AB_SALT": ("ab_salt", str),
    "INTEREST_STREAM_BLEND_WEIGHT": ("blend_weight", float),
    "INTEREST_STREAM_MMR_LAMBDA": ("mmr_lambda", float),
    "INTEREST_STREAM_INTERESTS": ("interests", int),
    "INTEREST_STREAM_INTEREST_SLOTS": ("interest_slots", int),
    "INTEREST_STREAM_EXPLORE_SLOTS": ("explore_slots", int),
    "INTEREST_STREAM_NEGATIVE_DWELL_MS": ("negative_dwell_ms", int),
    "INTEREST_STREAM_PERSONAL_AFTER": ("personal_after", int),
    "INTEREST_STREAM_TRENDING_WINDOW_S": ("trending_window_s", float),
    "INTEREST_STREAM_TRENDING_HOP_S": ("trending_hop_s", float),
    "INTEREST_STREAM_MODEL_POLL_S": ("model_poll_s", float),
    "INTEREST_STREAM_BLAS_THREADS": ("blas_threads", int),
    "INTEREST_STREAM_ENCODER_INT8": ("encoder_int8", _bool),
    "INTEREST_STREAM_ANN_MIN_ITEMS": ("ann_min_items", int),
    "INTEREST_STREAM_CANDIDATE_INDEX": ("candidate_index", str),
    "INTEREST_STREAM_LOG_LEVEL": ("log_level", str),
    "INTEREST_STREAM_TOPIC_CLICK": ("topic_click", str),
    "INTEREST_STREAM_TOPIC_BROWSE": ("topic_browse", str),
    "INTEREST_STREAM_TOPIC_COMMENT": ("topic_comment", str),
    "INTEREST_STREAM_TOPIC_DISLIKE": ("topic_dislike", str),
    "INTEREST_STREAM_TOPIC_ITEMS": ("topic_items", str),
    "INTEREST_STREAM_TOPIC_RECOMMENDATIONS": ("topic_recommendations", str),
    "INTEREST_STREAM_TOPIC_DLQ": ("topic_dlq", str),
    "INTEREST_STREAM_TOPIC_CONTROL": ("topic_control", str),
    "INTEREST_STREAM_STORE_BLOCK_CACHE_MB": ("store_block_cache_mb", int),
    "INTEREST_STREAM_STORE_WRITE_BUFFER_MB": ("store_write_buffer_mb", int),
    "INTEREST_STREAM_VECTOR_CACHE": ("vector_cache", _bool),
    "INTEREST_STREAM_ADMIN_TOKEN": ("admin_token", str),
})
