#!/usr/bin/env bash
# The Endless T-Maze protocol on one GPU: LSTM, GRU and none x 3 seeds, trained on Fixed n=5 l=5, evaluated at
# n = 1/3/5/10 (experiment=tmaze). The nine runs share the GPU side by side. Writes runs.tar.gz and a table to $OUT.
set -uo pipefail
OUT=${OUT:-tmaze-out}
STEPS=${STEPS:-8000000}
mkdir -p "$OUT"
pids=()
for memory in lstm gru none; do
  for seed in 0 1 2; do
    python -m experiments.train experiment=tmaze env=tmaze_n5_l5 memory=$memory seed=$seed run_root=runs_tmaze \
      agent.total_steps=$STEPS > "runs_tmaze_${memory}_${seed}.log" 2>&1 &
    pids+=($!)
  done
done
wait "${pids[@]}"
tail -n 3 runs_tmaze_*.log
python - <<'PY' | tee "$OUT/tmaze_table.md"
import csv, glob, statistics
rows = {}
for path in sorted(glob.glob("runs_tmaze/*/*/eval.csv")):
    memory = path.split("/")[1].split("_")[0]
    for r in csv.DictReader(open(path)):
        rows.setdefault((memory, r["setting"]), []).append(float(r["success"]))
print("| memory | setting | success per seed | mean |")
print("|---|---|---|---:|")
for (memory, setting), values in rows.items():
    print(f"| {memory} | {setting} | {' / '.join(f'{v:.3f}' for v in values)} | {statistics.mean(values):.3f} |")
PY
find runs_tmaze -name checkpoint.pt -delete
tar czf "$OUT/runs.tar.gz" runs_tmaze runs_tmaze_*.log
