//! Batched decoding with a key/value cache. All prompts are prefilled at once, left padded (see
//! `cpu::gpt2`), then every step feeds one token per row. A row that has produced end-of-text
//! stops: from then on it is fed end-of-text as padding and its outputs are ignored.

use crate::cpu::gpt2::{Batch, Gpt2Activations, Slot};
use crate::cpu::ops::*;
use crate::cpu::shared::{KeptRows, SharedLayout, fan_out_prompt_kv, first_step_logits, kept_rows};
use crate::model::gpt2::{Gpt2, Gpt2Config};
use crate::rng::Rng;
use crate::sample::{SamplingParams, sample};
use anyhow::{Result, bail};

/// One sampled continuation: its tokens (ending with end-of-text if it stopped there) and each
/// token's log-probability under softmax(logits / temperature), before top-k/top-p filtering.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
}

/// Prompts a GPT-2 decoder can take: each fits the context with `max_new_tokens` more, and every
/// id (the padding one too) is inside the vocabulary. Shared by the CPU and CUDA decoders.
pub fn check_prompts(
    cfg: &Gpt2Config,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    pad: u32,
) -> Result<()> {
    for (r, p) in prompts.iter().enumerate() {
        if p.len() + max_new_tokens > cfg.n_positions {
            bail!(
                "prompt {r} has {} tokens; with {max_new_tokens} new tokens that exceeds the model's context of {} positions",
                p.len(),
                cfg.n_positions
            );
        }
        if let Some(&bad) = p.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            bail!(
                "prompt {r} holds token id {bad}, outside the vocabulary of {}",
                cfg.vocab_size
            );
        }
    }
    if pad as usize >= cfg.vocab_size {
        bail!(
            "padding token {pad} is outside the vocabulary of {}",
            cfg.vocab_size
        );
    }
    Ok(())
}

/// Tokens a decoding step can take: one per row, inside the vocabulary, with room left in the
/// cache. Shared by the CPU and CUDA decoders.
pub fn check_step(
    tokens: &[u32],
    rows: usize,
    len: usize,
    tmax: usize,
    vocab: usize,
) -> Result<()> {
    if tokens.len() != rows {
        bail!("a decoding step takes {rows} tokens, got {}", tokens.len());
    }
    if len >= tmax {
        bail!("the cache is full ({tmax} positions)");
    }
    if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= vocab) {
        bail!("token id {bad} is outside the vocabulary");
    }
    Ok(())
}

/// The decoding state of a batch: per layer, the keys and values of every position so far.
pub struct Gpt2Decoder<'m> {
    model: &'m Gpt2,
    b: usize,
    /// Cache capacity in positions (padded prompt length + new tokens).
    tmax: usize,
    start: Vec<usize>,
    /// Positions filled so far.
    len: usize,
    k: Vec<Vec<f32>>, // per layer (B, tmax, C)
    v: Vec<Vec<f32>>, // per layer (B, tmax, C)
    x: Vec<f32>,
    ln: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    atty: Vec<f32>,
    tmp: Vec<f32>,
    fch: Vec<f32>,
    fch_gelu: Vec<f32>,
    gathered: Vec<f32>,
    logits: Vec<f32>,
    /// When recording, every fed position's activations, as `gpt2::forward` saves them, and
    /// the record row of each row of the next chunk.
    record: Option<Gpt2Activations>,
    record_rows: Vec<usize>,
}

impl<'m> Gpt2Decoder<'m> {
    /// Prefills the prompts; `logits()` then holds the next-token logits of every row.
    /// Fails when a prompt is empty, holds an id outside the vocabulary, or a prompt plus
    /// `max_new_tokens` exceeds the model's context.
    pub fn new(
        model: &'m Gpt2,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        pad: u32,
    ) -> Result<Self> {
        let cfg = &model.config;
        check_prompts(cfg, prompts, max_new_tokens, pad)?;
        let batch = Batch::left_padded(prompts, pad)?;
        let c = cfg.n_embd;
        let tmax = batch.t + max_new_tokens;
        let empty = || vec![vec![0.0; batch.b * tmax * c]; cfg.n_layer];
        let mut d = Self::from_cache(model, batch.start.clone(), tmax, 0, empty(), empty())?;
        let last: Vec<usize> = (0..batch.b).map(|r| r * batch.t + batch.t - 1).collect();
        d.run(&batch.tokens, batch.t, &last);
        Ok(d)
    }

    /// A decoder whose cache already holds `len` positions of every row: `k` and `v` are, per
    /// layer, (B, tmax, C) with the keys and values of indices below `len` filled in. Rows are
    /// left padded: row b's first real index is `start[b]`.
    pub fn from_cache(
        model: &'m Gpt2,
        start: Vec<usize>,
        tmax: usize,
        len: usize,
        k: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let cfg = &model.config;
        let b = start.len();
        let want = b * tmax * cfg.n_embd;
        if k.len() != cfg.n_layer
            || v.len() != cfg.n_layer
            || k.iter().chain(&v).any(|x| x.len() != want)
        {
            bail!(
                "a cache of {b} rows and {tmax} positions needs {} layers of {want} keys and values",
                cfg.n_layer
            );
        }
        if len > tmax || tmax > cfg.n_positions {
            bail!(
                "a cache of {tmax} positions with {len} filled does not fit the model's context of {}",
                cfg.n_positions
            );
        }
        Ok(Gpt2Decoder {
            model,
            b,
            tmax,
            start,
            len,
            k,
            v,
            x: Vec::new(),
            ln: Vec::new(),
            mean: Vec::new(),
            rstd: Vec::new(),
            qkv: Vec::new(),
            atty: Vec::new(),
            tmp: Vec::new(),
            fch: Vec::new(),
            fch_gelu: Vec::new(),
            gathered: Vec::new(),
            logits: Vec::new(),
            record: None,
            record_rows: Vec::new(),
        })
    }

    /// Feeds `tq` tokens per row (tokens (B, tq)) and returns the logits (P, V) of the new rows
    /// `heads` (index b * tq + i), in the order given.
    pub fn extend(&mut self, tokens: &[u32], tq: usize, heads: &[usize]) -> Result<&[f32]> {
        let cfg = &self.model.config;
        if tokens.len() != self.b * tq || self.len + tq > self.tmax {
            bail!(
                "{} tokens do not make {tq} new positions of {} rows with {} of {} filled",
                tokens.len(),
                self.b,
                self.len,
                self.tmax
            );
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary");
        }
        if let Some(&h) = heads.iter().find(|&&h| h >= self.b * tq) {
            bail!("head row {h} is outside the {} new rows", self.b * tq);
        }
        self.run(tokens, tq, heads);
        Ok(&self.logits)
    }

    /// Keys and values of layer `l`, (B, tmax, C) each.
    pub fn layer_kv(&self, l: usize) -> (&[f32], &[f32]) {
        (&self.k[l], &self.v[l])
    }

    /// Cache capacity in positions.
    pub fn capacity(&self) -> usize {
        self.tmax
    }

    /// Next-token logits (B, V) after the last position fed.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Number of positions (padding included) in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds one token per row (B).
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        check_step(
            tokens,
            self.b,
            self.len,
            self.tmax,
            self.model.config.vocab_size,
        )?;
        let rows: Vec<usize> = (0..self.b).collect();
        self.run(tokens, 1, &rows);
        Ok(())
    }

    /// Runs `tq` new positions per row (tokens (B, tq)) against the cache and leaves the logits
    /// (P, V) of the new rows `heads` (index b * tq + i).
    fn run(&mut self, tokens: &[u32], tq: usize, heads: &[usize]) {
        let cfg = &self.model.config;
        let w = &self.model.weights;
        let (nb, c, v) = (self.b, cfg.n_embd, cfg.vocab_size);
        let n = nb * tq;
        let p0 = self.len;
        let pos: Vec<u32> = (0..n)
            .map(|i| (p0 + i % tq).saturating_sub(self.start[i / tq]) as u32)
            .collect();
        let eps = cfg.layer_norm_epsilon;
        let shape = AttentionShape {
            b: nb,
            t: tq,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_head,
            head_dim: cfg.head_dim(),
        };
        let q_layout = HeadsLayout {
            offset: 0,
            stride: 3 * c,
        };
        for buf in [&mut self.x, &mut self.ln, &mut self.atty, &mut self.tmp] {
            buf.resize(n * c, 0.0);
        }
        self.mean.resize(n, 0.0);
        self.rstd.resize(n, 0.0);
        self.qkv.resize(n * 3 * c, 0.0);
        self.fch.resize(n * 4 * c, 0.0);
        self.fch_gelu.resize(n * 4 * c, 0.0);
        embedding_forward(&mut self.x, tokens, &pos, &w.wte.data, Some(&w.wpe.data), c);
        let mut rec = self.record.take();
        if let Some(r) = rec.as_mut() {
            r.put_tokens(tokens, &self.record_rows);
            r.put(0, Slot::Encoded, &self.x, &self.record_rows);
        }
        for l in 0..cfg.n_layer {
            let p = &w.blocks[l];
            layernorm_forward(
                &mut self.ln,
                &mut self.mean,
                &mut self.rstd,
                &self.x,
                &p.ln_1_w.data,
                &p.ln_1_b.data,
                n,
                c,
                eps,
            );
            matmul_forward(
                &mut self.qkv,
                &self.ln,
                &p.attn_w.data,
                Some(&p.attn_b.data),
                n,
                c,
                3 * c,
            );
            if let Some(r) = rec.as_mut() {
                r.put(l, Slot::Ln1, &self.ln, &self.record_rows);
                r.put(l, Slot::Ln1Mean, &self.mean, &self.record_rows);
                r.put(l, Slot::Ln1Rstd, &self.rstd, &self.record_rows);
                r.put(l, Slot::Qkv, &self.qkv, &self.record_rows);
            }
            for i in 0..n {
                let (b, t) = (i / tq, p0 + i % tq);
                let dst = (b * self.tmax + t) * c;
                self.k[l][dst..dst + c]
                    .copy_from_slice(&self.qkv[i * 3 * c + c..i * 3 * c + 2 * c]);
                self.v[l][dst..dst + c]
                    .copy_from_slice(&self.qkv[i * 3 * c + 2 * c..i * 3 * c + 3 * c]);
            }
            attention_cached_forward(
                &mut self.atty,
                &self.qkv,
                q_layout,
                &self.k[l],
                &self.v[l],
                &self.start,
                p0,
                tq,
                self.tmax,
                shape,
            );
            matmul_forward(
                &mut self.tmp,
                &self.atty,
                &p.attn_proj_w.data,
                Some(&p.attn_proj_b.data),
                n,
                c,
                c,
            );
            // The cache needs no activations, so the residual adds happen in place.
            for (x, &y) in self.x.iter_mut().zip(&self.tmp) {
                *x += y;
            }
            if let Some(r) = rec.as_mut() {
                r.put(l, Slot::Atty, &self.atty, &self.record_rows);
                r.put(l, Slot::Res1, &self.x, &self.record_rows);
            }
            layernorm_forward(
                &mut self.ln,
                &mut self.mean,
                &mut self.rstd,
                &self.x,
                &p.ln_2_w.data,
                &p.ln_2_b.data,
                n,
                c,
                eps,
            );
            matmul_forward(
                &mut self.fch,
                &self.ln,
                &p.fc_w.data,
                Some(&p.fc_b.data),
                n,
                c,
                4 * c,
            );
            gelu_tanh_forward(&mut self.fch_gelu, &self.fch);
            matmul_forward(
                &mut self.tmp,
                &self.fch_gelu,
                &p.fc_proj_w.data,
                Some(&p.fc_proj_b.data),
                n,
                4 * c,
                c,
            );
            for (x, &y) in self.x.iter_mut().zip(&self.tmp) {
                *x += y;
            }
            if let Some(r) = rec.as_mut() {
                r.put(l, Slot::Ln2, &self.ln, &self.record_rows);
                r.put(l, Slot::Ln2Mean, &self.mean, &self.record_rows);
                r.put(l, Slot::Ln2Rstd, &self.rstd, &self.record_rows);
                r.put(l, Slot::Fch, &self.fch, &self.record_rows);
                r.put(l, Slot::FchGelu, &self.fch_gelu, &self.record_rows);
                r.put(l, Slot::Res2, &self.x, &self.record_rows);
            }
        }
        self.record = rec;
        // Only the rows asked for need the final layernorm and the head.
        let m = heads.len();
        let mut picked = vec![0.0f32; m * c];
        for (dst, &r) in picked.chunks_exact_mut(c).zip(heads) {
            dst.copy_from_slice(&self.x[r * c..(r + 1) * c]);
        }
        let mut normed = vec![0.0f32; m * c];
        let (mut mean, mut rstd) = (vec![0.0f32; m], vec![0.0f32; m]);
        layernorm_forward(
            &mut normed,
            &mut mean,
            &mut rstd,
            &picked,
            &w.ln_f_w.data,
            &w.ln_f_b.data,
            m,
            c,
            eps,
        );
        let rows: Vec<usize> = (0..m).collect();
        self.gathered.resize(m * c, 0.0);
        self.logits.resize(m * v, 0.0);
        logits_forward(
            &mut self.logits,
            &mut self.gathered,
            &normed,
            &rows,
            &w.wte.data,
            v,
            c,
        );
        self.len += tq;
    }
}

/// Samples a continuation of every prompt, all rows together. A row stops after it samples `eos`
/// (which is kept, with its log-probability) or after `params.max_new_tokens` tokens.
/// The same `rng` state gives the same tokens.
pub fn generate(
    model: &Gpt2,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<Vec<Generation>> {
    let mut out = vec![Generation::default(); prompts.len()];
    if prompts.is_empty() || params.max_new_tokens == 0 {
        return Ok(out);
    }
    let v = model.config.vocab_size;
    let mut dec = Gpt2Decoder::new(model, prompts, params.max_new_tokens, eos)?;
    let mut done = vec![false; prompts.len()];
    for step in 0..params.max_new_tokens {
        let next = sample_step(dec.logits(), v, &mut out, &mut done, params, eos, rng);
        if done.iter().all(|&d| d) || step + 1 == params.max_new_tokens {
            break;
        }
        dec.step(&next)?;
    }
    Ok(out)
}

/// A sampled batch whose forward pass was kept: the continuations, the activations of every
/// position fed (each distinct prompt once, then one row per continuation and step, the last
/// sampled token included: `cpu::shared`), and the logits each token was sampled from.
pub struct Gpt2Rollout {
    pub generations: Vec<Generation>,
    acts: Gpt2Activations,
    /// The distinct prompt of each row, and each distinct prompt's first real index.
    prompt_of: Vec<usize>,
    prompt_start: Vec<usize>,
    /// Padded prompt length P and steps S.
    p: usize,
    s: usize,
    /// (S, B, V): step s's logits of every row, before temperature.
    logits: Vec<f32>,
}

/// One sampling step of a batch: each row not yet `done` samples from its logits (B, V), and the
/// token and its log-probability are appended to its generation; a row that samples `eos` is
/// done. Returns the tokens to feed next (`eos` for done rows).
pub fn sample_step(
    logits: &[f32],
    v: usize,
    out: &mut [Generation],
    done: &mut [bool],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Vec<u32> {
    let mut next = vec![eos; out.len()];
    for (r, g) in out.iter_mut().enumerate() {
        if done[r] {
            continue;
        }
        let (tok, lp) = sample(&logits[r * v..(r + 1) * v], params, rng);
        g.tokens.push(tok);
        g.logprobs.push(lp);
        next[r] = tok;
        done[r] = tok == eos;
    }
    next
}

/// The distinct prompts in order of first appearance, and the index of each prompt among them.
pub fn distinct_prompts(prompts: &[Vec<u32>]) -> (Vec<Vec<u32>>, Vec<usize>) {
    let mut distinct: Vec<Vec<u32>> = Vec::new();
    let mut of = Vec::with_capacity(prompts.len());
    for p in prompts {
        match distinct.iter().position(|q| q == p) {
            Some(i) => of.push(i),
            None => {
                of.push(distinct.len());
                distinct.push(p.clone());
            }
        }
    }
    (distinct, of)
}

/// Position ids of a shared record (`cpu::shared`): distinct prompt u's index i is position
/// i - start[u], step s of row b is position P + s - start of its prompt.
pub fn shared_positions(
    prompt_of: &[usize],
    prompt_start: &[usize],
    p: usize,
    s: usize,
) -> Vec<usize> {
    let mut pos = Vec::with_capacity(prompt_start.len() * p + prompt_of.len() * s);
    for &st in prompt_start {
        pos.extend((0..p).map(|i| i.saturating_sub(st)));
    }
    for j in 0..s {
        pos.extend(prompt_of.iter().map(|&u| p + j - prompt_start[u]));
    }
    pos
}

/// `generate`, keeping the forward pass for an update with the same weights, and running each
/// distinct prompt once. The same `rng` state gives the same tokens as `generate`, with
/// log-probabilities equal up to rounding. The last sampled token is fed too (without the
/// head), since the value head reads its hidden state.
pub fn generate_recorded(
    model: &Gpt2,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<Gpt2Rollout> {
    let s = params.max_new_tokens;
    if prompts.is_empty() || s == 0 {
        bail!("a recorded rollout needs at least one prompt and one new token");
    }
    let cfg = &model.config;
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    check_prompts(cfg, prompts, s, eos)?;
    let (distinct, prompt_of) = distinct_prompts(prompts);
    let ub = Batch::left_padded(&distinct, eos)?;
    let (u, p, b) = (ub.b, ub.t, prompts.len());
    let pos = shared_positions(&prompt_of, &ub.start, p, s);
    let record = Gpt2Activations::recording(model, pos.iter().map(|&x| x as u32).collect(), eos);

    // The distinct prompts, once each.
    let zeros = |rows: usize, t: usize| vec![vec![0.0f32; rows * t * c]; cfg.n_layer];
    let mut pre = Gpt2Decoder::from_cache(model, ub.start.clone(), p, 0, zeros(u, p), zeros(u, p))?;
    pre.record = Some(record);
    pre.record_rows = (0..u * p).collect();
    let last: Vec<usize> = (0..u).map(|i| i * p + p - 1).collect();
    let first = pre.extend(&ub.tokens, p, &last)?.to_vec();

    // Every row continues from a copy of its prompt's keys and values.
    let tmax = p + s;
    let (k, vv) = fan_out_prompt_kv(cfg.n_layer, |l| pre.layer_kv(l), &prompt_of, p, tmax, c);
    let start: Vec<usize> = prompt_of.iter().map(|&ui| ub.start[ui]).collect();
    let mut dec = Gpt2Decoder::from_cache(model, start, tmax, p, k, vv)?;
    dec.record = pre.record.take();

    let mut out = vec![Generation::default(); b];
    let mut logits = first_step_logits(&first, &prompt_of, v, s);
    let mut done = vec![false; b];
    let rows: Vec<usize> = (0..b).collect();
    for step in 0..s {
        if step > 0 {
            logits.extend_from_slice(dec.logits());
        }
        let step_logits = &logits[step * b * v..(step + 1) * b * v];
        let next = sample_step(step_logits, v, &mut out, &mut done, params, eos, rng);
        let more = !(done.iter().all(|&d| d) || step + 1 == s);
        dec.record_rows = (0..b).map(|bi| u * p + step * b + bi).collect();
        dec.extend(&next, 1, if more { &rows[..] } else { &[] })?;
        if !more {
            break;
        }
    }
    let acts = dec.record.take().expect("the decoder was recording");
    Ok(Gpt2Rollout {
        generations: out,
        acts,
        prompt_of,
        prompt_start: ub.start,
        p,
        s,
        logits,
    })
}

impl Gpt2Rollout {
    /// What the update's forward pass would give on the prompts followed by the first `kept[r]`
    /// tokens of each continuation: the logits (M, V) predicting those tokens (row by row), the
    /// final hidden state (B, C) of each row's last kept token (its last prompt token when none
    /// is kept), and the activations for `gpt2::backward` with dlogits in that order.
    pub fn finish(
        mut self,
        model: &Gpt2,
        kept: &[usize],
    ) -> Result<(Vec<f32>, Vec<f32>, Gpt2Activations)> {
        let (b, v, c) = (
            self.generations.len(),
            model.config.vocab_size,
            model.config.n_embd,
        );
        let layout = SharedLayout::new(&self.prompt_of, &self.prompt_start, self.p, self.s);
        let KeptRows { rows, logits, last } =
            kept_rows(&layout, &self.generations, &self.logits, self.p, kept, v)?;
        self.acts.finish_record(model, rows, layout);
        let mut hidden = Vec::with_capacity(b * c);
        for &row in &last {
            hidden.extend_from_slice(self.acts.final_hidden_row(row));
        }
        Ok((logits, hidden, self.acts))
    }
}
