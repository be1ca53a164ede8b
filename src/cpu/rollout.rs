//! Rollouts whose forward pass is kept for the update that follows, either family.
//!
//! The batch's prompts become prefix rows (`cpu::prefix`): a token prefix that several prompts
//! share (a chat model's system turn and the task's instruction; all of a prompt drawn twice) is
//! one set of rows, run once. Then every continuation has one row per step. The update
//! differentiates this pass instead of running the policy again: same weights, same tokens.

use crate::batch::check_prompts;
use crate::cpu::kv::RowKv;
use crate::cpu::prefix::{PrefixRows, RecordPaths};
use crate::cpu::rows::{Prepared, RowModel};
use crate::rng::Rng;
use crate::sample::{Generation, SamplingParams, sample_step};
use anyhow::{Result, bail};

/// A sampled batch whose forward pass was kept: the continuations, the prefix rows (the prompts'
/// shared rows, then S steps of B continuation rows, the last sampled token included since the
/// value head reads its hidden state), their activations, and the logits each token was sampled
/// from.
pub struct Rollout<M: RowModel> {
    pub generations: Vec<Generation>,
    rows: PrefixRows,
    record: M::Record,
    /// The row of each continuation's last prompt token.
    prompt_end: Vec<usize>,
    /// Rows of the prompts; continuation rows follow, step by step.
    prompt_rows: usize,
    steps: usize,
    /// (S, B, V): step s's logits of every continuation, before temperature.
    logits: Vec<f32>,
}

/// Samples a continuation of every prompt, as `generate` does (the same `rng` state gives the
/// same tokens, log-probabilities equal up to rounding), keeping the forward pass, with every
/// shared prompt prefix run once.
pub fn generate_recorded<M: RowModel>(
    model: &M,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    eos: u32,
    rng: &mut Rng,
) -> Result<Rollout<M>> {
    let s = params.max_new_tokens;
    if prompts.is_empty() || s == 0 {
        bail!("a recorded rollout needs at least one prompt and one new token");
    }
    check_prompts(prompts, s, eos, model.context(), model.vocab_size())?;
    let (b, v) = (prompts.len(), model.vocab_size());
    let mut rows = PrefixRows::default();
    let prompt_end: Vec<usize> = prompts
        .iter()
        .map(|p| rows.insert(None, p).expect("prompts are not empty"))
        .collect();
    let prompt_rows = rows.len();
    // Step rows, their tokens filled in as they are sampled.
    let mut prev = prompt_end.clone();
    for _ in 0..s {
        for p in &mut prev {
            *p = rows.push(Some(*p), eos);
        }
    }
    let paths = rows.paths(0..rows.len());
    let mut record = model.recording(&rows.pos, eos);
    let mut kv: RowKv = model.row_kv();
    // The stored weights: the policy's change every update, and transposing them for one
    // rollout (`cpu::transposed`) cost more than it saved.
    let prep = Prepared::Nothing;

    // The prompts' rows, each shared prefix once; the first step's logits at each distinct end.
    let mut ends: Vec<usize> = prompt_end.clone();
    ends.sort_unstable();
    ends.dedup();
    let hidden = model.rows_forward(
        &prep,
        &mut kv,
        &rows.tokens[..prompt_rows],
        &rows.pos[..prompt_rows],
        paths.range(0..prompt_rows),
        &ends,
        Some(&mut record),
    );
    let first = model.head_logits(&prep, &hidden);
    let mut logits = Vec::with_capacity(s * b * v);
    for e in &prompt_end {
        let u = ends
            .binary_search(e)
            .expect("every end is among the distinct ends");
        logits.extend_from_slice(&first[u * v..(u + 1) * v]);
    }

    let mut out = vec![Generation::default(); b];
    let mut done = vec![false; b];
    let all: Vec<usize> = (0..b).collect();
    for step in 0..s {
        let step_logits = &logits[step * b * v..(step + 1) * b * v];
        let next = sample_step(step_logits, v, &mut out, &mut done, params, eos, rng);
        let more = !(step + 1 == s || done.iter().all(|&x| x));
        let lo = prompt_rows + step * b;
        rows.tokens[lo..lo + b].copy_from_slice(&next);
        let hidden = model.rows_forward(
            &prep,
            &mut kv,
            &next,
            &rows.pos[lo..lo + b],
            paths.range(lo..lo + b),
            if more { &all[..] } else { &[] },
            Some(&mut record),
        );
        if !more {
            break;
        }
        logits.extend_from_slice(&model.head_logits(&prep, &hidden));
    }
    Ok(Rollout {
        generations: out,
        rows,
        record,
        prompt_end,
        prompt_rows,
        steps: s,
        logits,
    })
}

impl<M: RowModel> Rollout<M> {
    /// The row of continuation r's step j.
    fn step_row(&self, r: usize, j: usize) -> usize {
        self.prompt_rows + j * self.generations.len() + r
    }

    /// What the update's forward pass would give on the prompts followed by the first `kept[r]`
    /// tokens of each continuation: the logits (M, V) predicting those tokens (row by row), the
    /// final hidden state (B, C) of each row's last kept token (its last prompt token when none
    /// is kept), and the activations for backward with dlogits in that order.
    pub fn finish(mut self, model: &M, kept: &[usize]) -> Result<(Vec<f32>, Vec<f32>, M::Record)> {
        let (b, v) = (self.generations.len(), model.vocab_size());
        if kept.len() != b {
            bail!("{} kept lengths for a rollout of {b} rows", kept.len());
        }
        let mut scored = Vec::new();
        let mut logits = Vec::new();
        let mut last = Vec::with_capacity(b);
        for (r, &k) in kept.iter().enumerate() {
            if k > self.generations[r].tokens.len() {
                bail!(
                    "row {r} keeps {k} tokens of a continuation of {}",
                    self.generations[r].tokens.len()
                );
            }
            // Token j is predicted by the row before it: the prompt's end, or step j - 1.
            let before = |j: usize| {
                if j == 0 {
                    self.prompt_end[r]
                } else {
                    self.step_row(r, j - 1)
                }
            };
            for j in 0..k {
                scored.push(before(j));
                let o = (j * b + r) * v;
                logits.extend_from_slice(&self.logits[o..o + v]);
            }
            last.push(before(k));
        }
        // The last step's rows come last and nothing scored reads them.
        let live = self.step_row(0, self.steps - 1);
        model.finish_record(&mut self.record, scored, RecordPaths::new(&self.rows, live));
        let mut hidden = Vec::with_capacity(b * model.hidden_size());
        for &row in &last {
            hidden.extend_from_slice(model.final_hidden(&self.record, row));
        }
        Ok((logits, hidden, self.record))
    }
}
