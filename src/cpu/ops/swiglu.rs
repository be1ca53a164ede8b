//! The SiLU-gated product of Llama's MLP: silu(gate) * up, both halves computed by separate
//! projections.

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// out (N, F) = silu(gate) * up with silu(x) = x * sigmoid(x); gate, up (N, F)
pub fn swiglu_forward(out: &mut [f32], gate: &[f32], up: &[f32], n: usize, f: usize) {
    for ((o, &g), &u) in out[..n * f].iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
}

/// dgate (N, F) += dout * up * silu'(gate); dup (N, F) += dout * silu(gate)
pub fn swiglu_backward(
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
    n: usize,
    f: usize,
) {
    for i in 0..n * f {
        let g = gate[i];
        let s = sigmoid(g);
        // d/dg (g * s(g)) = s + g * s * (1 - s)
        dgate[i] += dout[i] * up[i] * s * (1.0 + g * (1.0 - s));
        dup[i] += dout[i] * g * s;
    }
}
