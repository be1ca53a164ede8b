//! `pgsrm check`'s whole-model rows: the policy update's forward and backward of a tiny model of
//! each family on the device against the CPU backend on the same batch. Both sides run the actor
//! forward over a left-padded batch of prompts and responses, the fused actor loss on the
//! response tokens, the value head and critic loss on each row's last hidden state, and the
//! backward into every parameter; the rows compare the logits, the losses and every gradient
//! (each tensor relative to its own scale).

use super::backward::GRAD_TOL;
use super::models::TINY_LLAMA;
use super::table::{Checker, PartsRow, TOL, randn};
use crate::batch::Batch;
use crate::cuda::device::{DevBuf, Gpu};
use crate::cuda::model::DevModel;
use crate::cuda::model::train_batch::TrainBatch;
use crate::cuda::ops::ppo_loss::{self as kl, ActorInputs, DevActorLoss};
use crate::model::spec::Model;
use crate::ppo::PpoConfig;
use crate::ppo::loss::{self, Critic};
use anyhow::Result;

type Buf = DevBuf<f32>;

pub(super) fn run_all(ck: &mut Checker) -> Result<()> {
    let small = ck.small();
    let gpt2 = if small {
        r#"{"vocab_size": 503, "n_positions": 32, "n_embd": 64, "n_layer": 2, "n_head": 4}"#
    } else {
        r#"{"vocab_size": 50257, "n_positions": 1024, "n_embd": 128, "n_layer": 2, "n_head": 4}"#
    };
    gpt2_training(ck, gpt2)?;
    llama_training(ck, "tiny GQA 6/2, untied head", TINY_LLAMA)?;
    llama_training(ck, "tiny MHA, tied head", TINY_LLAMA_TIED)?;
    Ok(())
}

/// A Llama with as many key/value heads as query heads, and the head tied to the embedding.
const TINY_LLAMA_TIED: &str = r#"{"vocab_size": 301, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "tie_word_embeddings": true, "max_position_embeddings": 64}"#;

/// A batch of prompts with responses, as a policy update sees it, and the loss's inputs.
struct Update {
    batch: Batch,
    /// The positions that predict response tokens, row by row, and those tokens.
    positions: Vec<(usize, usize)>,
    tokens: Vec<u32>,
    /// Per token: log-probabilities at sampling time and under the reference (the actor's own,
    /// moved by noise, so that ratios fall on both sides of a clip range), advantages.
    old_logprobs: Vec<f32>,
    ref_logprobs: Vec<f32>,
    advantages: Vec<f32>,
    /// Per row: the reward, and the value before the update.
    returns: Vec<f32>,
    old_values: Vec<f32>,
}

impl Update {
    /// Rows of `lens` tokens whose last `responses` tokens are the response.
    fn draw(ck: &mut Checker, vocab: usize, lens: &[usize], responses: &[usize]) -> Result<Self> {
        let seqs: Vec<Vec<u32>> = lens
            .iter()
            .map(|&n| (0..n).map(|_| ck.rng.below(vocab) as u32).collect())
            .collect();
        let batch = Batch::left_padded(&seqs, 0)?;
        let t = batch.t;
        let (mut positions, mut tokens) = (Vec::new(), Vec::new());
        for (r, &k) in responses.iter().enumerate() {
            for i in t - 1 - k..t - 1 {
                positions.push((r, i));
                tokens.push(batch.tokens[r * t + i + 1]);
            }
        }
        let b = lens.len();
        let advantages_of_row = randn(&mut ck.rng, b, 1.0);
        let advantages = positions
            .iter()
            .map(|&(r, _)| advantages_of_row[r])
            .collect();
        Ok(Update {
            batch,
            positions,
            tokens,
            old_logprobs: Vec::new(),
            ref_logprobs: Vec::new(),
            advantages,
            returns: (0..b).map(|_| ck.rng.uniform() as f32).collect(),
            old_values: randn(&mut ck.rng, b, 0.3),
        })
    }

    /// Sampling-time and reference log-probabilities near the actor's, from its logits (M, V).
    fn set_logprobs(&mut self, ck: &mut Checker, logits: &[f32], v: usize) {
        let mut logp = vec![0.0; logits.len()];
        crate::cpu::ops::log_softmax_forward(&mut logp, logits, v);
        for (i, &tok) in self.tokens.iter().enumerate() {
            let lp = logp[i * v + tok as usize];
            self.old_logprobs.push(lp + 0.3 * ck.rng.normal() as f32);
            self.ref_logprobs.push(lp + 0.5 * ck.rng.normal() as f32);
        }
    }

    /// The CPU's losses and their gradients: (losses, dlogits, critic gradients w and b), where
    /// losses = the actor's six means, then the MSE and critic loss; `last` (B, C) is each row's
    /// last hidden state.
    fn cpu_loss(
        &self,
        logits: &[f32],
        v: usize,
        last: &[f32],
        critic: &Critic,
        cfg: &PpoConfig,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let al = loss::actor_loss(
            &loss::ActorInputs {
                logits,
                vocab: v,
                tokens: &self.tokens,
                old_logprobs: &self.old_logprobs,
                ref_logprobs: &self.ref_logprobs,
                advantages: &self.advantages,
            },
            cfg,
            KL_COEF,
        );
        let c = critic.hidden();
        let values: Vec<f32> = last.chunks_exact(c).map(|h| critic.value(h)).collect();
        let (mse, closs, dv) =
            loss::critic_loss(&values, &self.old_values, &self.returns, cfg.value_clip);
        let (mut cw, mut cb) = (vec![0.0f32; c], vec![0.0f32]);
        for (r, h) in last.chunks_exact(c).enumerate() {
            cb[0] += dv[r];
            for (g, x) in cw.iter_mut().zip(h) {
                *g += dv[r] * x;
            }
        }
        let losses = vec![
            al.policy,
            al.entropy,
            al.kl,
            al.actor,
            al.approx_kl,
            al.clip_fraction,
            mse,
            closs,
        ];
        (losses, al.dlogits, cw, cb)
    }

    /// The device's losses and gradients from the logits (M, V) and final hidden states (N, C)
    /// of a forward on `batch`: (losses as `cpu_loss` orders them, the actor loss whose dlogits
    /// the backward takes, critic gradients w and b).
    #[allow(clippy::too_many_arguments)]
    fn device_loss(
        &self,
        g: &Gpu,
        batch: &TrainBatch,
        logits: &Buf,
        hidden: &Buf,
        v: usize,
        critic: &Critic,
        cfg: &PpoConfig,
    ) -> Result<(Vec<f32>, DevActorLoss, Buf, Buf)> {
        let (b, c, m) = (batch.b, critic.hidden(), batch.m);
        let tokens = g.upload(&self.tokens)?;
        let (old, reference) = (g.upload(&self.old_logprobs)?, g.upload(&self.ref_logprobs)?);
        let advantages = g.upload(&self.advantages)?;
        let mut out = DevActorLoss::new(g, m, v)?;
        let inp = ActorInputs {
            logits,
            vocab: v,
            tokens: &tokens,
            old_logprobs: &old,
            ref_logprobs: &reference,
            advantages: &advantages,
        };
        kl::actor_loss(g, &mut out, &inp, cfg, KL_COEF)?;
        let (w, bias) = (g.upload(&critic.w.data)?, g.upload(&critic.b.data)?);
        let mut values = g.alloc(b)?;
        kl::value_forward(g, &mut values, hidden, &batch.last, &w, &bias, b, c)?;
        let (mut closs, mut dv) = (g.alloc(2)?, g.alloc(b)?);
        kl::critic_loss(
            g,
            &mut closs,
            &mut dv,
            &values,
            &g.upload(&self.old_values)?,
            &g.upload(&self.returns)?,
            b,
            cfg.value_clip,
        )?;
        let (mut cw, mut cb) = (g.zeros(c)?, g.zeros(1)?);
        kl::value_backward(g, &mut cw, &mut cb, &dv, hidden, &batch.last, b, c)?;
        let mut losses = g.download(&out.means)?;
        losses.extend(g.download(&closs)?);
        Ok((losses, out, cw, cb))
    }
    /// The device's side of a whole-model row, in the order the CPU's side gives it: the logits,
    /// the losses, every parameter's gradient (in `named()` order), and the critic's w and b.
    fn device_row(
        &self,
        g: &Gpu,
        dev: &DevModel,
        critic: &Critic,
        cfg: &PpoConfig,
    ) -> Result<Vec<Vec<f32>>> {
        let batch = dev.train_batch(g, &self.batch, &self.positions, None)?;
        let mut acts = dev.forward(g, &batch, None)?;
        let v = dev.vocab_size();
        let (losses, al, cw, cb) = self.device_loss(
            g,
            &batch,
            acts.logits(),
            acts.final_hidden(),
            v,
            critic,
            cfg,
        )?;
        let mut grads = dev.zero_grads(g)?;
        dev.backward(g, &batch, &mut acts, &al.dlogits, &mut grads)?;
        g.sync()?;
        let mut out = vec![g.download(acts.logits())?, losses];
        for grad in grads.list() {
            out.push(g.download(grad)?);
        }
        out.extend([g.download(&cw)?, g.download(&cb)?]);
        Ok(out)
    }
}

const KL_COEF: f32 = 0.1;

/// The PPO settings of a family's row: GPT-2's runs the clipped objective with value clipping,
/// Llama's the paper's update; both with the entropy bonus and the KL penalty.
fn ppo_config(clipped: bool) -> PpoConfig {
    PpoConfig {
        clip_range: clipped.then_some(0.2),
        value_clip: clipped.then_some(0.2),
        entropy_coef: 0.01,
        ..PpoConfig::default()
    }
}

/// The rows of one family: logits, losses, gradients of the parameters and the value head.
fn rows<'a>(family: &'a str, shape: &str, n_params: usize) -> Vec<PartsRow<'a>> {
    let row = |kernel, parts, tol| PartsRow {
        kernel,
        shape: shape.to_string(),
        parts,
        tol,
    };
    let (fwd, losses, grads) = match family {
        "gpt2" => (
            "gpt2 train forward (logits)",
            "gpt2 fused loss + value head",
            "gpt2 backward (all gradients)",
        ),
        _ => (
            "llama train forward (logits)",
            "llama fused loss + value head",
            "llama backward (all gradients)",
        ),
    };
    vec![
        row(fwd, 1, TOL),
        row(losses, 1, TOL),
        row(grads, n_params + 2, GRAD_TOL),
    ]
}

fn gpt2_training(ck: &mut Checker, config: &str) -> Result<()> {
    use crate::model::gpt2::{Gpt2, Gpt2Config};
    let cfg: Gpt2Config = serde_json::from_str(config)?;
    let model = Gpt2::random(cfg.clone(), ck.rng.next_u64());
    let critic = Critic::new(cfg.n_embd, ck.rng.next_u64());
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let mut up = Update::draw(ck, v, &[6, 11, 14], &[3, 4, 2])?;
    let ppo = ppo_config(true);
    // CPU
    let (logits, mut acts) = crate::cpu::gpt2::forward(&model, &up.batch, &up.positions)?;
    up.set_logprobs(ck, &logits.data, v);
    let (b, t) = (up.batch.b, up.batch.t);
    let last: Vec<f32> = (0..b)
        .flat_map(|r| acts.final_hidden(r, t - 1).to_vec())
        .collect();
    let (losses, dlogits, cw, cb) = up.cpu_loss(&logits.data, v, &last, &critic, &ppo);
    let grads = crate::cpu::gpt2::backward(&model, &mut acts, &dlogits);
    let mut wants: Vec<&[f32]> = vec![&logits.data, &losses];
    wants.extend(grads.named().iter().map(|(_, t)| &t.data[..]));
    wants.extend([&cw[..], &cb[..]]);
    let shape = format!(
        "V={v} C={c} L={} B={b} T={t} M={}",
        cfg.n_layer,
        up.tokens.len()
    );
    let dev = DevModel::upload(ck.g, &Model::Gpt2(model))?;
    let n_params = grads.named().len();
    ck.parts_rows(rows("gpt2", &shape, n_params), &wants, |g| {
        up.device_row(g, &dev, &critic, &ppo)
    })
}

fn llama_training(ck: &mut Checker, name: &str, config: &str) -> Result<()> {
    use crate::model::llama::{Llama, LlamaConfig};
    let cfg = LlamaConfig::from_json_str(config)?;
    let model = Llama::random(cfg.clone(), ck.rng.next_u64());
    let critic = Critic::new(cfg.hidden_size, ck.rng.next_u64());
    let v = cfg.vocab_size;
    let mut up = Update::draw(ck, v, &[5, 12, 9, 3], &[2, 5, 1, 1])?;
    let ppo = ppo_config(false);
    // CPU
    let (logits, mut acts) = crate::cpu::llama::forward(&model, &up.batch, &up.positions)?;
    up.set_logprobs(ck, &logits.data, v);
    let (b, t) = (up.batch.b, up.batch.t);
    let last: Vec<f32> = (0..b)
        .flat_map(|r| acts.final_hidden(r, t - 1).to_vec())
        .collect();
    let (losses, dlogits, cw, cb) = up.cpu_loss(&logits.data, v, &last, &critic, &ppo);
    let grads = crate::cpu::llama::backward(&model, &mut acts, &dlogits);
    let mut wants: Vec<&[f32]> = vec![&logits.data, &losses];
    wants.extend(grads.named().iter().map(|(_, t)| &t.data[..]));
    wants.extend([&cw[..], &cb[..]]);
    let shape = format!("{name} B={b} T={t} M={}", up.tokens.len());
    let dev = DevModel::upload(ck.g, &Model::Llama(model))?;
    let n_params = grads.named().len();
    ck.parts_rows(rows("llama", &shape, n_params), &wants, |g| {
        up.device_row(g, &dev, &critic, &ppo)
    })
}
