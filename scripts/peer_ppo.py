#!/usr/bin/env python3
"""PyTorch + transformers peers of pgsrm's PPO throughput bench (`cargo bench --bench ppo`).

One timed unit is a whole policy update of the colors task: sample a batch of episodes (batch 50,
prompt `Mix the two colors and output only one lowercase color name: {c1} and {c2} is => ` with two
distinct colours drawn uniformly from a seeded generator, 2 new tokens at temperature 1), score them
with the binary reward against the colour-mix table below, then the update of docs/METHOD.md ("The policy
update"): actor and frozen-reference log-probs of the sampled tokens, value head (hidden -> 1) on the
detached final hidden state of the last response token, advantage r - V, actor loss
policy - 0.01 * entropy + kl_coef * KL, critic loss 0.5 * MSE, two AdamW optimisers (lr 1e-5 and
1e-4, PyTorch defaults otherwise), gradient-norm clipping at 1.0 for each, adaptive KL controller
(kl_coef 5e-5, target 0.8). fp32, eager PyTorch (transformers' default sdpa attention), CPU.
Models run in eval mode (GPT2Config's dropout would otherwise be active during the update; the
Rust side has none). Prints one JSON line with episodes_per_s = batch / median update seconds,
after --warmup untimed updates; the time split of one update (median per part) goes to stderr.

  --model small      GPT-2 small, random init (GPT2Config defaults, seed 0); prompts tokenised with
                     GPT-2's BPE built offline from encoder.json + vocab.bpe in pgsrm's asset cache
                     (19 tokens for every colour pair)
  --model smollm2    SmolLM2-135M-Instruct from its GGUF (dequantised to f32 by transformers) and the
                     GGUF's tokenizer (18 tokens for every colour pair); with --hf-dir, a Hugging Face
                     Llama folder instead (scripts/gpu-check.sh gives it SmolLM2's shape and
                     tokenizer with random weights, where the GGUF cannot be carried)

  --device cuda      the same on a GPU (the timers wait for the GPU before they read the clock)

  --workflow reference   the paper's code path: one model.generate call per prompt; the batch's
                         prompts right-padded with end-of-text before each response is appended;
                         actor forward with grad over the whole padded batch with log-softmax and
                         full-vocabulary entropy at every position (masked to the response tokens
                         afterwards); reference forward under no_grad with log-softmax at every position.
  --workflow tuned       the same update math done the fast way: all prompts generated together
                         (left padding, attention mask, KV cache, one model.generate call); one actor
                         forward through the backbone, LM head and log-softmax only at the positions
                         that predict response tokens; reference likewise under inference_mode.

  --chat                 the SmolLM2 fallback's prompt shape (`pgsrm train` without GPT-2 weights,
                         and the `b8_chat` rows of the bench): each prompt written as a user turn of
                         SmolLM2's chat template (the CHATML text below: its default system turn,
                         the user turn, the assistant turn opened), for both models; run it with
                         --batch 8. About 48 SmolLM2 tokens, of which the first 37 are the same in
                         every prompt.

Every colour is a single token in both tokenizers, so all prompts of a batch have the same length
and the reference path's right-padding quirk never puts pad tokens between prompt and response on
this task; it costs nothing here but is kept as coded.

--check samples one batch (after one tuned update, so that KL is not zero), runs it through both
loss computations without stepping the optimisers, prints the two sets of figures (losses, KL,
entropy, values, actor gradient norm) and their absolute differences as one JSON line, and exits
non-zero if any differs by more than 1e-5 + 1e-4 * |value|.

Regenerate the environment and run (from the repository root):
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
  .venv/bin/python scripts/peer_ppo.py --check
  .venv/bin/python scripts/peer_ppo.py --model small --workflow reference --threads 2
  .venv/bin/python scripts/peer_ppo.py --model small --workflow tuned --threads 2
  .venv/bin/python scripts/peer_ppo.py --model smollm2 --workflow reference --threads 2
  .venv/bin/python scripts/peer_ppo.py --model smollm2 --workflow tuned --threads 2
  .venv/bin/python scripts/peer_ppo.py --model small --workflow tuned --threads 2 --chat --batch 8
  .venv/bin/python scripts/peer_ppo.py --model smollm2 --workflow tuned --threads 2 --chat --batch 8
"""

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Where the models and every tensor of an update live (--device); set once in main.
DEVICE = torch.device("cpu")


def now() -> float:
    """The clock, once the GPU has finished what it was given (the work is asynchronous there)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()

# The project's own asset cache: `pgsrm` fetches these files there (run any command that needs
# them once, e.g. `pgsrm info --model smollm2-135m-instruct`).
PGSRM_ASSETS = Path(os.environ.get("PGSRM_HOME", Path.home() / ".cache" / "pgsrm")) / "assets"
DEFAULT_GGUF = str(PGSRM_ASSETS / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_GPT2_BPE = str(PGSRM_ASSETS / "gpt2-tokenizer")

TEMPLATE = "Mix the two colors and output only one lowercase color name: {c1} and {c2} is => "
# One user turn as SmolLM2's chat template writes it, with its default system turn, and the
# assistant's turn opened.
CHATML = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
          "<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
COLORS = ["red", "blue", "yellow", "green", "orange", "purple", "pink", "brown", "black", "white"]

# The mix of each unordered pair of colours, one lowercase word.
MIX_PAIRS = [
    ("red", "blue", "purple"), ("red", "yellow", "orange"), ("red", "green", "brown"),
    ("red", "orange", "vermilion"), ("red", "purple", "magenta"), ("red", "pink", "rose"),
    ("red", "brown", "maroon"), ("red", "black", "maroon"), ("red", "white", "pink"),
    ("blue", "yellow", "green"), ("blue", "green", "teal"), ("blue", "orange", "brown"),
    ("blue", "purple", "indigo"), ("blue", "pink", "lilac"), ("blue", "brown", "gray"),
    ("blue", "black", "navy"), ("blue", "white", "azure"), ("yellow", "green", "lime"),
    ("yellow", "orange", "amber"), ("yellow", "purple", "brown"), ("yellow", "pink", "peach"),
    ("yellow", "brown", "mustard"), ("yellow", "black", "olive"), ("yellow", "white", "cream"),
    ("green", "orange", "brown"), ("green", "purple", "slate"), ("green", "pink", "gray"),
    ("green", "brown", "olive"), ("green", "black", "darkgreen"), ("green", "white", "mint"),
    ("orange", "purple", "russet"), ("orange", "pink", "coral"), ("orange", "brown", "rust"),
    ("orange", "black", "brown"), ("orange", "white", "peach"), ("purple", "pink", "orchid"),
    ("purple", "brown", "plum"), ("purple", "black", "eggplant"), ("purple", "white", "lavender"),
    ("pink", "brown", "taupe"), ("pink", "black", "mauve"), ("pink", "white", "blush"),
    ("brown", "black", "chocolate"), ("brown", "white", "beige"), ("black", "white", "gray"),
]
MIX = {frozenset((a, b)): m for a, b, m in MIX_PAIRS}
assert len(MIX) == len(COLORS) * (len(COLORS) - 1) // 2

ENTROPY_COEF = 0.01
ACTOR_LR = 1e-5
CRITIC_LR = 1e-4
MAX_GRAD_NORM = 1.0
KL_COEF = 5e-5
KL_TARGET = 0.8
CHECK_RTOL = 1e-4
CHECK_ATOL = 1e-5


# ---------------------------------------------------------------- models and tokenizers

def load_gpt2_tokenizer(bpe_dir: str):
    from transformers import GPT2TokenizerFast

    enc, merges = Path(bpe_dir) / "encoder.json", Path(bpe_dir) / "vocab.bpe"
    for p in (enc, merges):
        if not p.is_file():
            raise SystemExit(f"error: --gpt2-bpe {bpe_dir}: no {p.name} there")
    vocab = json.loads(enc.read_text(encoding="utf-8"))
    lines = merges.read_text(encoding="utf-8").split("\n")
    pairs = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    tok = GPT2TokenizerFast(vocab=vocab, merges=pairs)
    if tok.eos_token_id != 50256 or len(tok) != 50257:
        raise SystemExit(f"error: --gpt2-bpe {bpe_dir}: built a tokenizer of {len(tok)} tokens, eos "
                         f"{tok.eos_token_id}; expected GPT-2's 50257 and 50256")
    return tok


def load(name: str, gguf: str, bpe_dir: str, seed: int, hf_dir=None):
    """(model, tokenizer) in fp32, eval mode, on DEVICE."""
    if name == "small":
        from transformers import GPT2Config, GPT2LMHeadModel

        tok = load_gpt2_tokenizer(bpe_dir)
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config()).float()
    elif name == "smollm2" and hf_dir:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (Path(hf_dir) / "config.json").is_file():
            raise SystemExit(f"error: --hf-dir {hf_dir}: no config.json there")
        tok = AutoTokenizer.from_pretrained(hf_dir)
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    elif name == "smollm2":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(gguf)
        if not path.is_file():
            raise SystemExit(f"error: --gguf {path}: no such file")
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        raise SystemExit(f"error: --model {name!r}: valid models are small, smollm2")
    if tok.eos_token_id is None:
        raise SystemExit(f"error: --model {name}: the tokenizer has no end-of-text token")
    tok.pad_token = tok.eos_token                  # end-of-text doubles as the pad token
    return model.to(DEVICE).eval(), tok


# ---------------------------------------------------------------- episodes

class Episodes:
    """One batch: prompt token ids, sampled response token ids (each at most R long, cut after an
    end-of-text), binary rewards."""

    def __init__(self, prompts, responses, rewards, new_tokens):
        self.prompts = prompts          # list[list[int]]
        self.responses = responses      # list[list[int]], 1..new_tokens ids
        self.rewards = rewards          # tensor [B]
        self.new_tokens = new_tokens


def draw_prompts(rng: random.Random, batch: int, chat: bool):
    out = []
    for _ in range(batch):
        c1, c2 = rng.sample(COLORS, 2)
        text = TEMPLATE.format(c1=c1, c2=c2)
        out.append((CHATML.format(text=text) if chat else text, MIX[frozenset((c1, c2))]))
    return out


def cut_at_eos(ids, eos: int):
    ids = list(ids)
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def rewards_for(tok, responses, answers) -> torch.Tensor:
    texts = tok.batch_decode(responses, skip_special_tokens=True)
    return torch.tensor([1.0 if t.strip().lower() == a else 0.0 for t, a in zip(texts, answers)], device=DEVICE)


def gen_kwargs(tok, new_tokens: int) -> dict:
    return dict(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=new_tokens,
        pad_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )


@torch.no_grad()
def sample_reference(model, tok, drawn, new_tokens: int) -> Episodes:
    """One generate call per prompt, as the paper's code does."""
    eos = tok.eos_token_id
    prompts, responses = [], []
    for text, _ in drawn:
        ids = tok(text, return_tensors="pt")["input_ids"].to(DEVICE)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **gen_kwargs(tok, new_tokens))
        prompts.append(ids[0].tolist())
        responses.append(cut_at_eos(out[0, ids.shape[1]:].tolist(), eos))
    return Episodes(prompts, responses, rewards_for(tok, responses, [a for _, a in drawn]), new_tokens)


@torch.no_grad()
def sample_tuned(model, tok, drawn, new_tokens: int) -> Episodes:
    """All prompts in one left-padded generate call with the KV cache."""
    eos = tok.eos_token_id
    enc = tok([t for t, _ in drawn], return_tensors="pt", padding=True, padding_side="left").to(DEVICE)
    out = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], **gen_kwargs(tok, new_tokens))
    lp = enc["input_ids"].shape[1]
    mask = enc["attention_mask"].bool()
    prompts = [row[m].tolist() for row, m in zip(enc["input_ids"], mask)]
    responses = [cut_at_eos(row[lp:].tolist(), eos) for row in out]
    return Episodes(prompts, responses, rewards_for(tok, responses, [a for _, a in drawn]), new_tokens)


# ---------------------------------------------------------------- the two loss computations

def response_block(ep: Episodes, eos: int):
    """[B, R] response ids padded with eos, the [B, R] mask of non-pad response tokens, and each
    row's response length (counting a sampled end-of-text)."""
    b, r = len(ep.responses), max(len(x) for x in ep.responses)
    resp = torch.full((b, r), eos, dtype=torch.long)
    lens = torch.tensor([len(x) for x in ep.responses])
    for i, x in enumerate(ep.responses):
        resp[i, : len(x)] = torch.tensor(x)
    valid = (torch.arange(r)[None, :] < lens[:, None]) & (resp != eos)
    return resp, valid.float(), lens


def forward_reference(actor, ref, vhead, ep: Episodes, eos: int):
    """Paper's layout: prompts right-padded with eos, responses appended; full-vocabulary
    log-softmax and entropy at every position, then masked."""
    resp, valid, lens = response_block(ep, eos)
    b, r = resp.shape
    lp = max(len(p) for p in ep.prompts)
    ids = torch.full((b, lp + r), eos, dtype=torch.long)
    for i, p in enumerate(ep.prompts):
        ids[i, : len(p)] = torch.tensor(p)
    ids[:, lp:] = resp
    attn = (ids != eos).long()
    mask = torch.zeros(b, lp + r - 1)
    mask[:, lp - 1:] = valid                      # position t predicts token t + 1

    t0 = now()
    out = actor(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    logp_all = F.log_softmax(out.logits[:, :-1].float(), dim=-1)
    entropy_all = -(logp_all.exp() * logp_all).sum(-1)
    logp = logp_all.gather(-1, ids[:, 1:, None]).squeeze(-1)
    last = out.hidden_states[-1][torch.arange(b), lp + lens - 1]
    value = vhead(last.detach()).squeeze(-1)
    t1 = now()
    with torch.no_grad():
        ref_logits = ref(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        ref_logp = F.log_softmax(ref_logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    t2 = now()
    return dict(logp=logp, entropy=entropy_all, ref_logp=ref_logp, mask=mask, value=value,
                t_actor_fwd=t1 - t0, t_ref=t2 - t1)


def forward_tuned(actor, ref, vhead, ep: Episodes, eos: int):
    """Left-padded prompt + response; LM head and log-softmax only where a response token is
    predicted; reference under inference_mode."""
    resp, valid, lens = response_block(ep, eos)
    b, r = resp.shape
    lp = max(len(p) for p in ep.prompts)
    ids = torch.full((b, lp + r), eos, dtype=torch.long)
    pmask = torch.zeros(b, lp, dtype=torch.long)
    for i, p in enumerate(ep.prompts):
        ids[i, lp - len(p): lp] = torch.tensor(p)
        pmask[i, lp - len(p):] = 1
    ids[:, lp:] = resp
    attn = torch.cat([pmask, (resp != eos).long()], dim=1)
    pos = (torch.cat([pmask, torch.ones(b, r, dtype=torch.long)], 1).cumsum(-1) - 1).clamp(min=0)
    rows = torch.arange(b)

    def head_rows(model, h):
        return F.log_softmax(model.get_output_embeddings()(h).float(), dim=-1)

    t0 = now()
    h = actor.base_model(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state
    logp_r = head_rows(actor, h[:, lp - 1: lp - 1 + r])          # [B, R, V]
    entropy = -(logp_r.exp() * logp_r).sum(-1)
    logp = logp_r.gather(-1, resp[:, :, None]).squeeze(-1)
    value = vhead(h[rows, lp + lens - 1].detach()).squeeze(-1)
    t1 = now()
    with torch.inference_mode():
        hr = ref.base_model(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state
        ref_logp = head_rows(ref, hr[:, lp - 1: lp - 1 + r]).gather(-1, resp[:, :, None]).squeeze(-1)
    ref_logp = ref_logp.clone()                    # an ordinary tensor for the autograd graph
    t2 = now()
    return dict(logp=logp, entropy=entropy, ref_logp=ref_logp, mask=valid, value=value,
                t_actor_fwd=t1 - t0, t_ref=t2 - t1)


def losses(f: dict, rewards: torch.Tensor, kl_coef: float) -> dict:
    mask = f["mask"]
    n = mask.sum().clamp(min=1.0)

    def mean_mask(x):
        return (x * mask).sum() / n

    adv = (rewards - f["value"].detach())[:, None]
    policy = -mean_mask(f["logp"] * adv)
    entropy = mean_mask(f["entropy"])
    kl = mean_mask(f["logp"] - f["ref_logp"])
    actor_loss = policy - ENTROPY_COEF * entropy + kl_coef * kl
    critic_loss = 0.5 * F.mse_loss(f["value"], rewards)
    return dict(policy=policy, entropy=entropy, kl=kl, actor_loss=actor_loss, critic_loss=critic_loss)


# ---------------------------------------------------------------- the update

class Trainer:
    def __init__(self, model, tok, workflow: str, batch: int, new_tokens: int, seed: int,
                 chat: bool = False):
        self.actor, self.tok, self.workflow, self.chat = model, tok, workflow, chat
        self.ref = copy.deepcopy(model).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        hidden = model.get_output_embeddings().weight.shape[1]
        torch.manual_seed(seed)
        self.vhead = torch.nn.Linear(hidden, 1)
        self.actor_opt = torch.optim.AdamW(self.actor.parameters(), lr=ACTOR_LR)
        self.critic_opt = torch.optim.AdamW(self.vhead.parameters(), lr=CRITIC_LR)
        self.kl_coef = KL_COEF
        self.batch, self.new_tokens = batch, new_tokens
        self.rng = random.Random(seed)
        self.prompt_tokens = []

    def sample(self) -> Episodes:
        drawn = draw_prompts(self.rng, self.batch, self.chat)
        fn = sample_reference if self.workflow == "reference" else sample_tuned
        ep = fn(self.actor, self.tok, drawn, self.new_tokens)
        self.prompt_tokens.extend(len(p) for p in ep.prompts)
        return ep

    def forward(self, ep: Episodes, workflow: str):
        fn = forward_reference if workflow == "reference" else forward_tuned
        return fn(self.actor, self.ref, self.vhead, ep, self.tok.eos_token_id)

    def update(self) -> dict:
        t0 = now()
        ep = self.sample()
        t1 = now()
        f = self.forward(ep, self.workflow)
        t2 = now()
        lo = losses(f, ep.rewards, self.kl_coef)
        self.actor_opt.zero_grad(set_to_none=True)
        lo["actor_loss"].backward()
        actor_gn = torch.nn.utils.clip_grad_norm_(self.actor.parameters(), MAX_GRAD_NORM)
        self.critic_opt.zero_grad(set_to_none=True)
        lo["critic_loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.vhead.parameters(), MAX_GRAD_NORM)
        t3 = now()
        self.actor_opt.step()
        self.critic_opt.step()
        t4 = now()
        kl = float(lo["kl"].detach())
        if kl > 1.5 * KL_TARGET:
            self.kl_coef *= 1.5
        elif kl < KL_TARGET / 1.5:
            self.kl_coef /= 1.5
        stats = {k: float(v.detach()) for k, v in lo.items()}
        stats["reward"] = float(ep.rewards.mean())
        stats["actor_grad_norm"] = float(actor_gn)
        for k, v in stats.items():
            if v != v or v in (float("inf"), float("-inf")):
                raise SystemExit(f"error: update produced a non-finite {k}: {stats}")
        fwd_bwd = (t3 - t2) + f["t_actor_fwd"]
        return dict(total=t4 - t0, generate=t1 - t0, forward_backward=fwd_bwd, reference=f["t_ref"],
                    optimizer=t4 - t3, stats=stats)


def run_check(tr: Trainer) -> int:
    tr.update()                                            # so that actor != reference
    ep = tr.sample()
    figures, grads = {}, {}
    for wf in ("reference", "tuned"):
        f = tr.forward(ep, wf)
        lo = losses(f, ep.rewards, tr.kl_coef)
        tr.actor.zero_grad(set_to_none=True)
        lo["actor_loss"].backward()
        gn = torch.nn.utils.clip_grad_norm_(tr.actor.parameters(), float("inf"))
        tr.actor.zero_grad(set_to_none=True)
        figures[wf] = {**{k: float(v.detach()) for k, v in lo.items()},
                       "value_mean": float(f["value"].detach().mean()), "actor_grad_norm": float(gn)}
    # Relative tolerance, with an absolute floor for figures near zero (KL right after one step).
    diff = {k: abs(figures["reference"][k] - figures["tuned"][k]) for k in figures["reference"]}
    ok = all(d <= CHECK_ATOL + CHECK_RTOL * abs(figures["reference"][k]) for k, d in diff.items())
    lens = sorted({len(p) for p in ep.prompts})
    print(json.dumps({"check": "reference vs tuned loss on one batch", "prompt_lengths": lens,
                      "reward_mean": float(ep.rewards.mean()), **figures, "abs_diff": diff,
                      "rtol": CHECK_RTOL, "atol": CHECK_ATOL, "ok": ok}))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch eager fp32 PPO-update throughput on the colors task")
    ap.add_argument("--model", default="small", help="small (GPT-2 small, random init) or smollm2")
    ap.add_argument("--workflow", default="reference", help="reference (the paper's code path) or tuned")
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="SmolLM2 GGUF file for --model smollm2")
    ap.add_argument("--gpt2-bpe", default=DEFAULT_GPT2_BPE, help="folder with GPT-2's encoder.json and vocab.bpe")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed updates first (default 1)")
    ap.add_argument("--updates", type=int, default=5, help="timed updates (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chat", action="store_true",
                    help="prompts as a user turn of SmolLM2's chat template (the fallback's shape)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the first GPU)")
    ap.add_argument("--hf-dir", default=None, help="Hugging Face Llama folder for --model smollm2 instead of --gguf")
    ap.add_argument("--check", action="store_true",
                    help="run one batch through both loss computations, compare, and exit")
    args = ap.parse_args()

    if args.workflow not in ("reference", "tuned"):
        raise SystemExit(f"error: --workflow {args.workflow!r}: valid workflows are reference, tuned")
    if args.model not in ("small", "smollm2"):
        raise SystemExit(f"error: --model {args.model!r}: valid models are small, smollm2")
    for flag in ("threads", "batch", "new_tokens", "updates"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        raise SystemExit("error: --warmup must be at least 0")
    if args.device not in ("cpu", "cuda"):
        raise SystemExit(f"error: --device {args.device!r}: valid devices are cpu, cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: PyTorch sees no CUDA device")
    global DEVICE
    DEVICE = torch.device(args.device)
    # Tensors made without a device (masks, index ranges) go where the models are.
    torch.set_default_device(DEVICE)
    torch.set_num_threads(args.threads)

    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, tok = load(args.model, args.gguf, args.gpt2_bpe, args.seed, args.hf_dir)
    tr = Trainer(model, tok, args.workflow, args.batch, args.new_tokens, args.seed, args.chat)
    if args.check:
        return run_check(tr)

    for _ in range(args.warmup):
        tr.update()
    runs = [tr.update() for _ in range(args.updates)]
    totals = [r["total"] for r in runs]
    median = statistics.median(totals)
    split = {k: statistics.median(r[k] for r in runs) for k in ("generate", "forward_backward", "reference", "optimizer")}
    print("time split of one update (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in split.items())
          + f"; last update: {json.dumps(runs[-1]['stats'])}", file=sys.stderr)
    print(json.dumps({
        "workflow": args.workflow,
        "model": "gpt2-small" if args.model == "small"
        else f"{args.hf_dir} (SmolLM2's shape)" if args.hf_dir else "smollm2-135m-instruct",
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "chat": args.chat,
        "prompt_tokens_mean": statistics.mean(tr.prompt_tokens),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "update_s_median": median,
        "update_s_all": totals,
        "episodes_per_s": args.batch / median,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
