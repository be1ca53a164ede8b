//! Tokenizers through the `tokenizers` crate: any `tokenizer.json`, and GPT-2's byte-level BPE built
//! from the original `encoder.json` + `vocab.bpe` pair (the same contents as Hugging Face's
//! `vocab.json` + `merges.txt`).

use crate::model::io::write_atomic;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

/// GPT-2's one special token: end of text, which also serves as padding.
pub const GPT2_EOS: &str = "<|endoftext|>";

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
    /// line, ranked by line order, after a `#version` header).
    pub fn from_gpt2_bpe(encoder_json: &Path, vocab_bpe: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(encoder_json)
            .with_context(|| format!("cannot read {}", encoder_json.display()))?;
        let map: HashMap<String, u32> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected a JSON object of token -> id",
                encoder_json.display()
            )
        })?;
        let merges_text = std::fs::read_to_string(vocab_bpe)
            .with_context(|| format!("cannot read {}", vocab_bpe.display()))?;
        let mut merges: Merges = Vec::new();
        for (i, line) in merges_text.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                    for t in [a, b] {
                        if !map.contains_key(t) {
                            bail!(
                                "{} line {}: token '{t}' is not in {}",
                                vocab_bpe.display(),
                                i + 1,
                                encoder_json.display()
                            );
                        }
                    }
                    merges.push((a.to_string(), b.to_string()));
                }
                _ => bail!(
                    "{} line {}: expected two tokens separated by one space, found '{line}'",
                    vocab_bpe.display(),
                    i + 1
                ),
            }
        }
        let eos_id = *map.get(GPT2_EOS).ok_or_else(|| {
            anyhow!(
                "{} has no '{GPT2_EOS}' token: not GPT-2's encoder",
                encoder_json.display()
            )
        })?;
        let vocab: Vocab = map.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("cannot build the BPE model: {e}"))?;
        let mut inner = HfTokenizer::new(bpe);
        // The same settings as Hugging Face's own gpt2 tokenizer.json: no prefix space is added
        // when pre-tokenizing, so a text round-trips byte for byte.
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.with_post_processor(Some(ByteLevel::new(true, false, true)));
        inner.add_special_tokens(&[AddedToken::from(GPT2_EOS, true)]);
        let t = Self::wrap(inner);
        if t.inner.token_to_id(GPT2_EOS) != Some(eos_id) {
            bail!("'{GPT2_EOS}' did not keep its id {eos_id}");
        }
        Ok(t)
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
