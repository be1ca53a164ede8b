//! The frozen reference model's log-probabilities of the kept response tokens on the device, with
//! each distinct prompt's keys and values kept across updates, as `cpu::refcache` keeps them on
//! the CPU.
//!
//! The reference never changes and a task's prompts come back update after update, so the prompt
//! part of its forward pass is the same every time. Per prompt the cache holds every layer's keys
//! and values and the logits its last position gives the first response token. An update
//! prefills only the prompts not yet kept, copies every episode's prompt rows into one decoding
//! cache, and runs the kept response tokens but the last, all episodes in one pass.

use crate::cuda::device::{DevBuf, Gpu, Replayed, graphs_wanted};
use crate::cuda::model::DevModel;
use crate::cuda::model::decode::{Decoder, DecoderBuffers, DeviceModel};
use crate::cuda::ops::{Segments, copy_segments, log_softmax_gather_forward};
use crate::cuda::policy::step_buffers::exactly;
use crate::ppo::loss::{Episode, kept_tokens};
use anyhow::{Result, bail};
use std::any::Any;
use std::collections::{HashMap, HashSet};

type Buf = DevBuf<f32>;

pub use crate::ppo::policy::REFERENCE_CACHE_BYTES as DEFAULT_LIMIT_BYTES;

/// One prompt's rows on the device.
struct Prompt {
    /// Per layer, its keys and values: (len, kv_width) each.
    k: Vec<Buf>,
    v: Vec<Buf>,
    /// (V) the logits of its last position.
    logits: Buf,
}

impl Prompt {
    fn bytes(&self) -> usize {
        let floats: usize = self.k.iter().chain(&self.v).map(|b| b.len()).sum();
        (floats + self.logits.len()) * size_of::<f32>()
    }
}

/// Prompt rows of one frozen model on the device, bounded in bytes: once full, prompts not yet
/// seen are computed for the update that needs them and not kept.
pub struct DevRefCache {
    prompts: HashMap<Vec<u32>, Prompt>,
    bytes: usize,
    limit: usize,
    hits: u64,
    misses: u64,
    /// The last update's decoding buffers (a `DecoderBuffers` of the model's workspace), for the
    /// next update of the same shape.
    decoder: Option<Box<dyn Any + Send>>,
    /// The device's table of the prompt rows' copies into the decoding cache (`copy_segments`).
    copy_table: Option<DevBuf<u64>>,
    /// The response tokens' forward over the kept decoding buffers, replayed as a graph while the
    /// pass keeps its shape: (the buffers' serial, p0, tq, logit rows) and its launches.
    forward: Option<((u64, usize, usize, usize), Replayed)>,
    /// Whether that forward is recorded as a graph (`PGSRM_GRAPHS=0` turns it off).
    graphs: bool,
    /// (A, V) each episode's first-token logits, gathered from its prompt's, kept for the next
    /// update of as many episodes.
    first: Option<Buf>,
    /// The log-probabilities of the first tokens (A) and of the rest (A tq), and the tokens they
    /// are of, kept likewise.
    logprobs: [Option<Buf>; 2],
    targets: [Option<DevBuf<u32>>; 2],
}

impl Default for DevRefCache {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT_BYTES)
    }
}

impl DevRefCache {
    /// An empty cache that keeps at most `limit_bytes` of device memory.
    pub fn new(limit_bytes: usize) -> Self {
        DevRefCache {
            prompts: HashMap::new(),
            bytes: 0,
            limit: limit_bytes,
            hits: 0,
            misses: 0,
            decoder: None,
            copy_table: None,
            forward: None,
            graphs: graphs_wanted(),
            first: None,
            logprobs: [None, None],
            targets: [None, None],
        }
    }

    /// Distinct prompts kept.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Device bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Episodes whose prompt was found in the cache, and episodes whose prompt was computed.
    pub fn hits_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Whether the response tokens' forward is replayed as a graph while its shape repeats.
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
        self.forward = None;
    }

    /// Forgets every prompt: needed when the model the cache was filled from changes.
    pub fn clear(&mut self) {
        self.prompts.clear();
        self.bytes = 0;
        self.decoder = None;
        self.forward = None;
    }

    /// Per episode, the log-probabilities under `model` (always the same frozen model for one
    /// cache) of its kept response tokens, each predicted from the prompt and the response
    /// tokens before it; `eos` pads.
    pub fn logprobs(
        &mut self,
        g: &Gpu,
        model: &DevModel,
        episodes: &[&Episode],
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        match model {
            DevModel::Gpt2(m) => self.logprobs_of(g, m, episodes, eos, train_eos),
            DevModel::Llama(m) => self.logprobs_of(g, m, episodes, eos, train_eos),
        }
    }

    fn logprobs_of<M: DeviceModel>(
        &mut self,
        g: &Gpu,
        model: &M,
        episodes: &[&Episode],
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let v = model.vocab_size();
        let mut out = vec![Vec::new(); episodes.len()];
        // Every episode and its kept tokens. One with none to score runs all the same (fed
        // `eos`, its results dropped), so the pass keeps the batch's shape from update to update
        // and its decoding buffers serve the next.
        let mut scored = Vec::new();
        for (r, e) in episodes.iter().enumerate() {
            if e.prompt.is_empty() {
                bail!("episode {r} has an empty prompt");
            }
            let k = kept_tokens(&e.response, eos, train_eos);
            if let Some(&bad) = e
                .prompt
                .iter()
                .chain(&e.response[..k])
                .find(|&&x| x as usize >= v)
            {
                bail!("episode {r} holds token id {bad}, outside the vocabulary of {v}");
            }
            scored.push((r, k));
        }
        if scored.iter().all(|&(_, k)| k == 0) {
            return Ok(out);
        }
        let prompts: Vec<Vec<u32>> = scored
            .iter()
            .map(|&(r, _)| episodes[r].prompt.clone())
            .collect();
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for p in &prompts {
            if self.prompts.contains_key(p) {
                self.hits += 1;
            } else {
                self.misses += 1;
                if seen.insert(p) {
                    missing.push(p.clone());
                }
            }
        }
        let fresh = prefill(g, model, &missing, eos)?;
        let row = |p: &Vec<u32>| self.prompts.get(p).or_else(|| fresh.get(p));

        // Every episode's prompt rows copied into one cache, then its kept tokens but the last.
        let a = scored.len();
        let tq = scored.iter().map(|x| x.1).max().unwrap_or(1) - 1;
        let kept = self
            .decoder
            .take()
            .and_then(|d| d.downcast::<DecoderBuffers<M::Workspace>>().ok())
            .map(|d| *d);
        let kept_serial = kept.as_ref().map(|d| d.serial);
        let (mut dec, _) = Decoder::reusing(g, model, &prompts, tq, eos, kept)?;
        let (tmax, kw) = (dec.bufs.cache.tmax, model.kv_width());
        // The padding's rows are never attended to; zeros keep them finite all the same. A cache
        // kept from the last update is finite already: zeroed when made, then only written.
        if kept_serial != Some(dec.bufs.serial) {
            for b in dec
                .bufs
                .cache
                .k
                .iter_mut()
                .chain(dec.bufs.cache.v.iter_mut())
            {
                g.zero(b)?;
            }
        }
        let mut first = exactly(g, self.first.take(), a * v)?;
        let mut copies = Segments::default();
        for (i, p) in prompts.iter().enumerate() {
            let e = row(p).expect("every prompt is kept or fresh");
            let (at, n) = ((i * tmax + dec.start[i]) * kw, p.len() * kw);
            for (l, (k, vv)) in e.k.iter().zip(&e.v).enumerate() {
                copies.add(&mut dec.bufs.cache.k[l], at, k, 0, n)?;
                copies.add(&mut dec.bufs.cache.v[l], at, vv, 0, n)?;
            }
            copies.add(&mut first, i * v, &e.logits, 0, v)?;
        }
        copy_segments(g, &copies, &mut self.copy_table)?;
        dec.len = tmax - tq;
        let first_tokens: Vec<u32> = scored
            .iter()
            .map(|&(r, k)| if k > 0 { episodes[r].response[0] } else { eos })
            .collect();
        let [lp_first_at, lp_rest_at] = &mut self.logprobs;
        let [first_targets, rest_targets] = &mut self.targets;
        let mut lp_first = exactly(g, lp_first_at.take(), a)?;
        let targets = g.upload_reusing(first_targets.take(), &first_tokens)?;
        log_softmax_gather_forward(g, &mut lp_first, &first, &targets, a, v, 1.0)?;
        let host_first = g.download(&lp_first)?;
        (*lp_first_at, *first_targets) = (Some(lp_first), Some(targets));
        // Row i's token j is fed at step j and predicts kept token j + 1; shorter responses are
        // padded with `eos` after their end, which no kept token attends to.
        let lp_rest = if tq > 0 {
            let (mut fed, mut targets) = (vec![eos; a * tq], vec![eos; a * tq]);
            for (i, &(r, k)) in scored.iter().enumerate() {
                let resp = &episodes[r].response;
                for j in 0..k.saturating_sub(1) {
                    fed[i * tq + j] = resp[j];
                    targets[i * tq + j] = resp[j + 1];
                }
            }
            let (p0, m) = dec.load(&fed, tq, true)?;
            let key = (dec.bufs.serial, p0, tq, m);
            if self.forward.as_ref().is_none_or(|(k, _)| *k != key) {
                self.forward = Some((key, Replayed::default()));
            }
            let (_, launches) = self.forward.as_mut().expect("set above");
            launches.run(g, &mut self.graphs, "the reference's pass", || {
                dec.forward(p0, tq, m, None)
            })?;
            let mut lp = exactly(g, lp_rest_at.take(), a * tq)?;
            let targets = g.upload_reusing(rest_targets.take(), &targets)?;
            log_softmax_gather_forward(g, &mut lp, &dec.bufs.logits, &targets, a * tq, v, 1.0)?;
            let host = g.download(&lp)?;
            (*lp_rest_at, *rest_targets) = (Some(lp), Some(targets));
            host
        } else {
            Vec::new()
        };
        for (i, &(r, k)) in scored.iter().enumerate() {
            if k > 0 {
                out[r].push(host_first[i]);
                out[r].extend_from_slice(&lp_rest[i * tq..i * tq + k - 1]);
            }
        }
        self.decoder = Some(Box::new(dec.bufs));
        self.first = Some(first);

        // Keep the new prompts' rows while they fit the bound.
        for (p, e) in fresh {
            let b = e.bytes();
            if self.bytes + b <= self.limit {
                self.bytes += b;
                self.prompts.insert(p, e);
            }
        }
        Ok(out)
    }
}

/// Each prompt's keys and values (every layer) and the logits of its last position, from one
/// prefill of them all.
fn prefill<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    prompts: &[Vec<u32>],
    pad: u32,
) -> Result<HashMap<Vec<u32>, Prompt>> {
    let mut out = HashMap::new();
    if prompts.is_empty() {
        return Ok(out);
    }
    let dec = Decoder::new(g, model, prompts, 0, pad)?;
    let (tmax, kw, v) = (dec.bufs.cache.tmax, model.kv_width(), model.vocab_size());
    let mut copies = Segments::default();
    for (i, p) in prompts.iter().enumerate() {
        let (at, n) = ((i * tmax + dec.start[i]) * kw, p.len() * kw);
        // Every layer's rows of this prompt, each into a buffer of its own.
        let mut take = |layers: &[Buf]| -> Result<Vec<Buf>> {
            let mut out = Vec::with_capacity(layers.len());
            for src in layers {
                let mut b = g.alloc(n)?;
                copies.add(&mut b, 0, src, at, n)?;
                out.push(b);
            }
            Ok(out)
        };
        let (k, vv) = (take(&dec.bufs.cache.k)?, take(&dec.bufs.cache.v)?);
        let mut logits = g.alloc(v)?;
        copies.add(&mut logits, 0, &dec.bufs.logits, i * v, v)?;
        out.insert(p.clone(), Prompt { k, v: vv, logits });
    }
    copy_segments(g, &copies, &mut None)?;
    Ok(out)
}
