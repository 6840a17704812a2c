#!/usr/bin/env bash
# Runs AlignSharp's whole-workload benchmarks and the PyTorch reference scripts (../shared/bench/torch_ref) side by
# side, interleaved, at PyTorch's strongest setting, and prints one JSON line per measurement.
# Needs: Debian python3-torch python3-numpy libopenblas0-pthread; a Release build of the CLI.
# Usage: bench/side_by_side.sh [train|sample|gemm|model|rl ...]   (REPS=2 by default)
#   model: KV-cached sampling on the checkpoint in $MODEL (a Llama/Qwen2 directory, e.g. from
#          scripts/make-qwen2-checkpoint.py), batch $BATCHES (default "1 8"), float32 and bf16 weights on both sides,
#          $NEW new tokens (default 112); each record carries the process's peak RSS (/usr/bin/time -v), in KiB.
#   rl:    one PPO step (bench rl / bench/torch_qwen2_ppo.py) on the policy $MODEL, reward model $REWARD_MODEL (default:
#          the policy with a random score head), batch $BATCH (4), $PROMPT prompt tokens (16), $NEW new tokens (64),
#          LoRA rank $LORA_R (16; 0 = full-parameter), frozen weights $FROZEN (fp32 or bf16), $EPOCHS PPO epochs (1),
#          $STEPS timed steps (2) after one warm-up; peak RSS as for model. $PRECISION (highest or medium) is our
#          --matmul-precision; PyTorch's side with FROZEN=bf16 runs the frozen trunk in bf16 throughout either way.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ref="${TORCH_REF:-$root/../shared/bench/torch_ref}"
cli="dotnet $root/src/AlignSharp.Cli/bin/Release/net10.0/alignsharp.dll"
torch="/usr/bin/python3"
strong="--threads 2 --tuned --omp-wait-policy passive"
reps="${REPS:-2}"
# Debian's python3-torch calls whatever libblas.so.3 the alternatives system points at. With only the reference BLAS
# installed (python3-torch alone pulls in libblas3) PyTorch's float32 GEMM runs at ~6 GFLOP/s instead of ~420, and every
# ratio below would flatter us by an order of magnitude: refuse rather than print them.
blas="$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)"
case "$blas" in
  *openblas*) ;;
  *) echo "side_by_side.sh: libblas.so.3 is '${blas:-missing}', not OpenBLAS; install libopenblas0-pthread (see ../shared/bench/README.md)." >&2
     exit 2 ;;
esac
what="${*:-train sample}"
tmp=$(mktemp -d)
for rep in $(seq "$reps"); do
  for w in $what; do
    case "$w" in
      train)
        for c in tiny small gpt2; do
          steps=10; [ "$c" = gpt2 ] && steps=5
          echo "{\"side\":\"alignsharp\",\"bench\":\"train\",\"rep\":$rep,\"result\":$($cli bench train --config $c --steps $steps 2>/dev/null)}"
          b=8; s=""; [ "$c" = gpt2 ] && { b=4; s="--seq 256"; }
          $torch "$ref/bench_train.py" --config $c --batch $b $s --steps $steps $strong --json "$tmp/t.json" >/dev/null 2>&1
          echo "{\"side\":\"pytorch\",\"bench\":\"train\",\"rep\":$rep,\"result\":$(tail -n 1 "$tmp/t.json")}"
        done ;;
      sample)
        for cb in "tiny 8" "small 8" "gpt2 1" "gpt2 4"; do
          set -- $cb
          echo "{\"side\":\"alignsharp\",\"bench\":\"sample\",\"rep\":$rep,\"result\":$($cli bench sample --config $1 --batch $2 --repeats 3 2>/dev/null)}"
          $torch "$ref/bench_sample.py" --config $1 --batch $2 --mode cache $strong --json "$tmp/s.json" >/dev/null 2>&1
          echo "{\"side\":\"pytorch\",\"bench\":\"sample\",\"rep\":$rep,\"result\":$(tail -n 1 "$tmp/s.json")}"
        done ;;
      gemm)
        for n in 256 512 1024 2048; do
          echo "{\"side\":\"alignsharp\",\"bench\":\"gemm\",\"rep\":$rep,\"result\":$($cli bench gemm --m $n --n $n --k $n)}"
          $torch "$ref/bench_matmul.py" --set square --only sq$n $strong --json "$tmp/g.json" >/dev/null 2>&1
          echo "{\"side\":\"pytorch\",\"bench\":\"gemm\",\"rep\":$rep,\"result\":$(tail -n 1 "$tmp/g.json")}"
        done ;;
      model)
        : "${MODEL:?set MODEL to a checkpoint directory}"
        for b in ${BATCHES:-1 8}; do
          for dt in f32 bf16; do
            tdt=float32; [ "$dt" = bf16 ] && tdt=bfloat16
            out=$(/usr/bin/time -v -o "$tmp/rss" $cli bench sample --model "$MODEL" --batch "$b" --weights-dtype $dt \
                  --new-tokens "${NEW:-112}" --repeats 3 2>/dev/null)
            rss=$(awk -F': ' '/Maximum resident/{print $2}' "$tmp/rss")
            echo "{\"side\":\"alignsharp\",\"bench\":\"model\",\"rep\":$rep,\"peak_rss_kib\":$rss,\"result\":$out}"
            /usr/bin/time -v -o "$tmp/rss" $torch "$root/bench/torch_qwen2_sample.py" --model "$MODEL" --batch "$b" --dtype $tdt \
                  --new-tokens "${NEW:-112}" --repeats 2 $strong --json "$tmp/m.json" >/dev/null 2>&1
            rss=$(awk -F': ' '/Maximum resident/{print $2}' "$tmp/rss")
            echo "{\"side\":\"pytorch\",\"bench\":\"model\",\"rep\":$rep,\"peak_rss_kib\":$rss,\"result\":$(tail -n 1 "$tmp/m.json")}"
          done
        done ;;
      rl)
        : "${MODEL:?set MODEL to a checkpoint directory}"
        frozen="${FROZEN:-fp32}"; tfrozen=float32; [ "$frozen" = bf16 ] && tfrozen=bfloat16
        rm=(); [ -n "${REWARD_MODEL:-}" ] && rm=(--reward-model "$REWARD_MODEL")
        common=(--batch "${BATCH:-4}" --prompt-len "${PROMPT:-16}" --max-new-tokens "${NEW:-64}" --lora-r "${LORA_R:-16}"
                --num-ppo-epochs "${EPOCHS:-1}" --steps "${STEPS:-2}" --warmup 1)
        out=$(/usr/bin/time -v -o "$tmp/rss" $cli bench rl --model "$MODEL" "${rm[@]}" "${common[@]}" --frozen-dtype "$frozen" --matmul-precision "${PRECISION:-highest}" 2>/dev/null)
        rss=$(awk -F': ' '/Maximum resident/{print $2}' "$tmp/rss")
        echo "{\"side\":\"alignsharp\",\"bench\":\"rl\",\"rep\":$rep,\"peak_rss_kib\":$rss,\"result\":$out}"
        /usr/bin/time -v -o "$tmp/rss" $torch "$root/bench/torch_qwen2_ppo.py" --model "$MODEL" "${rm[@]}" "${common[@]}" \
              --frozen-dtype $tfrozen $strong --json "$tmp/r.json" >/dev/null 2>&1
        rss=$(awk -F': ' '/Maximum resident/{print $2}' "$tmp/rss")
        echo "{\"side\":\"pytorch\",\"bench\":\"rl\",\"rep\":$rep,\"peak_rss_kib\":$rss,\"result\":$(tail -n 1 "$tmp/r.json")}"
        ;;
    esac
  done
done
rm -rf "$tmp"
