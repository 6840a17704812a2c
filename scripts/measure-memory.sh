#!/usr/bin/env bash
# Peak resident memory (/usr/bin/time -v) and step time of training runs on the Qwen2.5-0.5B shape (and PPO on the
# 1.5B shape), as recorded in docs/performance.md ("Memory: LoRA, bf16 frozen weights, gradient checkpointing").
#
#   scripts/measure-memory.sh [ROW ...]      (default: dpo-lora-ckpt dpo-lora dpo-full)
#
# Rows:
#   dpo-lora-ckpt   DPO, LoRA r 16 all-linear, --gradient-checkpointing, batch 4 pairs × 256 tokens (target ≤ 3.5 GiB)
#   dpo-lora        the same without checkpointing
#   dpo-full        full-parameter DPO, same batch (for comparison)
#   ppo-lora-ckpt   PPO, LoRA r 16 + checkpointing, policy + reference + value + reward model, batch 8, 64 new tokens (≤ 5 GiB)
#   ppo-lora-ckpt-1.5b   the same on the Qwen2.5-1.5B shape (≤ 12 GiB)
#
# Environment: WORK (scratch directory, default /tmp/alignsharp-memory; checkpoints are made once and reused),
# STEPS (optimizer or rollout steps per run, default 2), THREADS (kernel threads, 0 = all cores).
# ALIGNSHARP_MEMORY_TRACE=1 (read by alignsharp itself) adds the RL trainers' per-phase memory lines to WORK/ROW.log.
# Build first (dotnet build -c Release). On a shared machine wrap the call in the build lock so the step times are
# not polluted: flock /tmp/alignsharp-build.lock scripts/measure-memory.sh
# Prints one markdown table row per run: command, peak RSS, wall time, mean step time after the first step, tokens/s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${ALIGNSHARP_BIN:-$root/src/AlignSharp.Cli/bin/Release/net10.0/alignsharp}"   # ALIGNSHARP_BIN: another build
work="${WORK:-/tmp/alignsharp-memory}"
steps="${STEPS:-2}"
threads="${THREADS:-0}"
py=/usr/bin/python3
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(dpo-lora-ckpt dpo-lora dpo-full)
[ -x "$bin" ] || { echo "build first: dotnet build AlignSharp.slnx -c Release ($bin is missing)" >&2; exit 1; }
mkdir -p "$work"

tokenizer="$root/tests/fixtures/tokenizers/full/qwen3"
[ -f "$tokenizer/tokenizer.json" ] || "$root/scripts/fetch-tokenizers.sh"

# checkpoint SIZE [--reward-head] → directory with a Qwen tokenizer
checkpoint() {
  local size="$1" kind="${2:-}" dir="$work/qwen2.5-$1${2:+-rm}"
  if [ ! -f "$dir/model.safetensors" ]; then
    $py "$root/scripts/make-qwen2-checkpoint.py" --size "$size" --out "$dir" $kind >&2
    cp "$tokenizer/tokenizer.json" "$tokenizer/tokenizer_config.json" "$dir/"
  fi
  echo "$dir"
}

# Preference pairs whose prompt and answers are each well over 128 tokens (cut to 256 per row by --max-length), as many
# as the steps use (the reference log-probabilities are precomputed for all of them), and prompts.
pairs="$work/pairs-$steps.jsonl"
if [ ! -f "$pairs" ]; then
  $py - "$work" "$steps" <<'EOF'
import json, random, sys
work, steps = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
words = "the of and to in is was for on that with as by at from his her an were are which this be or had not but".split()
def text(n): return " ".join(rng.choice(words) for _ in range(n))
with open(f"{work}/pairs-{steps}.jsonl", "w") as f:
    for _ in range(4 * steps):
        f.write(json.dumps({"prompt": text(200), "chosen": " " + text(200), "rejected": " " + text(200)}) + "\n")
with open(f"{work}/prompts.jsonl", "w") as f:
    for _ in range(64):
        f.write(json.dumps({"prompt": text(48)}) + "\n")
EOF
fi

lora=(--lora-r 16 --lora-target-modules all-linear)
dpo_common=(--data "$pairs" --batch-size 4 --max-length 256 --max-prompt-length 128 --truncate
            --max-steps "$steps" --logging-steps 1 --save-steps 0 --threads "$threads" --overwrite)
ppo_common=(--prompts "$work/prompts.jsonl" --batch-size 8 --max-new-tokens 64 --max-prompt-length 64 --normalize-reward false
            --max-steps "$steps" --logging-steps 1 --save-steps 0 --threads "$threads" --overwrite)

run() {
  local name="$1"; shift
  local out="$work/runs/$name"
  mkdir -p "$work/runs"
  /usr/bin/time -v -o "$work/$name.time" "$bin" "$@" --out "$out" > "$work/$name.log" 2>&1 || {
    echo "$name failed; see $work/$name.log" >&2; tail -5 "$work/$name.log" >&2; return 1; }
  $py - "$name" "$work/$name.time" "$out/metrics.jsonl" "$*" <<'EOF'
import json, re, sys
name, timefile, metrics, cmd = sys.argv[1:5]
t = open(timefile).read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024 / 1024
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
rows = [json.loads(l) for l in open(metrics) if '"train"' in l]
times = [r["time"] for r in rows]
step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")
tps = [r.get("tokens_per_s") for r in rows[1:] if r.get("tokens_per_s")]
tok = sum(tps) / len(tps) if tps else float("nan")
print(f"| {name} | `alignsharp {cmd}` | {rss:.2f} GiB | {wall} | {step:.1f} s | {tok:.0f} |")
EOF
}

echo "| run | command | peak RSS | wall | step time (after the first) | tokens/s |"
echo "|---|---|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
  case "$row" in
    dpo-lora-ckpt) run "$row" dpo --policy "$(checkpoint 0.5b)" "${dpo_common[@]}" "${lora[@]}" --gradient-checkpointing ;;
    dpo-lora)      run "$row" dpo --policy "$(checkpoint 0.5b)" "${dpo_common[@]}" "${lora[@]}" ;;
    dpo-full)      run "$row" dpo --policy "$(checkpoint 0.5b)" "${dpo_common[@]}" ;;
    ppo-lora-ckpt) run "$row" ppo --policy "$(checkpoint 0.5b)" --reward-model "$(checkpoint 0.5b --reward-head)" "${ppo_common[@]}" "${lora[@]}" --gradient-checkpointing --frozen-dtype bf16 ;;
    ppo-lora-ckpt-1.5b) run "$row" ppo --policy "$(checkpoint 1.5b)" --reward-model "$(checkpoint 1.5b --reward-head)" "${ppo_common[@]}" "${lora[@]}" --gradient-checkpointing --frozen-dtype bf16 ;;
    *) echo "unknown row '$row' (dpo-lora-ckpt, dpo-lora, dpo-full, ppo-lora-ckpt, ppo-lora-ckpt-1.5b)" >&2; exit 2 ;;
  esac
done
