//! Root-mean-square normalisation over the last dimension (Llama's norm: no mean, no bias).

/// out (N, C) = inp * rstd * w with rstd = 1 / sqrt(mean(inp^2) + eps); saves rstd (N) for backward
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(
    out: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    for i in 0..n {
        let x = &inp[i * c..(i + 1) * c];
        let ms = x.iter().map(|&v| v * v).sum::<f32>() / c as f32;
        let s = 1.0 / (ms + eps).sqrt();
        for ((o, &xv), &wv) in out[i * c..(i + 1) * c].iter_mut().zip(x).zip(w) {
            *o = xv * s * wv;
        }
        rstd[i] = s;
    }
}

/// dinp (N, C) += ...; dw (C) += sum_rows dout * inp * rstd, given dout (N, C) and the saved rstd (N)
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    for i in 0..n {
        let x = &inp[i * c..(i + 1) * c];
        let d = &dout[i * c..(i + 1) * c];
        let s = rstd[i];
        // rstd depends on every input of the row through mean(x^2): one reduction carries that.
        let mut gx = 0.0f32;
        for j in 0..c {
            gx += d[j] * w[j] * x[j];
        }
        let k = s * s * s * gx / c as f32;
        let di = &mut dinp[i * c..(i + 1) * c];
        for j in 0..c {
            dw[j] += d[j] * x[j] * s;
            di[j] += d[j] * w[j] * s - x[j] * k;
        }
    }
}
