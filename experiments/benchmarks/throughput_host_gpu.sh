#!/usr/bin/env bash
# Throughput of PPO on the host engines (Procgen StarPilot easy, Atari Breakout) on one GPU machine: env-only
# ceilings (16 engine threads), then end-to-end PPO SPS with none / LSTM / HCAM, fp32 against bf16 and one env group
# against two (double-buffered: one half steps while the policy acts on the other). Tables under $OUT.
set -uo pipefail
OUT=${OUT:-throughput-host-out}
PART=${PART:-all}  # env | ppo | all
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
bench() {  # bench <seconds> <table name> <args...>: one bench process, cut off after <seconds>
  local limit=$1 name=$2; shift 2
  timeout "$limit" python -m experiments.bench device=cuda "$@" --out "$OUT/$name.md" 2>"$OUT/$name.err" \
    | grep "^|" | tail -n +3
  local rc=${PIPESTATUS[0]}
  [[ $rc == 0 ]] || echo "$name: exit $rc ($( [[ $rc == 124 ]] && echo "cut off after $limit s" || tail -1 "$OUT/$name.err"))"
}
if [[ $PART != ppo ]]; then
  bench 120 procgen_env experiment=procgen +env.kwargs.num_threads=16 agent.num_envs=64,256 --env-only --env-steps 300
  bench 120 atari_env experiment=atari agent.num_envs=64 --env-only --env-steps 200
fi
if [[ $PART != env ]]; then
  P="experiment=procgen --warmup 1 --iterations 2"
  bench 100 procgen_256_g1 $P agent.num_envs=256 memory=lstm +env.kwargs.num_threads=16 agent.bf16=false,true
  for memory in none lstm hcam; do
    bench 70 procgen_256_g2_$memory $P agent.num_envs=256 memory=$memory +env.kwargs.num_threads=8 agent.bf16=true \
      agent.env_groups=2
  done
  bench 80 procgen_64 $P agent.num_envs=64 memory=none,lstm,hcam +env.kwargs.num_threads=8 agent.bf16=true \
    agent.env_groups=2
  A="experiment=atari --warmup 1 --iterations 3"
  bench 60 atari_g1 $A memory=lstm agent.bf16=false,true
  for memory in none lstm hcam; do
    bench 60 atari_g2_$memory $A memory=$memory agent.bf16=true agent.env_groups=2
  done
fi
