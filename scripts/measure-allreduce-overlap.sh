#!/usr/bin/env bash
# Step time of data-parallel SFT on 2 ranks (one thread each), the gradient all-reduce blocking after the backward
# pass (--allreduce-bucket-mb 0) against overlapped with it in buckets (--allreduce-bucket-mb MB), for the small and
# gpt2 GPT-2-shaped configs of docs/performance.md ("Data-parallel training over MPI").
#
#   scripts/measure-allreduce-overlap.sh [small|gpt2]...   (default: both)
#
# Env: ALIGNSHARP_BIN (default: the Release CLI of this checkout), WORK (default /tmp/alignsharp-overlap),
# BUCKETS (overlapped bucket sizes in MiB, default "25"), REPEATS (runs of each mode, alternating, default 2).
# Prints, per run, the mean step time over the steps after warm-up and the dp/allreduce_s metric (blocking: the
# all-reduce after a barrier; overlapped: only the part left after the backward pass).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ALIGNSHARP_BIN:-"dotnet $(pwd)/src/AlignSharp.Cli/bin/Release/net10.0/alignsharp.dll"}
WORK=${WORK:-/tmp/alignsharp-overlap}
BUCKETS=${BUCKETS:-25}
REPEATS=${REPEATS:-2}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(small gpt2)
mkdir -p "$WORK"

if [ ! -f "$WORK/sft.jsonl" ]; then
  /usr/bin/python3 - "$WORK/sft.jsonl" <<'EOF'
import json, random, sys
r = random.Random(1)
words = "the a model learns to answer questions about numbers and words in short plain sentences".split()
with open(sys.argv[1], "w") as f:
    for i in range(200):
        prompt = " ".join(r.choice(words) for _ in range(12))
        completion = " ".join(r.choice(words) for _ in range(12))
        f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
EOF
fi

model() { # name vocab d layers heads
  [ -f "$WORK/$1/config.json" ] || $BIN init --arch gpt2 --vocab-size "$2" --d-model "$3" --layers "$4" --heads "$5" --tokenizer byte --seed 1 --out "$WORK/$1" > /dev/null
}

run() { # config batch steps skip bucketMb
  local out="$WORK/run-$1-$5"
  mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,vader,tcp $BIN sft --model "$WORK/$1" --data "$WORK/sft.jsonl" \
    --out "$out" --overwrite --batch-size "$2" --max-steps "$3" --logging-steps 1 --save-steps 0 --threads 1 \
    --learning-rate 1e-4 --allreduce-bucket-mb "$5" > /dev/null 2> "$out.log"
  /usr/bin/python3 - "$out/metrics.jsonl" "$4" "$1" "$5" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l).get("split") == "train"]
skip = int(sys.argv[2])
t = [r["time"] for r in rows]
steps = [b - a for a, b in zip(t[skip - 1:], t[skip:])]
ar = [r["dp/allreduce_s"] for r in rows[skip:]]
mode = "blocking" if float(sys.argv[4]) == 0 else f"overlapped {sys.argv[4]} MiB"
print(f"{sys.argv[3]:6s} {mode:22s} step {sum(steps)/len(steps):.4f} s  (steps {' '.join(f'{s:.3f}' for s in steps)})"
      f"  dp/allreduce_s {sum(ar)/len(ar):.4f}  bytes {rows[-1]['dp/allreduce_bytes']:.0f}  loss {rows[-1]['loss']:.5f}")
EOF
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${CONFIGS[@]}"; do
  case "$c" in
    small) model small 8192 256 6 8; args=(small 4 12 5) ;;
    gpt2)  model gpt2 50257 768 12 12; args=(gpt2 2 6 2) ;;
    *) echo "unknown config $c" >&2; exit 2 ;;
  esac
  for ((i = 0; i < REPEATS; i++)); do
    run "${args[@]}" 0
    for b in $BUCKETS; do run "${args[@]}" "$b"; done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
