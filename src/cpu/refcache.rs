//! The frozen reference model's log-probabilities of the kept response tokens, with the keys and
//! values of each distinct prompt kept across updates.
//!
//! The reference never changes and a task has only about a hundred prompts, so the prompt part
//! of its forward pass is the same every time a prompt comes back. Per distinct prompt (its token
//! ids) the cache holds every layer's keys and values of the prompt positions and the
//! log-probabilities of the first response token (the last position's log-softmax). An update
//! then runs, per episode, only the kept response tokens but the last, on top of those keys and
//! values, all episodes together (left padded, as the decoders do). Positions count from each
//! row's first real token, so a prompt's keys and values do not depend on the padding in front
//! of it.

use crate::cpu::decode::Gpt2Decoder;
use crate::cpu::llama::{self, KvCache};
use crate::cpu::policy::kept_tokens;
use crate::model::spec::Model;
use crate::ppo::loss::Episode;
use anyhow::{Result, bail};
use std::collections::HashMap;

/// Default bound on the bytes kept: a hundred 20-token prompts of GPT-2 small take about 170 MB.
pub const DEFAULT_LIMIT_BYTES: usize = 384 << 20;

/// Keys and values of one prompt's positions, per layer (P, KW) each, and the log-softmax (V)
/// of its last position: the log-probability of every first response token.
struct PromptKv {
    k: LayerKv,
    v: LayerKv,
    first: Vec<f32>,
}

impl PromptKv {
    fn bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(|x| x.len() * 4)
            .sum::<usize>()
            + self.first.len() * 4
    }
}

/// Prompt keys and values of one frozen model, bounded in memory: once full, prompts not yet
/// seen are computed for the update that needs them and not kept.
pub struct RefCache {
    entries: HashMap<Vec<u32>, PromptKv>,
    bytes: usize,
    limit: usize,
    hits: u64,
    misses: u64,
}

impl Default for RefCache {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT_BYTES)
    }
}

/// Layers, key/value width and context length of a model.
fn kv_shape(model: &Model) -> (usize, usize, usize) {
    match model {
        Model::Gpt2(m) => (m.config.n_layer, m.config.n_embd, m.config.n_positions),
        Model::Llama(m) => (
            m.config.num_hidden_layers,
            m.config.n_kv_heads() * m.config.head_dim(),
            m.config.max_position_embeddings,
        ),
    }
}

/// One buffer per layer.
type LayerKv = Vec<Vec<f32>>;

/// Keys and values (per layer (B, T, KW)) of left-padded token rows (B, T), and the logits
/// (B, V) of each row's last index.
fn prefill(
    model: &Model,
    tokens: &[u32],
    start: &[usize],
    t: usize,
) -> Result<(LayerKv, LayerKv, Vec<f32>)> {
    let (layers, kw, _) = kv_shape(model);
    let b = start.len();
    let zeros = || vec![vec![0.0f32; b * t * kw]; layers];
    let last: Vec<usize> = (0..b).map(|r| r * t + t - 1).collect();
    match model {
        Model::Gpt2(m) => {
            let mut d = Gpt2Decoder::from_cache(m, start.to_vec(), t, 0, zeros(), zeros())?;
            let logits = d.extend(tokens, t, &last)?.to_vec();
            let (k, v) = (0..layers)
                .map(|l| {
                    let (k, v) = d.layer_kv(l);
                    (k.to_vec(), v.to_vec())
                })
                .unzip();
            Ok((k, v, logits))
        }
        Model::Llama(m) => {
            let mut cache = KvCache::from_layers(m, zeros(), zeros(), t, 0, start.to_vec())?;
            let logits = llama::extend(m, tokens, &mut cache, t, &last)?;
            let (k, v) = (0..layers)
                .map(|l| {
                    let (k, v) = cache.layer(l);
                    (k.to_vec(), v.to_vec())
                })
                .unzip();
            Ok((k, v, logits))
        }
    }
}

/// Logits (P, V) at the new rows `heads` after feeding `tokens` (B, tq) on top of a cache
/// (per layer (B, tmax, KW)) with `len` positions filled.
#[allow(clippy::too_many_arguments)]
fn extend(
    model: &Model,
    k: LayerKv,
    v: LayerKv,
    start: Vec<usize>,
    tmax: usize,
    len: usize,
    tokens: &[u32],
    heads: &[usize],
) -> Result<Vec<f32>> {
    match model {
        Model::Gpt2(m) => {
            let mut d = Gpt2Decoder::from_cache(m, start, tmax, len, k, v)?;
            Ok(d.extend(tokens, tmax - len, heads)?.to_vec())
        }
        Model::Llama(m) => {
            let mut cache = KvCache::from_layers(m, k, v, tmax, len, start)?;
            llama::extend(m, tokens, &mut cache, tmax - len, heads)
        }
    }
}

/// log-sum-exp of a row of logits, summed in f64 as `cpu::policy::token_logprobs` does.
fn lse(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y)) as f64;
    max + row
        .iter()
        .map(|&z| (z as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// log softmax(row)[a].
fn logprob(row: &[f32], a: u32) -> f32 {
    (row[a as usize] as f64 - lse(row)) as f32
}

impl RefCache {
    /// An empty cache that keeps at most `limit_bytes` of keys and values.
    pub fn new(limit_bytes: usize) -> Self {
        RefCache {
            entries: HashMap::new(),
            bytes: 0,
            limit: limit_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// Distinct prompts kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Episodes whose prompt was found in the cache, and episodes whose prompt was computed.
    pub fn hits_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Forgets every prompt: needed when the model the cache was filled from changes.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Per episode, the log-probabilities under `model` (always the same frozen model for one
    /// cache) of its kept response tokens (`cpu::policy::kept_tokens`), each predicted from the
    /// prompt and the response tokens before it.
    pub fn logprobs(
        &mut self,
        model: &Model,
        episodes: &[&Episode],
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let (layers, kw, ctx) = kv_shape(model);
        let vocab = model.vocab_size() as u32;
        let mut out = vec![Vec::new(); episodes.len()];
        // Episodes with something to score.
        let mut active = Vec::new();
        for (r, e) in episodes.iter().enumerate() {
            if e.prompt.is_empty() {
                bail!("episode {r} has an empty prompt");
            }
            let k = kept_tokens(&e.response, eos, train_eos);
            if e.prompt.len() + k > ctx + 1 {
                bail!(
                    "episode {r} has {} prompt and {k} response tokens, more than the model's context of {ctx}",
                    e.prompt.len()
                );
            }
            if let Some(&bad) = e
                .prompt
                .iter()
                .chain(&e.response[..k])
                .find(|&&x| x >= vocab)
            {
                bail!("episode {r} holds token id {bad}, outside the vocabulary of {vocab}");
            }
            if k > 0 {
                active.push((r, k));
            }
        }
        if active.is_empty() {
            return Ok(out);
        }

        // Prompts not in the cache, each computed once.
        let mut missing: Vec<&[u32]> = Vec::new();
        for &(r, _) in &active {
            let p = episodes[r].prompt.as_slice();
            if self.entries.contains_key(p) {
                self.hits += 1;
            } else {
                self.misses += 1;
                if !missing.contains(&p) {
                    missing.push(p);
                }
            }
        }
        let mut fresh: HashMap<Vec<u32>, PromptKv> = HashMap::new();
        let v = vocab as usize;
        if !missing.is_empty() {
            let t = missing.iter().map(|p| p.len()).max().unwrap_or(0);
            let mut tokens = Vec::with_capacity(missing.len() * t);
            let mut start = Vec::with_capacity(missing.len());
            for p in &missing {
                start.push(t - p.len());
                tokens.extend(std::iter::repeat_n(eos, t - p.len()));
                tokens.extend_from_slice(p);
            }
            let (k, vv, logits) = prefill(model, &tokens, &start, t)?;
            for (b, p) in missing.iter().enumerate() {
                let (lo, hi) = ((b * t + start[b]) * kw, (b + 1) * t * kw);
                let row = &logits[b * v..(b + 1) * v];
                let z = lse(row);
                let entry = PromptKv {
                    k: k.iter().map(|x| x[lo..hi].to_vec()).collect(),
                    v: vv.iter().map(|x| x[lo..hi].to_vec()).collect(),
                    first: row.iter().map(|&x| (x as f64 - z) as f32).collect(),
                };
                fresh.insert(p.to_vec(), entry);
            }
        }
        let entry = |p: &[u32]| -> &PromptKv {
            match self.entries.get(p) {
                Some(e) => e,
                None => &fresh[p],
            }
        };
        for &(r, _) in &active {
            let e = episodes[r];
            out[r].push(entry(&e.prompt).first[e.response[0] as usize]);
        }

        // Row b feeds its kept response tokens but the last: q_b = k_b - 1 queries predicting
        // kept tokens 1..k_b. Rows are left padded to T so that all queries end at index T - 1;
        // the Q query indices [T - Q, T) of a row with fewer than Q queries start with its last
        // prompt tokens, recomputed rather than read from the cache.
        let rows: Vec<(usize, usize)> = active.iter().copied().filter(|x| x.1 > 1).collect();
        if !rows.is_empty() {
            let seqs: Vec<Vec<u32>> = rows
                .iter()
                .map(|&(r, k)| {
                    let e = episodes[r];
                    let mut s = e.prompt.clone();
                    s.extend_from_slice(&e.response[..k - 1]);
                    s
                })
                .collect();
            let nb = seqs.len();
            let q = rows.iter().map(|x| x.1 - 1).max().unwrap_or(0);
            let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
            let len = t - q;
            let start: Vec<usize> = seqs.iter().map(|x| t - x.len()).collect();
            let mut kc = vec![vec![0.0f32; nb * t * kw]; layers];
            let mut vc = vec![vec![0.0f32; nb * t * kw]; layers];
            let mut tokens = vec![eos; nb * q];
            let mut heads = Vec::new();
            for (b, (s, &(r, k))) in seqs.iter().zip(&rows).enumerate() {
                let st = start[b];
                // Cached indices [st, len) are prompt positions [0, len - st).
                let n = len.saturating_sub(st);
                if n > 0 {
                    let cached = entry(&episodes[r].prompt);
                    let dst = (b * t + st) * kw;
                    for l in 0..layers {
                        kc[l][dst..dst + n * kw].copy_from_slice(&cached.k[l][..n * kw]);
                        vc[l][dst..dst + n * kw].copy_from_slice(&cached.v[l][..n * kw]);
                    }
                }
                for i in 0..q {
                    let idx = len + i;
                    if idx >= st {
                        tokens[b * q + i] = s[idx - st];
                    }
                }
                heads.extend((q + 1 - k..q).map(|i| b * q + i));
            }
            let logits = extend(model, kc, vc, start, t, len, &tokens, &heads)?;
            let mut at = 0;
            for &(r, k) in &rows {
                let e = episodes[r];
                for j in 1..k {
                    out[r].push(logprob(&logits[at * v..(at + 1) * v], e.response[j]));
                    at += 1;
                }
            }
        }

        for (p, entry) in fresh {
            let size = entry.bytes();
            if self.bytes + size <= self.limit {
                self.bytes += size;
                self.entries.insert(p, entry);
            }
        }
        Ok(out)
    }
}
