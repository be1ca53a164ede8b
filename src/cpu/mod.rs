//! The CPU reference backend: f32, one forward and one backward function per operation (`ops`),
//! with the models built on top of them.

pub mod bert;
pub mod decode;
pub mod gemm;
pub mod gpt2;
pub mod llama;
pub mod ops;
pub mod policy;
pub mod refcache;
pub mod shared;
