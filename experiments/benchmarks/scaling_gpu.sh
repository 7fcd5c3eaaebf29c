#!/usr/bin/env bash
# Data-parallel scaling on one machine with 2 GPUs: global PPO + LSTM SPS on 1 and 2 GPUs (one learner process per
# GPU under torchrun, DDP gradient averaging) for Endless T-Maze (16,384 envs per GPU, with and without CUDA graphs) and Procgen StarPilot easy (256 envs per GPU, experiment=procgen). Prints a table last.
set -uo pipefail
OUT=${OUT:-scaling-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
bench() {  # bench <gpus> <per-gpu envs> <warmup> <iterations> <overrides...>
  local gpus=$1 envs=$2 warmup=$3 iters=$4; shift 4
  CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1))) torchrun --standalone --nproc_per_node="$gpus" \
    -m experiments.benchmarks.scaling "$@" agent.num_envs=$((envs * gpus)) device=cuda \
    --warmup "$warmup" --iterations "$iters" 2>>"$OUT/stderr.log" | tee -a "$OUT/rows.md"
}
for graph in true false; do
  for gpus in 1 2; do
    bench $gpus 16384 3 20 experiment=tmaze env=tmaze_n5_l5 memory=lstm agent.cuda_graph=$graph
  done
done
for gpus in ${PROCGEN_GPUS-1 2}; do
  bench $gpus 256 2 4 experiment=procgen env=procgen_starpilot memory=lstm
done
python - "$OUT/rows.md" <<'PY' | tee "$OUT/scaling.md"
import sys
rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(sys.argv[1]) if line.startswith("|")]
one = {tuple(r[:3]): float(r[5].replace(",", "")) for r in rows if r[3] == "1"}
print("| env | memory | cuda_graph | GPUs | global envs | SPS | s / iteration | speed-up over 1 GPU |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    base = one.get(tuple(r[:3]))
    up = f"{float(r[5].replace(',', '')) / base:.2f}x" if base else "-"
    print(f"| {' | '.join(r)} | {up} |")
PY
