#!/usr/bin/env bash
# One GPU call that checks this session's GPU code paths and measures the speed rows that issues 4-7 still need:
#  1. the CUDA tests (cuDNN segment unroll of LSTM/GRU, graphed Dreamer updates, PPO graphs);
#  2. Procgen StarPilot easy, 256 envs: PPO + LSTM with the eager cuDNN unroll against the captured update (step
#     loop), and PPO + HCAM, each row beside the env-only ceiling measured in the same process;
#  3. DreamerV3 updates/s on 64x64 Atari (experiment=dreamer_atari: 16x64 batches, an 11.4M-parameter model);
#  4. Memo / RMT / FCT key/value memory and per-step inference time at the training horizon.
# Tables under $OUT; each step is cut off at its own limit (about 9 minutes in all) so the call always returns.
set -uo pipefail
OUT=${OUT:-speed-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
step() {  # step <seconds> <name> <command...>: output to $OUT/<name>.log, its table lines echoed
  local limit=$1 name=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep "^|" "$OUT/$name.log" | tail -n 12
  [[ $rc == 0 ]] || echo "$name: exit $rc ($( [[ $rc == 124 ]] && echo "cut off after $limit s" || tail -1 "$OUT/$name.log"))"
}
step 120 tests python -m pytest -q -p no:cacheprovider tests/test_recurrent.py tests/test_dreamer.py tests/test_ppo_cuda.py
tail -n 3 "$OUT/tests.log"
P="experiment=procgen +env.kwargs.num_threads=16 agent.num_envs=256 --warmup 1 --iterations 2"
step 110 procgen_lstm python -m experiments.bench device=cuda $P memory=lstm agent.cuda_graph=false,true
step 120 procgen_hcam python -m experiments.bench device=cuda $P memory=hcam
step 120 dreamer python -m experiments.bench experiment=dreamer_atari --warmup 2 --iterations 3
step 80 memo_cost python -m experiments.benchmarks.memo_cost --device cuda --out "$OUT/memo_cost.md"
