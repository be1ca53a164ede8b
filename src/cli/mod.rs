//! One module per subcommand: its flags (`Args`) and its `run`.

pub mod bench;
pub mod check;
pub mod compare;
pub mod convert;
pub mod embed;
pub mod embedder_args;
pub mod eval;
pub mod generate;
pub mod info;
pub mod reproduce;
pub mod reward;
pub mod score;
pub mod tasks;
pub mod train;
