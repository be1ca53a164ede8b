#!/usr/bin/env python3
"""PyTorch eager fp32 throughput, the peer figure beside pgsrm's own benches in BENCHMARKS.md.

Training step (default): forward + backward with the LM loss over all positions on random token ids
(batch 4, length 64 unless told otherwise), a few warm-up steps, then timed steps. "Eager" means
PyTorch without compilation; attention is transformers' default (sdpa) unless --attn eager. Prints one JSON
line: {"model", "tokens_per_s", "step_s", "threads", "torch", ...}.
  --model small      GPT-2 small, random init (GPT2Config defaults: 12 layers, 768 wide, 50257 tokens)
  --model smollm2    SmolLM2-135M-Instruct loaded from its GGUF (dequantised to f32 by transformers)
Generation (--generate): transformers' generate, sampling at temperature 1, batch 50, prompt 20
tokens, 10 new tokens; tokens_per_s counts new tokens. --device cuda runs it on a GPU.

Regenerate the environment and run (from the repository root):
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
  .venv/bin/python scripts/peer_cpu.py --threads 2
  .venv/bin/python scripts/peer_cpu.py --model smollm2 --threads 2
  .venv/bin/python scripts/peer_cpu.py --generate --device cuda
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

# The project's own asset cache: `pgsrm` fetches these files there (run any command that needs
# them once, e.g. `pgsrm info --model smollm2-135m-instruct`).
PGSRM_ASSETS = Path(os.environ.get("PGSRM_HOME", Path.home() / ".cache" / "pgsrm")) / "assets"
DEFAULT_GGUF = str(PGSRM_ASSETS / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_model(name: str, gguf: str, seed: int, attn: str):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    if name == "small":
        torch.manual_seed(seed)
        cfg = GPT2Config()
        cfg._attn_implementation = attn
        return GPT2LMHeadModel(cfg).float()
    if name == "smollm2":
        path = Path(gguf)
        if not path.is_file():
            raise SystemExit(f"error: --gguf {path}: no such file")
        return AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation=attn
        )
    raise SystemExit(f"error: --model {name!r}: valid models are small, smollm2")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(model, args, device: torch.device) -> dict:
    model.to(device).train()
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, vocab, (args.batch, args.length), generator=g).to(device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()

    for _ in range(args.warmup):
        step()
    sync(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "job": "train",
        "step_s": median,
        "step_s_min": times[0],
        "tokens_per_s": args.batch * args.length / median,
        "batch": args.batch,
        "length": args.length,
        "steps": args.steps,
    }


def bench_generate(model, args, device: torch.device) -> dict:
    model.to(device).eval()
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, vocab, (args.gen_batch, args.prompt), generator=g).to(device)
    mask = torch.ones_like(ids)
    # No end-of-text stop: every row makes exactly max_new_tokens tokens.
    kwargs = dict(
        attention_mask=mask,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        pad_token_id=0,
    )
    with torch.no_grad():
        for _ in range(args.warmup):
            model.generate(ids, **kwargs)
        sync(device)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            out = model.generate(ids, **kwargs)
            sync(device)
            times.append(time.perf_counter() - t0)
    assert out.shape == (args.gen_batch, args.prompt + args.new_tokens), out.shape
    times.sort()
    median = times[len(times) // 2]
    return {
        "job": "generate",
        "step_s": median,
        "step_s_min": times[0],
        "tokens_per_s": args.gen_batch * args.new_tokens / median,
        "batch": args.gen_batch,
        "prompt": args.prompt,
        "new_tokens": args.new_tokens,
        "steps": args.steps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch eager fp32 training or generation throughput")
    ap.add_argument("--model", default="small", help="small (GPT-2 small, random init) or smollm2")
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="SmolLM2 GGUF file for --model smollm2")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generate", action="store_true", help="time transformers.generate instead of training")
    ap.add_argument("--gen-batch", type=int, default=50)
    ap.add_argument("--prompt", type=int, default=20, help="prompt length in tokens for --generate")
    ap.add_argument("--new-tokens", type=int, default=10)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="transformers attention implementation")
    args = ap.parse_args()

    for flag in ("threads", "batch", "length", "steps", "gen_batch", "prompt", "new_tokens"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.device not in ("cpu", "cuda"):
        print(f"error: --device {args.device!r}: use cpu or cuda", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    model = load_model(args.model, args.gguf, args.seed, args.attn)
    if args.generate:
        res = bench_generate(model, args, device)
    else:
        res = bench_train(model, args, device)
    res = {
        "model": "gpt2-small" if args.model == "small" else "smollm2-135m-instruct",
        **res,
        "threads": torch.get_num_threads(),
        "attn": args.attn,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
