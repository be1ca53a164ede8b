//! Model configurations, parameters, and their files.

pub mod gpt2;
pub mod io;
pub mod spec;
pub mod tokenizer;
