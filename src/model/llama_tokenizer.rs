//! The tokenizer of a GGUF file, rebuilt from its metadata (`tokenizer.ggml.*`) through the
//! `tokenizers` crate: byte-level BPE (`tokenizer.ggml.model` = gpt2) with the pre-tokenizer named
//! by `tokenizer.ggml.pre`, control tokens as special tokens, and the chat template (ChatML).

use crate::files::write_atomic;
use crate::model::gguf::GgufFile;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Llama 3's split (also used by several other byte-level vocabularies).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values this reader knows.
pub const KNOWN_PRE_TOKENIZERS: [&str; 6] = [
    "default",
    "gpt2",
    "smollm",
    "llama3",
    "llama-bpe",
    "llama-v3",
];

/// One message of a chat.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A byte-level BPE tokenizer with the special token ids and chat template of its GGUF file.
pub struct LlamaTokenizer {
    pub tokenizer: Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub unk_id: Option<u32>,
    /// Whether the file asks for BOS in front of every text (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

/// GPT-2's map from bytes to printable characters, which byte-level vocabularies are spelled in.
fn bytes_to_unicode() -> HashMap<u8, char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).unwrap()))
        .collect()
}

impl LlamaTokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        Self::build(g).with_context(|| format!("tokenizer of GGUF file {}", g.path.display()))
    }

    fn build(g: &GgufFile) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            bail!("tokenizer.ggml.model '{model}' is not supported (only 'gpt2', byte-level BPE)");
        }
        let pre = g
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let merges = g.get_str_array("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .context("tokenizer.ggml.token_type is not an array")?
                .iter()
                .map(|x| {
                    x.as_i64()
                        .context("tokenizer.ggml.token_type holds a non-integer")
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };

        // Tokens are spelled in GPT-2's byte alphabet; respell any that are not (as transformers does).
        let spelling = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = spelling.values().copied().collect();
        let mut vocab = ahash_map();
        for (i, t) in tokens.iter().enumerate() {
            let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
                t.to_string()
            } else {
                t.bytes().map(|b| spelling[&b]).collect()
            };
            vocab.insert(spelled, i as u32);
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .with_context(|| {
                        format!("merge {i} '{m}' is not two tokens separated by a space")
                    })
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("cannot build the BPE model: {e}"))?;
        let mut tk = Tokenizer::new(bpe);
        match pre {
            "default" | "gpt2" => {
                tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
            "smollm" => {
                tk.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    ByteLevel::new(false, true, true).into(),
                ])));
            }
            "llama3" | "llama-bpe" | "llama-v3" => {
                let split = Split::new(
                    SplitPattern::Regex(LLAMA3_SPLIT.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| anyhow!("bad split pattern: {e}"))?;
                tk.with_pre_tokenizer(Some(Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])));
            }
            other => bail!(
                "tokenizer.ggml.pre '{other}' is not supported (known: {})",
                KNOWN_PRE_TOKENIZERS.join(", ")
            ),
        }
        tk.with_decoder(Some(ByteLevelDecoder::default()));

        // Control tokens (type 3) are matched whole and are special; user-defined ones (type 4)
        // are matched whole but are ordinary text.
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (t, &ty) in tokens.iter().zip(&types) {
            let whole_alphabet = t.chars().all(|c| alphabet.contains(&c));
            if ty == 3 && whole_alphabet {
                special.push(AddedToken::from(t.to_string(), true).normalized(false));
            } else if ty == 4 {
                user.push(AddedToken::from(t.to_string(), false).normalized(false));
            }
        }
        tk.add_special_tokens(&special);
        tk.add_tokens(&user);

        let id = |k: &str| g.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        Ok(LlamaTokenizer {
            tokenizer: tk,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_id: id("tokenizer.ggml.eos_token_id"),
            pad_id: id("tokenizer.ggml.padding_token_id"),
            unk_id: id("tokenizer.ggml.unknown_token_id"),
            add_bos: g
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            chat_template: g
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        })
    }

    /// Token ids of `text`, special tokens in it matched whole, BOS added only if the file asks.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos
            && let Some(b) = self.bos_id
        {
            ids.push(b);
        }
        ids.extend(enc.get_ids());
        Ok(ids)
    }

    /// Text of token ids; `skip_special` drops special tokens such as `<|im_end|>`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("cannot decode token ids: {e}"))
    }

    /// Writes tokenizer.json and tokenizer_config.json (special tokens, chat template) into
    /// `dir`, each atomically, so that `transformers.AutoTokenizer` loads the same tokenizer.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = self
            .tokenizer
            .to_string(true)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))?;
        write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        let name = |id: Option<u32>| id.and_then(|i| self.tokenizer.id_to_token(i));
        let mut cfg = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": 8192,
        });
        for (k, id) in [
            ("bos_token", self.bos_id),
            ("eos_token", self.eos_id),
            ("pad_token", self.pad_id),
            ("unk_token", self.unk_id),
        ] {
            if let Some(t) = name(id) {
                cfg[k] = t.into();
            }
        }
        if let Some(t) = &self.chat_template {
            cfg["chat_template"] = t.clone().into();
        }
        let text = serde_json::to_string_pretty(&cfg)?;
        write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The chat as the model's template writes it. Only ChatML templates (`<|im_start|>role\n
    /// content<|im_end|>\n`) are supported; a default system message in the template (SmolLM2
    /// has one) is inserted when the chat does not start with a system message.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tpl = self
            .chat_template
            .as_deref()
            .context("the model has no chat template (tokenizer.chat_template)")?;
        apply_chatml(tpl, messages, add_generation_prompt)
    }
}

fn ahash_map() -> tokenizers::models::bpe::Vocab {
    Default::default()
}

/// Applies a ChatML template (see `LlamaTokenizer::apply_chat_template`).
pub fn apply_chatml(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String> {
    if !(template.contains("<|im_start|>") && template.contains("<|im_end|>")) {
        let head: String = template.chars().take(80).collect();
        bail!("chat template is not ChatML, which is the only kind supported; it begins: {head:?}");
    }
    const SYS: &str = "<|im_start|>system\n";
    let default_system = if template.contains("!= 'system'") || template.contains("!= \"system\"") {
        template.find(SYS).and_then(|i| {
            let rest = &template[i + SYS.len()..];
            rest.find("<|im_end|>").map(|j| rest[..j].to_string())
        })
    } else {
        None
    };
    let mut out = String::new();
    if let Some(sys) = default_system
        && messages.first().is_none_or(|m| m.role != "system")
        && !messages.is_empty()
    {
        out.push_str(&format!("{SYS}{sys}<|im_end|>\n"));
    }
    for m in messages {
        out.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role, m.content
        ));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    Ok(out)
}
