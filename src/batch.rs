//! The token batches every backend runs: a decoder's left-padded batch of sequences (`Batch`),
//! and an encoder's packed sequences (`EncoderInput`), and the checks of what a decoder is fed.
//! Below both backends, so each takes the same input and refuses the same bad input.

use anyhow::{Result, bail};

/// Token ids of B sequences, left padded to a common length T.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// (B, T) row-major; entries before `start[r]` are padding.
    pub tokens: Vec<u32>,
    /// First real index of each row.
    pub start: Vec<usize>,
    pub b: usize,
    pub t: usize,
}

impl Batch {
    /// Left-pads `seqs` with `pad` to the longest one. Every sequence needs at least one token.
    pub fn left_padded(seqs: &[Vec<u32>], pad: u32) -> Result<Self> {
        if seqs.is_empty() {
            bail!("a batch needs at least one sequence");
        }
        if let Some(r) = seqs.iter().position(|s| s.is_empty()) {
            bail!("sequence {r} of the batch is empty");
        }
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(seqs.len() * t);
        let mut start = Vec::with_capacity(seqs.len());
        for s in seqs {
            start.push(t - s.len());
            tokens.extend(std::iter::repeat_n(pad, t - s.len()));
            tokens.extend_from_slice(s);
        }
        Ok(Batch {
            tokens,
            start,
            b: seqs.len(),
            t,
        })
    }

    /// Position ids (B, T): t - start[r] for real tokens, 0 for padding (it is never attended to).
    pub fn position_ids(&self) -> Vec<u32> {
        let mut pos = Vec::with_capacity(self.b * self.t);
        for &st in &self.start {
            for i in 0..self.t {
                pos.push(i.saturating_sub(st) as u32);
            }
        }
        pos
    }

    /// Every real (row, position) pair, in row-major order.
    pub fn real_positions(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (r, &st) in self.start.iter().enumerate() {
            out.extend((st..self.t).map(|t| (r, t)));
        }
        out
    }

    /// Refuses a batch whose sizes disagree, with an empty row, a row longer than `context` or a
    /// token outside a vocabulary of `vocab`.
    pub fn check(&self, vocab: usize, context: usize) -> Result<()> {
        if self.tokens.len() != self.b * self.t || self.start.len() != self.b {
            bail!(
                "batch of {} x {} has {} tokens and {} starts",
                self.b,
                self.t,
                self.tokens.len(),
                self.start.len()
            );
        }
        for (r, &st) in self.start.iter().enumerate() {
            if st >= self.t {
                bail!(
                    "row {r} of the batch has no tokens (start {st}, length {})",
                    self.t
                );
            }
            if self.t - st > context {
                bail!(
                    "row {r} has {} tokens, more than the model's context of {}",
                    self.t - st,
                    context
                );
            }
            let row = &self.tokens[r * self.t + st..(r + 1) * self.t];
            if let Some(i) = row.iter().position(|&x| x as usize >= vocab) {
                bail!(
                    "token id {} at row {r}, index {} is outside the vocabulary of {}",
                    row[i],
                    st + i,
                    vocab
                );
            }
        }
        Ok(())
    }
}

/// Token ids of B sequences laid out as rows; N = total rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncoderInput {
    /// (N)
    pub input_ids: Vec<u32>,
    /// (N)
    pub token_type_ids: Vec<u32>,
    /// (N) whether the row is a real token (may be attended and is pooled).
    pub mask: Vec<bool>,
    /// (B + 1): sequence s is rows starts[s]..starts[s + 1]; its positions count from 0 there.
    pub starts: Vec<usize>,
}

impl EncoderInput {
    pub fn new() -> Self {
        EncoderInput {
            starts: vec![0],
            ..Default::default()
        }
    }

    /// Appends one sequence of real tokens.
    pub fn push(&mut self, ids: &[u32], type_ids: &[u32]) {
        assert_eq!(ids.len(), type_ids.len());
        self.input_ids.extend_from_slice(ids);
        self.token_type_ids.extend_from_slice(type_ids);
        self.mask.extend(std::iter::repeat_n(true, ids.len()));
        self.starts.push(self.input_ids.len());
    }

    /// B sequences padded to T, as tokenizers return them: ids, type ids, mask (B, T).
    pub fn padded(ids: &[u32], type_ids: &[u32], mask: &[u32], b: usize, t: usize) -> Self {
        assert!(ids.len() == b * t && type_ids.len() == b * t && mask.len() == b * t);
        EncoderInput {
            input_ids: ids.to_vec(),
            token_type_ids: type_ids.to_vec(),
            mask: mask.iter().map(|&m| m != 0).collect(),
            starts: (0..=b).map(|s| s * t).collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.input_ids.len()
    }

    pub fn batch(&self) -> usize {
        self.starts.len() - 1
    }
}

/// Prompts a decoder can take: none empty, each fitting a context of `context` positions with
/// `new_tokens` more, every id (the padding one `pad` too) inside a vocabulary of `vocab`.
pub fn check_prompts(
    prompts: &[Vec<u32>],
    new_tokens: usize,
    pad: u32,
    context: usize,
    vocab: usize,
) -> Result<()> {
    for (r, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            bail!("prompt {r} is empty");
        }
        if p.len() + new_tokens > context {
            bail!(
                "prompt {r} has {} tokens; with {new_tokens} new tokens that exceeds the model's context of {context} positions",
                p.len()
            );
        }
        if let Some(&bad) = p.iter().find(|&&x| x as usize >= vocab) {
            bail!("prompt {r} holds token id {bad}, outside the vocabulary of {vocab}");
        }
    }
    if pad as usize >= vocab {
        bail!("padding token {pad} is outside the vocabulary of {vocab}");
    }
    Ok(())
}

/// Tokens a decoding step can take: one per row, inside a vocabulary of `vocab`, with room left
/// in a cache of `tmax` positions that holds `len`.
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
