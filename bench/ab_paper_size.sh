#!/usr/bin/env bash
# Before/after timing of one paper-size row on a noisy machine: worker processes of an older checkout (its
# wsss on PYTHONPATH) and of this one alternate, one thread each; prints every measurement as JSON.
# Usage: bench/ab_paper_size.sh BEFORE_CHECKOUT ROW PHASE [PAIRS]   (PHASE: train or predict)
set -euo pipefail
before=$(realpath "$1"); row=$2; phase=$3; pairs=${4:-3}
cd "$(dirname "$0")"
python=${PYTHON:-../.venv/bin/python}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
for i in $(seq "$pairs"); do
  for side in before now; do
    path=$([ "$side" = before ] && echo "$before" || echo "")
    result=$(PYTHONPATH=$path "$python" paper_size.py --device cpu --precision 32-true --worker "$row" "$phase" | tail -1)
    echo "$i $side $row $phase $result"
  done
done
