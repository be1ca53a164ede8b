//! The softmax family over vocabulary-wide rows: log-softmax, gather of target log-probabilities,
//! cross-entropy and entropy. Rows are independent, so each op runs rows in parallel.

use rayon::prelude::*;

/// log(sum(exp(row))), shifted by the row maximum so that exp cannot overflow. Sums over a row
/// accumulate in f64: 50,257 f32 additions in a row can lose 1e-3 of the total, more than the
/// 1e-4 the kernels are checked to.
fn logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f64 = row.iter().map(|&x| (x - max).exp() as f64).sum();
    max + (sum as f32).ln()
}

/// logp (M, V) = logits - logsumexp(logits) per row
pub fn log_softmax_forward(logp: &mut [f32], logits: &[f32], v: usize) {
    logp.par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .for_each(|(o, z)| {
            let lse = logsumexp(z);
            for (o, &x) in o.iter_mut().zip(z) {
                *o = x - lse;
            }
        });
}

/// dlogits (M, V) += dlogp - softmax * sum(dlogp) per row
pub fn log_softmax_backward(dlogits: &mut [f32], dlogp: &[f32], logp: &[f32], v: usize) {
    dlogits
        .par_chunks_mut(v)
        .zip(dlogp.par_chunks(v).zip(logp.par_chunks(v)))
        .for_each(|(dz, (dl, lp))| {
            let total: f32 = dl.iter().sum();
            for ((dz, &d), &l) in dz.iter_mut().zip(dl).zip(lp) {
                *dz += d - l.exp() * total;
            }
        });
}

/// out (M) = logp[i, targets[i]] for logp (M, V)
pub fn gather_forward(out: &mut [f32], logp: &[f32], targets: &[u32], v: usize) {
    for (i, (o, &t)) in out.iter_mut().zip(targets).enumerate() {
        *o = logp[i * v + t as usize];
    }
}

/// dlogp[i, targets[i]] (M, V) += dout[i] (M)
pub fn gather_backward(dlogp: &mut [f32], dout: &[f32], targets: &[u32], v: usize) {
    for (i, (&d, &t)) in dout.iter().zip(targets).enumerate() {
        dlogp[i * v + t as usize] += d;
    }
}

/// losses (M) = logsumexp(logits[i]) - logits[i, targets[i]]; lse (M) saved for backward
pub fn cross_entropy_forward(
    losses: &mut [f32],
    lse: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    v: usize,
) {
    losses
        .par_iter_mut()
        .zip(lse.par_iter_mut())
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .for_each(|((loss, l), (z, &t))| {
            *l = logsumexp(z);
            *loss = *l - z[t as usize];
        });
}

/// dlogits (M, V) += dlosses[i] * (softmax(logits[i]) - onehot(targets[i]))
pub fn cross_entropy_backward(
    dlogits: &mut [f32],
    dlosses: &[f32],
    logits: &[f32],
    lse: &[f32],
    targets: &[u32],
    v: usize,
) {
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(
            dlosses
                .par_iter()
                .zip(lse.par_iter().zip(targets.par_iter())),
        )
        .for_each(|((dz, z), (&d, (&l, &t)))| {
            for (dz, &x) in dz.iter_mut().zip(z) {
                *dz += d * (x - l).exp();
            }
            dz[t as usize] -= d;
        });
}

/// ent (M) = -sum_j p_j log p_j with p = softmax(logits[i]); lse (M) saved for backward
pub fn entropy_forward(ent: &mut [f32], lse: &mut [f32], logits: &[f32], v: usize) {
    ent.par_iter_mut()
        .zip(lse.par_iter_mut())
        .zip(logits.par_chunks(v))
        .for_each(|((e, l), z)| {
            *l = logsumexp(z);
            // H = lse - sum_j p_j z_j, which needs one pass and no logarithms of tiny p.
            let pz: f64 = z.iter().map(|&x| ((x - *l).exp() * x) as f64).sum();
            *e = *l - pz as f32;
        });
}

/// dlogits (M, V) += dent[i] * (-p_j (log p_j + H_i))
pub fn entropy_backward(
    dlogits: &mut [f32],
    dent: &[f32],
    logits: &[f32],
    lse: &[f32],
    ent: &[f32],
    v: usize,
) {
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(dent.par_iter().zip(lse.par_iter().zip(ent.par_iter())))
        .for_each(|((dz, z), (&d, (&l, &h)))| {
            for (dz, &x) in dz.iter_mut().zip(z) {
                let logp = x - l;
                *dz -= d * logp.exp() * (logp + h);
            }
        });
}
