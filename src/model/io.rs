//! Model files: safetensors reading (F32, F16, BF16 -> f32), and GPT-2 checkpoints in
//! the Hugging Face layout (`config.json` + `model.safetensors` [+ `tokenizer.json`]) that
//! `transformers.GPT2LMHeadModel.from_pretrained(dir)` loads unchanged.

use crate::files::{replace_dir, temp_sibling, write_atomic};
use crate::model::gpt2::{Gpt2, Gpt2Config, Gpt2Weights};
use crate::model::tokenizer::Tokenizer;
use crate::tensor::Tensor;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Element types. F32, F16 and BF16 are read (as f32); the others are only listed, since
/// checkpoints carry integer buffers (e.g. BERT's `position_ids`) that nobody needs to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    Other(String),
}

impl Dtype {
    fn parse(s: &str) -> Self {
        match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::Bf16,
            other => Dtype::Other(other.to_string()),
        }
    }

    /// Bytes per element, where known.
    fn size(&self) -> Option<usize> {
        match self {
            Dtype::F32 => Some(4),
            Dtype::F16 | Dtype::Bf16 => Some(2),
            Dtype::Other(s) => match s.as_str() {
                "F64" | "I64" | "U64" => Some(8),
                "I32" | "U32" => Some(4),
                "I16" | "U16" => Some(2),
                "I8" | "U8" | "BOOL" => Some(1),
                _ => None,
            },
        }
    }
}

/// One entry of a safetensors header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the data section (after the header).
    pub start: u64,
    pub end: u64,
}

/// An open safetensors file: the header is parsed and checked up front, tensors are read one at a
/// time so that a large model needs little more memory than its f32 weights.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let p = path.display();
        let mut file = File::open(path).with_context(|| format!("cannot open {p}"))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("cannot stat {p}"))?
            .len();
        if file_len < 8 {
            bail!(
                "{p}: truncated safetensors file ({file_len} bytes, the header length alone is 8)"
            );
        }
        let mut len8 = [0u8; 8];
        file.read_exact(&mut len8)
            .with_context(|| format!("cannot read {p}"))?;
        let header_len = u64::from_le_bytes(len8);
        if header_len > file_len - 8 {
            bail!(
                "{p}: truncated or not a safetensors file (header says {header_len} bytes, the file has {} after the length)",
                file_len - 8
            );
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("cannot read {p}"))?;
        let header: Value = serde_json::from_slice(&header)
            .with_context(|| format!("{p}: corrupt safetensors header (not JSON)"))?;
        let Value::Object(entries) = header else {
            bail!("{p}: corrupt safetensors header (not a JSON object)");
        };
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, v) in entries {
            if name == "__metadata__" {
                if let Value::Object(m) = v {
                    for (k, v) in m {
                        if let Value::String(s) = v {
                            metadata.insert(k, s);
                        }
                    }
                }
                continue;
            }
            let info = parse_tensor_info(&v)
                .with_context(|| format!("{p}: corrupt header entry for tensor '{name}'"))?;
            let numel: usize = info.shape.iter().product();
            let want = (numel * info.dtype.size().unwrap_or(0)) as u64;
            let size_known = info.dtype.size().is_some();
            if info.end < info.start || (size_known && info.end - info.start != want) {
                bail!(
                    "{p}: tensor '{name}' has shape {:?} ({want} bytes of {:?}) but its data range is {}..{}",
                    info.shape,
                    info.dtype,
                    info.start,
                    info.end
                );
            }
            if info.end > data_len {
                bail!(
                    "{p}: truncated: tensor '{name}' ends at byte {} of the data section, which has {data_len} bytes",
                    info.end
                );
            }
            tensors.insert(name, info);
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file,
            data_start,
            tensors,
            metadata,
        })
    }

    /// Read one tensor as f32.
    pub fn read(&mut self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?.clone();
        let mut t = Tensor::zeros(&info.shape);
        self.read_into(name, &mut t.data)?;
        Ok(t)
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .get(name)
            .ok_or_else(|| anyhow!("{}: no tensor named '{name}'", self.path.display()))
    }

    /// Read one tensor, converted to f32, into `out` (which must hold exactly its elements).
    pub fn read_into(&mut self, name: &str, out: &mut [f32]) -> Result<()> {
        let info = self.info(name)?.clone();
        let p = self.path.display().to_string();
        if let Dtype::Other(d) = &info.dtype {
            bail!(
                "{p}: tensor '{name}' has dtype {d}, which is not supported (F32, F16 and BF16 are)"
            );
        }
        if info.shape.iter().product::<usize>() != out.len() {
            bail!(
                "{p}: tensor '{name}' has {} elements, expected {}",
                info.shape.iter().product::<usize>(),
                out.len()
            );
        }
        let mut raw = vec![0u8; (info.end - info.start) as usize];
        self.file
            .seek(SeekFrom::Start(self.data_start + info.start))
            .and_then(|_| self.file.read_exact(&mut raw))
            .with_context(|| format!("{p}: cannot read tensor '{name}'"))?;
        // safetensors stores little-endian values.
        match &info.dtype {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::F16 => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Dtype::Bf16 => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Dtype::Other(_) => unreachable!("checked above"),
        }
        Ok(())
    }
}

fn parse_tensor_info(v: &Value) -> Result<TensorInfo> {
    let dtype = match v.get("dtype").and_then(Value::as_str) {
        Some(d) => Dtype::parse(d),
        None => bail!("no dtype"),
    };
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("no shape"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("shape is not a list of sizes"))?;
    let offs = v
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| anyhow!("no data_offsets pair"))?;
    let (Some(start), Some(end)) = (offs[0].as_u64(), offs[1].as_u64()) else {
        bail!("data_offsets are not integers");
    };
    Ok(TensorInfo {
        dtype,
        shape,
        start,
        end,
    })
}

/// Write f32 tensors as a safetensors file, atomically, with the `format: pt` metadata that
/// `transformers` requires.
pub fn save_safetensors(path: &Path, tensors: &[(String, &Tensor)]) -> Result<()> {
    // safetensors stores little-endian values; every platform we build for is little-endian.
    const _: () = assert!(cfg!(target_endian = "little"));
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow!("tensor '{name}': {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    // Streamed into a temporary sibling rather than serialised in memory first: a checkpoint's
    // optimiser moments are gigabytes, and a second copy of them in memory costs seconds.
    let tmp = temp_sibling(path, "tmp");
    let result = safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|()| {
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Settings of a Hugging Face GPT-2 config that our model does not implement; reject them rather
/// than compute something else.
fn check_gpt2_config_json(v: &Value, n_embd: usize) -> Result<()> {
    if let Some(t) = v.get("model_type").and_then(Value::as_str)
        && t != "gpt2"
    {
        bail!("model_type is '{t}', not 'gpt2'");
    }
    if let Some(a) = v.get("activation_function").and_then(Value::as_str)
        && a != "gelu_new"
        && a != "gelu_pytorch_tanh"
    {
        bail!("activation_function '{a}' is not supported (GPT-2 uses gelu_new, the tanh GELU)");
    }
    if let Some(n) = v.get("n_inner").and_then(Value::as_u64)
        && n as usize != 4 * n_embd
    {
        bail!(
            "n_inner {n} is not supported (only 4 * n_embd = {})",
            4 * n_embd
        );
    }
    if v.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
        bail!("scale_attn_weights false is not supported");
    }
    for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if v.get(flag).and_then(Value::as_bool) == Some(true) {
            bail!("{flag} true is not supported");
        }
    }
    if v.get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
        bail!("tie_word_embeddings false is not supported: the output head is wte");
    }
    Ok(())
}

/// Parse a GPT-2 `config.json`.
pub fn load_gpt2_config(path: &Path) -> Result<Gpt2Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_gpt2_config(&text).with_context(|| format!("bad GPT-2 config {}", path.display()))
}

fn parse_gpt2_config(text: &str) -> Result<Gpt2Config> {
    let v: Value = serde_json::from_str(text).context("invalid JSON")?;
    if !v.is_object() {
        bail!("expected a JSON object");
    }
    let cfg: Gpt2Config = serde_json::from_value(v.clone())?;
    cfg.validate()?;
    check_gpt2_config_json(&v, cfg.n_embd)?;
    Ok(cfg)
}

/// The `config.json` we write: every field `transformers` reads for GPT-2, with its defaults where
/// our model has no such setting (dropout is only used in training mode there).
pub fn gpt2_config_json(cfg: &Gpt2Config) -> Value {
    // Through the shortest decimal form, so 1e-5 is written as 1e-5 and not as the f64 nearest
    // to the f32 (which reads back to the same f32 either way).
    let eps: f64 = cfg.layer_norm_epsilon.to_string().parse().unwrap_or(1e-5);
    json!({
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": cfg.bos_token_id,
        "embd_pdrop": 0.1,
        "eos_token_id": cfg.eos_token_id,
        "initializer_range": 0.02,
        "layer_norm_epsilon": eps,
        "model_type": "gpt2",
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "n_inner": null,
        "n_layer": cfg.n_layer,
        "n_positions": cfg.n_positions,
        "reorder_and_upcast_attn": false,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": false,
        "scale_attn_weights": true,
        "summary_activation": null,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": true,
        "summary_type": "cls_index",
        "summary_use_proj": true,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": cfg.vocab_size,
    })
}

const PREFIX: &str = "transformer.";

/// Load a GPT-2 checkpoint folder (`config.json` + `model.safetensors`).
pub fn load_gpt2(dir: &Path) -> Result<Gpt2> {
    if !dir.is_dir() {
        bail!("model folder {} does not exist", dir.display());
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        bail!(
            "{} is missing (a GPT-2 checkpoint folder holds config.json and model.safetensors)",
            cfg_path.display()
        );
    }
    let config = load_gpt2_config(&cfg_path)?;
    let st_path = dir.join("model.safetensors");
    if !st_path.is_file() {
        bail!(
            "{} is missing (a GPT-2 checkpoint folder holds config.json and model.safetensors)",
            st_path.display()
        );
    }
    let weights = load_gpt2_weights(&st_path, &config)?;
    Ok(Gpt2 { config, weights })
}

/// Read GPT-2 weights of the given config from a safetensors file. Names may carry the
/// `transformer.` prefix or not; the causal-mask buffers are skipped; `lm_head.weight` must equal
/// `wte` (the head is tied).
pub fn load_gpt2_weights(path: &Path, config: &Gpt2Config) -> Result<Gpt2Weights> {
    let mut file = SafetensorsFile::open(path)?;
    let p = path.display().to_string();
    let mut weights = Gpt2Weights::zeros(config);
    let mut used = std::collections::BTreeSet::new();
    for (name, t) in weights.named_mut() {
        let prefixed = format!("{PREFIX}{name}");
        let stored = if file.tensors.contains_key(&prefixed) {
            prefixed
        } else if file.tensors.contains_key(&name) {
            name.clone()
        } else {
            bail!("{p}: missing tensor '{name}' (looked for '{name}' and '{PREFIX}{name}')");
        };
        let info = &file.tensors[&stored];
        if info.shape != t.shape {
            bail!(
                "{p}: tensor '{stored}' has shape {:?}, expected {:?} for the config in config.json",
                info.shape,
                t.shape
            );
        }
        file.read_into(&stored, &mut t.data)?;
        used.insert(stored);
    }
    let mut unexpected = Vec::new();
    for name in file.tensors.keys().cloned().collect::<Vec<_>>() {
        if used.contains(&name) {
            continue;
        }
        let bare = name.strip_prefix(PREFIX).unwrap_or(&name);
        if bare.ends_with(".attn.bias") || bare.ends_with(".attn.masked_bias") {
            continue;
        }
        if bare == "lm_head.weight" || name == "lm_head.weight" {
            let head = file.read(&name)?;
            if head.shape != weights.wte.shape || head.data != weights.wte.data {
                bail!(
                    "{p}: lm_head.weight differs from wte.weight; only a tied output head is supported"
                );
            }
            continue;
        }
        unexpected.push(name);
    }
    if !unexpected.is_empty() {
        bail!(
            "{p}: tensors that are not part of GPT-2: {} (is this a GPT-2 checkpoint?)",
            unexpected.join(", ")
        );
    }
    Ok(weights)
}

/// Save a checkpoint folder that `transformers.GPT2LMHeadModel.from_pretrained(dir)` loads. The
/// files are written into a temporary sibling folder which is renamed into place only when
/// complete; an existing folder at `dir` is replaced.
pub fn save_gpt2(model: &Gpt2, dir: &Path, tokenizer: Option<&Tokenizer>) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = temp_sibling(dir, "partial");
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let cfg = serde_json::to_string_pretty(&gpt2_config_json(&model.config))?;
        write_atomic(&tmp.join("config.json"), cfg.as_bytes())?;
        let named: Vec<(String, &Tensor)> = model
            .weights
            .named()
            .into_iter()
            .map(|(n, t)| (format!("{PREFIX}{n}"), t))
            .collect();
        save_safetensors(&tmp.join("model.safetensors"), &named)?;
        if let Some(tok) = tokenizer {
            tok.save(&tmp.join("tokenizer.json"))?;
        }
        replace_dir(&tmp, dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("cannot save the model to {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_problem() {
        let ok =
            serde_json::to_string(&gpt2_config_json(&Gpt2Config::named("tiny").unwrap())).unwrap();
        assert_eq!(
            parse_gpt2_config(&ok).unwrap(),
            Gpt2Config::named("tiny").unwrap()
        );
        let e = format!("{:#}", parse_gpt2_config("{\"n_embd\": 8,").unwrap_err());
        assert!(e.contains("invalid JSON"), "{e}");
        let e = format!("{:#}", parse_gpt2_config("{\"n_embd\": 8}").unwrap_err());
        assert!(e.contains("missing field"), "{e}");
        let e = ok.replace("\"gelu_new\"", "\"relu\"");
        let e = format!("{:#}", parse_gpt2_config(&e).unwrap_err());
        assert!(e.contains("activation_function 'relu'"), "{e}");
        let e = ok.replace("\"n_head\":4", "\"n_head\":3");
        let e = format!("{:#}", parse_gpt2_config(&e).unwrap_err());
        assert!(e.contains("multiple of n_head"), "{e}");
    }
}
