//! Dense products on the device, mirroring `cpu::gemm::sgemm`: c (m, n) [+]= op(a) @ op(b)
//! [+ bias (n)], all row-major, by the kernels of `kernels/sgemm.cu`. One pure function, `plan`,
//! picks the kernel and its grid from the shape, so the launch every product gets can be read and
//! tested without a GPU (tests/launch_plan.rs holds the paper's shapes to the device's size).

use crate::cuda::device::{Arg, DevBuf, Gpu, Grid};
use crate::cuda::ops::{int, need};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// Multiprocessors of the device the plan fills: an H200 (and an H100 SXM) has 132.
pub const SMS: usize = 132;
/// Blocks a product should launch: two per multiprocessor, so that one block's barrier or memory
/// wait leaves another to run.
pub const TARGET_BLOCKS: usize = 2 * SMS;
/// Products of at most this many rows take the rows kernels, which read b once for all rows.
pub const MAX_ROWS: usize = 16;
/// Depth of one shared-memory slice of the tile kernels (their `BK`).
const BK: usize = 8;
/// Warps in a block of the rows kernels (`ROWS_WARPS`), and columns of one warp of
/// `sgemm_rows_nt` (`ROWS_NT_COLUMNS`).
const ROWS_WARPS: usize = 2;
const NT_COLUMNS: usize = 4;
/// The tiles of the tile kernels, largest first: (rows, columns).
pub const TILES: [(usize, usize); 4] = [(128, 128), (128, 64), (64, 128), (64, 64)];

/// How a and b are stored: op(a) is (m, k), stored (m, k), or (k, m) for `TN`; op(b) is (k, n),
/// stored (k, n), or (n, k) for `NT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    NN,
    NT,
    TN,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::NN => "nn",
            Layout::NT => "nt",
            Layout::TN => "tn",
        }
    }
}

/// A product's sizes and layout, and whether its operands can be read as float4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub layout: Layout,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The operands' contiguous extents are multiples of 4 (and, at launch, their buffers are
    /// 16-byte aligned): the `_v4` kernels may run.
    pub vec: bool,
}

impl Shape {
    /// The shape with `vec` set from the sizes: what the contiguous extent of each stored
    /// operand is in each layout.
    pub fn new(layout: Layout, m: usize, n: usize, k: usize) -> Shape {
        let vec = match layout {
            Layout::NN => k.is_multiple_of(4) && n.is_multiple_of(4),
            Layout::NT => k.is_multiple_of(4),
            Layout::TN => m.is_multiple_of(4) && n.is_multiple_of(4),
        };
        Shape {
            layout,
            m,
            n,
            k,
            vec,
        }
    }

    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Which kernel family computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `sgemm_<layout>_<bm>x<bn>`: 256 threads per bm x bn tile of c.
    Tile { bm: usize, bn: usize },
    /// `sgemm_rows_<layout>_r<rm>`: warps streaming b against up to rm rows of a.
    Rows { rm: usize },
}

/// A launch: the kernel, whether it reads float4, and the split of K (`splits` parts of `kc`
/// depths, the last one shorter; one part writes c directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub family: Family,
    pub vec: bool,
    pub splits: usize,
    pub kc: usize,
}

impl Plan {
    /// The kernel's name in `kernels/sgemm.cu`.
    pub fn entry(&self, layout: Layout) -> String {
        let v4 = if self.vec { "_v4" } else { "" };
        match self.family {
            Family::Tile { bm, bn } => format!("sgemm_{}_{bm}x{bn}{v4}", layout.name()),
            Family::Rows { rm } => format!("sgemm_rows_{}_r{rm}{v4}", layout.name()),
        }
    }

    /// The warps of a rows launch: column slabs (or groups) times splits.
    fn row_warps(&self, s: &Shape) -> usize {
        let width = match s.layout {
            Layout::NT => NT_COLUMNS,
            _ => 32 * if self.vec { 4 } else { 1 },
        };
        s.n.div_ceil(width) * self.splits
    }

    /// The parts of c whose splits are added by the last of them: tiles, or the rows kernels'
    /// column slabs (or groups). A split launch keeps a counter for each.
    pub fn units(&self, s: &Shape) -> usize {
        match self.family {
            Family::Tile { bm, bn } => tiles(s, bm, bn),
            Family::Rows { .. } => self.row_warps(s) / self.splits,
        }
    }

    pub fn grid(&self, s: &Shape) -> Grid {
        match self.family {
            Family::Tile { bm, bn } => Grid {
                blocks: [
                    s.n.div_ceil(bn).max(1) as u32,
                    s.m.div_ceil(bm).max(1) as u32,
                    self.splits as u32,
                ],
                threads: [256, 1, 1],
                shared_bytes: 0,
            },
            Family::Rows { .. } => Grid {
                blocks: [self.row_warps(s).div_ceil(ROWS_WARPS).max(1) as u32, 1, 1],
                threads: [32 * ROWS_WARPS as u32, 1, 1],
                shared_bytes: 0,
            },
        }
    }

    pub fn blocks(&self, s: &Shape) -> usize {
        self.grid(s).blocks.iter().map(|&b| b as usize).product()
    }

    /// `family` over the whole of K in one part.
    pub fn unsplit(family: Family, vec: bool, k: usize) -> Plan {
        Plan {
            family,
            vec,
            splits: 1,
            kc: k.max(1),
        }
    }

    /// The same kernel with K split into about `splits` parts (as many as whole parts allow).
    pub fn with_splits(self, s: &Shape, splits: usize) -> Plan {
        let align = match self.family {
            Family::Tile { .. } => BK,
            Family::Rows { .. } => 4,
        };
        let (kc, splits) = split_k(s.k, splits, align);
        Plan { splits, kc, ..self }
    }

    /// A short description: "sgemm_nn_64x64_v4 x3 splits".
    pub fn describe(&self, layout: Layout) -> String {
        match self.splits {
            1 => self.entry(layout),
            s => format!("{} x{s} splits", self.entry(layout)),
        }
    }
}

/// About `splits` parts of K, each a multiple of `align` depths long (the last one shorter): the
/// part length and the number of parts it gives, never an empty part, and at least `splits` parts
/// when K has room for them.
fn split_k(k: usize, splits: usize, align: usize) -> (usize, usize) {
    if k == 0 || splits <= 1 {
        return (k.max(1), 1);
    }
    let up = k.div_ceil(splits).div_ceil(align) * align;
    let kc = if k.div_ceil(up) >= splits {
        up
    } else {
        (k / splits / align * align).max(align)
    };
    (kc, k.div_ceil(kc))
}

fn tile_plan(s: &Shape, bm: usize, bn: usize, splits: usize) -> Plan {
    Plan::unsplit(Family::Tile { bm, bn }, s.vec, s.k).with_splits(s, splits)
}

fn tiles(s: &Shape, bm: usize, bn: usize) -> usize {
    s.m.div_ceil(bm) * s.n.div_ceil(bn)
}

/// The rows plan with float4 loads or not, split so that the launch has `TARGET_BLOCKS` blocks
/// where K allows: a split keeps at least two passes of `sgemm_rows_nn`'s eight rows of b in
/// flight, and in `sgemm_rows_nt` one full stride of the warp's lanes.
fn rows_plan(s: &Shape, vec: bool) -> Plan {
    let rm = s.m.next_power_of_two().max(1);
    let unsplit = Plan::unsplit(Family::Rows { rm }, vec, s.k);
    let warps = unsplit.row_warps(s);
    let want = (TARGET_BLOCKS * ROWS_WARPS).div_ceil(warps);
    let min_kc = match s.layout {
        Layout::NT => 32 * if vec { 4 } else { 1 },
        _ => 16,
    };
    let most = (s.k / min_kc).max(1);
    unsplit.with_splits(s, want.min(most))
}

/// The most parts a tile product's K is split into: each keeps two shared-memory slices.
pub fn most_tile_splits(k: usize) -> usize {
    (k / (2 * BK)).max(1)
}

/// The launch for a shape: a pure function of it, so tests can hold it to the device's size.
/// - at most `MAX_ROWS` rows (not a weight gradient): the rows kernels, float4 where the shape
///   allows and it still fills the device;
/// - else the largest tile that gives `TARGET_BLOCKS` blocks unsplit (not 128 x 128 with scalar
///   loads);
/// - else 64 x 64 tiles with K split to reach `TARGET_BLOCKS`, keeping two slices per split.
pub fn plan(s: Shape) -> Plan {
    if s.m <= MAX_ROWS && s.layout != Layout::TN && s.k > 0 {
        if s.vec {
            let p = rows_plan(&s, true);
            if p.blocks(&s) >= TARGET_BLOCKS {
                return p;
            }
            let narrow = rows_plan(&s, false);
            return if narrow.blocks(&s) > p.blocks(&s) {
                narrow
            } else {
                p
            };
        }
        return rows_plan(&s, false);
    }
    for (bm, bn) in TILES {
        // Without float4 loads the 128 x 128 tile needs more registers than two blocks per
        // multiprocessor leave it (its loads' addresses spill).
        if !s.vec && (bm, bn) == (128, 128) {
            continue;
        }
        if tiles(&s, bm, bn) >= TARGET_BLOCKS {
            return tile_plan(&s, bm, bn, 1);
        }
    }
    let (bm, bn) = (64, 64);
    let want = TARGET_BLOCKS.div_ceil(tiles(&s, bm, bn));
    tile_plan(&s, bm, bn, want.min(most_tile_splits(s.k)))
}

/// Every plan that computes the shape: each tile at several split counts, and for few rows the
/// rows kernels; for `pgsrm check` (each must match the CPU) and for `pgsrm bench` (each timed).
pub fn candidates(s: Shape) -> Vec<Plan> {
    let mut out = vec![plan(s)];
    for vec in [false, true] {
        if vec && !s.vec {
            continue;
        }
        let v = Shape { vec, ..s };
        for (bm, bn) in TILES {
            for splits in [1, 2, 3, 4, 6, 8, 12, 16] {
                let p = tile_plan(&v, bm, bn, splits);
                if p.splits == splits {
                    out.push(p);
                }
            }
        }
        if s.m <= MAX_ROWS && s.layout != Layout::TN && s.k > 0 {
            let split = rows_plan(&v, vec);
            out.push(split.with_splits(&v, 1));
            out.push(split);
        }
    }
    let mut distinct = Vec::new();
    for p in out {
        if !distinct.contains(&p) {
            distinct.push(p);
        }
    }
    distinct
}

/// Every kernel a plan can name (each must exist in `kernels/sgemm.cu`).
pub fn entries() -> Vec<String> {
    let mut out = Vec::new();
    for layout in [Layout::NN, Layout::NT, Layout::TN] {
        for vec in [false, true] {
            let mut families: Vec<Family> = TILES
                .iter()
                .map(|&(bm, bn)| Family::Tile { bm, bn })
                .collect();
            if layout != Layout::TN {
                families.extend([1, 2, 4, 8, MAX_ROWS].map(|rm| Family::Rows { rm }));
            }
            for family in families {
                out.push(Plan::unsplit(family, vec, 1).entry(layout));
            }
        }
    }
    out
}

/// c (m, n) [+]= op(a) @ op(b) [+ bias], planned by `plan`. `accumulate` adds into c; else c is
/// overwritten.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    g: &Gpu,
    layout: Layout,
    (m, n, k): (usize, usize, usize),
    c: &mut Buf,
    a: &Buf,
    b: &Buf,
    bias: Option<&Buf>,
    accumulate: bool,
) -> Result<()> {
    let mut s = Shape::new(layout, m, n, k);
    s.vec &= a.aligned(16) && b.aligned(16);
    launch(g, &plan(s), &s, c, a, b, bias, accumulate)
}

/// Runs `p` for shape `s` (any plan of `candidates(s)`); the split products' partials go to the
/// device's scratch buffer.
#[allow(clippy::too_many_arguments)]
pub fn launch(
    g: &Gpu,
    p: &Plan,
    s: &Shape,
    c: &mut Buf,
    a: &Buf,
    b: &Buf,
    bias: Option<&Buf>,
    accumulate: bool,
) -> Result<()> {
    let entry = p.entry(s.layout);
    need(&entry, c.len(), s.m * s.n)?;
    need(&entry, a.len(), s.m * s.k)?;
    need(&entry, b.len(), s.k * s.n)?;
    if let Some(bias) = bias {
        need(&entry, bias.len(), s.n)?;
    }
    if p.vec && !(a.aligned(16) && b.aligned(16)) {
        bail!("{entry} reads float4: its operands must start at 16-byte boundaries");
    }
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let sizes = [
        int("M", s.m)?.into(),
        int("N", s.n)?.into(),
        int("K", s.k)?.into(),
        int("kc", p.kc)?.into(),
        Arg::I32(accumulate as i32),
    ];
    if p.splits == 1 {
        let mut args = vec![
            c.into(),
            a.into(),
            b.into(),
            bias.into(),
            Arg::NULL,
            Arg::NULL,
        ];
        args.extend(sizes);
        return g.launch("sgemm.cu", &entry, p.grid(s), &args);
    }
    g.with_scratch(p.splits * s.m * s.n, p.units(s), |partial, counters| {
        let mut args = vec![
            c.into(),
            a.into(),
            b.into(),
            bias.into(),
            (&*partial).into(),
            (&*counters).into(),
        ];
        args.extend(sizes);
        g.launch("sgemm.cu", &entry, p.grid(s), &args)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_k_with_no_empty_part() {
        for k in [1, 7, 8, 9, 100, 768, 50257] {
            for want in 1..40 {
                let (kc, s) = split_k(k, want, 8);
                assert!(kc % 8 == 0 || s == 1, "k {k} want {want}: kc {kc}");
                assert!(
                    s * kc >= k && (s - 1) * kc < k,
                    "k {k} want {want}: {s} x {kc}"
                );
                assert!(s >= want.min(k.div_ceil(8)), "k {k} want {want}: {s} parts");
            }
        }
    }

    #[test]
    fn the_plan_is_one_of_the_candidates() {
        for (layout, m, n, k) in [
            (Layout::NN, 1000, 768, 768),
            (Layout::NT, 50, 50257, 768),
            (Layout::NN, 1, 768, 2304),
            (Layout::NT, 10, 576, 576),
            (Layout::TN, 768, 3072, 1000),
            (Layout::NN, 7, 33, 129),
        ] {
            let s = Shape::new(layout, m, n, k);
            assert!(candidates(s).contains(&plan(s)), "{s:?}: {:?}", plan(s));
        }
    }
}
