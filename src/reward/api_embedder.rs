//! An embedder behind an OpenAI-compatible `/embeddings` endpoint (text-embedding-3-large in the
//! paper's sentence tasks).
//!
//! Texts are stripped and lower-cased before they are sent, as in the paper's code; an empty text
//! is the zero vector without a request. Vectors are cached on disk keyed by (model, text). Unlike
//! the paper's code, a text that still fails after the last retry is an error, not a zero vector: a
//! silent zero would read as a real, low reward.

use crate::reward::Embedder;
use crate::reward::cache::JsonlCache;
use crate::reward::http::{ApiClient, ApiConfig};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The paper's sentence embedder, the default model.
pub const DEFAULT_MODEL: &str = "text-embedding-3-large";

/// The cache file's name inside a cache folder.
pub const CACHE_FILE: &str = "api-embeddings.jsonl";

/// Texts per request; the OpenAI endpoint takes up to 2048 inputs.
const BATCH: usize = 256;

pub struct ApiEmbedder {
    client: ApiClient,
    model: String,
    dim: usize,
    cache: Mutex<Option<JsonlCache>>,
}

impl ApiEmbedder {
    /// `dim`: the vector length the model gives. When `None`, one probe text is embedded (through
    /// the cache) to learn it.
    pub fn new(
        config: ApiConfig,
        model: &str,
        dim: Option<usize>,
        cache: Option<PathBuf>,
    ) -> Result<ApiEmbedder> {
        let cache = cache.map(JsonlCache::open).transpose()?;
        let mut e = ApiEmbedder {
            client: ApiClient::new(config)?,
            model: model.to_string(),
            dim: dim.unwrap_or(0),
            cache: Mutex::new(cache),
        };
        if dim.is_none() {
            let v = e.fetch(&["dimension probe"])?;
            e.dim = v[0].len();
        }
        Ok(e)
    }

    /// Builds from optional settings as a run config or the command line gives them: the default
    /// base URL, model (`DEFAULT_MODEL`) and key variable where absent, the cache in
    /// `cache_dir/CACHE_FILE` when a folder is given.
    pub fn from_options(
        base_url: Option<&str>,
        model: Option<&str>,
        api_key_env: Option<&str>,
        cache_dir: Option<&Path>,
    ) -> Result<ApiEmbedder> {
        let mut config = ApiConfig::default();
        if let Some(b) = base_url {
            config.base_url = b.to_string();
        }
        if let Some(k) = api_key_env {
            config.api_key_env = k.to_string();
        }
        ApiEmbedder::new(
            config,
            model.unwrap_or(DEFAULT_MODEL),
            None,
            cache_dir.map(|d| d.join(CACHE_FILE)),
        )
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> usize {
        self.client.requests_sent()
    }

    /// Vectors for already-normalised, non-empty texts: from the cache, else from the endpoint.
    fn fetch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut guard = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Option<Vec<f32>>> = texts
            .iter()
            .map(|t| {
                guard
                    .as_ref()
                    .and_then(|c| c.get::<Vec<f32>>(&["embedding", &self.model, t]))
            })
            .collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        for chunk in missing.chunks(BATCH) {
            let inputs: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self
                .request(&inputs)
                .context("embedding texts through the API (no zero vectors are substituted)")?;
            for (&i, v) in chunk.iter().zip(vectors) {
                if let Some(c) = guard.as_mut() {
                    c.put(&["embedding", &self.model, texts[i]], &v)?;
                }
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(|v| v.expect("filled above")).collect())
    }

    fn request(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        let url = self.client.url("embeddings");
        let body = json!({"model": self.model, "input": inputs});
        let resp = self.client.post_json("embeddings", &body)?;
        let Some(Value::Array(data)) = resp.get("data") else {
            bail!("{url} answered without a `data` list");
        };
        if data.len() != inputs.len() {
            bail!(
                "{url} returned {} vectors for {} texts",
                data.len(),
                inputs.len()
            );
        }
        let mut out = vec![Vec::new(); inputs.len()];
        for (pos, item) in data.iter().enumerate() {
            // Entries carry their input index; fall back to list order when it is absent.
            let idx = item
                .get("index")
                .and_then(Value::as_u64)
                .map(|i| i as usize)
                .unwrap_or(pos);
            let v: Vec<f32> = item
                .get("embedding")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .ok()
                .flatten()
                .with_context(|| format!("{url}: data[{pos}] has no numeric `embedding` list"))?;
            if idx >= out.len() || !out[idx].is_empty() {
                bail!("{url}: data[{pos}] has a bad or repeated index {idx}");
            }
            if v.is_empty() || (self.dim != 0 && v.len() != self.dim) {
                bail!(
                    "{url}: a vector of length {} where {} was expected",
                    v.len(),
                    self.dim
                );
            }
            if v.iter().any(|x| !x.is_finite()) {
                bail!("{url}: data[{pos}] holds a non-finite number");
            }
            out[idx] = v;
        }
        Ok(out)
    }
}

/// The text as the paper's code sends it: stripped and lower-cased.
pub fn normalise(text: &str) -> String {
    text.trim().to_lowercase()
}

impl Embedder for ApiEmbedder {
    fn name(&self) -> String {
        format!("api:{}", self.model)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let norm: Vec<String> = texts.iter().map(|t| normalise(t)).collect();
        let mut unique: Vec<&str> = norm
            .iter()
            .map(String::as_str)
            .filter(|t| !t.is_empty())
            .collect();
        unique.sort_unstable();
        unique.dedup();
        let vectors = self.fetch(&unique)?;
        Ok(norm
            .iter()
            .map(|t| match unique.binary_search(&t.as_str()) {
                Ok(i) => vectors[i].clone(),
                Err(_) => vec![0.0; self.dim],
            })
            .collect())
    }
}
