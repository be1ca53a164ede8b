//! The CPU reference backend: f32, one forward and one backward function per operation (`ops`),
//! with the models built on top of them.

pub mod gemm;
pub mod llama;
pub mod ops;
