//! Llama-family configuration and parameters (SmolLM2, Llama 3 and their kin), kept in the Hugging
//! Face layout: linear weights are stored (out, in) as `torch.nn.Linear` does, names are those of
//! `LlamaForCausalLM` (`model.layers.N.self_attn.q_proj.weight`, ...). Loaded from GGUF files or
//! from Hugging Face safetensors (single or sharded); saved as config.json + model.safetensors.

use crate::files::write_atomic;
use crate::model::gguf::GgufFile;
use crate::model::llama_tokenizer::LlamaTokenizer;
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The fields of a Hugging Face Llama `config.json` that the model needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_positions() -> usize {
    2048
}
fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    10000.0
}

/// The fields of config.json that we accept but whose other values we cannot run.
#[derive(Deserialize)]
struct ConfigChecks {
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

impl LlamaConfig {
    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn validate(&self) -> Result<()> {
        let (h, kv) = (self.num_attention_heads, self.n_kv_heads());
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            bail!(
                "num_attention_heads ({h}) must be a positive multiple of num_key_value_heads ({kv})"
            );
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(h) {
            bail!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({h})",
                self.hidden_size
            );
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            bail!(
                "head_dim ({}) must be even and positive for rotary embeddings",
                self.head_dim()
            );
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            bail!("vocab_size, num_hidden_layers and intermediate_size must be positive");
        }
        Ok(())
    }

    /// Reads a Hugging Face config.json, refusing architectures this model does not compute.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("config {}", path.display()))
    }

    /// A tiny config for tests: 2 layers, 24 wide, 6 query heads sharing 2 key/value heads
    /// (grouped-query attention), 50 tokens, untied head.
    pub fn tiny() -> Self {
        Self::from_json_str(
            r#"{"vocab_size": 50, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
                "num_attention_heads": 6, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
                "rope_theta": 100.0, "tie_word_embeddings": false, "max_position_embeddings": 64,
                "model_type": "llama", "hidden_act": "silu"}"#,
        )
        .expect("the tiny config parses")
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
        if let Some(mt) = v.get("model_type").and_then(|m| m.as_str())
            && mt != "llama"
        {
            bail!("model_type '{mt}' is not supported (only 'llama')");
        }
        let checks: ConfigChecks = serde_json::from_value(v.clone()).context("bad field type")?;
        if let Some(act) = &checks.hidden_act
            && act != "silu"
        {
            bail!("hidden_act '{act}' is not supported (only 'silu')");
        }
        if checks.attention_bias == Some(true) || checks.mlp_bias == Some(true) {
            bail!("attention_bias / mlp_bias = true is not supported");
        }
        if checks.rope_scaling.as_ref().is_some_and(|r| !r.is_null()) {
            bail!("rope_scaling is not supported");
        }
        let mut v = v;
        // Newer transformers versions write the rotary settings as a `rope_parameters` object.
        if let Some(rp) = v.get("rope_parameters").cloned().filter(|r| !r.is_null()) {
            if let Some(kind) = rp.get("rope_type").and_then(|k| k.as_str())
                && kind != "default"
            {
                bail!("rope_parameters.rope_type '{kind}' is not supported (only 'default')");
            }
            if v.get("rope_theta").is_none()
                && let Some(theta) = rp.get("rope_theta")
            {
                v["rope_theta"] = theta.clone();
            }
        }
        let cfg: LlamaConfig = serde_json::from_value(v).context("missing or bad field")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config.json we write: what `transformers` needs to build `LlamaForCausalLM`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap();
        let o = v.as_object_mut().unwrap();
        o.insert("num_key_value_heads".into(), self.n_kv_heads().into());
        o.insert("head_dim".into(), self.head_dim().into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        o.insert("model_type".into(), "llama".into());
        o.insert("hidden_act".into(), "silu".into());
        o.insert("attention_bias".into(), false.into());
        o.insert("mlp_bias".into(), false.into());
        o.insert("torch_dtype".into(), "float32".into());
        // f32 values through f64 print as 9.999999747378752e-6; write the shortest f32 spelling.
        for (k, x) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if let Ok(v) = format!("{x:e}").parse::<f64>() {
                o.insert(k.into(), v.into());
            }
        }
        o.retain(|_, x| !x.is_null());
        v
    }

    /// From the `llama.*` metadata of a GGUF file; any other architecture is an error naming it.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            bail!(
                "GGUF file {}: architecture '{arch}' is not supported (only 'llama')",
                g.path.display()
            );
        }
        let u = |k: &str| g.get_u64(&format!("llama.{k}")).map(|v| v as usize);
        let num_attention_heads = u("attention.head_count")?;
        let hidden_size = u("embedding_length")?;
        let vocab_size = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => g.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim =
            u("attention.key_length").unwrap_or(hidden_size / num_attention_heads.max(1));
        // Rotary embeddings over only part of each head are not implemented.
        if let Ok(rot) = u("rope.dimension_count")
            && rot != head_dim
        {
            bail!(
                "GGUF file {}: llama.rope.dimension_count {rot} differs from the head width {head_dim} (partial rotary embeddings are not supported)",
                g.path.display()
            );
        }
        let id = |k: &str| g.get_u64(k).ok().map(|v| v as u32);
        let cfg = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads,
            num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(num_attention_heads)),
            head_dim: Some(head_dim),
            max_position_embeddings: u("context_length").unwrap_or(2048),
            rms_norm_eps: g.get_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            rope_theta: g.get_f64("llama.rope.freq_base").unwrap_or(10000.0) as f32,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            pad_token_id: id("tokenizer.ggml.padding_token_id"),
        };
        cfg.validate()
            .with_context(|| format!("GGUF file {}", g.path.display()))?;
        Ok(cfg)
    }
}

/// One decoder layer. C = hidden, H/KV = query/key-value heads, D = head_dim, F = intermediate.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaLayer {
    pub input_layernorm: Tensor,          // (C)
    pub q_proj: Tensor,                   // (H*D, C)
    pub k_proj: Tensor,                   // (KV*D, C)
    pub v_proj: Tensor,                   // (KV*D, C)
    pub o_proj: Tensor,                   // (C, H*D)
    pub post_attention_layernorm: Tensor, // (C)
    pub gate_proj: Tensor,                // (F, C)
    pub up_proj: Tensor,                  // (F, C)
    pub down_proj: Tensor,                // (C, F)
}

/// Suffixes of a layer's tensors in Hugging Face naming, in the order of `LlamaLayer`'s fields.
pub const LAYER_TENSOR_NAMES: [&str; 9] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

/// GGUF names of the same tensors (after `blk.N.`), in the same order.
const GGUF_LAYER_NAMES: [&str; 9] = [
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

impl LlamaLayer {
    fn fields(&self) -> [&Tensor; 9] {
        [
            &self.input_layernorm,
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.post_attention_layernorm,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    fn fields_mut(&mut self) -> [&mut Tensor; 9] {
        [
            &mut self.input_layernorm,
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.post_attention_layernorm,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }
}

/// All parameters. The same struct holds gradients and optimiser moments.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaWeights {
    pub embed_tokens: Tensor, // (V, C)
    pub layers: Vec<LlamaLayer>,
    pub norm: Tensor, // (C)
    /// (V, C); `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Tensor>,
}

impl LlamaWeights {
    /// All-zero parameters of the config's shapes.
    pub fn zeros(cfg: &LlamaConfig) -> Self {
        let (c, d, f) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
        let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let layer = || LlamaLayer {
            input_layernorm: Tensor::zeros(&[c]),
            q_proj: Tensor::zeros(&[h * d, c]),
            k_proj: Tensor::zeros(&[kv * d, c]),
            v_proj: Tensor::zeros(&[kv * d, c]),
            o_proj: Tensor::zeros(&[c, h * d]),
            post_attention_layernorm: Tensor::zeros(&[c]),
            gate_proj: Tensor::zeros(&[f, c]),
            up_proj: Tensor::zeros(&[f, c]),
            down_proj: Tensor::zeros(&[c, f]),
        };
        LlamaWeights {
            embed_tokens: Tensor::zeros(&[cfg.vocab_size, c]),
            layers: (0..cfg.num_hidden_layers).map(|_| layer()).collect(),
            norm: Tensor::zeros(&[c]),
            lm_head: (!cfg.tie_word_embeddings).then(|| Tensor::zeros(&[cfg.vocab_size, c])),
        }
    }

    /// Seeded init as `transformers` does for Llama: N(0, 0.02) everywhere, norms one.
    pub fn random(cfg: &LlamaConfig, seed: u64) -> Self {
        let mut w = Self::zeros(cfg);
        let mut rng = Rng::new(seed);
        for (name, t) in w.named_mut() {
            if name.ends_with("norm.weight") {
                t.data.fill(1.0);
            } else {
                for x in t.data.iter_mut() {
                    *x = (rng.normal() * 0.02) as f32;
                }
            }
        }
        w
    }

    /// The output head: `lm_head` or, when tied, the embedding.
    pub fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Every tensor with its Hugging Face name, in a fixed order.
    pub fn named(&self) -> Vec<(String, &Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), &self.embed_tokens)];
        for (i, l) in self.layers.iter().enumerate() {
            for (suffix, t) in LAYER_TENSOR_NAMES.iter().zip(l.fields()) {
                out.push((format!("model.layers.{i}.{suffix}"), t));
            }
        }
        out.push(("model.norm.weight".to_string(), &self.norm));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h));
        }
        out
    }

    pub fn named_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            &mut self.embed_tokens,
        )];
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (suffix, t) in LAYER_TENSOR_NAMES.iter().zip(l.fields_mut()) {
                out.push((format!("model.layers.{i}.{suffix}"), t));
            }
        }
        out.push(("model.norm.weight".to_string(), &mut self.norm));
        if let Some(h) = &mut self.lm_head {
            out.push(("lm_head.weight".to_string(), h));
        }
        out
    }

    pub fn num_params(&self) -> usize {
        self.named().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Fills every tensor from `get(hf_name, expected_shape)`.
    fn fill(
        cfg: &LlamaConfig,
        mut get: impl FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        let mut w = Self::zeros(cfg);
        for (name, t) in w.named_mut() {
            let got = get(&name, &t.shape)?;
            if got.shape != t.shape {
                bail!(
                    "tensor '{name}' has shape {:?}, the config needs {:?}",
                    got.shape,
                    t.shape
                );
            }
            *t = got;
        }
        Ok(w)
    }

    /// From a GGUF file: names mapped to Hugging Face's, the rotary row order of q/k undone.
    pub fn from_gguf(g: &GgufFile, cfg: &LlamaConfig) -> Result<Self> {
        let (h, kv) = (cfg.num_attention_heads, cfg.n_kv_heads());
        let w = Self::fill(cfg, |name, _| {
            let gname =
                gguf_name(name).with_context(|| format!("no GGUF name for tensor '{name}'"))?;
            let mut t = g.tensor(&gname)?;
            if name.ends_with("q_proj.weight") {
                t = unpermute_rotary_rows(&t, h)?;
            } else if name.ends_with("k_proj.weight") {
                t = unpermute_rotary_rows(&t, kv)?;
            }
            Ok(t)
        })
        .with_context(|| format!("GGUF file {}", g.path.display()))?;
        Ok(w)
    }
}

/// The GGUF name of a Hugging Face tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (i, suffix) = rest.split_once('.')?;
    let k = LAYER_TENSOR_NAMES.iter().position(|s| *s == suffix)?;
    Some(format!("blk.{i}.{}", GGUF_LAYER_NAMES[k]))
}

/// GGUF converters reorder the rows of each head of q_proj/k_proj from Hugging Face's rotate-half
/// layout (first half, second half) to interleaved pairs: GGUF row 2j + a of a head is Hugging
/// Face row a * D/2 + j. This puts them back. `w` is (heads * D, C).
pub fn unpermute_rotary_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    move_rotary_rows(w, heads, true)
}

/// The inverse of `unpermute_rotary_rows`: what a GGUF converter does.
pub fn permute_rotary_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    move_rotary_rows(w, heads, false)
}

/// Moves each head's rows between the interleaved (GGUF) and rotate-half (Hugging Face) orders.
fn move_rotary_rows(w: &Tensor, heads: usize, to_hf: bool) -> Result<Tensor> {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        bail!("{rows} rows cannot be split into {heads} heads of even width");
    }
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0.0f32; rows * cols];
    for h in 0..heads {
        for j in 0..half {
            for a in 0..2 {
                let interleaved = h * d + 2 * j + a;
                let rotate_half = h * d + a * half + j;
                let (src, dst) = if to_hf {
                    (interleaved, rotate_half)
                } else {
                    (rotate_half, interleaved)
                };
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&w.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(Tensor::from_vec(&w.shape, out))
}

/// The asset name and file of the default Llama-family child.
pub const SMOLLM2_ASSET: &str = "smollm2-135m-instruct";
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SmolLM2-135M's config as Hugging Face writes it, for benches and checks that need its shapes
/// without its weights.
pub const SMOLLM2_135M_CONFIG: &str = r#"{"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true,
    "max_position_embeddings": 8192}"#;

/// A Llama child and its tokenizer from a GGUF file: a path to a `.gguf` file, or the asset name
/// `smollm2-135m-instruct` (resolved, and fetched if needed, by `crate::assets`).
pub fn load_gguf_child(name_or_path: &str) -> Result<(Llama, LlamaTokenizer)> {
    let path = if name_or_path == SMOLLM2_ASSET {
        crate::assets::resolve_file(SMOLLM2_ASSET, SMOLLM2_FILE)?
    } else {
        let p = std::path::PathBuf::from(name_or_path);
        if !p.is_file() {
            bail!("'{name_or_path}' is neither a GGUF file nor the asset name '{SMOLLM2_ASSET}'");
        }
        p
    };
    let g = GgufFile::open(&path)?;
    Ok((Llama::from_gguf(&g)?, LlamaTokenizer::from_gguf(&g)?))
}

/// A Llama model: config and parameters.
#[derive(Clone, Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
}

impl Llama {
    pub fn random(config: LlamaConfig, seed: u64) -> Self {
        let weights = LlamaWeights::random(&config, seed);
        Llama { config, weights }
    }

    /// From a GGUF file (dequantised to f32).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let config = LlamaConfig::from_gguf(g)?;
        let weights = LlamaWeights::from_gguf(g, &config)?;
        Ok(Llama { config, weights })
    }

    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    /// From a Hugging Face folder: config.json plus model.safetensors, or the shards listed in
    /// model.safetensors.index.json.
    pub fn load_hf(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_json_file(dir.join("config.json"))?;
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<String> = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("cannot read {}", index.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{} has no weight_map object", index.display()))?;
            let mut files: Vec<String> = map
                .values()
                .map(|f| {
                    f.as_str().map(str::to_string).with_context(|| {
                        format!("{}: weight_map values must be file names", index.display())
                    })
                })
                .collect::<Result<_>>()?;
            files.sort();
            files.dedup();
            files
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for f in &files {
            if f.contains('/') || f.contains('\\') {
                bail!(
                    "{}: shard name '{f}' must be a plain file name",
                    index.display()
                );
            }
            let p = dir.join(f);
            read_safetensors_into(&p, &mut tensors)?;
        }
        let where_ = dir.display().to_string();
        let weights = LlamaWeights::fill(&config, |name, _| {
            tensors
                .remove(name)
                .with_context(|| format!("tensor '{name}' is missing from {where_}"))
        })?;
        Ok(Llama { config, weights })
    }

    /// Writes config.json and model.safetensors (f32) into `dir`, each atomically, in the layout
    /// `transformers.LlamaForCausalLM.from_pretrained` reads.
    pub fn save_hf(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let cfg = serde_json::to_string_pretty(&self.config.to_hf_json())?;
        write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
        let named = self.weights.named();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = named
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.shape.clone(),
                    bytemuck::cast_slice(&t.data).to_vec(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut info = HashMap::new();
        info.insert("format".to_string(), "pt".to_string());
        let data = safetensors::serialize(views, Some(info))?;
        write_atomic(&dir.join("model.safetensors"), &data)
    }
}

/// Reads every tensor of a safetensors file as f32 (from F32, F16 or BF16) into `out`.
pub fn read_safetensors_into(path: &Path, out: &mut HashMap<String, Tensor>) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    for (name, view) in st.tensors() {
        let t = tensor_from_view(&view)
            .with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        out.insert(name, t);
    }
    Ok(())
}

/// Reads every tensor of a safetensors file, ordered by name.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>> {
    let mut m = HashMap::new();
    read_safetensors_into(path.as_ref(), &mut m)?;
    Ok(m.into_iter().collect())
}

fn tensor_from_view(v: &TensorView) -> Result<Tensor> {
    let d = v.data();
    let data: Vec<f32> = match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => bail!("dtype {other:?} is not supported (F32, F16, BF16, I64 are)"),
    };
    Ok(Tensor::from_vec(v.shape(), data))
}

/// Angle tables cos, sin (P, D/2) for positions 0..P. Computed in f32 the way `transformers`
/// does (inverse frequencies, then products with the position), so that logits agree closely.
pub fn rope_table(max_pos: usize, d: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let inv: Vec<f32> = (0..half)
        .map(|j| 1.0 / theta.powf((2 * j) as f32 / d as f32))
        .collect();
    let mut cos = vec![0.0f32; max_pos * half];
    let mut sin = vec![0.0f32; max_pos * half];
    for p in 0..max_pos {
        for j in 0..half {
            let a = p as f32 * inv[j];
            cos[p * half + j] = a.cos();
            sin[p * half + j] = a.sin();
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_row_permutation_round_trips() {
        let w = Tensor::from_vec(&[12, 2], (0..24).map(|x| x as f32).collect());
        let p = permute_rotary_rows(&w, 2).unwrap();
        assert_ne!(p, w);
        // Head 0 has D = 6: GGUF row 1 is Hugging Face row 3 (a = 1, j = 0).
        assert_eq!(&p.data[2..4], &w.data[6..8]);
        assert_eq!(unpermute_rotary_rows(&p, 2).unwrap(), w);
    }

    #[test]
    fn gguf_names_map() {
        assert_eq!(
            gguf_name("model.layers.7.self_attn.k_proj.weight").unwrap(),
            "blk.7.attn_k.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert!(gguf_name("model.layers.0.bogus").is_none());
    }
}
