//! Gradient checks of the Llama ops against central finite differences of the scalar
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

#[test]
fn grouped_query_attention_gradients_with_left_padding() {
    let (b, t, h, kv, d) = (2, 5, 4, 2, 3);
    let start = [0, 2];
    let mut rng = Rng::new(5);
    let q = randn(&mut rng, b * t * h * d, 1.0);
    let k = randn(&mut rng, b * t * kv * d, 1.0);
    let v = randn(&mut rng, b * t * kv * d, 1.0);
    let r = randn(&mut rng, b * t * h * d, 1.0);
    let fwd = |q: &[f32], k: &[f32], v: &[f32]| {
        let mut out = vec![0.0; b * t * h * d];
        let mut att = vec![0.0; b * h * t * t];
        gqa_attention_forward(&mut out, &mut att, q, k, v, &start, b, t, h, kv, d);
        (out, att)
    };
    let (out, att) = fwd(&q, &k, &v);
    // Padding queries give zero; padding keys get no weight; rows of att sum to one.
    assert!(out[(t) * h * d..(t + 2) * h * d].iter().all(|&x| x == 0.0));
    for hi in 0..h {
        for i in 2..t {
            let row = &att[((h + hi) * t + i) * t..][..t];
            assert_eq!(&row[..2], &[0.0, 0.0]);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
    // The first real query of row 1 sees only itself: its output is its own value vector.
    let o = &out[(t + 2) * h * d..][..d];
    let vv = &v[(t + 2) * kv * d..][..d];
    for (a, c) in o.iter().zip(vv) {
        assert!((a - c).abs() < 1e-6);
    }
    let mut dq = vec![0.0; q.len()];
    let mut dk = vec![0.0; k.len()];
    let mut dv = vec![0.0; v.len()];
    gqa_attention_backward(
        &mut dq, &mut dk, &mut dv, &r, &att, &q, &k, &v, &start, b, t, h, kv, d,
    );
    check("attention dq", &q, &dq, |q| dot(&fwd(q, &k, &v).0, &r));
    check("attention dk", &k, &dk, |k| dot(&fwd(&q, k, &v).0, &r));
    check("attention dv", &v, &dv, |v| dot(&fwd(&q, &k, v).0, &r));
}
