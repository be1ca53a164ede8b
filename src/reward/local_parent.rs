//! The `local` parent: a model of either family, greedy, behind a few-shot prompt made of the
//! task's own (prompt, answer) pairs. It generates through the interface the trainer's policy
//! generates through (`sample::Generator`), on whatever backend the run's assembly gives it. It
//! needs no network, so a run with it can be repeated offline; how good its answers are depends
//! entirely on the checkpoint.

use crate::model::spec::{Model, load_model};
use crate::model::tokenizer::Tokenizer;
use crate::reward::Parent;
use crate::rng::Rng;
use crate::sample::{Generator, SamplingParams};
use crate::tasks::Example;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;

/// Where a backend runs a model for a local parent: a `Generator` of it, ending answers at `eos`.
pub trait Generators: Send + Sync + std::fmt::Debug {
    fn generator(&self, model: Model, eos: u32) -> Result<Box<dyn Generator>>;
}

pub struct LocalParent {
    generator: Box<dyn Generator>,
    tokenizer: Tokenizer,
    source: String,
    prefix: String,
    max_new_tokens: usize,
    eos: u32,
    answers: HashMap<String, String>,
}

/// A prompt followed by where its answer starts: prompts that end in a space (`... is `) run
/// straight into the answer, the others get one space.
fn lead_in(prompt: &str) -> String {
    if prompt.ends_with(char::is_whitespace) {
        prompt.to_string()
    } else {
        format!("{prompt} ")
    }
}

impl LocalParent {
    /// `model` on `backend`; `shots` become the few-shot prefix, one `prompt answer` line each;
    /// answers are cut at the first newline and trimmed.
    pub fn new(
        model: Model,
        backend: &dyn Generators,
        tokenizer: Tokenizer,
        source: &str,
        shots: &[Example<'_>],
        max_new_tokens: usize,
    ) -> Result<LocalParent> {
        if max_new_tokens == 0 {
            bail!("the local parent needs max_new_tokens >= 1");
        }
        let eos = tokenizer
            .eos_id()
            .context("the local parent's tokenizer has no end-of-text token")?;
        let generator = backend.generator(model, eos)?;
        let prefix: String = shots
            .iter()
            .map(|s| format!("{}{}\n", lead_in(s.prompt), s.answer))
            .collect();
        Ok(LocalParent {
            generator,
            tokenizer,
            source: source.to_string(),
            prefix,
            max_new_tokens,
            eos,
            answers: HashMap::new(),
        })
    }

    /// Loads `spec` as `--model` accepts it (a folder, a hub name, `random:<config>[:seed]`, a
    /// Llama-family child) to run on `backend`.
    pub fn load(
        spec: &str,
        backend: &dyn Generators,
        shots: &[Example<'_>],
        max_new_tokens: usize,
    ) -> Result<LocalParent> {
        let loaded =
            load_model(spec).with_context(|| format!("loading the local parent {spec}"))?;
        LocalParent::new(
            loaded.model,
            backend,
            loaded.tokenizer,
            spec,
            shots,
            max_new_tokens,
        )
    }

    /// The full text the model continues for `prompt`.
    pub fn query(&self, prompt: &str) -> String {
        format!("{}{}", self.prefix, lead_in(prompt))
    }

    fn text_of(&self, tokens: &[u32]) -> Result<String> {
        let body: Vec<u32> = tokens
            .iter()
            .copied()
            .take_while(|&t| t != self.eos)
            .collect();
        let text = self.tokenizer.decode(&body)?;
        Ok(text.split('\n').next().unwrap_or("").trim().to_string())
    }
}

impl Parent for LocalParent {
    fn name(&self) -> String {
        format!("local:{}", self.source)
    }

    fn answer(&mut self, prompt: &str) -> Result<String> {
        Ok(self.answers(&[prompt])?.remove(0))
    }

    /// All prompts not seen before go through the decoder as one batch.
    fn answers(&mut self, prompts: &[&str]) -> Result<Vec<String>> {
        let mut pending: Vec<&str> = prompts
            .iter()
            .copied()
            .filter(|p| !self.answers.contains_key(*p))
            .collect();
        pending.sort_unstable();
        pending.dedup();
        if !pending.is_empty() {
            let ids = pending
                .iter()
                .map(|p| self.tokenizer.encode(&self.query(p)))
                .collect::<Result<Vec<_>>>()?;
            let params = SamplingParams::greedy(self.max_new_tokens);
            // Greedy decoding draws nothing; the generator only needs a stream to hold.
            let gens = self.generator.generate(&ids, &params, &mut Rng::new(0))?;
            for (p, g) in pending.iter().zip(gens) {
                let text = self.text_of(&g.tokens)?;
                self.answers.insert(p.to_string(), text);
            }
        }
        Ok(prompts.iter().map(|p| self.answers[*p].clone()).collect())
    }
}
