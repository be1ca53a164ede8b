//! Model configurations, parameters, and their files.

pub mod gpt2;
