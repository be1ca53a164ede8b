//! A training batch on the device, for the forward passes that keep activations and their
//! backward passes (`cuda::gpt2_train`, `cuda::llama_train`): the left-padded tokens of a
//! `batch::Batch` with their positions, the rows whose logits are wanted, and the index
//! buckets the backward passes scatter by.

use crate::batch::Batch;
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::RowBuckets;
use anyhow::{Result, bail};

pub struct TrainBatch {
    pub b: usize,
    pub t: usize,
    /// (B*T) token ids, padding included.
    pub tokens: DevBuf<u32>,
    /// (B*T) position ids t - start[b] (0 on padding): GPT-2's learned positions and Llama's
    /// rotary ones alike.
    pub pos: DevBuf<i32>,
    /// (B) first real index of each row.
    pub start: DevBuf<i32>,
    /// Number of chosen (row, position) pairs.
    pub m: usize,
    /// (M) flat row b T + t of each chosen pair, in the order given (one unused entry more, so
    /// that the buffer is never empty: a CUDA allocation cannot be).
    pub rows: DevBuf<i32>,
    /// (B) flat row of each row's last index, where the value head reads.
    pub last: DevBuf<i32>,
    /// The chosen rows, the token ids and the position ids as scatter buckets.
    pub row_buckets: RowBuckets,
    pub token_buckets: RowBuckets,
    pub pos_buckets: RowBuckets,
}

impl TrainBatch {
    /// Uploads `batch` with logits wanted at `positions` ((row, index) pairs, each at most once),
    /// for a model of `vocab` tokens and a context of `max_len`. Every row ends at index T - 1,
    /// where the value head reads. `reuse`'s buffers are written where they are long enough.
    pub fn new(
        g: &Gpu,
        batch: &Batch,
        positions: &[(usize, usize)],
        vocab: usize,
        max_len: usize,
        reuse: Option<TrainBatch>,
    ) -> Result<Self> {
        let last = vec![batch.t.saturating_sub(1); batch.b];
        Self::ending_at(g, batch, positions, &last, (vocab, max_len), reuse)
    }

    /// `new` for a batch whose row r ends at index `last[r]` (a rollout's batch, where a row's
    /// kept tokens end before the columns every row was fed).
    pub fn ending_at(
        g: &Gpu,
        batch: &Batch,
        positions: &[(usize, usize)],
        last: &[usize],
        (vocab, max_len): (usize, usize),
        reuse: Option<TrainBatch>,
    ) -> Result<Self> {
        let (b, t) = (batch.b, batch.t);
        batch.check(vocab, max_len)?;
        if last.len() != b || last.iter().any(|&i| i >= t) {
            bail!("{} last indices for a batch of {b} x {t}", last.len());
        }
        let mut rows = Vec::with_capacity(positions.len());
        let mut seen = vec![false; b * t];
        for &(r, i) in positions {
            if r >= b || i >= t {
                bail!("logit position ({r}, {i}) is outside the batch of {b} x {t}");
            }
            if std::mem::replace(&mut seen[r * t + i], true) {
                bail!("logit position ({r}, {i}) is asked for twice");
            }
            rows.push(r * t + i);
        }
        let pos: Vec<usize> = batch.position_ids().iter().map(|&p| p as usize).collect();
        let tokens: Vec<usize> = batch.tokens.iter().map(|&x| x as usize).collect();
        let to_i32 = |xs: &[usize]| xs.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let last: Vec<usize> = last.iter().enumerate().map(|(r, &i)| r * t + i).collect();
        let r = reuse.map(|r| {
            (
                (Some(r.tokens), Some(r.pos), Some(r.start)),
                (Some(r.rows), Some(r.last)),
                (
                    Some(r.row_buckets),
                    Some(r.token_buckets),
                    Some(r.pos_buckets),
                ),
            )
        });
        let ((tok, ps, st), (rw, la), (rb, tb, pb)) = r.unwrap_or_default();
        Ok(TrainBatch {
            b,
            t,
            tokens: g.upload_reusing(tok, &batch.tokens)?,
            pos: g.upload_reusing(ps, &to_i32(&pos))?,
            start: g.upload_reusing(st, &to_i32(&batch.start))?,
            m: rows.len(),
            rows: g.upload_reusing(
                rw,
                &to_i32(&rows).into_iter().chain([0]).collect::<Vec<_>>(),
            )?,
            last: g.upload_reusing(la, &to_i32(&last))?,
            row_buckets: RowBuckets::reusing(g, rb, &rows)?,
            token_buckets: RowBuckets::reusing(g, tb, &tokens)?,
            pos_buckets: RowBuckets::reusing(g, pb, &pos)?,
        })
    }

    /// Refuses activations made for a batch of another shape: `b` x `t` with `m` logit rows.
    pub fn check_shape(&self, b: usize, t: usize, m: usize) -> Result<()> {
        if (b, t, m) != (self.b, self.t, self.m) {
            bail!(
                "activations of a {b} x {t} batch with {m} logit rows given a {} x {} batch with {}",
                self.b,
                self.t,
                self.m
            );
        }
        Ok(())
    }

    /// Rows in the batch, B T.
    pub fn n(&self) -> usize {
        self.b * self.t
    }
}
