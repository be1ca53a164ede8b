//! Shaping: how the similarity of the parent's and the child's answers becomes a scalar reward.
//!
//! `pgsrm` is the formula the paper's runs used, `truncate` the one its text states, `euclidean` a
//! variant present in the reference code, `binary` the exact-match baseline. Every function gives a
//! finite reward for every input: zero vectors, empty strings and non-finite components included.

use anyhow::{Result, bail};

/// The default sharpening exponent, as in the paper's runs.
pub const DEFAULT_POWER: f32 = 4.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shaping {
    /// `((cos + 1) / 2)^p`, clamped to [0, 1].
    Pgsrm,
    /// `max(0, cos)^p`.
    Truncate,
    /// `1 - ||a/|a| - b/|b|||`, clamped to [-1, 1].
    Euclidean,
    /// 1 when the texts match after strip + lower-case, else 0.
    Binary,
}

impl Shaping {
    pub const ALL: [Shaping; 4] = [
        Shaping::Pgsrm,
        Shaping::Truncate,
        Shaping::Euclidean,
        Shaping::Binary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shaping::Pgsrm => "pgsrm",
            Shaping::Truncate => "truncate",
            Shaping::Euclidean => "euclidean",
            Shaping::Binary => "binary",
        }
    }

    /// Parses a name as given on the command line or in a run config.
    pub fn from_name(name: &str) -> Result<Shaping> {
        let wanted = name.trim().to_ascii_lowercase();
        for s in Shaping::ALL {
            if s.name() == wanted {
                return Ok(s);
            }
        }
        let valid: Vec<&str> = Shaping::ALL.iter().map(|s| s.name()).collect();
        bail!(
            "unknown shaping {name:?}: valid shapings are {}",
            valid.join(", ")
        )
    }

    /// Whether the reward depends on embeddings (all but `binary`), so callers can skip the embedder.
    pub fn needs_embeddings(self) -> bool {
        self != Shaping::Binary
    }

    /// Whether `power` changes the reward.
    pub fn uses_power(self) -> bool {
        matches!(self, Shaping::Pgsrm | Shaping::Truncate)
    }

    /// The reward for one pair. `parent_vec`/`child_vec` are ignored by `binary`, the texts by all
    /// the others, so a caller without embeddings may pass empty slices for `binary`.
    pub fn reward(
        self,
        power: f32,
        parent_text: &str,
        child_text: &str,
        parent_vec: &[f32],
        child_vec: &[f32],
    ) -> f32 {
        match self {
            Shaping::Pgsrm => pgsrm(cosine(parent_vec, child_vec), power),
            Shaping::Truncate => truncate(cosine(parent_vec, child_vec), power),
            Shaping::Euclidean => euclidean(parent_vec, child_vec),
            Shaping::Binary => binary(parent_text, child_text),
        }
    }
}

impl std::fmt::Display for Shaping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Shaping {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Shaping::from_name(s)
    }
}

/// Cosine similarity in f64, so long vectors of small components lose nothing. A zero vector, a
/// length mismatch or a non-finite component has no direction, and gives 0 (docs/METHOD.md: a zero vector
/// gives cos = 0).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    let c = dot / (na.sqrt() * nb.sqrt());
    if !c.is_finite() {
        return 0.0;
    }
    // Rounding can push |c| a hair past 1.
    c.clamp(-1.0, 1.0) as f32
}

/// `((cos + 1) / 2)^p`, clamped to [0, 1]: the shaping of the paper's runs.
pub fn pgsrm(cos: f32, power: f32) -> f32 {
    let base = ((cos as f64 + 1.0) / 2.0).clamp(0.0, 1.0);
    finite_or_zero(base.powf(power as f64).clamp(0.0, 1.0))
}

/// `max(0, cos)^p`: the shaping as the paper's text states it.
pub fn truncate(cos: f32, power: f32) -> f32 {
    let base = (cos as f64).clamp(0.0, 1.0);
    finite_or_zero(base.powf(power as f64).clamp(0.0, 1.0))
}

/// `1 - ||a/|a| - b/|b|||`, clamped to [-1, 1]. A zero vector stays zero when normalised, so a zero
/// vector against a unit vector gives 0 and two zero vectors give 1.
pub fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return -1.0;
    }
    let norm = |v: &[f32]| {
        let n = v
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        if n.is_finite() && n > 0.0 {
            1.0 / n
        } else {
            0.0
        }
    };
    let (sa, sb) = (norm(a), norm(b));
    let mut d2 = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x as f64 * sa - y as f64 * sb;
        d2 += d * d;
    }
    finite_or_zero((1.0 - d2.sqrt()).clamp(-1.0, 1.0))
}

/// 1 when the texts are equal after stripping surrounding white space and lower-casing, else 0.
/// Two empty texts match.
pub fn binary(parent: &str, child: &str) -> f32 {
    if parent.trim().to_lowercase() == child.trim().to_lowercase() {
        1.0
    } else {
        0.0
    }
}

fn finite_or_zero(x: f64) -> f32 {
    if x.is_finite() { x as f32 } else { 0.0 }
}

/// Rewards for a batch of (parent, child) answers: by the embedder's own `shaped_rewards` where it
/// answers, else both sides embedded in one call, then shaped on the host.
/// `embedder` may be `None` only for `binary`.
pub fn rewards(
    embedder: Option<&dyn crate::reward::Embedder>,
    shaping: Shaping,
    power: f32,
    parents: &[&str],
    children: &[&str],
) -> Result<Vec<f32>> {
    if parents.len() != children.len() {
        bail!(
            "{} parent answers for {} child answers",
            parents.len(),
            children.len()
        );
    }
    if !shaping.needs_embeddings() {
        return Ok(parents
            .iter()
            .zip(children)
            .map(|(p, c)| binary(p, c))
            .collect());
    }
    let Some(embedder) = embedder else {
        bail!("shaping {shaping} needs an embedder");
    };
    if let Some(r) = embedder.shaped_rewards(shaping, power, parents, children) {
        let r = r?;
        if r.len() != parents.len() {
            bail!(
                "embedder {} returned {} rewards for {} pairs",
                embedder.name(),
                r.len(),
                parents.len()
            );
        }
        return Ok(r);
    }
    let texts: Vec<&str> = parents.iter().chain(children).copied().collect();
    let v = super::embed_texts(embedder, &texts)?;
    let n = parents.len();
    Ok((0..n)
        .map(|i| shaping.reward(power, parents[i], children[i], &v[i], &v[n + i]))
        .collect())
}
