//! Causal self-attention over rows that share prefixes. Each query row attends to an explicit list
//! of key rows, its path: the rows of the tokens before it, first to last, then its own. A prompt
//! prefix that several sequences share is then one set of rows that every sequence's path goes
//! through, computed once; there is no padding and no mask, since a path holds real rows only.
//!
//! The attention probabilities of query row i are saved as (H, |path i|), the rows one after
//! another in query order. Query head h reads kv head h / (n_head / n_kv_head).

use crate::cpu::ops::attention::{HeadsLayout, QkvGrad, QkvLayout};
use rayon::prelude::*;

/// Which key rows each query row attends to: query i reads key rows
/// `rows[offsets[i]..offsets[i + 1]]`, in order. Offsets need not start at 0, so that the paths of
/// a range of rows can be handed on without copying.
#[derive(Clone, Copy, Debug)]
pub struct PathsRef<'a> {
    /// (N + 1) where each query row's keys start in `rows`, and where the last one's end.
    pub offsets: &'a [usize],
    pub rows: &'a [usize],
}

impl<'a> PathsRef<'a> {
    /// Number of query rows.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key rows of query row i.
    pub fn keys(&self, i: usize) -> &'a [usize] {
        &self.rows[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Where query row i's probabilities start in a saved att buffer, and how many per head.
    fn att_span(&self, i: usize, n_head: usize) -> (usize, usize) {
        let len = self.offsets[i + 1] - self.offsets[i];
        ((self.offsets[i] - self.offsets[0]) * n_head, len)
    }

    /// Size of the att buffer for `n_head` heads: the summed path lengths times the heads.
    pub fn att_len(&self, n_head: usize) -> usize {
        (self.offsets[self.len()] - self.offsets[0]) * n_head
    }
}

/// Head counts of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl Heads {
    fn group(&self) -> usize {
        assert!(
            self.n_kv_head > 0 && self.n_head.is_multiple_of(self.n_kv_head),
            "n_head ({}) must be a multiple of n_kv_head ({})",
            self.n_head,
            self.n_kv_head
        );
        self.n_head / self.n_kv_head
    }
}

/// For each key row, the (query row, index in its path) pairs that read it, in query order: what
/// the backward pass sums over for the key and value gradients of a shared row.
#[derive(Clone, Debug, Default)]
pub struct KeyUses {
    offsets: Vec<usize>,
    uses: Vec<(usize, usize)>,
}

impl KeyUses {
    /// The uses of key rows 0..n_keys by the query rows of `paths`.
    pub fn new(paths: PathsRef, n_keys: usize) -> Self {
        let mut count = vec![0usize; n_keys + 1];
        for &r in &paths.rows[paths.offsets[0]..paths.offsets[paths.len()]] {
            assert!(r < n_keys, "key row {r} is outside the {n_keys} key rows");
            count[r + 1] += 1;
        }
        for r in 0..n_keys {
            count[r + 1] += count[r];
        }
        let mut fill = count.clone();
        let mut uses = vec![(0, 0); count[n_keys]];
        for i in 0..paths.len() {
            for (j, &r) in paths.keys(i).iter().enumerate() {
                uses[fill[r]] = (i, j);
                fill[r] += 1;
            }
        }
        KeyUses {
            offsets: count,
            uses,
        }
    }

    fn of(&self, r: usize) -> &[(usize, usize)] {
        &self.uses[self.offsets[r]..self.offsets[r + 1]]
    }

    fn n_keys(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// A pointer that parallel tasks share; each task writes a set of elements no other task touches.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// `len` values from element `i`.
    /// SAFETY: the caller keeps [i, i + len) inside the buffer and writes no element that another
    /// task writes at the same time.
    unsafe fn slice<'a>(self, i: usize, len: usize) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(i), len) }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_rows(what: &str, len: usize, l: HeadsLayout, rows: usize, width: usize) {
    if rows == 0 {
        return;
    }
    let need = l.offset + (rows - 1) * l.stride + width;
    assert!(
        width <= l.stride && need <= len,
        "path attention: {what} buffer has {len} values, {rows} rows need {need}"
    );
}

/// The largest key row any path names, plus one.
fn key_rows(paths: PathsRef) -> usize {
    paths.rows[paths.offsets[0]..paths.offsets[paths.len()]]
        .iter()
        .map(|&r| r + 1)
        .max()
        .unwrap_or(0)
}

/// out (N, H*hd) = softmax(q k[path]^T / sqrt(hd)) v[path] per query row and head; att (sum |path|, H) saves the probabilities
#[allow(clippy::too_many_arguments)]
pub fn path_attention_forward(
    out: &mut [f32],
    att: Option<&mut [f32]>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    layout: &QkvLayout,
    paths: PathsRef,
    heads: Heads,
) {
    let Heads {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = heads;
    let group = heads.group();
    let n = paths.len();
    let ow = n_head * hd;
    let nk = key_rows(paths);
    let (q_layout, k_layout, v_layout) = (layout.q, layout.k, layout.v);
    check_rows("q", q.len(), q_layout, n, ow);
    check_rows("k", k.len(), k_layout, nk, n_kv_head * hd);
    check_rows("v", v.len(), v_layout, nk, n_kv_head * hd);
    assert!(out.len() >= n * ow, "path attention: out is too small");
    let att_ptr = att.map(|a| {
        assert!(
            a.len() >= paths.att_len(n_head),
            "path attention: att is too small"
        );
        SharedMut(a.as_mut_ptr())
    });
    let scale = 1.0 / (hd as f32).sqrt();
    out[..n * ow]
        .par_chunks_mut(ow)
        .enumerate()
        .for_each(|(i, o_row)| {
            let keys = paths.keys(i);
            let (base, len) = paths.att_span(i, n_head);
            let mut sc = vec![0.0f32; len];
            for h in 0..n_head {
                let kvh = h / group;
                let qo = q_layout.offset + i * q_layout.stride + h * hd;
                let qi = &q[qo..qo + hd];
                let mut max = f32::NEG_INFINITY;
                for (s, &r) in sc.iter_mut().zip(keys) {
                    let ko = k_layout.offset + r * k_layout.stride + kvh * hd;
                    *s = dot(qi, &k[ko..ko + hd]) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0.0f32;
                for s in &mut sc {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                let o = &mut o_row[h * hd..(h + 1) * hd];
                o.fill(0.0);
                for (s, &r) in sc.iter_mut().zip(keys) {
                    *s *= inv;
                    let vo = v_layout.offset + r * v_layout.stride + kvh * hd;
                    for (x, &y) in o.iter_mut().zip(&v[vo..vo + hd]) {
                        *x += *s * y;
                    }
                }
                if let Some(p) = att_ptr {
                    // SAFETY: query row i alone writes its span of att, inside the size asserted.
                    unsafe { p.slice(base + h * len, len) }.copy_from_slice(&sc);
                }
            }
        });
}

/// dq (N rows), dk, dv (key rows; layouts as in forward) += gradients from dout (N, H*hd) through the saved att
///
/// With one fused gradient buffer, query row i and key row i are the same buffer row.
#[allow(clippy::too_many_arguments)]
pub fn path_attention_backward(
    dqkv: QkvGrad,
    dout: &[f32],
    att: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    layout: &QkvLayout,
    paths: PathsRef,
    uses: &KeyUses,
    heads: Heads,
) {
    let Heads {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = heads;
    let group = heads.group();
    let n = paths.len();
    let ow = n_head * hd;
    let kw = n_kv_head * hd;
    let nk = uses.n_keys();
    assert!(
        key_rows(paths) <= nk,
        "path attention: key uses do not cover every key row"
    );
    let (q_layout, k_layout, v_layout) = (layout.q, layout.k, layout.v);
    check_rows("q", q.len(), q_layout, n, ow);
    check_rows("k", k.len(), k_layout, nk, kw);
    check_rows("v", v.len(), v_layout, nk, kw);
    let (dq_ptr, dk_ptr, dv_ptr) = match dqkv {
        QkvGrad::Fused(buf) => {
            check_rows("dq", buf.len(), q_layout, n, ow);
            check_rows("dk", buf.len(), k_layout, nk, kw);
            check_rows("dv", buf.len(), v_layout, nk, kw);
            let p = SharedMut(buf.as_mut_ptr());
            (p, p, p)
        }
        QkvGrad::Split(a, b, c) => {
            check_rows("dq", a.len(), q_layout, n, ow);
            check_rows("dk", b.len(), k_layout, nk, kw);
            check_rows("dv", c.len(), v_layout, nk, kw);
            (
                SharedMut(a.as_mut_ptr()),
                SharedMut(b.as_mut_ptr()),
                SharedMut(c.as_mut_ptr()),
            )
        }
    };
    assert!(dout.len() >= n * ow && att.len() >= paths.att_len(n_head));
    let scale = 1.0 / (hd as f32).sqrt();
    // Gradients of the scores, saved like att: the key pass below reads them.
    let mut ds = vec![0.0f32; paths.att_len(n_head)];
    let ds_ptr = SharedMut(ds.as_mut_ptr());
    // Query pass: one task per query row writes its dq row and its span of ds.
    (0..n).into_par_iter().for_each(|i| {
        let keys = paths.keys(i);
        let (base, len) = paths.att_span(i, n_head);
        for h in 0..n_head {
            let kvh = h / group;
            let p = &att[base + h * len..base + (h + 1) * len];
            let d_o = &dout[i * ow + h * hd..i * ow + (h + 1) * hd];
            // SAFETY: row i's span of ds belongs to this task alone.
            let dsr = unsafe { ds_ptr.slice(base + h * len, len) };
            let mut pdp = 0.0f32;
            for ((d, &pj), &r) in dsr.iter_mut().zip(p).zip(keys) {
                let vo = v_layout.offset + r * v_layout.stride + kvh * hd;
                *d = dot(d_o, &v[vo..vo + hd]);
                pdp += pj * *d;
            }
            // softmax backward, then the 1/sqrt(hd) scale of the scores
            for (d, &pj) in dsr.iter_mut().zip(p) {
                *d = pj * (*d - pdp) * scale;
            }
            // SAFETY: query row i's dq columns of head h belong to this task alone; bounds
            // checked by check_rows above.
            let dqr = unsafe { dq_ptr.slice(q_layout.offset + i * q_layout.stride + h * hd, hd) };
            for (&d, &r) in dsr.iter().zip(keys) {
                let ko = k_layout.offset + r * k_layout.stride + kvh * hd;
                for (x, &y) in dqr.iter_mut().zip(&k[ko..ko + hd]) {
                    *x += d * y;
                }
            }
        }
    });
    // Key pass: one task per key row sums what every query that reads it gives, in query order,
    // so the sums do not depend on the thread count.
    (0..nk).into_par_iter().for_each(|r| {
        let list = uses.of(r);
        if list.is_empty() {
            return;
        }
        for kvh in 0..n_kv_head {
            // SAFETY: key row r's columns of kv head kvh belong to this task alone.
            let dkr = unsafe { dk_ptr.slice(k_layout.offset + r * k_layout.stride + kvh * hd, hd) };
            let dvr = unsafe { dv_ptr.slice(v_layout.offset + r * v_layout.stride + kvh * hd, hd) };
            for &(i, j) in list {
                let (base, len) = paths.att_span(i, n_head);
                for h in kvh * group..(kvh + 1) * group {
                    let at = base + h * len + j;
                    let (d, p) = (ds[at], att[at]);
                    let qo = q_layout.offset + i * q_layout.stride + h * hd;
                    for (x, &y) in dkr.iter_mut().zip(&q[qo..qo + hd]) {
                        *x += d * y;
                    }
                    let d_o = &dout[i * ow + h * hd..i * ow + (h + 1) * hd];
                    for (x, &y) in dvr.iter_mut().zip(d_o) {
                        *x += p * y;
                    }
                }
            }
        }
    });
}
