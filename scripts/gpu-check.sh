#!/usr/bin/env bash
# The GPU check, for a lent machine with a CUDA GPU but no Rust toolchain and no network.
#
# Here (with cargo):   cargo build --profile gpu --bins --tests
#                      bash scripts/gpu-check.sh --collect     # copies the binaries to gpu-bin/
# There (carry gpu-bin/ and the work tree):
#                      bash scripts/gpu-check.sh
# It finds libnvrtc, runs `pgsrm info`, `pgsrm check` (every kernel against the CPU, GPT-2
# decoding logits against the CPU, seeded repeatability), the ignored CUDA tests, `pgsrm bench`
# (generation throughput; our matmul beside cuBLAS) and the generation peer
# (`transformers.generate`, batch 50, prompt 20, 10 new tokens), then prints a short summary.
# Finishes in a few minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--collect" ]; then
    rm -rf gpu-bin && mkdir -p gpu-bin
    cp target/gpu/pgsrm gpu-bin/
    for t in target/gpu/deps/cuda_check-*; do
        [ -x "$t" ] && [ -f "$t" ] && cp "$t" gpu-bin/cuda_check
    done
    ls -la gpu-bin
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
timeout 300 "$BIN" check --device cuda --save "$OUT/check.json" 2>&1 | tee "$OUT/check.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if [ -x gpu-bin/cuda_check ]; then
    timeout 300 gpu-bin/cuda_check --ignored 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt" || status=1
fi
timeout 240 "$BIN" bench --device cuda 2>&1 | tee "$OUT/bench.jsonl" || status=1
if python3 -c "import torch, transformers" 2>/dev/null; then
    timeout 240 python3 scripts/peer_cpu.py --generate --device cuda 2>&1 | tail -3 | tee "$OUT/peer_generate.json"
fi
echo
echo "== summary"
grep -c " ok$" "$OUT/check.txt" | sed 's/^/checks passed: /'
grep -c "FAIL$" "$OUT/check.txt" | sed 's/^/checks failed: /'
exit $status
