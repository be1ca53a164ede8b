//! Operations of the CPU reference backend, each a forward and a backward function named after it.
//! Row-major f32 slices; shapes in the comment above each function. N = rows (batch x time),
//! C = channels. Backward functions accumulate (+=) into parameter gradients and into input
//! gradients, so that residual branches add up without extra copies.
//!
//! One file per operation family; add new ones beside these and re-export them here.

pub mod attention;
pub mod embedding;
pub mod encoder_attention;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod logits;
pub mod matmul;
pub mod path_attention;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod swiglu;

pub use attention::*;
pub use embedding::*;
pub use encoder_attention::*;
pub use gelu::*;
pub use layernorm::*;
pub use linear::*;
pub use logits::*;
pub use matmul::*;
pub use path_attention::*;
pub use residual::*;
pub use rmsnorm::*;
pub use rope::*;
pub use softmax::*;
pub use swiglu::*;
