//! Model configurations, parameters, and their files.

pub mod bert;
pub mod gpt2;
