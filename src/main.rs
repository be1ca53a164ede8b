//! The `pgsrm` command line: one subcommand per user job, each a thin layer over the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(
    name = "pgsrm",
    version,
    about = "Parent-Guided Semantic Reward Model: RL for small transformer language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-token log-probabilities of a text under a model, as JSON
    Score(cli::score::Args),
    /// Sample continuations of a prompt
    Generate(cli::generate::Args),
    /// Version, threads, and whether CUDA is present
    Info(cli::info::Args),
    /// Embed texts with an embedder, as JSON vectors
    Embed(cli::embed::Args),
    /// Shaped rewards for (parent, child) answer pairs, as JSON
    Reward(cli::reward::Args),
    /// List the tasks with their settings and an example prompt
    Tasks(cli::tasks::Args),
    /// Check every CUDA kernel against its CPU reference
    Check(cli::check::Args),
    /// Greedy answers to a task's held-out prompts: exact match and mean PGSRM reward
    Eval(cli::eval::Args),
    /// Plots and a table comparing run folders
    Compare(cli::compare::Args),
    /// Train a child on a task with RL into a run folder (or continue one with --resume)
    Train(Box<cli::train::Args>),
    /// PGSRM and binary on the same seeds, evaluated, with a report comparing them
    Reproduce(cli::reproduce::Args),
    /// Write a model (e.g. a GGUF file) as a Hugging Face folder that transformers loads
    Convert(cli::convert::Args),
    /// Throughput figures (GPU generation, matmul beside cuBLAS; CPU generation)
    Bench(cli::bench::Args),
}

fn main() -> ExitCode {
    pgsrm::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(a) => cli::score::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Reward(a) => cli::reward::run(a),
        Command::Tasks(a) => cli::tasks::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Compare(a) => cli::compare::run(a),
        Command::Train(a) => cli::train::run(*a),
        Command::Reproduce(a) => cli::reproduce::run(a),
        Command::Convert(a) => cli::convert::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
