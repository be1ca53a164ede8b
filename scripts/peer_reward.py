#!/usr/bin/env python3
"""sentence-transformers throughput, the peer figure for pgsrm's reward bench in BENCHMARKS.md: on the
CPU beside the `reward_cpu` group of `cargo bench --bench reward`, and with --device cuda on a GPU
beside its `reward_cuda` group (scripts/gpu-check.sh runs both there).

With all-MiniLM-L6-v2 (mean pooling, L2 normalisation), on batches of 50 short answers (1-3 words):
  texts_per_s    SentenceTransformer.encode of one batch of 50 answers
  rewards_per_s  the whole PGSRM reward for 50 (parent, child) pairs: both sides encoded in one call
                 of 100 texts, cosine per pair, r = ((cos + 1) / 2) ** 4 clamped to [0, 1]
Prints one JSON line. On a GPU the timers wait for the GPU's work before they read the clock.

Regenerate the environment and run (from the repository root):
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
  .venv/bin/python scripts/peer_reward.py --threads 2 [--minilm DIR]
  .venv/bin/python scripts/peer_reward.py --device cuda [--minilm DIR]
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

# The project's own asset cache: `pgsrm` fetches these files there (run any command that needs
# them once, e.g. `pgsrm embed --text hi`).
PGSRM_ASSETS = Path(os.environ.get("PGSRM_HOME", Path.home() / ".cache" / "pgsrm")) / "assets"
DEFAULT_MINILM = str(PGSRM_ASSETS / "all-minilm-l6-v2")

# Short answers of the kind the tasks produce: colors, opposites, categories, fragments.
ANSWERS = [
    "purple", "green", "dark brown", "light pink", "orange", "grey", "blue", "red", "white", "black",
    "cold", "small", "very quiet", "slow", "sad", "dark", "soft", "empty", "old", "short",
    "fruit", "a vegetable", "animal", "tool", "furniture", "musical instrument", "vehicle", "bird",
    "kitchen utensil", "clothing", "the sea", "a loud dog", "rain today", "my old house",
    "not sure", "yes", "no", "maybe later", "the answer", "1", "42", "purple purple",
    "'purple", "red and blue", "bright yellow", "deep sea blue", "it is cold", "tiny", "hot", "sweet",
    "bitter taste", "a pear", "an apple", "banana", "tomato", "carrot", "hammer", "chair", "violin",
    "bus", "sparrow", "spoon", "jacket", "sunny day", "grey clouds", "happy", "lonely", "tired",
]


def main() -> int:
    ap = argparse.ArgumentParser(description="sentence-transformers encoding and reward throughput")
    ap.add_argument("--minilm", default=DEFAULT_MINILM, help="all-MiniLM-L6-v2 folder (sentence-transformers layout)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--batches", type=int, default=20, help="timed batches")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--power", type=float, default=4.0, help="shaping exponent p in ((cos + 1) / 2) ** p")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where sentence-transformers runs (cuda: the first GPU; needs a CUDA build of torch)")
    args = ap.parse_args()

    if args.threads < 1 or args.batch < 1 or args.batches < 1:
        print("error: --threads, --batch and --batches must be at least 1", file=sys.stderr)
        return 2
    folder = Path(args.minilm)
    if not (folder / "modules.json").is_file():
        print(f"error: --minilm {folder}: no modules.json (not a sentence-transformers folder)", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"error: --device cuda: torch {torch.__version__} ({built}) sees no CUDA device "
              "(torch.cuda.is_available() is False); install a CUDA build of torch or use --device cpu",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device=args.device)
    rng = random.Random(args.seed)
    batches = [
        ([rng.choice(ANSWERS) for _ in range(args.batch)], [rng.choice(ANSWERS) for _ in range(args.batch)])
        for _ in range(args.warmup + args.batches)
    ]

    def encode(texts):
        return st.encode(texts, batch_size=len(texts), convert_to_tensor=True, normalize_embeddings=True)

    def sync():
        # The GPU's work is queued: wait for it before reading the clock.
        if args.device == "cuda":
            torch.cuda.synchronize()

    def reward(parents, children):
        emb = encode(parents + children)
        cos = (emb[: len(parents)] * emb[len(parents) :]).sum(dim=1)
        return ((cos + 1.0) / 2.0).pow(args.power).clamp(0.0, 1.0)

    with torch.no_grad():
        for parents, children in batches[: args.warmup]:
            encode(children)
            reward(parents, children)
        sync()
        t0 = time.perf_counter()
        for _, children in batches[args.warmup :]:
            encode(children)
        sync()
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for parents, children in batches[args.warmup :]:
            r = reward(parents, children)
        sync()
        reward_s = time.perf_counter() - t0
    assert r.shape == (args.batch,) and bool(torch.isfinite(r).all())

    n = args.batch * args.batches
    print(json.dumps({
        "model": "all-MiniLM-L6-v2",
        "texts_per_s": n / encode_s,
        "rewards_per_s": n / reward_s,
        "batch": args.batch,
        "batches": args.batches,
        "power": args.power,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
