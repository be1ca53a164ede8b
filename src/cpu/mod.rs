//! The CPU reference backend: f32, one forward and one backward function per operation (`ops`),
//! with the models built on top of them.
//!
//! Each layer uses only the layers above it in this list:
//! 1. `gemm`, `ops`: matrix products and the operations;
//! 2. `kv` (keys and values decoding keeps), `prefix` (rows of sequences that share prefixes);
//! 3. `gpt2`, `llama`, `bert`: the models' forward and backward passes;
//! 4. `rows` (either family on prefix rows), `decode` (GPT-2 decoding), `model` (either family's
//!    logits and sampling);
//! 5. `rollout` (rollouts whose forward pass the update reuses);
//! 6. `refcache` (the frozen reference's prompt cache), `policy` (the trainer's jobs).

pub mod bert;
pub mod decode;
pub mod gemm;
pub mod gpt2;
pub mod kv;
pub mod llama;
pub mod model;
pub mod ops;
pub mod policy;
pub mod prefix;
pub mod refcache;
pub mod rollout;
pub mod rows;
pub mod transposed;
