#!/usr/bin/env python3
"""Peer of benches/llama_cpu.rs: SmolLM2-135M forward + backward in PyTorch eager fp32 on the CPU,
batch 4 x 64, loss over every position, random weights of the same config. Prints tokens/s.

  /path/to/python scripts/bench_llama_torch.py [--iters 5] [--threads N]
"""

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0,
        tie_word_embeddings=True, max_position_embeddings=8192, attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).float().train()
    b, t = 4, 64
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    target = torch.roll(ids.flatten(), -1).view(b, t)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, cfg.vocab_size), target.view(-1))
        loss.backward()

    step()  # warm-up
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(f"pytorch {torch.__version__} eager fp32, {torch.get_num_threads()} threads: "
          f"median {med:.3f} s/step, {b * t / med:.1f} tokens/s (min {min(times):.3f} s)")


if __name__ == "__main__":
    main()
