//! Parents: where the reference answer for a prompt comes from.
//!
//! - `table`: a JSON Lines file of `{"prompt": ..., "answer": ...}`; we ship one per task.
//! - `openai`: an OpenAI-compatible chat endpoint at temperature 0, told the task in a system
//!   message and asked to answer as `{"OUTPUT": "<answer>"}`, with an on-disk cache so a prompt is
//!   asked once across runs.

pub use crate::reward::Parent;
use crate::reward::cache::JsonlCache;
use crate::reward::http::{ApiClient, ApiConfig};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Answers looked up in a prompt -> answer table.
pub struct TableParent {
    source: String,
    table: HashMap<String, String>,
}

impl TableParent {
    /// Reads a JSON Lines table from disk.
    pub fn open(path: impl AsRef<Path>) -> Result<TableParent> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading parent table {}", path.display()))?;
        TableParent::parse(&text, &path.display().to_string())
    }

    /// Parses a JSON Lines table (`tasks::parse_table`); `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<TableParent> {
        Ok(TableParent {
            source: source.to_string(),
            table: crate::tasks::parse_table(text, source)?,
        })
    }

    /// The task's shipped table (every prompt it can make, with its answer).
    pub fn for_task(task: &crate::tasks::Task) -> TableParent {
        TableParent {
            source: format!("data/parents/{}.jsonl", task.name),
            table: task
                .examples()
                .iter()
                .map(|e| (e.prompt.to_string(), e.answer.to_string()))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, prompt: &str) -> Option<&str> {
        self.table.get(prompt).map(String::as_str)
    }
}

impl Parent for TableParent {
    fn name(&self) -> String {
        format!("table:{}", self.source)
    }

    fn answer(&mut self, prompt: &str) -> Result<String> {
        self.get(prompt)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("prompt {prompt:?} is not in parent table {}", self.source))
    }
}

/// Answers from an OpenAI-compatible `/chat/completions` endpoint.
pub struct OpenAiParent {
    client: ApiClient,
    model: String,
    system: String,
    cache: Option<JsonlCache>,
}

impl OpenAiParent {
    /// `system` is the task instruction sent as the system message; `cache` (a JSON Lines file) keeps
    /// every answer keyed by (model, system, prompt).
    pub fn new(
        config: ApiConfig,
        model: &str,
        system: &str,
        cache: Option<PathBuf>,
    ) -> Result<OpenAiParent> {
        let cache = cache.map(JsonlCache::open).transpose()?;
        Ok(OpenAiParent {
            client: ApiClient::new(config)?,
            model: model.to_string(),
            system: system.to_string(),
            cache,
        })
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> usize {
        self.client.requests_sent()
    }

    fn ask(&self, prompt: &str) -> Result<String> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": self.system},
                {"role": "user", "content": prompt},
            ],
        });
        let resp = self.client.post_json("chat/completions", &body)?;
        match resp.pointer("/choices/0/message/content") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) => Ok(String::new()),
            _ => bail!(
                "{} answered without choices[0].message.content: {}",
                self.client.url("chat/completions"),
                resp.to_string().chars().take(300).collect::<String>()
            ),
        }
    }
}

impl Parent for OpenAiParent {
    fn name(&self) -> String {
        format!("openai:{}@{}", self.model, self.client.config().base_url)
    }

    fn answer(&mut self, prompt: &str) -> Result<String> {
        let key = ["chat", self.model.as_str(), self.system.as_str(), prompt];
        // The raw reply is cached, so the parsing below can change without asking again.
        if let Some(raw) = self.cache.as_ref().and_then(|c| c.get::<String>(&key)) {
            return Ok(parse_output(&raw));
        }
        let raw = self.ask(prompt)?;
        if let Some(c) = self.cache.as_mut() {
            c.put(&key, &raw)?;
        }
        Ok(parse_output(&raw))
    }
}

/// Where `parent_by_spec` finds what a parent needs beyond its spec.
#[derive(Clone, Debug)]
pub struct ParentOptions {
    /// The OpenAI-compatible server for `openai`.
    pub api: ApiConfig,
    /// Cache file for `openai` answers; `None` keeps no cache.
    pub cache: Option<PathBuf>,
    /// Few-shot examples in the `local` parent's prompt.
    pub shots: usize,
    /// Longest `local` answer, in tokens.
    pub max_new_tokens: usize,
    /// Where the `local` parent's model runs: the backend of the device the command opened.
    pub generators: Option<std::sync::Arc<dyn crate::reward::local_parent::Generators>>,
}

impl Default for ParentOptions {
    fn default() -> Self {
        ParentOptions {
            api: ApiConfig::default(),
            cache: None,
            shots: 3,
            max_new_tokens: 16,
            generators: None,
        }
    }
}

/// The parent kinds `parent_by_spec` accepts.
pub const PARENT_SPECS: [&str; 4] = ["table", "table:FILE", "openai[:MODEL]", "local:MODEL"];

/// The model an `openai` parent asks when the spec names none, as in the paper.
pub const DEFAULT_CHAT_MODEL: &str = "gpt-4o-mini";

/// Builds a parent for `task` from a spec: `table` (the task's shipped table), `table:FILE`,
/// `openai` or `openai:MODEL` (told the task by its instruction), `local:MODEL` (a GPT-2 folder,
/// hub name or `random:<config>`, few-shot from the task's training pairs).
pub fn parent_by_spec(
    spec: &str,
    task: &crate::tasks::Task,
    opts: &ParentOptions,
) -> Result<Box<dyn Parent>> {
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (spec, None),
    };
    match (kind, arg) {
        ("table", None) => Ok(Box::new(TableParent::for_task(task))),
        ("table", Some(path)) => Ok(Box::new(TableParent::open(path)?)),
        ("openai", model) => Ok(Box::new(OpenAiParent::new(
            opts.api.clone(),
            model.unwrap_or(DEFAULT_CHAT_MODEL),
            &task.system_message(),
            opts.cache.clone(),
        )?)),
        ("local", Some(model)) => Ok(Box::new(crate::reward::local_parent::LocalParent::load(
            model,
            opts.generators
                .as_deref()
                .context("the local parent was given no backend to run its model on")?,
            &task.few_shot(opts.shots),
            opts.max_new_tokens,
        )?)),
        _ => bail!(
            "unknown parent {spec:?}: valid parents are {}",
            PARENT_SPECS.join(", ")
        ),
    }
}

/// The answer in a parent's reply, following docs/METHOD.md: the `OUTPUT` field of the JSON object;
/// else the `"OUTPUT": "..."` value pulled out of text that is not valid JSON; else the raw text.
/// Code fences around the JSON are ignored. The result is trimmed.
pub fn parse_output(reply: &str) -> String {
    let text = strip_fences(reply.trim());
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
        let field = map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("output"))
            .map(|(_, v)| v);
        match field {
            Some(Value::String(s)) => return s.trim().to_string(),
            Some(Value::Null) | None => {}
            Some(other) => return other.to_string(),
        }
    }
    if let Some(s) = pull_output(text) {
        return s.trim().to_string();
    }
    reply.trim().to_string()
}

fn strip_fences(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    // Drop the language tag line (```json) and the closing fence.
    let rest = match rest.find('\n') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    rest.trim_end().strip_suffix("```").unwrap_or(rest).trim()
}

/// Finds `"OUTPUT"` followed by `:` and a double-quoted string, and returns the string with JSON
/// escapes undone; an unterminated string runs to the end of the text.
fn pull_output(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("\"output\"") {
        let after = from + i + "\"output\"".len();
        from = after;
        let rest = text[after..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('"') else {
            continue;
        };
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        if let Some(ch) =
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            out.push(ch);
                        }
                    }
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_protocol_and_its_fallbacks() {
        assert_eq!(parse_output(r#"{"OUTPUT": "purple"}"#), "purple");
        assert_eq!(
            parse_output("```json\n{\"OUTPUT\": \" Cold \"}\n```"),
            "Cold"
        );
        // Not JSON (a trailing comma, a missing brace): the value is pulled out of the text.
        assert_eq!(parse_output(r#"{"OUTPUT": "fruit",}"#), "fruit");
        assert_eq!(
            parse_output(r#"Sure! {"OUTPUT": "say \"hi\"\u0021"#),
            "say \"hi\"!"
        );
        // Neither: the raw text.
        assert_eq!(parse_output("  green \n"), "green");
        assert_eq!(parse_output(r#"{"answer": "x"}"#), r#"{"answer": "x"}"#);
        assert_eq!(parse_output(""), "");
    }
}
