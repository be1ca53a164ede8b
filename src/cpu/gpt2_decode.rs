//! Batched GPT-2 decoding with a key/value cache. All prompts are prefilled at once, left padded
//! (see `cpu::gpt2`), then every step feeds one token per row. A row that has produced end-of-text
//! stops: from then on it is fed end-of-text as padding and its outputs are ignored.

use crate::batch::{Batch, check_prompts, check_step};
use crate::cpu::gpt2::{ChunkBuffers, chunk_forward, head_forward};
use crate::cpu::kv::{Attend, KvCache};
use crate::model::gpt2::Gpt2;
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams, sample_step};
use anyhow::{Result, bail};

/// The decoding state of a batch: per layer, the keys and values of every position so far.
pub struct Gpt2Decoder<'m> {
    model: &'m Gpt2,
    cache: KvCache,
    buf: ChunkBuffers,
    logits: Vec<f32>,
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
        check_prompts(
            prompts,
            max_new_tokens,
            pad,
            cfg.n_positions,
            cfg.vocab_size,
        )?;
        let batch = Batch::left_padded(prompts, pad)?;
        let cache = KvCache::new(
            cfg.n_layer,
            cfg.n_embd,
            batch.t + max_new_tokens,
            batch.start.clone(),
        );
        let mut d = Gpt2Decoder {
            model,
            cache,
            buf: ChunkBuffers::default(),
            logits: Vec::new(),
        };
        let last: Vec<usize> = (0..batch.b).map(|r| r * batch.t + batch.t - 1).collect();
        d.run(&batch.tokens, batch.t, &last);
        Ok(d)
    }

    /// Feeds `tq` tokens per row (tokens (B, tq)) and returns the logits (P, V) of the new rows
    /// `heads` (index b * tq + i), in the order given.
    pub fn extend(&mut self, tokens: &[u32], tq: usize, heads: &[usize]) -> Result<&[f32]> {
        let b = self.cache.rows();
        if tokens.len() != b * tq {
            bail!(
                "{} tokens do not make {tq} new positions of {b} rows",
                tokens.len()
            );
        }
        self.cache.check_room(tq)?;
        if let Some(&bad) = tokens
            .iter()
            .find(|&&x| x as usize >= self.model.config.vocab_size)
        {
            bail!("token id {bad} is outside the vocabulary");
        }
        if let Some(&h) = heads.iter().find(|&&h| h >= b * tq) {
            bail!("head row {h} is outside the {} new rows", b * tq);
        }
        self.run(tokens, tq, heads);
        Ok(&self.logits)
    }

    /// Cache capacity in positions.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Next-token logits (B, V) after the last position fed.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Number of positions (padding included) in the cache.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Feeds one token per row (B).
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        check_step(
            tokens,
            self.cache.rows(),
            self.cache.len(),
            self.cache.capacity(),
            self.model.config.vocab_size,
        )?;
        let rows: Vec<usize> = (0..self.cache.rows()).collect();
        self.run(tokens, 1, &rows);
        Ok(())
    }

    /// Runs `tq` new positions per row (tokens (B, tq)) against the cache and leaves the logits
    /// (P, V) of the new rows `heads` (index b * tq + i).
    fn run(&mut self, tokens: &[u32], tq: usize, heads: &[usize]) {
        let pos = self.cache.positions(tq);
        let mut attend = Attend::Cache {
            cache: &mut self.cache,
            tq,
        };
        let hidden = chunk_forward(
            self.model,
            &mut self.buf,
            tokens,
            &pos,
            &mut attend,
            heads,
            None,
        );
        self.logits = head_forward(self.model, &hidden);
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
