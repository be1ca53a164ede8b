//! Attention along paths of shared rows (`cpu::ops::path_attention`): its backward against finite
//! differences (fused and grouped-query layouts), and both directions against the padded batch
//! attention on the same sequences written out row by row, where a shared row's gradient is the
//! sum of the gradients of its copies.

use pgsrm::cpu::ops::*;
use pgsrm::cpu::prefix::PrefixRows;
use pgsrm::rng::Rng;

const EPS: f32 = 1e-2;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn dot(w: &[f32], out: &[f32]) -> f64 {
    w.iter().zip(out).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of `loss` at a spread-out subset of `x` against the analytic `grad`
/// (tolerances as in the other op checks: f32 arithmetic, e = 1e-2).
fn check(name: &str, x: &mut [f32], grad: &[f32], loss: impl Fn(&[f32]) -> f64) {
    let step = x.len().div_ceil(80).max(1);
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
    }
}

/// Three sequences: two share their first three tokens, one of them is a prefix of nothing,
/// the third shares nothing; lengths 5, 4 and 3.
fn tree() -> (PrefixRows, Vec<Vec<usize>>) {
    let seqs: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[1, 2, 3, 9], &[7, 8, 9]];
    let mut rows = PrefixRows::default();
    let mut of_seq = Vec::new();
    for s in seqs {
        let mut at = None;
        let mut mine = Vec::new();
        for &t in s {
            at = rows.insert(at, &[t]);
            mine.push(at.unwrap());
        }
        of_seq.push(mine);
    }
    (rows, of_seq)
}

#[test]
fn shared_rows_are_stored_once_and_paths_run_root_first() {
    let (rows, of_seq) = tree();
    assert_eq!(rows.len(), 5 + 1 + 3);
    assert_eq!(of_seq[1][..3], of_seq[0][..3]);
    assert_eq!(rows.path(of_seq[1][3]), of_seq[1]);
    assert_eq!(rows.pos[of_seq[1][3]], 3);
    let mut again = rows.clone();
    assert_eq!(again.insert(None, &[1, 2, 3, 4, 5]), Some(of_seq[0][4]));
    assert_eq!(again.len(), rows.len());
    again.truncate(4);
    // The fifth row is gone, so inserting its sequence adds it again.
    assert_eq!(again.insert(None, &[1, 2, 3, 4, 5]), Some(4));
}

#[test]
fn path_attention_backward_matches_finite_differences_fused() {
    let (rows, _) = tree();
    let paths = rows.paths(0..rows.len());
    let p = paths.all();
    let heads = Heads {
        n_head: 2,
        n_kv_head: 2,
        head_dim: 3,
    };
    let c = 6;
    let n = rows.len();
    let layout = QkvLayout::fused(2, 2, 3);
    let mut rng = Rng::new(3);
    let mut qkv = randn(&mut rng, n * 3 * c);
    let w = randn(&mut rng, n * c);
    let run = |qkv: &[f32]| {
        let mut out = vec![0.0; n * c];
        let mut att = vec![0.0; p.att_len(2)];
        path_attention_forward(&mut out, Some(&mut att), qkv, qkv, qkv, &layout, p, heads);
        (dot(&w, &out), att)
    };
    let (_, att) = run(&qkv);
    let uses = KeyUses::new(p, n);
    let mut dqkv = vec![0.0; n * 3 * c];
    path_attention_backward(
        QkvGrad::Fused(&mut dqkv),
        &w,
        &att,
        &qkv,
        &qkv,
        &qkv,
        &layout,
        p,
        &uses,
        heads,
    );
    check("dqkv", &mut qkv, &dqkv, |x| run(x).0);
}

#[test]
fn path_attention_backward_matches_finite_differences_grouped_query() {
    let (rows, _) = tree();
    let paths = rows.paths(0..rows.len());
    let p = paths.all();
    let heads = Heads {
        n_head: 4,
        n_kv_head: 2,
        head_dim: 3,
    };
    let (qw, kw) = (12, 6);
    let n = rows.len();
    let layout = QkvLayout::split(4, 2, 3);
    let mut rng = Rng::new(4);
    let mut q = randn(&mut rng, n * qw);
    let mut k = randn(&mut rng, n * kw);
    let mut v = randn(&mut rng, n * kw);
    let w = randn(&mut rng, n * qw);
    let run = |q: &[f32], k: &[f32], v: &[f32]| {
        let mut out = vec![0.0; n * qw];
        let mut att = vec![0.0; p.att_len(4)];
        path_attention_forward(&mut out, Some(&mut att), q, k, v, &layout, p, heads);
        (dot(&w, &out), att)
    };
    let (_, att) = run(&q, &k, &v);
    let uses = KeyUses::new(p, n);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * qw], vec![0.0; n * kw], vec![0.0; n * kw]);
    path_attention_backward(
        QkvGrad::Split(&mut dq, &mut dk, &mut dv),
        &w,
        &att,
        &q,
        &k,
        &v,
        &layout,
        p,
        &uses,
        heads,
    );
    let (k0, v0) = (k.clone(), v.clone());
    check("dq", &mut q, &dq, |x| run(x, &k0, &v0).0);
    let q0 = q.clone();
    check("dk", &mut k, &dk, |x| run(&q0, x, &v0).0);
    check("dv", &mut v, &dv, |x| run(&q0, &k0, x).0);
}

#[test]
fn path_attention_equals_padded_attention_with_gradients_summed_over_copies() {
    let (rows, of_seq) = tree();
    let n = rows.len();
    let heads = Heads {
        n_head: 4,
        n_kv_head: 2,
        head_dim: 3,
    };
    let (qw, kw) = (12, 6);
    let layout = QkvLayout::split(4, 2, 3);
    let mut rng = Rng::new(5);
    let q = randn(&mut rng, n * qw);
    let k = randn(&mut rng, n * kw);
    let v = randn(&mut rng, n * kw);
    // The same sequences as a left-padded batch (B = 3, T = 5), each row its own copy.
    let (b, t) = (3, 5);
    let start: Vec<usize> = of_seq.iter().map(|s| t - s.len()).collect();
    let row_at = |bi: usize, i: usize| of_seq[bi][i - start[bi]];
    let gather = |src: &[f32], width: usize| {
        let mut out = vec![0.0f32; b * t * width];
        for bi in 0..b {
            for i in start[bi]..t {
                let r = row_at(bi, i);
                out[(bi * t + i) * width..][..width].copy_from_slice(&src[r * width..][..width]);
            }
        }
        out
    };
    let (bq, bk, bv) = (gather(&q, qw), gather(&k, kw), gather(&v, kw));
    let shape = AttentionShape {
        b,
        t,
        n_head: 4,
        n_kv_head: 2,
        head_dim: 3,
    };
    let mut bout = vec![0.0; b * t * qw];
    let mut batt = vec![0.0; b * 4 * t * t];
    attention_forward(&mut bout, &mut batt, &bq, &bk, &bv, &layout, &start, shape);

    let paths = rows.paths(0..n);
    let p = paths.all();
    let mut out = vec![0.0; n * qw];
    let mut att = vec![0.0; p.att_len(4)];
    path_attention_forward(&mut out, Some(&mut att), &q, &k, &v, &layout, p, heads);
    for bi in 0..b {
        for i in start[bi]..t {
            let r = row_at(bi, i);
            for (x, y) in out[r * qw..][..qw]
                .iter()
                .zip(&bout[(bi * t + i) * qw..][..qw])
            {
                assert!((x - y).abs() <= 1e-6, "row {r}: {x} vs {y}");
            }
        }
    }

    // Each row's output gradient enters once: at its first copy in the batch.
    let w = randn(&mut rng, n * qw);
    let mut bw = vec![0.0f32; b * t * qw];
    let mut seen = vec![false; n];
    for bi in 0..b {
        for i in start[bi]..t {
            let r = row_at(bi, i);
            if !seen[r] {
                seen[r] = true;
                bw[(bi * t + i) * qw..][..qw].copy_from_slice(&w[r * qw..][..qw]);
            }
        }
    }
    let (mut bdq, mut bdk, mut bdv) = (
        vec![0.0; b * t * qw],
        vec![0.0; b * t * kw],
        vec![0.0; b * t * kw],
    );
    attention_backward(
        QkvGrad::Split(&mut bdq, &mut bdk, &mut bdv),
        &bw,
        &batt,
        &bq,
        &bk,
        &bv,
        &layout,
        &start,
        shape,
    );
    let uses = KeyUses::new(p, n);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * qw], vec![0.0; n * kw], vec![0.0; n * kw]);
    path_attention_backward(
        QkvGrad::Split(&mut dq, &mut dk, &mut dv),
        &w,
        &att,
        &q,
        &k,
        &v,
        &layout,
        p,
        &uses,
        heads,
    );
    let sum = |src: &[f32], width: usize| {
        let mut out = vec![0.0f32; n * width];
        for bi in 0..b {
            for i in start[bi]..t {
                let r = row_at(bi, i);
                for (x, &y) in out[r * width..][..width]
                    .iter_mut()
                    .zip(&src[(bi * t + i) * width..][..width])
                {
                    *x += y;
                }
            }
        }
        out
    };
    for (name, got, want) in [
        ("dq", &dq, sum(&bdq, qw)),
        ("dk", &dk, sum(&bdk, kw)),
        ("dv", &dv, sum(&bdv, kw)),
    ] {
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() <= 1e-5, "{name}: {x} vs {y}");
        }
    }
}
