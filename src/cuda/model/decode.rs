//! Decoding on a device, for both families: the prompts are prefilled into a KV cache in one pass,
//! then each step feeds one token per row; only the rows whose logits are wanted go through the
//! final norm and the head. What differs between GPT-2 and Llama is the layer stack and the head,
//! behind `DeviceModel`. `cuda::model::generate` runs sampling loops on top of it.

use crate::batch::Batch;
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{self as k, RowCopies, SampleArgs};
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

/// Where a forward through the cache also copies what training's forward keeps for backward:
/// the family's activations of a whole batch, and the row of them each run row goes to.
pub struct Recording<'a, R> {
    pub acts: &'a mut R,
    pub rows: &'a DevBuf<i32>,
    /// The tables of the family's copies (`scatter_rows_list`), `COPIES_PER_LAYER` a layer and
    /// one more, kept between forwards: the buffers do not move, so neither do the tables.
    pub copies: &'a mut [Option<RowCopies>],
}

/// Copy launches a recorded forward makes per layer (after the attention's inputs, and after
/// the MLP's); one more follows the last layer.
pub const COPIES_PER_LAYER: usize = 2;

/// A model on the device, as the decoder drives it.
pub trait DeviceModel {
    /// The buffers of a forward through the cache and of the head, for up to some number of rows.
    type Workspace: Send + 'static;
    /// Training's activations of a batch (`gpt2_train`, `llama_train`), which a recorded
    /// rollout fills for the update that follows it.
    type Record: Send + 'static;

    fn vocab_size(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn n_layer(&self) -> usize;
    /// Floats per position of one layer's cached keys (and of its values).
    fn kv_width(&self) -> usize;
    /// Whether the prompts (left padded with `pad`) and `max_new` more tokens fit the model.
    fn check_prompts(&self, prompts: &[Vec<u32>], max_new: usize, pad: u32) -> Result<()>;
    /// Buffers for `rows` rows.
    fn workspace(&self, g: &Gpu, rows: usize) -> Result<Self::Workspace>;
    /// Activations of `b` rows of `t` positions, with logits for up to `m` of them.
    fn recording(&self, g: &Gpu, b: usize, t: usize, m: usize) -> Result<Self::Record>;
    /// Runs the rows through the layers, leaving their last hidden states (b * tq, C), before the
    /// final norm, in `ws`; their keys and values are appended to `cache`. With `rec`, every
    /// activation training keeps is also copied to its rows, the attention probabilities over
    /// the cache's `tmax` positions included.
    fn forward_cached(
        &self,
        g: &Gpu,
        rows: &CachedRows,
        cache: &mut KvCache,
        ws: &mut Self::Workspace,
        rec: Option<Recording<Self::Record>>,
    ) -> Result<()>;
    /// logits (m, V) of the hidden rows `picked` (m) of the last `forward_cached`: the final
    /// norm, then the head.
    fn head(
        &self,
        g: &Gpu,
        ws: &mut Self::Workspace,
        picked: &DevBuf<i32>,
        m: usize,
        logits: &mut Buf,
    ) -> Result<()>;
}

/// Makes `buf` hold at least `n` elements (its contents are not kept).
fn ensure<T: crate::cuda::device::DevElem>(g: &Gpu, buf: &mut DevBuf<T>, n: usize) -> Result<()> {
    if buf.len() < n {
        *buf = g.alloc(n)?;
    }
    Ok(())
}

/// The decoding state of a batch on the device.
pub struct Decoder<'m, M: DeviceModel> {
    pub(super) g: &'m Gpu,
    pub(super) model: &'m M,
    pub(super) b: usize,
    /// (B) first real position of each row.
    pub(crate) start: Vec<usize>,
    /// Positions filled so far.
    pub(crate) len: usize,
    pub(crate) bufs: DecoderBuffers<M::Workspace>,
}

/// A decoder's device buffers, which outlive it: kept for the next decoder of the same shape
/// (`Decoder::reusing`), they spare it the allocations, and a recorded graph its addresses.
pub struct DecoderBuffers<W> {
    /// (B) first real position of each row.
    pub(crate) start_dev: DevBuf<i32>,
    pub(crate) cache: KvCache,
    pub(crate) ws: W,
    /// Rows `ws` holds.
    pub(crate) ws_rows: usize,
    /// The tokens, positions and picked rows of a `run`.
    pub(crate) ids: DevBuf<u32>,
    pub(crate) pos: DevBuf<i32>,
    pub(crate) picked: DevBuf<i32>,
    /// Logits of the rows the last `run` picked.
    pub(crate) logits: Buf,
    /// Which buffers these are: a number no other `DecoderBuffers` of this process has (freed
    /// memory comes back at the same addresses, so an address does not tell).
    pub(crate) serial: u64,
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
        Self::reusing(g, model, prompts, max_new_tokens, pad, None)
    }

    /// A decoder for `b` rows of `tp` prompt positions and `steps` more, its buffers made for
    /// prefilling the prompts and decoding.
    pub(super) fn sized(
        g: &'m Gpu,
        model: &'m M,
        b: usize,
        tp: usize,
        steps: usize,
    ) -> Result<Self> {
        let tmax = tp + steps;
        let kw = model.kv_width();
        let layer = || g.alloc::<f32>(b * tmax * kw);
        let rows = b * tp.max(1);
        let bufs = DecoderBuffers {
            start_dev: g.alloc(b)?,
            cache: KvCache {
                k: (0..model.n_layer())
                    .map(|_| layer())
                    .collect::<Result<_>>()?,
                v: (0..model.n_layer())
                    .map(|_| layer())
                    .collect::<Result<_>>()?,
                tmax,
            },
            ws: model.workspace(g, rows)?,
            ws_rows: rows,
            ids: g.alloc(rows)?,
            pos: g.alloc(rows)?,
            picked: g.alloc(b)?,
            logits: g.alloc(b * model.vocab_size())?,
            serial: {
                static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        };
        Ok(Self::with_buffers(g, model, b, bufs))
    }

    /// A decoder of `b` rows over buffers made before (by a decoder of the same shape).
    pub(crate) fn with_buffers(
        g: &'m Gpu,
        model: &'m M,
        b: usize,
        bufs: DecoderBuffers<M::Workspace>,
    ) -> Self {
        Decoder {
            g,
            model,
            b,
            start: vec![0; b],
            len: 0,
            bufs,
        }
    }

    /// `empty`, over `kept` buffers when they were made for as many rows and cache positions,
    /// with a workspace at least as large.
    pub(crate) fn reusing(
        g: &'m Gpu,
        model: &'m M,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        pad: u32,
        kept: Option<DecoderBuffers<M::Workspace>>,
    ) -> Result<(Self, Batch)> {
        model.check_prompts(prompts, max_new_tokens, pad)?;
        let batch = Batch::left_padded(prompts, pad)?;
        let (b, tmax) = (batch.b, batch.t + max_new_tokens);
        let fits = |k: &DecoderBuffers<M::Workspace>| {
            k.start_dev.len() == b && k.cache.tmax == tmax && k.ws_rows >= b * batch.t.max(1)
        };
        let mut d = match kept.filter(fits) {
            Some(k) => Self::with_buffers(g, model, b, k),
            None => Self::sized(g, model, b, batch.t, max_new_tokens)?,
        };
        d.set_start(&batch.start)?;
        Ok((d, batch))
    }

    /// Sets each row's first real position, and starts over at position 0.
    pub(super) fn set_start(&mut self, start: &[usize]) -> Result<()> {
        let start_i: Vec<i32> = start.iter().map(|&s| s as i32).collect();
        self.g.write(&mut self.bufs.start_dev, &start_i)?;
        self.start = start.to_vec();
        self.len = 0;
        Ok(())
    }

    /// Next-token logits (B, V) after the last position fed, copied to the host.
    pub fn logits(&self) -> Result<Vec<f32>> {
        let mut out = self.g.download(&self.bufs.logits)?;
        out.truncate(self.b * self.model.vocab_size());
        Ok(out)
    }

    /// Feeds one token per row (B).
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        crate::batch::check_step(
            tokens,
            self.b,
            self.len,
            self.bufs.cache.tmax,
            self.model.vocab_size(),
        )?;
        self.run(tokens, 1, false)
    }

    /// Runs `tq` new tokens per row; the logits of each row's last one, or with `every` of every
    /// one of them (b * tq rows).
    pub(crate) fn run(&mut self, tokens: &[u32], tq: usize, every: bool) -> Result<()> {
        let (p0, m) = self.load(tokens, tq, every)?;
        self.forward(p0, tq, m, None)
    }

    /// Writes what `run` feeds into the buffers (the host's part of it): the position `p0` it
    /// starts at and the rows `m` whose logits it gives, for `forward`.
    pub(crate) fn load(
        &mut self,
        tokens: &[u32],
        tq: usize,
        every: bool,
    ) -> Result<(usize, usize)> {
        let (g, b, v) = (self.g, self.b, self.model.vocab_size());
        let n = b * tq;
        if self.len + tq > self.bufs.cache.tmax {
            bail!(
                "{tq} more positions do not fit the cache of {}",
                self.bufs.cache.tmax
            );
        }
        let p0 = self.len;
        let pos: Vec<i32> = (0..n)
            .map(|i| (p0 + i % tq).saturating_sub(self.start[i / tq]) as i32)
            .collect();
        let picked: Vec<i32> = if every {
            (0..n as i32).collect()
        } else {
            (0..b).map(|r| (r * tq + tq - 1) as i32).collect()
        };
        if self.bufs.ws_rows < n {
            self.bufs.ws = self.model.workspace(g, n)?;
            self.bufs.ws_rows = n;
        }
        ensure(g, &mut self.bufs.ids, n)?;
        ensure(g, &mut self.bufs.pos, n)?;
        ensure(g, &mut self.bufs.picked, picked.len())?;
        ensure(g, &mut self.bufs.logits, picked.len() * v)?;
        g.write(&mut self.bufs.ids, tokens)?;
        g.write(&mut self.bufs.pos, &pos)?;
        g.write(&mut self.bufs.picked, &picked)?;
        Ok((p0, picked.len()))
    }

    /// The forward of `tq` tokens per row from `ids` and `pos` at cache position `p0` (recorded
    /// with `rec`), and the logits of the `m` rows of `picked`: launches only.
    pub(crate) fn forward(
        &mut self,
        p0: usize,
        tq: usize,
        m: usize,
        rec: Option<Recording<M::Record>>,
    ) -> Result<()> {
        let rows = CachedRows {
            ids: &self.bufs.ids,
            pos: &self.bufs.pos,
            start: &self.bufs.start_dev,
            p0,
            b: self.b,
            tq,
        };
        let (g, model) = (self.g, self.model);
        model.forward_cached(g, &rows, &mut self.bufs.cache, &mut self.bufs.ws, rec)?;
        model.head(
            g,
            &mut self.bufs.ws,
            &self.bufs.picked,
            m,
            &mut self.bufs.logits,
        )?;
        self.len = p0 + tq;
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
        k::sample_forward(
            g,
            &mut tok,
            &mut lp,
            &self.bufs.logits,
            None,
            self.b,
            v,
            args,
        )?;
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
    let mut out = g.download(&d.bufs.logits)?;
    out.truncate(seq.len() * model.vocab_size());
    Ok(out)
}
