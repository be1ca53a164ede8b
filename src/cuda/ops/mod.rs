//! Launchers of the kernels, one file per operation as in `cpu::ops`: `<op>.rs` launches the forward
//! and backward kernels of `kernels/<op>.cu`, each launcher named after the CPU function it
//! mirrors, with the same arguments (device buffers of the CPU functions' shapes, given in the
//! kernels' comments). Like the CPU functions, backward launchers add into their gradients; every
//! parameter gradient is reduced in a fixed order, so a launch gives the same bits every time.
//! Every launch is checked, and `Gpu::sync` surfaces asynchronous faults. The launch helpers the
//! op files share live here; the products (`sgemm`), the optimiser (`optim`) and the PPO losses
//! (`ppo_loss`) keep their own modules.

pub mod attention;
pub mod copy;
pub mod embedding;
pub mod encoder_attention;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod logits;
pub mod matmul;
pub mod optim;
pub mod ppo_loss;
pub mod residual;
pub mod reward;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod sgemm;
pub mod softmax;
pub mod swiglu;

pub use attention::*;
pub use copy::*;
pub use embedding::*;
pub use encoder_attention::*;
pub use gelu::*;
pub use layernorm::*;
pub use linear::*;
pub use logits::*;
pub use matmul::*;
pub use residual::*;
pub use reward::*;
pub use rmsnorm::*;
pub use rope::*;
pub use sampling::*;
pub use softmax::*;
pub use swiglu::*;

use crate::cuda::device::{Arg, DevBuf, Gpu, Grid};
use anyhow::{Result, anyhow, bail};

type Buf = DevBuf<f32>;

pub(super) fn int(what: &str, x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| anyhow!("{what} = {x} does not fit the kernels' 32-bit sizes"))
}

pub(super) fn blocks(n: usize, threads: u32) -> Grid {
    Grid::linear(n, threads)
}

/// One block of `threads` per row.
pub(super) fn per_row(rows: usize, threads: u32) -> Grid {
    Grid::per_row(rows, threads)
}

pub(super) fn need(what: &str, buf_len: usize, want: usize) -> Result<()> {
    if buf_len < want {
        bail!("{what}: buffer holds {buf_len} values, needs {want}");
    }
    Ok(())
}

/// out (n) = f(inp) for the one-input elementwise kernels of `file`
fn unary(
    g: &Gpu,
    file: &'static str,
    entry: &str,
    out: &mut Buf,
    inp: &Buf,
    n: usize,
) -> Result<()> {
    need(entry, out.len().min(inp.len()), n)?;
    let args = [out.into(), inp.into(), (n as i64).into()];
    g.launch(file, entry, blocks(n, 256), &args)
}

/// out (n) = f(x, y) for the two-input elementwise kernels of `file`
fn binary(
    g: &Gpu,
    file: &'static str,
    entry: &str,
    out: &mut Buf,
    x: &Buf,
    y: &Buf,
    n: usize,
) -> Result<()> {
    need(entry, out.len().min(x.len()).min(y.len()), n)?;
    let args = [out.into(), x.into(), y.into(), (n as i64).into()];
    g.launch(file, entry, blocks(n, 256), &args)
}

/// One warp per (row, head).
pub(super) fn warps(n: usize) -> Grid {
    blocks(n * 32, 128)
}

/// The start of a view, checked to leave `rows` rows of `width` in the buffer.
pub(super) fn view(
    what: &str,
    (buf, offset, stride): Heads<'_>,
    rows: usize,
    width: usize,
) -> Result<Arg> {
    need(
        what,
        buf.len(),
        offset + rows.saturating_sub(1) * stride + width,
    )?;
    buf.at(offset)
}

/// Rows a stretch of a column reduction should have at least: four passes of its block's 16 rows.
pub const COLUMN_STRETCH_ROWS: usize = 64;

/// The grid of a column reduction over `n` rows and `c` columns: (ceil(c / 32), stretches)
/// blocks of (32, COLUMN_ROWS) threads, each owning 32 columns of a parameter gradient and a
/// stretch of the rows, split so that the launch has `TARGET_BLOCKS` blocks where the rows allow
/// (each stretch at least `COLUMN_STRETCH_ROWS` long). A pure function of the shape, so tests can
/// hold it to the device's size.
pub fn column_grid(n: usize, c: usize) -> Grid {
    let column_blocks = c.div_ceil(32).max(1);
    let stretches = sgemm::TARGET_BLOCKS
        .div_ceil(column_blocks)
        .min(n.div_ceil(COLUMN_STRETCH_ROWS))
        .max(1);
    Grid {
        blocks: [column_blocks as u32, stretches as u32, 1],
        threads: [32, 16, 1],
        shared_bytes: 0,
    }
}

/// Launches a column reduction of `kernels/common.cuh`'s `column_sums` over `n` rows and `c`
/// columns with `nv` sums a column on `column_grid`: `args`, then its scratch.
fn launch_columns(
    g: &Gpu,
    (file, entry): (&'static str, &str),
    args: &[Arg],
    n: usize,
    c: usize,
    nv: usize,
) -> Result<()> {
    let grid = column_grid(n, c);
    let [column_blocks, stretches, _] = grid.blocks.map(|b| b as usize);
    if stretches == 1 {
        return g.launch(file, entry, grid, &[args, &[Arg::NULL, Arg::NULL]].concat());
    }
    g.with_scratch(stretches * nv * c, column_blocks, |partial, counters| {
        let scratch = [(&*partial).into(), (&*counters).into()];
        g.launch(file, entry, grid, &[args, &scratch].concat())
    })
}

/// Rows grouped by a key, the order-fixed form of a scatter: for each distinct key (ascending),
/// the rows that carry it (ascending). The host builds it from indices it already holds (token
/// ids, position ids, chosen rows), so the device adds every table row's contributions in row
/// order, as the CPU does, without atomics.
pub struct RowBuckets {
    keys: DevBuf<i32>,
    starts: DevBuf<i32>,
    rows: DevBuf<i32>,
    n_keys: usize,
    /// One past the largest key and row (the sizes the scattered-into and scattered buffers need).
    key_end: usize,
    row_end: usize,
}

impl RowBuckets {
    /// The buckets of `keys` (one per row: row i carries keys[i]).
    pub fn new(g: &Gpu, keys: &[usize]) -> Result<Self> {
        Self::reusing(g, None, keys)
    }

    /// `new`, written into `old`'s buffers where they are long enough.
    pub fn reusing(g: &Gpu, old: Option<RowBuckets>, keys: &[usize]) -> Result<Self> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| keys[i]); // stable: rows stay ascending within a key
        let (mut uniq, mut starts) = (Vec::new(), Vec::new());
        for (j, &i) in order.iter().enumerate() {
            if j == 0 || keys[i] != keys[order[j - 1]] {
                uniq.push(int("key", keys[i])?);
                starts.push(int("rows", j)?);
            }
        }
        starts.push(int("rows", order.len())?);
        let rows = order
            .iter()
            .map(|&i| int("row", i))
            .collect::<Result<Vec<_>>>()?;
        // A CUDA allocation cannot be empty: no keys still upload one unused entry.
        let nonempty = |mut v: Vec<i32>| {
            if v.is_empty() {
                v.push(0);
            }
            v
        };
        let (k, s, r) = match old {
            Some(o) => (Some(o.keys), Some(o.starts), Some(o.rows)),
            None => (None, None, None),
        };
        Ok(RowBuckets {
            n_keys: uniq.len(),
            key_end: keys.iter().max().map_or(0, |&k| k + 1),
            row_end: keys.len(),
            keys: g.upload_reusing(k, &nonempty(uniq))?,
            starts: g.upload_reusing(s, &starts)?,
            rows: g.upload_reusing(r, &nonempty(rows))?,
        })
    }
}

/// dtable (K, C) += dout (N, C) scattered by the buckets' keys: row i adds onto table row key(i)
fn scatter_add_rows(
    g: &Gpu,
    what: &str,
    dtable: &mut Buf,
    dout: &Buf,
    by: &RowBuckets,
    c: usize,
) -> Result<()> {
    need(what, dtable.len(), by.key_end * c)?;
    need(what, dout.len(), by.row_end * c)?;
    if by.n_keys == 0 {
        return Ok(());
    }
    let args = [
        dtable.into(),
        dout.into(),
        (&by.keys).into(),
        (&by.starts).into(),
        (&by.rows).into(),
        int("keys", by.n_keys)?.into(),
        int("C", c)?.into(),
    ];
    g.launch(
        "embedding.cu",
        "embedding_backward",
        blocks(by.n_keys * c, 256),
        &args,
    )
}
