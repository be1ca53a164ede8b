//! Launcher of `kernels/sampling.cu`, mirroring `sample`: next-token sampling for a batch of rows.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{int, need, per_row};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// Sampling settings of one launch, as `sample::SamplingParams` (top_k 0 = off, top_p 1 = off).
#[derive(Clone, Copy, Debug)]
pub struct SampleArgs {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
    pub step: u32,
}

/// tokens (B), logprobs (B) from logits (B, V); `u` (B) gives the uniform draws, else a counter RNG
#[allow(clippy::too_many_arguments)]
pub fn sample_forward(
    g: &Gpu,
    tokens: &mut DevBuf<u32>,
    logprobs: &mut Buf,
    logits: &Buf,
    u: Option<&Buf>,
    b: usize,
    v: usize,
    s: SampleArgs,
) -> Result<()> {
    need("sample_forward logits", logits.len(), b * v)?;
    need("sample_forward tokens", tokens.len().min(logprobs.len()), b)?;
    if let Some(u) = u {
        need("sample_forward u", u.len(), b)?;
    }
    let args = [
        tokens.into(),
        logprobs.into(),
        logits.into(),
        u.into(),
        int("B", b)?.into(),
        int("V", v)?.into(),
        s.temperature.into(),
        int("top_k", s.top_k)?.into(),
        s.top_p.into(),
        s.seed.into(),
        s.step.into(),
    ];
    g.launch("sampling.cu", "sample_forward", per_row(b, 1024), &args)
}
