//! The SiLU-gated product of Llama's MLP: silu(gate) * up, both halves computed by separate
//! projections.

use rayon::prelude::*;

/// Elements per parallel task: big enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// out (N, F) = silu(gate) * up with silu(x) = x * sigmoid(x); gate, up (N, F)
pub fn swiglu_forward(out: &mut [f32], gate: &[f32], up: &[f32], n: usize, f: usize) {
    out[..n * f]
        .par_chunks_mut(CHUNK)
        .zip(gate[..n * f].par_chunks(CHUNK))
        .zip(up[..n * f].par_chunks(CHUNK))
        .for_each(|((o, g), u)| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
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
    let m = n * f;
    dgate[..m]
        .par_chunks_mut(CHUNK)
        .zip(dup[..m].par_chunks_mut(CHUNK))
        .zip(dout[..m].par_chunks(CHUNK))
        .zip(gate[..m].par_chunks(CHUNK).zip(up[..m].par_chunks(CHUNK)))
        .for_each(|(((dg, du), d), (g, u))| {
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                // d/dg (g * s(g)) = s + g * s * (1 - s)
                dg[i] += d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                du[i] += d[i] * g[i] * s;
            }
        });
}
