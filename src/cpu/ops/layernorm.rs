//! Layer normalisation over the last dimension.

/// out (N, C) = (inp - mean) / sqrt(var + eps) * w + b; saves mean (N) and rstd (N) for backward
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    for i in 0..n {
        let x = &inp[i * c..(i + 1) * c];
        let m = x.iter().sum::<f32>() / c as f32;
        let v = x.iter().map(|&xi| (xi - m) * (xi - m)).sum::<f32>() / c as f32;
        let s = 1.0 / (v + eps).sqrt();
        let o = &mut out[i * c..(i + 1) * c];
        for j in 0..c {
            o[j] = (x[j] - m) * s * w[j] + b[j];
        }
        mean[i] = m;
        rstd[i] = s;
    }
}

/// dinp (N, C) += ...; dw (C) += ...; db (C) += ... given dout (N, C) and the saved mean/rstd
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    for i in 0..n {
        let x = &inp[i * c..(i + 1) * c];
        let d = &dout[i * c..(i + 1) * c];
        let (m, s) = (mean[i], rstd[i]);
        // Two reductions over the row: mean of dnorm and mean of dnorm * norm.
        let mut dnorm_mean = 0.0f32;
        let mut dnorm_norm_mean = 0.0f32;
        for j in 0..c {
            let norm = (x[j] - m) * s;
            let dnorm = w[j] * d[j];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= c as f32;
        dnorm_norm_mean /= c as f32;
        let di = &mut dinp[i * c..(i + 1) * c];
        for j in 0..c {
            let norm = (x[j] - m) * s;
            let dnorm = w[j] * d[j];
            db[j] += d[j];
            dw[j] += norm * d[j];
            di[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
}
