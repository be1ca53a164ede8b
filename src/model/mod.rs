//! Model configurations, parameters, and their files.

pub mod gguf;
pub mod gpt2;
pub mod llama;
pub mod llama_tokenizer;
