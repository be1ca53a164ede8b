//! What the GPU decoders of both families share: sampling a batch of logits on the device, and
//! the generation loop of `cpu::decode::generate`.

use super::device::Gpu;
use super::ops::{self as k, SampleArgs};
use crate::sample::Generation;
use crate::sample::SamplingParams;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// A decoder that holds next-token logits on the device and takes one token per row.
pub trait DeviceDecoder {
    /// Samples one token per row from the current logits: tokens and their log-probabilities.
    fn sample(&self, params: &SamplingParams, seed: u64, step: u32)
    -> Result<(Vec<u32>, Vec<f32>)>;
    /// Feeds one token per row.
    fn step(&mut self, tokens: &[u32]) -> Result<()>;
}

/// `sample_forward` over logits (B, V), with the counter-based generator keyed by (seed, row, step).
pub fn sample_rows(
    g: &Gpu,
    logits: &CudaSlice<f32>,
    b: usize,
    v: usize,
    params: &SamplingParams,
    seed: u64,
    step: u32,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let mut tok = g.zeros::<u32>(b)?;
    let mut lp = g.zeros::<f32>(b)?;
    let args = SampleArgs {
        temperature: params.temperature,
        top_k: params.top_k,
        top_p: params.top_p,
        seed,
        step,
    };
    k::sample_forward(g, &mut tok, &mut lp, logits, None, b, v, args)?;
    Ok((g.download(&tok)?, g.download(&lp)?))
}

/// The loop of `cpu::decode::generate` over the decoder `prefill` makes for `rows` prompts: a row
/// stops after it samples `eos` (kept, with its log-probability) or after `max_new_tokens`.
pub fn generate_rows<D: DeviceDecoder>(
    rows: usize,
    params: &SamplingParams,
    eos: u32,
    seed: u64,
    prefill: impl FnOnce() -> Result<D>,
) -> Result<Vec<Generation>> {
    let mut out = vec![Generation::default(); rows];
    if rows == 0 || params.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut dec = prefill()?;
    let mut done = vec![false; rows];
    for step in 0..params.max_new_tokens {
        let (toks, lps) = dec.sample(params, seed, step as u32)?;
        let mut next = vec![eos; rows];
        for (r, o) in out.iter_mut().enumerate() {
            if done[r] {
                continue;
            }
            o.tokens.push(toks[r]);
            o.logprobs.push(lps[r]);
            next[r] = toks[r];
            done[r] = toks[r] == eos;
        }
        if done.iter().all(|&d| d) || step + 1 == params.max_new_tokens {
            break;
        }
        dec.step(&next)?;
    }
    Ok(out)
}
