#!/usr/bin/env bash
# Throughput on one GPU: PPO + LSTM/GRU on Endless T-Maze at 1k/4k/16k envs beside env-only steps/s, and env-only
# steps/s of every gridworld task. Run from the repo root on the GPU machine; writes tables under $OUT.
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python -m experiments.bench experiment=tmaze env=tmaze_n5_l5 memory=lstm,gru agent.num_envs=1024,4096,16384 \
  device=cuda --out "$OUT/ppo_tmaze.md"
python -m experiments.bench experiment=tmaze device=cuda --env-only --env-steps 300 --out "$OUT/envs.md" \
  env=tmaze_n5_l5,ballet_2_delay16,ballet_2_delay16_rgb,color_cubes_trivial,color_cubes_medium,color_cubes_extreme,dark_key_to_door,room_ballet_mixed \
  agent.num_envs=1024,4096,16384
