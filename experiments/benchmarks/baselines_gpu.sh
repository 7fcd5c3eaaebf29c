#!/usr/bin/env bash
# Gridworld-suite baselines on one GPU: PPO with none / LSTM / GRU x 3 seeds on Ballet 2_delay16 (symbolic),
# Color-Cubes Trivial and Dark Key-to-Door (experiment=baselines), 27 runs side by side (ENVS picks a subset).
# Runs stop themselves at LIMIT seconds (SIGTERM: they checkpoint) so results always come back; a later call can
# resume them with `python -m experiments.train resume=<folder>`. Writes runs.tar.gz and a table to $OUT.
set -uo pipefail
OUT=${OUT:-baselines-out}
LIMIT=${LIMIT:-420}
ENVS=${ENVS:-ballet_2_delay16 color_cubes_trivial dark_key_to_door}  # a subset re-runs only those tasks
mkdir -p "$OUT" logs_baselines
pids=()
for env in $ENVS; do
  for memory in none lstm gru; do
    for seed in 0 1 2; do
      timeout -s TERM "$LIMIT" python -m experiments.train experiment=baselines env=$env memory=$memory seed=$seed \
        run_root=runs_baselines > "logs_baselines/${env}_${memory}_${seed}.log" 2>&1 &
      pids+=($!)
    done
  done
done
wait "${pids[@]}"
grep -h "step .*SPS" logs_baselines/*.log | tail -n 5
python - <<'PY' | tee "$OUT/baselines_table.md"
import csv, glob, statistics
print("| env | memory | seed | steps | final train return | final train success | eval return | eval success |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for run in sorted(glob.glob("runs_baselines/*/*/")):
    name = run.split("/")[1]
    memory, env = name.split("_", 1)
    rows = list(csv.DictReader(open(run + "metrics.csv")))
    seed = open(run + "config.yaml").read().split("\nseed: ")[1].split("\n")[0]
    last = rows[-1] if rows else {}
    ev = list(csv.DictReader(open(run + "eval.csv"))) if glob.glob(run + "eval.csv") else []
    er = f"{float(ev[0]['return']):.3f}" if ev else "-"
    es = f"{float(ev[0]['success']):.3f}" if ev else "-"
    print(f"| {env} | {memory} | {seed} | {last.get('step', 0)} | {float(last.get('episode_return') or 'nan'):.3f} | "
          f"{float(last.get('success') or 'nan'):.3f} | {er} | {es} |")
PY
tar czf "$OUT/runs.tar.gz" --exclude=checkpoint.pt runs_baselines logs_baselines
# Checkpoints of unfinished runs, in parts small enough to come back from the GPU machine.
find runs_baselines -name checkpoint.pt | tar czf - -T - | split -b 15m - "$OUT/checkpoints.tar.gz.part-"
ls -la "$OUT"
