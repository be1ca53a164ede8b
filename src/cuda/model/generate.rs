//! Sampling loops on a device (`generate_on`), either family: the whole loop runs on the device.
//! The draws are uploaded once; sampling and the loop's bookkeeping (`draw_uniforms`,
//! `sample_forward`, `feed_sampled`) are kernels; the tokens and log-probabilities come back
//! once, at the end, with a look at whether any row is still going every `SEGMENT` steps. Every
//! buffer of a batch shape is made once and kept in a `DecodeCache`; from a shape's second run
//! on, its launches are recorded as a graph and replayed (`Gpu::capture`), which the emulated
//! device does too.
//!
//! A recorded rollout (`generate_recorded`) also copies every activation training keeps into a
//! batch of the rollout's own layout (the prompts left padded, then every sampled token fed, the
//! last one too), with the logits each token was sampled from: the update that follows
//! differentiates that pass (`RecordedRollout`) instead of running the policy again, as
//! `cpu::rollout` does on the CPU.

use crate::batch::Batch;
use crate::cuda::device::{DevBuf, Gpu, Replayed, graphs_wanted};
use crate::cuda::model::decode::{
    COPIES_PER_LAYER, CachedRows, Decoder, DecoderBuffers, DeviceModel, Recording,
};
use crate::cuda::ops::{self as k, DecodeState, RowCopies, SampleArgs};
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams, keyed_uniform};
use anyhow::{Result, bail};
use std::any::Any;

type Buf = DevBuf<f32>;

/// Steps between two looks at whether every row is done: a loop longer than this stops early
/// when all its rows have ended (a recorded loop runs to the end: its batch has every column).
pub const SEGMENT: usize = 16;

/// Where a generation's uniform draws come from.
pub enum Draws<'r> {
    /// The host's generator, taken as `sample::sample_step` takes it: one draw per row not yet
    /// done, in row order, none when greedy. The CPU's tokens then come out, unless rounding puts
    /// a draw on a boundary between two tokens.
    Host(&'r mut Rng),
    /// `sample::keyed_uniform(seed, row, step)`: a seed gives the same tokens on every device.
    Keyed(u64),
}

/// What makes two generations the same batch shape: the buffers and the recorded launches of
/// one serve the other.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    b: usize,
    tp: usize,
    steps: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    keyed: bool,
    eos: u32,
    record: bool,
}

/// A decoding loop's buffers on the device, beside the decoder's: the draws and where the
/// next one is taken, each step's sample, the rows' next inputs and whether they are done, and
/// the outputs (S, B).
struct LoopBuffers {
    draws: Buf,
    cursor: DevBuf<i32>,
    u: Buf,
    tok: DevBuf<u32>,
    lp: Buf,
    step_ids: DevBuf<u32>,
    step_pos: DevBuf<i32>,
    /// (B) row r for the head after a step.
    step_picked: DevBuf<i32>,
    done: DevBuf<i32>,
    out_tokens: DevBuf<u32>,
    out_logprobs: Buf,
}

/// Where a recorded loop puts its rows: each run's rows in the batch of B rows of T = tp + S
/// positions, and each step's logits in (S B, V).
struct RecordRows {
    /// (S B, V) the logits token s of row r was sampled from, at row s B + r.
    logits: Buf,
    /// (B tp) the prefill's rows: r T + j.
    prompt: DevBuf<i32>,
    /// Per step s (B): r T + tp + s.
    steps: Vec<DevBuf<i32>>,
    /// Per step s (B): s B + r.
    logit_rows: Vec<DevBuf<i32>>,
    /// The tables of the copies into the activations (`Recording::copies`).
    copies: Vec<Option<RowCopies>>,
}

impl RecordRows {
    fn new(g: &Gpu, b: usize, tp: usize, s: usize, v: usize, layers: usize) -> Result<Self> {
        let t = tp + s;
        let prompt: Vec<i32> = (0..b * tp)
            .map(|i| ((i / tp) * t + i % tp) as i32)
            .collect();
        let each = |f: &dyn Fn(usize, usize) -> usize| -> Result<Vec<DevBuf<i32>>> {
            (0..s)
                .map(|step| g.upload(&(0..b).map(|r| f(step, r) as i32).collect::<Vec<_>>()))
                .collect()
        };
        Ok(RecordRows {
            logits: g.alloc(s * b * v)?,
            prompt: g.upload(&prompt)?,
            steps: each(&|step, r| r * t + tp + step)?,
            logit_rows: each(&|step, r| step * b + r)?,
            copies: (0..layers * COPIES_PER_LAYER + 1).map(|_| None).collect(),
        })
    }
}

/// One shape's buffers, kept between generations: the decoder's without its borrows, the loop's,
/// a recorded shape's activations (unless lent to an update) and each segment's graph.
struct Kept<W, R> {
    dec: DecoderBuffers<W>,
    lp: LoopBuffers,
    rec: Option<(R, RecordRows)>,
    /// Each segment's launches, replayed as a graph from their third run.
    segments: Vec<Replayed>,
}

/// The buffers (and graphs) of the last few batch shapes a model generated with. It belongs to
/// one model's weights: the graphs hold their addresses, so whoever replaces the weights clears it.
pub struct DecodeCache {
    /// Each shape, its buffers and their bytes, oldest first.
    shapes: Vec<(Shape, Box<dyn Any + Send>, u64)>,
    /// Whether launches are recorded as graphs from a shape's second run on.
    graphs: bool,
    /// Segments run from a recorded graph so far.
    pub replays: usize,
}

/// Shapes kept at most: a task's prompts come in a few lengths.
const SHAPES_KEPT: usize = 4;

/// The share of a device's memory the kept shapes may hold (a recorded shape of GPT-2 large at
/// batch 10 holds over a gigabyte): an eighth.
const MEMORY_SHARE: u64 = 8;

impl Default for DecodeCache {
    /// Graphs on, unless `PGSRM_GRAPHS=0` turns them off (every launch then goes one by one, to
    /// compare, or to profile kernels with a tool that does not follow graphs).
    fn default() -> Self {
        DecodeCache::new(graphs_wanted())
    }
}

impl DecodeCache {
    /// An empty cache; with `graphs` false every run launches its kernels one by one.
    pub fn new(graphs: bool) -> Self {
        DecodeCache {
            shapes: Vec::new(),
            graphs,
            replays: 0,
        }
    }

    /// Forgets every shape (the weights they were recorded with are gone).
    pub fn clear(&mut self) {
        self.shapes.clear();
    }

    fn find<W: 'static, R: 'static>(&mut self, shape: &Shape) -> Option<&mut Kept<W, R>> {
        let i = self.shapes.iter().position(|(s, ..)| s == shape)?;
        self.shapes[i].1.downcast_mut::<Kept<W, R>>()
    }

    /// A shape's buffers and their bytes, out of the cache.
    fn take<W: 'static, R: 'static>(&mut self, shape: &Shape) -> Option<(Box<Kept<W, R>>, u64)> {
        let i = self.shapes.iter().position(|(s, ..)| s == shape)?;
        let (_, kept, bytes) = self.shapes.remove(i);
        kept.downcast::<Kept<W, R>>().ok().map(|k| (k, bytes))
    }

    /// Keeps a shape's buffers of `bytes`, letting the oldest go while more than `SHAPES_KEPT`
    /// shapes, or more than `budget` bytes, would be kept.
    fn put<W: Send + 'static, R: Send + 'static>(
        &mut self,
        shape: Shape,
        kept: Box<Kept<W, R>>,
        bytes: u64,
        budget: u64,
    ) {
        let sizes: Vec<u64> = self.shapes.iter().map(|x| x.2).collect();
        self.shapes.drain(..oldest_to_drop(&sizes, bytes, budget));
        self.shapes.push((shape, kept, bytes));
    }

    /// Takes back the activations a recorded rollout lent to its update, for the next rollout of
    /// that shape (its graphs write to them). Without this, the next rollout makes its buffers
    /// and graphs anew.
    pub fn give_back<M: DeviceModel>(&mut self, acts: M::Record, lent: Lent) {
        if let Some(k) = self.find::<M::Workspace, M::Record>(&lent.shape)
            && k.rec.is_none()
        {
            k.rec = Some((acts, lent.rows));
        }
    }
}

/// How many of the oldest kept shapes (`sizes` in bytes, oldest first) go before one of `adding`
/// bytes joins them: until fewer than `SHAPES_KEPT` remain and all fit `budget` (a shape larger
/// than the budget alone is kept by itself).
fn oldest_to_drop(sizes: &[u64], adding: u64, budget: u64) -> usize {
    let mut drop = 0;
    let mut held: u64 = sizes.iter().sum();
    while drop < sizes.len() && (sizes.len() - drop >= SHAPES_KEPT || held + adding > budget) {
        held -= sizes[drop];
        drop += 1;
    }
    drop
}

/// The device's decoding loop over one batch shape.
struct Loop<'m, M: DeviceModel> {
    dec: Decoder<'m, M>,
    lp: LoopBuffers,
    rec: Option<(M::Record, RecordRows)>,
    shape: Shape,
    segments: Vec<Replayed>,
}

impl<'m, M: DeviceModel> Loop<'m, M> {
    fn new(g: &'m Gpu, model: &'m M, shape: Shape) -> Result<Self> {
        let dec = Decoder::sized(g, model, shape.b, shape.tp, shape.steps)?;
        let (b, s) = (shape.b, shape.steps);
        let segments = s.div_ceil(SEGMENT);
        let step_picked: Vec<i32> = (0..b as i32).collect();
        let lp = LoopBuffers {
            draws: g.alloc(s * b)?,
            cursor: g.alloc(1)?,
            u: g.alloc(b)?,
            tok: g.alloc(b)?,
            lp: g.alloc(b)?,
            step_ids: g.alloc(b)?,
            step_pos: g.alloc(b)?,
            step_picked: g.upload(&step_picked)?,
            done: g.alloc(b)?,
            out_tokens: g.alloc(s * b)?,
            out_logprobs: g.alloc(s * b)?,
        };
        let rec = if shape.record {
            let acts = model.recording(g, b, shape.tp + s, b * s)?;
            let rows = RecordRows::new(g, b, shape.tp, s, model.vocab_size(), model.n_layer())?;
            Some((acts, rows))
        } else {
            None
        };
        Ok(Loop {
            dec,
            lp,
            rec,
            shape,
            segments: (0..segments).map(|_| Replayed::default()).collect(),
        })
    }

    fn from_kept(g: &'m Gpu, model: &'m M, shape: Shape, k: Kept<M::Workspace, M::Record>) -> Self {
        Loop {
            dec: Decoder::with_buffers(g, model, shape.b, k.dec),
            lp: k.lp,
            rec: k.rec,
            shape,
            segments: k.segments,
        }
    }

    fn into_kept(self) -> Kept<M::Workspace, M::Record> {
        Kept {
            dec: self.dec.bufs,
            lp: self.lp,
            rec: self.rec,
            segments: self.segments,
        }
    }

    /// Writes a batch's prompts and draws into the buffers: the host's part of a generation.
    fn load(&mut self, batch: &Batch, draws: &[f32]) -> Result<()> {
        let g = self.dec.g;
        let (b, tp) = (batch.b, batch.t);
        self.dec.set_start(&batch.start)?;
        let pos: Vec<i32> = (0..b * tp)
            .map(|i| (i % tp).saturating_sub(batch.start[i / tp]) as i32)
            .collect();
        let picked: Vec<i32> = (0..b).map(|r| (r * tp + tp - 1) as i32).collect();
        // A step feeds each row's next token one position after its last prompt token.
        let step_pos: Vec<i32> = batch
            .start
            .iter()
            .map(|&s| (tp - 1 - s.min(tp - 1)) as i32)
            .collect();
        g.write(&mut self.dec.bufs.ids, &batch.tokens)?;
        g.write(&mut self.dec.bufs.pos, &pos)?;
        g.write(&mut self.dec.bufs.picked, &picked)?;
        g.write(&mut self.lp.step_pos, &step_pos)?;
        g.write(&mut self.lp.draws, draws)?;
        g.zero(&mut self.lp.done)?;
        g.zero(&mut self.lp.cursor)?;
        Ok(())
    }

    /// Segment `seg`'s launches: the prefill first (segment 0), then its steps, each drawing,
    /// sampling, recording its sample and feeding it; the loop's last sample is fed only when
    /// recording (the value head reads its hidden state), and has no logits computed.
    fn launches(&mut self, seg: usize) -> Result<()> {
        let sh = self.shape;
        let (g, b, tp, s) = (self.dec.g, sh.b, sh.tp, sh.steps);
        let v = self.dec.model.vocab_size();
        if seg == 0 {
            let rec = self.rec.as_mut().map(|(acts, rows)| Recording {
                acts,
                rows: &rows.prompt,
                copies: &mut rows.copies,
            });
            self.dec.forward(0, tp, b, rec)?;
            if let Some((_, rows)) = &mut self.rec {
                k::scatter_rows(
                    g,
                    &mut rows.logits,
                    &self.dec.bufs.logits,
                    &rows.logit_rows[0],
                    b,
                    v,
                )?;
            }
        }
        let args = SampleArgs {
            temperature: sh.temperature,
            top_k: sh.top_k,
            top_p: sh.top_p,
            seed: 0,
            step: 0,
        };
        let lp = &mut self.lp;
        for step in seg * SEGMENT..((seg + 1) * SEGMENT).min(s) {
            k::draw_uniforms(
                g,
                &mut lp.u,
                &lp.draws,
                &lp.done,
                &mut lp.cursor,
                step,
                sh.keyed,
                b,
            )?;
            let d = &mut self.dec;
            k::sample_forward(
                g,
                &mut lp.tok,
                &mut lp.lp,
                &d.bufs.logits,
                Some(&lp.u),
                b,
                v,
                args,
            )?;
            let state = DecodeState {
                out_tokens: &mut lp.out_tokens,
                out_logprobs: &mut lp.out_logprobs,
                ids: &mut lp.step_ids,
                pos: &mut lp.step_pos,
                done: &mut lp.done,
            };
            k::feed_sampled(g, state, &lp.tok, &lp.lp, step, sh.eos, b)?;
            let last = step + 1 == s;
            if last && self.rec.is_none() {
                break;
            }
            let rows = CachedRows {
                ids: &lp.step_ids,
                pos: &lp.step_pos,
                start: &d.bufs.start_dev,
                p0: tp + step,
                b,
                tq: 1,
            };
            let rec = self.rec.as_mut().map(|(acts, r)| Recording {
                acts,
                rows: &r.steps[step],
                copies: &mut r.copies,
            });
            d.model
                .forward_cached(g, &rows, &mut d.bufs.cache, &mut d.bufs.ws, rec)?;
            if last {
                break;
            }
            d.model
                .head(g, &mut d.bufs.ws, &lp.step_picked, b, &mut d.bufs.logits)?;
            if let Some((_, r)) = &mut self.rec {
                k::scatter_rows(
                    g,
                    &mut r.logits,
                    &d.bufs.logits,
                    &r.logit_rows[step + 1],
                    b,
                    v,
                )?;
            }
        }
        Ok(())
    }

    /// Runs segment `seg` (`Replayed`). True when its graph ran.
    fn run_segment(&mut self, seg: usize, graphs: &mut bool) -> Result<bool> {
        let g = self.dec.g;
        let mut launches = std::mem::take(&mut self.segments[seg]);
        let ran = launches.run(g, graphs, "the decoding loop", || self.launches(seg));
        self.segments[seg] = launches;
        ran
    }

    /// Whether every row has ended.
    fn all_done(&self) -> Result<bool> {
        Ok(self.dec.g.download(&self.lp.done)?.iter().all(|&d| d != 0))
    }
}

/// What a recorded rollout lends its update besides the activations: where its rows went, and
/// its batch as the host knows it.
pub struct Lent {
    shape: Shape,
    rows: RecordRows,
    /// The prompts and what was sampled from them.
    pub prompts: Vec<Vec<u32>>,
    pub generations: Vec<Generation>,
    /// Each row's first prompt position in the left-padded prompts, and their width.
    pub start: Vec<usize>,
    pub tp: usize,
    /// Steps run: every row has this many fed tokens after its prompt.
    pub steps: usize,
    pub eos: u32,
}

impl Lent {
    /// (S B, V): the logits token s of row r was sampled from, at row s B + r.
    pub fn logits(&self) -> &Buf {
        &self.rows.logits
    }

    /// The rollout's batch: row r's prompt left padded with `eos` to `tp`, then what the loop fed
    /// at each step (its samples, then `eos` once it had ended).
    pub fn batch(&self) -> Batch {
        let (b, t) = (self.prompts.len(), self.tp + self.steps);
        let mut tokens = vec![self.eos; b * t];
        for (r, (p, g)) in self.prompts.iter().zip(&self.generations).enumerate() {
            let row = &mut tokens[r * t..(r + 1) * t];
            row[self.start[r]..self.tp].copy_from_slice(p);
            row[self.tp..self.tp + g.tokens.len()].copy_from_slice(&g.tokens);
        }
        Batch {
            b,
            t,
            tokens,
            start: self.start.clone(),
        }
    }
}

/// A recorded rollout: its generations, and (`generate_recorded`) the activations and what else
/// the update borrows.
pub struct RecordedRollout<R> {
    pub acts: R,
    pub lent: Lent,
}

/// Every prompt continued together on the device; a row stops after it samples `eos` (kept, with
/// its log-probability) or after `max_new_tokens`. `cache` keeps the buffers and graphs of the
/// batch shape for the next call with the same model's weights.
pub fn generate_on<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    cache: &mut DecodeCache,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    draws: Draws,
) -> Result<Vec<Generation>> {
    if prompts.is_empty() || params.max_new_tokens == 0 {
        return Ok(vec![Generation::default(); prompts.len()]);
    }
    let (gens, _) = run_loop(g, model, cache, prompts, params, eos, draws, false)?;
    Ok(gens)
}

/// `generate_on`, also recording the rollout's forward pass for the update that follows; the
/// update gives the activations back (`DecodeCache::give_back`) when done with them.
pub fn generate_recorded<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    cache: &mut DecodeCache,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    draws: Draws,
) -> Result<RecordedRollout<M::Record>> {
    if prompts.is_empty() || params.max_new_tokens == 0 {
        bail!("a recorded rollout needs at least one prompt and one new token");
    }
    let (generations, rec) = run_loop(g, model, cache, prompts, params, eos, draws, true)?;
    let (acts, lent) = rec.expect("a recording loop returns its record");
    Ok(RecordedRollout {
        acts,
        lent: Lent {
            generations,
            ..lent
        },
    })
}

/// A loop's generations, and a recorded loop's activations and what it lends with them.
type LoopOutput<R> = (Vec<Generation>, Option<(R, Lent)>);

/// The loop of `generate_on` and `generate_recorded`: the generations, and with `record` the
/// activations and where their rows went.
#[allow(clippy::too_many_arguments)]
fn run_loop<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    cache: &mut DecodeCache,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    draws: Draws,
    record: bool,
) -> Result<LoopOutput<M::Record>> {
    let rows = prompts.len();
    let steps = params.max_new_tokens;
    model.check_prompts(prompts, steps, eos)?;
    let batch = Batch::left_padded(prompts, eos)?;
    let shape = Shape {
        b: rows,
        tp: batch.t,
        steps,
        temperature: params.temperature,
        top_k: params.top_k,
        top_p: params.top_p,
        keyed: matches!(draws, Draws::Keyed(_)),
        eos,
        record,
    };
    // The most draws a loop can take: every row at every step.
    let (host_draws, rng) = match draws {
        Draws::Host(rng) => {
            let mut ahead = rng.clone();
            let d: Vec<f32> = (0..rows * steps).map(|_| ahead.uniform() as f32).collect();
            (d, Some(rng))
        }
        Draws::Keyed(seed) => {
            let d = (0..steps)
                .flat_map(|s| (0..rows).map(move |r| keyed_uniform(seed, r as u32, s as u32)))
                .collect();
            (d, None)
        }
    };
    // A recorded shape whose activations were not given back is made anew, graphs and all.
    let kept = cache
        .take::<M::Workspace, M::Record>(&shape)
        .filter(|(k, _)| !record || k.rec.is_some());
    let (mut lp, bytes) = match kept {
        Some((k, bytes)) => (Loop::from_kept(g, model, shape, *k), bytes),
        None => {
            let before = g.allocated_bytes();
            let lp = Loop::new(g, model, shape)?;
            (lp, g.allocated_bytes() - before)
        }
    };
    lp.load(&batch, &host_draws)?;
    let segments = steps.div_ceil(SEGMENT);
    for seg in 0..segments {
        if lp.run_segment(seg, &mut cache.graphs)? {
            cache.replays += 1;
        }
        if !record && seg + 1 < segments && lp.all_done()? {
            break;
        }
    }
    let toks = g.download(&lp.lp.out_tokens)?;
    let lps = g.download(&lp.lp.out_logprobs)?;
    let rec = lp.rec.take();
    let budget = g.memory_bytes().map_or(u64::MAX, |m| m / MEMORY_SHARE);
    cache.put(shape, Box::new(lp.into_kept()), bytes, budget);

    // Each row's samples up to its end; a stopped loop left the later rows unwritten.
    let mut out = vec![Generation::default(); rows];
    let mut taken = 0;
    for s in 0..steps {
        let mut live = false;
        for (r, o) in out.iter_mut().enumerate() {
            if o.tokens.last() == Some(&eos) {
                continue;
            }
            live = true;
            o.tokens.push(toks[s * rows + r]);
            o.logprobs.push(lps[s * rows + r]);
            taken += 1;
        }
        if !live {
            break;
        }
    }
    // The host's generator moves on by the draws the loop took.
    if let Some(rng) = rng
        && params.temperature > 0.0
    {
        for _ in 0..taken {
            rng.uniform();
        }
    }
    let rec = rec.map(|(acts, rows)| {
        let lent = Lent {
            shape,
            rows,
            prompts: prompts.to_vec(),
            generations: Vec::new(),
            start: batch.start.clone(),
            tp: batch.t,
            steps,
            eos,
        };
        (acts, lent)
    });
    Ok((out, rec))
}

/// `cpu::gpt2_decode::generate` on the device, with the draws keyed by (seed, row, step), so the
/// same seed gives the same tokens on every device (but not the CPU's, whose generator is
/// sequential). Nothing is kept for the next call.
pub fn generate<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    seed: u64,
) -> Result<Vec<Generation>> {
    let mut cache = DecodeCache::new(false);
    generate_on(
        g,
        model,
        &mut cache,
        prompts,
        params,
        eos,
        Draws::Keyed(seed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_shapes_go_when_too_many_or_too_large() {
        // Room for both counts and bytes: nothing goes.
        assert_eq!(oldest_to_drop(&[10, 20], 30, 100), 0);
        // A fourth shape would pass SHAPES_KEPT: the oldest goes.
        assert_eq!(oldest_to_drop(&[10, 20, 30, 40], 5, 1000), 1);
        // Over the budget: the oldest go until the new one fits.
        assert_eq!(oldest_to_drop(&[50, 30, 10], 40, 90), 1);
        assert_eq!(oldest_to_drop(&[50, 30, 10], 60, 90), 2);
        // Larger than the budget alone: everything else goes and it stays by itself.
        assert_eq!(oldest_to_drop(&[10, 20], 500, 100), 2);
        assert_eq!(oldest_to_drop(&[], 500, 100), 0);
    }
}
