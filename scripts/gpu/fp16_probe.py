"""On a CUDA machine: which build of the fused fp16 graph gives the float32 vectors back?

Builds each variant of :func:`encoders.build.fp16.optimize_fp16` into a scratch copy of the export,
runs the validation texts on the CUDA provider (as one padded batch and one by one) and prints
each text's cosine with the float32 reference, then with each of onnxruntime's attention-kernel
switches for the default build. The first variant that passes without a switch is built into
the real export folder (its card records the options), so the benchmark after this uses it.
Usage: python scripts/gpu/fp16_probe.py MODEL_DIR OUT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

from encoders.build.fp16 import optimize_fp16
from encoders.runtime.metadata import (
    CONFIG_FILE,
    FP16_FILE,
    METADATA_FILE,
    MIN_COSINE,
    MODEL_FILE,
    TOKENIZER_FILE,
    read_fp16_card,
)
from encoders.runtime.providers import CPU, CUDA, choose_providers
from encoders.runtime.text import TextEncoder

VARIANTS: tuple[dict[str, bool], ...] = (
    {},
    {"raw_mask": True},
    {"embed_fusion": False},
    {"raw_mask": True, "embed_fusion": False},
    {"attention_fusion": False},
)
SWITCHES = ("ORT_DISABLE_FUSED_ATTENTION", "ORT_DISABLE_TRT_FLASH_ATTENTION",
            "ORT_DISABLE_FLASH_ATTENTION", "ORT_DISABLE_MEMORY_EFFICIENT_ATTENTION")


def cosines(folder: Path, graph: str, bound: bool = True) -> dict[str, list[float]]:
    card = read_fp16_card(folder)
    if card is None:
        raise SystemExit(f"no current fp16 graph in {folder}")
    reference = card.reference_vectors()
    session = ort.InferenceSession(str(folder / graph), providers=[CUDA, CPU])
    encoder = TextEncoder.from_session(session, folder)
    encoder._cuda = bound  # False: plain session.run instead of IO binding
    batch = encoder.encode(list(card.texts))
    single = [encoder.encode([t])[0] for t in card.texts]
    return {"batch": [round(float(a @ b), 5) for a, b in zip(batch, reference, strict=True)],
            "single": [round(float(a @ b), 5) for a, b in zip(single, reference, strict=True)]}


def main(model_dir: Path, out: Path) -> None:
    if choose_providers("auto")[0] != CUDA:
        raise SystemExit("CUDA does not load")
    report: dict[str, object] = {}
    winner = None
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name in (MODEL_FILE, METADATA_FILE, TOKENIZER_FILE, CONFIG_FILE):
            (scratch / name).symlink_to(model_dir / name)
        for variant in VARIANTS:
            label = json.dumps(variant, sort_keys=True)
            try:
                optimize_fp16(scratch, **variant)
                report[label] = result = cosines(scratch, FP16_FILE)
            except Exception as exc:  # a variant that does not build or run: note it, go on
                report[label] = repr(exc)[:400]
                print(label, "FAILED", repr(exc)[:400], flush=True)
                continue
            print(label, result, flush=True)
            if winner is None and min(result["batch"] + result["single"]) >= MIN_COSINE:
                winner = variant
        report["fp32 unfused on CUDA"] = result = cosines(scratch, MODEL_FILE)
        print("fp32 unfused", result, flush=True)
        optimize_fp16(scratch, **(winner or {}))
        report["default, plain run"] = result = cosines(scratch, FP16_FILE, bound=False)
        print("default, plain run", result, flush=True)
        for switch in SWITCHES:
            os.environ[switch] = "1"
            report[f"default + {switch}"] = result = cosines(scratch, FP16_FILE)
            print(switch, result, flush=True)
            del os.environ[switch]
    report["winner"] = winner
    out.write_text(json.dumps(report, indent=1) + "\n")
    if winner is None:
        sys.exit("no fp16 variant passes on CUDA")
    for name in (FP16_FILE, "model.fp16.json"):
        (model_dir / name).unlink(missing_ok=True)
    optimize_fp16(model_dir, **winner)
    print("built", model_dir / FP16_FILE, "with", winner, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
