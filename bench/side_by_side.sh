#!/usr/bin/env bash
# One sitting of tfdarts against the PyTorch port (pt.darts), alternating runs config by
# config, appending one JSON line per run to $OUT. Needs the port's checkout in $PORT and a
# venv with torch in $TORCH_PY (see shared/reference/ptdarts/README.md); run on an idle machine.
#
#   PORT=/scratch/ptd TORCH_PY=/scratch/torchvenv/bin/python HARNESS=/path/to/ptdarts \
#     bash bench/side_by_side.sh [search|retrain|growth|jemalloc|paper2 ...]
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/out/side_by_side.jsonl}
HARNESS=${HARNESS:-../shared/reference/ptdarts}
mkdir -p "$(dirname "$OUT")"

# tfdarts runs with the cpu preset's runtime settings (runtime.intra_op_threads=1; graph
# optimisation auto, i.e. off on a CPU host); TF_RUNTIME overrides them
TF_RUNTIME=${TF_RUNTIME:---intra 1}

tf_search() {  # cells channels batch hw cin order steps [extra...]
  local c=$1 ch=$2 b=$3 hw=$4 cin=$5 o=$6 s=$7; shift 7
  # shellcheck disable=SC2086
  "$PY" bench/search_step.py --cells "$c" --channels "$ch" --batch "$b" --shape "$hw,$hw,$cin" \
    --order "$o" --steps "$s" $TF_RUNTIME "$@" | grep '^{' >> "$OUT"
}

port_search() {  # cells channels batch hw cin order steps
  "$TORCH_PY" "$HARNESS/ptdarts_step.py" "$PORT" --layers "$1" --channels "$2" --batch "$3" \
    --hw "$4" --cin "$5" --order "$6" --steps "$7" --threads 2 | grep '^{' >> "$OUT"
}

pair() {  # the same arguments as tf_search, without extras
  tf_search "$@"; port_search "$@"
}

search() {
  pair 5 8 32 28 1 1 5; pair 5 8 32 28 1 2 5
  pair 8 16 16 28 1 1 5; pair 8 16 16 28 1 2 5
  pair 8 16 64 32 3 1 3
}

paper2() { pair 8 16 64 32 3 2 3; }

retrain() {
  for _ in 1 2; do
    # shellcheck disable=SC2086
    "$PY" bench/retrain_step.py --cells 8 --channels 16 --batch 64 --shape 28,28,1 --steps 5 \
      $TF_RUNTIME | grep '^{' >> "$OUT"
    "$TORCH_PY" "$HARNESS/ptdarts_retrain_step.py" "$PORT" --layers 8 --channels 16 --batch 64 \
      --hw 28 --cin 1 --steps 5 --threads 2 | grep '^{' >> "$OUT"
  done
}

growth() {  # around config A (5 cells, C=8, batch 32), first order: three sizes of each
  for c in 8 11; do tf_search "$c" 8 32 28 1 1 3 --label growth; done
  for ch in 16 24; do tf_search 5 "$ch" 32 28 1 1 3 --label growth; done
  for b in 16 64; do tf_search 5 8 "$b" 28 1 1 3 --label growth; done
}

jemalloc() {
  tf_search 5 8 32 28 1 1 5 --malloc jemalloc; tf_search 8 16 16 28 1 1 5 --malloc jemalloc
}

for part in "${@:-search retrain}"; do
  for p in $part; do echo "$(date +%T) $p" >&2; "$p"; done
done
