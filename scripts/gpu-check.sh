#!/usr/bin/env bash
# The GPU check, for a lent machine with a CUDA GPU but no Rust toolchain and no network.
#
# Here (with cargo):   cargo build --profile gpu --bins --tests --bench ppo --bench reward
#                      bash scripts/gpu-check.sh --collect     # binaries and model shapes in gpu-bin/
# There (carry gpu-bin/ and the work tree):
#                      bash scripts/gpu-check.sh [STEP ...]
# Steps, in this order (all of them by default), each under its own time limit and all of them
# under one budget (BUDGET seconds, default 540); a step the budget no longer covers is skipped:
#   check      `pgsrm check --device cuda` (every kernel against the CPU), the ignored CUDA tests,
#              and tests/cuda_decode.rs and tests/cuda_policy.rs (graphs, recorded rollouts)
#   matmul     `pgsrm bench --job matmul`: every product of the paper's jobs beside cuBLAS
#   sweep      the same products under every candidate plan (tuning the planner)
#   train      `pgsrm train --device cuda` at the paper's batches: GPT-2 small (colors, batch 50,
#              2 new tokens), SmolLM2-135M's shape (the same), GPT-2 large (copy, batch 10, 10
#              new tokens); random weights of each shape, the binary reward
#   update     `pgsrm bench --job update`: one steady update of each child at the paper's batch,
#              where its time went (rollout, reward, reference, actor, optimiser), its kernel and
#              graph launches, copies and memsets, and the buffers it made; GPT-2 small again with
#              PGSRM_GRAPHS=0 (every kernel one by one)
#   generate   `pgsrm bench --job generate` (with graphs, then with PGSRM_GRAPHS=0) and the
#              generation peer (`transformers.generate`)
#   peer       `scripts/peer_ppo.py --workflow tuned` on SmolLM2's shape and `scripts/peer_reward.py`
#              (sentence-transformers on MiniLM's shape), same GPU
#   kernels    Nsight Compute's time of every kernel over one update of GPT-2 small and one of
#              GPT-2 large, summed by kernel and grid (scripts/ncu_summary.py)
#   sanitize   compute-sanitizer: racecheck over the product and reduction kernels' rows
#              (`pgsrm check --filter`), memcheck, synccheck and initcheck over every row
#   criterion  the criterion benches' CUDA groups with short settings (1 s warm-up, 5 s, 10
#              samples): `ppo_cuda` of benches/ppo.rs (whole updates of GPT-2 small and SmolLM2's
#              shape, batch 50 and the fallback's batch 8 of chat prompts) and `reward_cuda` of
#              benches/reward.rs (MiniLM's shape), the peers' figures beside them in the summary
# Outputs go to $OUT (default gpu-out/); a summary is printed last.
#
# The real SmolLM2 and MiniLM weights are over the 64 MiB that travels to a lent machine, so
# --collect takes their configs and tokenizers only, and there `scripts/random_weights.py` gives
# both seeded random weights of the same shapes: speed does not depend on the values. GPT-2 small
# and large get the same from the configs --collect writes. The criterion benches find GPT-2's
# tokenizer and MiniLM through the asset code in $PGSRM_HOME, where the `criterion` step links
# those shapes when the cache has none, and SmolLM2 through PGSRM_BENCH_SMOLLM2.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--collect" ]; then
    rm -rf gpu-bin && mkdir -p gpu-bin
    cp target/gpu/pgsrm gpu-bin/
    # The newest executable build of test or bench $1 (cargo leaves older ones beside it).
    newest() {
        ls -t target/gpu/deps/"$1"-* 2>/dev/null | while read -r p; do
            [ -f "$p" ] && [ -x "$p" ] && { echo "$p"; break; }
        done
    }
    t=$(newest cuda_check)
    [ -n "$t" ] && cp "$t" gpu-bin/cuda_check
    # The tests that hold the device's decoding and update to the CPU's and to themselves (graphs
    # replayed against eager loops, the rollout's recorded pass against a fresh one), compressed
    # like the benches; there they run on the GPU alone (PGSRM_TEST_DEVICES=cuda).
    for t in cuda_decode cuda_policy; do
        f=$(newest "$t")
        [ -n "$f" ] && gzip -9 -c "$f" >"gpu-bin/test-$t.gz"
    done
    # The criterion benches of benches/ppo.rs and benches/reward.rs: the newest build of each,
    # compressed (a third of the size; the `criterion` step unpacks them).
    for b in ppo reward; do
        f=$(newest "$b")
        if [ -n "$f" ]; then
            gzip -9 -c "$f" >"gpu-bin/bench-$b.gz"
        else
            echo "no target/gpu/deps/$b-*: cargo build --profile gpu --bench ppo --bench reward (the criterion step needs it)" >&2
        fi
    done
    # The children's shapes without their weights (see above).
    hf=$(mktemp -d)
    target/gpu/pgsrm convert --model smollm2-135m-instruct --out "$hf/smollm2" --force || exit 1
    mkdir -p gpu-bin/smollm2-shape
    find "$hf/smollm2" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} gpu-bin/smollm2-shape/ \;
    rm -rf "$hf"
    home="${PGSRM_HOME:-$HOME/.cache/pgsrm}/assets"
    minilm="$home/all-minilm-l6-v2"
    [ -f "$minilm/config.json" ] || { echo "no MiniLM asset at $minilm: run any pgsrm command that embeds once" >&2; exit 1; }
    mkdir -p gpu-bin/minilm-shape && cp -r "$minilm"/. gpu-bin/minilm-shape/ &&
        rm -f gpu-bin/minilm-shape/*.safetensors gpu-bin/minilm-shape/*.bin
    # GPT-2 small's and large's configs (written by `convert`, widths set here) and tokenizer.
    hf=$(mktemp -d)
    target/gpu/pgsrm convert --model random:tiny --out "$hf/gpt2" --force >/dev/null || exit 1
    for size in small:768:12:12 large:1280:36:20; do
        IFS=: read -r name embd layers heads <<<"$size"
        mkdir -p "gpu-bin/gpt2-$name-shape"
        cp "$hf/gpt2/tokenizer.json" "gpu-bin/gpt2-$name-shape/"
        python3 - "$hf/gpt2/config.json" "gpu-bin/gpt2-$name-shape/config.json" "$embd" "$layers" "$heads" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(n_embd=int(sys.argv[3]), n_layer=int(sys.argv[4]), n_head=int(sys.argv[5]))
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
    done
    rm -rf "$hf"
    du -sh gpu-bin; ls -la gpu-bin
    exit 0
fi

BIN=gpu-bin/pgsrm
[ -x "$BIN" ] || { echo "no $BIN: build here and run with --collect first" >&2; exit 2; }
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
STEPS=${*:-check matmul sweep train update generate peer kernels sanitize criterion}
BUDGET=${BUDGET:-540}
started=$(date +%s)

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
have_torch=0
python3 -c "import torch, transformers" 2>/dev/null && have_torch=1

status=0
exec 3>&1  # the script's own output, for step headers of commands whose output goes to a file
# limit SECONDS NAME COMMAND...: runs the command under the smaller of its limit and what the
# budget has left, or skips it when the budget is spent.
limit() {
    local want=$1 name=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - started)))
    if [ "$left" -lt 10 ]; then
        echo "== $name: skipped (budget of ${BUDGET}s spent)" >&3
        return 124
    fi
    [ "$want" -gt "$left" ] && want=$left
    echo "== $name (at most ${want}s)" >&3
    timeout "$want" "$@"
}
has() { [[ " $STEPS " == *" $1 "* ]]; }

"$BIN" info | tee "$OUT/info.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/info.txt"

if has check; then
    limit 150 check "$BIN" check --device cuda --save "$OUT/check.json" >"$OUT/check.txt" 2>&1 || status=1
    tail -3 "$OUT/check.txt"
    grep "FAIL$" "$OUT/check.txt" | head -20
    if [ -x gpu-bin/cuda_check ]; then
        limit 60 "ignored CUDA tests" gpu-bin/cuda_check --ignored 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt" || status=1
    fi
    for t in cuda_decode cuda_policy; do
        [ -f "gpu-bin/test-$t.gz" ] || continue
        gunzip -c "gpu-bin/test-$t.gz" >"/tmp/test-$t" && chmod +x "/tmp/test-$t"
        PGSRM_TEST_DEVICES=cuda limit 90 "$t tests" "/tmp/test-$t" --nocapture 2>&1 |
            grep -E "^test |test result| on NVIDIA" | tee -a "$OUT/cuda_tests.txt" || status=1
    done
fi

if has matmul; then
    limit 120 "matmul beside cuBLAS" "$BIN" bench --job matmul --device cuda >"$OUT/matmul.jsonl" 2>"$OUT/matmul.txt" || status=1
    cat "$OUT/matmul.txt"
fi

if has sweep; then
    limit 180 "matmul sweep" "$BIN" bench --job matmul --sweep --device cuda >"$OUT/sweep.jsonl" 2>&1 || status=1
    python3 - "$OUT/sweep.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    f = json.loads(line)["figure"]
    print(f"{f['what'][:44]:<44} planned {f['planned']:<30} {f['planned_us']:8.1f} us  best {f['best']:<30} {f['best_us']:8.1f} us")
PY
fi

# Random weights of each child's shape, once (see the top of this file).
shapes() {
    for m in smollm2 minilm gpt2-small gpt2-large; do
        [ -d "/tmp/$m-shape" ] || python3 scripts/random_weights.py "gpu-bin/$m-shape" "/tmp/$m-shape" || status=1
    done
}
if has train; then
    shapes
    train() {  # name, limit in s, model, task, batch, new tokens, episodes
        limit "$2" "train $1" "$BIN" train --device cuda --model "$3" --task "$4" --reward binary \
            --embedder sentence --model-dir /tmp/minilm-shape --batch-size "$5" --max-new-tokens "$6" \
            --episodes "$7" --checkpoint-every 0 --lean-last-checkpoint --keep-checkpoints 1 \
            --runs-dir "$OUT/runs" --run-name "$1" --quiet 2>&1 | tail -2
    }
    train gpt2-small 45 /tmp/gpt2-small-shape colors 50 2 5000
    train smollm2 45 /tmp/smollm2-shape colors 50 2 5000
    train gpt2-large 60 /tmp/gpt2-large-shape copy 10 10 300
fi

if has update; then
    shapes
    for child in gpt2-small:colors:50 smollm2:colors:50 gpt2-large:copy:10; do
        IFS=: read -r name task batch <<<"$child"
        limit 90 "update $name" "$BIN" bench --job update --device cuda --model "/tmp/$name-shape" \
            --task "$task" --batch "$batch" --runs 5 2>&1 | tee -a "$OUT/update.jsonl" || status=1
    done
    # The same GPT-2 small update with every kernel launched one by one: what the rollout's graph
    # saves, in the same sitting.
    PGSRM_GRAPHS=0 limit 60 "update gpt2-small, no graphs" "$BIN" bench --job update --device cuda \
        --model /tmp/gpt2-small-shape --task colors --batch 50 --runs 5 2>&1 |
        tee -a "$OUT/update.jsonl" || status=1
fi

if has generate; then
    limit 60 "generation" "$BIN" bench --job generate --device cuda 2>&1 | tee "$OUT/generate.jsonl" || status=1
    # Again with every kernel launched one by one: what the decoding graph saves at each batch.
    PGSRM_GRAPHS=0 limit 60 "generation, no graphs" "$BIN" bench --job generate --device cuda 2>&1 |
        tee -a "$OUT/generate.jsonl" || status=1
    if [ $have_torch = 1 ]; then
        limit 45 "generation peer" python3 scripts/peer_cpu.py --generate --device cuda 2>&1 | tail -3 | tee "$OUT/peer_generate.json"
    fi
fi

if has peer && [ $have_torch = 1 ]; then
    shapes
    limit 50 "peer_ppo" python3 scripts/peer_ppo.py --model smollm2 --hf-dir /tmp/smollm2-shape --workflow tuned \
        --device cuda --batch 50 --warmup 2 --updates 10 2>&1 | tail -2 | tee "$OUT/peer_ppo.json"
    limit 40 "peer_reward" python3 scripts/peer_reward.py --minilm /tmp/minilm-shape --device cuda 2>&1 |
        tail -2 | tee "$OUT/peer_reward.json"
fi

if has kernels && command -v ncu >/dev/null; then
    shapes
    profile() {  # name, limit, model, task, batch, new tokens
        limit "$2" "kernels $1" ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
            --log-file "$OUT/ncu-$1.csv" "$BIN" train --device cuda --model "$3" --task "$4" --reward binary \
            --embedder sentence --model-dir /tmp/minilm-shape --batch-size "$5" --max-new-tokens "$6" \
            --episodes "$5" --checkpoint-every 0 --lean-last-checkpoint --runs-dir /tmp/ncu-runs \
            --run-name "$1" --quiet >/dev/null 2>&1
        python3 scripts/ncu_summary.py "$OUT/ncu-$1.csv" | tee "$OUT/kernels-$1.txt"
    }
    profile gpt2-small 90 /tmp/gpt2-small-shape colors 50 2
    profile gpt2-large 150 /tmp/gpt2-large-shape copy 10 10
fi

if has sanitize && command -v compute-sanitizer >/dev/null; then
    cs() {  # tool, limit, extra check arguments
        local tool=$1 lim=$2
        shift 2
        limit "$lim" "compute-sanitizer $tool" compute-sanitizer --tool "$tool" --error-exitcode 3 \
            "$BIN" check --device cuda "$@" >"$OUT/sanitize-$tool.txt" 2>&1 || status=1
        grep -E "ERROR SUMMARY|kernel checks" "$OUT/sanitize-$tool.txt" | tail -2
    }
    cs racecheck 90 --filter sgemm
    cs memcheck 120
    cs synccheck 90
    cs initcheck 120
fi

if has criterion; then
    if [ $have_torch = 1 ]; then
        shapes
        # The benches' assets in our cache, where it has none: GPT-2's tokenizer (for random:small)
        # and MiniLM's shape with random weights, as links; SmolLM2's shape through
        # PGSRM_BENCH_SMOLLM2 (benches/ppo.rs).
        assets="$PGSRM_HOME/assets"
        mkdir -p "$assets/gpt2-tokenizer"
        [ -e "$assets/gpt2-tokenizer/tokenizer.json" ] ||
            ln -s "$PWD/gpu-bin/gpt2-small-shape/tokenizer.json" "$assets/gpt2-tokenizer/tokenizer.json"
        [ -e "$assets/all-minilm-l6-v2" ] || ln -s /tmp/minilm-shape "$assets/all-minilm-l6-v2"
    fi
    criterion() {  # bench, limit in s, group
        local bin=/tmp/pgsrm-bench-$1
        if [ ! -f "gpu-bin/bench-$1.gz" ]; then
            echo "== criterion $3: no gpu-bin/bench-$1.gz (build the benches here and run --collect)" >&3
            status=1
            return
        fi
        if [ $have_torch = 0 ]; then
            echo "== criterion $3: skipped (random weights of the shapes need torch and transformers)" >&3
            return
        fi
        gunzip -c "gpu-bin/bench-$1.gz" >"$bin" && chmod +x "$bin" || { status=1; return; }
        limit "$2" "criterion $3" env CRITERION_HOME="$OUT/criterion" PGSRM_BENCH_SMOLLM2=/tmp/smollm2-shape \
            "$bin" --bench "$3" --warm-up-time 1 --measurement-time 5 --sample-size 10 \
            >"$OUT/criterion-$1.txt" 2>&1 || status=1
        grep -E "^$3/|thrpt:|panicked" "$OUT/criterion-$1.txt"
    }
    criterion ppo 150 ppo_cuda
    criterion reward 60 reward_cuda
fi

echo
echo "== summary (${BUDGET}s budget, $(( $(date +%s) - started ))s used)"
if [ -f "$OUT/check.txt" ]; then
    grep -c " ok$" "$OUT/check.txt" | sed 's/^/checks passed: /'
    grep -c "FAIL$" "$OUT/check.txt" | sed 's/^/checks failed: /'
fi
for run in gpt2-small smollm2 gpt2-large; do
    [ -f "$OUT/runs/$run/metrics.jsonl" ] || continue
    python3 - "$OUT/runs/$run/metrics.jsonl" "$run" <<'PY' || status=1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# The first updates compile kernels and fill caches: the steady rate is from the sixth on.
first = 5 if len(rows) > 5 else 0
done = rows[-1]["episode"] - (rows[first - 1]["episode"] if first else 0)
secs = sum(r["seconds"] for r in rows[first:])
rate = done / secs
print(f"train {sys.argv[2]}: {len(rows)} updates, {rows[-1]['episode']} episodes; steady "
      f"{1e3 * secs / (len(rows) - first):.1f} ms per update, {rate:.0f} episodes/s, so 100,000 "
      f"episodes in {100000 / rate:.0f} s")
PY
done
if grep -q episodes_per_s "$OUT/peer_ppo.json" 2>/dev/null; then
    grep -h episodes_per_s "$OUT/peer_ppo.json" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("peer_ppo tuned on %s: %.0f episodes/s" % (r.get("device"), r["episodes_per_s"]))'
fi
if grep -q rewards_per_s "$OUT/peer_reward.json" 2>/dev/null; then
    grep -h rewards_per_s "$OUT/peer_reward.json" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("peer_reward on %s: %.0f texts/s embedded, %.0f rewards/s" % (r.get("device"), r["texts_per_s"], r["rewards_per_s"]))'
fi
# The criterion figures (median time per iteration), beside the peers above: ppo_cuda's
# smollm2_135m_b50 row times the update peer_ppo times; reward_cuda's minilm_embed encodes every
# answer as peer_reward's texts_per_s does, and its minilm_reward rows shape 50 pairs as its
# rewards_per_s does (with each distinct text encoded once).
if [ -d "$OUT/criterion" ]; then
    python3 - "$OUT/criterion" <<'PY' || status=1
import json, sys
from pathlib import Path
for bench in sorted(Path(sys.argv[1]).glob("*_cuda/*/new/benchmark.json")):
    b = json.loads(bench.read_text())
    median_s = json.loads((bench.parent / "estimates.json").read_text())["median"]["point_estimate"] / 1e9
    per = (b.get("throughput") or {}).get("Elements")
    rate = f", {per / median_s:.0f} per s ({per} per iteration)" if per else ""
    print(f"criterion {b['full_id']}: {1e3 * median_s:.2f} ms{rate}")
PY
fi
exit $status
