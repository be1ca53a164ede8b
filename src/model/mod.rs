//! Model configurations, parameters, and their files.

pub mod bert;
pub mod gguf;
pub mod gpt2;
pub mod io;
pub mod llama;
pub mod llama_tokenizer;
pub mod spec;
pub mod tokenizer;
