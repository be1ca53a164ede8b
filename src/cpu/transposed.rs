//! A Llama's projection and head weights transposed to (in, out), the layout in which the
//! forward pass multiplies fastest.
//!
//! The `gemm` crate multiplies by a weight stored (out, in), PyTorch's `Linear` layout, only after
//! repacking it, on every call; at the few rows of the reference's response tokens that repacking
//! costs more than the product itself (2-5x slower at 8-16 rows, 1.3-2.4x at 160, on the Intel
//! host of BENCHMARKS.md). The frozen reference (`cpu::refcache`) transposes its weights once and
//! reads this copy in every update. The policy does not: its weights change every update, and a
//! transposed copy per rollout cost more than it saved. Backward keeps the stored layout, already
//! the fast one for its products.
//!
//! A copy belongs to the weights it was made from: like the keys and values of a `RowKv`, it is
//! stale once they change.

use crate::cpu::gemm::transpose;
use crate::model::llama::Llama;
use rayon::prelude::*;

/// One layer's projections, each (in, out).
pub struct LayerT {
    pub q_proj: Vec<f32>,    // (C, H*D)
    pub k_proj: Vec<f32>,    // (C, KV*D)
    pub v_proj: Vec<f32>,    // (C, KV*D)
    pub o_proj: Vec<f32>,    // (H*D, C)
    pub gate_proj: Vec<f32>, // (C, F)
    pub up_proj: Vec<f32>,   // (C, F)
    pub down_proj: Vec<f32>, // (F, C)
}

/// Every layer's projections and the output head, transposed.
pub struct TransposedLlama {
    pub layers: Vec<LayerT>,
    pub head: Vec<f32>, // (C, V)
}

impl TransposedLlama {
    /// The transposed copy of `model`'s weights now.
    pub fn of(model: &Llama) -> Self {
        let w = &model.weights;
        // Each tensor is (out, in): rows are outputs.
        let t = |x: &crate::tensor::Tensor| transpose(&x.data, x.shape[0], x.shape[1]);
        let layers = w
            .layers
            .par_iter()
            .map(|l| LayerT {
                q_proj: t(&l.q_proj),
                k_proj: t(&l.k_proj),
                v_proj: t(&l.v_proj),
                o_proj: t(&l.o_proj),
                gate_proj: t(&l.gate_proj),
                up_proj: t(&l.up_proj),
                down_proj: t(&l.down_proj),
            })
            .collect();
        TransposedLlama {
            layers,
            head: t(w.head()),
        }
    }
}
