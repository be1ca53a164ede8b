//! `pgsrm tasks`: the tasks with their settings and an example prompt with its parent answer.

use anyhow::Result;
use pgsrm::rng::Rng;
use pgsrm::tasks;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Show only this task
    #[arg(long)]
    task: Option<String>,
    /// Seed of the example draw
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let list = match &args.task {
        Some(name) => vec![tasks::by_name(name)?],
        None => tasks::all()?,
    };
    let mut rows = Vec::new();
    for task in &list {
        let mut rng = Rng::new(args.seed);
        let ex = task.sample(&mut rng);
        if args.json {
            rows.push(json!({
                "name": task.name,
                "template": task.template,
                "settings": task.settings,
                "items": task.items.len(),
                "train_prompts": task.train().len(),
                "held_out_prompts": task.held_out().len(),
                "instruction": task.system_message(),
                "example": ex,
            }));
        } else {
            let s = &task.settings;
            println!("{}", task.name);
            println!("  template        {:?}", task.template);
            println!(
                "  prompts         {} ({} train, {} held out) from {} items",
                task.prompts().len(),
                task.train().len(),
                task.held_out().len(),
                task.items.len()
            );
            println!(
                "  child           gpt2 {}   max new tokens {}   batch {}",
                s.child, s.max_new_tokens, s.batch_size
            );
            println!(
                "  embedder        {} (paper: {})",
                s.embedder, s.paper_embedder
            );
            println!("  example prompt  {:?}", ex.prompt);
            println!("  parent answer   {:?}", ex.answer);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
