"""The ``gpu`` section of ``interest-stream bench``: what one GPU buys, each figure beside a
baseline measured in the same run on the same machine.

1. Encoder at 16 tokens per text: :class:`encoders.TextEncoder` on the CUDA provider (fused
   fp16 graph, IO binding, next batch padded while the GPU runs) from *text* to vector, against
   (a) a bare ONNX Runtime session on the same graph with its inputs already on the GPU (the
   ceiling: no tokenising, no padding, no copies) and (b) torch eager fp16 (``AutoModel`` with
   SDPA attention, inputs already on the GPU, mean pooling and normalisation included).
2. End to end: one worker (``python -m streams.cli worker``) on a comment-heavy stream through
   the embedded broker, with the CUDA provider against the same worker on the CPU provider.
3. The item index on the GPU (:class:`encoders.index.device.DeviceIndex`) against faiss
   IVF-PQ on the CPU at 1M items: blended users/s, recall@10 against exact ranking, one
   search, adding items, building (:func:`streams.bench.ann.device_index_rows`).

Where CUDA does not load the section says so and measures nothing; ``provider`` lets the tests
run the same code on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders import TextEncoder
from encoders.runtime.text import Tokens
from streams.bench.ann import device_index_rows
from streams.bench.common import (
    BenchConfig,
    Row,
    load_dataset,
    percentile,
    timed_rate,
    with_comments,
)
from streams.bench.latency import Latency
from streams.bench.stream import StreamRun, run_stage, stage_note
from streams.settings import Settings

__all__ = ["GPU_BATCH_SIZES", "gpu_section", "sixteen_token_texts"]

log = logging.getLogger(__name__)

GPU_BATCH_SIZES = (1, 32, 128, 512, 2048)
TOKENS = 16
_WORDS = (
    "the quiet film follows a young pilot across a frozen sea while her crew argues about the "
    "map a rival stole from the old harbour and the storm that keeps them from home for weeks "
    "until a stranger with a broken radio offers help at a price nobody wants to pay"
).split()


def sixteen_token_texts(count: int, seed: int = 5) -> list[str]:
    """Texts long enough that truncation at 16 tokens leaves every one exactly 16 wide."""
    rng = random.Random(seed)  # noqa: S311 - bench text, not a secret
    return [" ".join(rng.choices(_WORDS, k=24)) for _ in range(count)]


# --------------------------------------------------------------------------- encoder


def _bare_session(model_path: Path, provider: str) -> Any:
    import onnxruntime as ort

    from encoders.runtime.providers import CPU

    return ort.InferenceSession(str(model_path), providers=list(dict.fromkeys([provider, CPU])))


def _bare_step(session: Any, provider: str, feeds: dict[str, np.ndarray]) -> Callable[[], int]:
    """One run of a plain session on inputs placed on the device once, output left there."""
    import onnxruntime as ort

    from encoders.runtime.providers import CUDA

    device = "cuda" if provider == CUDA else "cpu"
    names = {i.name for i in session.get_inputs()}
    binding = session.io_binding()
    for name, value in feeds.items():
        if name in names:
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    binding.bind_output(session.get_outputs()[0].name, device)
    rows = len(feeds["input_ids"])

    def step() -> int:
        session.run_with_iobinding(binding)
        return rows

    return step


def _encode_step(encoder: TextEncoder, texts: list[str], size: int) -> Callable[[], int]:
    def step() -> int:
        encoder.encode(texts, batch_size=size)
        return len(texts)

    return step


def _host_step(encoder: TextEncoder, texts: list[str]) -> Callable[[], int]:
    def step() -> int:
        encoder.prepare(encoder.tokenize(texts))
        return len(texts)

    return step


def _torch_steps(config_path: Path, cuda: bool
                 ) -> tuple[Callable[[dict[str, np.ndarray]], Callable[[], int]], str] | None:
    """Torch eager (fp16 on the GPU), built once: a maker of steps on given token ids, and its
    label. The export's ``config.json`` gives the architecture; weights are random (the timing
    does not depend on their values). ``None`` without torch."""
    try:
        import torch
        from transformers import AutoConfig, AutoModel
    except ImportError:
        return None
    config = AutoConfig.from_pretrained(str(config_path.parent))
    dtype = torch.float16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    model = AutoModel.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="sdpa").to(device, dtype).eval()

    def steps(feeds: dict[str, np.ndarray]) -> Callable[[], int]:
        inputs = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
        rows = len(feeds["input_ids"])

        def step() -> int:
            with torch.inference_mode():
                hidden = model(**inputs).last_hidden_state
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                torch.nn.functional.normalize(pooled, dim=1).float().cpu()
            return rows

        return step

    return steps, f"torch {torch.__version__} eager {'fp16' if cuda else 'fp32'} (sdpa)"


def encoder_rows(settings: Settings, cfg: BenchConfig, provider: str,
                 sizes: Sequence[int] = GPU_BATCH_SIZES) -> list[Row]:
    from encoders.runtime.metadata import CONFIG_FILE, FP16_FILE
    from encoders.runtime.providers import CUDA

    model_dir = settings.resolved_model_dir.resolve()
    encoder = TextEncoder.load(model_dir, provider="cuda" if provider == CUDA else "cpu",
                               max_length=TOKENS)
    bare = _bare_session(model_dir / FP16_FILE, provider)
    torch_steps = _torch_steps(model_dir / CONFIG_FILE, provider == CUDA)
    texts = sixteen_token_texts(max(sizes) * 8)
    widths = {len(e.ids) for e in encoder.tokenizer.encode_batch(texts[:256])}
    if widths != {TOKENS}:
        raise RuntimeError(f"bench texts tokenise to widths {widths}, not {TOKENS}")
    rows: list[Row] = []
    seconds = cfg.min_seconds
    for size in sizes:
        batch = texts[:size]
        feeds = encoder.prepare(Tokens([e.ids for e in encoder.tokenizer.encode_batch(batch)]))
        stages: dict[str, Callable[[], int]] = {
            "ours": _encode_step(encoder, texts[: size * 8], size),
            "ours, one batch per call": _encode_step(encoder, batch, size),
            "bare": _bare_step(bare, provider, feeds),
            "host": _host_step(encoder, batch),
        }
        torch_label = ""
        if torch_steps is not None:
            stages["torch"] = torch_steps[0](feeds)
            torch_label = torch_steps[1]
        rates: dict[str, list[float]] = {name: [] for name in stages}
        for _ in range(cfg.rounds):  # alternating rounds: drift hits every contender alike
            for name, step in stages.items():
                rates[name].append(timed_rate(step, seconds))
        best = {name: float(np.median(values)) for name, values in rates.items()}
        note = f"{TOKENS} tokens, {encoder.model_version} on {encoder.provider}"
        if not encoder.model_version.endswith("-fp16"):
            note += " (not the fp16 graph the bare session runs: it failed its check or is absent)"
        rows.append(Row("gpu", f"encoder sentences/s, batch {size}, text in (8 batches/call)",
                        best["ours"], "sent/s", "bare session, ids on device", best["bare"], note))
        rows.append(Row("gpu", f"encoder sentences/s, batch {size}, one batch per call",
                        best["ours, one batch per call"], "sent/s", "bare session, ids on device",
                        best["bare"]))
        rows.append(Row("gpu", f"encoder host work only (tokenise + pad), batch {size}",
                        best["host"], "sent/s", "bare session, ids on device", best["bare"],
                        "the CPU side of ours, no model run"))
        if "torch" in best:
            rows.append(Row("gpu", f"encoder sentences/s, batch {size}, vs torch", best["ours"],
                            "sent/s", torch_label, best["torch"], "torch: ids already on device"))
    return rows


# --------------------------------------------------------------------------- end to end


def latency_pair_rows(mine: Latency, theirs: Latency, share: float,
                      providers: Sequence[str]) -> list[Row]:
    """p50/p99 of one fixed-rate run on the second provider against the first: e2e (to the
    bench's reader) and to the broker's ack of the recommendation (the worker's ``acked_ms``)."""
    where = f"at {mine.target_rate:,.0f}/s, {share:.0%} comments, {providers[1]}"
    rows = [Row("gpu", f"worker e2e p{q} {where}", percentile(list(mine.e2e_ms.values()), q),
                "ms", providers[0], percentile(list(theirs.e2e_ms.values()), q))
            for q in (50, 99)]
    rows += [Row("gpu", f"worker to broker ack {stat} {where}",
                 mine.acked_ms.get(stat, float("nan")), "ms", providers[0],
                 theirs.acked_ms.get(stat, float("nan")))
             for stat in ("p50", "p99")]
    return rows


def stream_rows(settings: Settings, cfg: BenchConfig, tmp: Path, shares: Sequence[float],
                providers: Sequence[str] = ("cpu", "cuda")) -> list[Row]:
    """The same worker on the same stream once per provider, for each comment share, and the
    second provider once more on clicks and browses only (its ceiling on this machine)."""
    from streams.local.broker import broker_for

    items, plain = load_dataset(settings, cfg.events + cfg.latency_events())
    texts = {i.item_id: i.text for i in items}
    stages = [(p, share) for share in shares for p in providers] + [(providers[1], 0.0)]
    results = {}
    tmp.mkdir(parents=True, exist_ok=True)
    with broker_for(settings.bootstrap, tmp / "broker.log") as bootstrap:
        for provider, share in stages:
            base = dataclasses.replace(settings, provider=provider)
            run = StreamRun(base, bootstrap, tmp / f"{provider}-{share:g}", cfg, items,
                            with_comments(plain, texts, share))
            run.tmp.mkdir(parents=True, exist_ok=True)
            results[provider, share] = run_stage(run, "ours")
    rows = []
    for share in shares:
        cpu, gpu = (results[p, share] for p in providers)
        rows.append(Row("gpu", f"worker events/s, {share:.0%} comments, {providers[1]}",
                        gpu.rate, "ev/s", f"same worker, {providers[0]}", cpu.rate,
                        f"{stage_note(gpu)} | {providers[0]}: {stage_note(cpu)}"))
        for mine, theirs in zip(gpu.latencies, cpu.latencies, strict=True):
            rows += latency_pair_rows(mine, theirs, share, providers)
    ceiling = results[providers[1], 0.0]
    rows.append(Row("gpu", f"worker events/s, no comments, {providers[1]}", ceiling.rate, "ev/s",
                    note=f"this machine's worker without text to encode; {stage_note(ceiling)}"))
    return rows


# --------------------------------------------------------------------------- the section


def gpu_section(settings: Settings, cfg: BenchConfig, tmp: Path, echo: Callable[[str], None],
                provider: str | None = None, shares: Sequence[float] = (0.5, 1.0),
                index_sizes: Sequence[int] = ()) -> list[Row]:
    """Encoder and end-to-end rows on the GPU; a single 'skipped' row where CUDA does not load.

    Each part runs on its own: a part that fails leaves a row saying why and the others run.
    """
    from encoders.runtime.providers import CUDA, choose_providers

    chosen = provider or choose_providers("auto")[0]
    if chosen != CUDA and provider is None:
        return [Row("gpu", "CUDA", float("nan"), "", note="skipped: CUDAExecutionProvider does "
                    "not load here (pip install 'interest-stream[gpu]' on a CUDA machine)")]
    rows: list[Row] = []
    parts: list[tuple[str, Callable[[], list[Row]]]] = [
        ("encoder", lambda: encoder_rows(settings, cfg, chosen)),
        ("stream", lambda: stream_rows(settings, cfg, tmp / "gpu-stream", shares,
                                       ("cpu", "cuda" if chosen == CUDA else "cpu"))),
        ("index", lambda: device_index_rows(cfg, "cuda" if chosen == CUDA else "cpu",
                                            index_sizes or (100_000 if cfg.quick else 1_000_000,),
                                            settings)),
    ]
    for name, part in parts:
        echo(f"gpu: {name} ...")
        started = time.perf_counter()
        try:
            rows += part()
        except Exception as exc:  # one broken part must not cost the others' figures
            log.exception("gpu bench part %s failed", name)
            rows.append(Row("gpu", name, float("nan"), "", note=f"FAILED: {exc!r}"[:300]))
        echo(f"gpu: {name} done in {time.perf_counter() - started:.0f}s")
    return rows
