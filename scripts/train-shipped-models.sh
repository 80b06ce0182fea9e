#!/usr/bin/env bash
# Re-create the forecast models shipped in src/wattwheel/data/models from ../shared/data.
# None of them saw the trace of the bundled scenario benched at its resolution:
#   300 s  DC-wide utilisation traces (Alibaba 2018, Google ClusterData 2019, Azure v2) turned
#          into power; the default scenario cella-oversub benches Google's PDU power instead
#   10 s   Alibaba 2018 10 s after the day the alibaba-fast scenario replays (rows 17,280-end)
#   1 s    synthetic AI training, seeds 1 and 2 (the ai-training scenario is seed 0)
# Usage: bash scripts/train-shipped-models.sh [300|10|1 ...]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/dc-utilization}
WORK=${WORK:-out/train-data}
W=${W:-.venv/bin/wattwheel}
PY=${PY:-.venv/bin/python}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
MODELS=src/wattwheel/data/models
mkdir -p "$WORK"

# AR-blend weights per horizon, chosen on the validation tail of the same training traces.
blend() {
  local model=$1 stride=$2
  shift 2
  "$PY" benchmarks/choose_ar_blend.py --model "$model" --stride "$stride" --write --trace "$@"
}

train_300() {
  local files=()
  for n in alibaba2018_machine_usage_300s google2019_machine_usage_300s_percent \
      azure_v2_machine_usage_300s; do
    "$W" import utilization "$DATA/$n.csv" --step-s 300 --idle-w 100 --max-w 350 \
      --servers 1000 --racks 1 --noise 0 --rack-prefix "${n%%_*}-" --out "$WORK/$n.csv"
    files+=("$WORK/$n.csv")
  done
  "$W" train --trace "${files[@]}" --out "$MODELS/dcutil-300s-lstm" --horizons 5,10,15 \
    --epochs 30 --seed 0 --data-note "wattwheel import utilization \$DATA/<file>.csv --step-s 300 \
--idle-w 100 --max-w 350 --servers 1000 --racks 1 --noise 0 for the Alibaba 2018, Google 2019 and \
Azure v2 300 s files of shared/data/dc-utilization (scripts/train-shipped-models.sh)"
  blend "$MODELS/dcutil-300s-lstm" 2 "${files[@]}"
}

train_10() {
  "$W" import utilization "$DATA/alibaba2018_machine_usage_10s.csv" --step-s 10 --idle-w 100 \
    --max-w 350 --servers 160 --racks 4 --start-row 17280 --seed 1 \
    --out "$WORK/alibaba-10s-rows17280-.csv"
  "$W" train --trace "$WORK/alibaba-10s-rows17280-.csv" --out "$MODELS/alibaba-10s-lstm" \
    --horizons 0.5,1,2,5 --epochs 12 --seed 0 --data-note "wattwheel import utilization \
\$DATA/alibaba2018_machine_usage_10s.csv --step-s 10 --idle-w 100 --max-w 350 --servers 160 \
--racks 4 --start-row 17280 --seed 1 (after the day alibaba-fast replays; scripts/train-shipped-models.sh)"
  blend "$MODELS/alibaba-10s-lstm" 4 "$WORK/alibaba-10s-rows17280-.csv"
}

train_1() {
  "$W" import ai-training --nodes 4 --racks 2 --duration-s 7200 --seed 1 --period-jitter-s 0.5 \
    --rack-offset-s 3 --out "$WORK/ai-1s-seed1.csv"
  "$W" import ai-training --nodes 4 --racks 2 --duration-s 7200 --seed 2 \
    --out "$WORK/ai-1s-seed2.csv"
  "$W" train --trace "$WORK/ai-1s-seed1.csv" "$WORK/ai-1s-seed2.csv" \
    --out "$MODELS/ai-training-1s-lstm" --horizons 0.25,0.5,1,2 --epochs 40 --seed 0 \
    --data-note "wattwheel import ai-training --nodes 4 --racks 2 --duration-s 7200 --seed 1 \
--period-jitter-s 0.5 --rack-offset-s 3, and --seed 2 (the ai-training scenario is seed 0; \
scripts/train-shipped-models.sh)"
  blend "$MODELS/ai-training-1s-lstm" 1 "$WORK/ai-1s-seed1.csv" "$WORK/ai-1s-seed2.csv"
}

for res in "${@:-300 10 1}"; do
  for r in $res; do "train_$r"; done
done
