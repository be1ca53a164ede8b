//! The products of the paper's jobs, by name: a training update of GPT-2 small and of SmolLM2-135M
//! at batch 50 (2 new tokens, the word tasks) and of GPT-2 large at batch 10 (10 new tokens, the
//! sentence tasks), and decoding steps. The launch-plan test holds the plan of each to the device's
//! size; `pgsrm bench --job matmul` times each against cuBLAS.

use super::ops::sgemm::{Layout, Shape};

/// The widths of a child.
pub struct Widths {
    pub name: &'static str,
    pub c: usize,
    pub mlp: usize,
    /// Keys' and values' width (grouped-query attention); `c` for GPT-2.
    pub kv: usize,
    pub vocab: usize,
    /// Llama's linear layers store weights (out, in) (nt products); GPT-2's Conv1D (in, out) (nn).
    pub llama: bool,
}

pub const GPT2_SMALL: Widths = Widths {
    name: "gpt2-small",
    c: 768,
    mlp: 3072,
    kv: 768,
    vocab: 50257,
    llama: false,
};
pub const GPT2_LARGE: Widths = Widths {
    name: "gpt2-large",
    c: 1280,
    mlp: 5120,
    kv: 1280,
    vocab: 50257,
    llama: false,
};
pub const SMOLLM2: Widths = Widths {
    name: "smollm2-135m",
    c: 576,
    mlp: 1536,
    kv: 192,
    vocab: 49152,
    llama: true,
};

/// A product of a job: what it is, and its shape as the launchers pass it to `sgemm`.
#[derive(Clone, Debug)]
pub struct Product {
    pub what: String,
    pub shape: Shape,
}

/// One layer's weights: (name, input width, output width).
fn layer(w: &Widths) -> Vec<(&'static str, usize, usize)> {
    if w.llama {
        vec![
            ("q/o", w.c, w.c),
            ("k/v", w.c, w.kv),
            ("gate/up", w.c, w.mlp),
            ("down", w.mlp, w.c),
        ]
    } else {
        vec![
            ("qkv", w.c, 3 * w.c),
            ("attn proj", w.c, w.c),
            ("fc", w.c, w.mlp),
            ("mlp proj", w.mlp, w.c),
        ]
    }
}

fn forward_layout(w: &Widths) -> Layout {
    if w.llama { Layout::NT } else { Layout::NN }
}

/// Every product of one update over `batch` sequences of `prompt + new_tokens` tokens: each
/// layer's forward, input gradient and weight gradient, and the head at the response positions
/// both ways (logits, input gradient, weight gradient).
pub fn update(w: &Widths, batch: usize, prompt: usize, new_tokens: usize) -> Vec<Product> {
    let rows = batch * (prompt + new_tokens);
    let heads = batch * new_tokens;
    let tag = format!("{} update B={batch} T={}", w.name, prompt + new_tokens);
    let mut out = Vec::new();
    for (what, cin, cout) in layer(w) {
        let (fwd, dinp, dw) = if w.llama {
            (
                Shape::new(Layout::NT, rows, cout, cin),
                Shape::new(Layout::NN, rows, cin, cout),
                Shape::new(Layout::TN, cout, cin, rows),
            )
        } else {
            (
                Shape::new(Layout::NN, rows, cout, cin),
                Shape::new(Layout::NT, rows, cin, cout),
                Shape::new(Layout::TN, cin, cout, rows),
            )
        };
        for (part, shape) in [("forward", fwd), ("dinp", dinp), ("dweight", dw)] {
            out.push(Product {
                what: format!("{tag} {what} {part}"),
                shape,
            });
        }
    }
    for (part, shape) in [
        ("logits", Shape::new(Layout::NT, heads, w.vocab, w.c)),
        ("dinp", Shape::new(Layout::NN, heads, w.c, w.vocab)),
        ("dweight", Shape::new(Layout::TN, w.vocab, w.c, heads)),
    ] {
        out.push(Product {
            what: format!("{tag} head {part}"),
            shape,
        });
    }
    out
}

/// Every product of one decoding step of `rows` sequences: each layer's projections and the head.
pub fn decode(w: &Widths, rows: usize) -> Vec<Product> {
    let mut out: Vec<Product> = layer(w)
        .into_iter()
        .map(|(what, cin, cout)| Product {
            what: format!("{} decode {rows} rows {what}", w.name),
            shape: Shape::new(forward_layout(w), rows, cout, cin),
        })
        .collect();
    out.push(Product {
        what: format!("{} decode {rows} rows head", w.name),
        shape: Shape::new(Layout::NT, rows, w.vocab, w.c),
    });
    out
}

/// The paper's jobs at prompts of `prompts` tokens and decoding at `decode_rows` rows: GPT-2 small
/// and SmolLM2 at batch 50 with 2 new tokens, GPT-2 large at batch 10 with 10.
pub fn products(prompts: &[usize], decode_rows: &[usize]) -> Vec<Product> {
    let mut out = Vec::new();
    for &p in prompts {
        out.extend(update(&GPT2_SMALL, 50, p, 2));
        out.extend(update(&SMOLLM2, 50, p, 2));
        out.extend(update(&GPT2_LARGE, 10, p, 10));
    }
    for &rows in decode_rows {
        for w in [&GPT2_SMALL, &GPT2_LARGE, &SMOLLM2] {
            out.extend(decode(w, rows));
        }
    }
    out
}
