//! GPT-2 configuration and parameters, kept in the Hugging Face layout: Conv1D weights are stored
//! (in, out), the language-model head is tied to `wte`. Loading and saving live in `model::io`.

use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The fields of a Hugging Face `config.json` that the model needs. Unknown fields are ignored on read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "default_eos")]
    pub bos_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

fn default_eps() -> f32 {
    1e-5
}
fn default_eos() -> u32 {
    50256
}

pub const NAMED_CONFIGS: [&str; 5] = ["tiny", "small", "medium", "large", "xl"];

impl Gpt2Config {
    /// The named sizes: `tiny` is ours (for tests), the rest are GPT-2's published sizes.
    pub fn named(name: &str) -> Result<Self> {
        let (n_layer, n_head, n_embd) = match name {
            "tiny" => (2, 4, 128),
            "small" => (12, 12, 768),
            "medium" => (24, 16, 1024),
            "large" => (36, 20, 1280),
            "xl" => (48, 25, 1600),
            _ => bail!(
                "unknown GPT-2 config '{name}': expected one of {}",
                NAMED_CONFIGS.join(", ")
            ),
        };
        Ok(Gpt2Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd,
            n_layer,
            n_head,
            layer_norm_epsilon: 1e-5,
            bos_token_id: 50256,
            eos_token_id: 50256,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            bail!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd,
                self.n_head
            );
        }
        if self.vocab_size == 0 || self.n_positions == 0 || self.n_layer == 0 {
            bail!("vocab_size, n_positions and n_layer must be positive");
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// One transformer block. Shapes: C = n_embd; Conv1D weights are (in, out).
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Block {
    pub ln_1_w: Tensor,      // (C)
    pub ln_1_b: Tensor,      // (C)
    pub attn_w: Tensor,      // (C, 3C)   q, k, v side by side
    pub attn_b: Tensor,      // (3C)
    pub attn_proj_w: Tensor, // (C, C)
    pub attn_proj_b: Tensor, // (C)
    pub ln_2_w: Tensor,      // (C)
    pub ln_2_b: Tensor,      // (C)
    pub fc_w: Tensor,        // (C, 4C)
    pub fc_b: Tensor,        // (4C)
    pub fc_proj_w: Tensor,   // (4C, C)
    pub fc_proj_b: Tensor,   // (C)
}

/// All parameters. The same struct holds gradients and optimiser moments.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Weights {
    pub wte: Tensor, // (V, C), also the output head
    pub wpe: Tensor, // (n_positions, C)
    pub blocks: Vec<Gpt2Block>,
    pub ln_f_w: Tensor, // (C)
    pub ln_f_b: Tensor, // (C)
}

/// Suffixes of a block's tensors in Hugging Face naming, in the order of `Gpt2Block`'s fields.
pub const BLOCK_TENSOR_NAMES: [&str; 12] = [
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
];

impl Gpt2Block {
    fn fields(&self) -> [&Tensor; 12] {
        [
            &self.ln_1_w,
            &self.ln_1_b,
            &self.attn_w,
            &self.attn_b,
            &self.attn_proj_w,
            &self.attn_proj_b,
            &self.ln_2_w,
            &self.ln_2_b,
            &self.fc_w,
            &self.fc_b,
            &self.fc_proj_w,
            &self.fc_proj_b,
        ]
    }

    fn fields_mut(&mut self) -> [&mut Tensor; 12] {
        [
            &mut self.ln_1_w,
            &mut self.ln_1_b,
            &mut self.attn_w,
            &mut self.attn_b,
            &mut self.attn_proj_w,
            &mut self.attn_proj_b,
            &mut self.ln_2_w,
            &mut self.ln_2_b,
            &mut self.fc_w,
            &mut self.fc_b,
            &mut self.fc_proj_w,
            &mut self.fc_proj_b,
        ]
    }
}

impl Gpt2Weights {
    /// All-zero parameters of the config's shapes (gradients, optimiser moments).
    pub fn zeros(cfg: &Gpt2Config) -> Self {
        let c = cfg.n_embd;
        let block = || Gpt2Block {
            ln_1_w: Tensor::zeros(&[c]),
            ln_1_b: Tensor::zeros(&[c]),
            attn_w: Tensor::zeros(&[c, 3 * c]),
            attn_b: Tensor::zeros(&[3 * c]),
            attn_proj_w: Tensor::zeros(&[c, c]),
            attn_proj_b: Tensor::zeros(&[c]),
            ln_2_w: Tensor::zeros(&[c]),
            ln_2_b: Tensor::zeros(&[c]),
            fc_w: Tensor::zeros(&[c, 4 * c]),
            fc_b: Tensor::zeros(&[4 * c]),
            fc_proj_w: Tensor::zeros(&[4 * c, c]),
            fc_proj_b: Tensor::zeros(&[c]),
        };
        Gpt2Weights {
            wte: Tensor::zeros(&[cfg.vocab_size, c]),
            wpe: Tensor::zeros(&[cfg.n_positions, c]),
            blocks: (0..cfg.n_layer).map(|_| block()).collect(),
            ln_f_w: Tensor::zeros(&[c]),
            ln_f_b: Tensor::zeros(&[c]),
        }
    }

    /// GPT-2's initialisation: weights N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)),
    /// biases zero, layernorm gains one. Drawn in `named()` order from one seeded stream.
    pub fn random(cfg: &Gpt2Config, seed: u64) -> Self {
        let mut w = Self::zeros(cfg);
        let mut rng = Rng::new(seed);
        let resid_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        for (name, t) in w.named_mut() {
            if name.ends_with("ln_1.weight")
                || name.ends_with("ln_2.weight")
                || name.ends_with("ln_f.weight")
            {
                t.data.fill(1.0);
            } else if name.ends_with(".bias") {
                t.data.fill(0.0);
            } else {
                let std = if name.ends_with("c_proj.weight") {
                    resid_std
                } else {
                    0.02
                };
                for x in t.data.iter_mut() {
                    *x = (rng.normal() * std) as f32;
                }
            }
        }
        w
    }

    /// Every tensor with its Hugging Face name (without the `transformer.` prefix), in a fixed order.
    pub fn named(&self) -> Vec<(String, &Tensor)> {
        let mut out = vec![
            ("wte.weight".to_string(), &self.wte),
            ("wpe.weight".to_string(), &self.wpe),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            for (suffix, t) in BLOCK_TENSOR_NAMES.iter().zip(b.fields()) {
                out.push((format!("h.{i}.{suffix}"), t));
            }
        }
        out.push(("ln_f.weight".to_string(), &self.ln_f_w));
        out.push(("ln_f.bias".to_string(), &self.ln_f_b));
        out
    }

    pub fn named_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![
            ("wte.weight".to_string(), &mut self.wte),
            ("wpe.weight".to_string(), &mut self.wpe),
        ];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (suffix, t) in BLOCK_TENSOR_NAMES.iter().zip(b.fields_mut()) {
                out.push((format!("h.{i}.{suffix}"), t));
            }
        }
        out.push(("ln_f.weight".to_string(), &mut self.ln_f_w));
        out.push(("ln_f.bias".to_string(), &mut self.ln_f_b));
        out
    }

    pub fn num_params(&self) -> usize {
        self.named().iter().map(|(_, t)| t.numel()).sum()
    }
}

/// A GPT-2 model: its config and parameters.
#[derive(Clone, Debug)]
pub struct Gpt2 {
    pub config: Gpt2Config,
    pub weights: Gpt2Weights,
}

impl Gpt2 {
    pub fn random(config: Gpt2Config, seed: u64) -> Self {
        let weights = Gpt2Weights::random(&config, seed);
        Gpt2 { config, weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_has_gpt2_parameter_count() {
        let cfg = Gpt2Config::named("small").unwrap();
        let w = Gpt2Weights::zeros(&cfg);
        // GPT-2 small: 124,439,808 parameters (tied head counted once).
        assert_eq!(w.num_params(), 124_439_808);
        assert!(
            Gpt2Config::named("huge")
                .unwrap_err()
                .to_string()
                .contains("tiny, small")
        );
    }

    #[test]
    fn random_init_is_seeded() {
        let cfg = Gpt2Config::named("tiny").unwrap();
        let a = Gpt2Weights::random(&cfg, 3);
        assert_eq!(a, Gpt2Weights::random(&cfg, 3));
        assert_ne!(a, Gpt2Weights::random(&cfg, 4));
        assert!(a.blocks[0].ln_1_w.data.iter().all(|&x| x == 1.0));
    }
}
