#!/usr/bin/env bash
# The GPU check, for a lent machine with a CUDA GPU but no Rust toolchain and no network.
#
# Here (with cargo):   cargo build --profile gpu --bins --tests
#                      bash scripts/gpu-check.sh --collect     # copies the binaries to gpu-bin/
# There (carry gpu-bin/ and the work tree):
#                      bash scripts/gpu-check.sh
# It finds libnvrtc, runs `pgsrm info`, `pgsrm check` (every kernel against the CPU, GPT-2
# decoding logits against the CPU, seeded repeatability), the ignored CUDA tests, `pgsrm bench`
# (generation throughput; our matmul beside cuBLAS), the generation peer (`transformers.generate`,
# batch 50, prompt 20, 10 new tokens), then training: `pgsrm train --device cuda` of SmolLM2-135M's
# shape on colors at the paper's batch (50 episodes, 2 new tokens) for up to 400 updates with the
# binary reward, a short one with the PGSRM reward (MiniLM's shape on the device), and
# `scripts/peer_ppo.py` on the same GPU; then a short summary. Every step has a time limit, and
# the limits add up to under 8 minutes.
#
# The real SmolLM2 and MiniLM weights are over the 64 MiB that travels to a lent machine, so
# --collect takes their configs and tokenizers only, and there `scripts/random_weights.py` gives
# both seeded random weights of the same shapes: speed does not depend on the values.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--collect" ]; then
    rm -rf gpu-bin && mkdir -p gpu-bin
    cp target/gpu/pgsrm gpu-bin/
    for t in target/gpu/deps/cuda_check-*; do
        [ -x "$t" ] && [ -f "$t" ] && cp "$t" gpu-bin/cuda_check
    done
    # The children's shapes without their weights (see above).
    hf=$(mktemp -d)
    target/gpu/pgsrm convert --model smollm2-135m-instruct --out "$hf/smollm2" --force || exit 1
    mkdir -p gpu-bin/smollm2-shape
    find "$hf/smollm2" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} gpu-bin/smollm2-shape/ \;
    rm -rf "$hf"
    minilm="${PGSRM_HOME:-$HOME/.cache/pgsrm}/assets/all-minilm-l6-v2"
    [ -f "$minilm/config.json" ] || { echo "no MiniLM asset at $minilm: run any pgsrm command that embeds once" >&2; exit 1; }
    mkdir -p gpu-bin/minilm-shape && cp -r "$minilm"/. gpu-bin/minilm-shape/ &&
        rm -f gpu-bin/minilm-shape/*.safetensors gpu-bin/minilm-shape/*.bin
    du -sh gpu-bin; ls -la gpu-bin
    exit 0
fi

BIN=gpu-bin/pgsrm
[ -x "$BIN" ] || { echo "no $BIN: build here and run with --collect first" >&2; exit 2; }
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"

# NVRTC: the CUDA toolkit's or a Python wheel's. cudarc opens it by name, so a folder with a plain
# `libnvrtc.so` link goes first on the library path (the image's toolkit may be a newer major version).
lib=${PGSRM_NVRTC:-}
[ -n "$lib" ] || lib=$(ldconfig -p 2>/dev/null | awk '/libnvrtc\.so/ && !/builtins/ {print $NF; exit}')
[ -n "$lib" ] || lib=$(find / \( -path /proc -o -path /sys \) -prune -o -name 'libnvrtc.so*' -print 2>/dev/null | grep -v builtins | head -1)
if [ -n "$lib" ]; then
    mkdir -p /tmp/pgsrm-nvrtc && ln -sf "$lib" /tmp/pgsrm-nvrtc/libnvrtc.so
    export LD_LIBRARY_PATH="/tmp/pgsrm-nvrtc:$(dirname "$lib"):${LD_LIBRARY_PATH:-}"
    export PGSRM_NVRTC="$lib"
fi
echo "NVRTC: ${lib:-not found}"
# cuBLAS (the comparison of `pgsrm bench --job matmul`), linked by its plain name the same way.
for name in cublas cublasLt; do
    l=$(find / \( -path /proc -o -path /sys \) -prune -o -name "lib$name.so*" -print 2>/dev/null | head -1)
    [ -n "$l" ] && ln -sf "$l" "/tmp/pgsrm-nvrtc/lib$name.so" && export LD_LIBRARY_PATH="$(dirname "$l"):$LD_LIBRARY_PATH"
done
export PGSRM_HOME=${PGSRM_HOME:-$PWD/$OUT/pgsrm-home}

status=0
"$BIN" info | tee "$OUT/info.txt"
timeout 90 "$BIN" check --device cuda --save "$OUT/check.json" 2>&1 | tee "$OUT/check.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if [ -x gpu-bin/cuda_check ]; then
    timeout 60 gpu-bin/cuda_check --ignored 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt" || status=1
fi
timeout 60 "$BIN" bench --device cuda 2>&1 | tee "$OUT/bench.jsonl" || status=1
if python3 -c "import torch, transformers" 2>/dev/null; then
    timeout 45 python3 scripts/peer_cpu.py --generate --device cuda 2>&1 | tail -3 | tee "$OUT/peer_generate.json"
fi

# Training on the device: SmolLM2-135M's shape on colors at the paper's batch.
python3 scripts/random_weights.py gpu-bin/smollm2-shape /tmp/smollm2-shape &&
    python3 scripts/random_weights.py gpu-bin/minilm-shape /tmp/minilm-shape || status=1
train() {  # name, limit in s, reward, episodes
    timeout "$2" "$BIN" train --device cuda --model /tmp/smollm2-shape --task colors --reward "$3" \
        --embedder sentence --model-dir /tmp/minilm-shape --batch-size 50 --max-new-tokens 2 \
        --episodes "$4" --checkpoint-every 0 --lean-last-checkpoint --keep-checkpoints 1 \
        --runs-dir "$OUT/runs" --run-name "$1" --quiet 2>&1 | tail -3
}
train binary 90 binary 20000
train pgsrm 40 pgsrm 2500
if python3 -c "import torch, transformers" 2>/dev/null; then
    timeout 50 python3 scripts/peer_ppo.py --model smollm2 --hf-dir /tmp/smollm2-shape --workflow tuned \
        --device cuda --batch 50 --warmup 2 --updates 10 2>&1 | tail -2 | tee "$OUT/peer_ppo.json"
fi

echo
echo "== summary"
grep -c " ok$" "$OUT/check.txt" | sed 's/^/checks passed: /'
grep -c "FAIL$" "$OUT/check.txt" | sed 's/^/checks failed: /'
for run in binary pgsrm; do
    python3 - "$OUT/runs/$run/metrics.jsonl" "$run" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# The first updates compile kernels and fill caches: the steady rate is from the sixth on.
first = 5 if len(rows) > 5 else 0
done = rows[-1]["episode"] - (rows[first - 1]["episode"] if first else 0)
rate = done / sum(r["seconds"] for r in rows[first:])
print(f"train {sys.argv[2]}: {len(rows)} updates, {rows[-1]['episode']} episodes; steady {rate:.0f} "
      f"episodes/s, so 100,000 episodes in {100000 / rate:.0f} s; last mean reward {rows[-1]['reward_mean']:.3f}")
PY
done
grep -h episodes_per_s "$OUT/peer_ppo.json" 2>/dev/null | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("peer_ppo tuned on %s: %.0f episodes/s" % (r.get("device"), r["episodes_per_s"]))' || true
exit $status
