//! Launchers of `kernels/ppo_loss.cu`: the actor's fused loss, the critic's loss and the value
//! head, mirroring `ppo::loss::{actor_loss, critic_loss}` and `ppo::loss::Critic`.

use crate::cuda::device::{DevBuf, Gpu, Grid};
use crate::cuda::ops::{blocks, int, need, per_row, warps};
use crate::ppo::PpoConfig;
use crate::ppo::loss::ActorLoss;
use anyhow::Result;

type Buf = DevBuf<f32>;

/// Terms per scored token that `actor_loss` hands to its means (the kernel's N_TERMS).
const TERMS: usize = 5;

/// The per-token inputs of the actor loss on the device, as `ppo::loss::ActorInputs`; M tokens.
pub struct ActorInputs<'a> {
    /// (M, V) actor logits at the positions that predict the scored tokens.
    pub logits: &'a Buf,
    pub vocab: usize,
    /// (M) the sampled tokens.
    pub tokens: &'a DevBuf<u32>,
    /// (M) their log-probabilities at sampling time.
    pub old_logprobs: &'a Buf,
    /// (M) their log-probabilities under the frozen reference model.
    pub ref_logprobs: &'a Buf,
    /// (M) the advantage of each token's sequence.
    pub advantages: &'a Buf,
}

/// What `actor_loss` leaves on the device for M tokens of a vocabulary of V.
pub struct DevActorLoss {
    /// (6) policy, entropy, KL, actor, approximate KL, clip fraction: `ActorLoss`'s means.
    pub means: Buf,
    /// (M) the actor's log-probabilities of the sampled tokens.
    pub logprobs: Buf,
    /// (M, V) dloss/dlogits.
    pub dlogits: Buf,
    /// (M, 5) each token's terms of the means.
    terms: Buf,
    m: usize,
    v: usize,
    /// Tokens the buffers hold (M at most).
    cap: usize,
}

impl DevActorLoss {
    pub fn new(g: &Gpu, m: usize, v: usize) -> Result<Self> {
        Ok(DevActorLoss {
            means: g.alloc(6)?,
            logprobs: g.alloc(m.max(1))?,
            dlogits: g.alloc((m * v).max(1))?,
            terms: g.alloc((m * TERMS).max(1))?,
            m,
            v,
            cap: m,
        })
    }

    /// Buffers for `m` tokens of a vocabulary of `v`: `kept`'s when they hold as many, else new
    /// ones (so an update's loss does not allocate once a run's batches have been seen).
    pub fn reusing(g: &Gpu, kept: Option<Self>, m: usize, v: usize) -> Result<Self> {
        match kept {
            Some(mut k) if k.v == v && k.cap >= m => {
                k.m = m;
                Ok(k)
            }
            _ => Self::new(g, m, v),
        }
    }

    /// The losses and log-probabilities on the host (the gradient stays on the device).
    pub fn download(&self, g: &Gpu) -> Result<ActorLoss> {
        let means = g.download(&self.means)?;
        let mut logprobs = g.download(&self.logprobs)?;
        logprobs.truncate(self.m);
        Ok(ActorLoss {
            policy: means[0],
            entropy: means[1],
            kl: means[2],
            actor: means[3],
            approx_kl: means[4],
            clip_fraction: means[5],
            logprobs,
            dlogits: Vec::new(),
        })
    }
}

/// `ppo::loss::actor_loss` on the device: the losses' means, the log-probabilities and
/// dloss/dlogits of the M tokens of `inp`, into `out` (made for M tokens of the same vocabulary)
pub fn actor_loss(
    g: &Gpu,
    out: &mut DevActorLoss,
    inp: &ActorInputs,
    cfg: &PpoConfig,
    kl_coef: f32,
) -> Result<()> {
    let (m, v) = (out.m, out.v);
    need("actor_loss vocabulary", inp.vocab, v)?;
    need("actor_loss logits", inp.logits.len(), m * v)?;
    need(
        "actor_loss tokens",
        inp.tokens
            .len()
            .min(inp.old_logprobs.len())
            .min(inp.ref_logprobs.len())
            .min(inp.advantages.len()),
        m,
    )?;
    let (mi, vi) = (int("M", m)?, int("V", v)?);
    let args = [
        (&out.dlogits).into(),
        (&out.logprobs).into(),
        (&out.terms).into(),
        inp.logits.into(),
        inp.tokens.into(),
        inp.old_logprobs.into(),
        inp.ref_logprobs.into(),
        inp.advantages.into(),
        mi.into(),
        vi.into(),
        cfg.clip_range.unwrap_or(-1.0).into(),
        cfg.entropy_coef.into(),
        kl_coef.into(),
    ];
    g.launch("ppo_loss.cu", "actor_loss", per_row(m, 256), &args)?;
    let args = [
        (&out.means).into(),
        (&out.terms).into(),
        mi.into(),
        cfg.entropy_coef.into(),
        kl_coef.into(),
    ];
    g.launch("ppo_loss.cu", "actor_loss_means", one_block(), &args)
}

fn one_block() -> Grid {
    Grid::per_row(1, 256)
}

/// `ppo::loss::critic_loss` on the device: out (2) = (MSE, critic loss 0.5 MSE), dvalues (B)
#[allow(clippy::too_many_arguments)]
pub fn critic_loss(
    g: &Gpu,
    out: &mut Buf,
    dvalues: &mut Buf,
    values: &Buf,
    old_values: &Buf,
    returns: &Buf,
    b: usize,
    value_clip: Option<f32>,
) -> Result<()> {
    need("critic_loss out", out.len(), 2)?;
    need(
        "critic_loss values",
        dvalues
            .len()
            .min(values.len())
            .min(old_values.len())
            .min(returns.len()),
        b,
    )?;
    let args = [
        (&*out).into(),
        (&*dvalues).into(),
        values.into(),
        old_values.into(),
        returns.into(),
        int("B", b)?.into(),
        value_clip.unwrap_or(-1.0).into(),
    ];
    g.launch("ppo_loss.cu", "critic_loss", one_block(), &args)
}

/// values (B) = w . hidden[rows] + bias: the value head (`Critic::value`) on rows `rows` (B) of
/// hidden (N, C)
#[allow(clippy::too_many_arguments)]
pub fn value_forward(
    g: &Gpu,
    values: &mut Buf,
    hidden: &Buf,
    rows: &DevBuf<i32>,
    w: &Buf,
    bias: &Buf,
    b: usize,
    c: usize,
) -> Result<()> {
    need("value_forward values", values.len().min(rows.len()), b)?;
    need("value_forward w", w.len(), c)?;
    need("value_forward bias", bias.len(), 1)?;
    let args = [
        (&*values).into(),
        hidden.into(),
        rows.into(),
        w.into(),
        bias.into(),
        int("B", b)?.into(),
        int("C", c)?.into(),
    ];
    g.launch("ppo_loss.cu", "value_forward", warps(b), &args)
}

/// dw (C) += sum_b dvalues[b] hidden[rows[b]]; dbias (1) += sum_b dvalues[b]
#[allow(clippy::too_many_arguments)]
pub fn value_backward(
    g: &Gpu,
    dw: &mut Buf,
    dbias: &mut Buf,
    dvalues: &Buf,
    hidden: &Buf,
    rows: &DevBuf<i32>,
    b: usize,
    c: usize,
) -> Result<()> {
    need("value_backward dvalues", dvalues.len().min(rows.len()), b)?;
    need("value_backward dw", dw.len(), c)?;
    need("value_backward dbias", dbias.len(), 1)?;
    let args = [
        (&*dw).into(),
        (&*dbias).into(),
        dvalues.into(),
        hidden.into(),
        rows.into(),
        int("B", b)?.into(),
        int("C", c)?.into(),
    ];
    g.launch("ppo_loss.cu", "value_backward", blocks(c + 1, 256), &args)
}
