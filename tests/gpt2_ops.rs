//! Finite-difference checks of every CPU op's backward.
//!
//! Each op's output is reduced to a scalar L = sum_i w_i out_i with fixed random weights w
//! (accumulated in f64), so the analytic input gradient is the op's backward given dout = w.
//! The ops compute in f32, so the central difference (L(x + e) - L(x - e)) / 2e carries
//! f32 rounding of about 1e-7 |L| / e on top of the O(e^2) truncation error. With e = 1e-2 and
//! |L| of order 10 that is about 1e-4 + 1e-4 times the third derivative, so we accept
//! |analytic - numeric| <= 2e-3 + 1e-2 |numeric|; a wrong gradient term is off by O(|grad|).

use pgsrm::cpu::ops::*;
use pgsrm::rng::Rng;

const EPS: f32 = 1e-2;

fn randn(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * std) as f32).collect()
}

fn dot(w: &[f32], out: &[f32]) -> f64 {
    w.iter().zip(out).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Compares `grad` (the analytic dL/dx) with central differences of `loss` at every coordinate
/// of `x` (or a spread-out subset of at most 60).
fn check(name: &str, x: &mut [f32], grad: &[f32], loss: impl Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{name}: gradient size");
    let step = x.len().div_ceil(60).max(1);
    let mut checked = 0;
    for i in (0..x.len()).step_by(step) {
        let orig = x[i];
        x[i] = orig + EPS;
        let lp = loss(x);
        x[i] = orig - EPS;
        let lm = loss(x);
        x[i] = orig;
        let num = (lp - lm) / (2.0 * EPS as f64);
        let ana = grad[i] as f64;
        assert!(
            (ana - num).abs() <= 2e-3 + 1e-2 * num.abs(),
            "{name}[{i}]: analytic {ana} vs numeric {num}"
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    let (v, p, c) = (7, 5, 4);
    let ids = [3u32, 1, 3, 6, 0];
    let pos = [0u32, 1, 2, 0, 4];
    let n = ids.len();
    let mut wte = randn(&mut rng, v * c, 1.0);
    let mut wpe = randn(&mut rng, p * c, 1.0);
    let w = randn(&mut rng, n * c, 1.0);
    let (mut dwte, mut dwpe) = (vec![0.0; v * c], vec![0.0; p * c]);
    embedding_backward(&mut dwte, Some(&mut dwpe), &w, &ids, &pos, c);
    let run = |wte: &[f32], wpe: &[f32]| {
        let mut out = vec![0.0; n * c];
        embedding_forward(&mut out, &ids, &pos, wte, Some(wpe), c);
        dot(&w, &out)
    };
    let wpe0 = wpe.clone();
    check("dwte", &mut wte, &dwte, |x| run(x, &wpe0));
    let wte0 = wte.clone();
    check("dwpe", &mut wpe, &dwpe, |x| run(&wte0, x));
}

#[test]
fn residual_backward_matches_finite_differences() {
    let mut rng = Rng::new(2);
    let n = 20;
    let mut a = randn(&mut rng, n, 1.0);
    let b = randn(&mut rng, n, 1.0);
    let w = randn(&mut rng, n, 1.0);
    let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
    residual_backward(&mut da, &mut db, &w);
    assert_eq!(da, db);
    check("da", &mut a, &da, |x| {
        let mut out = vec![0.0; n];
        residual_forward(&mut out, x, &b);
        dot(&w, &out)
    });
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let (n, c) = (3, 8);
    let mut inp = randn(&mut rng, n * c, 1.0);
    let mut lw = randn(&mut rng, c, 1.0);
    let lb = randn(&mut rng, c, 1.0);
    let w = randn(&mut rng, n * c, 1.0);
    let run = |inp: &[f32], lw: &[f32], lb: &[f32]| {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, inp, lw, lb, n, c, 1e-5);
        (dot(&w, &out), mean, rstd)
    };
    let (_, mean, rstd) = run(&inp, &lw, &lb);
    let (mut dinp, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    layernorm_backward(
        &mut dinp, &mut dw, &mut db, &w, &inp, &lw, &mean, &rstd, n, c,
    );
    let (lw0, inp0) = (lw.clone(), inp.clone());
    check("dinp", &mut inp, &dinp, |x| run(x, &lw0, &lb).0);
    check("dw", &mut lw, &dw, |x| run(&inp0, x, &lb).0);
    let mut lb1 = lb.clone();
    check("db", &mut lb1, &db, |x| run(&inp0, &lw0, x).0);
}

#[test]
fn matmul_backward_matches_finite_differences() {
    let mut rng = Rng::new(4);
    let (n, c, oc) = (5, 6, 7);
    let mut inp = randn(&mut rng, n * c, 1.0);
    let mut mw = randn(&mut rng, c * oc, 1.0);
    let mut mb = randn(&mut rng, oc, 1.0);
    let w = randn(&mut rng, n * oc, 1.0);
    let run = |inp: &[f32], mw: &[f32], mb: &[f32]| {
        let mut out = vec![0.0; n * oc];
        matmul_forward(&mut out, inp, mw, Some(mb), n, c, oc);
        dot(&w, &out)
    };
    let (mut dinp, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c * oc], vec![0.0; oc]);
    matmul_backward(
        Some(&mut dinp),
        &mut dw,
        Some(&mut db),
        &w,
        &inp,
        &mw,
        n,
        c,
        oc,
    );
    let (inp0, mw0, mb0) = (inp.clone(), mw.clone(), mb.clone());
    check("dinp", &mut inp, &dinp, |x| run(x, &mw0, &mb0));
    check("dw", &mut mw, &dw, |x| run(&inp0, x, &mb0));
    check("db", &mut mb, &db, |x| run(&inp0, &mw0, x));
}

#[test]
fn gelu_backward_matches_finite_differences() {
    let mut rng = Rng::new(5);
    let n = 40;
    let mut inp = randn(&mut rng, n, 2.0);
    let w = randn(&mut rng, n, 1.0);
    type Fwd = fn(&mut [f32], &[f32]);
    type Bwd = fn(&mut [f32], &[f32], &[f32]);
    let pairs: [(&str, Fwd, Bwd); 2] = [
        ("gelu_tanh", gelu_tanh_forward, gelu_tanh_backward),
        ("gelu_erf", gelu_erf_forward, gelu_erf_backward),
    ];
    // The tanh form against the formula in f64, tails and tiny inputs included.
    let xs = [-30.0f32, -8.0, -3.1, -1e-4, 0.0, 1e-6, 0.7, 2.5, 9.0, 40.0];
    let mut o = vec![0.0; xs.len()];
    gelu_tanh_forward(&mut o, &xs);
    for (&x, &y) in xs.iter().zip(&o) {
        let x = x as f64;
        let want = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
        assert!(
            (y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "gelu({x}) = {y}, want {want}"
        );
    }
    for (name, fwd, bwd) in pairs {
        let mut dinp = vec![0.0; n];
        bwd(&mut dinp, &inp, &w);
        check(name, &mut inp, &dinp, |x| {
            let mut out = vec![0.0; n];
            fwd(&mut out, x);
            dot(&w, &out)
        });
    }
}

#[test]
fn attention_backward_matches_finite_differences_fused_and_padded() {
    let mut rng = Rng::new(6);
    let s = AttentionShape {
        b: 2,
        t: 5,
        n_head: 2,
        n_kv_head: 2,
        head_dim: 3,
    };
    let start = [0usize, 2];
    let n = s.b * s.t;
    let c = s.n_head * s.head_dim;
    let layout = QkvLayout::fused(s.n_head, s.n_kv_head, s.head_dim);
    let mut qkv = randn(&mut rng, n * 3 * c, 1.0);
    let w = randn(&mut rng, n * c, 1.0);
    let run = |qkv: &[f32]| {
        let (mut out, mut att) = (vec![0.0; n * c], vec![0.0; s.b * s.n_head * s.t * s.t]);
        attention_forward(&mut out, &mut att, qkv, qkv, qkv, &layout, &start, s);
        (dot(&w, &out), out, att)
    };
    let (_, out, att) = run(&qkv);
    // Padding queries give zero, and no probability reaches a padding key.
    for t in 0..2 {
        assert!(
            out[(s.t + t) * c..(s.t + t + 1) * c]
                .iter()
                .all(|&x| x == 0.0)
        );
    }
    for h in 0..s.n_head {
        for t in 2..s.t {
            let row = &att[((s.n_head + h) * s.t + t) * s.t..][..s.t];
            assert_eq!(&row[..2], &[0.0, 0.0]);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
    let mut dqkv = vec![0.0; n * 3 * c];
    attention_backward(
        QkvGrad::Fused(&mut dqkv),
        &w,
        &att,
        &qkv,
        &qkv,
        &qkv,
        &layout,
        &start,
        s,
    );
    check("dqkv", &mut qkv, &dqkv, |x| run(x).0);
    // The padded rows of q, k and v must get exactly zero gradient.
    assert!(dqkv.iter().any(|&g| g != 0.0));
    for t in 0..2 {
        assert!(
            dqkv[(s.t + t) * 3 * c..(s.t + t + 1) * 3 * c]
                .iter()
                .all(|&x| x == 0.0)
        );
    }
}

#[test]
fn attention_backward_matches_finite_differences_grouped_query() {
    let mut rng = Rng::new(7);
    let s = AttentionShape {
        b: 2,
        t: 4,
        n_head: 4,
        n_kv_head: 2,
        head_dim: 3,
    };
    let start = [1usize, 0];
    let n = s.b * s.t;
    let (qw, kw) = (s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    let layout = QkvLayout::split(s.n_head, s.n_kv_head, s.head_dim);
    let mut q = randn(&mut rng, n * qw, 1.0);
    let mut k = randn(&mut rng, n * kw, 1.0);
    let mut v = randn(&mut rng, n * kw, 1.0);
    let w = randn(&mut rng, n * qw, 1.0);
    let run = |q: &[f32], k: &[f32], v: &[f32]| {
        let (mut out, mut att) = (vec![0.0; n * qw], vec![0.0; s.b * s.n_head * s.t * s.t]);
        attention_forward(&mut out, &mut att, q, k, v, &layout, &start, s);
        (dot(&w, &out), att)
    };
    let (_, att) = run(&q, &k, &v);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * qw], vec![0.0; n * kw], vec![0.0; n * kw]);
    attention_backward(
        QkvGrad::Split(&mut dq, &mut dk, &mut dv),
        &w,
        &att,
        &q,
        &k,
        &v,
        &layout,
        &start,
        s,
    );
    let (q0, k0, v0) = (q.clone(), k.clone(), v.clone());
    check("dq", &mut q, &dq, |x| run(x, &k0, &v0).0);
    check("dk", &mut k, &dk, |x| run(&q0, x, &v0).0);
    check("dv", &mut v, &dv, |x| run(&q0, &k0, x).0);

    // Grouped query heads equal full multi-head attention with each kv head repeated.
    let full = AttentionShape { n_kv_head: 4, ..s };
    let rep = |x: &[f32]| -> Vec<f32> {
        let mut out = Vec::new();
        for row in x.chunks(kw) {
            for h in 0..4 {
                let g = h / 2;
                out.extend_from_slice(&row[g * 3..g * 3 + 3]);
            }
        }
        out
    };
    let (k4, v4) = (rep(&k0), rep(&v0));
    let layout4 = QkvLayout::split(4, 4, 3);
    let (mut o1, mut a1) = (vec![0.0; n * qw], vec![0.0; s.b * 4 * s.t * s.t]);
    attention_forward(&mut o1, &mut a1, &q0, &k0, &v0, &layout, &start, s);
    let (mut o2, mut a2) = (vec![0.0; n * qw], vec![0.0; s.b * 4 * s.t * s.t]);
    attention_forward(&mut o2, &mut a2, &q0, &k4, &v4, &layout4, &start, full);
    assert_eq!(o1, o2);
}

#[test]
fn cached_attention_equals_full_attention() {
    let mut rng = Rng::new(8);
    let s = AttentionShape {
        b: 2,
        t: 6,
        n_head: 2,
        n_kv_head: 2,
        head_dim: 4,
    };
    let start = [3usize, 0];
    let (n, c) = (s.b * s.t, 8);
    let layout = QkvLayout::fused(2, 2, 4);
    let qkv = randn(&mut rng, n * 3 * c, 1.0);
    let (mut full, mut att) = (vec![0.0; n * c], vec![0.0; s.b * 2 * s.t * s.t]);
    attention_forward(&mut full, &mut att, &qkv, &qkv, &qkv, &layout, &start, s);
    // Cache of capacity 8 filled with all keys and values; queries fed in chunks of 4, 1, 1.
    let tmax = 8;
    let (mut kc, mut vc) = (vec![0.0; s.b * tmax * c], vec![0.0; s.b * tmax * c]);
    for b in 0..s.b {
        for t in 0..s.t {
            let r = (b * s.t + t) * 3 * c;
            kc[(b * tmax + t) * c..][..c].copy_from_slice(&qkv[r + c..r + 2 * c]);
            vc[(b * tmax + t) * c..][..c].copy_from_slice(&qkv[r + 2 * c..r + 3 * c]);
        }
    }
    for (p0, tq) in [(0usize, 4usize), (4, 1), (5, 1)] {
        let mut q = Vec::new();
        for b in 0..s.b {
            for t in p0..p0 + tq {
                q.extend_from_slice(&qkv[(b * s.t + t) * 3 * c..][..c]);
            }
        }
        let mut out = vec![0.0; s.b * tq * c];
        let qs = AttentionShape { t: tq, ..s };
        let ql = HeadsLayout {
            offset: 0,
            stride: c,
        };
        attention_cached_forward(&mut out, &q, ql, &kc, &vc, &start, p0, tq, tmax, qs);
        for b in 0..s.b {
            for i in 0..tq {
                let got = &out[(b * tq + i) * c..][..c];
                let want = &full[(b * s.t + p0 + i) * c..][..c];
                for (x, y) in got.iter().zip(want) {
                    assert!(
                        (x - y).abs() < 1e-6,
                        "row {b} position {}: {x} vs {y}",
                        p0 + i
                    );
                }
            }
        }
    }
}

#[test]
fn logits_backward_matches_finite_differences() {
    let mut rng = Rng::new(9);
    let (n, c, v) = (4, 5, 9);
    let rows = [3usize, 0, 3];
    let m = rows.len();
    let mut inp = randn(&mut rng, n * c, 1.0);
    let mut wte = randn(&mut rng, v * c, 1.0);
    let w = randn(&mut rng, m * v, 1.0);
    let run = |inp: &[f32], wte: &[f32]| {
        let (mut out, mut g) = (vec![0.0; m * v], vec![0.0; m * c]);
        logits_forward(&mut out, &mut g, inp, &rows, wte, v, c);
        (dot(&w, &out), g)
    };
    let (_, gathered) = run(&inp, &wte);
    let (mut dinp, mut dwte) = (vec![0.0; n * c], vec![0.0; v * c]);
    logits_backward(&mut dinp, &mut dwte, &w, &gathered, &rows, &wte, v, c);
    // Rows never chosen get nothing.
    assert!(dinp[c..3 * c].iter().all(|&x| x == 0.0));
    let (inp0, wte0) = (inp.clone(), wte.clone());
    check("dinp", &mut inp, &dinp, |x| run(x, &wte0).0);
    check("dwte", &mut wte, &dwte, |x| run(&inp0, x).0);
    // The in-order fast path gives the same as the scatter path.
    let all = [0usize, 1, 2, 3];
    let (mut out, mut g) = (vec![0.0; 4 * v], vec![0.0; 4 * c]);
    logits_forward(&mut out, &mut g, &inp0, &all, &wte0, v, c);
    let w4 = randn(&mut rng, 4 * v, 1.0);
    let (mut d1, mut dw1) = (vec![0.0; n * c], vec![0.0; v * c]);
    logits_backward(&mut d1, &mut dw1, &w4, &g, &all, &wte0, v, c);
    let perm = [1usize, 0, 2, 3];
    let mut wp = w4.clone();
    wp[..v].copy_from_slice(&w4[v..2 * v]);
    wp[v..2 * v].copy_from_slice(&w4[..v]);
    let mut gp = g.clone();
    gp[..c].copy_from_slice(&g[c..2 * c]);
    gp[c..2 * c].copy_from_slice(&g[..c]);
    let (mut d2, mut dw2) = (vec![0.0; n * c], vec![0.0; v * c]);
    logits_backward(&mut d2, &mut dw2, &wp, &gp, &perm, &wte0, v, c);
    for (x, y) in d1.iter().zip(&d2).chain(dw1.iter().zip(&dw2)) {
        assert!((x - y).abs() < 1e-5);
    }
}

#[test]
fn softmax_family_backward_matches_finite_differences() {
    let mut rng = Rng::new(10);
    let (m, v) = (3, 11);
    let mut logits = randn(&mut rng, m * v, 2.0);
    let targets = [4u32, 0, 10];
    let w = randn(&mut rng, m * v, 1.0);
    let wm = randn(&mut rng, m, 1.0);

    // log_softmax, checked against a direct f64 evaluation as well
    let mut logp = vec![0.0; m * v];
    log_softmax_forward(&mut logp, &logits, v);
    for r in 0..m {
        let z = &logits[r * v..(r + 1) * v];
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        for j in 0..v {
            assert!((logp[r * v + j] as f64 - (z[j] as f64 - lse)).abs() < 1e-5);
        }
    }
    let mut dz = vec![0.0; m * v];
    log_softmax_backward(&mut dz, &w, &logp, v);
    check("log_softmax", &mut logits.clone(), &dz, |x| {
        let mut o = vec![0.0; m * v];
        log_softmax_forward(&mut o, x, v);
        dot(&w, &o)
    });

    // gather
    let mut g = vec![0.0; m];
    gather_forward(&mut g, &logp, &targets, v);
    assert_eq!(g[1], logp[v]);
    let mut dlogp = vec![0.0; m * v];
    gather_backward(&mut dlogp, &wm, &targets, v);
    check("gather", &mut logp.clone(), &dlogp, |x| {
        let mut o = vec![0.0; m];
        gather_forward(&mut o, x, &targets, v);
        dot(&wm, &o)
    });

    // cross-entropy equals minus the gathered log-probability
    let (mut loss, mut lse) = (vec![0.0; m], vec![0.0; m]);
    cross_entropy_forward(&mut loss, &mut lse, &logits, &targets, v);
    for r in 0..m {
        assert!((loss[r] + g[r]).abs() < 1e-5);
    }
    let mut dz = vec![0.0; m * v];
    cross_entropy_backward(&mut dz, &wm, &logits, &lse, &targets, v);
    check("cross_entropy", &mut logits, &dz, |x| {
        let (mut o, mut l) = (vec![0.0; m], vec![0.0; m]);
        cross_entropy_forward(&mut o, &mut l, x, &targets, v);
        dot(&wm, &o)
    });

    // entropy, checked against -sum p log p in f64
    let (mut ent, mut lse) = (vec![0.0; m], vec![0.0; m]);
    entropy_forward(&mut ent, &mut lse, &logits, v);
    for r in 0..m {
        let h: f64 = (0..v)
            .map(|j| {
                let lp = logp[r * v + j] as f64;
                -lp.exp() * lp
            })
            .sum();
        assert!(
            (ent[r] as f64 - h).abs() < 1e-5,
            "entropy {} vs {h}",
            ent[r]
        );
    }
    let mut dz = vec![0.0; m * v];
    entropy_backward(&mut dz, &wm, &logits, &lse, &ent, v);
    check("entropy", &mut logits, &dz, |x| {
        let (mut o, mut l) = (vec![0.0; m], vec![0.0; m]);
        entropy_forward(&mut o, &mut l, x, v);
        dot(&wm, &o)
    });
}
