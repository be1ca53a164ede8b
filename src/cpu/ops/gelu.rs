//! GELU, in the tanh approximation (GPT-2) and exact with erf (BERT).

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2 / pi)

/// out (N) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2's "gelu_new")
pub fn gelu_tanh_forward(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        let cube = 0.044715 * x * x * x;
        *o = 0.5 * x * (1.0 + (GELU_SCALE * (x + cube)).tanh());
    }
}

/// dinp (N) += dout * gelu_tanh'(inp)
pub fn gelu_tanh_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    for ((di, &x), &d) in dinp.iter_mut().zip(inp).zip(dout) {
        let cube = 0.044715 * x * x * x;
        let t = (GELU_SCALE * (x + cube)).tanh();
        let sech2 = 1.0 - t * t;
        let local = 0.5 * (1.0 + t) + 0.5 * x * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
        *di += local * d;
    }
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
