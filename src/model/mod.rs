//! Model configurations, parameters, and their files.

pub mod bert;
pub mod gpt2;
pub mod io;
pub mod spec;
pub mod tokenizer;
