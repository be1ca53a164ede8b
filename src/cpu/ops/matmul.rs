//! Dense layer in the Hugging Face Conv1D layout.

use crate::cpu::gemm::sgemm;

/// out (N, OC) = inp (N, C) @ w (C, OC) + b (OC)  (Hugging Face Conv1D layout)
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    sgemm(n, oc, c, inp, false, w, false, out, false);
    if let Some(b) = b {
        for row in out[..n * oc].chunks_exact_mut(oc) {
            for (o, bb) in row.iter_mut().zip(b) {
                *o += bb;
            }
        }
    }
}

/// dinp (N, C) += dout (N, OC) @ w^T; dw (C, OC) += inp^T @ dout; db (OC) += sum_rows dout
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    if let Some(dinp) = dinp {
        sgemm(n, c, oc, dout, false, w, true, dinp, true);
    }
    sgemm(c, oc, n, inp, true, dout, false, dw, true);
    if let Some(db) = db {
        for row in dout[..n * oc].chunks_exact(oc) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}
