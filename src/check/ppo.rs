//! `pgsrm check`'s rows for the policy update's kernels: the fused actor loss (both objectives),
//! the critic loss, the value head, the gradient norm and clipping, and AdamW, each against
//! `ppo::loss` and `ppo::adamw`.

use super::backward::GRAD_TOL;
use super::table::{Checker, randn};
use crate::cuda::device::DevBuf;
use crate::cuda::ops::optim;
use crate::cuda::ops::ppo_loss::{self as kl, ActorInputs, DevActorLoss};
use crate::ppo::PpoConfig;
use crate::ppo::loss::{self, Critic};
use crate::tensor::Tensor;
use anyhow::Result;

/// The fused loss's tolerance: its value and logit gradient within 1e-4 of the CPU's.
const LOSS_TOL: f32 = 1e-4;

pub(super) fn run_all(ck: &mut Checker) -> Result<()> {
    let small = ck.small();
    for clip in [None, Some(0.2)] {
        actor_loss(ck, if small { 4 } else { 64 }, 50257, clip)?;
        actor_loss(ck, 9, 1000, clip)?;
        actor_loss(ck, 3, 7, clip)?;
    }
    for value_clip in [None, Some(0.2)] {
        critic_loss(ck, 7, value_clip)?;
        critic_loss(ck, 300, value_clip)?;
    }
    value_head(ck, 5, 40, 768)?;
    value_head(ck, 1, 3, 33)?;
    let sizes = [100_003, 7, 2 * 32768 + 1];
    grad_zero(ck, &sizes)?;
    clip_grad_norm(ck, &sizes, 1.0)?;
    clip_grad_norm(ck, &sizes, 1e4)?;
    adamw(ck, &sizes, false)?;
    adamw(ck, &[1000, 1], true)?;
    Ok(())
}

/// The actor's loss on M tokens of a vocabulary of V: sampling-time log-probabilities near the
/// actor's (so that ratios fall on both sides of a clip range), reference ones near them too.
fn actor_loss(ck: &mut Checker, m: usize, v: usize, clip_range: Option<f32>) -> Result<()> {
    let logits = randn(&mut ck.rng, m * v, 3.0);
    let tokens: Vec<u32> = (0..m).map(|_| ck.rng.below(v) as u32).collect();
    let advantages = randn(&mut ck.rng, m, 1.0);
    let mut logp = vec![0.0; m * v];
    crate::cpu::ops::log_softmax_forward(&mut logp, &logits, v);
    let mut old = Vec::with_capacity(m);
    let mut reference = Vec::with_capacity(m);
    for (i, &t) in tokens.iter().enumerate() {
        let lp = logp[i * v + t as usize];
        old.push(lp + 0.3 * ck.rng.normal() as f32);
        reference.push(lp + 0.5 * ck.rng.normal() as f32);
    }
    let cfg = PpoConfig {
        clip_range,
        entropy_coef: 0.01,
        ..PpoConfig::default()
    };
    let kl_coef = 0.1;
    let want = loss::actor_loss(
        &loss::ActorInputs {
            logits: &logits,
            vocab: v,
            tokens: &tokens,
            old_logprobs: &old,
            ref_logprobs: &reference,
            advantages: &advantages,
        },
        &cfg,
        kl_coef,
    );
    let means = [
        want.policy,
        want.entropy,
        want.kl,
        want.actor,
        want.approx_kl,
        want.clip_fraction,
    ];
    let objective = match clip_range {
        None => "-mean(logp A)".to_string(),
        Some(c) => format!("clipped {c}"),
    };
    ck.parts(
        "actor_loss",
        format!("M={m} V={v} {objective}"),
        &[&means, &want.logprobs, &want.dlogits],
        LOSS_TOL,
        |g| {
            let dev_logits = g.upload(&logits)?;
            let dev_tokens = g.upload(&tokens)?;
            let (dold, dref, dadv) = (
                g.upload(&old)?,
                g.upload(&reference)?,
                g.upload(&advantages)?,
            );
            let inp = ActorInputs {
                logits: &dev_logits,
                vocab: v,
                tokens: &dev_tokens,
                old_logprobs: &dold,
                ref_logprobs: &dref,
                advantages: &dadv,
            };
            let mut out = DevActorLoss::new(g, m, v)?;
            kl::actor_loss(g, &mut out, &inp, &cfg, kl_coef)?;
            g.sync()?;
            Ok(vec![
                g.download(&out.means)?,
                g.download(&out.logprobs)?,
                g.download(&out.dlogits)?,
            ])
        },
    )
}

fn critic_loss(ck: &mut Checker, b: usize, value_clip: Option<f32>) -> Result<()> {
    let values = randn(&mut ck.rng, b, 1.0);
    let old: Vec<f32> = values
        .iter()
        .map(|&x| x + 0.3 * ck.rng.normal() as f32)
        .collect();
    let returns: Vec<f32> = (0..b).map(|_| ck.rng.uniform() as f32).collect();
    let (mse, closs, dv) = loss::critic_loss(&values, &old, &returns, value_clip);
    let clip = value_clip.map_or("no value clip".to_string(), |c| format!("value clip {c}"));
    ck.parts(
        "critic_loss",
        format!("B={b} {clip}"),
        &[&[mse, closs], &dv],
        LOSS_TOL,
        |g| {
            let (mut out, mut d) = (g.poisoned(2)?, g.poisoned(b)?);
            kl::critic_loss(
                g,
                &mut out,
                &mut d,
                &g.upload(&values)?,
                &g.upload(&old)?,
                &g.upload(&returns)?,
                b,
                value_clip,
            )?;
            g.sync()?;
            Ok(vec![g.download(&out)?, g.download(&d)?])
        },
    )
}

/// The value head on B of N hidden rows: its values, then the gradients of w and b from dvalues,
/// as `cpu::policy` computes them.
fn value_head(ck: &mut Checker, b: usize, n: usize, c: usize) -> Result<()> {
    let critic = Critic::new(c, ck.rng.next_u64());
    let hidden = randn(&mut ck.rng, n * c, 1.0);
    let rows: Vec<usize> = (0..b).map(|_| ck.rng.below(n)).collect();
    let dv = randn(&mut ck.rng, b, 0.1);
    let values: Vec<f32> = rows
        .iter()
        .map(|&r| critic.value(&hidden[r * c..(r + 1) * c]))
        .collect();
    let (mut cw, mut cb) = (vec![0.0f32; c], vec![0.0f32]);
    for (i, &r) in rows.iter().enumerate() {
        cb[0] += dv[i];
        for (gw, x) in cw.iter_mut().zip(&hidden[r * c..(r + 1) * c]) {
            *gw += dv[i] * x;
        }
    }
    let rows_i: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    ck.parts(
        "value_forward + value_backward",
        format!("B={b} N={n} C={c}"),
        &[&values, &cw, &cb],
        GRAD_TOL,
        |g| {
            let (dh, dr) = (g.upload(&hidden)?, g.upload(&rows_i)?);
            let mut out = g.poisoned(b)?;
            let (w, bias) = (g.upload(&critic.w.data)?, g.upload(&critic.b.data)?);
            kl::value_forward(g, &mut out, &dh, &dr, &w, &bias, b, c)?;
            let (mut gw, mut gb) = (g.zeros(c)?, g.zeros(1)?);
            kl::value_backward(g, &mut gw, &mut gb, &g.upload(&dv)?, &dh, &dr, b, c)?;
            g.sync()?;
            Ok(vec![g.download(&out)?, g.download(&gw)?, g.download(&gb)?])
        },
    )
}

fn tensors(ck: &mut Checker, sizes: &[usize], std: f32) -> Vec<Tensor> {
    sizes
        .iter()
        .map(|&n| Tensor::from_vec(&[n], randn(&mut ck.rng, n, std)))
        .collect()
}

/// Every gradient set to zero in one launch, from poisoned buffers.
fn grad_zero(ck: &mut Checker, sizes: &[usize]) -> Result<()> {
    let want = vec![0.0; sizes.iter().sum()];
    ck.case("grad_zero", format!("{sizes:?}"), &want, |g| {
        let mut bufs: Vec<DevBuf<f32>> = sizes
            .iter()
            .map(|&n| g.poisoned(n))
            .collect::<Result<_>>()?;
        optim::grad_zero(g, &mut bufs.iter_mut().collect::<Vec<_>>(), &mut None)?;
        let mut out = Vec::new();
        for b in &bufs {
            out.extend(g.download(b)?);
        }
        Ok(out)
    })
}

/// The global norm of tensors of `sizes` (pieces of the first pass split across tensors), the
/// clip coefficient and the clipped gradients, against `ppo::clip_grad_norm`.
fn clip_grad_norm(ck: &mut Checker, sizes: &[usize], max_norm: f32) -> Result<()> {
    let grads = tensors(ck, sizes, 0.01);
    let mut want = grads.clone();
    let norm = crate::ppo::clip_grad_norm(&mut want.iter_mut().collect::<Vec<_>>(), max_norm)?;
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    let mut wants: Vec<&[f32]> = want.iter().map(|t| &t.data[..]).collect();
    let head = [norm, coef];
    wants.insert(0, &head);
    ck.parts(
        "grad_norm + grad_clip",
        format!("{sizes:?} max {max_norm}"),
        &wants,
        LOSS_TOL,
        |g| {
            let mut bufs: Vec<DevBuf<f32>> = grads
                .iter()
                .map(|t| g.upload(&t.data))
                .collect::<Result<_>>()?;
            let (norm, coef) = optim::clip_grad_norm(
                g,
                &mut bufs.iter_mut().collect::<Vec<_>>(),
                max_norm,
                &mut optim::NormBufs::default(),
            )?;
            g.sync()?;
            let mut out = vec![vec![norm, coef]];
            for b in &bufs {
                out.push(g.download(b)?);
            }
            Ok(out)
        },
    )
}

/// Three AdamW steps against `ppo::AdamW` on the parameters, moments and step count; with
/// `clipped`, each step's gradients are clipped first (on the device by the step itself, from the
/// norm's coefficient; on the CPU by `clip_grad_norm`).
fn adamw(ck: &mut Checker, sizes: &[usize], clipped: bool) -> Result<()> {
    let params = tensors(ck, sizes, 0.5);
    let steps: Vec<Vec<Tensor>> = (0..3).map(|_| tensors(ck, sizes, 0.3)).collect();
    let max_norm = 1.0;
    let refs: Vec<&Tensor> = params.iter().collect();
    let host = crate::ppo::AdamW::new(&refs, 1e-3, 0.9, 0.999, 1e-8, 0.01);
    let mut opt = host.clone();
    let mut p = params.clone();
    for grads in &steps {
        let mut gr = grads.clone();
        if clipped {
            crate::ppo::clip_grad_norm(&mut gr.iter_mut().collect::<Vec<_>>(), max_norm)?;
        }
        opt.step(
            &mut p.iter_mut().collect::<Vec<_>>(),
            &gr.iter().collect::<Vec<_>>(),
        )?;
    }
    let mut wants: Vec<&[f32]> = Vec::new();
    for list in [&p, &opt.m, &opt.v] {
        wants.extend(list.iter().map(|t| &t.data[..]));
    }
    let name = if clipped {
        "adamw_step (clip folded in)"
    } else {
        "adamw_step"
    };
    ck.parts(name, format!("{sizes:?} 3 steps"), &wants, GRAD_TOL, |g| {
        let mut dp: Vec<DevBuf<f32>> = params
            .iter()
            .map(|t| g.upload(&t.data))
            .collect::<Result<_>>()?;
        let mut dev = optim::AdamW::upload(g, &host)?;
        for grads in &steps {
            let dg: Vec<DevBuf<f32>> = grads
                .iter()
                .map(|t| g.upload(&t.data))
                .collect::<Result<_>>()?;
            let views: Vec<&DevBuf<f32>> = dg.iter().collect();
            let nc = if clipped {
                let mut nc = g.alloc(2)?;
                let mut partial = g.alloc(optim::norm_pieces(&views))?;
                optim::grad_norm(g, &mut nc, &mut partial, &views, max_norm, &mut None)?;
                Some(nc)
            } else {
                None
            };
            dev.step(
                g,
                &mut dp.iter_mut().collect::<Vec<_>>(),
                &views,
                nc.as_ref(),
            )?;
        }
        g.sync()?;
        let moments = dev.download(g, &host)?;
        let mut out = Vec::new();
        for b in &dp {
            out.push(g.download(b)?);
        }
        for list in [moments.m, moments.v] {
            out.extend(list.into_iter().map(|t| t.data));
        }
        Ok(out)
    })
}
