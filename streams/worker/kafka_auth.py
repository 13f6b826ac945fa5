"""How every Kafka client of the process connects: TLS and SASL from :class:`Settings`.

One source for all of them: faust's own consumer and producer get :func:`faust_credentials`
(its ``broker_credentials``), and every plain aiokafka client (the topic admin, the catalog and
control feeds, the health and lag monitors, the transport's offset probe, ``produce``,
``forget``, ``tail``) gets :func:`client_options`, which is faust's own translation of those
same credentials into aiokafka's arguments, or :func:`app_client_options` where only the faust
app is at hand. With ``PLAINTEXT`` (the default) they are empty: clients are built as before.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.errors import SettingsError
from streams.settings import Settings

__all__ = [
    "app_client_options",
    "client_options",
    "faust_credentials",
    "feed_consumer",
    "ssl_context",
]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``SSL``/``SASL_SSL`` (``None`` otherwise): the system's trusted CAs
    unless ``ssl_cafile`` is set, and a client certificate when ``ssl_certfile`` is set."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            raise SettingsError(f"{name} {path} is not a readable file")
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"cannot load the TLS files of the Kafka settings: {exc}") from exc
    return context


def faust_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's ``broker_credentials`` for ``settings`` (``None``: plain TCP, no SASL)."""
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _aiokafka_options(credentials: Any, context: ssl.SSLContext | None) -> dict[str, Any]:
    if credentials is None and context is None:
        return {}  # PLAINTEXT: the clients keep aiokafka's defaults
    return dict(credentials_to_aiokafka_auth(credentials, context))


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments (``security_protocol``, ``ssl_context``, ``sasl_*``) of a
    plain client; empty for ``PLAINTEXT``."""
    return _aiokafka_options(faust_credentials(settings), None)


def app_client_options(app: faust.App) -> dict[str, Any]:
    """:func:`client_options` of the settings ``app`` was made from (faust's conf keeps them)."""
    return _aiokafka_options(app.conf.broker_credentials, app.conf.ssl_context)


def feed_consumer(settings: Settings, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside the group, for a topic every worker reads whole (the catalog, the
    control topic): no commits, a fetch wait of at least 50 ms (a feed is not latency-bound)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 50),
        **options,
        **client_options(settings),
    )
