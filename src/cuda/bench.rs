//! GPU throughput figures for `pgsrm bench --device cuda`: batched generation of the GPT-2 `small`
//! config (random init) and our matmul kernel beside cuBLAS at GPT-2 small's shapes.

use super::decode::generate;
use super::device::Gpu;
use super::gpt2::GpuGpt2;
use super::ops;
use crate::model::gpt2::Gpt2;
use crate::rng::Rng;
use crate::sample::SamplingParams;
use crate::throughput::{self, GenerateFigure, median_seconds};
use anyhow::{Result, anyhow};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use serde::Serialize;

/// New tokens per second of `cuda::decode::generate` on the shared generation job
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
        Ok(
            move |_: &Gpt2, prompts: &[Vec<u32>], params: &SamplingParams, eos: u32, seed: u64| {
                generate(g, &dev, prompts, params, eos, seed).map(|_| ())
            },
        )
    })
}

#[derive(Debug, Serialize)]
pub struct MatmulFigure {
    pub kernel: String,
    pub n: usize,
    pub c: usize,
    pub oc: usize,
    pub ours_ms: f64,
    pub cublas_ms: f64,
    pub ours_tflops: f64,
    pub fraction_of_cublas: f64,
}

/// Our `matmul_forward` (w (C, OC)) and `matmul_nt_forward` (w (OC, C), the head) against cuBLAS
/// SGEMM on the same buffers. Row-major out = inp @ w is column-major out^T = w^T inp^T, which is
/// how cuBLAS is called.
pub fn matmul_vs_cublas(
    g: &Gpu,
    shapes: &[(usize, usize, usize, bool)],
    iters: usize,
) -> Result<Vec<MatmulFigure>> {
    let stream = g
        .cuda_stream()
        .ok_or_else(|| anyhow!("the matmul job compares with cuBLAS: it needs a CUDA device"))?;
    let blas = CudaBlas::new(stream.clone()).map_err(|e| anyhow!("cuBLAS: {e:?}"))?;
    let mut rng = Rng::new(3);
    let mut out = Vec::new();
    for &(n, c, oc, nt) in shapes {
        let inp: Vec<f32> = (0..n * c).map(|_| rng.normal() as f32).collect();
        let w: Vec<f32> = (0..c * oc).map(|_| rng.normal() as f32 * 0.02).collect();
        let (di, dw) = (g.upload(&inp)?, g.upload(&w)?);
        let mut y = g.zeros::<f32>(n * oc)?;
        let ours = median_seconds(3, || {
            for _ in 0..iters {
                if nt {
                    ops::matmul_nt_forward(g, &mut y, &di, &dw, None, n, c, oc)?;
                } else {
                    ops::matmul_forward(g, &mut y, &di, &dw, None, n, c, oc)?;
                }
            }
            g.sync()
        })? / iters as f64;
        let cfg = GemmConfig {
            transa: if nt {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            },
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: oc as i32,
            n: n as i32,
            k: c as i32,
            alpha: 1.0f32,
            lda: if nt { c as i32 } else { oc as i32 },
            ldb: c as i32,
            beta: 0.0f32,
            ldc: oc as i32,
        };
        let theirs = median_seconds(3, || {
            for _ in 0..iters {
                // SAFETY: the buffers hold n*c, c*oc and n*oc floats, as the config describes.
                let (a, b) = (dw.cuda().unwrap(), di.cuda().unwrap());
                unsafe { blas.gemm(cfg, a, b, y.cuda_mut().unwrap()) }
                    .map_err(|e| anyhow!("cuBLAS sgemm: {e:?}"))?;
            }
            g.sync()
        })? / iters as f64;
        let flops = 2.0 * (n * c * oc) as f64;
        out.push(MatmulFigure {
            kernel: if nt {
                "matmul_nt_forward"
            } else {
                "matmul_forward"
            }
            .into(),
            n,
            c,
            oc,
            ours_ms: ours * 1e3,
            cublas_ms: theirs * 1e3,
            ours_tflops: flops / ours / 1e12,
            fraction_of_cublas: theirs / ours,
        });
    }
    Ok(out)
}

/// GPT-2 small's products for a rollout of 50 prompts of 20 tokens (1000 rows), and the head at
/// 50 rows.
pub const GPT2_SMALL_SHAPES: [(usize, usize, usize, bool); 5] = [
    (1000, 768, 2304, false),
    (1000, 768, 768, false),
    (1000, 768, 3072, false),
    (1000, 3072, 768, false),
    (50, 768, 50257, true),
];
