//! The small buffers an update fills from the host at every step (the batch's tokens, positions
//! and buckets, the losses' inputs) and its few-float outputs, kept from one step to the next: an
//! input is written into its old buffer while that is long enough, an output reuses one of its
//! exact length. A run whose batches keep their shape allocates nothing for them.

use crate::cuda::device::{DevBuf, DevElem, Gpu};
use crate::cuda::model::DevActs;
use crate::cuda::model::train_batch::TrainBatch;
use anyhow::Result;

type Buf = DevBuf<f32>;

/// What the last step left to be filled again.
#[derive(Default)]
pub struct StepBuffers {
    pub batch: Option<TrainBatch>,
    /// A fresh forward's activations (the large ones: every layer's), for the next of the shape.
    pub acts: Option<DevActs>,
    /// A recorded rollout's logit rows (M).
    pub logit_rows: Option<DevBuf<i32>>,
    /// The value head's values (B), and the critic's loss (2) and its gradient (B).
    pub values: Option<Buf>,
    pub critic_loss: Option<Buf>,
    pub dvalues: Option<Buf>,
    /// The actor loss's inputs (M): sampled tokens, old, reference log-probs, advantages; the
    /// critic's (B): old values and returns.
    pub tokens: Option<DevBuf<u32>>,
    pub old_logprobs: Option<Buf>,
    pub ref_logprobs: Option<Buf>,
    pub advantages: Option<Buf>,
    pub old_values: Option<Buf>,
    pub returns: Option<Buf>,
}

/// A buffer of exactly `n` elements whose contents are not set: `old` when it is that long (an
/// output read back whole must be).
pub fn exactly<T: DevElem>(g: &Gpu, old: Option<DevBuf<T>>, n: usize) -> Result<DevBuf<T>> {
    match old {
        Some(b) if b.len() == n => Ok(b),
        _ => g.alloc(n),
    }
}
