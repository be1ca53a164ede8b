//! Llama-family models on the CPU backend: forward with saved activations, backward into a
//! gradient `LlamaWeights`, and KV-cache decoding. A batch is left-padded: row b holds its tokens
//! in [start[b], T), rotary positions count from start[b], and logits are computed only at the
//! (row, position) pairs asked for. The interface matches GPT-2's (`cpu::gpt2::forward`,
//! `backward`, `cpu::decode::generate`), so the trainer can take either family.

pub use crate::cpu::decode::Generation;
use crate::cpu::decode::{distinct_prompts, sample_step, shared_positions};
pub use crate::cpu::gpt2::Batch;
use crate::cpu::ops::*;
use crate::cpu::shared::{
    KeptRows, SharedLayout, fan_out_prompt_kv, first_step_logits, gather_rows_backward,
    gather_rows_forward, kept_rows,
};
use crate::model::llama::{Llama, LlamaWeights};
use crate::rng::Rng;
use crate::sample::{SamplingParams, sample};
use crate::tensor::Tensor;
use anyhow::{Result, bail};

fn check_batch(batch: &Batch, vocab: usize) -> Result<()> {
    if batch.tokens.len() != batch.b * batch.t || batch.start.len() != batch.b {
        bail!(
            "batch of {} x {} needs {} tokens and {} starts, has {} and {}",
            batch.b,
            batch.t,
            batch.b * batch.t,
            batch.b,
            batch.tokens.len(),
            batch.start.len()
        );
    }
    if let Some(&s) = batch.start.iter().find(|&&s| s > batch.t) {
        bail!("start index {s} is past the sequence length {}", batch.t);
    }
    if let Some(&tok) = batch.tokens.iter().find(|&&x| x as usize >= vocab) {
        bail!("token id {tok} is outside the vocabulary of {vocab}");
    }
    Ok(())
}

/// Activations of one layer saved for backward. N = B*T rows.
struct LayerActs {
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
pub struct LlamaActivations {
    b: usize,
    t: usize,
    tokens: Vec<u32>,
    start: Vec<usize>,
    layers: Vec<LayerActs>,
    xl: Vec<f32>,          // (N, C) output of the last layer
    rstdf: Vec<f32>,       // (N)
    xf: Vec<f32>,          // (N, C) after the final norm
    pos: Vec<usize>,       // (N) rotary positions
    positions: Vec<usize>, // flat row index b T + t of each chosen pair
    /// For a record with shared prompt rows: the batch its rows make up, where attention runs.
    shared: Option<SharedLayout>,
}

impl LlamaActivations {
    /// The final hidden state (after the last norm, C wide) at (row, position), as GPT-2's
    /// activations give it: what the head multiplies, and what a value head reads.
    pub fn final_hidden(&self, row: usize, pos: usize) -> &[f32] {
        assert!(
            row < self.b && pos < self.t,
            "({row}, {pos}) is outside the last batch"
        );
        let c = self.xf.len() / (self.b * self.t);
        let r = row * self.t + pos;
        &self.xf[r * c..(r + 1) * c]
    }
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

    /// A cache whose first `len` positions are already filled: `k` and `v` are, per layer,
    /// (B, tmax, KV*D) with rotated keys; row b's first real index is `start[b]`.
    pub fn from_layers(
        model: &Llama,
        k: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
        tmax: usize,
        len: usize,
        start: Vec<usize>,
    ) -> Result<Self> {
        let kw = model.config.n_kv_heads() * model.config.head_dim();
        let l = model.config.num_hidden_layers;
        let want = start.len() * tmax * kw;
        if k.len() != l || v.len() != l || k.iter().chain(&v).any(|x| x.len() != want) {
            bail!(
                "a cache of {} rows and {tmax} positions needs {l} layers of {want} keys and values",
                start.len()
            );
        }
        if len > tmax || tmax > model.config.max_position_embeddings {
            bail!(
                "a cache of {tmax} positions with {len} filled does not fit the model's context of {}",
                model.config.max_position_embeddings
            );
        }
        Ok(KvCache {
            k,
            v,
            tmax,
            len,
            start,
        })
    }

    /// Keys and values of layer `l`, (B, tmax, KV*D) each.
    pub fn layer(&self, l: usize) -> (&[f32], &[f32]) {
        (&self.k[l], &self.v[l])
    }

    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.tmax
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Feeds `tq` tokens per row (tokens (B, tq)) through the cache and returns the logits (P, V) of
/// the new rows `heads` (index b * tq + i), in the order given.
pub fn extend(
    model: &Llama,
    tokens: &[u32],
    cache: &mut KvCache,
    tq: usize,
    heads: &[usize],
) -> Result<Vec<f32>> {
    let b = cache.start.len();
    if tokens.len() != b * tq || cache.len + tq > cache.tmax {
        bail!(
            "{} tokens do not make {tq} new positions of {b} rows with {} of {} filled",
            tokens.len(),
            cache.len,
            cache.tmax
        );
    }
    let vocab = model.config.vocab_size;
    if let Some(&tok) = tokens.iter().find(|&&x| x as usize >= vocab) {
        bail!("token id {tok} is outside the vocabulary of {vocab}");
    }
    if let Some(&h) = heads.iter().find(|&&h| h >= b * tq) {
        bail!("head row {h} is outside the {} new rows", b * tq);
    }
    Ok(run(model, tokens, cache, tq, heads, None, None).logits)
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
    mut rec: Option<(&mut LlamaActivations, &[usize])>,
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
            assert!(
                p0 == 0 && tq == tmax,
                "saved activations need a fresh cache of tq positions"
            );
            vec![0.0f32; b * h * tq * tq]
        } else {
            Vec::new()
        };
        let shape = AttentionShape {
            b,
            t: tq,
            n_head: h,
            n_kv_head: kv,
            head_dim: d,
        };
        if acts.is_some() {
            // A fresh cache of exactly tq positions holds k and v as (N, KV*D).
            let layout = QkvLayout::split(h, kv, d);
            attention_forward(&mut ao, &mut att, &q, &k, &v, &layout, &cache.start, shape);
        } else {
            let q_layout = QkvLayout::split(h, kv, d).q;
            attention_cached_forward(
                &mut ao,
                &q,
                q_layout,
                &cache.k[li],
                &cache.v[li],
                &cache.start,
                p0,
                tq,
                tmax,
                shape,
            );
        }
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
        if let Some((r, rows)) = rec.as_mut() {
            let a = &mut r.layers[li];
            for (dst, src) in [
                (&mut a.x, &x_in),
                (&mut a.rstd1, &rstd1),
                (&mut a.xn1, &xn1),
                (&mut a.q, &q),
                (&mut a.k, &k),
                (&mut a.v, &v),
                (&mut a.ao, &ao),
                (&mut a.x2, &x2),
                (&mut a.rstd2, &rstd2),
                (&mut a.xn2, &xn2),
                (&mut a.gate, &gate),
                (&mut a.up, &up),
                (&mut a.act, &act),
            ] {
                put_rows(dst, src, rows);
            }
        }
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
    if let Some((r, rows)) = rec {
        put_rows(&mut r.xl, &x, rows);
        for (&tok, &row) in tokens.iter().zip(rows) {
            r.tokens[row] = tok;
        }
    }
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

/// Copies a chunk's rows into record rows `rows` (one per chunk row).
fn put_rows(dst: &mut [f32], src: &[f32], rows: &[usize]) {
    let width = src.len() / rows.len();
    for (s, &r) in src.chunks_exact(width).zip(rows) {
        dst[r * width..(r + 1) * width].copy_from_slice(s);
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

/// Runs the model on `batch` and returns the logits (M, V) of the M chosen (row, position)
/// pairs, in the order given, with the activations `backward` needs.
pub fn forward(
    model: &Llama,
    batch: &Batch,
    positions: &[(usize, usize)],
) -> Result<(Tensor, LlamaActivations)> {
    check_batch(batch, model.config.vocab_size)?;
    let mut rows = Vec::with_capacity(positions.len());
    for &(r, t) in positions {
        if r >= batch.b || t >= batch.t {
            bail!(
                "logit position ({r}, {t}) is outside the batch of {} x {}",
                batch.b,
                batch.t
            );
        }
        rows.push(r * batch.t + t);
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
        &rows,
        Some(&mut layers),
        None,
    );
    let shape = [positions.len(), model.config.vocab_size];
    Ok((
        Tensor::from_vec(&shape, logits),
        LlamaActivations {
            b: batch.b,
            t: batch.t,
            tokens: batch.tokens.clone(),
            start: batch.start.clone(),
            layers,
            xl,
            rstdf,
            xf,
            pos,
            positions: rows,
            shared: None,
        },
    ))
}

/// Gradients of all parameters given dlogits (P, V) at the positions `forward` was asked for.
/// The tied head adds into `embed_tokens`.
pub fn backward(model: &Llama, acts: &mut LlamaActivations, dlogits: &[f32]) -> LlamaWeights {
    let mut g = LlamaWeights::zeros(&model.config);
    backward_into(model, acts, dlogits, &mut g);
    g
}

/// `backward`, adding into `g` (zero it first for a fresh step).
pub fn backward_into(
    model: &Llama,
    acts: &mut LlamaActivations,
    dlogits: &[f32],
    g: &mut LlamaWeights,
) {
    let cfg = &model.config;
    let w = &model.weights;
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let (qw, kw) = (h * d, kv * d);
    let (b, t) = (acts.b, acts.t);
    let n = b * t;
    // Rows after `nl` receive no gradient (`cpu::shared`), so the per-row work stops there.
    let nl = acts.shared.as_ref().map_or(n, |sh| sh.live);
    let vocab = cfg.vocab_size;
    assert_eq!(
        dlogits.len(),
        acts.positions.len() * vocab,
        "dlogits must be (M, V)"
    );
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
        nl,
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
            nl,
            f,
            c,
        );
        let mut dgate = vec![0.0f32; n * f];
        let mut dup = vec![0.0f32; n * f];
        swiglu_backward(&mut dgate, &mut dup, &dact, &a.gate, &a.up, nl, f);
        let mut dxn2 = vec![0.0f32; n * c];
        linear_backward(
            Some(&mut dxn2),
            &mut lg.gate_proj.data,
            &dgate,
            &a.xn2,
            &lw.gate_proj.data,
            nl,
            c,
            f,
        );
        linear_backward(
            Some(&mut dxn2),
            &mut lg.up_proj.data,
            &dup,
            &a.xn2,
            &lw.up_proj.data,
            nl,
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
            nl,
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
            nl,
            qw,
            c,
        );
        let mut dq = vec![0.0f32; n * qw];
        let mut dk = vec![0.0f32; n * kw];
        let mut dv = vec![0.0f32; n * kw];
        let shape = AttentionShape {
            b,
            t,
            n_head: h,
            n_kv_head: kv,
            head_dim: d,
        };
        match &acts.shared {
            None => attention_backward(
                QkvGrad::Split(&mut dq, &mut dk, &mut dv),
                &dao,
                &a.att,
                &a.q,
                &a.k,
                &a.v,
                &QkvLayout::split(h, kv, d),
                &acts.start,
                shape,
            ),
            Some(sh) => {
                // Attention runs on the batch the shared rows make up; each prompt row's own
                // output gradient enters once, and the gradients of its keys and values from
                // every continuation add up.
                let full = sh.b * sh.t;
                let (mut fq, mut fk, mut fv) = (
                    vec![0.0f32; full * qw],
                    vec![0.0f32; full * kw],
                    vec![0.0f32; full * kw],
                );
                let mut fdao = vec![0.0f32; full * qw];
                gather_rows_forward(&mut fq, &a.q, &sh.map, None, qw);
                gather_rows_forward(&mut fk, &a.k, &sh.map, None, kw);
                gather_rows_forward(&mut fv, &a.v, &sh.map, None, kw);
                gather_rows_forward(&mut fdao, &dao, &sh.map, Some(&sh.owner), qw);
                let (mut fdq, mut fdk, mut fdv) = (
                    vec![0.0f32; full * qw],
                    vec![0.0f32; full * kw],
                    vec![0.0f32; full * kw],
                );
                attention_backward(
                    QkvGrad::Split(&mut fdq, &mut fdk, &mut fdv),
                    &fdao,
                    &a.att,
                    &fq,
                    &fk,
                    &fv,
                    &QkvLayout::split(h, kv, d),
                    &sh.start,
                    AttentionShape {
                        b: sh.b,
                        t: sh.t,
                        ..shape
                    },
                );
                gather_rows_backward(&mut dq, &fdq, &sh.map, qw);
                gather_rows_backward(&mut dk, &fdk, &sh.map, kw);
                gather_rows_backward(&mut dv, &fdv, &sh.map, kw);
            }
        }
        let mut dq0 = vec![0.0f32; n * qw];
        let mut dk0 = vec![0.0f32; n * kw];
        rope_backward(&mut dq0, &dq, &acts.pos, &cos, &sin, nl, h, d);
        rope_backward(&mut dk0, &dk, &acts.pos, &cos, &sin, nl, kv, d);
        let mut dxn1 = vec![0.0f32; n * c];
        linear_backward(
            Some(&mut dxn1),
            &mut lg.q_proj.data,
            &dq0,
            &a.xn1,
            &lw.q_proj.data,
            nl,
            c,
            qw,
        );
        linear_backward(
            Some(&mut dxn1),
            &mut lg.k_proj.data,
            &dk0,
            &a.xn1,
            &lw.k_proj.data,
            nl,
            c,
            kw,
        );
        linear_backward(
            Some(&mut dxn1),
            &mut lg.v_proj.data,
            &dv,
            &a.xn1,
            &lw.v_proj.data,
            nl,
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
            nl,
            c,
        );
    }
    for (row, &tok) in dx.chunks_exact(c).zip(&acts.tokens[..nl]) {
        let e = &mut g.embed_tokens.data[tok as usize * c..][..c];
        for (a, &s) in e.iter_mut().zip(row) {
            *a += s;
        }
    }
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

/// What `generate_with` returns: per batch row, the new tokens (up to and including a stop
/// token) and the log-probability of each under softmax(logits).
#[derive(Clone, Debug, PartialEq)]
pub struct Choices {
    pub tokens: Vec<Vec<u32>>,
    pub logprobs: Vec<Vec<f32>>,
}

/// Samples a continuation of every prompt, all rows together, as `cpu::decode::generate` does for
/// GPT-2: a row stops after it samples `eos` (kept, with its log-probability) or after
/// `params.max_new_tokens` tokens; log-probabilities are under softmax(logits / temperature).
/// The same `rng` state gives the same tokens.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<Vec<Generation>> {
    if prompts.is_empty() || params.max_new_tokens == 0 {
        return Ok(vec![Generation::default(); prompts.len()]);
    }
    let batch = Batch::left_padded(prompts, eos)?;
    let mut lps: Vec<Vec<f32>> = vec![Vec::new(); prompts.len()];
    let out = generate_with(
        model,
        &batch,
        params.max_new_tokens,
        Some(eos),
        |r, logits| {
            let (tok, lp) = sample(logits, params, rng);
            lps[r].push(lp);
            tok
        },
    )?;
    Ok(out
        .tokens
        .into_iter()
        .zip(lps)
        .map(|(tokens, logprobs)| Generation { tokens, logprobs })
        .collect())
}

/// Decodes up to `max_new` tokens after each left-padded prompt through the KV cache. `pick`
/// chooses the next token of row r from its logits (V); a row stops after emitting `stop`.
pub fn generate_with(
    model: &Llama,
    prompts: &Batch,
    max_new: usize,
    stop: Option<u32>,
    mut pick: impl FnMut(usize, &[f32]) -> u32,
) -> Result<Choices> {
    let v = model.config.vocab_size;
    check_batch(prompts, v)?;
    if prompts.start.iter().any(|&s| s >= prompts.t) {
        bail!("every prompt needs at least one token");
    }
    let ctx = model.config.max_position_embeddings;
    if prompts.t + max_new > ctx {
        bail!(
            "a prompt of {} tokens with {max_new} new tokens exceeds the model's context of {ctx} positions",
            prompts.t
        );
    }
    let b = prompts.b;
    let mut out = Choices {
        tokens: vec![Vec::new(); b],
        logprobs: vec![Vec::new(); b],
    };
    if max_new == 0 {
        return Ok(out);
    }
    let mut cache = KvCache::new(model, b, prompts.t + max_new, prompts.start.clone());
    let last: Vec<usize> = (0..b).map(|bi| bi * prompts.t + prompts.t - 1).collect();
    let mut logits = run(
        model,
        &prompts.tokens,
        &mut cache,
        prompts.t,
        &last,
        None,
        None,
    )
    .logits;
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
        logits = run(model, &next, &mut cache, 1, &rows, None, None).logits;
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

impl LlamaActivations {
    /// Zeroed activations of record rows with rotary positions `pos` (N), filled by `run` as a
    /// decoder feeds its chunks, then completed by `finish_record` with the batch the rows make
    /// up (`cpu::shared`). Rows never fed keep token `pad` and zero activations; nothing
    /// downstream of a real token reads them.
    fn recording(model: &Llama, pos: Vec<usize>, pad: u32) -> Self {
        let cfg = &model.config;
        let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (qw, kw) = (cfg.num_attention_heads * d, cfg.n_kv_heads() * d);
        let n = pos.len();
        let layer = || LayerActs {
            x: vec![0.0; n * c],
            rstd1: vec![0.0; n],
            xn1: vec![0.0; n * c],
            q: vec![0.0; n * qw],
            k: vec![0.0; n * kw],
            v: vec![0.0; n * kw],
            att: Vec::new(),
            ao: vec![0.0; n * qw],
            x2: vec![0.0; n * c],
            rstd2: vec![0.0; n],
            xn2: vec![0.0; n * c],
            gate: vec![0.0; n * f],
            up: vec![0.0; n * f],
            act: vec![0.0; n * f],
        };
        // One row of N: every per-row operation sees the record's rows as one sequence.
        LlamaActivations {
            b: 1,
            t: n,
            tokens: vec![pad; n],
            pos,
            start: vec![0],
            layers: (0..cfg.num_hidden_layers).map(|_| layer()).collect(),
            xl: vec![0.0; n * c],
            rstdf: Vec::new(),
            xf: Vec::new(),
            positions: Vec::new(),
            shared: None,
        }
    }

    /// Completes recorded activations for `backward` with dlogits at record rows `rows`: every
    /// layer's attention probabilities over the batch the rows make up (cached decoding does not
    /// keep them) and the final norm of every row.
    fn finish_record(&mut self, model: &Llama, rows: Vec<usize>, layout: SharedLayout) {
        let cfg = &model.config;
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let (qw, kw) = (h * d, kv * d);
        let n = self.b * self.t;
        let (b, t) = (layout.b, layout.t);
        let shape = AttentionShape {
            b,
            t,
            n_head: h,
            n_kv_head: kv,
            head_dim: d,
        };
        let qkv_layout = QkvLayout::split(h, kv, d);
        let mut out = vec![0.0f32; b * t * qw];
        let mut q = vec![0.0f32; b * t * qw];
        let mut k = vec![0.0f32; b * t * kw];
        let mut v = vec![0.0f32; b * t * kw];
        for a in &mut self.layers {
            gather_rows_forward(&mut q, &a.q, &layout.map, None, qw);
            gather_rows_forward(&mut k, &a.k, &layout.map, None, kw);
            gather_rows_forward(&mut v, &a.v, &layout.map, None, kw);
            a.att = vec![0.0f32; b * h * t * t];
            attention_forward(
                &mut out,
                &mut a.att,
                &q,
                &k,
                &v,
                &qkv_layout,
                &layout.start,
                shape,
            );
        }
        self.rstdf = vec![0.0f32; n];
        self.xf = vec![0.0f32; n * c];
        rmsnorm_forward(
            &mut self.xf,
            &mut self.rstdf,
            &self.xl,
            &model.weights.norm.data,
            n,
            c,
            cfg.rms_norm_eps,
        );
        self.positions = rows;
        self.shared = Some(layout);
    }

    /// The final hidden state of record row `row`.
    fn final_hidden_row(&self, row: usize) -> &[f32] {
        let c = self.xf.len() / (self.b * self.t);
        &self.xf[row * c..(row + 1) * c]
    }
}

/// A sampled batch whose forward pass was kept: the continuations, the activations of every
/// position fed (each distinct prompt once, then one row per continuation and step, the last
/// sampled token included: `cpu::shared`), and the logits each token was sampled from.
pub struct LlamaRollout {
    pub generations: Vec<Generation>,
    acts: LlamaActivations,
    /// The distinct prompt of each row, and each distinct prompt's first real index.
    prompt_of: Vec<usize>,
    prompt_start: Vec<usize>,
    /// Padded prompt length P and steps S.
    p: usize,
    s: usize,
    /// (S, B, V): step s's logits of every row, before temperature.
    logits: Vec<f32>,
}

/// `generate`, keeping the forward pass for an update with the same weights, and running each
/// distinct prompt once. The same `rng` state gives the same tokens as `generate`, with
/// log-probabilities equal up to rounding. The last sampled token is fed too (without the
/// head), since the value head reads its hidden state.
pub fn generate_recorded(
    model: &Llama,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<LlamaRollout> {
    let s = params.max_new_tokens;
    if prompts.is_empty() || s == 0 {
        bail!("a recorded rollout needs at least one prompt and one new token");
    }
    let v = model.config.vocab_size;
    let batch = Batch::left_padded(prompts, eos)?;
    check_batch(&batch, v)?;
    let ctx = model.config.max_position_embeddings;
    if batch.t + s > ctx {
        bail!(
            "a prompt of {} tokens with {s} new tokens exceeds the model's context of {ctx} positions",
            batch.t
        );
    }
    let (distinct, prompt_of) = distinct_prompts(prompts);
    let ub = Batch::left_padded(&distinct, eos)?;
    let (u, p, b) = (ub.b, ub.t, prompts.len());
    let pos = shared_positions(&prompt_of, &ub.start, p, s);
    let mut rec = LlamaActivations::recording(model, pos, eos);

    // The distinct prompts, once each.
    let mut pre = KvCache::new(model, u, p, ub.start.clone());
    let last: Vec<usize> = (0..u).map(|i| i * p + p - 1).collect();
    let prompt_rows: Vec<usize> = (0..u * p).collect();
    let first = run(
        model,
        &ub.tokens,
        &mut pre,
        p,
        &last,
        None,
        Some((&mut rec, &prompt_rows)),
    )
    .logits;

    // Every row continues from a copy of its prompt's keys and values.
    let tmax = p + s;
    let kw = model.config.n_kv_heads() * model.config.head_dim();
    let (k, vv) = fan_out_prompt_kv(
        model.config.num_hidden_layers,
        |l| (&pre.k[l][..], &pre.v[l][..]),
        &prompt_of,
        p,
        tmax,
        kw,
    );
    let start: Vec<usize> = prompt_of.iter().map(|&ui| ub.start[ui]).collect();
    let mut cache = KvCache::from_layers(model, k, vv, tmax, p, start)?;

    let mut out = vec![Generation::default(); b];
    let mut logits = first_step_logits(&first, &prompt_of, v, s);
    let mut done = vec![false; b];
    let rows: Vec<usize> = (0..b).collect();
    for step in 0..s {
        let step_logits = &logits[step * b * v..(step + 1) * b * v];
        let next = sample_step(step_logits, v, &mut out, &mut done, params, eos, rng);
        let more = !(step + 1 == s || done.iter().all(|&x| x));
        let heads: &[usize] = if more { &rows[..] } else { &[] };
        let rec_rows: Vec<usize> = (0..b).map(|bi| u * p + step * b + bi).collect();
        let step_out = run(
            model,
            &next,
            &mut cache,
            1,
            heads,
            None,
            Some((&mut rec, &rec_rows)),
        );
        if !more {
            break;
        }
        logits.extend_from_slice(&step_out.logits);
    }
    Ok(LlamaRollout {
        generations: out,
        acts: rec,
        prompt_of,
        prompt_start: ub.start,
        p,
        s,
        logits,
    })
}

impl LlamaRollout {
    /// What the update's forward pass would give on the prompts followed by the first `kept[r]`
    /// tokens of each continuation: the logits (M, V) predicting those tokens (row by row), the
    /// final hidden state (B, C) of each row's last kept token (its last prompt token when none
    /// is kept), and the activations for `llama::backward` with dlogits in that order.
    pub fn finish(
        mut self,
        model: &Llama,
        kept: &[usize],
    ) -> Result<(Vec<f32>, Vec<f32>, LlamaActivations)> {
        let b = self.generations.len();
        let v = model.config.vocab_size;
        let layout = SharedLayout::new(&self.prompt_of, &self.prompt_start, self.p, self.s);
        let KeptRows { rows, logits, last } =
            kept_rows(&layout, &self.generations, &self.logits, self.p, kept, v)?;
        self.acts.finish_record(model, rows, layout);
        let mut hidden = Vec::with_capacity(b * model.config.hidden_size);
        for &row in &last {
            hidden.extend_from_slice(self.acts.final_hidden_row(row));
        }
        Ok((logits, hidden, self.acts))
    }
}
