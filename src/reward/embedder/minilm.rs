//! The sentence encoder as an embedder: any BERT folder in the `sentence-transformers` layout,
//! all-MiniLM-L6-v2 by default. Texts are tokenised in one call, packed without padding into
//! batches of bounded size, run through the encoder's passes (`EncoderPasses`: a backend's BERT,
//! the CPU's or a device's), pooled and normalised as the folder says.
//! An empty text is encoded as [CLS] [SEP], as `sentence-transformers` does, so it has a vector
//! like any other text (not the zero vector).
//!
//! On a device the encoder also answers `Embedder::shaped_rewards`: each distinct child answer is
//! encoded once and every pair shaped in the same device pass by the fused kernel against its
//! parent's unit vector; those are kept by text across calls (a parent answer repeats on every
//! update of a run).

use super::vector_cache::VectorCache;
use crate::batch::EncoderInput;
use crate::model::bert::SentenceModel;
use crate::reward::Embedder;
use crate::reward::shaping::Shaping;
use anyhow::{Result, anyhow, ensure};
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most rows (word pieces) per forward pass: bounds the scratch memory of long inputs while
/// keeping the matrix products large enough to use every core.
const MAX_ROWS_PER_PASS: usize = 4096;

/// Most parent vectors the device reward keeps (1.5 KiB each for MiniLM): far more than the
/// distinct parent answers of a task's prompts.
pub const PARENT_CACHE_ENTRIES: usize = 4096;

/// A sentence encoder's passes on a backend: the BERT stack over packed sequences, pooled.
pub trait EncoderPasses: Send + Sync {
    /// Vectors (B, C) of the packed sequences of `input`, pooled (and normalised) as `model`
    /// says.
    fn pooled(&self, model: &SentenceModel, input: &EncoderInput) -> Result<Vec<f32>>;
    /// Whether `rewards` shapes pairs under `shaping` where the passes run (a device does, in
    /// one fused kernel; then only the rewards come back).
    fn fuses(&self, _shaping: Shaping) -> bool {
        false
    }
    /// Rewards (P) of answer pairs: pair k is the packed sequence `answer[k]` of `input` against
    /// the unit vector `against[k]` (P, C), shaped by `shaping` with `power`. Called only where
    /// `fuses` says so.
    fn rewards(
        &self,
        _input: &EncoderInput,
        _answer: &[usize],
        _against: &[f32],
        shaping: Shaping,
        _power: f32,
    ) -> Result<Vec<f32>> {
        anyhow::bail!("these encoder passes do not shape {shaping:?} rewards")
    }
    /// The device the passes run on; `None` for the CPU.
    fn device_name(&self) -> Option<String>;
}

/// Where a backend runs a loaded encoder: it makes the passes (a device copies the weights there
/// once). The run's assembly gives one to the embedders it builds.
pub trait EncoderBackend: Send + Sync + std::fmt::Debug {
    fn passes(&self, model: &SentenceModel) -> Result<Box<dyn EncoderPasses>>;
}

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
    /// Most rows per forward pass, `MAX_ROWS_PER_PASS` unless set.
    rows_per_pass: usize,
    /// Where the passes run.
    passes: Box<dyn EncoderPasses>,
    /// Unit vectors of parent answers by text, for the device reward (`&self` calls share it).
    parent_vectors: Mutex<VectorCache>,
    /// Word pieces put through the encoder so far, every pass counted.
    rows_encoded: AtomicUsize,
}

/// The default sentence encoder, all-MiniLM-L6-v2, is a `SentenceEncoder` on its folder.
pub type MiniLm = SentenceEncoder;

impl SentenceEncoder {
    /// Loads a sentence-transformers BERT folder to run on `backend`; `name` is what logs and run
    /// configs show.
    pub fn load(dir: &Path, name: &str, backend: &dyn EncoderBackend) -> Result<Self> {
        let model = SentenceModel::load(dir)?;
        let passes = backend.passes(&model)?;
        Ok(SentenceEncoder {
            model,
            name: name.to_string(),
            dedup: true,
            rows_per_pass: MAX_ROWS_PER_PASS,
            passes,
            parent_vectors: Mutex::new(VectorCache::new(PARENT_CACHE_ENTRIES)),
            rows_encoded: AtomicUsize::new(0),
        })
    }

    /// The device the encoder runs on, if not the CPU.
    pub fn device_name(&self) -> Option<String> {
        self.passes.device_name()
    }

    /// all-MiniLM-L6-v2, found or fetched by the asset code, on `backend`.
    pub fn minilm(backend: &dyn EncoderBackend) -> Result<Self> {
        let dir = crate::assets::resolve_dir(super::MINILM_ASSET)?;
        Self::load(&dir, "minilm", backend)
    }

    /// Whether `embed` runs each distinct text of a call once (the default). Rewards repeat
    /// texts a lot (one parent answer per prompt, short child answers); switching this off only
    /// serves measurements of the encoder itself.
    pub fn with_dedup(mut self, dedup: bool) -> Self {
        self.dedup = dedup;
        self
    }

    /// Packs at most `rows` word pieces into one forward pass (a longer text goes alone); small
    /// values serve tests of texts split over several passes.
    pub fn with_rows_per_pass(mut self, rows: usize) -> Self {
        self.rows_per_pass = rows.max(1);
        self
    }

    /// Keeps at most `entries` parent vectors for the device reward (0: none, every parent is
    /// encoded on every call; serves measurements of the cache).
    pub fn with_parent_cache(mut self, entries: usize) -> Self {
        self.parent_vectors = Mutex::new(VectorCache::new(entries));
        self
    }

    /// Word pieces (encoder rows) put through the encoder since it was loaded.
    pub fn rows_encoded(&self) -> usize {
        self.rows_encoded.load(Ordering::Relaxed)
    }

    /// Parent vectors the device reward holds now.
    pub fn cached_parents(&self) -> usize {
        self.cache().len()
    }

    /// The parent vector cache; a panic elsewhere while it was held leaves only whole entries.
    fn cache(&self) -> std::sync::MutexGuard<'_, VectorCache> {
        self.parent_vectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
            let (input, end) = self.pack(encoded, i);
            i = end;
            let pooled = self.passes.pooled(&self.model, &input)?;
            vectors.extend(pooled.chunks_exact(c).map(|v| v.to_vec()));
        }
        Ok(vectors)
    }

    /// The texts `encoded[from..end]` packed into one pass of at most `rows_per_pass` rows
    /// (a longer text alone), and `end`.
    fn pack(&self, encoded: &[Encoded], from: usize) -> (EncoderInput, usize) {
        let mut input = EncoderInput::new();
        let mut i = from;
        while i < encoded.len()
            && (input.rows() == 0 || input.rows() + encoded[i].ids.len() <= self.rows_per_pass)
        {
            input.push(&encoded[i].ids, &encoded[i].type_ids);
            i += 1;
        }
        self.rows_encoded.fetch_add(input.rows(), Ordering::Relaxed);
        (input, i)
    }

    /// Unit vectors of the distinct texts `parents`: from the cache where there, the rest
    /// encoded in one call and kept.
    fn parent_vectors(&self, parents: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.cache();
        let missing: Vec<&str> = parents
            .iter()
            .copied()
            .filter(|p| cache.get(p).is_none())
            .collect();
        let mut fresh = self.embed_encoded(&self.tokenize(&missing)?)?.into_iter();
        // Read before inserting: the new entries may push out ones this call uses.
        let vectors: Vec<Vec<f32>> = parents
            .iter()
            .map(|p| match cache.get(p) {
                Some(v) => v.to_vec(),
                None => fresh.next().expect("one vector per missing parent"),
            })
            .collect();
        for (p, v) in parents.iter().zip(&vectors) {
            if cache.get(p).is_none() {
                cache.insert(p, v.clone());
            }
        }
        Ok(vectors)
    }

    /// Rewards of the pairs (parents[i], children[i]) shaped where the passes run: each distinct
    /// child encoded once, each pair shaped against its parent's vector (cached across calls).
    fn fused_rewards(
        &self,
        shaping: Shaping,
        power: f32,
        parents: &[&str],
        children: &[&str],
    ) -> Result<Vec<f32>> {
        ensure!(
            parents.len() == children.len(),
            "{} parent answers for {} child answers",
            parents.len(),
            children.len()
        );
        let c = self.dim();
        let (distinct_parents, parent_slot) = distinct(parents.iter().copied());
        let parent_vecs = self.parent_vectors(&distinct_parents)?;
        let (distinct_children, child_slot) = distinct(children.iter().copied());
        let encoded = self.tokenize(&distinct_children)?;
        let mut rewards = vec![0.0f32; parents.len()];
        let mut i = 0;
        while i < encoded.len() {
            let (input, end) = self.pack(&encoded, i);
            // The pairs whose child is in this pass: which of its answers, and (P, C) parents.
            let pairs: Vec<usize> = (0..parents.len())
                .filter(|&k| (i..end).contains(&child_slot[k]))
                .collect();
            let answer: Vec<usize> = pairs.iter().map(|&k| child_slot[k] - i).collect();
            let mut against = Vec::with_capacity(pairs.len() * c);
            for &k in &pairs {
                against.extend_from_slice(&parent_vecs[parent_slot[k]]);
            }
            let r = self
                .passes
                .rewards(&input, &answer, &against, shaping, power)?;
            // The kernel guards its norms, so only a fault upstream makes a reward non-finite:
            // say so rather than train on it.
            for (&k, r) in pairs.iter().zip(r) {
                ensure!(
                    r.is_finite(),
                    "the device reward of {:?} against {:?} is {r}",
                    children[k],
                    parents[k]
                );
                rewards[k] = r;
            }
            i = end;
        }
        Ok(rewards)
    }
}

/// The distinct items in order of first appearance, and each item's index among them.
fn distinct<T: Copy + Eq + Hash>(items: impl Iterator<Item = T>) -> (Vec<T>, Vec<usize>) {
    let mut first: HashMap<T, usize> = HashMap::new();
    let mut kept: Vec<T> = Vec::new();
    let slot = items
        .map(|t| {
            *first.entry(t).or_insert_with(|| {
                kept.push(t);
                kept.len() - 1
            })
        })
        .collect();
    (kept, slot)
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
        let (distinct, slot) = distinct(texts.iter().copied());
        let vectors = self.embed_encoded(&self.tokenize(&distinct)?)?;
        if distinct.len() == texts.len() {
            return Ok(vectors);
        }
        Ok(slot.into_iter().map(|k| vectors[k].clone()).collect())
    }

    /// Where the passes fuse the shaping (a device, for an embedding shaping): the fused reward.
    /// Else `None`, and the caller embeds and shapes on the host.
    fn shaped_rewards(
        &self,
        shaping: Shaping,
        power: f32,
        parents: &[&str],
        children: &[&str],
    ) -> Option<Result<Vec<f32>>> {
        if !self.passes.fuses(shaping) {
            return None;
        }
        Some(self.fused_rewards(shaping, power, parents, children))
    }
}
