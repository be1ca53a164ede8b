//! The CPU reference backend: f32, one forward and one backward function per operation (`ops`),
//! with the models built on top of them.
//!
//! Each layer uses only the layers above it in this list:
//! 1. `gemm`, `ops`: matrix products and the operations;
//! 2. `kv` (keys and values decoding keeps), `prefix` (rows of sequences that share prefixes),
//!    `transposed` (weights read transposed);
//! 3. `gpt2`, `llama`, `bert`: the models' forward and backward passes (Llama's decoding too; `bert`
//!    is also the sentence encoder's passes);
//! 4. `rows` (either family on prefix rows), `gpt2_decode` (GPT-2 decoding);
//! 5. `rollout` (rollouts whose forward pass the update reuses);
//! 6. `model`: either family, the one place the backend tells them apart;
//! 7. `refcache` (the frozen reference's prompt cache), `policy` (the update's passes).

pub mod bert;
pub mod gemm;
pub mod gpt2;
pub mod gpt2_decode;
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
