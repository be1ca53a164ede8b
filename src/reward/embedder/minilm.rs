//! The sentence encoder as an embedder: any BERT folder in the `sentence-transformers` layout,
//! all-MiniLM-L6-v2 by default. Texts are tokenised in one call, packed without padding into
//! batches of bounded size, run through the encoder (the CPU's, or a device's), pooled and
//! normalised as the folder says.
//! An empty text is encoded as [CLS] [SEP], as `sentence-transformers` does, so it has a vector
//! like any other text (not the zero vector).

use crate::cpu::bert::{EncoderInput, bert_forward, sentence_pool_forward};
use crate::cuda::bert::DeviceEncoder;
use crate::cuda::device::Gpu;
use crate::model::bert::SentenceModel;
use crate::reward::Embedder;
use anyhow::{Result, anyhow};
use std::collections::HashMap;
use std::path::Path;

/// Most rows (word pieces) per forward pass: bounds the scratch memory of long inputs while
/// keeping the matrix products large enough to use every core.
const MAX_ROWS_PER_PASS: usize = 4096;

/// Word-piece ids and token type ids of one text, with [CLS]/[SEP] and truncation applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

pub struct SentenceEncoder {
    model: SentenceModel,
    name: String,
    dedup: bool,
    /// The encoder on a device, when one was given; else the CPU reference runs.
    device: Option<DeviceEncoder>,
}

/// The default sentence encoder, all-MiniLM-L6-v2, is a `SentenceEncoder` on its folder.
pub type MiniLm = SentenceEncoder;

impl SentenceEncoder {
    /// Loads a sentence-transformers BERT folder; `name` is what logs and run configs show.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        Ok(SentenceEncoder {
            model: SentenceModel::load(dir)?,
            name: name.to_string(),
            dedup: true,
            device: None,
        })
    }

    /// Runs the encoder on `gpu` (a CUDA device or the emulated one) from now on: the weights
    /// are copied there once.
    pub fn on_device(mut self, gpu: Gpu) -> Result<Self> {
        self.device = Some(DeviceEncoder::new(gpu, &self.model)?);
        Ok(self)
    }

    /// The device the encoder runs on, if not the CPU.
    pub fn device_name(&self) -> Option<&str> {
        self.device.as_ref().map(|d| d.device_name())
    }

    /// all-MiniLM-L6-v2, found or fetched by the asset code.
    pub fn minilm() -> Result<Self> {
        let dir = crate::assets::resolve_dir(super::MINILM_ASSET)?;
        Self::load(&dir, "minilm")
    }

    /// Whether `embed` runs each distinct text of a call once (the default). Rewards repeat
    /// texts a lot (one parent answer per prompt, short child answers); switching this off only
    /// serves measurements of the encoder itself.
    pub fn with_dedup(mut self, dedup: bool) -> Self {
        self.dedup = dedup;
        self
    }

    pub fn model(&self) -> &SentenceModel {
        &self.model
    }

    /// Tokenises as `sentence-transformers` does: optional lower-casing, the tokenizer's own
    /// normaliser, [CLS] ... [SEP], truncation at `max_seq_length`.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        let encodings = if self.model.sentence.do_lower_case {
            let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
            self.model.tokenizer.encode_batch(lowered, true)
        } else {
            self.model.tokenizer.encode_batch(texts.to_vec(), true)
        }
        .map_err(|e| anyhow!("tokenising with {}: {e}", self.model.dir.display()))?;
        Ok(encodings
            .into_iter()
            .map(|e| Encoded {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }

    /// Pooled (and normalised, if the folder says so) vectors of already tokenised texts.
    pub fn embed_encoded(&self, encoded: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        let c = self.model.config.hidden_size;
        let mut vectors = Vec::with_capacity(encoded.len());
        let mut i = 0;
        while i < encoded.len() {
            let mut input = EncoderInput::new();
            while i < encoded.len()
                && (input.rows() == 0 || input.rows() + encoded[i].ids.len() <= MAX_ROWS_PER_PASS)
            {
                input.push(&encoded[i].ids, &encoded[i].type_ids);
                i += 1;
            }
            let pooled = match &self.device {
                Some(d) => d.pooled(&input)?,
                None => {
                    let hidden = bert_forward(&self.model.config, &self.model.weights, &input)?;
                    let mut pooled = vec![0.0f32; input.batch() * c];
                    sentence_pool_forward(
                        &mut pooled,
                        &hidden,
                        &input,
                        c,
                        self.model.sentence.pooling,
                        self.model.sentence.normalize,
                    );
                    pooled
                }
            };
            vectors.extend(pooled.chunks_exact(c).map(|v| v.to_vec()));
        }
        Ok(vectors)
    }
}

impl Embedder for SentenceEncoder {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn dim(&self) -> usize {
        self.model.config.hidden_size
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if !self.dedup {
            return self.embed_encoded(&self.tokenize(texts)?);
        }
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
        let mut distinct: Vec<&str> = Vec::with_capacity(texts.len());
        let slot: Vec<usize> = texts
            .iter()
            .map(|&t| {
                *first.entry(t).or_insert_with(|| {
                    distinct.push(t);
                    distinct.len() - 1
                })
            })
            .collect();
        let vectors = self.embed_encoded(&self.tokenize(&distinct)?)?;
        if distinct.len() == texts.len() {
            return Ok(vectors);
        }
        Ok(slot.into_iter().map(|k| vectors[k].clone()).collect())
    }
}
