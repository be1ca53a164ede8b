//! `pgsrm check`: every kernel against its CPU reference on fresh random inputs at several shapes.
//! Outputs are poisoned with NaN before each launch, so an element a kernel never writes fails.
//! A case passes when max |gpu - cpu| <= tol * max(1, max |cpu|); the table shows that error both
//! absolute and relative to the largest reference value.

use super::device::Gpu;
use super::ops::{self as k, AttnShape, SampleArgs};
use crate::cpu::ops as c;
use crate::rng::Rng;
use anyhow::Result;

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckRow {
    pub kernel: String,
    pub shape: String,
    pub max_abs: f32,
    pub max_rel: f32,
    pub tol: f32,
    pub pass: bool,
}

/// Forward tolerance of DESIGN.md: CUDA f32 within 1e-4 of the CPU.
pub const TOL: f32 = 1e-4;

pub fn compare(kernel: &str, shape: String, got: &[f32], want: &[f32], tol: f32) -> CheckRow {
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let mut max_abs = 0.0f32;
    let mut finite = got.len() == want.len();
    for (g, w) in got.iter().zip(want) {
        if !g.is_finite() {
            finite = false;
        }
        max_abs = max_abs.max((g - w).abs());
    }
    let max_abs = if finite { max_abs } else { f32::NAN };
    let pass = finite && max_abs <= tol * scale.max(1.0);
    CheckRow {
        kernel: kernel.into(),
        shape,
        max_abs,
        max_rel: max_abs / scale.max(f32::MIN_POSITIVE),
        tol,
        pass,
    }
}

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * std).collect()
}

/// Runs every case; the rows come back in order, failures included.
pub fn run_all(g: &Gpu, seed: u64) -> Result<Vec<CheckRow>> {
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    for (n, ci, oc) in [(1, 768, 2304), (64, 768, 3072), (130, 100, 77)] {
        rows.push(matmul(g, &mut rng, n, ci, oc, false)?);
        rows.push(matmul(g, &mut rng, n, ci, oc, true)?);
    }
    for (n, ci) in [(256, 768), (7, 100)] {
        rows.push(layernorm(g, &mut rng, n, ci)?);
        rows.push(rmsnorm(g, &mut rng, n, ci)?);
    }
    for n in [1000, 1_000_003] {
        rows.extend(elementwise(g, &mut rng, n)?);
    }
    rows.push(embedding(g, &mut rng, 1000, 128, 70)?);
    rows.push(logits(g, &mut rng, 97, 64, 1000, 5)?);
    rows.push(logits(g, &mut rng, 300, 768, 50257, 4)?);
    rows.push(attention(
        g,
        &mut rng,
        AttnShape {
            b: 3,
            t: 17,
            n_head: 4,
            n_kv_head: 4,
            head_dim: 32,
        },
        &[0, 5, 16],
    )?);
    rows.push(attention(
        g,
        &mut rng,
        AttnShape {
            b: 2,
            t: 9,
            n_head: 6,
            n_kv_head: 2,
            head_dim: 64,
        },
        &[3, 0],
    )?);
    rows.push(attention_cached(
        g,
        &mut rng,
        AttnShape {
            b: 2,
            t: 12,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 64,
        },
        &[0, 2],
        5,
        3,
    )?);
    rows.push(encoder_attention(g, &mut rng, &[5, 9, 1], 384, 12)?);
    rows.push(rope(g, &mut rng, 11, 9, 64, 100000.0)?);
    for (p, v) in [(6, 50257), (3, 1000)] {
        rows.extend(softmax_family(g, &mut rng, p, v)?);
    }
    rows.extend(sampling(g, &mut rng, 8, 1000)?);
    rows.extend(reward(g, &mut rng, 5, 7, 384)?);
    for config in ["tiny", "small"] {
        rows.extend(gpt2_decoding(g, &mut rng, config)?);
    }
    rows.extend(llama_decoding(g, &mut rng, "tiny GQA", TINY_LLAMA)?);
    rows.extend(bert_reward(g, &mut rng)?);
    rows.extend(llama_decoding(
        g,
        &mut rng,
        "SmolLM2-135M shapes",
        crate::model::llama::SMOLLM2_135M_CONFIG,
    )?);
    Ok(rows)
}

/// GPT-2 with a seeded random init: the logits of the prefill and of two decoding steps against
/// `cpu::decode::Gpt2Decoder`, and two generations with one seed giving the same tokens.
fn gpt2_decoding(g: &Gpu, rng: &mut Rng, config: &str) -> Result<Vec<CheckRow>> {
    use crate::cpu::decode::Gpt2Decoder;
    use crate::cuda::gpt2::{GpuGpt2, GpuGpt2Decoder, generate};
    let cfg = crate::model::gpt2::Gpt2Config::named(config)?;
    let model = crate::model::gpt2::Gpt2::random(cfg.clone(), rng.next_u64());
    let dev = GpuGpt2::upload(g, &model)?;
    let prompts: Vec<Vec<u32>> = [5, 12, 20]
        .iter()
        .map(|&n| (0..n).map(|_| rng.below(cfg.vocab_size) as u32).collect())
        .collect();
    let eos = cfg.eos_token_id;
    let mut cpu = Gpt2Decoder::new(&model, &prompts, 4, eos)?;
    let mut gpu = GpuGpt2Decoder::new(g, &dev, &prompts, 4, eos)?;
    let mut rows = vec![compare(
        "gpt2 decode (prefill)",
        format!("{config} B=3 T=20"),
        &gpu.logits()?,
        cpu.logits(),
        TOL,
    )];
    for step in 1..=2 {
        let next: Vec<u32> = (0..prompts.len())
            .map(|_| rng.below(cfg.vocab_size) as u32)
            .collect();
        cpu.step(&next)?;
        gpu.step(&next)?;
        rows.push(compare(
            "gpt2 decode (step)",
            format!("{config} B=3 step {step}"),
            &gpu.logits()?,
            cpu.logits(),
            TOL,
        ));
    }
    let params = crate::sample::SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: 8,
    };
    let a = generate(g, &dev, &prompts, &params, eos, 42)?;
    let b = generate(g, &dev, &prompts, &params, eos, 42)?;
    let same = a == b;
    rows.push(CheckRow {
        kernel: "gpt2 generate, same seed twice".into(),
        shape: format!("{config} B=3 new=8"),
        max_abs: if same { 0.0 } else { 1.0 },
        max_rel: if same { 0.0 } else { 1.0 },
        tol: 0.0,
        pass: same,
    });
    Ok(rows)
}

fn matmul(g: &Gpu, rng: &mut Rng, n: usize, ci: usize, oc: usize, nt: bool) -> Result<CheckRow> {
    let inp = randn(rng, n * ci, 1.0);
    let w = randn(rng, ci * oc, 0.05);
    let b = randn(rng, oc, 0.1);
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
    let (di, dw, db) = (g.upload(&inp)?, g.upload(&w)?, g.upload(&b)?);
    let mut out = g.poisoned(n * oc)?;
    let name = if nt {
        "matmul_nt_forward"
    } else {
        "matmul_forward"
    };
    if nt {
        k::matmul_nt_forward(g, &mut out, &di, &dw, Some(&db), n, ci, oc)?;
    } else {
        k::matmul_forward(g, &mut out, &di, &dw, Some(&db), n, ci, oc)?;
    }
    g.sync()?;
    Ok(compare(
        name,
        format!("N={n} C={ci} OC={oc}"),
        &g.download(&out)?,
        &want,
        TOL,
    ))
}

fn layernorm(g: &Gpu, rng: &mut Rng, n: usize, ci: usize) -> Result<CheckRow> {
    let inp = randn(rng, n * ci, 2.0);
    let w = randn(rng, ci, 1.0);
    let b = randn(rng, ci, 1.0);
    let (mut want, mut mean, mut rstd) = (vec![0.0; n * ci], vec![0.0; n], vec![0.0; n]);
    c::layernorm_forward(&mut want, &mut mean, &mut rstd, &inp, &w, &b, n, ci, 1e-5);
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
    want.extend(rstd);
    Ok(compare(
        "layernorm_forward",
        format!("N={n} C={ci}"),
        &got,
        &want,
        TOL,
    ))
}

fn rmsnorm(g: &Gpu, rng: &mut Rng, n: usize, ci: usize) -> Result<CheckRow> {
    let inp = randn(rng, n * ci, 2.0);
    let w = randn(rng, ci, 1.0);
    let (mut want, mut rrms) = (vec![0.0; n * ci], vec![0.0; n]);
    c::rmsnorm_forward(&mut want, &mut rrms, &inp, &w, n, ci, 1e-5);
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
    want.extend(rrms);
    Ok(compare(
        "rmsnorm_forward",
        format!("N={n} C={ci}"),
        &got,
        &want,
        TOL,
    ))
}

fn elementwise(g: &Gpu, rng: &mut Rng, n: usize) -> Result<Vec<CheckRow>> {
    let x = randn(rng, n, 3.0);
    let y = randn(rng, n, 3.0);
    let (dx, dy) = (g.upload(&x)?, g.upload(&y)?);
    let mut rows = Vec::new();
    let shape = format!("n={n}");
    let mut want = vec![0.0; n];
    let mut out = g.poisoned(n)?;
    c::gelu_tanh_forward(&mut want, &x);
    k::gelu_tanh_forward(g, &mut out, &dx, n)?;
    g.sync()?;
    rows.push(compare(
        "gelu_tanh_forward",
        shape.clone(),
        &g.download(&out)?,
        &want,
        TOL,
    ));
    let mut out = g.poisoned(n)?;
    c::gelu_erf_forward(&mut want, &x);
    k::gelu_erf_forward(g, &mut out, &dx, n)?;
    g.sync()?;
    rows.push(compare(
        "gelu_erf_forward",
        shape.clone(),
        &g.download(&out)?,
        &want,
        TOL,
    ));
    let mut out = g.poisoned(n)?;
    c::residual_forward(&mut want, &x, &y);
    k::residual_forward(g, &mut out, &dx, &dy, n)?;
    g.sync()?;
    rows.push(compare(
        "residual_forward",
        shape.clone(),
        &g.download(&out)?,
        &want,
        TOL,
    ));
    let mut out = g.poisoned(n)?;
    c::swiglu_forward(&mut want, &x, &y, 1, n);
    k::swiglu_forward(g, &mut out, &dx, &dy, n)?;
    g.sync()?;
    rows.push(compare(
        "swiglu_forward",
        shape,
        &g.download(&out)?,
        &want,
        TOL,
    ));
    Ok(rows)
}

fn embedding(g: &Gpu, rng: &mut Rng, v: usize, ci: usize, n: usize) -> Result<CheckRow> {
    let wte = randn(rng, v * ci, 0.02);
    let wpe = randn(rng, 64 * ci, 0.02);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    let pos: Vec<u32> = (0..n).map(|_| rng.below(64) as u32).collect();
    let mut want = vec![0.0; n * ci];
    c::embedding_forward(&mut want, &ids, &pos, &wte, Some(&wpe), ci);
    let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
    let mut out = g.poisoned(n * ci)?;
    k::embedding_forward(
        g,
        &mut out,
        &g.upload(&ids)?,
        &g.upload(&pos_i)?,
        &g.upload(&wte)?,
        Some(&g.upload(&wpe)?),
        n,
        ci,
    )?;
    g.sync()?;
    Ok(compare(
        "embedding_forward",
        format!("V={v} C={ci} N={n}"),
        &g.download(&out)?,
        &want,
        TOL,
    ))
}

fn logits(g: &Gpu, rng: &mut Rng, n: usize, ci: usize, v: usize, m: usize) -> Result<CheckRow> {
    let inp = randn(rng, n * ci, 1.0);
    let wte = randn(rng, v * ci, 0.05);
    let rows: Vec<usize> = (0..m).map(|_| rng.below(n)).collect();
    let (mut want, mut gathered) = (vec![0.0; m * v], vec![0.0; m * ci]);
    c::logits_forward(&mut want, &mut gathered, &inp, &rows, &wte, v, ci);
    let rows_i: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
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
    Ok(compare(
        "logits_forward",
        format!("N={n} C={ci} V={v} M={m}"),
        &g.download(&out)?,
        &want,
        TOL,
    ))
}

fn attention(g: &Gpu, rng: &mut Rng, s: AttnShape, start: &[usize]) -> Result<CheckRow> {
    let (h, kv, hd) = (s.n_head, s.n_kv_head, s.head_dim);
    let width = (h + 2 * kv) * hd;
    let n = s.b * s.t;
    let qkv = randn(rng, n * width, 1.0);
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
    let d = g.upload(&qkv)?;
    let st: Vec<i32> = start.iter().map(|&x| x as i32).collect();
    let mut out = g.poisoned(n * h * hd)?;
    k::attention_forward(
        g,
        &mut out,
        (&d, layout.q.offset, width),
        (&d, layout.k.offset, width),
        (&d, layout.v.offset, width),
        &g.upload(&st)?,
        s,
    )?;
    g.sync()?;
    Ok(compare(
        "attention_forward",
        format!("B={} T={} H={h} KVH={kv} hd={hd}", s.b, s.t),
        &g.download(&out)?,
        &want,
        TOL,
    ))
}

fn attention_cached(
    g: &Gpu,
    rng: &mut Rng,
    s: AttnShape,
    start: &[usize],
    p0: usize,
    tq: usize,
) -> Result<CheckRow> {
    let (h, kv, hd, tmax) = (s.n_head, s.n_kv_head, s.head_dim, s.t);
    let q = randn(rng, s.b * tq * h * hd, 1.0);
    let kc = randn(rng, s.b * tmax * kv * hd, 1.0);
    let vc = randn(rng, s.b * tmax * kv * hd, 1.0);
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
    let dq = g.upload(&q)?;
    let mut out = g.poisoned(s.b * tq * h * hd)?;
    k::attention_cached_forward(
        g,
        &mut out,
        (&dq, 0, h * hd),
        &g.upload(&kc)?,
        &g.upload(&vc)?,
        &g.upload(&st)?,
        p0,
        tq,
        tmax,
        s,
    )?;
    g.sync()?;
    Ok(compare(
        "attention_cached_forward",
        format!("B={} Tmax={tmax} p0={p0} Tq={tq} H={h} KVH={kv}", s.b),
        &g.download(&out)?,
        &want,
        TOL,
    ))
}

fn encoder_attention(
    g: &Gpu,
    rng: &mut Rng,
    lens: &[usize],
    ci: usize,
    nh: usize,
) -> Result<CheckRow> {
    let mut starts = vec![0usize];
    for l in lens {
        starts.push(starts.last().unwrap() + l);
    }
    let n = *starts.last().unwrap();
    let qkv = randn(rng, n * 3 * ci, 1.0);
    let mask: Vec<bool> = (0..n).map(|i| i % 4 != 3).collect();
    let mut want = vec![0.0; n * ci];
    c::encoder_attention_forward(&mut want, &qkv, &mask, &starts, ci, nh);
    let mask_i: Vec<i32> = mask.iter().map(|&m| m as i32).collect();
    let st: Vec<i32> = starts.iter().map(|&x| x as i32).collect();
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
    Ok(compare(
        "encoder_attention_forward",
        format!("lens={lens:?} C={ci} NH={nh}"),
        &g.download(&out)?,
        &want,
        TOL,
    ))
}

fn rope(g: &Gpu, rng: &mut Rng, n: usize, h: usize, hd: usize, base: f32) -> Result<CheckRow> {
    let x = randn(rng, n * h * hd, 1.0);
    let pos: Vec<usize> = (0..n).map(|_| rng.below(2048)).collect();
    let (cos, sin) = c::rope_table(2048, hd, base);
    let mut want = vec![0.0; n * h * hd];
    c::rope_forward(&mut want, &x, &pos, &cos, &sin, n, h, hd);
    let pos_i: Vec<i32> = pos.iter().map(|&p| p as i32).collect();
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
    Ok(compare(
        "rope_forward",
        format!("N={n} H={h} hd={hd}"),
        &g.download(&dx)?,
        &want,
        TOL,
    ))
}

fn softmax_family(g: &Gpu, rng: &mut Rng, p: usize, v: usize) -> Result<Vec<CheckRow>> {
    let logits = randn(rng, p * v, 3.0);
    let targets: Vec<u32> = (0..p).map(|_| rng.below(v) as u32).collect();
    let mut logp = vec![0.0; p * v];
    c::log_softmax_forward(&mut logp, &logits, v);
    let mut want = vec![0.0; p];
    c::gather_forward(&mut want, &logp, &targets, v);
    let dl = g.upload(&logits)?;
    let mut out = g.poisoned(p)?;
    k::log_softmax_gather_forward(g, &mut out, &dl, &g.upload(&targets)?, p, v, 1.0)?;
    g.sync()?;
    let shape = format!("P={p} V={v}");
    let lp_row = compare(
        "log_softmax_gather_forward",
        shape.clone(),
        &g.download(&out)?,
        &want,
        TOL,
    );
    let (mut ent, mut lse) = (vec![0.0; p], vec![0.0; p]);
    c::entropy_forward(&mut ent, &mut lse, &logits, v);
    let mut out = g.poisoned(p)?;
    k::entropy_forward(g, &mut out, &dl, p, v)?;
    g.sync()?;
    Ok(vec![
        lp_row,
        compare("entropy_forward", shape, &g.download(&out)?, &ent, TOL),
    ])
}

/// The sampler: with the same uniform draws, the GPU must pick the CPU's tokens and report the
/// same log-probabilities. The "error" column counts differing tokens plus the log-prob error.
fn sampling(g: &Gpu, rng: &mut Rng, b: usize, v: usize) -> Result<Vec<CheckRow>> {
    let logits = randn(rng, b * v, 2.0);
    let u: Vec<f32> = (0..b).map(|_| rng.uniform() as f32).collect();
    let dl = g.upload(&logits)?;
    let du = g.upload(&u)?;
    let mut rows = Vec::new();
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
            want_tok.push(t);
            want_lp.push(lp);
        }
        let mut tok = g.upload(&vec![u32::MAX; b])?;
        let mut lp = g.poisoned(b)?;
        let s = SampleArgs {
            temperature,
            top_k,
            top_p,
            seed: 0,
            step: 0,
        };
        k::sample_forward(g, &mut tok, &mut lp, &dl, Some(&du), b, v, s)?;
        g.sync()?;
        let got_tok = g.download(&tok)?;
        let mut row = compare(
            "sample_forward",
            format!("B={b} V={v} T={temperature} k={top_k} p={top_p}"),
            &g.download(&lp)?,
            &want_lp,
            TOL,
        );
        let differing = got_tok
            .iter()
            .zip(&want_tok)
            .filter(|(a, b)| a != b)
            .count();
        row.max_abs += differing as f32;
        row.pass &= differing == 0;
        rows.push(row);
    }
    Ok(rows)
}

/// Fused pooling + normalise + cosine + shaping against the CPU pooling and `reward::shaping`.
fn reward(g: &Gpu, rng: &mut Rng, b: usize, t: usize, d: usize) -> Result<Vec<CheckRow>> {
    use crate::reward::shaping::Shaping;
    let hidden = randn(rng, b * t * d, 1.0);
    let mut mask: Vec<u32> = (0..b * t)
        .map(|i| (i % t < 1 + (i / t) % t) as u32)
        .collect();
    mask[(b - 1) * t..].fill(0); // an answer with no token: a zero vector
    let parent = randn(rng, b * d, 1.0);
    let exact: Vec<i32> = (0..b).map(|i| (i % 2) as i32).collect();
    let input =
        crate::cpu::bert::EncoderInput::padded(&vec![0; b * t], &vec![0; b * t], &mask, b, t);
    let mut pooled = vec![0.0; b * d];
    crate::cpu::bert::sentence_pool_forward(
        &mut pooled,
        &hidden,
        &input,
        d,
        crate::model::bert::Pooling::Mean,
        true,
    );
    let (dh, dp, de) = (g.upload(&hidden)?, g.upload(&parent)?, g.upload(&exact)?);
    let mask_i: Vec<i32> = mask.iter().map(|&m| m as i32).collect();
    let dm = g.upload(&mask_i)?;
    let starts: Vec<i32> = (0..=b).map(|i| (i * t) as i32).collect();
    let dst = g.upload(&starts)?;
    let mut rows = Vec::new();
    for (code, shaping) in [
        (k::SHAPE_PGSRM, Shaping::Pgsrm),
        (k::SHAPE_TRUNCATE, Shaping::Truncate),
        (k::SHAPE_EUCLIDEAN, Shaping::Euclidean),
        (k::SHAPE_BINARY, Shaping::Binary),
    ] {
        let want: Vec<f32> = (0..b)
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
        let (mut r, mut e) = (g.poisoned(b)?, g.poisoned(b * d)?);
        k::pool_cosine_shape_forward(
            g,
            &mut r,
            &mut e,
            &dh,
            &dm,
            &dst,
            &dp,
            Some(&de),
            b,
            d,
            code,
            4.0,
        )?;
        g.sync()?;
        let mut got = g.download(&r)?;
        let mut want = want;
        got.extend(g.download(&e)?);
        want.extend(&pooled);
        rows.push(compare(
            "pool_cosine_shape_forward",
            format!("B={b} T={t} D={d} {shaping}"),
            &got,
            &want,
            TOL,
        ));
    }
    Ok(rows)
}

/// The table `pgsrm check` prints.
pub fn format_table(rows: &[CheckRow]) -> String {
    let mut s = format!(
        "{:<28} {:<44} {:>10} {:>10} {:>8}  {}\n",
        "kernel", "shape", "max abs", "max rel", "tol", "pass"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<28} {:<44} {:>10.3e} {:>10.3e} {:>8.0e}  {}\n",
            r.kernel,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.pass { "ok" } else { "FAIL" }
        ));
    }
    s
}

/// A small Llama with grouped-query attention (6 query heads over 2 key/value heads) and an
/// untied head.
const TINY_LLAMA: &str = r#"{"vocab_size": 500, "hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "max_position_embeddings": 128}"#;

/// A seeded random Llama of `config` (SmolLM2's shapes included: its weights cannot travel to a
/// machine without network, and the code path is the same): the logits of the prefill and of two
/// decoding steps with the same forced tokens, GPU against `cpu::llama::generate_with`.
fn llama_decoding(g: &Gpu, rng: &mut Rng, name: &str, config: &str) -> Result<Vec<CheckRow>> {
    use crate::cuda::llama::{GpuLlama, GpuLlamaDecoder};
    use crate::model::llama::{Llama, LlamaConfig};
    let cfg = LlamaConfig::from_json_str(config)?;
    let model = Llama::random(cfg.clone(), rng.next_u64());
    let dev = GpuLlama::upload(g, &model)?;
    let v = cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = [4, 9, 16]
        .iter()
        .map(|&n| (0..n).map(|_| rng.below(v) as u32).collect())
        .collect();
    let steps = 2;
    let forced: Vec<Vec<u32>> = (0..steps)
        .map(|_| (0..prompts.len()).map(|_| rng.below(v) as u32).collect())
        .collect();
    // CPU: the logits each row sees at each step, with the forced tokens fed back.
    let batch = crate::cpu::gpt2::Batch::left_padded(&prompts, 0)?;
    let mut seen: Vec<Vec<f32>> = vec![Vec::new(); steps + 1];
    let mut calls = 0usize;
    crate::cpu::llama::generate_with(&model, &batch, steps + 1, None, |r, logits| {
        let step = calls / prompts.len();
        calls += 1;
        seen[step].extend_from_slice(logits);
        if step < steps { forced[step][r] } else { 0 }
    })?;
    let mut gpu = GpuLlamaDecoder::new(g, &dev, &prompts, steps + 1, 0)?;
    let mut rows = vec![compare(
        "llama decode (prefill)",
        format!("{name} B=3 T=16"),
        &gpu.logits()?,
        &seen[0],
        TOL,
    )];
    for step in 0..steps {
        gpu.step(&forced[step])?;
        rows.push(compare(
            "llama decode (step)",
            format!("{name} B=3 step {}", step + 1),
            &gpu.logits()?,
            &seen[step + 1],
            TOL,
        ));
    }
    Ok(rows)
}

/// all-MiniLM-L6-v2's shapes (its weights stay behind on a machine without network; a seeded
/// random init takes the same code path).
const MINILM_CONFIG: &str = r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;

/// The encoder's last hidden state and the fused PGSRM reward on the GPU against
/// `cpu::bert::bert_forward`, `sentence_pool_forward` and `reward::shaping`, on five packed answers.
fn bert_reward(g: &Gpu, rng: &mut Rng) -> Result<Vec<CheckRow>> {
    use crate::cpu::bert::{EncoderInput, bert_forward, sentence_pool_forward};
    use crate::model::bert::{BertConfig, BertLayer, BertWeights, Pooling};
    use crate::reward::shaping::Shaping;
    let cfg: BertConfig = serde_json::from_str(MINILM_CONFIG)?;
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut normal = |n: usize, std: f32| randn(rng, n, std);
    let ones = |n: usize| vec![1.0f32; n];
    let layers = (0..cfg.num_hidden_layers)
        .map(|_| BertLayer {
            qkv_w: normal(c * 3 * c, 0.05),
            qkv_b: normal(3 * c, 0.02),
            attn_out_w: normal(c * c, 0.05),
            attn_out_b: normal(c, 0.02),
            attn_ln_w: ones(c),
            attn_ln_b: vec![0.0; c],
            ffn_in_w: normal(c * i, 0.05),
            ffn_in_b: normal(i, 0.02),
            ffn_out_w: normal(i * c, 0.05),
            ffn_out_b: normal(c, 0.02),
            ffn_ln_w: ones(c),
            ffn_ln_b: vec![0.0; c],
        })
        .collect();
    let w = BertWeights {
        word_emb: normal(cfg.vocab_size * c, 0.05),
        pos_emb: normal(cfg.max_position_embeddings * c, 0.05),
        type_emb: normal(cfg.type_vocab_size * c, 0.05),
        emb_ln_w: ones(c),
        emb_ln_b: vec![0.0; c],
        layers,
    };
    let mut input = EncoderInput::new();
    for len in [3usize, 8, 5, 4, 6] {
        let ids: Vec<u32> = (0..len).map(|_| rng.below(cfg.vocab_size) as u32).collect();
        input.push(&ids, &vec![0; len]);
    }
    let b = input.batch();
    let parents = randn(rng, b * c, 1.0);
    let want_hidden = bert_forward(&cfg, &w, &input)?;
    let mut pooled = vec![0.0; b * c];
    sentence_pool_forward(&mut pooled, &want_hidden, &input, c, Pooling::Mean, true);
    let dev = crate::cuda::bert::GpuBert::upload(g, &cfg, &w)?;
    let hidden = dev.forward(g, &input)?;
    g.sync()?;
    let mut rows = vec![compare(
        "bert forward (MiniLM shapes)",
        format!("B={b} N={}", input.rows()),
        &g.download(&hidden)?,
        &want_hidden,
        TOL,
    )];
    let (r, e) = dev.rewards(g, &input, &parents, &vec![0; b], k::SHAPE_PGSRM, 4.0)?;
    let mut got = r;
    got.extend(e);
    let mut want: Vec<f32> = (0..b)
        .map(|j| {
            Shaping::Pgsrm.reward(
                4.0,
                "",
                "",
                &parents[j * c..(j + 1) * c],
                &pooled[j * c..(j + 1) * c],
            )
        })
        .collect();
    want.extend(&pooled);
    rows.push(compare(
        "bert + fused pgsrm reward",
        format!("B={b} D={c}"),
        &got,
        &want,
        TOL,
    ));
    Ok(rows)
}
