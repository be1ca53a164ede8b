//! Launcher of `kernels/encoder_attention.cu`, mirroring `cpu::ops::encoder_attention`:
//! bidirectional attention over packed sequences (BERT), forward only.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{int, need, warps};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// out (N, C) = bidirectional attention within packed sequences [starts[s], starts[s+1])
#[allow(clippy::too_many_arguments)]
pub fn encoder_attention_forward(
    g: &Gpu,
    out: &mut Buf,
    qkv: &Buf,
    key_mask: &DevBuf<i32>,
    starts: &DevBuf<i32>,
    n_seq: usize,
    n: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    if nh == 0 || !c.is_multiple_of(nh) || c / nh > 128 {
        bail!("encoder_attention_forward: C {c} and NH {nh} must give a head width of at most 128");
    }
    need("encoder_attention_forward out", out.len(), n * c)?;
    need("encoder_attention_forward qkv", qkv.len(), n * 3 * c)?;
    need("encoder_attention_forward key_mask", key_mask.len(), n)?;
    need("encoder_attention_forward starts", starts.len(), n_seq + 1)?;
    let args = [
        out.into(),
        qkv.into(),
        key_mask.into(),
        starts.into(),
        int("n_seq", n_seq)?.into(),
        int("C", c)?.into(),
        int("NH", nh)?.into(),
    ];
    g.launch(
        "encoder_attention.cu",
        "encoder_attention_forward",
        warps(n * nh),
        &args,
    )
}
