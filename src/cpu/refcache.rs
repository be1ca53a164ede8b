//! The frozen reference model's log-probabilities of the kept response tokens, with the keys and
//! values of its prompts kept across updates, every shared prefix once.
//!
//! The reference never changes and a task has only about a hundred prompts, so the prompt part
//! of its forward pass is the same every time a prompt comes back; and a chat model's prompts
//! share most of their tokens (the system turn, the task's instruction). The cache holds the
//! prompts as prefix rows (`cpu::prefix`): every layer's keys and values of each distinct prefix,
//! and its final hidden state, which the head turns into the log-probabilities of a first
//! response token. An update runs only the prompt rows not yet kept and the kept response tokens
//! but the last, all episodes in one pass, each row attending along its path. Positions count
//! from each sequence's first token, so a row's keys and values depend on its prefix alone.

use crate::cpu::kv::RowKv;
use crate::cpu::prefix::PrefixRows;
use crate::cpu::rows::{Prepared, RowModel};
use crate::model::spec::Model;
use crate::ppo::loss::Episode;
use crate::ppo::loss::kept_tokens;
use anyhow::{Result, bail};
use rayon::prelude::*;
use std::collections::HashSet;

pub use crate::ppo::policy::REFERENCE_CACHE_BYTES as DEFAULT_LIMIT_BYTES;

/// Prompt rows of one frozen model, bounded in memory: once full, prompts not yet seen are
/// computed for the update that needs them and not kept.
pub struct RefCache {
    rows: PrefixRows,
    /// Keys and values of every row, made for the model on first use.
    kv: Option<RowKv>,
    /// The model's weights prepared for its forwards (`RowModel::prepare`), made with `kv`.
    prep: Option<Prepared>,
    /// (R, C) the final hidden state of every row.
    hidden: Vec<f32>,
    /// C, the width of a hidden state.
    width: usize,
    /// The rows where a kept prompt ends.
    prompts: HashSet<usize>,
    limit: usize,
    hits: u64,
    misses: u64,
}

impl Default for RefCache {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT_BYTES)
    }
}

/// log-sum-exp of a row of logits, summed in f64 as `cpu::model::token_logprobs` does.
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
            rows: PrefixRows::default(),
            kv: None,
            prep: None,
            hidden: Vec::new(),
            width: 0,
            prompts: HashSet::new(),
            limit: limit_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// Distinct prompts kept.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Bytes of keys, values and hidden states kept.
    pub fn bytes(&self) -> usize {
        let per_row = self.kv.as_ref().map_or(0, RowKv::row_bytes);
        self.rows.len() * per_row + self.hidden.len() * 4
    }

    /// Episodes whose prompt was found in the cache, and episodes whose prompt was computed.
    pub fn hits_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Forgets every prompt: needed when the model the cache was filled from changes.
    pub fn clear(&mut self) {
        self.truncate(0);
        self.kv = None;
        self.prep = None;
        self.width = 0;
    }

    /// Forgets rows `n..`.
    fn truncate(&mut self, n: usize) {
        self.rows.truncate(n);
        if let Some(kv) = &mut self.kv {
            kv.truncate(n);
        }
        self.hidden.truncate(n * self.width);
        self.prompts.retain(|&r| r < n);
    }

    /// Per episode, the log-probabilities under `model` (always the same frozen model for one
    /// cache) of its kept response tokens (`ppo::loss::kept_tokens`), each predicted from the
    /// prompt and the response tokens before it.
    pub fn logprobs(
        &mut self,
        model: &Model,
        episodes: &[&Episode],
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        match model {
            Model::Gpt2(m) => self.logprobs_of(m, episodes, eos, train_eos),
            Model::Llama(m) => self.logprobs_of(m, episodes, eos, train_eos),
        }
    }

    fn logprobs_of<M: RowModel>(
        &mut self,
        model: &M,
        episodes: &[&Episode],
        eos: u32,
        train_eos: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let ctx = model.context();
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
        let c = model.hidden_size();
        if self.kv.is_none() {
            self.kv = Some(model.row_kv());
            self.prep = Some(model.prepare());
            self.width = c;
        }

        // The prompts' rows, then the rows of each response's kept tokens but the last; the
        // row of token j - 1 (the prompt's last for j = 0) predicts kept token j.
        let kept = self.rows.len();
        let mut predict: Vec<Vec<usize>> = Vec::with_capacity(active.len());
        for &(r, _) in &active {
            let end = self
                .rows
                .insert(None, &episodes[r].prompt)
                .expect("prompts are not empty");
            if end < kept {
                self.hits += 1;
            } else {
                self.misses += 1;
            }
            predict.push(vec![end]);
        }
        let prompt_rows = self.rows.len();
        for (&(r, k), rows) in active.iter().zip(&mut predict) {
            for &tok in &episodes[r].response[..k - 1] {
                let at = *rows.last().expect("each starts with its prompt's end");
                let next = self.rows.insert(Some(at), &[tok]).expect("one token");
                rows.push(next);
            }
        }
        let all = self.rows.len();
        if all > kept {
            let paths = self.rows.paths(kept..all);
            let heads: Vec<usize> = (0..all - kept).collect();
            let kv = self.kv.as_mut().expect("made above");
            let hidden = model.rows_forward(
                self.prep.as_ref().expect("made with kv"),
                kv,
                &self.rows.tokens[kept..all],
                &self.rows.pos[kept..all],
                paths.all(),
                &heads,
                None,
            );
            self.hidden.truncate(kept * c);
            self.hidden.extend_from_slice(&hidden);
        }
        let mut picked = Vec::new();
        for rows in &predict {
            for &row in rows {
                picked.extend_from_slice(&self.hidden[row * c..(row + 1) * c]);
            }
        }
        let prep = self.prep.as_ref().expect("made with kv");
        let logits = model.head_logits(prep, &picked);
        let v = vocab as usize;
        let tokens: Vec<u32> = active
            .iter()
            .flat_map(|&(r, k)| episodes[r].response[..k].iter().copied())
            .collect();
        let lps: Vec<f32> = logits
            .par_chunks(v)
            .zip(&tokens)
            .map(|(row, &tok)| logprob(row, tok))
            .collect();
        let mut at = 0;
        for &(r, k) in &active {
            out[r].extend_from_slice(&lps[at..at + k]);
            at += k;
        }

        // Keep the prompts' rows, unless that goes over the bound; never the responses'.
        self.prompts.extend(predict.iter().map(|rows| rows[0]));
        self.truncate(prompt_rows);
        if self.bytes() > self.limit {
            self.truncate(kept);
        }
        Ok(out)
    }
}
