//! Activations of a batch whose rows share prompts, stored once per distinct prompt.
//!
//! A rollout batch draws its prompts from a task's hundred or so, so the same prompt often comes
//! back within one batch. Every per-row operation (norms, dense layers, activations) only needs
//! each distinct prompt's rows once: the record holds U distinct prompts of P (left padded)
//! indices, then S steps of the B continuations. Attention is the one operation that mixes rows;
//! it runs on the (B, P + S) batch the record stands for, gathered from the record's rows, and
//! its gradients are added back onto them (a shared prompt row sums the gradients of every
//! continuation that reads it).

use crate::cpu::decode::Generation;
use anyhow::{Result, bail};

/// What a kept rollout hands the update: the record rows whose outputs predict the first
/// `kept[r]` tokens of each continuation (row by row), those positions' logits (M, V) taken from
/// the sampling steps' logits `steps` (S, B, V), and the record row of each continuation's last
/// kept token (its last prompt token when none is kept), where the value head reads.
pub struct KeptRows {
    pub rows: Vec<usize>,
    pub logits: Vec<f32>,
    pub last: Vec<usize>,
}

/// The `KeptRows` of a rollout of `generations` with prompts padded to `p` indices.
pub fn kept_rows(
    layout: &SharedLayout,
    generations: &[Generation],
    steps: &[f32],
    p: usize,
    kept: &[usize],
    v: usize,
) -> Result<KeptRows> {
    let b = generations.len();
    if kept.len() != b {
        bail!("{} kept lengths for a rollout of {b} rows", kept.len());
    }
    let at = |r: usize, i: usize| layout.map[r * layout.t + i];
    let mut out = KeptRows {
        rows: Vec::new(),
        logits: Vec::new(),
        last: Vec::with_capacity(b),
    };
    for (r, &k) in kept.iter().enumerate() {
        if k > generations[r].tokens.len() {
            bail!(
                "row {r} keeps {k} tokens of a continuation of {}",
                generations[r].tokens.len()
            );
        }
        for j in 0..k {
            out.rows.push(at(r, p - 1 + j));
            let o = (j * b + r) * v;
            out.logits.extend_from_slice(&steps[o..o + v]);
        }
        out.last.push(at(r, p - 1 + k));
    }
    Ok(out)
}

/// Per layer, the keys and values (B, Tmax, W) of B rows that each start from a copy of their
/// prompt's: `layer(l)` gives layer l's keys and values (U, P, W) of the U distinct prompts, and
/// row b continues prompt `prompt_of[b]`. Positions P.. are left zero for the continuations.
pub fn fan_out_prompt_kv<'a>(
    layers: usize,
    layer: impl Fn(usize) -> (&'a [f32], &'a [f32]),
    prompt_of: &[usize],
    p: usize,
    tmax: usize,
    w: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let b = prompt_of.len();
    let mut k = vec![vec![0.0f32; b * tmax * w]; layers];
    let mut v = vec![vec![0.0f32; b * tmax * w]; layers];
    for l in 0..layers {
        let (pk, pv) = layer(l);
        for (bi, &ui) in prompt_of.iter().enumerate() {
            let (src, dst) = (ui * p * w, bi * tmax * w);
            k[l][dst..dst + p * w].copy_from_slice(&pk[src..src + p * w]);
            v[l][dst..dst + p * w].copy_from_slice(&pv[src..src + p * w]);
        }
    }
    (k, v)
}

/// The first step's logits (B, V) of B rows from their distinct prompts' (U, V), with room for
/// all `steps` steps.
pub fn first_step_logits(first: &[f32], prompt_of: &[usize], v: usize, steps: usize) -> Vec<f32> {
    let mut logits = Vec::with_capacity(steps * prompt_of.len() * v);
    for &ui in prompt_of {
        logits.extend_from_slice(&first[ui * v..(ui + 1) * v]);
    }
    logits
}

/// How the record's flat rows make up the left-padded (B, T) batch, T = P + S.
#[derive(Clone, Debug, Default)]
pub struct SharedLayout {
    pub b: usize,
    pub t: usize,
    /// First real index of each batch row.
    pub start: Vec<usize>,
    /// (B T) the record row of every batch index.
    pub map: Vec<usize>,
    /// (B T) whether the batch index is where its record row's output gradient enters: one
    /// batch index per record row, so that a shared prompt row's own output counts once.
    pub owner: Vec<bool>,
    /// Record rows that can receive a gradient, all before the others: the last step's rows
    /// come last, and nothing scored reads them (they only give the value head its input).
    pub live: usize,
}

impl SharedLayout {
    /// The layout of U distinct prompts of P indices (record rows u P + i) and S steps of B
    /// continuations (record rows U P + s B + b); batch row b continues prompt `prompt_of[b]`, whose
    /// first real index is `prompt_start[prompt_of[b]]`. The first batch row of each prompt owns
    /// its rows.
    pub fn new(prompt_of: &[usize], prompt_start: &[usize], p: usize, s: usize) -> Self {
        let (b, u, t) = (prompt_of.len(), prompt_start.len(), p + s);
        let mut map = Vec::with_capacity(b * t);
        let mut owner = Vec::with_capacity(b * t);
        let mut seen = vec![false; u];
        for (bi, &ui) in prompt_of.iter().enumerate() {
            let first = !seen[ui];
            seen[ui] = true;
            for i in 0..t {
                if i < p {
                    map.push(ui * p + i);
                    owner.push(first);
                } else {
                    map.push(u * p + (i - p) * b + bi);
                    owner.push(true);
                }
            }
        }
        SharedLayout {
            b,
            t,
            start: prompt_of.iter().map(|&ui| prompt_start[ui]).collect(),
            map,
            owner,
            live: u * p + s.saturating_sub(1) * b,
        }
    }
}

/// out (B T, W) = inp[map] (rows of N, W): the batch's rows gathered from the record; with
/// `owner`, the indices that do not own their row get zeros
pub fn gather_rows_forward(
    out: &mut [f32],
    inp: &[f32],
    map: &[usize],
    owner: Option<&[bool]>,
    w: usize,
) {
    for (i, (dst, &r)) in out.chunks_exact_mut(w).zip(map).enumerate() {
        if owner.is_some_and(|o| !o[i]) {
            dst.fill(0.0);
        } else {
            dst.copy_from_slice(&inp[r * w..(r + 1) * w]);
        }
    }
}

/// dinp[map] (N, W) += dout (B T, W): every batch index adds onto its record row
pub fn gather_rows_backward(dinp: &mut [f32], dout: &[f32], map: &[usize], w: usize) {
    for (src, &r) in dout.chunks_exact(w).zip(map) {
        for (x, &y) in dinp[r * w..(r + 1) * w].iter_mut().zip(src) {
            *x += y;
        }
    }
}
