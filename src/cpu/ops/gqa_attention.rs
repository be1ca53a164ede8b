//! Causal self-attention with grouped-query heads (query head h reads kv head h / (H / KV)) and
//! left padding: row b of the batch holds tokens in [start[b], T), and keys before start[b] are
//! masked. A padding query has no key to attend to; its output is zero and nothing reads it.
//! q is (N, H*D), k and v are (N, KV*D), with N = B*T rows.

/// out (B*T, H*D) = softmax(q k^T / sqrt(D), causal, padded) v; saves probabilities att (B, H, T, T)
#[allow(clippy::too_many_arguments)]
pub fn gqa_attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    start: &[usize],
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    d: usize,
) {
    gqa_attention_cached_forward(out, Some(att), q, k, v, start, 0, t, t, b, h, kv, d);
}

/// out (B*Tq, H*D): queries at positions p0..p0+Tq of each row attend to keys [start[b], p] in
/// kcache, vcache (B, Tmax, KV*D); if given, att (B, H, Tq, Tmax) receives the probabilities
#[allow(clippy::too_many_arguments)]
pub fn gqa_attention_cached_forward(
    out: &mut [f32],
    mut att: Option<&mut [f32]>,
    q: &[f32],
    kcache: &[f32],
    vcache: &[f32],
    start: &[usize],
    p0: usize,
    tq: usize,
    tmax: usize,
    b: usize,
    h: usize,
    kv: usize,
    d: usize,
) {
    assert!(
        kv > 0 && h.is_multiple_of(kv),
        "H ({h}) must be a multiple of KV ({kv})"
    );
    assert!(p0 + tq <= tmax && start.len() == b);
    let group = h / kv;
    let (qw, kw) = (h * d, kv * d);
    let scale = 1.0 / (d as f32).sqrt();
    let mut row = vec![0.0f32; tmax];
    for bi in 0..b {
        let st = start[bi];
        for hi in 0..h {
            let kh = hi / group;
            for i in 0..tq {
                let p = p0 + i;
                let o = &mut out[(bi * tq + i) * qw + hi * d..][..d];
                o.fill(0.0);
                row.fill(0.0);
                if p >= st {
                    let qv = &q[(bi * tq + i) * qw + hi * d..][..d];
                    let mut max = f32::NEG_INFINITY;
                    for j in st..=p {
                        let kr = &kcache[(bi * tmax + j) * kw + kh * d..][..d];
                        let dot: f32 = qv.iter().zip(kr).map(|(a, b)| a * b).sum();
                        row[j] = dot * scale;
                        max = max.max(row[j]);
                    }
                    let mut sum = 0.0f32;
                    for x in &mut row[st..=p] {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    for j in st..=p {
                        row[j] /= sum;
                        let vr = &vcache[(bi * tmax + j) * kw + kh * d..][..d];
                        for (ov, &vv) in o.iter_mut().zip(vr) {
                            *ov += row[j] * vv;
                        }
                    }
                }
                if let Some(att) = att.as_deref_mut() {
                    att[((bi * h + hi) * tq + i) * tmax..][..tmax].copy_from_slice(&row);
                }
            }
        }
    }
}

/// dq (B*T, H*D), dk, dv (B*T, KV*D) += gradients from dout (B*T, H*D) through the saved att (B, H, T, T)
#[allow(clippy::too_many_arguments)]
pub fn gqa_attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    att: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    start: &[usize],
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    d: usize,
) {
    let group = h / kv;
    let (qw, kw) = (h * d, kv * d);
    let scale = 1.0 / (d as f32).sqrt();
    let mut dp = vec![0.0f32; t];
    for bi in 0..b {
        let st = start[bi];
        for hi in 0..h {
            let kh = hi / group;
            for i in st..t {
                let p = &att[((bi * h + hi) * t + i) * t..][..t];
                let g = &dout[(bi * t + i) * qw + hi * d..][..d];
                // Gradient of the probabilities, and its p-weighted mean for the softmax backward.
                let mut pdp = 0.0f32;
                for j in st..=i {
                    let vr = &v[(bi * t + j) * kw + kh * d..][..d];
                    dp[j] = g.iter().zip(vr).map(|(a, b)| a * b).sum();
                    pdp += p[j] * dp[j];
                    for (x, &y) in dv[(bi * t + j) * kw + kh * d..][..d].iter_mut().zip(g) {
                        *x += p[j] * y;
                    }
                }
                let qo = (bi * t + i) * qw + hi * d;
                for j in st..=i {
                    let ds = p[j] * (dp[j] - pdp) * scale;
                    let ko = (bi * t + j) * kw + kh * d;
                    for c in 0..d {
                        dq[qo + c] += ds * k[ko + c];
                        dk[ko + c] += ds * q[qo + c];
                    }
                }
            }
        }
    }
}
