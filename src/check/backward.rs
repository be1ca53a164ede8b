//! `pgsrm check`'s rows for the backward kernels: each against its CPU function of `cpu::ops` on
//! random inputs, with the gradients starting from random values (both sides add into them), at
//! shapes with edge tiles, padding, grouped-query ratios 1 and 3, repeated indices and
//! vocabularies that are not a multiple of a block. Each part of a row (input, weight, bias
//! gradient...) is compared relative to its own scale.

use super::table::{Checker, randn};
use crate::cpu::ops as c;
use crate::cuda::device::DevBuf;
use crate::cuda::ops::{self as k, AttnShape, QkvGrad, RowBuckets};
use anyhow::Result;

/// Gradient tolerance of docs/ARCHITECTURE.md: CUDA f32 within 1e-3 of the CPU.
pub const GRAD_TOL: f32 = 1e-3;

type Buf = DevBuf<f32>;

pub(super) fn run_all(ck: &mut Checker) -> Result<()> {
    for (n, ci, oc) in [(130, 100, 77), (5, 33, 129), (64, 160, 200), (300, 64, 40)] {
        matmul(ck, n, ci, oc)?;
        linear(ck, n, ci, oc)?;
    }
    for (n, ci) in [(256, 768), (7, 100), (3, 1)] {
        layernorm(ck, n, ci)?;
        rmsnorm(ck, n, ci)?;
    }
    for n in [1, 1000, 1_000_003] {
        elementwise(ck, n)?;
    }
    embedding(ck, 1000, 128, 70, 12)?;
    embedding(ck, 300, 96, 5, 300)?;
    logits(ck, 97, 64, 1000, 5)?;
    logits(ck, 20, 64, 50257, 4)?;
    let shape = |b, t, n_head, n_kv_head, head_dim| AttnShape {
        b,
        t,
        n_head,
        n_kv_head,
        head_dim,
    };
    attention(ck, shape(3, 17, 4, 4, 32), &[0, 5, 16], true)?;
    attention(ck, shape(2, 9, 6, 2, 64), &[3, 0], false)?;
    attention(ck, shape(2, 9, 6, 2, 64), &[0, 8], true)?;
    attention(ck, shape(1, 40, 3, 1, 128), &[0], false)?;
    rope(ck, 11, 9, 64)?;
    rope(ck, 3, 2, 8)?;
    Ok(())
}

fn matmul(ck: &mut Checker, n: usize, ci: usize, oc: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 1.0);
    let w = randn(&mut ck.rng, ci * oc, 0.05);
    let dout = randn(&mut ck.rng, n * oc, 1.0);
    let (di0, dw0, db0) = (
        randn(&mut ck.rng, n * ci, 0.1),
        randn(&mut ck.rng, ci * oc, 0.1),
        randn(&mut ck.rng, oc, 0.1),
    );
    let (mut di, mut dw, mut db) = (di0.clone(), dw0.clone(), db0.clone());
    c::matmul_backward(
        Some(&mut di),
        &mut dw,
        Some(&mut db),
        &dout,
        &inp,
        &w,
        n,
        ci,
        oc,
    );
    ck.parts(
        "matmul_backward",
        format!("N={n} C={ci} OC={oc}"),
        &[&di, &dw, &db],
        GRAD_TOL,
        |g| {
            let (mut gi, mut gw, mut gb) = (g.upload(&di0)?, g.upload(&dw0)?, g.upload(&db0)?);
            k::matmul_backward(
                g,
                Some(&mut gi),
                &mut gw,
                Some(&mut gb),
                &g.upload(&dout)?,
                &g.upload(&inp)?,
                &g.upload(&w)?,
                n,
                ci,
                oc,
            )?;
            g.sync()?;
            Ok(vec![g.download(&gi)?, g.download(&gw)?, g.download(&gb)?])
        },
    )
}

fn linear(ck: &mut Checker, n: usize, i: usize, o: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * i, 1.0);
    let w = randn(&mut ck.rng, o * i, 0.05);
    let dout = randn(&mut ck.rng, n * o, 1.0);
    let (di0, dw0) = (
        randn(&mut ck.rng, n * i, 0.1),
        randn(&mut ck.rng, o * i, 0.1),
    );
    let (mut di, mut dw) = (di0.clone(), dw0.clone());
    c::linear_backward(Some(&mut di), &mut dw, &dout, &inp, &w, n, i, o);
    ck.parts(
        "linear_backward",
        format!("N={n} I={i} O={o}"),
        &[&di, &dw],
        GRAD_TOL,
        |g| {
            let (mut gi, mut gw) = (g.upload(&di0)?, g.upload(&dw0)?);
            k::linear_backward(
                g,
                Some(&mut gi),
                &mut gw,
                &g.upload(&dout)?,
                &g.upload(&inp)?,
                &g.upload(&w)?,
                n,
                i,
                o,
            )?;
            g.sync()?;
            Ok(vec![g.download(&gi)?, g.download(&gw)?])
        },
    )
}

fn layernorm(ck: &mut Checker, n: usize, ci: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 2.0);
    let w = randn(&mut ck.rng, ci, 1.0);
    let b = randn(&mut ck.rng, ci, 1.0);
    let dout = randn(&mut ck.rng, n * ci, 1.0);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * ci], vec![0.0; n], vec![0.0; n]);
    c::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &w, &b, n, ci, 1e-5);
    let (di0, dw0, db0) = (
        randn(&mut ck.rng, n * ci, 0.1),
        randn(&mut ck.rng, ci, 0.1),
        randn(&mut ck.rng, ci, 0.1),
    );
    let (mut di, mut dw, mut db) = (di0.clone(), dw0.clone(), db0.clone());
    c::layernorm_backward(
        &mut di, &mut dw, &mut db, &dout, &inp, &w, &mean, &rstd, n, ci,
    );
    ck.parts(
        "layernorm_backward",
        format!("N={n} C={ci}"),
        &[&di, &dw, &db],
        GRAD_TOL,
        |g| {
            let (mut gi, mut gw, mut gb) = (g.upload(&di0)?, g.upload(&dw0)?, g.upload(&db0)?);
            k::layernorm_backward(
                g,
                &mut gi,
                &mut gw,
                &mut gb,
                &g.upload(&dout)?,
                &g.upload(&inp)?,
                &g.upload(&w)?,
                &g.upload(&mean)?,
                &g.upload(&rstd)?,
                n,
                ci,
            )?;
            g.sync()?;
            Ok(vec![g.download(&gi)?, g.download(&gw)?, g.download(&gb)?])
        },
    )
}

fn rmsnorm(ck: &mut Checker, n: usize, ci: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 2.0);
    let w = randn(&mut ck.rng, ci, 1.0);
    let dout = randn(&mut ck.rng, n * ci, 1.0);
    let (mut out, mut rstd) = (vec![0.0; n * ci], vec![0.0; n]);
    c::rmsnorm_forward(&mut out, &mut rstd, &inp, &w, n, ci, 1e-5);
    let (di0, dw0) = (randn(&mut ck.rng, n * ci, 0.1), randn(&mut ck.rng, ci, 0.1));
    let (mut di, mut dw) = (di0.clone(), dw0.clone());
    c::rmsnorm_backward(&mut di, &mut dw, &dout, &inp, &w, &rstd, n, ci);
    ck.parts(
        "rmsnorm_backward",
        format!("N={n} C={ci}"),
        &[&di, &dw],
        GRAD_TOL,
        |g| {
            let (mut gi, mut gw) = (g.upload(&di0)?, g.upload(&dw0)?);
            k::rmsnorm_backward(
                g,
                &mut gi,
                &mut gw,
                &g.upload(&dout)?,
                &g.upload(&inp)?,
                &g.upload(&w)?,
                &g.upload(&rstd)?,
                n,
                ci,
            )?;
            g.sync()?;
            Ok(vec![g.download(&gi)?, g.download(&gw)?])
        },
    )
}

/// GELU (tanh), SwiGLU and the residual backward on n elements.
fn elementwise(ck: &mut Checker, n: usize) -> Result<()> {
    let x = randn(&mut ck.rng, n, 3.0);
    let y = randn(&mut ck.rng, n, 3.0);
    let dout = randn(&mut ck.rng, n, 1.0);
    let (a0, b0) = (randn(&mut ck.rng, n, 0.1), randn(&mut ck.rng, n, 0.1));
    let shape = format!("n={n}");
    let mut want = a0.clone();
    c::gelu_tanh_backward(&mut want, &x, &dout);
    ck.parts(
        "gelu_tanh_backward",
        shape.clone(),
        &[&want],
        GRAD_TOL,
        |g| {
            let mut d = g.upload(&a0)?;
            k::gelu_tanh_backward(g, &mut d, &g.upload(&x)?, &g.upload(&dout)?, n)?;
            g.sync()?;
            Ok(vec![g.download(&d)?])
        },
    )?;
    let (mut dgate, mut dup) = (a0.clone(), b0.clone());
    c::swiglu_backward(&mut dgate, &mut dup, &dout, &x, &y, 1, n);
    ck.parts(
        "swiglu_backward",
        shape.clone(),
        &[&dgate, &dup],
        GRAD_TOL,
        |g| {
            let (mut dg, mut du) = (g.upload(&a0)?, g.upload(&b0)?);
            k::swiglu_backward(
                g,
                &mut dg,
                &mut du,
                &g.upload(&dout)?,
                &g.upload(&x)?,
                &g.upload(&y)?,
                n,
            )?;
            g.sync()?;
            Ok(vec![g.download(&dg)?, g.download(&du)?])
        },
    )?;
    let (mut da, mut db) = (a0.clone(), b0.clone());
    c::residual_backward(&mut da, &mut db, &dout);
    ck.parts("residual_backward", shape, &[&da, &db], GRAD_TOL, |g| {
        let (mut ga, mut gb) = (g.upload(&a0)?, g.upload(&b0)?);
        k::residual_backward(g, &mut ga, &mut gb, &g.upload(&dout)?, n)?;
        g.sync()?;
        Ok(vec![g.download(&ga)?, g.download(&gb)?])
    })
}

/// Token and position embeddings of n rows with ids drawn from the first `distinct` tokens (so
/// that ids repeat) and positions from 64.
fn embedding(ck: &mut Checker, v: usize, ci: usize, n: usize, distinct: usize) -> Result<()> {
    let dout = randn(&mut ck.rng, n * ci, 1.0);
    let ids: Vec<u32> = (0..n)
        .map(|_| ck.rng.below(distinct.min(v)) as u32)
        .collect();
    let pos: Vec<u32> = (0..n).map(|_| ck.rng.below(64) as u32).collect();
    let (dwte0, dwpe0) = (
        randn(&mut ck.rng, v * ci, 0.1),
        randn(&mut ck.rng, 64 * ci, 0.1),
    );
    let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
    c::embedding_backward(&mut dwte, Some(&mut dwpe), &dout, &ids, &pos, ci);
    let as_usize = |xs: &[u32]| xs.iter().map(|&x| x as usize).collect::<Vec<_>>();
    let (ids, pos) = (as_usize(&ids), as_usize(&pos));
    ck.parts(
        "embedding_backward",
        format!("V={v} C={ci} N={n} ids<{distinct}"),
        &[&dwte, &dwpe],
        GRAD_TOL,
        |g| {
            let (mut gte, mut gpe) = (g.upload(&dwte0)?, g.upload(&dwpe0)?);
            let (bi, bp) = (RowBuckets::new(g, &ids)?, RowBuckets::new(g, &pos)?);
            k::embedding_backward(
                g,
                &mut gte,
                Some((&mut gpe, &bp)),
                &g.upload(&dout)?,
                &bi,
                ci,
            )?;
            g.sync()?;
            Ok(vec![g.download(&gte)?, g.download(&gpe)?])
        },
    )
}

/// The head at m distinct rows of n (in a shuffled order), vocabulary v.
fn logits(ck: &mut Checker, n: usize, ci: usize, v: usize, m: usize) -> Result<()> {
    let wte = randn(&mut ck.rng, v * ci, 0.05);
    let lnf = randn(&mut ck.rng, n * ci, 1.0);
    let mut rows: Vec<usize> = Vec::new();
    while rows.len() < m {
        let r = ck.rng.below(n);
        if !rows.contains(&r) {
            rows.push(r);
        }
    }
    let dout = randn(&mut ck.rng, m * v, 0.01);
    let (mut logits, mut gathered) = (vec![0.0; m * v], vec![0.0; m * ci]);
    c::logits_forward(&mut logits, &mut gathered, &lnf, &rows, &wte, v, ci);
    let (di0, dw0) = (
        randn(&mut ck.rng, n * ci, 0.1),
        randn(&mut ck.rng, v * ci, 0.01),
    );
    let (mut di, mut dw) = (di0.clone(), dw0.clone());
    c::logits_backward(&mut di, &mut dw, &dout, &gathered, &rows, &wte, v, ci);
    ck.parts(
        "logits_backward",
        format!("N={n} C={ci} V={v} M={m}"),
        &[&di, &dw],
        GRAD_TOL,
        |g| {
            let (mut gi, mut gw) = (g.upload(&di0)?, g.upload(&dw0)?);
            let mut scratch = g.alloc(m * ci)?;
            k::logits_backward(
                g,
                &mut gi,
                &mut gw,
                &mut scratch,
                &g.upload(&dout)?,
                &g.upload(&gathered)?,
                &RowBuckets::new(g, &rows)?,
                &g.upload(&wte)?,
                m,
                v,
                ci,
            )?;
            g.sync()?;
            Ok(vec![g.download(&gi)?, g.download(&gw)?])
        },
    )
}

/// Attention backward through the CPU forward's probabilities, with q, k, v in one fused buffer
/// (GPT-2's layout) or three (Llama's).
fn attention(ck: &mut Checker, s: AttnShape, start_at: &[usize], fused: bool) -> Result<()> {
    let (h, kv, hd) = (s.n_head, s.n_kv_head, s.head_dim);
    let n = s.b * s.t;
    let (qw, kw) = (h * hd, kv * hd);
    let layout = if fused {
        c::QkvLayout::fused(h, kv, hd)
    } else {
        c::QkvLayout::split(h, kv, hd)
    };
    let cs = c::AttentionShape {
        b: s.b,
        t: s.t,
        n_head: h,
        n_kv_head: kv,
        head_dim: hd,
    };
    // One buffer holds q|k|v when fused; three otherwise.
    let (q, k, v) = if fused {
        let all = randn(&mut ck.rng, n * (qw + 2 * kw), 1.0);
        (all.clone(), all.clone(), all)
    } else {
        (
            randn(&mut ck.rng, n * qw, 1.0),
            randn(&mut ck.rng, n * kw, 1.0),
            randn(&mut ck.rng, n * kw, 1.0),
        )
    };
    let dout = randn(&mut ck.rng, n * qw, 1.0);
    let mut out = vec![0.0; n * qw];
    let mut att = vec![0.0; s.b * h * s.t * s.t];
    c::attention_forward(&mut out, &mut att, &q, &k, &v, &layout, start_at, cs);
    let inits: Vec<Vec<f32>> = if fused {
        vec![randn(&mut ck.rng, q.len(), 0.1)]
    } else {
        vec![
            randn(&mut ck.rng, n * qw, 0.1),
            randn(&mut ck.rng, n * kw, 0.1),
            randn(&mut ck.rng, n * kw, 0.1),
        ]
    };
    let mut want = inits.clone();
    let grads = match &mut want[..] {
        [all] => c::QkvGrad::Fused(all),
        [a, b, d] => c::QkvGrad::Split(a, b, d),
        _ => unreachable!(),
    };
    c::attention_backward(grads, &dout, &att, &q, &k, &v, &layout, start_at, cs);
    let st: Vec<i32> = start_at.iter().map(|&x| x as i32).collect();
    let wants: Vec<&[f32]> = want.iter().map(|w| &w[..]).collect();
    ck.parts(
        "attention_backward",
        format!(
            "B={} T={} H={h} KVH={kv} hd={hd} {}",
            s.b,
            s.t,
            if fused { "fused" } else { "split" }
        ),
        &wants,
        GRAD_TOL,
        |g| {
            let mut d: Vec<Buf> = inits.iter().map(|x| g.upload(x)).collect::<Result<_>>()?;
            let (dq, dk, dv) = (g.upload(&q)?, g.upload(&k)?, g.upload(&v)?);
            let mut scores = g.alloc(att.len())?;
            let grads = match &mut d[..] {
                [all] => QkvGrad::Fused(all),
                [a, b, e] => QkvGrad::Split(a, b, e),
                _ => unreachable!(),
            };
            k::attention_backward(
                g,
                grads,
                &mut scores,
                &g.upload(&dout)?,
                &g.upload(&att)?,
                (&dq, layout.q.offset, layout.q.stride),
                (&dk, layout.k.offset, layout.k.stride),
                (&dv, layout.v.offset, layout.v.stride),
                &g.upload(&st)?,
                s,
            )?;
            g.sync()?;
            d.iter().map(|b| g.download(b)).collect()
        },
    )
}

fn rope(ck: &mut Checker, n: usize, h: usize, hd: usize) -> Result<()> {
    let dout = randn(&mut ck.rng, n * h * hd, 1.0);
    let pos: Vec<usize> = (0..n).map(|_| ck.rng.below(2048)).collect();
    let (cos, sin) = c::rope_table(2048, hd, 10000.0);
    let d0 = randn(&mut ck.rng, n * h * hd, 0.1);
    let mut want = d0.clone();
    c::rope_backward(&mut want, &dout, &pos, &cos, &sin, n, h, hd);
    let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
    ck.parts(
        "rope_backward",
        format!("N={n} H={h} hd={hd}"),
        &[&want],
        GRAD_TOL,
        |g| {
            let mut d = g.upload(&d0)?;
            k::rope_backward(
                g,
                &mut d,
                &g.upload(&dout)?,
                &g.upload(&pos_i)?,
                &g.upload(&cos)?,
                &g.upload(&sin)?,
                n,
                h,
                hd,
            )?;
            g.sync()?;
            Ok(vec![g.download(&d)?])
        },
    )
}
