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

/// u (B): step `step`'s draws from `draws`, in row order among the rows not `done` (`cursor`
/// counts the draws taken), or with `keyed` row b's at draws[step B + b]
#[allow(clippy::too_many_arguments)]
pub fn draw_uniforms(
    g: &Gpu,
    u: &mut Buf,
    draws: &Buf,
    done: &DevBuf<i32>,
    cursor: &mut DevBuf<i32>,
    step: usize,
    keyed: bool,
    b: usize,
) -> Result<()> {
    need("draw_uniforms u", u.len().min(done.len()), b)?;
    need("draw_uniforms cursor", cursor.len(), 1)?;
    if keyed {
        need("draw_uniforms draws", draws.len(), (step + 1) * b)?;
    }
    let args = [
        u.into(),
        draws.into(),
        done.into(),
        cursor.into(),
        int("step", step)?.into(),
        i32::from(keyed).into(),
        int("B", b)?.into(),
    ];
    g.launch("sampling.cu", "draw_uniforms", per_row(1, 32), &args)
}

/// Where a decoding loop keeps its state on the device: the tokens and log-probs of every step
/// (S, B), each row's next input and its position (B), and whether it is done (B).
pub struct DecodeState<'a> {
    pub out_tokens: &'a mut DevBuf<u32>,
    pub out_logprobs: &'a mut Buf,
    pub ids: &'a mut DevBuf<u32>,
    pub pos: &'a mut DevBuf<i32>,
    pub done: &'a mut DevBuf<i32>,
}

/// out_tokens, out_logprobs (S, B) row `step` = tokens, logprobs (B); ids (B) = tokens, or eos
/// for rows done; done |= tokens == eos; pos += 1
#[allow(clippy::too_many_arguments)]
pub fn feed_sampled(
    g: &Gpu,
    st: DecodeState,
    tokens: &DevBuf<u32>,
    logprobs: &Buf,
    step: usize,
    eos: u32,
    b: usize,
) -> Result<()> {
    need("feed_sampled tokens", tokens.len().min(logprobs.len()), b)?;
    need("feed_sampled ids", st.ids.len().min(st.pos.len()), b)?;
    need("feed_sampled done", st.done.len(), b)?;
    need(
        "feed_sampled outputs",
        st.out_tokens.len().min(st.out_logprobs.len()),
        (step + 1) * b,
    )?;
    let args = [
        st.out_tokens.into(),
        st.out_logprobs.into(),
        st.ids.into(),
        st.pos.into(),
        st.done.into(),
        tokens.into(),
        logprobs.into(),
        int("step", step)?.into(),
        eos.into(),
        int("B", b)?.into(),
    ];
    g.launch("sampling.cu", "feed_sampled", super::blocks(b, 256), &args)
}
