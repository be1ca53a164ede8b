#!/usr/bin/env python3
"""Seeded random weights for a model folder that has everything but its weights.

    python3 scripts/random_weights.py SRC DST [--seed 0]

SRC holds a Hugging Face config.json and the tokenizer files (and, for a sentence encoder, the
sentence-transformers files); DST becomes a copy of it with a model.safetensors of freshly
initialised fp32 weights of that config: `LlamaForCausalLM` for `model_type` llama,
`GPT2LMHeadModel` for gpt2, `BertModel` for bert. Throughput does not depend on the weights'
values, so `scripts/gpu-check.sh` times SmolLM2-135M's, GPT-2's and all-MiniLM-L6-v2's shapes this
way on a GPU machine that the real weights cannot be carried to (they are over its 64 MiB limit on
what travels). Needs torch and
transformers (scripts/requirements.txt).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="folder with config.json and tokenizer files")
    ap.add_argument("dst", help="folder to write (replaced if it exists)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    src, dst = Path(args.src), Path(args.dst)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise SystemExit(f"error: {src}: no config.json there")
    kind = json.loads(cfg_path.read_text(encoding="utf-8")).get("model_type")

    from transformers import AutoConfig, BertModel, GPT2LMHeadModel, LlamaForCausalLM

    config = AutoConfig.from_pretrained(str(src))
    torch.manual_seed(args.seed)
    if kind == "llama":
        model = LlamaForCausalLM(config)
    elif kind == "gpt2":
        model = GPT2LMHeadModel(config)
    elif kind == "bert":
        model = BertModel(config)
    else:
        raise SystemExit(f"error: {cfg_path}: model_type {kind!r}; this writes llama, gpt2 or bert")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    model.float().save_pretrained(str(dst), safe_serialization=True)
    # save_pretrained rewrites config.json; the source's is the one the tokenizer files go with.
    shutil.copy(cfg_path, dst / "config.json")
    n = sum(p.numel() for p in model.parameters())
    print(f"{dst}: {kind}, {n / 1e6:.1f}M parameters, random (seed {args.seed})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
