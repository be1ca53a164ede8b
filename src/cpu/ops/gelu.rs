//! GELU, in the tanh approximation (GPT-2) and exact with erf (BERT).

use rayon::prelude::*;

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2 / pi)

/// Elements per parallel task: large enough that waking a thread pays off.
const CHUNK: usize = 1 << 14;

/// tanh through one exponential, which is several times cheaper than the library tanh; exp
/// saturates to inf or 0 at the ends, giving exactly 1 and -1 there.
fn fast_tanh(u: f32) -> f32 {
    1.0 - 2.0 / ((2.0 * u).exp() + 1.0)
}

/// out (N) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2's "gelu_new")
pub fn gelu_tanh_forward(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(out, inp)| {
            for (o, &x) in out.iter_mut().zip(inp) {
                let cube = 0.044715 * x * x * x;
                *o = 0.5 * x * (1.0 + fast_tanh(GELU_SCALE * (x + cube)));
            }
        });
}

/// dinp (N) += dout * gelu_tanh'(inp)
pub fn gelu_tanh_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    dinp.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK)))
        .for_each(|(dinp, (inp, dout))| {
            for ((di, &x), &d) in dinp.iter_mut().zip(inp).zip(dout) {
                let cube = 0.044715 * x * x * x;
                let t = fast_tanh(GELU_SCALE * (x + cube));
                let sech2 = 1.0 - t * t;
                let local =
                    0.5 * (1.0 + t) + 0.5 * x * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
                *di += local * d;
            }
        });
}

/// out (N) = 0.5 x (1 + erf(x / sqrt 2))   (BERT's exact GELU)
pub fn gelu_erf_forward(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// dinp (N) += dout * gelu_erf'(inp)
pub fn gelu_erf_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let inv_sqrt_2pi = 0.398_942_3_f32;
    for ((di, &x), &d) in dinp.iter_mut().zip(inp).zip(dout) {
        let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
        *di += (cdf + x * pdf) * d;
    }
}
