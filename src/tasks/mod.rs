//! The five tasks of the paper: prompt templates exactly as its runs used them, our own word lists
//! and sentences, our own parent reference table per task, a fixed held-out split, and the per-task
//! training defaults.
//!
//! The data files live in `data/` and are compiled into the binary, so a task works from any folder.

use crate::rng::Rng;
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};

/// Task names, in the paper's order.
pub const NAMES: [&str; 5] = ["colors", "opposites", "categories", "copy", "negative"];

/// Share of items (colors: of unordered color pairs) held out of training.
pub const HELD_OUT_FRACTION: f64 = 0.2;

/// Seed of the shuffle that picks the held-out items; fixed so the split never moves.
const SPLIT_SEED: u64 = 0x5EED_2025;

/// What the paper ran each task with, plus what we default to.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskSettings {
    /// GPT-2 named config of the child in the paper (`small` = 124M, `large` = 774M).
    pub child: &'static str,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    /// Our default embedder. Numberbatch vectors are not shipped, so every task defaults to MiniLM.
    pub embedder: &'static str,
    /// The embedder the paper used for this task.
    pub paper_embedder: &'static str,
}

/// A prompt and its reference answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Example<'a> {
    pub prompt: &'a str,
    pub answer: &'a str,
}

pub struct Task {
    pub name: &'static str,
    /// The prompt template as docs/METHOD.md writes it, named slots in braces.
    pub template: &'static str,
    /// The system message that tells an API parent the task and the `{"OUTPUT": ...}` protocol.
    pub instruction: &'static str,
    pub settings: TaskSettings,
    /// The words or sentences the prompts are made from.
    pub items: Vec<String>,
    prompts: Vec<String>,
    answers: Vec<String>,
    train: Vec<usize>,
    held_out: Vec<usize>,
}

struct Source {
    name: &'static str,
    template: &'static str,
    instruction: &'static str,
    settings: TaskSettings,
    items: &'static str,
    items_file: &'static str,
    table: &'static str,
    table_file: &'static str,
}

const PROTOCOL: &str =
    "Reply with JSON only, exactly {\"OUTPUT\": \"<answer>\"}, and nothing else.";

fn sources() -> [Source; 5] {
    let lexical = |child, embedder| TaskSettings {
        child,
        max_new_tokens: 2,
        batch_size: 50,
        embedder: "minilm",
        paper_embedder: embedder,
    };
    let sentence = TaskSettings {
        child: "large",
        max_new_tokens: 10,
        batch_size: 10,
        embedder: "minilm",
        paper_embedder: "text-embedding-3-large",
    };
    [
        Source {
            name: "colors",
            template: "Mix the two colors and output only one lowercase color name: {c1} and {c2} is => ",
            instruction: "You mix two paint colors. Answer with the single lowercase color name that \
                          mixing the two colors gives, one word.",
            settings: lexical("small", "numberbatch"),
            items: include_str!("../../data/tasks/colors.txt"),
            items_file: "data/tasks/colors.txt",
            table: include_str!("../../data/parents/colors.jsonl"),
            table_file: "data/parents/colors.jsonl",
        },
        Source {
            name: "opposites",
            template: "The opposite of '{word}' is ",
            instruction: "You give antonyms. Answer with the single lowercase word that is the \
                          opposite of the quoted adjective.",
            settings: lexical("small", "numberbatch"),
            items: include_str!("../../data/tasks/opposites.txt"),
            items_file: "data/tasks/opposites.txt",
            table: include_str!("../../data/parents/opposites.jsonl"),
            table_file: "data/parents/opposites.jsonl",
        },
        Source {
            name: "categories",
            template: "What category does this word belong to: '{word}'?",
            instruction: "You classify nouns. Answer with the single lowercase singular word naming \
                          the category the quoted noun belongs to, such as fruit, animal or tool.",
            settings: lexical("small", "numberbatch"),
            items: include_str!("../../data/tasks/categories.txt"),
            items_file: "data/tasks/categories.txt",
            table: include_str!("../../data/parents/categories.jsonl"),
            table_file: "data/parents/categories.jsonl",
        },
        Source {
            name: "copy",
            template: "Copy this sentence: '{sentence}'",
            instruction: "You copy text. Answer with the quoted sentence exactly as given, without \
                          the quotes.",
            settings: sentence.clone(),
            items: include_str!("../../data/tasks/copy.txt"),
            items_file: "data/tasks/copy.txt",
            table: include_str!("../../data/parents/copy.jsonl"),
            table_file: "data/parents/copy.jsonl",
        },
        Source {
            name: "negative",
            template: "Rewrite this as sad: '{sentence}'",
            instruction: "You rewrite happy sentences as sad ones. Answer with one short sentence \
                          that turns the quoted sentence sad, keeping its subject.",
            settings: sentence,
            items: include_str!("../../data/tasks/negative.txt"),
            items_file: "data/tasks/negative.txt",
            table: include_str!("../../data/parents/negative.jsonl"),
            table_file: "data/parents/negative.jsonl",
        },
    ]
}

/// Fills the template's slots in order.
fn fill(template: &str, values: &[&str]) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut values = values.iter();
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("templates close their slots");
        out.push_str(&rest[..open]);
        out.push_str(values.next().expect("one value per slot"));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every task, in the paper's order.
pub fn all() -> Result<Vec<Task>> {
    NAMES.iter().map(|n| by_name(n)).collect()
}

/// The task called `name`; an unknown name lists the valid ones.
pub fn by_name(name: &str) -> Result<Task> {
    let wanted = name.trim().to_ascii_lowercase();
    let Some(src) = sources().into_iter().find(|s| s.name == wanted) else {
        bail!(
            "unknown task {name:?}: valid tasks are {}",
            NAMES.join(", ")
        );
    };
    Task::build(src)
}

impl Task {
    fn build(src: Source) -> Result<Task> {
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        for (i, line) in src.items.lines().enumerate() {
            let item = line.trim();
            if item.is_empty() {
                continue;
            }
            // A quote inside an item would end the template's quoted slot early.
            if item.contains('\'') || !seen.insert(item) {
                bail!(
                    "{} line {}: {item:?} is repeated or holds a single quote",
                    src.items_file,
                    i + 1
                );
            }
            items.push(item.to_string());
        }
        // A group is what is held out as a whole: for colors an unordered pair (so "red and blue"
        // and "blue and red" fall on the same side), otherwise one item.
        let mut prompts = Vec::new();
        let mut groups = Vec::new();
        if src.name == "colors" {
            let mut group_of = HashMap::new();
            for (i, a) in items.iter().enumerate() {
                for (j, b) in items.iter().enumerate() {
                    if i != j {
                        let next = group_of.len();
                        let g = *group_of.entry((i.min(j), i.max(j))).or_insert(next);
                        prompts.push(fill(src.template, &[a, b]));
                        groups.push(g);
                    }
                }
            }
        } else {
            for (i, item) in items.iter().enumerate() {
                prompts.push(fill(src.template, &[item]));
                groups.push(i);
            }
        }
        let table = parse_table(src.table, src.table_file)?;
        let answers = prompts
            .iter()
            .map(|p| {
                table
                    .get(p)
                    .cloned()
                    .with_context(|| format!("{} has no answer for prompt {p:?}", src.table_file))
            })
            .collect::<Result<Vec<_>>>()?;
        if table.len() != prompts.len() {
            bail!(
                "{} has {} entries for the {} prompts of task {}",
                src.table_file,
                table.len(),
                prompts.len(),
                src.name
            );
        }
        let n_groups = groups.iter().max().map_or(0, |g| g + 1);
        let mut order: Vec<usize> = (0..n_groups).collect();
        let mut rng = Rng::new(SPLIT_SEED);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let n_held = ((n_groups as f64) * HELD_OUT_FRACTION).round() as usize;
        let held: HashSet<usize> = order[..n_held].iter().copied().collect();
        let (held_out, train): (Vec<usize>, Vec<usize>) =
            (0..prompts.len()).partition(|&i| held.contains(&groups[i]));
        Ok(Task {
            name: src.name,
            template: src.template,
            instruction: src.instruction,
            settings: src.settings,
            items,
            prompts,
            answers,
            train,
            held_out,
        })
    }

    /// The full system message for an API parent: the task instruction and the reply protocol.
    pub fn system_message(&self) -> String {
        format!("{} {PROTOCOL}", self.instruction)
    }

    /// Every prompt the task can make, training and held-out.
    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    fn example(&self, i: usize) -> Example<'_> {
        Example {
            prompt: &self.prompts[i],
            answer: &self.answers[i],
        }
    }

    /// Every prompt the task can make, training and held-out, with its reference answer.
    pub fn examples(&self) -> Vec<Example<'_>> {
        (0..self.prompts.len()).map(|i| self.example(i)).collect()
    }

    /// The training prompts with their reference answers.
    pub fn train(&self) -> Vec<Example<'_>> {
        self.train.iter().map(|&i| self.example(i)).collect()
    }

    /// The held-out prompts (never sampled for training) with their reference answers.
    pub fn held_out(&self) -> Vec<Example<'_>> {
        self.held_out.iter().map(|&i| self.example(i)).collect()
    }

    /// `k` training examples for a few-shot prompt: the first `k` of the training split, so the
    /// held-out prompts never appear in it.
    pub fn few_shot(&self, k: usize) -> Vec<Example<'_>> {
        self.train().into_iter().take(k).collect()
    }

    /// One training prompt drawn uniformly, with its reference answer.
    pub fn sample(&self, rng: &mut Rng) -> Example<'_> {
        self.example(self.train[rng.below(self.train.len())])
    }

    /// `n` independent draws of `sample`.
    pub fn sample_batch(&self, rng: &mut Rng, n: usize) -> Vec<Example<'_>> {
        (0..n).map(|_| self.sample(rng)).collect()
    }

    /// The reference answer from the shipped table, for any of the task's prompts.
    pub fn answer(&self, prompt: &str) -> Option<&str> {
        self.prompts
            .iter()
            .position(|p| p == prompt)
            .map(|i| self.answers[i].as_str())
    }
}

#[derive(serde::Deserialize)]
struct TableLine {
    prompt: String,
    answer: String,
}

/// A JSON Lines table of `{"prompt": ..., "answer": ...}`, the form of our parent tables;
/// `source` names it in errors. Blank lines are skipped; a prompt given twice is an error, since
/// one of the two answers would be silently lost.
pub fn parse_table(text: &str, source: &str) -> Result<HashMap<String, String>> {
    let mut table = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: TableLine = serde_json::from_str(line).with_context(|| {
            format!(
                "parent table {source} line {}: expected {{\"prompt\": \"...\", \"answer\": \"...\"}}",
                i + 1
            )
        })?;
        if table.insert(row.prompt.clone(), row.answer).is_some() {
            bail!(
                "parent table {source} line {}: prompt {:?} is given twice",
                i + 1,
                row.prompt
            );
        }
    }
    if table.is_empty() {
        bail!("parent table {source} has no entries");
    }
    Ok(table)
}
