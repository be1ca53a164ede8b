//! Launcher of `kernels/reward.cu`: the fused PGSRM reward (pooling, cosine and shaping), mirroring
//! `cpu::bert`'s pooling and `reward::shaping`.

use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{int, need, per_row};
use anyhow::Result;

type Buf = DevBuf<f32>;

/// Shaping codes of `pool_cosine_shape_forward`, in the kernel's order.
pub const SHAPE_PGSRM: i32 = 0;
pub const SHAPE_TRUNCATE: i32 = 1;
pub const SHAPE_EUCLIDEAN: i32 = 2;
pub const SHAPE_BINARY: i32 = 3;

/// reward (B), emb (B, D) from hidden (N, D) with answer b in rows [starts[b], starts[b+1]) (those
/// with mask set pool), parent (B, D); exact (B) for the binary shaping
#[allow(clippy::too_many_arguments)]
pub fn pool_cosine_shape_forward(
    g: &Gpu,
    reward: &mut Buf,
    emb: &mut Buf,
    hidden: &Buf,
    mask: &DevBuf<i32>,
    starts: &DevBuf<i32>,
    parent: &Buf,
    exact: Option<&DevBuf<i32>>,
    b: usize,
    d: usize,
    shaping: i32,
    power: f32,
) -> Result<()> {
    need("pool_cosine_shape_forward starts", starts.len(), b + 1)?;
    need("pool_cosine_shape_forward parent", parent.len(), b * d)?;
    need("pool_cosine_shape_forward emb", emb.len(), b * d)?;
    need("pool_cosine_shape_forward reward", reward.len(), b)?;
    let args = [
        reward.into(),
        emb.into(),
        hidden.into(),
        mask.into(),
        starts.into(),
        parent.into(),
        exact.into(),
        int("B", b)?.into(),
        int("D", d)?.into(),
        shaping.into(),
        power.into(),
    ];
    g.launch(
        "reward.cu",
        "pool_cosine_shape_forward",
        per_row(b, 128),
        &args,
    )
}
