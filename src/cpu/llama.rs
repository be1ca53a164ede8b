//! Llama-family models on the CPU backend: forward with saved activations, backward into a
//! gradient `LlamaWeights`, and KV-cache decoding. A batch is left-padded: row b holds its tokens
//! in [start[b], T), rotary positions count from start[b], and logits are computed only at the
//! rows asked for (index b * T + t).

use crate::cpu::ops::*;
use crate::model::llama::{Llama, LlamaWeights};
use anyhow::{Result, bail};

/// Token ids (B*T), left-padded; `start[b]` is the first real token of row b.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub b: usize,
    pub t: usize,
    pub start: Vec<usize>,
}

impl Batch {
    /// Left-pads sequences of different lengths with `pad` to the longest.
    pub fn left_padded(seqs: &[Vec<u32>], pad: u32) -> Self {
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(seqs.len() * t);
        let mut start = Vec::with_capacity(seqs.len());
        for s in seqs {
            start.push(t - s.len());
            tokens.extend(std::iter::repeat_n(pad, t - s.len()));
            tokens.extend(s);
        }
        Batch {
            tokens,
            b: seqs.len(),
            t,
            start,
        }
    }

    fn check(&self, vocab: usize) -> Result<()> {
        if self.tokens.len() != self.b * self.t || self.start.len() != self.b {
            bail!(
                "batch of {} x {} needs {} tokens and {} starts, has {} and {}",
                self.b,
                self.t,
                self.b * self.t,
                self.b,
                self.tokens.len(),
                self.start.len()
            );
        }
        if let Some(&s) = self.start.iter().find(|&&s| s > self.t) {
            bail!("start index {s} is past the sequence length {}", self.t);
        }
        if let Some(&tok) = self.tokens.iter().find(|&&x| x as usize >= vocab) {
            bail!("token id {tok} is outside the vocabulary of {vocab}");
        }
        Ok(())
    }
}

/// Activations of one layer saved for backward. N = B*T rows.
pub struct LayerActs {
    x: Vec<f32>,     // (N, C) residual stream entering the layer
    rstd1: Vec<f32>, // (N)
    xn1: Vec<f32>,   // (N, C)
    q: Vec<f32>,     // (N, H*D) after rotation
    k: Vec<f32>,     // (N, KV*D) after rotation
    v: Vec<f32>,     // (N, KV*D)
    att: Vec<f32>,   // (B, H, T, T)
    ao: Vec<f32>,    // (N, H*D) attention output before o_proj
    x2: Vec<f32>,    // (N, C) residual after attention
    rstd2: Vec<f32>, // (N)
    xn2: Vec<f32>,   // (N, C)
    gate: Vec<f32>,  // (N, F)
    up: Vec<f32>,    // (N, F)
    act: Vec<f32>,   // (N, F)
}

/// Everything backward needs from a forward pass.
pub struct Acts {
    layers: Vec<LayerActs>,
    xl: Vec<f32>,    // (N, C) output of the last layer
    rstdf: Vec<f32>, // (N)
    xf: Vec<f32>,    // (N, C) after the final norm
    pos: Vec<usize>, // (N) rotary positions
    positions: Vec<usize>,
}

/// Rotary positions of rows p0..p0+tq of each batch row: distance from its first real token.
fn rotary_positions(start: &[usize], p0: usize, tq: usize) -> Vec<usize> {
    let mut pos = Vec::with_capacity(start.len() * tq);
    for &st in start {
        for i in 0..tq {
            pos.push((p0 + i).saturating_sub(st));
        }
    }
    pos
}

/// Per-layer K and V of earlier positions, (B, Tmax, KV*D) each.
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    tmax: usize,
    len: usize,
    start: Vec<usize>,
}

impl KvCache {
    pub fn new(model: &Llama, b: usize, tmax: usize, start: Vec<usize>) -> Self {
        let kw = model.config.n_kv_heads() * model.config.head_dim();
        let l = model.config.num_hidden_layers;
        KvCache {
            k: (0..l).map(|_| vec![0.0; b * tmax * kw]).collect(),
            v: (0..l).map(|_| vec![0.0; b * tmax * kw]).collect(),
            tmax,
            len: 0,
            start,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The rotary tables a model needs for `n` positions.
fn tables(model: &Llama, n: usize) -> (Vec<f32>, Vec<f32>) {
    rope_table(n.max(1), model.config.head_dim(), model.config.rope_theta)
}

/// Runs `tq` new tokens per row (B*tq, positions cache.len..) through the model, appending their
/// keys and values to the cache, and returns logits (P, V) at the new-token rows `positions`
/// (index b * tq + i). With `acts`, saves what backward needs (only valid when the cache was empty
/// and holds exactly tq positions).
fn run(
    model: &Llama,
    tokens: &[u32],
    cache: &mut KvCache,
    tq: usize,
    positions: &[usize],
    mut acts: Option<&mut Vec<LayerActs>>,
) -> RunOut {
    let cfg = &model.config;
    let w = &model.weights;
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let (qw, kw) = (h * d, kv * d);
    let b = cache.start.len();
    let n = b * tq;
    let p0 = cache.len;
    let tmax = cache.tmax;
    let pos = rotary_positions(&cache.start, p0, tq);
    let (cos, sin) = tables(model, tmax);
    let eps = cfg.rms_norm_eps;

    let mut x = vec![0.0f32; n * c];
    for (row, &tok) in x.chunks_exact_mut(c).zip(tokens) {
        row.copy_from_slice(&w.embed_tokens.data[tok as usize * c..][..c]);
    }
    let mut tmp_q = vec![0.0f32; n * qw];
    let mut tmp_k = vec![0.0f32; n * kw];
    for (li, lw) in w.layers.iter().enumerate() {
        let mut rstd1 = vec![0.0f32; n];
        let mut xn1 = vec![0.0f32; n * c];
        rmsnorm_forward(
            &mut xn1,
            &mut rstd1,
            &x,
            &lw.input_layernorm.data,
            n,
            c,
            eps,
        );
        let mut q = vec![0.0f32; n * qw];
        let mut k = vec![0.0f32; n * kw];
        let mut v = vec![0.0f32; n * kw];
        linear_forward(&mut tmp_q, &xn1, &lw.q_proj.data, n, c, qw);
        linear_forward(&mut tmp_k, &xn1, &lw.k_proj.data, n, c, kw);
        linear_forward(&mut v, &xn1, &lw.v_proj.data, n, c, kw);
        rope_forward(&mut q, &tmp_q, &pos, &cos, &sin, n, h, d);
        rope_forward(&mut k, &tmp_k, &pos, &cos, &sin, n, kv, d);
        for bi in 0..b {
            let dst = (bi * tmax + p0) * kw;
            cache.k[li][dst..dst + tq * kw].copy_from_slice(&k[bi * tq * kw..(bi + 1) * tq * kw]);
            cache.v[li][dst..dst + tq * kw].copy_from_slice(&v[bi * tq * kw..(bi + 1) * tq * kw]);
        }
        let mut ao = vec![0.0f32; n * qw];
        let mut att = if acts.is_some() {
            vec![0.0f32; b * h * tq * tmax]
        } else {
            Vec::new()
        };
        gqa_attention_cached_forward(
            &mut ao,
            acts.is_some().then_some(&mut att[..]),
            &q,
            &cache.k[li],
            &cache.v[li],
            &cache.start,
            p0,
            tq,
            tmax,
            b,
            h,
            kv,
            d,
        );
        let mut x2 = vec![0.0f32; n * c];
        linear_forward(&mut x2, &ao, &lw.o_proj.data, n, qw, c);
        for (a, &r) in x2.iter_mut().zip(&x) {
            *a += r;
        }
        let mut rstd2 = vec![0.0f32; n];
        let mut xn2 = vec![0.0f32; n * c];
        rmsnorm_forward(
            &mut xn2,
            &mut rstd2,
            &x2,
            &lw.post_attention_layernorm.data,
            n,
            c,
            eps,
        );
        let mut gate = vec![0.0f32; n * f];
        let mut up = vec![0.0f32; n * f];
        let mut act = vec![0.0f32; n * f];
        linear_forward(&mut gate, &xn2, &lw.gate_proj.data, n, c, f);
        linear_forward(&mut up, &xn2, &lw.up_proj.data, n, c, f);
        swiglu_forward(&mut act, &gate, &up, n, f);
        let mut x3 = vec![0.0f32; n * c];
        linear_forward(&mut x3, &act, &lw.down_proj.data, n, f, c);
        for (a, &r) in x3.iter_mut().zip(&x2) {
            *a += r;
        }
        let x_in = std::mem::replace(&mut x, x3);
        if let Some(acts) = acts.as_deref_mut() {
            acts.push(LayerActs {
                x: x_in,
                rstd1,
                xn1,
                q,
                k,
                v,
                att,
                ao,
                x2,
                rstd2,
                xn2,
                gate,
                up,
                act,
            });
        }
    }
    cache.len += tq;
    let mut rstdf = vec![0.0f32; n];
    let mut xf = vec![0.0f32; n * c];
    rmsnorm_forward(&mut xf, &mut rstdf, &x, &w.norm.data, n, c, eps);
    let logits = head_forward(w, &xf, positions, c, cfg.vocab_size);
    RunOut {
        logits,
        xl: x,
        rstdf,
        xf,
        pos,
    }
}

/// What `run` returns: the logits, and the final activations that backward needs.
struct RunOut {
    logits: Vec<f32>,
    xl: Vec<f32>,
    rstdf: Vec<f32>,
    xf: Vec<f32>,
    pos: Vec<usize>,
}

/// logits (P, V) = xf[positions] @ head^T
fn head_forward(
    w: &LlamaWeights,
    xf: &[f32],
    positions: &[usize],
    c: usize,
    vocab: usize,
) -> Vec<f32> {
    let p = positions.len();
    let mut sel = vec![0.0f32; p * c];
    for (dst, &r) in sel.chunks_exact_mut(c).zip(positions) {
        dst.copy_from_slice(&xf[r * c..(r + 1) * c]);
    }
    let mut logits = vec![0.0f32; p * vocab];
    linear_forward(&mut logits, &sel, &w.head().data, p, c, vocab);
    logits
}

/// Full forward of a batch; returns logits (P, V) at `positions` (rows b * T + t) and the
/// activations for `backward`.
pub fn forward(model: &Llama, batch: &Batch, positions: &[usize]) -> Result<(Vec<f32>, Acts)> {
    batch.check(model.config.vocab_size)?;
    if let Some(&p) = positions.iter().find(|&&p| p >= batch.b * batch.t) {
        bail!(
            "logit position {p} is outside the batch's {} rows",
            batch.b * batch.t
        );
    }
    let mut cache = KvCache::new(model, batch.b, batch.t, batch.start.clone());
    let mut layers = Vec::with_capacity(model.config.num_hidden_layers);
    let RunOut {
        logits,
        xl,
        rstdf,
        xf,
        pos,
    } = run(
        model,
        &batch.tokens,
        &mut cache,
        batch.t,
        positions,
        Some(&mut layers),
    );
    Ok((
        logits,
        Acts {
            layers,
            xl,
            rstdf,
            xf,
            pos,
            positions: positions.to_vec(),
        },
    ))
}

/// Gradients of all parameters given dlogits (P, V) at the positions `forward` was asked for.
pub fn backward(model: &Llama, batch: &Batch, acts: &Acts, dlogits: &[f32]) -> LlamaWeights {
    let cfg = &model.config;
    let w = &model.weights;
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let (qw, kw) = (h * d, kv * d);
    let (b, t) = (batch.b, batch.t);
    let n = b * t;
    let vocab = cfg.vocab_size;
    let mut g = LlamaWeights::zeros(cfg);
    let (cos, sin) = tables(model, t);

    // Head: only the selected rows receive gradient.
    let p = acts.positions.len();
    let mut sel = vec![0.0f32; p * c];
    for (dst, &r) in sel.chunks_exact_mut(c).zip(&acts.positions) {
        dst.copy_from_slice(&acts.xf[r * c..(r + 1) * c]);
    }
    let mut dsel = vec![0.0f32; p * c];
    {
        let dhead = match &mut g.lm_head {
            Some(hd) => &mut hd.data,
            None => &mut g.embed_tokens.data,
        };
        linear_backward(
            Some(&mut dsel),
            dhead,
            dlogits,
            &sel,
            &w.head().data,
            p,
            c,
            vocab,
        );
    }
    let mut dxf = vec![0.0f32; n * c];
    for (src, &r) in dsel.chunks_exact(c).zip(&acts.positions) {
        for (a, &s) in dxf[r * c..(r + 1) * c].iter_mut().zip(src) {
            *a += s;
        }
    }
    let mut dx = vec![0.0f32; n * c];
    rmsnorm_backward(
        &mut dx,
        &mut g.norm.data,
        &dxf,
        &acts.xl,
        &w.norm.data,
        &acts.rstdf,
        n,
        c,
    );

    for (li, (lw, a)) in w.layers.iter().zip(&acts.layers).enumerate().rev() {
        let lg = &mut g.layers[li];
        // MLP branch; dx is also the gradient of x2 through the residual.
        let mut dact = vec![0.0f32; n * f];
        linear_backward(
            Some(&mut dact),
            &mut lg.down_proj.data,
            &dx,
            &a.act,
            &lw.down_proj.data,
            n,
            f,
            c,
        );
        let mut dgate = vec![0.0f32; n * f];
        let mut dup = vec![0.0f32; n * f];
        swiglu_backward(&mut dgate, &mut dup, &dact, &a.gate, &a.up, n, f);
        let mut dxn2 = vec![0.0f32; n * c];
        linear_backward(
            Some(&mut dxn2),
            &mut lg.gate_proj.data,
            &dgate,
            &a.xn2,
            &lw.gate_proj.data,
            n,
            c,
            f,
        );
        linear_backward(
            Some(&mut dxn2),
            &mut lg.up_proj.data,
            &dup,
            &a.xn2,
            &lw.up_proj.data,
            n,
            c,
            f,
        );
        rmsnorm_backward(
            &mut dx,
            &mut lg.post_attention_layernorm.data,
            &dxn2,
            &a.x2,
            &lw.post_attention_layernorm.data,
            &a.rstd2,
            n,
            c,
        );
        // Attention branch.
        let mut dao = vec![0.0f32; n * qw];
        linear_backward(
            Some(&mut dao),
            &mut lg.o_proj.data,
            &dx,
            &a.ao,
            &lw.o_proj.data,
            n,
            qw,
            c,
        );
        let mut dq = vec![0.0f32; n * qw];
        let mut dk = vec![0.0f32; n * kw];
        let mut dv = vec![0.0f32; n * kw];
        gqa_attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &dao,
            &a.att,
            &a.q,
            &a.k,
            &a.v,
            &batch.start,
            b,
            t,
            h,
            kv,
            d,
        );
        let mut dq0 = vec![0.0f32; n * qw];
        let mut dk0 = vec![0.0f32; n * kw];
        rope_backward(&mut dq0, &dq, &acts.pos, &cos, &sin, n, h, d);
        rope_backward(&mut dk0, &dk, &acts.pos, &cos, &sin, n, kv, d);
        let mut dxn1 = vec![0.0f32; n * c];
        linear_backward(
            Some(&mut dxn1),
            &mut lg.q_proj.data,
            &dq0,
            &a.xn1,
            &lw.q_proj.data,
            n,
            c,
            qw,
        );
        linear_backward(
            Some(&mut dxn1),
            &mut lg.k_proj.data,
            &dk0,
            &a.xn1,
            &lw.k_proj.data,
            n,
            c,
            kw,
        );
        linear_backward(
            Some(&mut dxn1),
            &mut lg.v_proj.data,
            &dv,
            &a.xn1,
            &lw.v_proj.data,
            n,
            c,
            kw,
        );
        rmsnorm_backward(
            &mut dx,
            &mut lg.input_layernorm.data,
            &dxn1,
            &a.x,
            &lw.input_layernorm.data,
            &a.rstd1,
            n,
            c,
        );
    }
    for (row, &tok) in dx.chunks_exact(c).zip(&batch.tokens) {
        let e = &mut g.embed_tokens.data[tok as usize * c..][..c];
        for (a, &s) in e.iter_mut().zip(row) {
            *a += s;
        }
    }
    g
}

/// Mean next-token cross-entropy over the rows that predict a real token: row (b, t) with
/// start[b] <= t < T - 1 predicts token (b, t + 1). Returns (loss, its gradient per parameter).
pub fn next_token_loss_and_grad(model: &Llama, batch: &Batch) -> Result<(f32, LlamaWeights)> {
    let (b, t, v) = (batch.b, batch.t, model.config.vocab_size);
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for bi in 0..b {
        for ti in batch.start[bi]..t.saturating_sub(1) {
            positions.push(bi * t + ti);
            targets.push(batch.tokens[bi * t + ti + 1] as usize);
        }
    }
    if positions.is_empty() {
        bail!("no row of the batch has two real tokens to predict from");
    }
    let (mut logits, acts) = forward(model, batch, &positions)?;
    let mut loss = 0.0f64;
    let scale = 1.0 / positions.len() as f32;
    for (row, &tg) in logits.chunks_exact_mut(v).zip(&targets) {
        let lse = log_sum_exp(row);
        loss += (lse - row[tg]) as f64;
        // d loss / d logits = (softmax - onehot) / count
        for x in row.iter_mut() {
            *x = (*x - lse).exp() * scale;
        }
        row[tg] -= scale;
    }
    let grads = backward(model, batch, &acts, &logits);
    Ok(((loss / positions.len() as f64) as f32, grads))
}

fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

/// Log-softmax of one row of logits.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(row);
    row.iter().map(|&x| x - lse).collect()
}

/// What `generate` returns per batch row: the new tokens (up to and including a stop token) and
/// the log-probability of each under the model's unmodified distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<Vec<u32>>,
    pub logprobs: Vec<Vec<f32>>,
}

/// Decodes up to `max_new` tokens after each left-padded prompt through the KV cache. `pick`
/// chooses the next token of row b from its logits (V); a row stops after emitting `stop`.
pub fn generate(
    model: &Llama,
    prompts: &Batch,
    max_new: usize,
    stop: Option<u32>,
    mut pick: impl FnMut(usize, &[f32]) -> u32,
) -> Result<Generation> {
    let v = model.config.vocab_size;
    prompts.check(v)?;
    if prompts.start.iter().any(|&s| s >= prompts.t) {
        bail!("every prompt needs at least one token");
    }
    let b = prompts.b;
    let mut cache = KvCache::new(model, b, prompts.t + max_new, prompts.start.clone());
    let last: Vec<usize> = (0..b).map(|bi| bi * prompts.t + prompts.t - 1).collect();
    let mut logits = run(model, &prompts.tokens, &mut cache, prompts.t, &last, None).logits;
    let mut out = Generation {
        tokens: vec![Vec::new(); b],
        logprobs: vec![Vec::new(); b],
    };
    let mut done = vec![false; b];
    let filler = stop.unwrap_or(0);
    for step in 0..max_new {
        let mut next = vec![filler; b];
        for bi in 0..b {
            if done[bi] {
                continue;
            }
            let row = &logits[bi * v..(bi + 1) * v];
            let tok = pick(bi, row);
            if tok as usize >= v {
                bail!("picked token {tok} is outside the vocabulary of {v}");
            }
            out.tokens[bi].push(tok);
            out.logprobs[bi].push(row[tok as usize] - log_sum_exp(row));
            next[bi] = tok;
            done[bi] = Some(tok) == stop;
        }
        if step + 1 == max_new || done.iter().all(|&x| x) {
            break;
        }
        let rows: Vec<usize> = (0..b).collect();
        logits = run(model, &next, &mut cache, 1, &rows, None).logits;
    }
    Ok(out)
}

/// Index of the largest logit (the first on ties): greedy decoding.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}
