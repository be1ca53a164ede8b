//! Keys and values that decoding keeps, for either model family, and the attention step that
//! reads them. Two stores:
//! - `KvCache`: a left-padded batch, per layer (B, Tmax, KW); row b's new positions attend to
//!   its positions [start[b], p];
//! - `RowKv`: rows of a prefix store (`cpu::prefix`), per layer (R, KW); a new row attends to
//!   the rows of its path, so a prefix that many sequences share is kept once.
//!
//! A model's layer computes its new rows' queries, keys and values, then hands them to
//! `Attend::attend`, which stores the keys and values and writes the attention output.

use crate::cpu::ops::{
    AttentionShape, Heads, HeadsLayout, PathsRef, QkvLayout, attention_cached_forward,
    attention_forward, path_attention_forward,
};
use anyhow::{Result, bail};

/// Per-layer K and V of earlier positions of a left-padded batch, (B, Tmax, KW) each.
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    tmax: usize,
    len: usize,
    start: Vec<usize>,
}

impl KvCache {
    /// An empty cache of `layers` layers, `b` rows of `tmax` positions, keys and values `kw` wide;
    /// row b's first real index is `start[b]`.
    pub fn new(layers: usize, kw: usize, tmax: usize, start: Vec<usize>) -> Self {
        let b = start.len();
        KvCache {
            k: (0..layers).map(|_| vec![0.0; b * tmax * kw]).collect(),
            v: (0..layers).map(|_| vec![0.0; b * tmax * kw]).collect(),
            tmax,
            len: 0,
            start,
        }
    }

    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.tmax
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.start.len()
    }

    /// First real index of each row.
    pub fn start(&self) -> &[usize] {
        &self.start
    }

    /// Checks that `tq` more positions of every row fit.
    pub fn check_room(&self, tq: usize) -> Result<()> {
        if self.len + tq > self.tmax {
            bail!(
                "{tq} new positions do not fit a cache with {} of {} filled",
                self.len,
                self.tmax
            );
        }
        Ok(())
    }

    /// Position ids of the next `tq` indices of every row (B tq): distance from its first real
    /// token (0 for padding, which nothing reads).
    pub fn positions(&self, tq: usize) -> Vec<usize> {
        let mut pos = Vec::with_capacity(self.start.len() * tq);
        for &st in &self.start {
            pos.extend((self.len..self.len + tq).map(|t| t.saturating_sub(st)));
        }
        pos
    }
}

/// Per-layer K and V of the rows of a prefix store, (R, KW) each.
pub struct RowKv {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    kw: usize,
    rows: usize,
}

impl RowKv {
    /// An empty store of `layers` layers of keys and values `kw` wide.
    pub fn new(layers: usize, kw: usize) -> Self {
        RowKv {
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            kw,
            rows: 0,
        }
    }

    /// Rows stored.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of keys and values per row.
    pub fn row_bytes(&self) -> usize {
        self.k.len() * 2 * self.kw * 4
    }

    /// Forgets rows `n..`.
    pub fn truncate(&mut self, n: usize) {
        if n < self.rows {
            for x in self.k.iter_mut().chain(&mut self.v) {
                x.truncate(n * self.kw);
            }
            self.rows = n;
        }
    }
}

/// Where a chunk of new rows keeps its keys and values and what its queries read.
pub enum Attend<'a> {
    /// A fresh left-padded batch of T positions per row, attention probabilities returned for
    /// backward (B, H, T, T).
    Batch { start: &'a [usize], t: usize },
    /// The next `tq` positions of every row of a padded cache.
    Cache { cache: &'a mut KvCache, tq: usize },
    /// New rows appended to a row store; new row i attends to the rows of `paths.keys(i)`.
    Rows {
        kv: &'a mut RowKv,
        paths: PathsRef<'a>,
    },
}

/// Copies `rows` rows of `width` values laid out as `l` in `src` to the end of `dst`.
fn append_rows(dst: &mut Vec<f32>, src: &[f32], l: HeadsLayout, rows: usize, width: usize) {
    for i in 0..rows {
        let o = l.offset + i * l.stride;
        dst.extend_from_slice(&src[o..o + width]);
    }
}

impl Attend<'_> {
    /// Rows of the chunk.
    pub fn rows(&self) -> usize {
        match self {
            Attend::Batch { start, t } => start.len() * t,
            Attend::Cache { cache, tq } => cache.rows() * tq,
            Attend::Rows { paths, .. } => paths.len(),
        }
    }

    /// Position ids of the chunk's rows where the store knows them (padded batches and caches;
    /// a row store's rows carry their own).
    pub fn positions(&self) -> Option<Vec<usize>> {
        match self {
            Attend::Batch { start, t } => {
                let mut pos = Vec::with_capacity(start.len() * t);
                for &st in start.iter() {
                    pos.extend((0..*t).map(|i| i.saturating_sub(st)));
                }
                Some(pos)
            }
            Attend::Cache { cache, tq } => Some(cache.positions(*tq)),
            Attend::Rows { .. } => None,
        }
    }

    /// Layer `l` of the chunk: stores its keys and values, then writes out (N, H hd) of its
    /// queries. q, k and v are laid out as `layout` says over the chunk's N rows. Returns the
    /// attention probabilities for a `Batch`, nothing otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        l: usize,
        out: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        layout: &QkvLayout,
        heads: Heads,
    ) -> Vec<f32> {
        let kw = heads.n_kv_head * heads.head_dim;
        match self {
            Attend::Batch { start, t } => {
                let b = start.len();
                let mut att = vec![0.0f32; b * heads.n_head * *t * *t];
                let shape = AttentionShape {
                    b,
                    t: *t,
                    n_head: heads.n_head,
                    n_kv_head: heads.n_kv_head,
                    head_dim: heads.head_dim,
                };
                attention_forward(out, &mut att, q, k, v, layout, start, shape);
                att
            }
            Attend::Cache { cache, tq } => {
                let (b, tq, p0, tmax) = (cache.rows(), *tq, cache.len, cache.tmax);
                for bi in 0..b {
                    for i in 0..tq {
                        let (src, dst) = (bi * tq + i, (bi * tmax + p0 + i) * kw);
                        let ko = layout.k.offset + src * layout.k.stride;
                        let vo = layout.v.offset + src * layout.v.stride;
                        cache.k[l][dst..dst + kw].copy_from_slice(&k[ko..ko + kw]);
                        cache.v[l][dst..dst + kw].copy_from_slice(&v[vo..vo + kw]);
                    }
                }
                let shape = AttentionShape {
                    b,
                    t: tq,
                    n_head: heads.n_head,
                    n_kv_head: heads.n_kv_head,
                    head_dim: heads.head_dim,
                };
                attention_cached_forward(
                    out,
                    q,
                    layout.q,
                    &cache.k[l],
                    &cache.v[l],
                    &cache.start,
                    p0,
                    tq,
                    tmax,
                    shape,
                );
                Vec::new()
            }
            Attend::Rows { kv, paths } => {
                let n = paths.len();
                append_rows(&mut kv.k[l], k, layout.k, n, kw);
                append_rows(&mut kv.v[l], v, layout.v, n, kw);
                let store = HeadsLayout {
                    offset: 0,
                    stride: kw,
                };
                let read = QkvLayout {
                    q: layout.q,
                    k: store,
                    v: store,
                };
                path_attention_forward(out, None, q, &kv.k[l], &kv.v[l], &read, *paths, heads);
                Vec::new()
            }
        }
    }

    /// Marks the chunk's rows as filled, once every layer has run.
    pub fn finish(&mut self) {
        match self {
            Attend::Batch { .. } => {}
            Attend::Cache { cache, tq } => cache.len += *tq,
            Attend::Rows { kv, paths } => kv.rows += paths.len(),
        }
    }
}
