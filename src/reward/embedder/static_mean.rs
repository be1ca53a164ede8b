//! A fast lexical embedder: the mean of a sentence encoder's input word-piece embeddings, with no
//! transformer layers. [CLS]/[SEP] are left out (they are the same in every text and would pull
//! all vectors together), so a text with no word pieces gives a zero vector.

use crate::model::bert::{BertTensors, load_config, load_tokenizer, weights_file};
use crate::reward::Embedder;
use anyhow::{Context, Result, anyhow};
use std::path::Path;
use tokenizers::Tokenizer;

pub struct StaticMean {
    tokenizer: Tokenizer,
    do_lower_case: bool,
    /// (V, C)
    word_emb: Vec<f32>,
    dim: usize,
    name: String,
}

impl StaticMean {
    /// Reads only the tokenizer and the word-embedding table of a sentence-transformers folder.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let load = || -> Result<Self> {
            let config = load_config(dir)?;
            let sentence = crate::model::bert::SentenceConfig::load(dir, &config)?;
            let file = weights_file(dir)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let tensors = BertTensors::new(&file, &bytes)?;
            let word_emb = tensors.get(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, config.hidden_size],
            )?;
            Ok(StaticMean {
                tokenizer: load_tokenizer(dir, sentence.max_seq_length)?,
                do_lower_case: sentence.do_lower_case,
                word_emb,
                dim: config.hidden_size,
                name: name.to_string(),
            })
        };
        load().with_context(|| format!("loading static embeddings from {}", dir.display()))
    }
}

impl Embedder for StaticMean {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = if self.do_lower_case {
            let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
            self.tokenizer.encode_batch(lowered, true)
        } else {
            self.tokenizer.encode_batch(texts.to_vec(), true)
        }
        .map_err(|e| anyhow!("tokenising for {}: {e}", self.name))?;
        let c = self.dim;
        let vocab = self.word_emb.len() / c;
        let mut out = Vec::with_capacity(texts.len());
        for e in &encodings {
            let mut v = vec![0.0f32; c];
            let mut count = 0usize;
            for (&id, &special) in e.get_ids().iter().zip(e.get_special_tokens_mask()) {
                let id = id as usize;
                if special != 0 || id >= vocab {
                    continue;
                }
                for (a, b) in v.iter_mut().zip(&self.word_emb[id * c..(id + 1) * c]) {
                    *a += b;
                }
                count += 1;
            }
            if count > 0 {
                for a in v.iter_mut() {
                    *a /= count as f32;
                }
            }
            out.push(v);
        }
        Ok(out)
    }
}
