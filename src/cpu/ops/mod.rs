//! Operations of the CPU reference backend, each a forward and a backward function named after it.
//! Row-major f32 slices; shapes in the comment above each function. N = rows (batch x time),
//! C = channels. Backward functions accumulate (+=) into parameter gradients and into input
//! gradients, so that residual branches add up without extra copies.
//!
//! One file per operation family; add new ones beside these and re-export them here.

pub mod gelu;
pub mod layernorm;
pub mod matmul;

pub use gelu::*;
pub use layernorm::*;
pub use matmul::*;
pub mod gqa_attention;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
pub use gqa_attention::*;
pub use rmsnorm::*;
pub use rope::*;
pub use swiglu::*;
pub mod linear;
pub use linear::*;
