//! GPT-2's parameters on a device, in the host's layout: what `gpt2_decode` and `gpt2_train` run.

use crate::cuda::device::{DevBuf, Gpu};
use crate::model::gpt2::{Gpt2, Gpt2Config, Gpt2Weights};
use anyhow::{Result, bail};

type Buf = DevBuf<f32>;

/// One transformer block's tensors, as `model::gpt2::Gpt2Block`.
pub struct Block {
    pub ln_1_w: Buf,
    pub ln_1_b: Buf,
    pub attn_w: Buf,
    pub attn_b: Buf,
    pub attn_proj_w: Buf,
    pub attn_proj_b: Buf,
    pub ln_2_w: Buf,
    pub ln_2_b: Buf,
    pub fc_w: Buf,
    pub fc_b: Buf,
    pub fc_proj_w: Buf,
    pub fc_proj_b: Buf,
}

/// All of GPT-2's tensors on the device, in the host's layout: like `Gpt2Weights`, the same
/// struct holds the parameters and their gradients.
pub struct GpuGpt2Weights {
    pub wte: Buf,
    pub wpe: Buf,
    pub blocks: Vec<Block>,
    pub ln_f_w: Buf,
    pub ln_f_b: Buf,
}

impl GpuGpt2Weights {
    /// Tensors of `cfg`'s shapes made by `make(len)`, one after another in `Gpt2Weights::named`
    /// order.
    fn build(cfg: &Gpt2Config, mut make: impl FnMut(usize) -> Result<Buf>) -> Result<Self> {
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let wte = make(v * c)?;
        let wpe = make(cfg.n_positions * c)?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            blocks.push(Block {
                ln_1_w: make(c)?,
                ln_1_b: make(c)?,
                attn_w: make(c * 3 * c)?,
                attn_b: make(3 * c)?,
                attn_proj_w: make(c * c)?,
                attn_proj_b: make(c)?,
                ln_2_w: make(c)?,
                ln_2_b: make(c)?,
                fc_w: make(c * 4 * c)?,
                fc_b: make(4 * c)?,
                fc_proj_w: make(4 * c * c)?,
                fc_proj_b: make(c)?,
            });
        }
        Ok(GpuGpt2Weights {
            wte,
            wpe,
            blocks,
            ln_f_w: make(c)?,
            ln_f_b: make(c)?,
        })
    }

    pub fn upload(g: &Gpu, cfg: &Gpt2Config, w: &Gpt2Weights) -> Result<Self> {
        let mut host = w.named().into_iter();
        Self::build(cfg, |n| match host.next() {
            Some((_, t)) if t.numel() == n => g.upload(&t.data),
            Some((name, t)) => bail!("{name} holds {} values, the config needs {n}", t.numel()),
            None => bail!("the weights hold fewer tensors than the config needs"),
        })
    }

    /// Zeros of every tensor (gradients to add into).
    pub fn zeros(g: &Gpu, cfg: &Gpt2Config) -> Result<Self> {
        Self::build(cfg, |n| g.zeros(n))
    }

    /// Every tensor in `Gpt2Weights::named` order.
    pub fn list(&self) -> Vec<&Buf> {
        let mut out = vec![&self.wte, &self.wpe];
        for b in &self.blocks {
            out.extend([
                &b.ln_1_w,
                &b.ln_1_b,
                &b.attn_w,
                &b.attn_b,
                &b.attn_proj_w,
                &b.attn_proj_b,
                &b.ln_2_w,
                &b.ln_2_b,
                &b.fc_w,
                &b.fc_b,
                &b.fc_proj_w,
                &b.fc_proj_b,
            ]);
        }
        out.extend([&self.ln_f_w, &self.ln_f_b]);
        out
    }

    /// Every tensor in `Gpt2Weights::named` order, to write into (an optimiser step).
    pub fn list_mut(&mut self) -> Vec<&mut Buf> {
        let mut out = vec![&mut self.wte, &mut self.wpe];
        for b in &mut self.blocks {
            out.extend([
                &mut b.ln_1_w,
                &mut b.ln_1_b,
                &mut b.attn_w,
                &mut b.attn_b,
                &mut b.attn_proj_w,
                &mut b.attn_proj_b,
                &mut b.ln_2_w,
                &mut b.ln_2_b,
                &mut b.fc_w,
                &mut b.fc_b,
                &mut b.fc_proj_w,
                &mut b.fc_proj_b,
            ]);
        }
        out.extend([&mut self.ln_f_w, &mut self.ln_f_b]);
        out
    }

    /// The tensors on the host.
    pub fn download(&self, g: &Gpu, cfg: &Gpt2Config) -> Result<Gpt2Weights> {
        let mut w = Gpt2Weights::zeros(cfg);
        for ((_, t), b) in w.named_mut().into_iter().zip(self.list()) {
            t.data = g.download(b)?;
        }
        Ok(w)
    }
}

/// GPT-2 on the device: its config and parameters.
pub struct GpuGpt2 {
    pub config: Gpt2Config,
    pub weights: GpuGpt2Weights,
}

impl GpuGpt2 {
    pub fn upload(g: &Gpu, m: &Gpt2) -> Result<Self> {
        Ok(GpuGpt2 {
            config: m.config.clone(),
            weights: GpuGpt2Weights::upload(g, &m.config, &m.weights)?,
        })
    }
}
