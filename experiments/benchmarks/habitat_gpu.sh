#!/usr/bin/env bash
# Habitat on one GPU machine (one H100, 16 cores) in one 10-minute call: env-only steps/s of multi-object navigation
# at 1/8/32 simulators rendering on the GPU through EGL, a grid of frames rendered there, then PPO + LSTM and
# PPO + HCAM on it side by side for LIMIT seconds (SIGTERM: they checkpoint and stop). Six files under $OUT; the
# checkpoints stay on the machine (about 29 MB of weights and Adam state each, plus HCAM's stored chunks, about 3.5 MB
# per env), so each call trains afresh.
#   bash experiments/benchmarks/habitat_gpu.sh        # carry .hab (habitat-sim cp312 and its needs) and .gl
# The project's other wheels (gymnasium, hydra, omegaconf) come from .whl where carried, or from .hab.
# A logic check on a CPU machine with habitat-sim installed (software rendering, no wheels, tiny settings):
#   GPU_ID=-1 WHEELS= SIMS="1 2" WINDOW=3 NUM_ENVS=2 LIMIT=150 bash experiments/benchmarks/habitat_gpu.sh
set -uo pipefail
OUT=${OUT:-habitat-out}
LIMIT=${LIMIT:-300}      # seconds of training per run
GPU_ID=${GPU_ID:-0}      # -1: Mesa software rendering
SIMS=${SIMS:-1 8 32}     # simulator counts of the speed table
WINDOW=${WINDOW:-20}     # timed seconds per speed row
NUM_ENVS=${NUM_ENVS:-16} # simulators per training run
WHEELS=${WHEELS-.hab .whl}
mkdir -p "$OUT" logs_habitat
if [[ $GPU_ID -ge 0 ]]; then
  for f in .gl/*.deb; do [[ -e $f ]] && dpkg -x "$f" /; done; ldconfig  # the GL loader libraries (glvnd)
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.txt"
fi
for dir in $WHEELS; do
  if compgen -G "$dir/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$dir"/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
done
export PYTHONUNBUFFERED=1 HABITAT_SIM_LOG=quiet

# 1. Env-only steps/s and frames; Magnum prints the renderer of every GL context it makes.
timeout -k 10 180 python3 -m experiments.benchmarks.habitat_speed --sims $SIMS --seconds "$WINDOW" \
  --gpu-device-id "$GPU_ID" --out "$OUT/habitat_speed.md" --frames "$OUT/habitat_frames_gpu.png" \
  > logs_habitat/speed.log 2>&1 || echo "speed: exit $? (see logs_habitat/speed.log)" | tee -a "$OUT/habitat_speed.md"
{ echo "GL renderers (contexts made):"; grep -h "^Renderer:" logs_habitat/speed.log | sort | uniq -c; } \
  >> "$OUT/device.txt"

# 2. PPO + LSTM and PPO + HCAM side by side (experiments.grid: SIGTERM to each learner alone at the limit, which
# checkpoints and closes its simulator processes); table, curves and runs under $OUT/ppo.
if [[ $GPU_ID -ge 0 ]]; then
  (sleep $((LIMIT / 2)); echo "mid-training:"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv) \
    >> "$OUT/device.txt" &
fi
python3 -m experiments.grid --root runs_habitat --limit "$LIMIT" --out "$OUT/ppo" --metric episode_return -- \
  experiment=habitat memory=lstm,hcam +env.kwargs.gpu_device_id="$GPU_ID" agent.num_envs="$NUM_ENVS" \
  2>&1 | tee logs_habitat/grid.log | tail -n 6
tail -n 3 runs_habitat/*/train.log
ls -la "$OUT" "$OUT/ppo"
