//! BERT sentence encoders in the `sentence-transformers` folder layout: `config.json`,
//! `model.safetensors`, `tokenizer.json`, `sentence_bert_config.json`, `modules.json`,
//! `1_Pooling/config.json`. all-MiniLM-L6-v2 is the one we ship by default; any BERT checkpoint in
//! that layout loads the same way.
//!
//! Linear weights are stored by PyTorch as (out, in); they are transposed once here into the
//! (in, out) layout that `matmul_forward` takes, and query/key/value are joined into one (C, 3C)
//! matrix so that a layer's projections are a single product.

use anyhow::{Context, Result, bail, ensure};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

/// The fields of a BERT `config.json` that the forward pass needs. Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

/// The feed-forward nonlinearity named by `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, with erf.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

impl BertConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size ({}) must be a multiple of num_attention_heads ({})",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.vocab_size > 0
                && self.hidden_size > 0
                && self.num_hidden_layers > 0
                && self.intermediate_size > 0
                && self.max_position_embeddings > 0
                && self.type_vocab_size > 0,
            "vocab_size, hidden_size, num_hidden_layers, intermediate_size, \
             max_position_embeddings and type_vocab_size must be positive"
        );
        ensure!(
            self.position_embedding_type == "absolute",
            "position_embedding_type '{}' is not supported (only 'absolute')",
            self.position_embedding_type
        );
        self.activation()?;
        Ok(())
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => bail!(
                "hidden_act '{other}' is not supported (expected gelu, gelu_new or gelu_pytorch_tanh)"
            ),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens of the attention mask.
    Mean,
    /// The first token ([CLS]).
    Cls,
    /// Element-wise maximum over the tokens of the mask.
    Max,
    /// Sum over the mask divided by sqrt(token count).
    MeanSqrtLen,
}

/// What `sentence-transformers` does around the transformer: truncation, pooling, normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct SentenceConfig {
    /// Longest input in word pieces, [CLS] and [SEP] included.
    pub max_seq_length: usize,
    /// Lower-case the text before tokenising (on top of whatever the tokenizer's normaliser does).
    pub do_lower_case: bool,
    pub pooling: Pooling,
    /// L2-normalise the pooled vector (a `Normalize` module in `modules.json`).
    pub normalize: bool,
}

#[derive(Deserialize)]
struct SentenceBertJson {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct PoolingJson {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl SentenceConfig {
    /// Reads `sentence_bert_config.json`, `modules.json` and the pooling config from `dir`.
    /// Missing files fall back to what `sentence-transformers` assumes for a bare BERT folder:
    /// mean pooling, no normalisation, and the model's position limit as the length limit.
    pub fn load(dir: &Path, config: &BertConfig) -> Result<Self> {
        let st_path = dir.join("sentence_bert_config.json");
        let (max_seq_length, do_lower_case) = if st_path.exists() {
            let st: SentenceBertJson = read_json(&st_path)?;
            (
                st.max_seq_length.unwrap_or(config.max_position_embeddings),
                st.do_lower_case,
            )
        } else {
            (config.max_position_embeddings, false)
        };
        ensure!(
            max_seq_length >= 2 && max_seq_length <= config.max_position_embeddings,
            "{}: max_seq_length {max_seq_length} must be between 2 and max_position_embeddings ({})",
            st_path.display(),
            config.max_position_embeddings
        );

        let modules_path = dir.join("modules.json");
        let modules: Vec<ModuleJson> = if modules_path.exists() {
            read_json(&modules_path)?
        } else {
            Vec::new()
        };
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| dir.join(&m.path))
            .unwrap_or_else(|| dir.join("1_Pooling"));
        let pooling_path = pooling_dir.join("config.json");
        let pooling = if pooling_path.exists() {
            let p: PoolingJson = read_json(&pooling_path)?;
            let modes = [
                (p.pooling_mode_mean_tokens, Pooling::Mean),
                (p.pooling_mode_cls_token, Pooling::Cls),
                (p.pooling_mode_max_tokens, Pooling::Max),
                (p.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
            ];
            let on: Vec<Pooling> = modes.iter().filter(|m| m.0).map(|m| m.1).collect();
            // sentence-transformers concatenates several modes; one is all a reward needs.
            ensure!(
                on.len() == 1,
                "{}: exactly one pooling mode must be set (found {})",
                pooling_path.display(),
                on.len()
            );
            on[0]
        } else {
            Pooling::Mean
        };
        Ok(SentenceConfig {
            max_seq_length,
            do_lower_case,
            pooling,
            normalize,
        })
    }
}

/// One encoder layer, linear weights in the (in, out) layout. C = hidden, I = intermediate.
#[derive(Clone, Debug, PartialEq)]
pub struct BertLayer {
    /// (C, 3C): query, key, value side by side.
    pub qkv_w: Vec<f32>,
    /// (3C)
    pub qkv_b: Vec<f32>,
    /// (C, C)
    pub attn_out_w: Vec<f32>,
    pub attn_out_b: Vec<f32>,
    pub attn_ln_w: Vec<f32>,
    pub attn_ln_b: Vec<f32>,
    /// (C, I)
    pub ffn_in_w: Vec<f32>,
    pub ffn_in_b: Vec<f32>,
    /// (I, C)
    pub ffn_out_w: Vec<f32>,
    pub ffn_out_b: Vec<f32>,
    pub ffn_ln_w: Vec<f32>,
    pub ffn_ln_b: Vec<f32>,
}

/// All parameters the sentence encoder uses (the pooler head of `BertModel` is not one of them).
#[derive(Clone, Debug, PartialEq)]
pub struct BertWeights {
    /// (V, C)
    pub word_emb: Vec<f32>,
    /// (P, C)
    pub pos_emb: Vec<f32>,
    /// (T, C)
    pub type_emb: Vec<f32>,
    pub emb_ln_w: Vec<f32>,
    pub emb_ln_b: Vec<f32>,
    pub layers: Vec<BertLayer>,
}

/// A safetensors file opened for reading parameters by their Hugging Face names, with or without
/// the `bert.` prefix that `BertForXxx` checkpoints carry.
pub struct BertTensors<'a> {
    file: &'a Path,
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl<'a> BertTensors<'a> {
    pub fn new(file: &'a Path, bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .with_context(|| format!("{}: not a valid safetensors file", file.display()))?;
        let probe = "embeddings.word_embeddings.weight";
        let prefix = if st.tensor(probe).is_ok() {
            ""
        } else if st.tensor(&format!("bert.{probe}")).is_ok() {
            "bert."
        } else {
            bail!(
                "{}: no tensor '{probe}' (nor 'bert.{probe}'): not a BERT checkpoint",
                file.display()
            )
        };
        Ok(BertTensors { file, st, prefix })
    }

    /// The tensor `name` as f32, checked against `shape`. F32, F16 and BF16 files are accepted.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .st
            .tensor(&full)
            .with_context(|| format!("{}: missing tensor '{full}'", self.file.display()))?;
        ensure!(
            view.shape() == shape,
            "{}: tensor '{full}' has shape {:?}, expected {shape:?}",
            self.file.display(),
            view.shape()
        );
        let data = view.data();
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => bail!(
                "{}: tensor '{full}' has dtype {other:?}; expected F32, F16 or BF16",
                self.file.display()
            ),
        };
        Ok(out)
    }

    /// A PyTorch nn.Linear weight stored (out, in), returned transposed as (in, out).
    pub fn linear_t(&self, name: &str, out_dim: usize, in_dim: usize) -> Result<Vec<f32>> {
        let w = self.get(name, &[out_dim, in_dim])?;
        let mut t = vec![0.0; w.len()];
        for o in 0..out_dim {
            for i in 0..in_dim {
                t[i * out_dim + o] = w[o * in_dim + i];
            }
        }
        Ok(t)
    }
}

impl BertWeights {
    /// Reads every parameter of the encoder from a safetensors file.
    pub fn load(file: &Path, config: &BertConfig) -> Result<Self> {
        config.validate()?;
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let t = BertTensors::new(file, &bytes)?;
        let c = config.hidden_size;
        let inter = config.intermediate_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let q = t.linear_t(&format!("{p}attention.self.query.weight"), c, c)?;
            let k = t.linear_t(&format!("{p}attention.self.key.weight"), c, c)?;
            let v = t.linear_t(&format!("{p}attention.self.value.weight"), c, c)?;
            let mut qkv_w = vec![0.0; c * 3 * c];
            for i in 0..c {
                let row = &mut qkv_w[i * 3 * c..(i + 1) * 3 * c];
                row[..c].copy_from_slice(&q[i * c..(i + 1) * c]);
                row[c..2 * c].copy_from_slice(&k[i * c..(i + 1) * c]);
                row[2 * c..].copy_from_slice(&v[i * c..(i + 1) * c]);
            }
            let mut qkv_b = t.get(&format!("{p}attention.self.query.bias"), &[c])?;
            qkv_b.extend(t.get(&format!("{p}attention.self.key.bias"), &[c])?);
            qkv_b.extend(t.get(&format!("{p}attention.self.value.bias"), &[c])?);
            layers.push(BertLayer {
                qkv_w,
                qkv_b,
                attn_out_w: t.linear_t(&format!("{p}attention.output.dense.weight"), c, c)?,
                attn_out_b: t.get(&format!("{p}attention.output.dense.bias"), &[c])?,
                attn_ln_w: t.get(&format!("{p}attention.output.LayerNorm.weight"), &[c])?,
                attn_ln_b: t.get(&format!("{p}attention.output.LayerNorm.bias"), &[c])?,
                ffn_in_w: t.linear_t(&format!("{p}intermediate.dense.weight"), inter, c)?,
                ffn_in_b: t.get(&format!("{p}intermediate.dense.bias"), &[inter])?,
                ffn_out_w: t.linear_t(&format!("{p}output.dense.weight"), c, inter)?,
                ffn_out_b: t.get(&format!("{p}output.dense.bias"), &[c])?,
                ffn_ln_w: t.get(&format!("{p}output.LayerNorm.weight"), &[c])?,
                ffn_ln_b: t.get(&format!("{p}output.LayerNorm.bias"), &[c])?,
            });
        }
        Ok(BertWeights {
            word_emb: t.get("embeddings.word_embeddings.weight", &[config.vocab_size, c])?,
            pos_emb: t.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, c],
            )?,
            type_emb: t.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, c],
            )?,
            emb_ln_w: t.get("embeddings.LayerNorm.weight", &[c])?,
            emb_ln_b: t.get("embeddings.LayerNorm.bias", &[c])?,
            layers,
        })
    }
}

/// The weights file of a model folder: `model.safetensors`.
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    let f = dir.join("model.safetensors");
    ensure!(
        f.exists(),
        "{}: no model.safetensors in this folder (only safetensors weights are read)",
        dir.display()
    );
    Ok(f)
}

/// Reads and checks `config.json` of a model folder.
pub fn load_config(dir: &Path) -> Result<BertConfig> {
    let path = dir.join("config.json");
    let config: BertConfig = read_json(&path)?;
    config
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// The folder's `tokenizer.json`, set up the way `sentence-transformers` calls it: truncation at
/// `max_seq_length` word pieces (special tokens included), no padding (the encoder packs
/// sequences itself).
pub fn load_tokenizer(dir: &Path, max_seq_length: usize) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    ensure!(
        path.exists(),
        "{}: missing (a sentence-transformers folder carries its fast tokenizer as tokenizer.json)",
        path.display()
    );
    let mut tok = Tokenizer::from_file(&path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        direction: TruncationDirection::Right,
        max_length: max_seq_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    }))
    .map_err(|e| anyhow::anyhow!("{}: cannot set truncation: {e}", path.display()))?;
    Ok(tok)
}

/// A whole sentence-transformers BERT folder, loaded.
pub struct SentenceModel {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub sentence: SentenceConfig,
    pub weights: BertWeights,
    pub tokenizer: Tokenizer,
}

impl SentenceModel {
    pub fn load(dir: &Path) -> Result<Self> {
        let load = || -> Result<Self> {
            let config = load_config(dir)?;
            let sentence = SentenceConfig::load(dir, &config)?;
            let weights = BertWeights::load(&weights_file(dir)?, &config)?;
            let tokenizer = load_tokenizer(dir, sentence.max_seq_length)?;
            Ok(SentenceModel {
                dir: dir.to_path_buf(),
                config,
                sentence,
                weights,
                tokenizer,
            })
        };
        load().with_context(|| format!("loading the sentence encoder in {}", dir.display()))
    }
}
