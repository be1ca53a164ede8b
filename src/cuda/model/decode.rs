//! Decoding on a device, for both families: the prompts are prefilled into a KV cache in one pass,
//! then each step feeds one token per row; only the rows whose logits are wanted go through the
//! final norm and the head, and sampling runs on the device too, so a step copies B tokens and B
//! log-probabilities back, not B x V logits. What differs between GPT-2 and Llama is the layer
//! stack and the head, behind `DeviceModel`.

use crate::batch::Batch;
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{self as k, SampleArgs};
use crate::rng::Rng;
use crate::sample::Generation;
use crate::sample::SamplingParams;
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Per layer, the keys and values of every position so far: (B, tmax, kv_width) each.
pub struct KvCache {
    pub k: Vec<Buf>,
    pub v: Vec<Buf>,
    pub tmax: usize,
}

/// The rows of one forward pass through the cache: `b` rows of `tq` new tokens each, at
/// positions `p0..p0 + tq` of the cache; row r's prompt starts at `start[r]` (left padding).
pub struct CachedRows<'a> {
    pub ids: &'a DevBuf<u32>,
    pub pos: &'a DevBuf<i32>,
    pub start: &'a DevBuf<i32>,
    pub p0: usize,
    pub b: usize,
    pub tq: usize,
}

/// A model on the device, as the decoder drives it.
pub trait DeviceModel {
    fn vocab_size(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn n_layer(&self) -> usize;
    /// Floats per position of one layer's cached keys (and of its values).
    fn kv_width(&self) -> usize;
    /// Whether the prompts (left padded with `pad`) and `max_new` more tokens fit the model.
    fn check_prompts(&self, prompts: &[Vec<u32>], max_new: usize, pad: u32) -> Result<()>;
    /// The last hidden states (b * tq, C) of the rows, before the final norm; their keys and
    /// values are appended to `cache`.
    fn forward_cached(&self, g: &Gpu, rows: &CachedRows, cache: &mut KvCache) -> Result<Buf>;
    /// logits (m, V) of hidden rows (m, C): the final norm, then the head.
    fn head(&self, g: &Gpu, hidden: &Buf, m: usize, logits: &mut Buf) -> Result<()>;
}

/// The decoding state of a batch on the device.
pub struct Decoder<'m, M: DeviceModel> {
    g: &'m Gpu,
    model: &'m M,
    b: usize,
    /// (B) first real position of each row.
    pub(crate) start: Vec<usize>,
    start_dev: DevBuf<i32>,
    /// Positions filled so far.
    pub(crate) len: usize,
    pub(crate) cache: KvCache,
    /// Logits of the rows the last `run` picked.
    pub(crate) logits: Buf,
}

impl<'m, M: DeviceModel> Decoder<'m, M> {
    /// Prefills the prompts (left padded with `pad`); `logits()` then holds every row's
    /// next-token logits.
    pub fn new(
        g: &'m Gpu,
        model: &'m M,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        pad: u32,
    ) -> Result<Self> {
        let (mut d, batch) = Self::empty(g, model, prompts, max_new_tokens, pad)?;
        d.run(&batch.tokens, batch.t, false)?;
        Ok(d)
    }

    /// A decoder with an empty cache sized for the prompts and `max_new_tokens` more, and the
    /// prompts left padded.
    pub(crate) fn empty(
        g: &'m Gpu,
        model: &'m M,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        pad: u32,
    ) -> Result<(Self, Batch)> {
        model.check_prompts(prompts, max_new_tokens, pad)?;
        let batch = Batch::left_padded(prompts, pad)?;
        let tmax = batch.t + max_new_tokens;
        let kw = model.kv_width();
        let start_i: Vec<i32> = batch.start.iter().map(|&s| s as i32).collect();
        let layer = || g.alloc::<f32>(batch.b * tmax * kw);
        let d = Decoder {
            g,
            model,
            b: batch.b,
            start: batch.start.clone(),
            start_dev: g.upload(&start_i)?,
            len: 0,
            cache: KvCache {
                k: (0..model.n_layer())
                    .map(|_| layer())
                    .collect::<Result<_>>()?,
                v: (0..model.n_layer())
                    .map(|_| layer())
                    .collect::<Result<_>>()?,
                tmax,
            },
            logits: g.alloc(batch.b * model.vocab_size())?,
        };
        Ok((d, batch))
    }

    /// Next-token logits (B, V) after the last position fed, copied to the host.
    pub fn logits(&self) -> Result<Vec<f32>> {
        self.g.download(&self.logits)
    }

    /// Feeds one token per row (B).
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        crate::batch::check_step(
            tokens,
            self.b,
            self.len,
            self.cache.tmax,
            self.model.vocab_size(),
        )?;
        self.run(tokens, 1, false)
    }

    /// Runs `tq` new tokens per row; the logits of each row's last one, or with `every` of every
    /// one of them (b * tq rows).
    pub(crate) fn run(&mut self, tokens: &[u32], tq: usize, every: bool) -> Result<()> {
        let (g, b, c) = (self.g, self.b, self.model.hidden_size());
        let n = b * tq;
        if self.len + tq > self.cache.tmax {
            bail!(
                "{tq} more positions do not fit the cache of {}",
                self.cache.tmax
            );
        }
        let p0 = self.len;
        let pos: Vec<i32> = (0..n)
            .map(|i| (p0 + i % tq).saturating_sub(self.start[i / tq]) as i32)
            .collect();
        let (ids, pos) = (g.upload(tokens)?, g.upload(&pos)?);
        let rows = CachedRows {
            ids: &ids,
            pos: &pos,
            start: &self.start_dev,
            p0,
            b,
            tq,
        };
        let hidden = self.model.forward_cached(g, &rows, &mut self.cache)?;
        let picked: Vec<i32> = if every {
            (0..n as i32).collect()
        } else {
            (0..b).map(|r| (r * tq + tq - 1) as i32).collect()
        };
        let m = picked.len();
        let mut last = g.alloc::<f32>(m * c)?;
        k::logits_forward_rows(g, &mut last, &hidden, &g.upload(&picked)?, m, c)?;
        if self.logits.len() < m * self.model.vocab_size() {
            self.logits = g.alloc(m * self.model.vocab_size())?;
        }
        self.model.head(g, &last, m, &mut self.logits)?;
        self.len += tq;
        Ok(())
    }

    /// Samples one token per row from the current logits: tokens and their log-probabilities,
    /// with the counter-based generator keyed by (seed, row, step).
    pub fn sample(
        &self,
        params: &SamplingParams,
        seed: u64,
        step: u32,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        self.sample_from(params, None, seed, step)
    }

    /// `sample` with each row's uniform draw in [0, 1) given (B), so that a generator on the host
    /// decides the tokens.
    pub fn sample_uniforms(
        &self,
        params: &SamplingParams,
        u: &[f32],
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let u = self.g.upload(u)?;
        self.sample_from(params, Some(&u), 0, 0)
    }

    fn sample_from(
        &self,
        params: &SamplingParams,
        u: Option<&Buf>,
        seed: u64,
        step: u32,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let g = self.g;
        let (mut tok, mut lp) = (g.alloc::<u32>(self.b)?, g.alloc::<f32>(self.b)?);
        let args = SampleArgs {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            seed,
            step,
        };
        let v = self.model.vocab_size();
        k::sample_forward(g, &mut tok, &mut lp, &self.logits, u, self.b, v, args)?;
        Ok((g.download(&tok)?, g.download(&lp)?))
    }
}

/// The logits (T, V) at every position of one sequence, in one pass: position p's row predicts
/// token p + 1.
pub fn logits_at_every_position<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    seq: &[u32],
) -> Result<Vec<f32>> {
    if seq.is_empty() {
        return Ok(Vec::new());
    }
    let (mut d, _) = Decoder::empty(g, model, &[seq.to_vec()], 0, 0)?;
    d.run(seq, seq.len(), true)?;
    let mut out = d.logits()?;
    out.truncate(seq.len() * model.vocab_size());
    Ok(out)
}

/// `cpu::gpt2_decode::generate` on the device: every prompt continued together; a row stops after it
/// samples `eos` (kept, with its log-probability) or after `max_new_tokens`. Sampling uses the
/// counter-based generator keyed by (seed, row, step), so the same seed gives the same tokens on
/// every device (but not the CPU's, whose generator is sequential).
pub fn generate<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    seed: u64,
) -> Result<Vec<Generation>> {
    generate_by(g, model, prompts, params, eos, |dec, _, step| {
        dec.sample(params, seed, step as u32)
    })
}

/// `generate` with the uniform draws taken from the host's `rng` as `sample::sample_step` takes
/// them: one per row not yet done, in row order, none when greedy. The same generator then gives
/// the CPU's tokens, unless rounding puts a draw on a boundary between two tokens.
pub fn generate_with_rng<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<Vec<Generation>> {
    generate_by(g, model, prompts, params, eos, |dec, done, _| {
        let u: Vec<f32> = done
            .iter()
            .map(|&d| {
                if d || params.temperature <= 0.0 {
                    0.0
                } else {
                    rng.uniform() as f32
                }
            })
            .collect();
        dec.sample_uniforms(params, &u)
    })
}

/// The decoding loop of both generators; `draw(decoder, done, step)` samples every row.
fn generate_by<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    mut draw: impl FnMut(&Decoder<M>, &[bool], usize) -> Result<(Vec<u32>, Vec<f32>)>,
) -> Result<Vec<Generation>> {
    let rows = prompts.len();
    let mut out = vec![Generation::default(); rows];
    if rows == 0 || params.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut dec = Decoder::new(g, model, prompts, params.max_new_tokens, eos)?;
    let mut done = vec![false; rows];
    for step in 0..params.max_new_tokens {
        let (toks, lps) = draw(&dec, &done, step)?;
        let mut next = vec![eos; rows];
        for (r, o) in out.iter_mut().enumerate() {
            if done[r] {
                continue;
            }
            o.tokens.push(toks[r]);
            o.logprobs.push(lps[r]);
            next[r] = toks[r];
            done[r] = toks[r] == eos;
        }
        if done.iter().all(|&d| d) || step + 1 == params.max_new_tokens {
            break;
        }
        dec.step(&next)?;
    }
    Ok(out)
}
