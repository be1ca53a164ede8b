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

    /// The rewards of (parent, child) answer pairs under an embedding shaping, computed by the
    /// embedder itself where it can do better than `embed` and host shaping (the sentence encoder
    /// on a device shapes there, and only the rewards come back). `None` means "not here": the
    /// caller embeds both sides and shapes on the host. Same lengths, as `shaping::rewards` checks.
    fn shaped_rewards(
        &self,
        _shaping: shaping::Shaping,
        _power: f32,
        _parents: &[&str],
        _children: &[&str],
    ) -> Option<anyhow::Result<Vec<f32>>> {
        None
    }
}

/// Where the reference answer for a prompt comes from: a table, an API model, a local model
/// (`parent`, `local_parent`).
pub trait Parent {
    /// Name shown in logs and run configs.
    fn name(&self) -> String;
    /// The reference answer for one prompt.
    fn answer(&mut self, prompt: &str) -> anyhow::Result<String>;
    /// Reference answers for several prompts, in order.
    fn answers(&mut self, prompts: &[&str]) -> anyhow::Result<Vec<String>> {
        prompts.iter().map(|p| self.answer(p)).collect()
    }
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
