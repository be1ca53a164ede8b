//! The language-model head: hidden rows at chosen positions times the (tied) token embedding.
//! Only the chosen rows are multiplied, because the vocabulary-wide product dominates the cost.

use crate::cpu::gemm::sgemm;

/// out (M, V) = inp[rows] (M of N rows, C) @ wte^T (V, C); gathered (M, C) keeps inp[rows] for backward
#[allow(clippy::too_many_arguments)]
pub fn logits_forward(
    out: &mut [f32],
    gathered: &mut [f32],
    inp: &[f32],
    rows: &[usize],
    wte: &[f32],
    v: usize,
    c: usize,
) {
    let m = rows.len();
    for (g, &r) in gathered[..m * c].chunks_exact_mut(c).zip(rows) {
        g.copy_from_slice(&inp[r * c..(r + 1) * c]);
    }
    sgemm(m, v, c, gathered, false, wte, true, out, false);
}

/// dinp[rows] (N, C) += dout (M, V) @ wte; dwte (V, C) += dout^T @ gathered (M, C)
#[allow(clippy::too_many_arguments)]
pub fn logits_backward(
    dinp: &mut [f32],
    dwte: &mut [f32],
    dout: &[f32],
    gathered: &[f32],
    rows: &[usize],
    wte: &[f32],
    v: usize,
    c: usize,
) {
    let m = rows.len();
    if rows.iter().enumerate().all(|(i, &r)| i == r) {
        // Every row in order (the usual training step): accumulate in place, no scatter.
        sgemm(m, c, v, dout, false, wte, false, dinp, true);
    } else {
        let mut d = vec![0.0f32; m * c];
        sgemm(m, c, v, dout, false, wte, false, &mut d, false);
        for (dr, &r) in d.chunks_exact(c).zip(rows) {
            for (x, &y) in dinp[r * c..(r + 1) * c].iter_mut().zip(dr) {
                *x += y;
            }
        }
    }
    sgemm(v, c, m, dout, true, gathered, false, dwte, true);
}
