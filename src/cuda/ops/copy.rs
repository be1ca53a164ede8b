//! Launcher of `kernels/copy.cu`: many device-to-device copies as one launch, for work that would
//! otherwise make a copy call per piece (the host's cost of each call, not the bytes, is what adds
//! up).

use crate::cuda::device::{DevBuf, Gpu, Grid};
use crate::cuda::ops::int;
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Floats of a segment of mean length per block of `copy_segments`: each of its 256 threads
/// copies about eight.
const BLOCK_FLOATS: usize = 256 * 8;

/// The copies of one `copy_segments` launch, gathered on the host.
#[derive(Default)]
pub struct Segments {
    dst: Vec<u64>,
    src: Vec<u64>,
    lens: Vec<u64>,
}

impl Segments {
    /// Adds the copy of `n` floats from `src` at `src_at` to `dst` at `dst_at`. The buffers must
    /// outlive the launch (a buffer dropped after it is freed in stream order, which suffices).
    pub fn add(
        &mut self,
        dst: &mut Buf,
        dst_at: usize,
        src: &Buf,
        src_at: usize,
        n: usize,
    ) -> Result<()> {
        if dst_at + n > dst.len() || src_at + n > src.len() {
            bail!(
                "copy_segments: {n} floats from {src_at} of {} to {dst_at} of {}",
                src.len(),
                dst.len()
            );
        }
        let float = size_of::<f32>() as u64;
        self.dst.push(dst.address() + dst_at as u64 * float);
        self.src.push(src.address() + src_at as u64 * float);
        self.lens.push(n as u64);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }
}

/// Runs every copy of `segments` in one launch. `table` keeps the device's copy of the list
/// between calls; it is written in place, and made anew only when it is too short.
pub fn copy_segments(g: &Gpu, segments: &Segments, table: &mut Option<DevBuf<u64>>) -> Result<()> {
    let s = segments.len();
    if s == 0 {
        return Ok(());
    }
    let host: Vec<u64> = [&segments.dst[..], &segments.src, &segments.lens].concat();
    *table = Some(g.upload_reusing(table.take(), &host)?);
    let longest = segments.lens.iter().max().copied().unwrap_or(0) as usize;
    let mean = segments.lens.iter().sum::<u64>() as usize / s;
    let y = mean
        .div_ceil(BLOCK_FLOATS)
        .clamp(1, longest.div_ceil(256).max(1));
    let grid = Grid {
        blocks: [
            int("segments", s)? as u32,
            int("blocks per segment", y)? as u32,
            1,
        ],
        threads: [256, 1, 1],
        shared_bytes: 0,
    };
    let args = [
        table.as_ref().expect("made above").into(),
        int("segments", s)?.into(),
    ];
    g.launch("copy.cu", "copy_segments", grid, &args)
}
