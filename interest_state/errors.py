"""Errors raised by :mod:`interest_state`.

    InterestStateError
     ├── ParamsError          an UpdateParams field or a function argument is out of range
     ├── StateError           an InterestState was built with inconsistent fields
     ├── ObservationError     an observation cannot be applied (bad event type, timestamp, vector)
     │    └── DimensionError  a vector's dimension differs from the state's or the catalog's
     └── CodecError           bytes are not a state this codec version can read

Nothing here does I/O, so there are no foreign errors to translate except the ones the codec
meets while parsing (``struct.error``, ``UnicodeDecodeError``), re-raised as ``CodecError``.
"""

from __future__ import annotations


class InterestStateError(Exception):
    """Root of every error raised by :mod:`interest_state`."""


class ParamsError(InterestStateError):
    """An :class:`UpdateParams` field, or an argument such as ``k``, is out of range."""


class StateError(InterestStateError):
    """An :class:`InterestState` was built with fields that do not fit together."""


class ObservationError(InterestStateError):
    """An observation cannot be applied: unknown event type, bad timestamp, non-finite vector."""


class DimensionError(ObservationError):
    """A vector's length differs from the dimension of the state (or of the catalog)."""


class CodecError(InterestStateError):
    """Encoded bytes are truncated, corrupt, or of a codec version this build cannot read."""
