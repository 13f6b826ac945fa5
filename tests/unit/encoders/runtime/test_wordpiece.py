"""The fast WordPiece path (encoders/runtime/wordpiece.py) against the real MiniLM tokenizer."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import encoders.runtime.wordpiece
from encoders import ExportReport, TextEncoder, default_model_source
from encoders.runtime.wordpiece import FastWordPiece, first_difference

TOKENIZER = default_model_source() / "tokenizer.json"
PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" * 3 + \
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" + " " * 20 + "\t\n\r"
OTHER = ["é", "ß", "中", "\u00a0", "\u200b", "😀", "\x00", "\x01", "\x7f", "\ufffd", "[MASK]",
         "[SEP]", "[UNK]", "[PAD]", "[CLS]"]


def _hf(max_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def _texts(count: int, seed: int, other: float) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 - test data
    words = ["movie", "Great", "unbelievable", "xqzv", "don't", "3.14", "e-mail", "a" * 105,
             "co-operate", "naïve", "U.S.A.", "well...", "#tag", "@user", "snake_case"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 30)):
            roll = rng.random()
            if roll < other:
                parts.append(rng.choice(OTHER))
            elif roll < 0.5:
                parts.append(rng.choice(words))
            else:
                parts.append("".join(rng.choices(PLAIN, k=rng.randint(1, 12))))
        texts.append(rng.choice(["", " ", "\t"]).join(parts))
    return texts


@pytest.mark.parametrize("max_length", [2, 5, 16, 128])
def test_every_text_it_takes_gets_the_tokenizers_ids(max_length: int) -> None:
    fast = FastWordPiece.build(TOKENIZER)
    assert fast is not None
    texts = _texts(4000, seed=max_length, other=0.03)
    ours = fast.ids(texts, max_length)
    theirs = _hf(max_length).encode_batch(texts)
    taken = [i for i, row in enumerate(ours) if row is not None]
    assert [ours[i] for i in taken] == [theirs[i].ids for i in taken]
    plain = [i for i, t in enumerate(texts)
             if all(c in PLAIN for c in t) and not any(s in t for s in OTHER)]
    assert set(plain) <= set(taken) and len(plain) > 1000, "plain ASCII texts are all taken"
    assert len(taken) < len(texts), "texts with other characters are left to the tokenizer"


@pytest.mark.parametrize("text", OTHER)
def test_texts_it_cannot_reproduce_are_left_to_the_tokenizer(text: str) -> None:
    fast = FastWordPiece.build(TOKENIZER)
    assert fast is not None
    assert fast.ids([f"a {text} b", "a b"], 16) == [None, [101, 1037, 1038, 102]]


def test_the_word_cache_is_bounded_and_stays_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders.runtime.wordpiece, "_MAX_CACHED", 50)
    fast = FastWordPiece.build(TOKENIZER)
    assert fast is not None
    texts = _texts(500, seed=7, other=0.0)
    assert first_difference(fast, _hf(64), texts, 64) is None
    assert 0 < len(fast) <= 50


def _variant(tmp_path: Path, change: dict[str, object]) -> Path:
    spec = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    for path, value in change.items():
        node = spec
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(leaf) if isinstance(node, list) else leaf] = value
    out = tmp_path / "tokenizer.json"
    out.write_text(json.dumps(spec), encoding="utf-8")
    return out


@pytest.mark.parametrize("change", [
    {"normalizer": {"type": "Lowercase"}},
    {"pre_tokenizer": {"type": "Whitespace"}},
    {"normalizer.clean_text": False},
    {"added_tokens.4.normalized": True},
    {"post_processor": None},
])
def test_another_tokenizer_shape_gets_no_fast_path(tmp_path: Path,
                                                   change: dict[str, object]) -> None:
    assert FastWordPiece.build(_variant(tmp_path, change)) is None


def test_an_added_token_with_lower_case_letters_is_not_matched_in_upper_case_text(
        tmp_path: Path) -> None:
    """tokenizers matches added tokens in the raw text; the path tokenises pieces lower-cased,
    where '[UNUSED0]' would become the added token '[unused0]' (found in review)."""
    spec = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    spec["added_tokens"].append({"id": 1, "content": "[unused0]", "special": True,
                                 "normalized": False, "single_word": False, "lstrip": False,
                                 "rstrip": False})  # fmt: skip
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    fast = FastWordPiece.build(path)
    assert fast is not None
    texts = ["[UNUSED0]", "see [Unused0] here", "[unused0] too", "plain words"]
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=16)
    assert first_difference(fast, tokenizer, texts, 16) is None
    assert fast.ids(texts, 16)[:3] == [None, None, None]


def test_framing_ids_come_from_the_post_processor(tmp_path: Path) -> None:
    moved = _variant(tmp_path, {"post_processor.special_tokens.[CLS].ids": [7]})
    fast = FastWordPiece.build(moved)
    assert fast is not None and fast.ids(["a b"], 8) == [[7, 1037, 1038, 102]]
    tokenizer = Tokenizer.from_file(str(moved))
    tokenizer.no_padding()
    assert tokenizer.encode("a b").ids == [7, 1037, 1038, 102]
    (tmp_path / "two").mkdir()
    assert FastWordPiece.build(_variant(
        tmp_path / "two", {"post_processor.special_tokens.[CLS].ids": [101, 7]})) is None


def test_long_pieces_are_not_cached_and_the_cache_holds_a_bounded_number_of_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fast = FastWordPiece.build(TOKENIZER)
    assert fast is not None
    long_piece = ".,;" * 400  # 1,200 characters, 1,200 ids
    assert fast.ids([f"a {long_piece} b", "a b"], 2048) == [
        [101, 1037, *[1012, 1010, 1025] * 400, 1038, 102], [101, 1037, 1038, 102]]
    assert len(fast) == 2, "only 'a' and 'b' are cached"
    monkeypatch.setattr(encoders.runtime.wordpiece, "_MAX_CACHED_IDS", 10)
    fast.clear()
    assert first_difference(fast, _hf(64), _texts(300, seed=9, other=0.0), 64) is None
    assert fast._held <= 10


def test_max_length_below_two_is_refused() -> None:
    fast = FastWordPiece.build(TOKENIZER)
    assert fast is not None
    with pytest.raises(ValueError, match=">= 2"):
        fast.ids(["a"], 1)


def test_an_unreadable_tokenizer_gets_no_fast_path(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    assert FastWordPiece.build(tmp_path / "tokenizer.json") is None
    assert FastWordPiece.build(tmp_path / "missing.json") is None


def test_a_cased_tokenizer_keeps_case(tmp_path: Path) -> None:
    path = _variant(tmp_path, {"normalizer.lowercase": False})
    fast = FastWordPiece.build(path)
    assert fast is not None
    texts = _texts(300, seed=3, other=0.0)
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=32)
    assert first_difference(fast, tokenizer, texts, 32) is None


def test_the_encoder_gives_the_same_vectors_with_and_without_it(
        tiny_export: ExportReport) -> None:
    texts = _texts(200, seed=11, other=0.05)
    with_fast = TextEncoder.load(tiny_export.out_dir, provider="cpu", intra_op_threads=1)
    without = TextEncoder.load(tiny_export.out_dir, provider="cpu", intra_op_threads=1,
                               fast_tokenizer=False)
    assert with_fast.fast_tokenizer and not without.fast_tokenizer
    np.testing.assert_allclose(with_fast.encode(texts, batch_size=32),
                               without.encode(texts, batch_size=32), atol=1e-6)
    tokens = with_fast.tokenize(texts)
    assert tokens.ids == [e.ids for e in with_fast.tokenizer.encode_batch(texts)]


def test_a_fast_path_that_disagrees_is_not_used(
        tiny_export: ExportReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "encoder"
    shutil.copytree(tiny_export.out_dir, folder)
    real = FastWordPiece.ids

    def off_by_one(self: FastWordPiece, texts: list[str], max_length: int) -> list[object]:
        return [None if row is None else [*row[:-1], row[-1] + 1]
                for row in real(self, texts, max_length)]

    monkeypatch.setattr(FastWordPiece, "ids", off_by_one)
    with caplog.at_level(logging.ERROR):
        encoder = TextEncoder.load(folder, provider="cpu", intra_op_threads=1)
    assert not encoder.fast_tokenizer
    assert "disagrees with the tokenizer" in caplog.text


def test_the_bench_puts_the_host_work_beside_tokenizers_alone(tiny_export: ExportReport) -> None:
    import dataclasses

    from streams.bench.common import BenchConfig
    from streams.bench.encoder import host_rows
    from streams.settings import Settings

    cfg = dataclasses.replace(BenchConfig.for_mode(True), min_seconds=0.02, rounds=1)
    rows = host_rows(Settings(model_dir=tiny_export.out_dir), cfg, _texts(64, 5, 0.0), size=16)
    assert [r.metric for r in rows] == [
        f"host work texts/s, batch 16, {kind}, word cache {cache}"
        for kind in ("the bench's texts", "24-word texts") for cache in ("warm", "cold")]
    assert all(r.value > 0 and r.baseline_value for r in rows)
