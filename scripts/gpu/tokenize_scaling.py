"""Does tokenising scale with the host's cores? (The GPU encoder is bound by it from batch 128.)

On the lent H100 the host work of ``TextEncoder.encode`` (tokenise + pad) topped out at 42k-66k
texts/s on 16 cores, about two cores' worth. This prints, for batches of 512 sixteen-token
texts: the CPUs this process may use and its cgroup quota; ``encode_batch_fast`` texts/s with
tokenizers' own pool (rayon) at 1, 2, 4, 8 and all threads, each in a fresh process (rayon
reads ``RAYON_NUM_THREADS`` once); and with K Python threads each tokenising whole batches
serially (``TOKENIZERS_PARALLELISM=false``). If the threads scale where rayon does not, the
encoder should tokenise several batches ahead on a thread pool; if neither does, the machine's
quota is the limit. Usage: python scripts/gpu/tokenize_scaling.py MODEL_DIR [SECONDS]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BATCH = 512


def quota() -> str:
    """The cgroup v2 CPU limit, as ``cpu.max`` says it ("max 100000": none)."""
    path = Path("/sys/fs/cgroup/cpu.max")
    return path.read_text().strip() if path.is_file() else "no cgroup v2 cpu.max"


def measure(model_dir: str, workers: int, seconds: float) -> float:
    """Texts/s over ``seconds``: ``workers`` threads, each tokenising whole batches."""
    from tokenizers import Tokenizer

    from streams.bench.gpu import TOKENS, sixteen_token_texts

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=TOKENS)
    texts = sixteen_token_texts(BATCH * 16)
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    tokenizer.encode_batch_fast(batches[0])  # warm-up
    done = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        while time.perf_counter() - start < seconds:
            done += sum(map(len, pool.map(tokenizer.encode_batch_fast, batches)))
    return done / (time.perf_counter() - start)


def child(model_dir: str, workers: int, seconds: float, env: dict[str, str]) -> float:
    code = ("import sys; from scripts.gpu.tokenize_scaling import measure; "
            "print(measure(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))")
    argv = [sys.executable, "-c", code, model_dir, str(workers), str(seconds)]
    env = {**os.environ, **env}
    out = subprocess.run(argv, env=env, capture_output=True, text=True)  # noqa: S603
    if out.returncode != 0:
        raise RuntimeError(f"the measuring child failed ({out.returncode}):\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    model_dir = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    cpus = len(os.sched_getaffinity(0))
    report: dict[str, object] = {"affinity_cpus": cpus, "os_cpu_count": os.cpu_count(),
                                 "cgroup_cpu_max": quota(), "batch": BATCH}
    print(json.dumps(report), flush=True)
    counts = sorted({1, 2, 4, 8, cpus} & set(range(1, cpus + 1)))
    for threads in counts:
        rate = child(model_dir, 1, seconds, {"RAYON_NUM_THREADS": str(threads)})
        report[f"rayon_{threads}"] = round(rate)
        print(f"rayon pool {threads:>2} threads, one batch at a time: {rate:9,.0f} texts/s",
              flush=True)
    for workers in counts:
        rate = child(model_dir, workers, seconds, {"TOKENIZERS_PARALLELISM": "false"})
        report[f"threads_{workers}"] = round(rate)
        print(f"{workers:>2} Python threads, serial tokenising:    {rate:9,.0f} texts/s",
              flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
