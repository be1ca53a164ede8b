//! Dense layer in the `torch.nn.Linear` layout (weight stored (out, in)), without bias, as Llama uses.

use crate::cpu::gemm::sgemm;

/// out (N, O) = inp (N, I) @ w^T with w (O, I)
pub fn linear_forward(out: &mut [f32], inp: &[f32], w: &[f32], n: usize, i: usize, o: usize) {
    sgemm(n, o, i, inp, false, w, true, out, false);
}

/// dinp (N, I) += dout (N, O) @ w; dw (O, I) += dout^T @ inp
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: Option<&mut [f32]>,
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    i: usize,
    o: usize,
) {
    if let Some(dinp) = dinp {
        sgemm(n, i, o, dout, false, w, false, dinp, true);
    }
    sgemm(o, i, n, dout, true, inp, false, dw, true);
}
