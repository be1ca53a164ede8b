//! GPT-2 forward and backward on the CPU, built from the ops in `cpu::ops`.
//!
//! Batches of different lengths use LEFT padding: row r of a batch of padded length T holds its
//! tokens in [start[r], T), and the position id of index t is t - start[r], so every sequence
//! starts at position 0 whatever its length. Keys before start[r] are masked in attention.
//! Left padding keeps the last token of every row at index T - 1, which is where decoding appends.
//!
//! Logits are computed only for the (row, position) pairs asked for.

use crate::batch::Batch;
use crate::cpu::kv::Attend;
use crate::cpu::ops::*;
use crate::cpu::prefix::RecordPaths;
use crate::model::gpt2::{Gpt2, Gpt2Weights};
use crate::tensor::Tensor;
use anyhow::{Result, bail};

/// What one transformer block saves for backward; N = B T rows.
#[derive(Default, Debug)]
struct BlockActs {
    ln1: Vec<f32>,      // (N, C)
    ln1_mean: Vec<f32>, // (N)
    ln1_rstd: Vec<f32>, // (N)
    qkv: Vec<f32>,      // (N, 3C)
    att: Vec<f32>,      // (B, H, T, T)
    atty: Vec<f32>,     // (N, C)
    res1: Vec<f32>,     // (N, C)  input + attention branch
    ln2: Vec<f32>,      // (N, C)
    ln2_mean: Vec<f32>, // (N)
    ln2_rstd: Vec<f32>, // (N)
    fch: Vec<f32>,      // (N, 4C)
    fch_gelu: Vec<f32>, // (N, 4C)
    res2: Vec<f32>,     // (N, C)  res1 + MLP branch: the block's output
}

/// Saved activations and scratch of one forward/backward pass. Keep one and pass it to
/// `forward_into` on every step: the buffers are reused, not reallocated.
#[derive(Default, Debug)]
pub struct Gpt2Activations {
    b: usize,
    t: usize,
    tokens: Vec<u32>,
    pos: Vec<u32>,
    start: Vec<usize>,
    rows: Vec<usize>,  // flat row index b T + t of each chosen pair
    encoded: Vec<f32>, // (N, C)
    blocks: Vec<BlockActs>,
    lnf: Vec<f32>,      // (N, C)
    lnf_mean: Vec<f32>, // (N)
    lnf_rstd: Vec<f32>, // (N)
    gathered: Vec<f32>, // (M, C)
    /// For a record of rows that share prefixes (`cpu::prefix`): what each row attends to.
    shared: Option<RecordPaths>,
    /// (M, V) logits of the chosen pairs after `forward_into`.
    pub logits: Vec<f32>,
    // backward scratch
    scratch: Vec<f32>,   // (N, C)
    dres: Vec<f32>,      // (N, C)
    dln: Vec<f32>,       // (N, C)
    datty: Vec<f32>,     // (N, C)
    dqkv: Vec<f32>,      // (N, 3C)
    dfch: Vec<f32>,      // (N, 4C)
    dfch_gelu: Vec<f32>, // (N, 4C)
}

fn fit(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

fn zeroed(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.clear();
    v.resize(n, 0.0);
    v
}

impl Gpt2Activations {
    pub fn new() -> Self {
        Self::default()
    }

    /// The final hidden state (after ln_f, C wide) at (row, position) of the last forward: what
    /// the head multiplies, and what a value head reads.
    pub fn final_hidden(&self, row: usize, pos: usize) -> &[f32] {
        assert!(
            row < self.b && pos < self.t,
            "({row}, {pos}) is outside the last batch"
        );
        let c = self.lnf.len() / (self.b * self.t);
        let r = row * self.t + pos;
        &self.lnf[r * c..(r + 1) * c]
    }

    /// The final hidden state of record row `row` (a recorded rollout's flat row).
    pub(crate) fn final_hidden_row(&self, row: usize) -> &[f32] {
        let c = self.lnf.len() / (self.b * self.t);
        &self.lnf[row * c..(row + 1) * c]
    }

    /// Number of chosen (row, position) pairs of the last forward.
    pub fn num_logit_rows(&self) -> usize {
        self.rows.len()
    }
}

/// A buffer of the saved activations, for a decoder that fills them chunk by chunk.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Encoded,
    Ln1,
    Ln1Mean,
    Ln1Rstd,
    Qkv,
    Atty,
    Res1,
    Ln2,
    Ln2Mean,
    Ln2Rstd,
    Fch,
    FchGelu,
    Res2,
}

impl Gpt2Activations {
    /// Zeroed activations of `n` record rows with position ids `pos` (N), to be filled chunk by
    /// chunk by `chunk_forward`, then completed by `finish_record` with the paths the rows
    /// attend to (`cpu::prefix`). Tokens not yet fed are `pad`.
    pub(crate) fn recording(model: &Gpt2, pos: Vec<u32>, pad: u32) -> Self {
        let c = model.config.n_embd;
        let n = pos.len();
        let block = || BlockActs {
            ln1: vec![0.0; n * c],
            ln1_mean: vec![0.0; n],
            ln1_rstd: vec![0.0; n],
            qkv: vec![0.0; n * 3 * c],
            att: Vec::new(),
            atty: vec![0.0; n * c],
            res1: vec![0.0; n * c],
            ln2: vec![0.0; n * c],
            ln2_mean: vec![0.0; n],
            ln2_rstd: vec![0.0; n],
            fch: vec![0.0; n * 4 * c],
            fch_gelu: vec![0.0; n * 4 * c],
            res2: vec![0.0; n * c],
        };
        // One row of N: every per-row operation sees the record's rows as one sequence.
        Gpt2Activations {
            b: 1,
            t: n,
            pos,
            tokens: vec![pad; n],
            start: vec![0],
            encoded: vec![0.0; n * c],
            blocks: (0..model.config.n_layer).map(|_| block()).collect(),
            ..Default::default()
        }
    }

    /// Copies a chunk's rows into record rows `at..` of `slot` of layer `layer` (ignored for
    /// `Encoded`).
    fn put(&mut self, layer: usize, slot: Slot, src: &[f32], at: usize, rows: usize) {
        let width = src.len() / rows;
        let dst: &mut Vec<f32> = match slot {
            Slot::Encoded => &mut self.encoded,
            _ => {
                let a = &mut self.blocks[layer];
                match slot {
                    Slot::Ln1 => &mut a.ln1,
                    Slot::Ln1Mean => &mut a.ln1_mean,
                    Slot::Ln1Rstd => &mut a.ln1_rstd,
                    Slot::Qkv => &mut a.qkv,
                    Slot::Atty => &mut a.atty,
                    Slot::Res1 => &mut a.res1,
                    Slot::Ln2 => &mut a.ln2,
                    Slot::Ln2Mean => &mut a.ln2_mean,
                    Slot::Ln2Rstd => &mut a.ln2_rstd,
                    Slot::Fch => &mut a.fch,
                    Slot::FchGelu => &mut a.fch_gelu,
                    Slot::Res2 => &mut a.res2,
                    Slot::Encoded => unreachable!(),
                }
            }
        };
        dst[at * width..(at + rows) * width].copy_from_slice(src);
    }

    /// Completes recorded activations for `backward` with dlogits at record rows `rows`: every
    /// layer's attention probabilities along the rows' paths (decoding does not keep them), for
    /// the rows that can receive a gradient, and the final layernorm of every row.
    pub(crate) fn finish_record(&mut self, model: &Gpt2, rows: Vec<usize>, record: RecordPaths) {
        let cfg = &model.config;
        let w = &model.weights;
        let c = cfg.n_embd;
        let n = self.b * self.t;
        let heads = Heads {
            n_head: cfg.n_head,
            n_kv_head: cfg.n_head,
            head_dim: cfg.head_dim(),
        };
        let layout = QkvLayout::fused(cfg.n_head, cfg.n_head, cfg.head_dim());
        let live = record.live_paths();
        let mut out = vec![0.0f32; live.len() * c];
        for a in &mut self.blocks {
            a.att.clear();
            a.att.resize(live.att_len(cfg.n_head), 0.0);
            path_attention_forward(
                &mut out,
                Some(&mut a.att),
                &a.qkv,
                &a.qkv,
                &a.qkv,
                &layout,
                live,
                heads,
            );
        }
        let last: &[f32] = match self.blocks.last() {
            Some(a) => &a.res2,
            None => &self.encoded,
        };
        fit(&mut self.lnf, n * c);
        fit(&mut self.lnf_mean, n);
        fit(&mut self.lnf_rstd, n);
        layernorm_forward(
            &mut self.lnf,
            &mut self.lnf_mean,
            &mut self.lnf_rstd,
            last,
            &w.ln_f_w.data,
            &w.ln_f_b.data,
            n,
            c,
            cfg.layer_norm_epsilon,
        );
        self.gathered.clear();
        for &r in &rows {
            self.gathered
                .extend_from_slice(&self.lnf[r * c..(r + 1) * c]);
        }
        self.rows = rows;
        self.shared = Some(record);
    }
}

/// Buffers of `chunk_forward`, kept between chunks so that decoding does not allocate per step.
#[derive(Default)]
pub struct ChunkBuffers {
    x: Vec<f32>,
    ln: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    atty: Vec<f32>,
    tmp: Vec<f32>,
    fch: Vec<f32>,
    fch_gelu: Vec<f32>,
}

/// Runs a chunk of N new rows, `tokens` at position ids `pos`, through every block, their
/// attention through `attend` (which keeps their keys and values), and returns the final hidden
/// states (after ln_f) of rows `heads`, (M, C). With `rec`, every activation backward needs is
/// copied into record rows `rec.1..` (`Gpt2Activations::recording`).
pub fn chunk_forward(
    model: &Gpt2,
    buf: &mut ChunkBuffers,
    tokens: &[u32],
    pos: &[usize],
    attend: &mut Attend,
    heads: &[usize],
    mut rec: Option<(&mut Gpt2Activations, usize)>,
) -> Vec<f32> {
    let cfg = &model.config;
    let w = &model.weights;
    let c = cfg.n_embd;
    let n = tokens.len();
    assert!(
        pos.len() == n && attend.rows() == n,
        "a chunk of {n} tokens needs as many positions and attention rows"
    );
    let eps = cfg.layer_norm_epsilon;
    let heads_shape = Heads {
        n_head: cfg.n_head,
        n_kv_head: cfg.n_head,
        head_dim: cfg.head_dim(),
    };
    let layout = QkvLayout::fused(cfg.n_head, cfg.n_head, cfg.head_dim());
    for x in [&mut buf.x, &mut buf.ln, &mut buf.atty, &mut buf.tmp] {
        fit(x, n * c);
    }
    fit(&mut buf.mean, n);
    fit(&mut buf.rstd, n);
    fit(&mut buf.qkv, n * 3 * c);
    fit(&mut buf.fch, n * 4 * c);
    fit(&mut buf.fch_gelu, n * 4 * c);
    let pos32: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
    embedding_forward(
        &mut buf.x,
        tokens,
        &pos32,
        &w.wte.data,
        Some(&w.wpe.data),
        c,
    );
    if let Some((r, at)) = rec.as_mut() {
        r.tokens[*at..*at + n].copy_from_slice(tokens);
        r.put(0, Slot::Encoded, &buf.x, *at, n);
    }
    for l in 0..cfg.n_layer {
        let p = &w.blocks[l];
        layernorm_forward(
            &mut buf.ln,
            &mut buf.mean,
            &mut buf.rstd,
            &buf.x,
            &p.ln_1_w.data,
            &p.ln_1_b.data,
            n,
            c,
            eps,
        );
        matmul_forward(
            &mut buf.qkv,
            &buf.ln,
            &p.attn_w.data,
            Some(&p.attn_b.data),
            n,
            c,
            3 * c,
        );
        attend.attend(
            l,
            &mut buf.atty,
            &buf.qkv,
            &buf.qkv,
            &buf.qkv,
            &layout,
            heads_shape,
        );
        if let Some((r, at)) = rec.as_mut() {
            r.put(l, Slot::Ln1, &buf.ln, *at, n);
            r.put(l, Slot::Ln1Mean, &buf.mean, *at, n);
            r.put(l, Slot::Ln1Rstd, &buf.rstd, *at, n);
            r.put(l, Slot::Qkv, &buf.qkv, *at, n);
        }
        matmul_forward(
            &mut buf.tmp,
            &buf.atty,
            &p.attn_proj_w.data,
            Some(&p.attn_proj_b.data),
            n,
            c,
            c,
        );
        // Nothing reads the stream before the add, so the residual adds happen in place.
        for (x, &y) in buf.x.iter_mut().zip(&buf.tmp) {
            *x += y;
        }
        if let Some((r, at)) = rec.as_mut() {
            r.put(l, Slot::Atty, &buf.atty, *at, n);
            r.put(l, Slot::Res1, &buf.x, *at, n);
        }
        layernorm_forward(
            &mut buf.ln,
            &mut buf.mean,
            &mut buf.rstd,
            &buf.x,
            &p.ln_2_w.data,
            &p.ln_2_b.data,
            n,
            c,
            eps,
        );
        matmul_forward(
            &mut buf.fch,
            &buf.ln,
            &p.fc_w.data,
            Some(&p.fc_b.data),
            n,
            c,
            4 * c,
        );
        gelu_tanh_forward(&mut buf.fch_gelu, &buf.fch);
        matmul_forward(
            &mut buf.tmp,
            &buf.fch_gelu,
            &p.fc_proj_w.data,
            Some(&p.fc_proj_b.data),
            n,
            4 * c,
            c,
        );
        for (x, &y) in buf.x.iter_mut().zip(&buf.tmp) {
            *x += y;
        }
        if let Some((r, at)) = rec.as_mut() {
            r.put(l, Slot::Ln2, &buf.ln, *at, n);
            r.put(l, Slot::Ln2Mean, &buf.mean, *at, n);
            r.put(l, Slot::Ln2Rstd, &buf.rstd, *at, n);
            r.put(l, Slot::Fch, &buf.fch, *at, n);
            r.put(l, Slot::FchGelu, &buf.fch_gelu, *at, n);
            r.put(l, Slot::Res2, &buf.x, *at, n);
        }
    }
    attend.finish();
    // Only the rows asked for need the final layernorm.
    let m = heads.len();
    let mut picked = vec![0.0f32; m * c];
    for (dst, &r) in picked.chunks_exact_mut(c).zip(heads) {
        dst.copy_from_slice(&buf.x[r * c..(r + 1) * c]);
    }
    let mut normed = vec![0.0f32; m * c];
    let (mut mean, mut rstd) = (vec![0.0f32; m], vec![0.0f32; m]);
    layernorm_forward(
        &mut normed,
        &mut mean,
        &mut rstd,
        &picked,
        &w.ln_f_w.data,
        &w.ln_f_b.data,
        m,
        c,
        eps,
    );
    normed
}

/// logits (M, V) = hidden (M, C) @ wte^T: the tied head on final hidden states
pub fn head_forward(model: &Gpt2, hidden: &[f32]) -> Vec<f32> {
    let (c, v) = (model.config.n_embd, model.config.vocab_size);
    let m = hidden.len() / c;
    let mut logits = vec![0.0f32; m * v];
    linear_forward(&mut logits, hidden, &model.weights.wte.data, m, c, v);
    logits
}

/// Runs the model on `batch` and returns the logits (M, V) of the M chosen (row, position) pairs,
/// in the order given, with the activations backward needs.
pub fn forward(
    model: &Gpt2,
    batch: &Batch,
    positions: &[(usize, usize)],
) -> Result<(Tensor, Gpt2Activations)> {
    let mut acts = Gpt2Activations::new();
    forward_into(model, batch, positions, &mut acts)?;
    let logits = std::mem::take(&mut acts.logits);
    let shape = [positions.len(), model.config.vocab_size];
    Ok((Tensor::from_vec(&shape, logits), acts))
}

/// `forward`, writing into reusable activations; the logits are left in `acts.logits` (M, V).
pub fn forward_into(
    model: &Gpt2,
    batch: &Batch,
    positions: &[(usize, usize)],
    acts: &mut Gpt2Activations,
) -> Result<()> {
    batch.check(model.config.vocab_size, model.config.n_positions)?;
    let cfg = &model.config;
    let w = &model.weights;
    let (nb, nt, c, v) = (batch.b, batch.t, cfg.n_embd, cfg.vocab_size);
    let n = nb * nt;
    acts.rows.clear();
    for &(r, t) in positions {
        if r >= nb || t >= nt {
            bail!("logit position ({r}, {t}) is outside the batch of {nb} x {nt}");
        }
        acts.rows.push(r * nt + t);
    }
    let m = positions.len();
    acts.b = nb;
    acts.t = nt;
    acts.shared = None;
    acts.tokens.clone_from(&batch.tokens);
    acts.start.clone_from(&batch.start);
    acts.pos = batch.position_ids();

    fit(&mut acts.encoded, n * c);
    embedding_forward(
        &mut acts.encoded,
        &acts.tokens,
        &acts.pos,
        &w.wte.data,
        Some(&w.wpe.data),
        c,
    );
    acts.blocks.resize_with(cfg.n_layer, BlockActs::default);
    fit(&mut acts.scratch, n * c);
    let shape = AttentionShape {
        b: nb,
        t: nt,
        n_head: cfg.n_head,
        n_kv_head: cfg.n_head,
        head_dim: cfg.head_dim(),
    };
    let layout = QkvLayout::fused(cfg.n_head, cfg.n_head, cfg.head_dim());
    let eps = cfg.layer_norm_epsilon;
    for l in 0..cfg.n_layer {
        let (done, rest) = acts.blocks.split_at_mut(l);
        let x: &[f32] = if l == 0 {
            &acts.encoded
        } else {
            &done[l - 1].res2
        };
        let a = &mut rest[0];
        let p = &w.blocks[l];
        fit(&mut a.ln1, n * c);
        fit(&mut a.ln1_mean, n);
        fit(&mut a.ln1_rstd, n);
        fit(&mut a.qkv, n * 3 * c);
        fit(&mut a.att, nb * cfg.n_head * nt * nt);
        fit(&mut a.atty, n * c);
        fit(&mut a.res1, n * c);
        fit(&mut a.ln2, n * c);
        fit(&mut a.ln2_mean, n);
        fit(&mut a.ln2_rstd, n);
        fit(&mut a.fch, n * 4 * c);
        fit(&mut a.fch_gelu, n * 4 * c);
        fit(&mut a.res2, n * c);
        layernorm_forward(
            &mut a.ln1,
            &mut a.ln1_mean,
            &mut a.ln1_rstd,
            x,
            &p.ln_1_w.data,
            &p.ln_1_b.data,
            n,
            c,
            eps,
        );
        matmul_forward(
            &mut a.qkv,
            &a.ln1,
            &p.attn_w.data,
            Some(&p.attn_b.data),
            n,
            c,
            3 * c,
        );
        attention_forward(
            &mut a.atty,
            &mut a.att,
            &a.qkv,
            &a.qkv,
            &a.qkv,
            &layout,
            &acts.start,
            shape,
        );
        matmul_forward(
            &mut acts.scratch,
            &a.atty,
            &p.attn_proj_w.data,
            Some(&p.attn_proj_b.data),
            n,
            c,
            c,
        );
        residual_forward(&mut a.res1, x, &acts.scratch);
        layernorm_forward(
            &mut a.ln2,
            &mut a.ln2_mean,
            &mut a.ln2_rstd,
            &a.res1,
            &p.ln_2_w.data,
            &p.ln_2_b.data,
            n,
            c,
            eps,
        );
        matmul_forward(
            &mut a.fch,
            &a.ln2,
            &p.fc_w.data,
            Some(&p.fc_b.data),
            n,
            c,
            4 * c,
        );
        gelu_tanh_forward(&mut a.fch_gelu, &a.fch);
        matmul_forward(
            &mut acts.scratch,
            &a.fch_gelu,
            &p.fc_proj_w.data,
            Some(&p.fc_proj_b.data),
            n,
            4 * c,
            c,
        );
        residual_forward(&mut a.res2, &a.res1, &acts.scratch);
    }
    let last: &[f32] = match acts.blocks.last() {
        Some(a) => &a.res2,
        None => &acts.encoded,
    };
    fit(&mut acts.lnf, n * c);
    fit(&mut acts.lnf_mean, n);
    fit(&mut acts.lnf_rstd, n);
    layernorm_forward(
        &mut acts.lnf,
        &mut acts.lnf_mean,
        &mut acts.lnf_rstd,
        last,
        &w.ln_f_w.data,
        &w.ln_f_b.data,
        n,
        c,
        eps,
    );
    fit(&mut acts.gathered, m * c);
    fit(&mut acts.logits, m * v);
    logits_forward(
        &mut acts.logits,
        &mut acts.gathered,
        &acts.lnf,
        &acts.rows,
        &w.wte.data,
        v,
        c,
    );
    Ok(())
}

/// Gradients of every parameter given dlogits (M, V) for the pairs of the last forward.
pub fn backward(model: &Gpt2, acts: &mut Gpt2Activations, dlogits: &[f32]) -> Gpt2Weights {
    let mut grads = Gpt2Weights::zeros(&model.config);
    backward_into(model, acts, dlogits, &mut grads);
    grads
}

/// `backward`, adding into `grads` (zero it first for a fresh step). The tied head adds into wte.
pub fn backward_into(
    model: &Gpt2,
    acts: &mut Gpt2Activations,
    dlogits: &[f32],
    grads: &mut Gpt2Weights,
) {
    let cfg = &model.config;
    let w = &model.weights;
    let (nb, nt, c, v) = (acts.b, acts.t, cfg.n_embd, cfg.vocab_size);
    let n = nb * nt;
    // Rows after `nl` receive no gradient (`cpu::prefix::RecordPaths`), so the per-row work stops there.
    let nl = acts.shared.as_ref().map_or(n, |rec| rec.live);
    assert_eq!(
        dlogits.len(),
        acts.rows.len() * v,
        "dlogits must be (M, V) for the M pairs of the forward"
    );
    let shape = AttentionShape {
        b: nb,
        t: nt,
        n_head: cfg.n_head,
        n_kv_head: cfg.n_head,
        head_dim: cfg.head_dim(),
    };
    let layout = QkvLayout::fused(cfg.n_head, cfg.n_head, cfg.head_dim());

    let dlnf = zeroed(&mut acts.dln, n * c);
    logits_backward(
        dlnf,
        &mut grads.wte.data,
        dlogits,
        &acts.gathered,
        &acts.rows,
        &w.wte.data,
        v,
        c,
    );
    let last: &[f32] = match acts.blocks.last() {
        Some(a) => &a.res2,
        None => &acts.encoded,
    };
    zeroed(&mut acts.dres, n * c);
    layernorm_backward(
        &mut acts.dres,
        &mut grads.ln_f_w.data,
        &mut grads.ln_f_b.data,
        &acts.dln,
        last,
        &w.ln_f_w.data,
        &acts.lnf_mean,
        &acts.lnf_rstd,
        nl,
        c,
    );
    // `dres` carries the gradient of the residual stream. A residual add passes its output
    // gradient unchanged to both inputs (residual_backward), so the stream's gradient stays in
    // place and each branch reads it as its output gradient.
    for l in (0..cfg.n_layer).rev() {
        let a = &acts.blocks[l];
        let x: &[f32] = if l == 0 {
            &acts.encoded
        } else {
            &acts.blocks[l - 1].res2
        };
        let p = &w.blocks[l];
        let g = &mut grads.blocks[l];
        // MLP branch: res2 = res1 + fc_proj(gelu(fc(ln2(res1))))
        matmul_backward(
            Some(zeroed(&mut acts.dfch_gelu, n * 4 * c)),
            &mut g.fc_proj_w.data,
            Some(&mut g.fc_proj_b.data),
            &acts.dres,
            &a.fch_gelu,
            &p.fc_proj_w.data,
            nl,
            4 * c,
            c,
        );
        gelu_tanh_backward(
            &mut zeroed(&mut acts.dfch, n * 4 * c)[..nl * 4 * c],
            &a.fch[..nl * 4 * c],
            &acts.dfch_gelu[..nl * 4 * c],
        );
        matmul_backward(
            Some(zeroed(&mut acts.dln, n * c)),
            &mut g.fc_w.data,
            Some(&mut g.fc_b.data),
            &acts.dfch,
            &a.ln2,
            &p.fc_w.data,
            nl,
            c,
            4 * c,
        );
        layernorm_backward(
            &mut acts.dres,
            &mut g.ln_2_w.data,
            &mut g.ln_2_b.data,
            &acts.dln,
            &a.res1,
            &p.ln_2_w.data,
            &a.ln2_mean,
            &a.ln2_rstd,
            nl,
            c,
        );
        // Attention branch: res1 = x + attn_proj(attention(c_attn(ln1(x))))
        matmul_backward(
            Some(zeroed(&mut acts.datty, n * c)),
            &mut g.attn_proj_w.data,
            Some(&mut g.attn_proj_b.data),
            &acts.dres,
            &a.atty,
            &p.attn_proj_w.data,
            nl,
            c,
            c,
        );
        match &acts.shared {
            None => attention_backward(
                QkvGrad::Fused(zeroed(&mut acts.dqkv, n * 3 * c)),
                &acts.datty,
                &a.att,
                &a.qkv,
                &a.qkv,
                &a.qkv,
                &layout,
                &acts.start,
                shape,
            ),
            // Every row attends along its path; a shared row's key and value gradients add up
            // over every path through it.
            Some(rec) => path_attention_backward(
                QkvGrad::Fused(zeroed(&mut acts.dqkv, n * 3 * c)),
                &acts.datty,
                &a.att,
                &a.qkv,
                &a.qkv,
                &a.qkv,
                &layout,
                rec.live_paths(),
                &rec.uses,
                Heads {
                    n_head: cfg.n_head,
                    n_kv_head: cfg.n_head,
                    head_dim: cfg.head_dim(),
                },
            ),
        }
        matmul_backward(
            Some(zeroed(&mut acts.dln, n * c)),
            &mut g.attn_w.data,
            Some(&mut g.attn_b.data),
            &acts.dqkv,
            &a.ln1,
            &p.attn_w.data,
            nl,
            c,
            3 * c,
        );
        layernorm_backward(
            &mut acts.dres,
            &mut g.ln_1_w.data,
            &mut g.ln_1_b.data,
            &acts.dln,
            x,
            &p.ln_1_w.data,
            &a.ln1_mean,
            &a.ln1_rstd,
            nl,
            c,
        );
    }
    embedding_backward(
        &mut grads.wte.data,
        Some(&mut grads.wpe.data),
        &acts.dres,
        &acts.tokens[..nl],
        &acts.pos[..nl],
        c,
    );
}

/// The next-token pairs of a batch: every real index t in [start[r], T - 1) predicts token t + 1.
/// A row's first token has no prediction, because nothing real comes before it. (Hugging Face's
/// LM loss on a left-padded batch would also score the prediction made at the last padding index;
/// we do not: that prediction sees only padding.)
pub fn next_token_pairs(batch: &Batch) -> (Vec<(usize, usize)>, Vec<u32>) {
    let mut pairs = Vec::new();
    let mut targets = Vec::new();
    for (r, &st) in batch.start.iter().enumerate() {
        for t in st..batch.t.saturating_sub(1) {
            pairs.push((r, t));
            targets.push(batch.tokens[r * batch.t + t + 1]);
        }
    }
    (pairs, targets)
}

/// Mean cross-entropy of logits (M, V) against targets (M), as Hugging Face's LM loss averages
/// over the scored tokens, and its gradient dlogits (M, V).
pub fn lm_loss(logits: &[f32], targets: &[u32], vocab: usize) -> (f32, Vec<f32>) {
    let mut dlogits = Vec::new();
    let loss = lm_loss_into(logits, targets, vocab, &mut dlogits);
    (loss, dlogits)
}

/// `lm_loss`, writing the gradient into a reusable buffer (resized to M V).
pub fn lm_loss_into(logits: &[f32], targets: &[u32], vocab: usize, dlogits: &mut Vec<f32>) -> f32 {
    let m = targets.len();
    assert_eq!(logits.len(), m * vocab, "logits must be (M, V)");
    dlogits.clear();
    dlogits.resize(m * vocab, 0.0);
    if m == 0 {
        return 0.0;
    }
    let mut losses = vec![0.0f32; m];
    let mut lse = vec![0.0f32; m];
    cross_entropy_forward(&mut losses, &mut lse, logits, targets, vocab);
    let loss = (losses.iter().map(|&x| x as f64).sum::<f64>() / m as f64) as f32;
    let dlosses = vec![1.0 / m as f32; m];
    cross_entropy_backward(dlogits, &dlosses, logits, &lse, targets, vocab);
    loss
}
