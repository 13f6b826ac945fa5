"""A/B testing in the stream: which variant serves a user, and each variant's output figures.

With ``INTEREST_STREAM_AB_MODEL_DIR`` set, a worker serves two sequence models at once: variant
``A`` is the serving model (``INTEREST_STREAM_SEQUENCE_MODEL_DIR``), variant ``B`` the one in
the A/B folder, each hot-reloaded by its own watcher. A user's variant is a pure function of
their ``user_id`` (:meth:`Split.variant`): the first 8 bytes of ``sha1(salt + ":" + user_id)``
as an unsigned integer, mod :data:`BUCKETS`, below ``share x BUCKETS`` is ``B``. It depends on
nothing a worker knows (never Python's ``hash()``, which is salted per process), so every
worker, every partition and every restart puts a user in the same variant, and a new salt
draws a new split. Without A/B every user is ``A``.

:class:`VariantFlow` keeps what each variant sent: recommendation messages and their latency
(the message's ``latency_ms``); the online HR/MRR per variant live in
:class:`streams.worker.online_quality.OnlineQuality`, which holds a flow.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BUCKETS", "VARIANTS", "LatencyFigures", "Split", "VariantFlow"]

#: The split's resolution: a share is rounded to 1/BUCKETS.
BUCKETS = 10_000
#: The variants' names: ``A`` the serving model, ``B`` the model under test.
VARIANTS = ("A", "B")


@dataclass(frozen=True, slots=True)
class Split:
    """Users split between variants ``A`` and ``B`` by a stable hash of their ``user_id``.

    ``share``: the share of users in ``B`` (0: nobody, 1: everybody); ``salt``: changing it
    draws a new split (a new experiment on the same users)."""

    share: float = 0.5
    salt: str = "interest-stream-ab"

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"the B share must be in [0, 1], got {self.share}")

    def bucket(self, user_id: str) -> int:
        """The user's bucket, ``0 <= bucket < BUCKETS``: the same in every process."""
        digest = hashlib.sha1(f"{self.salt}:{user_id}".encode(), usedforsecurity=False).digest()
        return int.from_bytes(digest[:8], "big") % BUCKETS

    def variant(self, user_id: str) -> str:
        """``"B"`` for the first ``share`` of the buckets, ``"A"`` for the rest."""
        return "B" if self.bucket(user_id) < round(self.share * BUCKETS) else "A"


@dataclass(slots=True)
class LatencyFigures:
    """One variant's messages and their latencies: every one counted and summed (Prometheus'
    ``_count`` and ``_sum``), the last ``keep`` kept for percentiles."""

    keep: int = 10_000
    sent: int = 0
    total_ms: float = 0.0
    recent_ms: deque[float] = field(default_factory=deque)

    def add(self, latency_ms: float) -> None:
        self.sent += 1
        self.total_ms += latency_ms
        self.recent_ms.append(latency_ms)
        if len(self.recent_ms) > self.keep:
            self.recent_ms.popleft()

    def percentiles(self) -> dict[str, float]:
        """p50/p90/p99 (ms) of the kept latencies, {} before any."""
        if not self.recent_ms:
            return {}
        values = np.fromiter(self.recent_ms, dtype=np.float64, count=len(self.recent_ms))
        found = np.percentile(values, (50, 90, 99))
        return {f"p{q}": round(float(v), 2) for q, v in zip((50, 90, 99), found, strict=True)}


@dataclass(slots=True)
class VariantFlow:
    """Recommendation messages sent per variant, with their latency. Not thread-safe: the
    agent writes it and the web views read it, both from the event loop."""

    variants: dict[str, LatencyFigures] = field(default_factory=dict)

    def sent(self, variant: str, latency_ms: float) -> None:
        """A message ranked by ``variant`` went out ``latency_ms`` after its oldest event."""
        figures = self.variants.get(variant)
        if figures is None:
            figures = self.variants[variant] = LatencyFigures()
        figures.add(latency_ms)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """variant -> ``recommendations`` (messages sent) and ``latency_ms`` percentiles."""
        return {
            variant: {"recommendations": f.sent, "latency_ms": f.percentiles()}
            for variant, f in sorted(self.variants.items())
        }
