//! One module per subcommand: its flags (`Args`) and its `run`.

pub mod bench;
pub mod check;
pub mod convert;
pub mod embed;
pub mod embedder_args;
pub mod generate;
pub mod info;
pub mod reward;
pub mod score;
pub mod tasks;
