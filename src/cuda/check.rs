//! `pgsrm check`: every kernel against its CPU reference on fresh random inputs at several shapes,
//! edge tiles included, then whole GPT-2, Llama and BERT passes against the CPU backend. The
//! backward, loss and optimiser kernels' rows and the whole-model training rows live beside this
//! file (`check_backward`, `check_ppo`, `check_train`).
//! Outputs are poisoned with NaN before each launch, so an element a kernel never writes fails.
//! A case passes when max |device - cpu| <= tol * max(1, max |cpu|) (the table shows that error
//! both absolute and relative to the largest reference value) and when a second run gives the
//! same bits. On the emulated device the second run orders each block's threads at random and
//! poisons fresh memory with another byte, so a missing barrier, a race or a read of unwritten
//! memory changes the bits; the emulated device also gets smaller model shapes.

use super::device::{DevBuf, Gpu};
use super::emu::Schedule;
use super::ops::{self as k, AttnShape, SampleArgs};
use crate::cpu::ops as c;
use crate::rng::Rng;
use anyhow::Result;
use std::time::Instant;

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckRow {
    pub kernel: String,
    pub shape: String,
    pub max_abs: f32,
    pub max_rel: f32,
    pub tol: f32,
    /// Whether the second run (on the emulated device: under another schedule) gave the same bits.
    pub same_bits: bool,
    pub pass: bool,
    /// Wall time of the case, both runs and the CPU reference (on the emulated device, what the
    /// case costs to check; never a speed figure).
    pub seconds: f64,
}

/// Forward tolerance of DESIGN.md: CUDA f32 within 1e-4 of the CPU.
pub const TOL: f32 = 1e-4;

/// The poison byte of the emulated device's later runs (the first uses `emu::POISON`).
const SECOND_POISON: u8 = 0x7f;

/// The schedules (and poison bytes) every case runs under on the emulated device, which must all
/// give the same bits: warps one after another in both orders, so that any two warps meet in
/// both orders at every barrier (a missing barrier between warps shows), then threads shuffled.
pub fn schedules(seed: u64) -> [(Schedule, u8); 3] {
    [
        (Schedule::WarpsForward, super::emu::POISON),
        (Schedule::WarpsReverse(seed | 1), SECOND_POISON),
        (Schedule::Shuffled(seed | 1), SECOND_POISON),
    ]
}

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
        same_bits: true,
        pass,
        seconds: 0.0,
    }
}

/// One row over several outputs (a gradient's parts: input, weight, bias...), each compared
/// relative to its own largest reference value: gradients' scales are far from 1, so
/// `compare`'s floor of 1 would hide their errors. The row shows the largest absolute error and
/// the largest of the parts' relative errors, which must be at most `tol`.
pub fn compare_parts(
    kernel: &str,
    shape: String,
    got: &[Vec<f32>],
    want: &[&[f32]],
    tol: f32,
) -> CheckRow {
    let (mut max_abs, mut max_rel) = (0.0f32, 0.0f32);
    let mut finite = got.len() == want.len();
    for (g, w) in got.iter().zip(want) {
        let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let mut part = 0.0f32;
        finite &= g.len() == w.len();
        for (a, b) in g.iter().zip(*w) {
            finite &= a.is_finite();
            part = part.max((a - b).abs());
        }
        max_abs = max_abs.max(part);
        max_rel = max_rel.max(if part == 0.0 { 0.0 } else { part / scale });
    }
    let (max_abs, max_rel) = if finite {
        (max_abs, max_rel)
    } else {
        (f32::NAN, f32::NAN)
    };
    CheckRow {
        kernel: kernel.into(),
        shape,
        max_abs,
        max_rel,
        tol,
        same_bits: true,
        pass: finite && max_rel <= tol,
        seconds: 0.0,
    }
}

pub(super) fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * std).collect()
}

fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// A row of `Checker::parts_rows`: its name, shape, how many outputs it compares and to what
/// relative tolerance.
pub(super) struct PartsRow<'a> {
    pub(super) kernel: &'a str,
    pub(super) shape: String,
    pub(super) parts: usize,
    pub(super) tol: f32,
}

/// The table being filled, and what every case needs.
pub(super) struct Checker<'a> {
    pub(super) g: &'a Gpu,
    pub(super) rng: Rng,
    seed: u64,
    pub(super) rows: Vec<CheckRow>,
    /// Only rows whose kernel name contains this run (`pgsrm check --filter`).
    filter: Option<String>,
}

impl Checker<'_> {
    /// Whether a row of this kernel name runs under the filter.
    pub(super) fn wants(&self, kernel: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| kernel.contains(f.as_str()))
    }

    /// Runs `run` (the device's part of a case) under every schedule of `SCHEDULES` and returns
    /// the first run's outputs and whether every other run gave the same bits. On a GPU it runs
    /// twice (the schedules say nothing there; the second run catches races between blocks).
    pub(super) fn under_schedules(
        &self,
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<(Vec<Vec<f32>>, bool)> {
        let Some(e) = self.g.emu() else {
            let first = run(self.g)?;
            let second = run(self.g)?;
            let same = same_bits(&first, &second);
            return Ok((first, same));
        };
        let mut first = None;
        let mut same = true;
        for (schedule, poison) in schedules(self.seed) {
            e.set_schedule(schedule, poison);
            let got = run(self.g);
            e.set_schedule(Schedule::InOrder, super::emu::POISON);
            let got = got?;
            match &first {
                None => first = Some(got),
                Some(f) => same &= same_bits(f, &got),
            }
        }
        Ok((first.unwrap_or_default(), same))
    }

    /// One row per (name, shape, reference) against the outputs of `run`, in order.
    pub(super) fn cases(
        &mut self,
        named: &[(&str, String)],
        wants: &[&[f32]],
        tol: f32,
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<()> {
        if !named.iter().any(|(kernel, _)| self.wants(kernel)) {
            return Ok(());
        }
        let t = Instant::now();
        let (got, same) = self.under_schedules(run)?;
        let seconds = t.elapsed().as_secs_f64() / named.len() as f64;
        for (i, ((kernel, shape), want)) in named.iter().zip(wants).enumerate() {
            let mut row = compare(kernel, shape.clone(), &got[i], want, tol);
            row.same_bits = same;
            row.pass &= same;
            row.seconds = seconds;
            self.rows.push(row);
        }
        Ok(())
    }

    pub(super) fn case(
        &mut self,
        kernel: &str,
        shape: String,
        want: &[f32],
        run: impl Fn(&Gpu) -> Result<Vec<f32>>,
    ) -> Result<()> {
        self.cases(&[(kernel, shape)], &[want], TOL, |g| Ok(vec![run(g)?]))
    }

    /// One row for the outputs of `run`, each compared with its reference by `compare_parts`.
    pub(super) fn parts(
        &mut self,
        kernel: &str,
        shape: String,
        wants: &[&[f32]],
        tol: f32,
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<()> {
        let row = PartsRow {
            kernel,
            shape,
            parts: wants.len(),
            tol,
        };
        self.parts_rows(vec![row], wants, run)
    }

    /// Rows over consecutive groups of the outputs of `run` (row i takes the next `parts` of
    /// them), each compared with its references by `compare_parts`.
    pub(super) fn parts_rows(
        &mut self,
        rows: Vec<PartsRow>,
        wants: &[&[f32]],
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<()> {
        if !rows.iter().any(|r| self.wants(r.kernel)) {
            return Ok(());
        }
        let t = Instant::now();
        let (got, same) = self.under_schedules(run)?;
        let seconds = t.elapsed().as_secs_f64() / rows.len() as f64;
        let mut at = 0;
        for r in rows {
            let end = (at + r.parts).min(got.len()).min(wants.len());
            let mut row = compare_parts(r.kernel, r.shape, &got[at..end], &wants[at..end], r.tol);
            row.pass &= same && end - at == r.parts;
            row.same_bits = same;
            row.seconds = seconds;
            self.rows.push(row);
            at = end;
        }
        Ok(())
    }

    pub(super) fn small(&self) -> bool {
        self.g.emu().is_some()
    }
}

/// Runs every case; the rows come back in order, failures included.
pub fn run_all(g: &Gpu, seed: u64) -> Result<Vec<CheckRow>> {
    run_filtered(g, seed, None)
}

/// Runs the cases with a row whose kernel name contains `filter` (all of them for `None`).
pub fn run_filtered(g: &Gpu, seed: u64, filter: Option<&str>) -> Result<Vec<CheckRow>> {
    let mut ck = Checker {
        g,
        rng: Rng::new(seed),
        seed,
        rows: Vec::new(),
        filter: filter.map(str::to_string),
    };
    let small = ck.small();
    for (n, ci, oc) in [
        (1, 768, 2304),
        (64, 768, 3072),
        (130, 100, 77),
        (5, 33, 129),
        (127, 96, 200),
        (300, 64, 257),
    ] {
        matmul(&mut ck, n, ci, oc, false)?;
        matmul(&mut ck, n, ci, oc, true)?;
    }
    super::check_sgemm::run_all(&mut ck)?;
    for (n, ci) in [(256, 768), (7, 100), (3, 1)] {
        layernorm(&mut ck, n, ci)?;
        rmsnorm(&mut ck, n, ci)?;
    }
    for n in [1, 1000, 1_000_003] {
        elementwise(&mut ck, n)?;
    }
    embedding(&mut ck, 1000, 128, 70, true)?;
    embedding(&mut ck, 300, 96, 5, false)?;
    bert_embedding(&mut ck, 500, 64, 9)?;
    logits(&mut ck, 97, 64, 1000, 5)?;
    // The GPT-2 head's vocabulary, with its last partial tile; narrower on the emulated device.
    logits(&mut ck, 300, if small { 64 } else { 768 }, 50257, 4)?;
    let shape = |b, t, n_head, n_kv_head, head_dim| AttnShape {
        b,
        t,
        n_head,
        n_kv_head,
        head_dim,
    };
    attention(&mut ck, shape(3, 17, 4, 4, 32), &[0, 5, 16])?;
    attention(&mut ck, shape(2, 9, 6, 2, 64), &[3, 0])?;
    attention(&mut ck, shape(1, 40, 3, 1, 128), &[0])?;
    attention_cached(&mut ck, shape(2, 12, 4, 2, 64), &[0, 2], 5, 3)?;
    attention_cached(&mut ck, shape(3, 9, 6, 2, 16), &[8, 0, 4], 8, 1)?;
    kv_append(&mut ck, 2, 3, 10, 4, 48)?;
    encoder_attention(&mut ck, &[5, 9, 1], 384, 12)?;
    encoder_attention(&mut ck, &[33], 64, 2)?;
    rope(&mut ck, 11, 9, 64, 100000.0)?;
    rope(&mut ck, 3, 2, 8, 10000.0)?;
    for (p, v) in [(6, 50257), (3, 1000), (2, 7)] {
        softmax_family(&mut ck, p, v)?;
    }
    sampling(&mut ck, 8, 1000)?;
    sampling(&mut ck, 3, 50257)?;
    reward(&mut ck, 5, 7, 384)?;
    reward(&mut ck, 2, 3, 33)?;
    super::check_backward::run_all(&mut ck)?;
    super::check_ppo::run_all(&mut ck)?;
    gpt2_decoding(&mut ck, "tiny")?;
    if !small {
        gpt2_decoding(&mut ck, "small")?;
    }
    llama_decoding(&mut ck, "tiny GQA", TINY_LLAMA)?;
    bert_reward(&mut ck)?;
    if !small {
        llama_decoding(
            &mut ck,
            "SmolLM2-135M shapes",
            crate::model::llama::SMOLLM2_135M_CONFIG,
        )?;
    } else {
        llama_decoding(&mut ck, "SmolLM2-135M widths, 2 layers", SMOLLM2_WIDTHS)?;
    }
    super::check_train::run_all(&mut ck)?;
    Ok(ck.rows)
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
        "matmul_nt_forward"
    } else {
        "matmul_forward"
    };
    ck.case(name, format!("N={n} C={ci} OC={oc}"), &want, |g| {
        let (di, dw, db) = (g.upload(&inp)?, g.upload(&w)?, g.upload(&b)?);
        let mut out = g.poisoned(n * oc)?;
        if nt {
            k::matmul_nt_forward(g, &mut out, &di, &dw, Some(&db), n, ci, oc)?;
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
    ck.case(
        "attention_cached_forward",
        format!("B={} Tmax={tmax} p0={p0} Tq={tq} H={h} KVH={kv}", s.b),
        &want,
        |g| {
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
            g.download(&out)
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

/// GPT-2 with a seeded random init: the logits of the prefill and of two decoding steps against
/// `cpu::decode::Gpt2Decoder`, and a seeded generation (its tokens and log-probabilities must
/// come out the same on both runs).
fn gpt2_decoding(ck: &mut Checker, config: &str) -> Result<()> {
    use crate::cpu::decode::Gpt2Decoder;
    use crate::cuda::decode::{Decoder, generate};
    use crate::cuda::gpt2::GpuGpt2;
    let cfg = crate::model::gpt2::Gpt2Config::named(config)?;
    let model = crate::model::gpt2::Gpt2::random(cfg.clone(), ck.rng.next_u64());
    let v = cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = [5, 12, 20]
        .iter()
        .map(|&n| (0..n).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    let forced: Vec<Vec<u32>> = (0..2)
        .map(|_| (0..prompts.len()).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    let eos = cfg.eos_token_id;
    let mut cpu = Gpt2Decoder::new(&model, &prompts, 4, eos)?;
    let mut want = vec![cpu.logits().to_vec()];
    for next in &forced {
        cpu.step(next)?;
        want.push(cpu.logits().to_vec());
    }
    let dev = GpuGpt2::upload(ck.g, &model)?;
    ck.cases(
        &[
            ("gpt2 decode (prefill)", format!("{config} B=3 T=20")),
            ("gpt2 decode (step)", format!("{config} B=3 step 1")),
            ("gpt2 decode (step)", format!("{config} B=3 step 2")),
        ],
        &[&want[0], &want[1], &want[2]],
        TOL,
        |g| {
            let mut d = Decoder::new(g, &dev, &prompts, 4, eos)?;
            let mut out = vec![d.logits()?];
            for next in &forced {
                d.step(next)?;
                out.push(d.logits()?);
            }
            Ok(out)
        },
    )?;
    let params = crate::sample::SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: 8,
    };
    if !ck.wants("gpt2 generate") {
        return Ok(());
    }
    let (runs, same) = ck.under_schedules(|g| {
        let rows = generate(g, &dev, &prompts, &params, eos, 42)?;
        Ok(rows
            .iter()
            .map(|r| {
                r.tokens
                    .iter()
                    .map(|&t| t as f32)
                    .chain(r.logprobs.iter().copied())
                    .collect()
            })
            .collect())
    })?;
    let ok = same && runs.iter().all(|r| !r.is_empty());
    ck.rows.push(CheckRow {
        kernel: "gpt2 generate, seeded, twice".into(),
        shape: format!("{config} B=3 new=8"),
        max_abs: if ok { 0.0 } else { 1.0 },
        max_rel: if ok { 0.0 } else { 1.0 },
        tol: 0.0,
        same_bits: same,
        pass: ok,
        seconds: 0.0,
    });
    Ok(())
}

/// A small Llama with grouped-query attention (6 query heads over 2 key/value heads) and an
/// untied head.
pub(super) const TINY_LLAMA: &str = r#"{"vocab_size": 500, "hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "max_position_embeddings": 128}"#;

/// SmolLM2-135M's widths, heads and vocabulary with 2 of its 30 layers: the emulated device's
/// stand-in for the whole model (the same shapes through every kernel, a fifteenth of the work).
const SMOLLM2_WIDTHS: &str = r#"{"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 2, "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0, "tie_word_embeddings": true, "max_position_embeddings": 8192}"#;

/// A seeded random Llama of `config` (SmolLM2's shapes included: its weights cannot travel to a
/// machine without network, and the code path is the same): the logits of the prefill and of two
/// decoding steps with the same forced tokens, device against `cpu::llama::generate_with`.
fn llama_decoding(ck: &mut Checker, name: &str, config: &str) -> Result<()> {
    use crate::cuda::decode::Decoder;
    use crate::cuda::llama::GpuLlama;
    use crate::model::llama::{Llama, LlamaConfig};
    let cfg = LlamaConfig::from_json_str(config)?;
    let model = Llama::random(cfg.clone(), ck.rng.next_u64());
    let v = cfg.vocab_size;
    let prompts: Vec<Vec<u32>> = [4, 9, 16]
        .iter()
        .map(|&n| (0..n).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    let steps = 2;
    let forced: Vec<Vec<u32>> = (0..steps)
        .map(|_| (0..prompts.len()).map(|_| ck.rng.below(v) as u32).collect())
        .collect();
    // CPU: the logits each row sees at each step, with the forced tokens fed back.
    let batch = crate::batch::Batch::left_padded(&prompts, 0)?;
    let mut seen: Vec<Vec<f32>> = vec![Vec::new(); steps + 1];
    let mut calls = 0usize;
    crate::cpu::llama::generate_with(&model, &batch, steps + 1, None, |r, logits| {
        let step = calls / prompts.len();
        calls += 1;
        seen[step].extend_from_slice(logits);
        if step < steps { forced[step][r] } else { 0 }
    })?;
    let dev = GpuLlama::upload(ck.g, &model)?;
    ck.cases(
        &[
            ("llama decode (prefill)", format!("{name} B=3 T=16")),
            ("llama decode (step)", format!("{name} B=3 step 1")),
            ("llama decode (step)", format!("{name} B=3 step 2")),
        ],
        &[&seen[0], &seen[1], &seen[2]],
        TOL,
        |g| {
            let mut d = Decoder::new(g, &dev, &prompts, steps + 1, 0)?;
            let mut out = vec![d.logits()?];
            for next in &forced {
                d.step(next)?;
                out.push(d.logits()?);
            }
            Ok(out)
        },
    )
}

/// all-MiniLM-L6-v2's shapes (its weights stay behind on a machine without network; a seeded
/// random init takes the same code path).
const MINILM_CONFIG: &str = r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;

/// The encoder's last hidden state and the fused PGSRM reward on the device against
/// `cpu::bert::bert_forward`, `sentence_pool_forward` and `reward::shaping`, on five packed answers.
fn bert_reward(ck: &mut Checker) -> Result<()> {
    use crate::batch::EncoderInput;
    use crate::cpu::bert::{bert_forward, sentence_pool_forward};
    use crate::model::bert::{BertConfig, BertLayer, BertWeights, Pooling};
    use crate::reward::shaping::Shaping;
    let cfg: BertConfig = serde_json::from_str(MINILM_CONFIG)?;
    let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
    let rng = &mut ck.rng;
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
        let ids: Vec<u32> = (0..len)
            .map(|_| ck.rng.below(cfg.vocab_size) as u32)
            .collect();
        input.push(&ids, &vec![0; len]);
    }
    let b = input.batch();
    let parents = randn(&mut ck.rng, b * c, 1.0);
    let want_hidden = bert_forward(&cfg, &w, &input)?;
    let mut pooled = vec![0.0; b * c];
    sentence_pool_forward(&mut pooled, &want_hidden, &input, c, Pooling::Mean, true);
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
    let dev = crate::cuda::bert::GpuBert::upload(ck.g, &cfg, &w)?;
    ck.cases(
        &[
            (
                "bert forward (MiniLM shapes)",
                format!("B={b} N={}", input.rows()),
            ),
            ("bert + fused pgsrm reward", format!("B={b} D={c}")),
        ],
        &[&want_hidden, &want],
        TOL,
        |g| {
            let hidden = dev.forward(g, &input)?;
            g.sync()?;
            let (r, e) = dev.rewards(g, &input, &parents, &vec![0; b], k::SHAPE_PGSRM, 4.0)?;
            let mut got = r;
            got.extend(e);
            Ok(vec![g.download(&hidden)?, got])
        },
    )
}

/// The table `pgsrm check` prints.
pub fn format_table(rows: &[CheckRow]) -> String {
    let mut s = format!(
        "{:<30} {:<44} {:>10} {:>10} {:>8} {:>5}  {}\n",
        "kernel", "shape", "max abs", "max rel", "tol", "bits", "pass"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<30} {:<44} {:>10.3e} {:>10.3e} {:>8.0e} {:>5}  {}\n",
            r.kernel,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.same_bits { "same" } else { "DIFF" },
            if r.pass { "ok" } else { "FAIL" }
        ));
    }
    s
}
