//! Rows of the forward kernels of the ops (`cuda::ops` against `cpu::ops`), the sampler and the
//! fused reward, at several shapes each, edge tiles and odd sizes included.

use super::table::{Checker, TOL, randn};
use crate::cpu::ops as c;
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::ops::{self as k, AttnShape, SampleArgs};
use anyhow::Result;

/// The products' rows through their op launchers (the kernels themselves: `sgemm`).
pub(super) fn products(ck: &mut Checker) -> Result<()> {
    for (n, ci, oc) in [
        (1, 768, 2304),
        (64, 768, 3072),
        (130, 100, 77),
        (5, 33, 129),
        (127, 96, 200),
        (300, 64, 257),
    ] {
        matmul(ck, n, ci, oc, false)?;
        matmul(ck, n, ci, oc, true)?;
    }
    Ok(())
}

/// Every other forward op's rows.
pub(super) fn run_all(ck: &mut Checker) -> Result<()> {
    let small = ck.small();
    for (n, ci) in [(256, 768), (7, 100), (3, 1)] {
        layernorm(ck, n, ci)?;
        rmsnorm(ck, n, ci)?;
    }
    for n in [1, 1000, 1_000_003] {
        elementwise(ck, n)?;
    }
    embedding(ck, 1000, 128, 70, true)?;
    embedding(ck, 300, 96, 5, false)?;
    bert_embedding(ck, 500, 64, 9)?;
    logits(ck, 97, 64, 1000, 5)?;
    // The GPT-2 head's vocabulary, with its last partial tile; narrower on the emulated device.
    logits(ck, 300, if small { 64 } else { 768 }, 50257, 4)?;
    let shape = |b, t, n_head, n_kv_head, head_dim| AttnShape {
        b,
        t,
        n_head,
        n_kv_head,
        head_dim,
    };
    attention(ck, shape(3, 17, 4, 4, 32), &[0, 5, 16])?;
    attention(ck, shape(2, 9, 6, 2, 64), &[3, 0])?;
    attention(ck, shape(1, 40, 3, 1, 128), &[0])?;
    attention_cached(ck, shape(2, 12, 4, 2, 64), &[0, 2], 5, 3)?;
    attention_cached(ck, shape(3, 9, 6, 2, 16), &[8, 0, 4], 8, 1)?;
    kv_append(ck, 2, 3, 10, 4, 48)?;
    encoder_attention(ck, &[5, 9, 1], 384, 12)?;
    encoder_attention(ck, &[33], 64, 2)?;
    rope(ck, 11, 9, 64, 100000.0)?;
    rope(ck, 3, 2, 8, 10000.0)?;
    for (p, v) in [(6, 50257), (3, 1000), (2, 7)] {
        softmax_family(ck, p, v)?;
    }
    sampling(ck, 8, 1000)?;
    sampling(ck, 3, 50257)?;
    decode_loop(ck, 5, 6, 4)?;
    decode_loop(ck, 33, 3, 0)?;
    scatter_rows(ck, 7, 20, 96)?;
    scatter_rows(ck, 50, 50, 33)?;
    scatter_rows_list(ck, 9, 24, &[1, 96, 33, 4])?;
    copy_segments(ck, &[5, 0, 1, 700, 33, 2100])?;
    reward(ck, 5, 7, 384)?;
    reward(ck, 2, 3, 33)?;
    Ok(())
}

fn matmul(ck: &mut Checker, n: usize, ci: usize, oc: usize, nt: bool) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 1.0);
    let w = randn(&mut ck.rng, ci * oc, 0.05);
    let b = randn(&mut ck.rng, oc, 0.1);
    let mut want = vec![0.0; n * oc];
    if nt {
        crate::cpu::gemm::sgemm(n, oc, ci, &inp, false, &w, true, &mut want, false);
        for row in want.chunks_exact_mut(oc) {
            for (o, bb) in row.iter_mut().zip(&b) {
                *o += bb;
            }
        }
    } else {
        c::matmul_forward(&mut want, &inp, &w, Some(&b), n, ci, oc);
    }
    let name = if nt {
        "linear_forward"
    } else {
        "matmul_forward"
    };
    ck.case(name, format!("N={n} C={ci} OC={oc}"), &want, |g| {
        let (di, dw, db) = (g.upload(&inp)?, g.upload(&w)?, g.upload(&b)?);
        let mut out = g.poisoned(n * oc)?;
        if nt {
            k::linear_forward(g, &mut out, &di, &dw, Some(&db), n, ci, oc)?;
        } else {
            k::matmul_forward(g, &mut out, &di, &dw, Some(&db), n, ci, oc)?;
        }
        g.sync()?;
        g.download(&out)
    })
}

fn layernorm(ck: &mut Checker, n: usize, ci: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 2.0);
    let w = randn(&mut ck.rng, ci, 1.0);
    let b = randn(&mut ck.rng, ci, 1.0);
    let (mut want, mut mean, mut rstd) = (vec![0.0; n * ci], vec![0.0; n], vec![0.0; n]);
    c::layernorm_forward(&mut want, &mut mean, &mut rstd, &inp, &w, &b, n, ci, 1e-5);
    want.extend(rstd);
    ck.case("layernorm_forward", format!("N={n} C={ci}"), &want, |g| {
        let mut out = g.poisoned(n * ci)?;
        let (mut dm, mut dr) = (g.poisoned(n)?, g.poisoned(n)?);
        k::layernorm_forward(
            g,
            &mut out,
            &mut dm,
            &mut dr,
            &g.upload(&inp)?,
            &g.upload(&w)?,
            &g.upload(&b)?,
            n,
            ci,
            1e-5,
        )?;
        g.sync()?;
        let mut got = g.download(&out)?;
        got.extend(g.download(&dr)?);
        Ok(got)
    })
}

fn rmsnorm(ck: &mut Checker, n: usize, ci: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 2.0);
    let w = randn(&mut ck.rng, ci, 1.0);
    let (mut want, mut rrms) = (vec![0.0; n * ci], vec![0.0; n]);
    c::rmsnorm_forward(&mut want, &mut rrms, &inp, &w, n, ci, 1e-5);
    want.extend(rrms);
    ck.case("rmsnorm_forward", format!("N={n} C={ci}"), &want, |g| {
        let (mut out, mut dr) = (g.poisoned(n * ci)?, g.poisoned(n)?);
        k::rmsnorm_forward(
            g,
            &mut out,
            &mut dr,
            &g.upload(&inp)?,
            &g.upload(&w)?,
            n,
            ci,
            1e-5,
        )?;
        g.sync()?;
        let mut got = g.download(&out)?;
        got.extend(g.download(&dr)?);
        Ok(got)
    })
}

type Unary = fn(&Gpu, &mut DevBuf<f32>, &DevBuf<f32>, usize) -> Result<()>;
type CpuUnary = fn(&mut [f32], &[f32]);
type Binary = fn(&Gpu, &mut DevBuf<f32>, &DevBuf<f32>, &DevBuf<f32>, usize) -> Result<()>;

fn elementwise(ck: &mut Checker, n: usize) -> Result<()> {
    let x = randn(&mut ck.rng, n, 3.0);
    let y = randn(&mut ck.rng, n, 3.0);
    let shape = format!("n={n}");
    let unary: [(&str, CpuUnary, Unary); 2] = [
        (
            "gelu_tanh_forward",
            c::gelu_tanh_forward,
            k::gelu_tanh_forward,
        ),
        ("gelu_erf_forward", c::gelu_erf_forward, k::gelu_erf_forward),
    ];
    for (name, cpu, dev) in unary {
        let mut want = vec![0.0; n];
        cpu(&mut want, &x);
        ck.case(name, shape.clone(), &want, |g| {
            let mut out = g.poisoned(n)?;
            dev(g, &mut out, &g.upload(&x)?, n)?;
            g.sync()?;
            g.download(&out)
        })?;
    }
    let mut want_res = vec![0.0; n];
    c::residual_forward(&mut want_res, &x, &y);
    let mut want_swi = vec![0.0; n];
    c::swiglu_forward(&mut want_swi, &x, &y, 1, n);
    let binary: [(&str, &[f32], Binary); 2] = [
        ("residual_forward", &want_res, k::residual_forward),
        ("swiglu_forward", &want_swi, k::swiglu_forward),
    ];
    for (name, want, dev) in binary {
        ck.case(name, shape.clone(), want, |g| {
            let mut out = g.poisoned(n)?;
            dev(g, &mut out, &g.upload(&x)?, &g.upload(&y)?, n)?;
            g.sync()?;
            g.download(&out)
        })?;
    }
    Ok(())
}

fn embedding(ck: &mut Checker, v: usize, ci: usize, n: usize, with_pos: bool) -> Result<()> {
    let wte = randn(&mut ck.rng, v * ci, 0.02);
    let wpe = randn(&mut ck.rng, 64 * ci, 0.02);
    let ids: Vec<u32> = (0..n).map(|_| ck.rng.below(v) as u32).collect();
    let pos: Vec<u32> = (0..n).map(|_| ck.rng.below(64) as u32).collect();
    let mut want = vec![0.0; n * ci];
    c::embedding_forward(
        &mut want,
        &ids,
        &pos,
        &wte,
        with_pos.then_some(&wpe[..]),
        ci,
    );
    let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
    let shape = format!(
        "V={v} C={ci} N={n}{}",
        if with_pos { "" } else { " no wpe" }
    );
    ck.case("embedding_forward", shape, &want, |g| {
        let mut out = g.poisoned(n * ci)?;
        let dpe = g.upload(&wpe)?;
        k::embedding_forward(
            g,
            &mut out,
            &g.upload(&ids)?,
            &g.upload(&pos_i)?,
            &g.upload(&wte)?,
            with_pos.then_some(&dpe),
            n,
            ci,
        )?;
        g.sync()?;
        g.download(&out)
    })
}

fn bert_embedding(ck: &mut Checker, v: usize, ci: usize, n: usize) -> Result<()> {
    let wte = randn(&mut ck.rng, v * ci, 0.02);
    let wpe = randn(&mut ck.rng, 32 * ci, 0.02);
    let wtt = randn(&mut ck.rng, 2 * ci, 0.02);
    let ids: Vec<u32> = (0..n).map(|_| ck.rng.below(v) as u32).collect();
    let pos: Vec<i32> = (0..n).map(|_| ck.rng.below(32) as i32).collect();
    let types: Vec<u32> = (0..n).map(|_| ck.rng.below(2) as u32).collect();
    let mut want = vec![0.0; n * ci];
    for r in 0..n {
        for j in 0..ci {
            want[r * ci + j] = wte[ids[r] as usize * ci + j]
                + wpe[pos[r] as usize * ci + j]
                + wtt[types[r] as usize * ci + j];
        }
    }
    ck.case(
        "bert_embedding_forward",
        format!("V={v} C={ci} N={n}"),
        &want,
        |g| {
            let mut out = g.poisoned(n * ci)?;
            k::bert_embedding_forward(
                g,
                &mut out,
                &g.upload(&ids)?,
                &g.upload(&pos)?,
                &g.upload(&types)?,
                &g.upload(&wte)?,
                &g.upload(&wpe)?,
                &g.upload(&wtt)?,
                n,
                ci,
            )?;
            g.sync()?;
            g.download(&out)
        },
    )
}

fn logits(ck: &mut Checker, n: usize, ci: usize, v: usize, m: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, n * ci, 1.0);
    let wte = randn(&mut ck.rng, v * ci, 0.05);
    let rows: Vec<usize> = (0..m).map(|_| ck.rng.below(n)).collect();
    let (mut want, mut gathered) = (vec![0.0; m * v], vec![0.0; m * ci]);
    c::logits_forward(&mut want, &mut gathered, &inp, &rows, &wte, v, ci);
    let rows_i: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    ck.case(
        "logits_forward",
        format!("N={n} C={ci} V={v} M={m}"),
        &want,
        |g| {
            let (mut out, mut dg) = (g.poisoned(m * v)?, g.poisoned(m * ci)?);
            k::logits_forward(
                g,
                &mut out,
                &mut dg,
                &g.upload(&inp)?,
                &g.upload(&rows_i)?,
                &g.upload(&wte)?,
                m,
                v,
                ci,
            )?;
            g.sync()?;
            g.download(&out)
        },
    )
}

fn attention(ck: &mut Checker, s: AttnShape, start: &[usize]) -> Result<()> {
    let (h, kv, hd) = (s.n_head, s.n_kv_head, s.head_dim);
    let width = (h + 2 * kv) * hd;
    let n = s.b * s.t;
    let qkv = randn(&mut ck.rng, n * width, 1.0);
    let layout = c::QkvLayout::fused(h, kv, hd);
    let cs = c::AttentionShape {
        b: s.b,
        t: s.t,
        n_head: h,
        n_kv_head: kv,
        head_dim: hd,
    };
    let mut want = vec![0.0; n * h * hd];
    let mut att = vec![0.0; s.b * h * s.t * s.t];
    c::attention_forward(&mut want, &mut att, &qkv, &qkv, &qkv, &layout, start, cs);
    let st: Vec<i32> = start.iter().map(|&x| x as i32).collect();
    let shape = format!("B={} T={} H={h} KVH={kv} hd={hd}", s.b, s.t);
    ck.cases(
        &[
            ("attention_forward", shape.clone()),
            ("attention_forward (att)", shape),
        ],
        &[&want, &att],
        TOL,
        |g| {
            let d = g.upload(&qkv)?;
            let mut out = g.poisoned(n * h * hd)?;
            let mut datt = g.poisoned(att.len())?;
            k::attention_forward(
                g,
                &mut out,
                Some(&mut datt),
                (&d, layout.q.offset, width),
                (&d, layout.k.offset, width),
                (&d, layout.v.offset, width),
                &g.upload(&st)?,
                s,
            )?;
            g.sync()?;
            Ok(vec![g.download(&out)?, g.download(&datt)?])
        },
    )
}

fn attention_cached(
    ck: &mut Checker,
    s: AttnShape,
    start: &[usize],
    p0: usize,
    tq: usize,
) -> Result<()> {
    let (h, kv, hd, tmax) = (s.n_head, s.n_kv_head, s.head_dim, s.t);
    let q = randn(&mut ck.rng, s.b * tq * h * hd, 1.0);
    let kc = randn(&mut ck.rng, s.b * tmax * kv * hd, 1.0);
    let vc = randn(&mut ck.rng, s.b * tmax * kv * hd, 1.0);
    let ql = c::HeadsLayout {
        offset: 0,
        stride: h * hd,
    };
    let cs = c::AttentionShape {
        b: s.b,
        t: tq,
        n_head: h,
        n_kv_head: kv,
        head_dim: hd,
    };
    let mut want = vec![0.0; s.b * tq * h * hd];
    c::attention_cached_forward(&mut want, &q, ql, &kc, &vc, start, p0, tq, tmax, cs);
    let st: Vec<i32> = start.iter().map(|&x| x as i32).collect();

    // Their probabilities, against training's forward over all Tmax positions with those queries
    // at p0.. (its rows of them).
    let (qw, kw) = (h * hd, kv * hd);
    let mut q_full = vec![0.0; s.b * tmax * qw];
    for b in 0..s.b {
        for i in 0..tq {
            let (from, to) = ((b * tq + i) * qw, (b * tmax + p0 + i) * qw);
            q_full[to..to + qw].copy_from_slice(&q[from..from + qw]);
        }
    }
    let rows = |w: usize| c::HeadsLayout {
        offset: 0,
        stride: w,
    };
    let layout = c::QkvLayout {
        q: rows(qw),
        k: rows(kw),
        v: rows(kw),
    };
    let full = c::AttentionShape { t: tmax, ..cs };
    let mut att = vec![0.0; s.b * h * tmax * tmax];
    let mut out_full = vec![0.0; s.b * tmax * qw];
    c::attention_forward(
        &mut out_full,
        &mut att,
        &q_full,
        &kc,
        &vc,
        &layout,
        start,
        full,
    );
    let queried = |a: &[f32]| -> Vec<f32> {
        let mut out = Vec::with_capacity(s.b * h * tq * tmax);
        for bh in 0..s.b * h {
            let at = (bh * tmax + p0) * tmax;
            out.extend_from_slice(&a[at..at + tq * tmax]);
        }
        out
    };
    let shape = format!("B={} Tmax={tmax} p0={p0} Tq={tq} H={h} KVH={kv}", s.b);
    ck.cases(
        &[
            ("attention_cached_forward", shape.clone()),
            ("attention_cached_forward (att)", shape),
        ],
        &[&want, &queried(&att)],
        TOL,
        |g| {
            let mut out = g.poisoned(s.b * tq * qw)?;
            let mut probs = g.poisoned(s.b * h * tmax * tmax)?;
            k::attention_cached_forward(
                g,
                &mut out,
                Some(&mut probs),
                (&g.upload(&q)?, 0, qw),
                &g.upload(&kc)?,
                &g.upload(&vc)?,
                &g.upload(&st)?,
                p0,
                tq,
                tmax,
                s,
            )?;
            Ok(vec![g.download(&out)?, queried(&g.download(&probs)?)])
        },
    )
}

/// The KV-cache append from a fused q|k|v buffer, against a plain copy.
fn kv_append(
    ck: &mut Checker,
    b: usize,
    tq: usize,
    tmax: usize,
    p0: usize,
    w: usize,
) -> Result<()> {
    let stride = 3 * w;
    let qkv = randn(&mut ck.rng, b * tq * stride, 1.0);
    let cache = randn(&mut ck.rng, b * tmax * w, 1.0);
    let (mut want_k, mut want_v) = (cache.clone(), cache.clone());
    for bi in 0..b {
        for t in 0..tq {
            let src = (bi * tq + t) * stride;
            let dst = (bi * tmax + p0 + t) * w;
            want_k[dst..dst + w].copy_from_slice(&qkv[src + w..src + 2 * w]);
            want_v[dst..dst + w].copy_from_slice(&qkv[src + 2 * w..src + 3 * w]);
        }
    }
    let shape = format!("B={b} Tq={tq} Tmax={tmax} p0={p0} W={w}");
    ck.cases(
        &[("kv_append (k)", shape.clone()), ("kv_append (v)", shape)],
        &[&want_k, &want_v],
        TOL,
        |g| {
            let d = g.upload(&qkv)?;
            let (mut kc, mut vc) = (g.upload(&cache)?, g.upload(&cache)?);
            k::kv_append(
                g,
                &mut kc,
                &mut vc,
                (&d, w, stride),
                (&d, 2 * w, stride),
                p0,
                b,
                tq,
                tmax,
                w,
            )?;
            g.sync()?;
            Ok(vec![g.download(&kc)?, g.download(&vc)?])
        },
    )
}

fn encoder_attention(ck: &mut Checker, lens: &[usize], ci: usize, nh: usize) -> Result<()> {
    let mut starts = vec![0usize];
    for l in lens {
        starts.push(starts.last().unwrap() + l);
    }
    let n = *starts.last().unwrap();
    let qkv = randn(&mut ck.rng, n * 3 * ci, 1.0);
    let mask: Vec<bool> = (0..n).map(|i| i % 4 != 3).collect();
    let mut want = vec![0.0; n * ci];
    c::encoder_attention_forward(&mut want, &qkv, &mask, &starts, ci, nh);
    let mask_i: Vec<i32> = mask.iter().map(|&m| m as i32).collect();
    let st: Vec<i32> = starts.iter().map(|&x| x as i32).collect();
    ck.case(
        "encoder_attention_forward",
        format!("lens={lens:?} C={ci} NH={nh}"),
        &want,
        |g| {
            let mut out = g.poisoned(n * ci)?;
            k::encoder_attention_forward(
                g,
                &mut out,
                &g.upload(&qkv)?,
                &g.upload(&mask_i)?,
                &g.upload(&st)?,
                lens.len(),
                n,
                ci,
                nh,
            )?;
            g.sync()?;
            g.download(&out)
        },
    )
}

fn rope(ck: &mut Checker, n: usize, h: usize, hd: usize, base: f32) -> Result<()> {
    let x = randn(&mut ck.rng, n * h * hd, 1.0);
    let pos: Vec<usize> = (0..n).map(|_| ck.rng.below(2048)).collect();
    let (cos, sin) = c::rope_table(2048, hd, base);
    let mut want = vec![0.0; n * h * hd];
    c::rope_forward(&mut want, &x, &pos, &cos, &sin, n, h, hd);
    let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
    ck.case("rope_forward", format!("N={n} H={h} hd={hd}"), &want, |g| {
        let mut dx = g.upload(&x)?;
        let (dc, ds) = (g.upload(&cos)?, g.upload(&sin)?);
        k::rope_forward(
            g,
            &mut dx,
            0,
            h * hd,
            &g.upload(&pos_i)?,
            &dc,
            &ds,
            n,
            h,
            hd,
        )?;
        g.sync()?;
        g.download(&dx)
    })
}

fn softmax_family(ck: &mut Checker, p: usize, v: usize) -> Result<()> {
    let logits = randn(&mut ck.rng, p * v, 3.0);
    let targets: Vec<u32> = (0..p).map(|_| ck.rng.below(v) as u32).collect();
    let shape = format!("P={p} V={v}");
    for inv_temp in [1.0f32, 1.0 / 0.7] {
        let scaled: Vec<f32> = logits.iter().map(|x| x * inv_temp).collect();
        let mut logp = vec![0.0; p * v];
        c::log_softmax_forward(&mut logp, &scaled, v);
        let mut want = vec![0.0; p];
        c::gather_forward(&mut want, &logp, &targets, v);
        let shape = if inv_temp == 1.0 {
            shape.clone()
        } else {
            format!("{shape} T=0.7")
        };
        ck.case("log_softmax_gather_forward", shape, &want, |g| {
            let mut out = g.poisoned(p)?;
            let (dl, dt) = (g.upload(&logits)?, g.upload(&targets)?);
            k::log_softmax_gather_forward(g, &mut out, &dl, &dt, p, v, inv_temp)?;
            g.sync()?;
            g.download(&out)
        })?;
    }
    let (mut ent, mut lse) = (vec![0.0; p], vec![0.0; p]);
    c::entropy_forward(&mut ent, &mut lse, &logits, v);
    ck.case("entropy_forward", shape, &ent, |g| {
        let mut out = g.poisoned(p)?;
        k::entropy_forward(g, &mut out, &g.upload(&logits)?, p, v)?;
        g.sync()?;
        g.download(&out)
    })
}

/// The sampler: with the same uniform draws, the device must pick the CPU's tokens and report the
/// same log-probabilities. The "error" column counts differing tokens plus the log-prob error.
/// The decoding loop's bookkeeping over `steps` steps of `b` rows, against `sample::sample_step`'s
/// (mirrored here): each step's draws in both orders, then what `feed_sampled` leaves: the
/// outputs (S, B), the next inputs, positions and done rows. Tokens below `eos_every` steps'
/// worth end rows early.
fn decode_loop(ck: &mut Checker, b: usize, steps: usize, eos_every: usize) -> Result<()> {
    let eos = 7u32;
    let draws: Vec<f32> = (0..steps * b).map(|_| ck.rng.uniform() as f32).collect();
    let toks: Vec<u32> = (0..steps * b)
        .map(|i| {
            let t = ck.rng.below(20) as u32;
            if eos_every > 0 && i % (eos_every * 3 + 1) == 0 {
                eos
            } else {
                t
            }
        })
        .collect();
    let lps: Vec<f32> = (0..steps * b).map(|_| -(ck.rng.uniform() as f32)).collect();
    let pos0: Vec<i32> = (0..b as i32).collect();
    // The host's loop.
    let (mut done, mut cursor, mut pos) = (vec![false; b], 0, pos0.clone());
    let (mut u_seq, mut u_key, mut ids) = (Vec::new(), Vec::new(), vec![0u32; b]);
    for s in 0..steps {
        for r in 0..b {
            u_seq.push(if done[r] {
                0.0
            } else {
                cursor += 1;
                draws[cursor - 1]
            });
            u_key.push(draws[s * b + r]);
        }
        for r in 0..b {
            let t = toks[s * b + r];
            ids[r] = if done[r] { eos } else { t };
            done[r] = done[r] || t == eos;
            pos[r] += 1;
        }
    }
    let f = |xs: &[u32]| xs.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let state: Vec<f32> = ids
        .iter()
        .map(|&x| x as f32)
        .chain(pos.iter().map(|&x| x as f32))
        .chain(done.iter().map(|&d| f32::from(u8::from(d))))
        .collect();
    let shape = format!("B={b} S={steps}");
    ck.cases(
        &[
            ("draw_uniforms sequential", shape.clone()),
            ("draw_uniforms keyed", shape.clone()),
            ("feed_sampled outputs", shape.clone()),
            ("feed_sampled state", shape),
        ],
        &[&u_seq, &u_key, &[f(&toks), lps.clone()].concat(), &state],
        0.0,
        |g| {
            let dd = g.upload(&draws)?;
            let (mut u, mut cur) = (g.poisoned(b)?, g.zeros::<i32>(1)?);
            let (mut done, mut pos) = (g.zeros::<i32>(b)?, g.upload(&pos0)?);
            let (mut ids, mut out_t) = (g.alloc::<u32>(b)?, g.alloc::<u32>(steps * b)?);
            let mut out_l = g.poisoned(steps * b)?;
            let (mut got_seq, mut got_key) = (Vec::new(), Vec::new());
            for s in 0..steps {
                k::draw_uniforms(g, &mut u, &dd, &done, &mut cur, s, false, b)?;
                got_seq.extend(g.download(&u)?);
                k::draw_uniforms(g, &mut u, &dd, &done, &mut cur, s, true, b)?;
                got_key.extend(g.download(&u)?);
                let t = g.upload(&toks[s * b..(s + 1) * b])?;
                let l = g.upload(&lps[s * b..(s + 1) * b])?;
                let st = k::DecodeState {
                    out_tokens: &mut out_t,
                    out_logprobs: &mut out_l,
                    ids: &mut ids,
                    pos: &mut pos,
                    done: &mut done,
                };
                k::feed_sampled(g, st, &t, &l, s, eos, b)?;
            }
            let outputs = [f(&g.download(&out_t)?), g.download(&out_l)?].concat();
            let state = f(&g.download(&ids)?)
                .into_iter()
                .chain(g.download(&pos)?.iter().map(|&x| x as f32))
                .chain(g.download(&done)?.iter().map(|&x| x as f32))
                .collect();
            Ok(vec![got_seq, got_key, outputs, state])
        },
    )
}

/// `scatter_rows` of `m` rows of width `c` into a buffer of `p` rows, against the host's copy
/// (the rows not written are left out of the comparison).
fn scatter_rows(ck: &mut Checker, m: usize, p: usize, c: usize) -> Result<()> {
    let inp = randn(&mut ck.rng, m * c, 1.0);
    let mut rows: Vec<usize> = (0..p).collect();
    for i in (1..p).rev() {
        rows.swap(i, ck.rng.below(i + 1));
    }
    rows.truncate(m);
    let mut want = Vec::with_capacity(m * c);
    let mut order: Vec<(usize, usize)> = rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    order.sort_unstable();
    for &(_, i) in &order {
        want.extend_from_slice(&inp[i * c..(i + 1) * c]);
    }
    let rows_i: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    ck.case("scatter_rows", format!("M={m} P={p} C={c}"), &want, |g| {
        let mut out = g.poisoned(p * c)?;
        k::scatter_rows(g, &mut out, &g.upload(&inp)?, &g.upload(&rows_i)?, m, c)?;
        let all = g.download(&out)?;
        Ok(order
            .iter()
            .flat_map(|&(r, _)| all[r * c..(r + 1) * c].to_vec())
            .collect())
    })
}

/// `scatter_rows_list` of tensors of `widths` by one map of `m` rows into `p`, against the host's
/// copies: run twice on one kept table, the second time into other buffers, which must make the
/// table anew (the rows not written are left out of the comparison).
fn scatter_rows_list(ck: &mut Checker, m: usize, p: usize, widths: &[usize]) -> Result<()> {
    let inps: Vec<Vec<f32>> = widths
        .iter()
        .map(|&c| randn(&mut ck.rng, m * c, 1.0))
        .collect();
    let mut rows: Vec<usize> = (0..p).collect();
    for i in (1..p).rev() {
        rows.swap(i, ck.rng.below(i + 1));
    }
    rows.truncate(m);
    let mut order: Vec<(usize, usize)> = rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    order.sort_unstable();
    let mut want = Vec::new();
    for (inp, &c) in inps.iter().zip(widths) {
        for &(_, i) in &order {
            want.extend_from_slice(&inp[i * c..(i + 1) * c]);
        }
    }
    let rows_i: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    let label = format!("M={m} P={p} widths {widths:?}, twice");
    ck.case("scatter_rows_list", label, &want, |g| {
        let inps = inps
            .iter()
            .map(|x| g.upload(x))
            .collect::<Result<Vec<_>>>()?;
        let map = g.upload(&rows_i)?;
        let mut slot = None;
        let mut outs = Vec::new();
        for _ in 0..2 {
            outs = widths
                .iter()
                .map(|&c| g.poisoned(p * c))
                .collect::<Result<Vec<_>>>()?;
            let mut copies: Vec<_> = outs
                .iter_mut()
                .zip(&inps)
                .zip(widths)
                .map(|((o, i), &c)| (o, i, c))
                .collect();
            k::scatter_rows_list(g, &mut slot, &mut copies, &map, m)?;
        }
        let mut got = Vec::new();
        for (out, &c) in outs.iter().zip(widths) {
            let all = g.download(out)?;
            got.extend(
                order
                    .iter()
                    .flat_map(|&(r, _)| all[r * c..(r + 1) * c].to_vec()),
            );
        }
        Ok(got)
    })
}

/// `copy_segments` of segments `lens` long from random places of two sources into one buffer, run
/// twice on one kept table (the second list longer, so the table grows), against the host's
/// copies.
fn copy_segments(ck: &mut Checker, lens: &[usize]) -> Result<()> {
    let total: usize = lens.iter().sum();
    let srcs = [
        randn(&mut ck.rng, total + 50, 1.0),
        randn(&mut ck.rng, total + 9, 1.0),
    ];
    // Segment i: from source i % 2 at a random offset, to the next stretch of the destination.
    let mut plan = Vec::new();
    let mut want = Vec::with_capacity(total);
    for (i, &n) in lens.iter().enumerate() {
        let src = &srcs[i % 2];
        let at = ck.rng.below(src.len() - n + 1);
        want.extend_from_slice(&src[at..at + n]);
        plan.push((i % 2, at, n));
    }
    let label = format!("segments of {lens:?}, twice");
    ck.case("copy_segments", label, &want, |g| {
        let srcs = [g.upload(&srcs[0])?, g.upload(&srcs[1])?];
        let mut table = None;
        let mut out = g.poisoned(total.max(1))?;
        for upto in [plan.len() / 2, plan.len()] {
            out = g.poisoned(total.max(1))?;
            let mut segs = k::Segments::default();
            let mut to = 0;
            for &(s, at, n) in &plan[..upto] {
                segs.add(&mut out, to, &srcs[s], at, n)?;
                to += n;
            }
            k::copy_segments(g, &segs, &mut table)?;
        }
        let mut got = g.download(&out)?;
        got.truncate(total);
        Ok(got)
    })
}

fn sampling(ck: &mut Checker, b: usize, v: usize) -> Result<()> {
    let logits = randn(&mut ck.rng, b * v, 2.0);
    let u: Vec<f32> = (0..b).map(|_| ck.rng.uniform() as f32).collect();
    for (temperature, top_k, top_p) in [
        (0.0, 0, 1.0),
        (1.0, 0, 1.0),
        (0.7, 50, 1.0),
        (1.0, 0, 0.9),
        (1.3, 20, 0.8),
    ] {
        let params = crate::sample::SamplingParams {
            temperature,
            top_k,
            top_p,
            max_new_tokens: 1,
        };
        let (mut want_tok, mut want_lp) = (Vec::new(), Vec::new());
        for r in 0..b {
            let (t, lp) = crate::sample::sample_with_uniform(
                &logits[r * v..(r + 1) * v],
                &params,
                u[r] as f64,
            );
            want_tok.push(t as f32);
            want_lp.push(lp);
        }
        let s = SampleArgs {
            temperature,
            top_k,
            top_p,
            seed: 0,
            step: 0,
        };
        let shape = format!("B={b} V={v} T={temperature} k={top_k} p={top_p}");
        let before = ck.rows.len();
        ck.cases(
            &[
                ("sample_forward", shape.clone()),
                ("sample_forward tokens", shape),
            ],
            &[&want_lp, &want_tok],
            TOL,
            |g| {
                let mut tok = g.upload(&vec![u32::MAX; b])?;
                let mut lp = g.poisoned(b)?;
                let (dl, du) = (g.upload(&logits)?, g.upload(&u)?);
                k::sample_forward(g, &mut tok, &mut lp, &dl, Some(&du), b, v, s)?;
                g.sync()?;
                let tokens = g.download(&tok)?.iter().map(|&t| t as f32).collect();
                Ok(vec![g.download(&lp)?, tokens])
            },
        )?;
        if ck.rows.len() == before {
            continue; // filtered out
        }
        // One row: tokens must be equal, not near.
        let tokens = ck.rows.pop().unwrap();
        let row = &mut ck.rows[before];
        let differing = if tokens.max_abs.is_finite() && tokens.max_abs == 0.0 {
            0.0
        } else {
            tokens.max_abs.max(1.0)
        };
        row.max_abs += differing;
        row.pass &= differing == 0.0;
    }
    Ok(())
}

/// Fused pooling + normalise + cosine + shaping against the CPU pooling and `reward::shaping`.
fn reward(ck: &mut Checker, b: usize, t: usize, d: usize) -> Result<()> {
    use crate::reward::shaping::Shaping;
    let hidden = randn(&mut ck.rng, b * t * d, 1.0);
    let mut mask: Vec<u32> = (0..b * t)
        .map(|i| (i % t < 1 + (i / t) % t) as u32)
        .collect();
    mask[(b - 1) * t..].fill(0); // an answer with no token: a zero vector
    let parent = randn(&mut ck.rng, b * d, 1.0);
    let exact: Vec<i32> = (0..b).map(|i| (i % 2) as i32).collect();
    let input = crate::batch::EncoderInput::padded(&vec![0; b * t], &vec![0; b * t], &mask, b, t);
    let mut pooled = vec![0.0; b * d];
    crate::cpu::bert::sentence_pool_forward(
        &mut pooled,
        &hidden,
        &input,
        d,
        crate::model::bert::Pooling::Mean,
        true,
    );
    let mask_i: Vec<i32> = mask.iter().map(|&m| m as i32).collect();
    let starts: Vec<i32> = (0..=b).map(|i| (i * t) as i32).collect();
    for (code, shaping) in [
        (k::SHAPE_PGSRM, Shaping::Pgsrm),
        (k::SHAPE_TRUNCATE, Shaping::Truncate),
        (k::SHAPE_EUCLIDEAN, Shaping::Euclidean),
        (k::SHAPE_BINARY, Shaping::Binary),
    ] {
        let mut want: Vec<f32> = (0..b)
            .map(|i| {
                let (pt, ct) = if exact[i] == 1 {
                    ("same", "same")
                } else {
                    ("a", "b")
                };
                shaping.reward(
                    4.0,
                    pt,
                    ct,
                    &parent[i * d..(i + 1) * d],
                    &pooled[i * d..(i + 1) * d],
                )
            })
            .collect();
        want.extend(&pooled);
        ck.case(
            "pool_cosine_shape_forward",
            format!("B={b} T={t} D={d} {shaping}"),
            &want,
            |g| {
                let (mut r, mut e) = (g.poisoned(b)?, g.poisoned(b * d)?);
                k::pool_cosine_shape_forward(
                    g,
                    &mut r,
                    &mut e,
                    &g.upload(&hidden)?,
                    &g.upload(&mask_i)?,
                    &g.upload(&starts)?,
                    &g.upload(&parent)?,
                    Some(&g.upload(&exact)?),
                    b,
                    d,
                    code,
                    4.0,
                )?;
                g.sync()?;
                let mut got = g.download(&r)?;
                got.extend(g.download(&e)?);
                Ok(got)
            },
        )?;
    }
    Ok(())
}
