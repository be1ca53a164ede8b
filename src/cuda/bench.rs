//! GPU throughput figures for `pgsrm bench --device cuda`: batched generation of the GPT-2 `small`
//! config (random init), and our products beside cuBLAS at the paper's shapes
//! (`cuda::paper_shapes`), as planned or under every candidate plan.

use super::device::DevBuf;
use super::device::Gpu;
use super::model::generate::{DecodeCache, Draws, generate_on};
use super::model::gpt2::GpuGpt2;
use super::ops::sgemm::{self, Layout, Plan, Shape};
use super::paper_shapes::Product;
use crate::model::gpt2::Gpt2;
use crate::rng::Rng;
use crate::sample::SamplingParams;
use crate::throughput::{self, GenerateFigure};
use anyhow::{Result, anyhow};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use serde::Serialize;

/// New tokens per second of `cuda::model::generate::generate_on` on the shared generation job
/// (`throughput::generate_throughput`).
pub fn generate_throughput(
    g: &Gpu,
    config: &str,
    batch: usize,
    prompt: usize,
    new_tokens: usize,
    runs: usize,
) -> Result<GenerateFigure> {
    throughput::generate_throughput(config, batch, prompt, new_tokens, runs, |model| {
        let dev = GpuGpt2::upload(g, model)?;
        // The buffers and graphs of the batch shape are kept from one run to the next, as a
        // trainer's rollouts keep them.
        let mut cache = DecodeCache::default();
        Ok(
            move |_: &Gpt2, prompts: &[Vec<u32>], params: &SamplingParams, eos: u32, seed: u64| {
                let draws = Draws::Keyed(seed);
                generate_on(g, &dev, &mut cache, prompts, params, eos, draws).map(|_| ())
            },
        )
    })
}

/// One product timed: ours (as planned) beside cuBLAS SGEMM (f32, its default math) on the same
/// buffers.
#[derive(Debug, Serialize)]
pub struct MatmulFigure {
    pub what: String,
    pub layout: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub plan: String,
    pub blocks: usize,
    pub ours_us: f64,
    pub cublas_us: f64,
    pub ours_tflops: f64,
    pub cublas_tflops: f64,
    /// cuBLAS's time over ours: above 1, ours is faster.
    pub fraction_of_cublas: f64,
    /// Products of at most 64 rows, which are bound by reading b: b's bytes over our time, and
    /// over cuBLAS's, in GB/s.
    pub weight_gb_per_s: Option<f64>,
    pub cublas_weight_gb_per_s: Option<f64>,
}

/// Every candidate plan of one product, timed (`pgsrm bench --job matmul --sweep`).
#[derive(Debug, Serialize)]
pub struct SweepFigure {
    pub what: String,
    pub layout: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub planned: String,
    pub planned_us: f64,
    pub best: String,
    pub best_us: f64,
    /// (plan, microseconds) of every candidate, fastest first.
    pub candidates: Vec<(String, f64)>,
}

/// Copies of a product's operands, enough of them that their bytes together exceed the device's
/// L2 cache several times: the timed calls cycle through them, so each reads its operands from
/// device memory, as a model's layers do, not from the cache.
struct Operands {
    a: Vec<DevBuf<f32>>,
    b: Vec<DevBuf<f32>>,
    c: DevBuf<f32>,
}

/// Bytes the operand copies should span together: about four times an H200's 60 MB of L2.
const ROTATION_BYTES: usize = 256 << 20;

impl Operands {
    fn new(g: &Gpu, s: &Shape, rng: &mut Rng) -> Result<Operands> {
        let a: Vec<f32> = (0..s.m * s.k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..s.k * s.n).map(|_| rng.normal() as f32 * 0.02).collect();
        let bytes = 4 * (a.len() + b.len());
        let copies = ROTATION_BYTES.div_ceil(bytes.max(1)).clamp(1, 64);
        let (a0, b0) = (g.upload(&a)?, g.upload(&b)?);
        let mut out = Operands {
            a: Vec::new(),
            b: Vec::new(),
            c: g.zeros::<f32>(s.m * s.n)?,
        };
        for _ in 1..copies {
            let (mut ai, mut bi) = (g.alloc::<f32>(a.len())?, g.alloc::<f32>(b.len())?);
            g.copy(&mut ai, 0, &a0, 0, a.len())?;
            g.copy(&mut bi, 0, &b0, 0, b.len())?;
            out.a.push(ai);
            out.b.push(bi);
        }
        out.a.push(a0);
        out.b.push(b0);
        Ok(out)
    }
}

/// Seconds per call of `call(i)` (i picks the operand copy): a few calls to warm up, then the
/// median of five batches, each long enough (about 2 ms) that the host's timer and the final
/// wait are small beside it.
fn seconds_per_call(g: &Gpu, mut call: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut i = 0;
    let mut batch = |n: usize, call: &mut dyn FnMut(usize) -> Result<()>| -> Result<f64> {
        let t = std::time::Instant::now();
        for _ in 0..n {
            call(i)?;
            i += 1;
        }
        g.sync()?;
        Ok(t.elapsed().as_secs_f64())
    };
    batch(3, &mut call)?;
    let each = batch(5, &mut call)? / 5.0;
    let n = ((2e-3 / each.max(1e-9)).ceil() as usize).clamp(5, 400);
    let mut t = Vec::new();
    for _ in 0..5 {
        t.push(batch(n, &mut call)? / n as f64);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[2])
}

/// cuBLAS's SGEMM for a row-major product: row-major c = op(a) op(b) is column-major
/// c^T = op(b)^T op(a)^T, so b goes first, each transposed where it is stored transposed.
fn cublas_config(s: &Shape) -> GemmConfig<f32> {
    let (ta, tb) = (s.layout == Layout::TN, s.layout == Layout::NT);
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    GemmConfig {
        transa: op(tb),
        transb: op(ta),
        m: s.n as i32,
        n: s.m as i32,
        k: s.k as i32,
        alpha: 1.0f32,
        lda: if tb { s.k } else { s.n } as i32,
        ldb: if ta { s.m } else { s.k } as i32,
        beta: 0.0f32,
        ldc: s.n as i32,
    }
}

fn blas(g: &Gpu) -> Result<CudaBlas> {
    let stream = g
        .cuda_stream()
        .ok_or_else(|| anyhow!("the matmul job compares with cuBLAS: it needs a CUDA device"))?;
    CudaBlas::new(stream.clone()).map_err(|e| anyhow!("cuBLAS: {e:?}"))
}

/// Our product of `s` by plan `p`, timed over the operand copies.
fn time_plan(g: &Gpu, s: &Shape, p: &Plan, ops: &mut Operands) -> Result<f64> {
    let Operands { a, b, c } = ops;
    seconds_per_call(g, |i| {
        sgemm::launch(g, p, s, c, &a[i % a.len()], &b[i % b.len()], None, false)
    })
}

/// Each product, ours as planned and cuBLAS's, on the same operands.
pub fn matmul_vs_cublas(g: &Gpu, products: &[Product]) -> Result<Vec<MatmulFigure>> {
    let blas = blas(g)?;
    let mut rng = Rng::new(3);
    let mut out = Vec::new();
    for pr in products {
        let s = pr.shape;
        let mut ops = Operands::new(g, &s, &mut rng)?;
        let plan = sgemm::plan(s);
        let ours = time_plan(g, &s, &plan, &mut ops)?;
        let cfg = cublas_config(&s);
        let Operands { a, b, c } = &mut ops;
        let theirs = seconds_per_call(g, |i| {
            let (ai, bi) = (&a[i % a.len()], &b[i % b.len()]);
            let (ai, bi) = (ai.cuda().unwrap(), bi.cuda().unwrap());
            // SAFETY: the buffers hold m*k, k*n and m*n floats, as the config describes.
            unsafe { blas.gemm(cfg, bi, ai, c.cuda_mut().unwrap()) }
                .map_err(|e| anyhow!("cuBLAS sgemm: {e:?}"))
        })?;
        let few = s.m <= 64;
        let weight = 4.0 * (s.k * s.n) as f64;
        out.push(MatmulFigure {
            what: pr.what.clone(),
            layout: format!("{:?}", s.layout),
            m: s.m,
            n: s.n,
            k: s.k,
            plan: plan.describe(s.layout),
            blocks: plan.blocks(&s),
            ours_us: ours * 1e6,
            cublas_us: theirs * 1e6,
            ours_tflops: s.flops() / ours / 1e12,
            cublas_tflops: s.flops() / theirs / 1e12,
            fraction_of_cublas: theirs / ours,
            weight_gb_per_s: few.then(|| weight / ours / 1e9),
            cublas_weight_gb_per_s: few.then(|| weight / theirs / 1e9),
        });
    }
    Ok(out)
}

/// Each product under every candidate plan (`sgemm::candidates`), for tuning the planner.
pub fn matmul_sweep(g: &Gpu, products: &[Product]) -> Result<Vec<SweepFigure>> {
    let mut rng = Rng::new(5);
    let mut out = Vec::new();
    for pr in products {
        let s = pr.shape;
        let mut ops = Operands::new(g, &s, &mut rng)?;
        let planned = sgemm::plan(s);
        let mut times = Vec::new();
        for p in sgemm::candidates(s) {
            times.push((p, time_plan(g, &s, &p, &mut ops)?));
        }
        let planned_s = times
            .iter()
            .find(|(p, _)| *p == planned)
            .map_or(f64::NAN, |t| t.1);
        times.sort_by(|x, y| x.1.total_cmp(&y.1));
        out.push(SweepFigure {
            what: pr.what.clone(),
            layout: format!("{:?}", s.layout),
            m: s.m,
            n: s.n,
            k: s.k,
            planned: planned.describe(s.layout),
            planned_us: planned_s * 1e6,
            best: times[0].0.describe(s.layout),
            best_us: times[0].1 * 1e6,
            candidates: times
                .iter()
                .map(|(p, t)| (p.describe(s.layout), t * 1e6))
                .collect(),
        });
    }
    Ok(out)
}
