"""A fast path for BERT WordPiece tokenising of plain-ASCII texts, exact to ``tokenizers``.

On a GPU the text encoder is bound by the host from batch 128 up: HuggingFace ``tokenizers``
spends ~30-50 µs per 24-word text on one core (normalising, splitting and matching each word
afresh), and on the lent 16-core H100 machine tokenising alone topped out at 42k-66k texts/s
while the fused fp16 graph runs 224k/s at batch 512. Words repeat, so this path tokenises each
distinct word once, with the real tokenizer, and afterwards only splits texts at whitespace and
looks the pieces up.

It is exact by construction for the texts it takes. For a BERT tokenizer (``BertNormalizer``,
``BertPreTokenizer``, ``WordPiece``, ``[CLS] A [SEP]``) a printable-ASCII text is normalised by
lower-casing alone (no accents, no Chinese characters, no control characters to drop), and
split at whitespace (space, tab, newline, carriage return), then each piece into runs of
letters and digits and single punctuation characters, each of which WordPiece works on alone:
a whitespace-separated piece's ids do not depend on its neighbours, so they are cached as the
tokenizer gives them for that piece. Ids are cut at ``max_length - 2`` and framed by ``[CLS]``
/ ``[SEP]``, as the tokenizer's right truncation does.

Texts it does not take (any character outside printable ASCII, tab, newline and carriage
return, or a special token's text such as ``[MASK]``, which the tokenizer matches before
normalising) get ``None`` and go through ``tokenizers`` as before. :meth:`FastWordPiece.build`
returns ``None`` for a tokenizer of another shape, and the encoder checks the path against the
tokenizer on probe texts when it loads (:func:`first_difference` on :data:`PROBE_TEXTS`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

__all__ = ["PROBE_TEXTS", "FastWordPiece", "first_difference"]

_NOT_PLAIN = re.compile(r"[^\t\n\r -~]")
"""Anything but printable ASCII, tab, newline and carriage return."""
_MAX_CACHED = 1 << 17
"""Distinct whitespace-separated pieces kept; the cache starts afresh when it is full (a stream
of random strings must not grow the worker without bound)."""
_MAX_CACHED_IDS = 1 << 19
"""Ids held by the cache at most (it starts afresh beyond): with pieces of at most
:data:`_MAX_PIECE` characters, some 60 MB in the worst case."""
_MAX_PIECE = 100
"""Longer pieces (URLs, runs of punctuation, garbage) are tokenised each time, not cached."""

PROBE_TEXTS = (
    "", "   ", "A quiet film about a pilot.", "Don't stop: it's 2024-11-26, 9:30am!!",
    "e-mail me at someone@example.com or see https://example.org/a_b?c=1&d=2#top",
    "UPPER lower MiXeD CamelCase snake_case kebab-case dotted.name 3.14159 1,000,000",
    "tabs\tand\nnewlines\r\nand   runs   of   spaces", "(parens) [brackets] {braces} <angles>",
    "a" * 120 + " after a word longer than WordPiece takes", "unbelievably uncharacteristic "
    "antidisestablishmentarianism hyperparameterisation xyzzyq qwrtplk",
    "~`!@#$%^&*()_+-={}|[]\\:\";'<>?,./", "[MASK] is a special token, [CLS] too",
    " ".join(["word"] * 200), "the the the the the the the the the the the the the the the",
)
"""Texts the fast WordPiece path is checked on against the tokenizer when an encoder loads."""


class FastWordPiece:
    """Token ids of plain-ASCII texts from a per-word cache; see the module docstring."""

    def __init__(self, tokenizer: Tokenizer, *, lowercase: bool, cls_id: int, sep_id: int,
                 specials: Sequence[str]) -> None:  # fmt: skip
        self._words = tokenizer  # no truncation, no padding: one word at a time
        self._lowercase = lowercase
        self._cls = cls_id
        self._sep = sep_id
        self._specials = tuple(token for token in specials if token)
        self._special_starts = "".join(sorted({token[0] for token in self._specials}))
        # a lower-casing tokenizer matches added tokens in the raw text, but the pieces are
        # tokenised lower-cased: an added token with lower-case letters would match there only
        self._lower_specials = tuple(t for t in self._specials if lowercase and t != t.upper())
        self._cache: dict[str, list[int]] = {}
        self._held = 0  # ids in the cache

    @classmethod
    def build(cls, tokenizer_path: Path) -> FastWordPiece | None:
        """The fast path for the tokenizer in ``tokenizer_path``, or ``None`` when it is not a
        BERT WordPiece tokenizer of the shape this path reproduces."""
        try:
            spec = json.loads(Path(tokenizer_path).read_text(encoding="utf-8"))
            words = Tokenizer.from_file(str(tokenizer_path))
        except Exception:  # unreadable or not JSON (tokenizers raises a bare Exception)
            return None
        shape = _bert_shape(spec)
        if shape is None:
            return None
        lowercase, cls_id, sep_id = shape
        words.no_truncation()
        words.no_padding()
        added = spec.get("added_tokens") or []
        if any(token.get("normalized") for token in added):  # matched after normalising
            return None
        specials = [str(token["content"]) for token in added]
        return cls(words, lowercase=lowercase, cls_id=cls_id, sep_id=sep_id, specials=specials)

    def __len__(self) -> int:
        """Distinct words cached."""
        return len(self._cache)

    def clear(self) -> None:
        """Forget the cached words (the benchmark's cold-cache rows)."""
        self._cache.clear()
        self._held = 0

    def ids(self, texts: Sequence[str], max_length: int) -> list[list[int] | None]:
        """Each text's ids (``[CLS]``, at most ``max_length - 2`` word ids, ``[SEP]``), or
        ``None`` for a text this path does not take."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        room = max_length - 1  # [CLS] is in the list already
        out: list[list[int] | None] = []
        cache = self._cache
        for text in texts:
            if not self._takes(text):
                out.append(None)
                continue
            folded = text.lower() if self._lowercase else text
            if self._lower_specials and any(t in folded for t in self._lower_specials):
                out.append(None)
                continue
            ids = [self._cls]
            for word in folded.split():
                piece = cache.get(word)
                if piece is None:
                    piece = self._word(word)
                ids += piece  # (uncached pieces are the only long ones; cut below)
                if len(ids) >= room:
                    del ids[room:]
                    break
            ids.append(self._sep)
            out.append(ids)
        return out

    def _takes(self, text: str) -> bool:
        """Plain ASCII (printable, tab, newline, carriage return) without a special token's
        text; the common case (printable ASCII, no special token's first character) costs
        three C-level scans."""
        if not text.isascii() or (not text.isprintable() and _NOT_PLAIN.search(text)):
            return False
        for start in self._special_starts:
            if start in text:
                return not any(token in text for token in self._specials)
        return True

    def _word(self, word: str) -> list[int]:
        piece: list[int] = self._words.encode(word, add_special_tokens=False).ids
        if len(word) > _MAX_PIECE:
            return piece
        if len(self._cache) >= _MAX_CACHED or self._held + len(piece) > _MAX_CACHED_IDS:
            self.clear()
        self._cache[word] = piece
        self._held += len(piece)
        return piece


def _bert_shape(spec: dict[str, Any]) -> tuple[bool, int, int] | None:
    """(lowercase, [CLS] id, [SEP] id) of a BERT WordPiece tokenizer.json, else ``None``."""
    normalizer = spec.get("normalizer") or {}
    model = spec.get("model") or {}
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
        return None
    if (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        return None
    if model.get("type") != "WordPiece":
        return None
    post = spec.get("post_processor") or {}
    if post.get("type") == "BertProcessing":
        cls_id, sep_id = post["cls"][1], post["sep"][1]
    elif post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        if len(single) != 3 or (single[1].get("Sequence") or {}).get("id") != "A":
            return None
        first, last = single[0].get("SpecialToken"), single[2].get("SpecialToken")
        if not first or not last:
            return None
        specials = post.get("special_tokens") or {}
        framing = [(specials.get(t["id"]) or {}).get("ids") or [] for t in (first, last)]
        if any(len(ids) != 1 for ids in framing):
            return None
        cls_id, sep_id = framing[0][0], framing[1][0]
    else:
        return None
    return bool(normalizer.get("lowercase", True)), int(cls_id), int(sep_id)


def first_difference(fast: FastWordPiece, tokenizer: Tokenizer, texts: Sequence[str],
                     max_length: int) -> str | None:  # fmt: skip
    """The first text of ``texts`` whose fast ids differ from ``tokenizer``'s, or ``None`` when
    every text the fast path takes agrees (``tokenizer`` must truncate at ``max_length``)."""
    reference = tokenizer.encode_batch_fast(list(texts))
    for text, ours, theirs in zip(texts, fast.ids(texts, max_length), reference, strict=True):
        if ours is not None and ours != theirs.ids:
            return text
    return None
