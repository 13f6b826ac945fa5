#!/usr/bin/env bash
# RecBole 1.2.1 SASRec on MovieLens-100k, trained and ranked on the project's leave-one-out
# split; writes $OUT/recbole-sasrec.json for `interest-stream evaluate --peer` (docs/peers.md).
#
#   scripts/peers/run-recbole-sasrec.sh                 # defaults below
#   scripts/peers/run-recbole-sasrec.sh --epochs 300 --patience 10 --batch-size 2048 --lr 0.001 \
#       --threads 0 --device auto        # RecBole's own defaults, converged (GPU)
#
# Extra arguments go to recbole_sasrec.py and override the defaults (last one wins).
set -euo pipefail
cd "$(dirname "$0")/../.."
HOME_DIR=${INTEREST_STREAM_HOME:-.cache/interest-stream}
# PEERS_DATA: any folder with items.jsonl + events.jsonl (default: MovieLens-100k).
DATA=${PEERS_DATA:-$HOME_DIR/data/ml-100k}
OUT=${PEERS_OUT:-.cache/peers/$(basename "$DATA")}

scripts/peers/setup-recbole.sh
if [ ! -f "$DATA/items.jsonl" ] || [ ! -f "$DATA/events.jsonl" ]; then
    [ -x .venv/bin/interest-stream ] || { echo "run scripts/setup.sh first (.venv)" >&2; exit 1; }
    .venv/bin/interest-stream data ml-100k
fi
if [ -x .venv/bin/python ]; then
    echo "== the split of loo.py against the project's own (streams.offline.evaluate.load_dataset)"
    .venv/bin/python scripts/peers/check_split.py --items "$DATA/items.jsonl" --events "$DATA/events.jsonl"
fi
echo "== RecBole SASRec (nice -n 10: the machine is shared)"
# CPU defaults for a 2-core shared machine: one torch thread (two threads spin-wait when the
# cores are oversubscribed: 6-10x slower), batches of 256 at lr 0.002 (an epoch costs the same
# at any batch size; more, larger updates per epoch), and 5 epochs so that the run ends in about
# 20 minutes (docs/peers.md has the curves). RecBole's SASRec defaults otherwise.
nice -n 10 .cache/peers/recbole-venv/bin/python -W ignore::FutureWarning -W ignore::UserWarning \
    scripts/peers/recbole_sasrec.py \
    --items "$DATA/items.jsonl" --events "$DATA/events.jsonl" --out "$OUT" \
    --epochs 5 --patience 3 --batch-size 256 --lr 0.002 --threads 1 --seed 2020 --max-len 50 \
    "$@"
if [ -x .venv/bin/python ]; then
    .venv/bin/python scripts/peers/check_split.py --items "$DATA/items.jsonl" \
        --events "$DATA/events.jsonl" --peer "$OUT/recbole-sasrec.json"
fi
