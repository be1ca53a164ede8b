//! Multi-head causal self-attention with left padding and grouped-query heads.
//!
//! Row b of the batch holds its tokens in [start[b], T): keys before start[b] are masked, so padding
//! never reaches a real token. A padding query (t < start[b]) has no key to attend to; its output
//! is defined as zero, and nothing downstream of a real token reads it.
//!
//! Query head h reads kv head h / (n_head / n_kv_head); GPT-2 has n_kv_head == n_head.

// Index loops over key positions read more plainly than zipped iterators here.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

/// Sizes of one attention call; T is the padded length, N = B * T rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub b: usize,
    pub t: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl AttentionShape {
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

/// Where q, k or v sits in its buffer: element (row n, head h, d) is at
/// `offset + n * stride + h * head_dim + d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadsLayout {
    pub offset: usize,
    pub stride: usize,
}

/// The layouts of q, k and v.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvLayout {
    pub q: HeadsLayout,
    pub k: HeadsLayout,
    pub v: HeadsLayout,
}

impl QkvLayout {
    /// One buffer with rows [q (H hd) | k (KVH hd) | v (KVH hd)]; GPT-2's (N, 3C) c_attn output.
    pub fn fused(n_head: usize, n_kv_head: usize, head_dim: usize) -> Self {
        let (qw, kw) = (n_head * head_dim, n_kv_head * head_dim);
        let stride = qw + 2 * kw;
        QkvLayout {
            q: HeadsLayout { offset: 0, stride },
            k: HeadsLayout { offset: qw, stride },
            v: HeadsLayout {
                offset: qw + kw,
                stride,
            },
        }
    }

    /// Three separate dense buffers, (N, H hd) for q and (N, KVH hd) for k and v.
    pub fn split(n_head: usize, n_kv_head: usize, head_dim: usize) -> Self {
        let kw = n_kv_head * head_dim;
        QkvLayout {
            q: HeadsLayout {
                offset: 0,
                stride: n_head * head_dim,
            },
            k: HeadsLayout {
                offset: 0,
                stride: kw,
            },
            v: HeadsLayout {
                offset: 0,
                stride: kw,
            },
        }
    }
}

/// Gradient buffers of q, k and v: one fused buffer or three.
pub enum QkvGrad<'a> {
    Fused(&'a mut [f32]),
    Split(&'a mut [f32], &'a mut [f32], &'a mut [f32]),
}

fn check_len(what: &str, len: usize, l: HeadsLayout, rows: usize, width: usize) {
    if rows == 0 {
        return;
    }
    let need = l.offset + (rows - 1) * l.stride + width;
    assert!(
        width <= l.stride && need <= len,
        "attention: {what} buffer has {len} values, layout needs {need}"
    );
}

/// A pointer that parallel tasks share; each task writes a set of elements no other task touches.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    // A method call captures the whole wrapper in a closure, not its bare pointer field.
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY: callers keep i inside the buffer the pointer came from.
        unsafe { self.0.add(i) }
    }
}

/// out (B*T, H*hd) = softmax_causal_padded(q k^T / sqrt(hd)) v per head; att (B, H, T, T) saves the probabilities
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    layout: &QkvLayout,
    start: &[usize],
    s: AttentionShape,
) {
    let AttentionShape {
        b: nb,
        t: nt,
        n_head,
        head_dim: hd,
        ..
    } = s;
    let group = s.group();
    let n = nb * nt;
    let ow = n_head * hd;
    check_len("q", q.len(), layout.q, n, ow);
    check_len("k", k.len(), layout.k, n, s.n_kv_head * hd);
    check_len("v", v.len(), layout.v, n, s.n_kv_head * hd);
    assert!(out.len() >= n * ow && att.len() >= nb * n_head * nt * nt && start.len() == nb);
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SharedMut(out.as_mut_ptr());
    att[..nb * n_head * nt * nt]
        .par_chunks_mut(nt * nt)
        .enumerate()
        .for_each(|(bh, att_bh)| {
            let (b, h) = (bh / n_head, bh % n_head);
            let kvh = h / group;
            let st = start[b];
            for t in 0..nt {
                let row = &mut att_bh[t * nt..(t + 1) * nt];
                row.fill(0.0);
                // SAFETY: task (b, h) alone writes the columns of head h in the rows of batch b,
                // and `out` holds n * ow values (asserted above).
                let o = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.at((b * nt + t) * ow + h * hd), hd)
                };
                o.fill(0.0);
                if t < st {
                    continue;
                }
                let qo = layout.q.offset + (b * nt + t) * layout.q.stride + h * hd;
                let qt = &q[qo..qo + hd];
                let mut max = f32::NEG_INFINITY;
                for t2 in st..=t {
                    let ko = layout.k.offset + (b * nt + t2) * layout.k.stride + kvh * hd;
                    let dot: f32 = qt.iter().zip(&k[ko..ko + hd]).map(|(a, b)| a * b).sum();
                    row[t2] = dot * scale;
                    max = max.max(row[t2]);
                }
                let mut sum = 0.0f32;
                for x in &mut row[st..=t] {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                for t2 in st..=t {
                    row[t2] *= inv;
                    let vo = layout.v.offset + (b * nt + t2) * layout.v.stride + kvh * hd;
                    let p = row[t2];
                    for (o, &vv) in o.iter_mut().zip(&v[vo..vo + hd]) {
                        *o += p * vv;
                    }
                }
            }
        });
}

/// dq, dk, dv (layouts as in forward) += gradients from dout (B*T, H*hd) through the saved att (B, H, T, T)
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: QkvGrad,
    dout: &[f32],
    att: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    layout: &QkvLayout,
    start: &[usize],
    s: AttentionShape,
) {
    let AttentionShape {
        b: nb,
        t: nt,
        n_head,
        n_kv_head,
        head_dim: hd,
    } = s;
    let group = s.group();
    let n = nb * nt;
    let ow = n_head * hd;
    let kw = n_kv_head * hd;
    let (dq, dk, dv) = match dqkv {
        QkvGrad::Fused(buf) => {
            check_len("dq", buf.len(), layout.q, n, ow);
            check_len("dk", buf.len(), layout.k, n, kw);
            check_len("dv", buf.len(), layout.v, n, kw);
            let p = SharedMut(buf.as_mut_ptr());
            (p, p, p)
        }
        QkvGrad::Split(a, b, c) => {
            check_len("dq", a.len(), layout.q, n, ow);
            check_len("dk", b.len(), layout.k, n, kw);
            check_len("dv", c.len(), layout.v, n, kw);
            (
                SharedMut(a.as_mut_ptr()),
                SharedMut(b.as_mut_ptr()),
                SharedMut(c.as_mut_ptr()),
            )
        }
    };
    assert!(dout.len() >= n * ow && att.len() >= nb * n_head * nt * nt && start.len() == nb);
    let scale = 1.0 / (hd as f32).sqrt();
    // One task per (batch, kv head): the query heads of a group all add into the same dk, dv
    // rows, so they must run in the same task.
    (0..nb * n_kv_head).into_par_iter().for_each(|bg| {
        let (b, kvh) = (bg / n_kv_head, bg % n_kv_head);
        let st = start[b];
        let mut dp = vec![0.0f32; nt];
        for h in kvh * group..(kvh + 1) * group {
            let att_bh = &att[(b * n_head + h) * nt * nt..(b * n_head + h + 1) * nt * nt];
            for t in st..nt {
                let p = &att_bh[t * nt..(t + 1) * nt];
                let d_o = &dout[(b * nt + t) * ow + h * hd..(b * nt + t) * ow + (h + 1) * hd];
                // dp = dout . v ; dv += p dout
                let mut pdp = 0.0f32;
                for t2 in st..=t {
                    let vo = layout.v.offset + (b * nt + t2) * layout.v.stride + kvh * hd;
                    dp[t2] = d_o.iter().zip(&v[vo..vo + hd]).map(|(a, b)| a * b).sum();
                    pdp += p[t2] * dp[t2];
                    // SAFETY: task (b, kvh) alone writes kv head kvh in the rows of batch b;
                    // bounds checked by check_len above.
                    let dvr = unsafe { std::slice::from_raw_parts_mut(dv.at(vo), hd) };
                    for (x, &y) in dvr.iter_mut().zip(d_o) {
                        *x += p[t2] * y;
                    }
                }
                let qo = layout.q.offset + (b * nt + t) * layout.q.stride + h * hd;
                // SAFETY: query head h belongs to this task's group only.
                let dqr = unsafe { std::slice::from_raw_parts_mut(dq.at(qo), hd) };
                let qt = &q[qo..qo + hd];
                for t2 in st..=t {
                    // softmax backward, then the 1/sqrt(hd) scale of the scores
                    let ds = p[t2] * (dp[t2] - pdp) * scale;
                    let ko = layout.k.offset + (b * nt + t2) * layout.k.stride + kvh * hd;
                    let kr = &k[ko..ko + hd];
                    for (x, &y) in dqr.iter_mut().zip(kr) {
                        *x += ds * y;
                    }
                    // SAFETY: as for dv.
                    let dkr = unsafe { std::slice::from_raw_parts_mut(dk.at(ko), hd) };
                    for (x, &y) in dkr.iter_mut().zip(qt) {
                        *x += ds * y;
                    }
                }
            }
        }
    });
}

/// out (B*Tq, H*hd): the queries at positions p0..p0+Tq of row b attend to the cached keys
/// [start[b], p]; kcache, vcache (B, Tmax, KVH*hd) already hold positions below p0 + Tq.
/// Forward only: decoding is never differentiated.
#[allow(clippy::too_many_arguments)]
pub fn attention_cached_forward(
    out: &mut [f32],
    q: &[f32],
    q_layout: HeadsLayout,
    kcache: &[f32],
    vcache: &[f32],
    start: &[usize],
    p0: usize,
    tq: usize,
    tmax: usize,
    s: AttentionShape,
) {
    let AttentionShape {
        b: nb,
        n_head,
        n_kv_head,
        head_dim: hd,
        ..
    } = s;
    let group = s.group();
    let ow = n_head * hd;
    let kw = n_kv_head * hd;
    check_len("q", q.len(), q_layout, nb * tq, ow);
    assert!(p0 + tq <= tmax && kcache.len() >= nb * tmax * kw && vcache.len() >= nb * tmax * kw);
    assert!(out.len() >= nb * tq * ow && start.len() == nb);
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SharedMut(out.as_mut_ptr());
    (0..nb * n_head).into_par_iter().for_each(|bh| {
        let (b, h) = (bh / n_head, bh % n_head);
        let kvh = h / group;
        let st = start[b];
        let mut sc = vec![0.0f32; tmax];
        for i in 0..tq {
            let t = p0 + i;
            // SAFETY: task (b, h) alone writes head h of the rows of batch b; size asserted above.
            let o = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.at((b * tq + i) * ow + h * hd), hd)
            };
            o.fill(0.0);
            if t < st {
                continue;
            }
            let qo = q_layout.offset + (b * tq + i) * q_layout.stride + h * hd;
            let qt = &q[qo..qo + hd];
            let mut max = f32::NEG_INFINITY;
            for t2 in st..=t {
                let ko = (b * tmax + t2) * kw + kvh * hd;
                let dot: f32 = qt
                    .iter()
                    .zip(&kcache[ko..ko + hd])
                    .map(|(a, b)| a * b)
                    .sum();
                sc[t2] = dot * scale;
                max = max.max(sc[t2]);
            }
            let mut sum = 0.0f32;
            for x in &mut sc[st..=t] {
                *x = (*x - max).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            for t2 in st..=t {
                let p = sc[t2] * inv;
                let vo = (b * tmax + t2) * kw + kvh * hd;
                for (o, &vv) in o.iter_mut().zip(&vcache[vo..vo + hd]) {
                    *o += p * vv;
                }
            }
        }
    });
}
