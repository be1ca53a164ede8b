//! Bidirectional multi-head self-attention with a key mask, as BERT encoders use it.
//!
//! Forward only: the sentence encoder is a frozen embedder (nothing trains through it), so there
//! is no backward function for this op.
//!
//! Sequences are given as row ranges of one (N, ...) matrix, so the caller may pack sequences of
//! different lengths back to back (no padding at all) or lay them out padded at a fixed stride
//! with a mask; both go through the same code.

use rayon::prelude::*;

/// out (N, C) = for each sequence s (rows starts[s]..starts[s+1]) and head h:
/// softmax(q k^T / sqrt(C / NH)) v over the keys of s whose `key_mask` is set; qkv (N, 3C) holds
/// q | k | v side by side; key_mask (N); starts (B + 1), starts[0] = 0, starts[B] = N.
/// A query row whose sequence has no attendable key gets zeros.
pub fn encoder_attention_forward(
    out: &mut [f32],
    qkv: &[f32],
    key_mask: &[bool],
    starts: &[usize],
    c: usize,
    nh: usize,
) {
    assert!(
        c.is_multiple_of(nh),
        "encoder attention: C ({c}) % NH ({nh}) != 0"
    );
    let n = *starts.last().unwrap_or(&0);
    assert!(starts.first().copied().unwrap_or(0) == 0);
    assert!(out.len() >= n * c && qkv.len() >= n * 3 * c && key_mask.len() >= n);
    let hd = c / nh;
    let scale = 1.0 / (hd as f32).sqrt();

    // Disjoint output slices, one per sequence, so sequences run in parallel.
    let mut pieces: Vec<(usize, &mut [f32])> = Vec::with_capacity(starts.len());
    let mut rest = &mut out[..n * c];
    for w in starts.windows(2) {
        assert!(w[0] <= w[1], "encoder attention: starts must not decrease");
        let (head, tail) = rest.split_at_mut((w[1] - w[0]) * c);
        pieces.push((w[0], head));
        rest = tail;
    }

    pieces
        .into_par_iter()
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, (s0, o)| {
            let len = o.len() / c;
            // Keys that may be attended, as row offsets within the sequence; reused for every query.
            let keys: Vec<usize> = (0..len).filter(|&j| key_mask[s0 + j]).collect();
            scores.resize(keys.len(), 0.0);
            for i in 0..len {
                let qrow = &qkv[(s0 + i) * 3 * c..(s0 + i) * 3 * c + c];
                let orow = &mut o[i * c..(i + 1) * c];
                orow.fill(0.0);
                if keys.is_empty() {
                    continue;
                }
                for h in 0..nh {
                    let q = &qrow[h * hd..(h + 1) * hd];
                    let mut max = f32::NEG_INFINITY;
                    for (sc, &j) in scores.iter_mut().zip(&keys) {
                        let base = (s0 + j) * 3 * c + c + h * hd;
                        let k = &qkv[base..base + hd];
                        let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
                        *sc = dot * scale;
                        max = max.max(*sc);
                    }
                    let mut sum = 0.0f32;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - max).exp();
                        sum += *sc;
                    }
                    let inv = 1.0 / sum;
                    let oh = &mut orow[h * hd..(h + 1) * hd];
                    for (&p, &j) in scores.iter().zip(&keys) {
                        let base = (s0 + j) * 3 * c + 2 * c + h * hd;
                        let v = &qkv[base..base + hd];
                        let p = p * inv;
                        for (ov, vv) in oh.iter_mut().zip(v) {
                            *ov += p * vv;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    // Straightforward reference: every query against every key, masked keys at -inf, in f64.
    fn naive(qkv: &[f32], mask: &[bool], b: usize, t: usize, c: usize, nh: usize) -> Vec<f32> {
        let hd = c / nh;
        let mut out = vec![0.0f32; b * t * c];
        for s in 0..b {
            for h in 0..nh {
                for i in 0..t {
                    let row = |r: usize, part: usize, d: usize| {
                        qkv[(s * t + r) * 3 * c + part * c + h * hd + d] as f64
                    };
                    let mut sc = vec![f64::NEG_INFINITY; t];
                    for (j, scj) in sc.iter_mut().enumerate() {
                        if mask[s * t + j] {
                            *scj = (0..hd).map(|d| row(i, 0, d) * row(j, 1, d)).sum::<f64>()
                                / (hd as f64).sqrt();
                        }
                    }
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let v: f64 = (0..t).map(|j| e[j] / z * row(j, 2, d)).sum();
                        out[(s * t + i) * c + h * hd + d] = v as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn padded_layout_matches_naive() {
        let (b, t, c, nh) = (3, 7, 16, 4);
        let mut rng = Rng::new(7);
        let qkv: Vec<f32> = (0..b * t * 3 * c).map(|_| rng.normal() as f32).collect();
        let lens = [7, 4, 1];
        let mask: Vec<bool> = (0..b * t).map(|r| r % t < lens[r / t]).collect();
        let starts: Vec<usize> = (0..=b).map(|s| s * t).collect();
        let mut out = vec![f32::NAN; b * t * c];
        encoder_attention_forward(&mut out, &qkv, &mask, &starts, c, nh);
        let want = naive(&qkv, &mask, b, t, c, nh);
        for (x, y) in out.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn packed_equals_padded_on_real_rows() {
        let (b, t, c, nh) = (3, 6, 8, 2);
        let lens = [6, 2, 3];
        let mut rng = Rng::new(11);
        let padded: Vec<f32> = (0..b * t * 3 * c).map(|_| rng.normal() as f32).collect();
        let mask: Vec<bool> = (0..b * t).map(|r| r % t < lens[r / t]).collect();
        let starts: Vec<usize> = (0..=b).map(|s| s * t).collect();
        let mut out_padded = vec![0.0; b * t * c];
        encoder_attention_forward(&mut out_padded, &padded, &mask, &starts, c, nh);

        let mut packed = Vec::new();
        let mut pstarts = vec![0];
        for (s, &l) in lens.iter().enumerate() {
            packed.extend_from_slice(&padded[s * t * 3 * c..(s * t + l) * 3 * c]);
            pstarts.push(pstarts.last().unwrap() + l);
        }
        let n = *pstarts.last().unwrap();
        let mut out_packed = vec![0.0; n * c];
        encoder_attention_forward(&mut out_packed, &packed, &vec![true; n], &pstarts, c, nh);
        for (s, &l) in lens.iter().enumerate() {
            for r in 0..l {
                let a = &out_padded[(s * t + r) * c..(s * t + r + 1) * c];
                let p = &out_packed[(pstarts[s] + r) * c..(pstarts[s] + r + 1) * c];
                assert_eq!(a, p);
            }
        }
    }
}
