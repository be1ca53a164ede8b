//! Llama-family models on the CPU backend: forward with saved activations, backward into a
//! gradient `LlamaWeights`, and KV-cache decoding. A batch is left-padded: row b holds its tokens
//! in [start[b], T), rotary positions count from start[b], and logits are computed only at the
//! (row, position) pairs asked for. The interface matches GPT-2's (`cpu::gpt2::forward`,
//! `backward`, `cpu::gpt2_decode::generate`), so the trainer can take either family.

use crate::batch::Batch;
use crate::cpu::kv::{Attend, KvCache, RowKv};
use crate::cpu::ops::*;
use crate::cpu::prefix::RecordPaths;
use crate::cpu::transposed::TransposedLlama;
use crate::model::llama::{Llama, LlamaWeights};
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams, sample};
use crate::tensor::Tensor;
use anyhow::{Result, bail};

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
    /// For a record of rows that share prefixes (`cpu::prefix`): what each row attends to.
    shared: Option<RecordPaths>,
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

/// The rotary tables a model needs for `n` positions.
fn tables(model: &Llama, n: usize) -> (Vec<f32>, Vec<f32>) {
    rope_table(n.max(1), model.config.head_dim(), model.config.rope_theta)
}

/// out (N, O) = inp (N, I) @ w^T, from the stored w (O, I) or, when given, its transpose (I, O).
fn project(
    out: &mut [f32],
    inp: &[f32],
    w: &Tensor,
    wt: Option<&Vec<f32>>,
    n: usize,
    i: usize,
    o: usize,
) {
    match wt {
        Some(wt) => matmul_forward(out, inp, wt, None, n, i, o),
        None => linear_forward(out, inp, &w.data, n, i, o),
    }
}

/// Runs a chunk of N new rows, `tokens` at rotary positions `pos`, through the model, their
/// attention through `attend` (which keeps their keys and values), and returns the logits (P, V)
/// of rows `heads` with the final activations. With `acts`, saves what backward needs of a
/// fresh batch (`Attend::Batch`); with `rec`, copies it into record rows `rec.1..`
/// (`LlamaActivations::recording`). With `wt`, the projections read that transposed copy of
/// the weights (`cpu::transposed`).
#[allow(clippy::too_many_arguments)]
fn run(
    model: &Llama,
    wt: Option<&TransposedLlama>,
    tokens: &[u32],
    pos: &[usize],
    attend: &mut Attend,
    heads: &[usize],
    mut acts: Option<&mut Vec<LayerActs>>,
    mut rec: Option<(&mut LlamaActivations, usize)>,
) -> RunOut {
    let cfg = &model.config;
    let w = &model.weights;
    let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    let (qw, kw) = (h * d, kv * d);
    let n = tokens.len();
    assert!(
        pos.len() == n && attend.rows() == n,
        "a chunk of {n} tokens needs as many positions and attention rows"
    );
    let (cos, sin) = tables(model, pos.iter().max().map_or(1, |&p| p + 1));
    let eps = cfg.rms_norm_eps;
    let heads_shape = Heads {
        n_head: h,
        n_kv_head: kv,
        head_dim: d,
    };
    let layout = QkvLayout::split(h, kv, d);

    let mut x = vec![0.0f32; n * c];
    for (row, &tok) in x.chunks_exact_mut(c).zip(tokens) {
        row.copy_from_slice(&w.embed_tokens.data[tok as usize * c..][..c]);
    }
    let mut tmp_q = vec![0.0f32; n * qw];
    let mut tmp_k = vec![0.0f32; n * kw];
    // This chunk's projections, from the layer's transposed copy when there is one.
    let proj = |out: &mut [f32], inp: &[f32], w: &Tensor, t: Option<&Vec<f32>>, i, o| {
        project(out, inp, w, t, n, i, o)
    };
    for (li, lw) in w.layers.iter().enumerate() {
        let lt = wt.map(|t| &t.layers[li]);
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
        proj(&mut tmp_q, &xn1, &lw.q_proj, lt.map(|l| &l.q_proj), c, qw);
        proj(&mut tmp_k, &xn1, &lw.k_proj, lt.map(|l| &l.k_proj), c, kw);
        proj(&mut v, &xn1, &lw.v_proj, lt.map(|l| &l.v_proj), c, kw);
        rope_forward(&mut q, &tmp_q, pos, &cos, &sin, n, h, d);
        rope_forward(&mut k, &tmp_k, pos, &cos, &sin, n, kv, d);
        let mut ao = vec![0.0f32; n * qw];
        let att = attend.attend(li, &mut ao, &q, &k, &v, &layout, heads_shape);
        let mut x2 = vec![0.0f32; n * c];
        proj(&mut x2, &ao, &lw.o_proj, lt.map(|l| &l.o_proj), qw, c);
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
        proj(
            &mut gate,
            &xn2,
            &lw.gate_proj,
            lt.map(|l| &l.gate_proj),
            c,
            f,
        );
        proj(&mut up, &xn2, &lw.up_proj, lt.map(|l| &l.up_proj), c, f);
        swiglu_forward(&mut act, &gate, &up, n, f);
        let mut x3 = vec![0.0f32; n * c];
        proj(&mut x3, &act, &lw.down_proj, lt.map(|l| &l.down_proj), f, c);
        for (a, &r) in x3.iter_mut().zip(&x2) {
            *a += r;
        }
        let x_in = std::mem::replace(&mut x, x3);
        if let Some((r, at)) = rec.as_mut() {
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
                put_rows(dst, src, *at, n);
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
    attend.finish();
    if let Some((r, at)) = rec {
        put_rows(&mut r.xl, &x, at, n);
        r.tokens[at..at + n].copy_from_slice(tokens);
    }
    let mut rstdf = vec![0.0f32; n];
    let mut xf = vec![0.0f32; n * c];
    rmsnorm_forward(&mut xf, &mut rstdf, &x, &w.norm.data, n, c, eps);
    let logits = head_forward(w, wt, &xf, heads, c, cfg.vocab_size);
    RunOut {
        logits,
        xl: x,
        rstdf,
        xf,
        pos: pos.to_vec(),
    }
}

/// Copies a chunk's `rows` rows into record rows `at..`.
fn put_rows(dst: &mut [f32], src: &[f32], at: usize, rows: usize) {
    let width = src.len() / rows;
    dst[at * width..(at + rows) * width].copy_from_slice(src);
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
    wt: Option<&TransposedLlama>,
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
    project(
        &mut logits,
        &sel,
        w.head(),
        wt.map(|t| &t.head),
        p,
        c,
        vocab,
    );
    logits
}

/// Runs the model on `batch` and returns the logits (M, V) of the M chosen (row, position)
/// pairs, in the order given, with the activations `backward` needs.
pub fn forward(
    model: &Llama,
    batch: &Batch,
    positions: &[(usize, usize)],
) -> Result<(Tensor, LlamaActivations)> {
    batch.check(
        model.config.vocab_size,
        model.config.max_position_embeddings,
    )?;
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
    let mut attend = Attend::Batch {
        start: &batch.start,
        t: batch.t,
    };
    let pos = attend.positions().expect("a batch knows its positions");
    let mut layers = Vec::with_capacity(model.config.num_hidden_layers);
    let RunOut {
        logits,
        xl,
        rstdf,
        xf,
        pos,
    } = run(
        model,
        None,
        &batch.tokens,
        &pos,
        &mut attend,
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
    // Rows after `nl` receive no gradient (`cpu::prefix::RecordPaths`), so the per-row work stops there.
    let nl = acts.shared.as_ref().map_or(n, |rec| rec.live);
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
            // Every row attends along its path; a shared row's key and value gradients add up
            // over every path through it.
            Some(rec) => path_attention_backward(
                QkvGrad::Split(&mut dq, &mut dk, &mut dv),
                &dao,
                &a.att,
                &a.q,
                &a.k,
                &a.v,
                &QkvLayout::split(h, kv, d),
                rec.live_paths(),
                &rec.uses,
                Heads {
                    n_head: h,
                    n_kv_head: kv,
                    head_dim: d,
                },
            ),
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

/// Samples a continuation of every prompt, all rows together, as `cpu::gpt2_decode::generate` does for
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

/// `run` on the next `tq` positions of every row of a cache (tokens (B, tq)): the logits (P, V) of
/// the new rows `heads` (index b * tq + i).
fn run_cached(
    model: &Llama,
    tokens: &[u32],
    cache: &mut KvCache,
    tq: usize,
    heads: &[usize],
) -> Vec<f32> {
    let pos = cache.positions(tq);
    let mut attend = Attend::Cache { cache, tq };
    run(model, None, tokens, &pos, &mut attend, heads, None, None).logits
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
    prompts.check(v, model.config.max_position_embeddings)?;
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
    let mut cache = KvCache::new(
        model.config.num_hidden_layers,
        model.config.n_kv_heads() * model.config.head_dim(),
        prompts.t + max_new,
        prompts.start.clone(),
    );
    let last: Vec<usize> = (0..b).map(|bi| bi * prompts.t + prompts.t - 1).collect();
    let mut logits = run_cached(model, &prompts.tokens, &mut cache, prompts.t, &last);
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
        logits = run_cached(model, &next, &mut cache, 1, &rows);
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
    /// Zeroed activations of record rows with rotary positions `pos` (N), to be filled chunk by
    /// chunk by `rows_forward`, then completed by `finish_record` with the paths the rows attend
    /// to (`cpu::prefix`). Tokens not yet fed are `pad`.
    pub(crate) fn recording(model: &Llama, pos: Vec<usize>, pad: u32) -> Self {
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
    /// layer's attention probabilities along the rows' paths (decoding does not keep them), for
    /// the rows that can receive a gradient, and the final norm of every row.
    pub(crate) fn finish_record(&mut self, model: &Llama, rows: Vec<usize>, record: RecordPaths) {
        let cfg = &model.config;
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let n = self.b * self.t;
        let heads = Heads {
            n_head: h,
            n_kv_head: kv,
            head_dim: d,
        };
        let layout = QkvLayout::split(h, kv, d);
        let live = record.live_paths();
        let mut out = vec![0.0f32; live.len() * h * d];
        for a in &mut self.layers {
            a.att = vec![0.0f32; live.att_len(h)];
            path_attention_forward(
                &mut out,
                Some(&mut a.att),
                &a.q,
                &a.k,
                &a.v,
                &layout,
                live,
                heads,
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
        self.shared = Some(record);
    }

    /// The final hidden state of record row `row`.
    pub(crate) fn final_hidden_row(&self, row: usize) -> &[f32] {
        let c = self.xf.len() / (self.b * self.t);
        &self.xf[row * c..(row + 1) * c]
    }
}

/// Runs new rows of a prefix store (`cpu::prefix`), `tokens` at positions `pos`, row i attending
/// to the rows of `paths.keys(i)`, and returns the final hidden states (after the last norm) of
/// rows `heads`, (M, C). With `rec`, the rows' activations are copied into the record at the
/// store's row numbers. With `wt`, the projections read that transposed copy of the weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_forward(
    model: &Llama,
    wt: Option<&TransposedLlama>,
    kv: &mut RowKv,
    tokens: &[u32],
    pos: &[usize],
    paths: PathsRef,
    heads: &[usize],
    rec: Option<&mut LlamaActivations>,
) -> Vec<f32> {
    let at = kv.rows();
    let mut attend = Attend::Rows { kv, paths };
    let out = run(
        model,
        wt,
        tokens,
        pos,
        &mut attend,
        &[],
        None,
        rec.map(|r| (r, at)),
    );
    let c = model.config.hidden_size;
    let mut hidden = Vec::with_capacity(heads.len() * c);
    for &r in heads {
        hidden.extend_from_slice(&out.xf[r * c..(r + 1) * c]);
    }
    hidden
}

/// logits (M, V) = hidden (M, C) @ head^T
pub(crate) fn head_logits(model: &Llama, wt: Option<&TransposedLlama>, hidden: &[f32]) -> Vec<f32> {
    let c = model.config.hidden_size;
    let rows: Vec<usize> = (0..hidden.len() / c).collect();
    head_forward(
        &model.weights,
        wt,
        hidden,
        &rows,
        c,
        model.config.vocab_size,
    )
}
