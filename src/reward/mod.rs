//! Everything that turns (prompt, child answer) into a reward, independent of the policy:
//! embedders, shaping, parents.

pub mod embedder;

/// Maps texts to vectors. Implementations: the sentence encoder (MiniLM), word vectors, the static
/// token-embedding mean, and an OpenAI-compatible API.
pub trait Embedder {
    /// Name shown in logs and run configs.
    fn name(&self) -> String;
    /// Length of every vector `embed` returns.
    fn dim(&self) -> usize;
    /// One vector per text, in order. A text with nothing to embed gives a zero vector.
    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>>;
}

pub mod api_embedder;
pub mod cache;
pub mod http;
pub mod local_parent;
pub mod parent;
pub mod shaping;

/// `embedder.embed(texts)`, checked to give one vector per text.
pub fn embed_texts(embedder: &dyn Embedder, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    let v = embedder.embed(texts)?;
    if v.len() != texts.len() {
        anyhow::bail!(
            "embedder {} returned {} vectors for {} texts",
            embedder.name(),
            v.len(),
            texts.len()
        );
    }
    Ok(v)
}
