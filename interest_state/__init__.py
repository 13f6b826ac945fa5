"""Per-user interest state: the record, its update rule, its binary codec, and ranking.

Pure numpy: no Kafka, Faust, ONNX Runtime or file I/O. The stream loads a state, calls
:func:`update` and :func:`rank` (or :func:`rank_blended` when a sequence model has set the
state's long-term vector), and stores :func:`encode_state` bytes.
"""

from __future__ import annotations

from .arrays import inner_products
from .blend import BlendCatalog, LongTermItems, rank_blended
from .codec import CODEC_VERSION, decode_state, encode_state
from .coldstart import TRENDING_REASON, mix_trending, trending_share
from .diversity import MMR_LAMBDA, mmr, mmr_batch, mmr_rerank, mmr_rerank_many
from .errors import (
    CodecError,
    DimensionError,
    InterestStateError,
    ObservationError,
    ParamsError,
    StateError,
)
from .events import Event, EventType, Observation, event_id_hash
from .expand import (
    EXPLORE_UNTAGGED,
    INTEREST_CANDIDATES,
    explore,
    interest_hits,
    interest_picks,
    push_down_disliked,
)
from .interests import interest_units
from .params import UpdateParams
from .rank import Catalog, Recommendation, explain, nearest_titles, rank
from .state import InterestState
from .update import UpdateResult, update

__all__ = [
    "CODEC_VERSION",
    "EXPLORE_UNTAGGED",
    "INTEREST_CANDIDATES",
    "MMR_LAMBDA",
    "TRENDING_REASON",
    "BlendCatalog",
    "Catalog",
    "CodecError",
    "DimensionError",
    "Event",
    "EventType",
    "InterestState",
    "InterestStateError",
    "LongTermItems",
    "Observation",
    "ObservationError",
    "ParamsError",
    "Recommendation",
    "StateError",
    "UpdateParams",
    "UpdateResult",
    "decode_state",
    "encode_state",
    "event_id_hash",
    "explain",
    "explore",
    "inner_products",
    "interest_hits",
    "interest_picks",
    "interest_units",
    "mix_trending",
    "mmr",
    "mmr_batch",
    "mmr_rerank",
    "mmr_rerank_many",
    "nearest_titles",
    "push_down_disliked",
    "rank",
    "rank_blended",
    "trending_share",
    "update",
]
