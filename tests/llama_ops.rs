//! Gradient checks of the Llama-specific ops (attention is shared with GPT-2 and tested there) against central finite differences of the scalar
//! L = sum(out * r) for a fixed random r, taken in f64 over the f32 outputs.

use pgsrm::cpu::ops::*;
use pgsrm::rng::Rng;

fn randn(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn dot(a: &[f32], r: &[f32]) -> f64 {
    a.iter().zip(r).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Checks `analytic` (d L / d x) against central differences of `loss(x)` at every entry.
fn check(what: &str, x: &[f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    let h = 1e-2f32;
    let mut xs = x.to_vec();
    let mut numeric = vec![0.0f64; x.len()];
    for i in 0..x.len() {
        xs[i] = x[i] + h;
        let up = loss(&xs);
        xs[i] = x[i] - h;
        let down = loss(&xs);
        xs[i] = x[i];
        numeric[i] = (up - down) / (2.0 * h as f64);
    }
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (&a, &n)) in analytic.iter().zip(&numeric).enumerate() {
        assert!(
            (a as f64 - n).abs() <= 2e-3 * scale,
            "{what}[{i}]: analytic {a}, numeric {n} (scale {scale})"
        );
    }
    assert!(
        scale > 1e-3,
        "{what}: gradient is all but zero, the check would prove nothing"
    );
}

#[test]
fn rmsnorm_gradients() {
    let (n, c, eps) = (3, 7, 1e-5);
    let mut rng = Rng::new(1);
    let x = randn(&mut rng, n * c, 1.0);
    let w = randn(&mut rng, c, 1.0);
    let r = randn(&mut rng, n * c, 1.0);
    let fwd = |x: &[f32], w: &[f32]| {
        let mut out = vec![0.0; n * c];
        let mut rstd = vec![0.0; n];
        rmsnorm_forward(&mut out, &mut rstd, x, w, n, c, eps);
        (out, rstd)
    };
    let (_, rstd) = fwd(&x, &w);
    let mut dx = vec![0.0; n * c];
    let mut dw = vec![0.0; c];
    rmsnorm_backward(&mut dx, &mut dw, &r, &x, &w, &rstd, n, c);
    check("rmsnorm dx", &x, &dx, |x| dot(&fwd(x, &w).0, &r));
    check("rmsnorm dw", &w, &dw, |w| dot(&fwd(&x, w).0, &r));
}

#[test]
fn swiglu_gradients() {
    let (n, f) = (4, 5);
    let mut rng = Rng::new(2);
    let g = randn(&mut rng, n * f, 2.0);
    let u = randn(&mut rng, n * f, 1.0);
    let r = randn(&mut rng, n * f, 1.0);
    let fwd = |g: &[f32], u: &[f32]| {
        let mut out = vec![0.0; n * f];
        swiglu_forward(&mut out, g, u, n, f);
        out
    };
    let mut dg = vec![0.0; n * f];
    let mut du = vec![0.0; n * f];
    swiglu_backward(&mut dg, &mut du, &r, &g, &u, n, f);
    check("swiglu dgate", &g, &dg, |g| dot(&fwd(g, &u), &r));
    check("swiglu dup", &u, &du, |u| dot(&fwd(&g, u), &r));
}

#[test]
fn rope_gradients_and_rotation() {
    let (n, heads, d) = (5, 3, 8);
    let (cos, sin) = rope_table(16, d, 10000.0);
    let pos = [0, 3, 1, 9, 15];
    let mut rng = Rng::new(3);
    let x = randn(&mut rng, n * heads * d, 1.0);
    let r = randn(&mut rng, n * heads * d, 1.0);
    let fwd = |x: &[f32]| {
        let mut out = vec![0.0; n * heads * d];
        rope_forward(&mut out, x, &pos, &cos, &sin, n, heads, d);
        out
    };
    let out = fwd(&x);
    // Position 0 leaves the vector as it is; a rotation keeps each pair's length.
    assert_eq!(&out[..heads * d], &x[..heads * d]);
    for i in 0..n * heads {
        for j in 0..d / 2 {
            let (a, b) = (x[i * d + j], x[i * d + j + d / 2]);
            let (p, q) = (out[i * d + j], out[i * d + j + d / 2]);
            assert!(((a * a + b * b) - (p * p + q * q)).abs() < 1e-4);
        }
    }
    // Pair j = 0 turns by exactly `pos` radians (theta^0 = 1).
    let (a, b) = (x[heads * d], x[heads * d + d / 2]);
    let want = a * 3f32.cos() - b * 3f32.sin();
    assert!((out[heads * d] - want).abs() < 1e-5);
    let mut dx = vec![0.0; n * heads * d];
    rope_backward(&mut dx, &r, &pos, &cos, &sin, n, heads, d);
    check("rope dx", &x, &dx, |x| dot(&fwd(x), &r));
}

#[test]
fn linear_gradients() {
    let (n, i, o) = (3, 5, 4);
    let mut rng = Rng::new(4);
    let x = randn(&mut rng, n * i, 1.0);
    let w = randn(&mut rng, o * i, 1.0);
    let r = randn(&mut rng, n * o, 1.0);
    let fwd = |x: &[f32], w: &[f32]| {
        let mut out = vec![0.0; n * o];
        linear_forward(&mut out, x, w, n, i, o);
        out
    };
    // out[0][1] = sum_k x[0][k] w[1][k]: the (out, in) layout.
    let want: f32 = (0..i).map(|k| x[k] * w[i + k]).sum();
    assert!((fwd(&x, &w)[1] - want).abs() < 1e-5);
    let mut dx = vec![0.0; n * i];
    let mut dw = vec![0.0; o * i];
    linear_backward(Some(&mut dx), &mut dw, &r, &x, &w, n, i, o);
    check("linear dx", &x, &dx, |x| dot(&fwd(x, &w), &r));
    check("linear dw", &w, &dw, |w| dot(&fwd(&x, w), &r));
}
