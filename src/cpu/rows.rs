//! Either model family run on the rows of a prefix store (`cpu::prefix`): what kept rollouts and
//! the reference's prompt cache need from a model, one interface for GPT-2 and Llama.

use crate::cpu::gpt2::{self, ChunkBuffers, Gpt2Activations};
use crate::cpu::kv::{Attend, RowKv};
use crate::cpu::llama::{self, LlamaActivations};
use crate::cpu::ops::PathsRef;
use crate::cpu::prefix::RecordPaths;
use crate::cpu::transposed::TransposedLlama;
use crate::model::gpt2::Gpt2;
use crate::model::llama::Llama;

/// What a run of forwards over the same weights makes once (`RowModel::prepare`) and passes to
/// each: a Llama's weights transposed (`cpu::transposed`). It belongs to those weights, as the keys
/// and values of a `RowKv` do; one made for other weights, or for the other family, is not read.
pub enum Prepared {
    /// GPT-2 reads its weights as stored (its Conv1D projections are already (in, out)).
    Nothing,
    Llama(TransposedLlama),
}

impl Prepared {
    fn llama(&self) -> Option<&TransposedLlama> {
        match self {
            Prepared::Llama(t) => Some(t),
            Prepared::Nothing => None,
        }
    }
}

/// A model whose forward pass runs on prefix rows and can keep what backward needs.
pub trait RowModel {
    /// Saved activations of a kept pass (`gpt2::backward_into`, `llama::backward_into` read them).
    type Record;

    /// Layers, and the width of one layer's keys (and values) per row.
    fn kv_shape(&self) -> (usize, usize);
    fn vocab_size(&self) -> usize;
    /// Positions the model can take.
    fn context(&self) -> usize;
    fn hidden_size(&self) -> usize;

    /// An empty store for this model's keys and values.
    fn row_kv(&self) -> RowKv {
        let (layers, kw) = self.kv_shape();
        RowKv::new(layers, kw)
    }

    /// Zeroed activations of rows at positions `pos` (N), tokens `pad` until fed.
    fn recording(&self, pos: &[usize], pad: u32) -> Self::Record;

    /// What forwards over the weights as they are now read instead of the stored weights.
    fn prepare(&self) -> Prepared;

    /// Runs `tokens` at positions `pos` as new rows of `kv`, row i attending to the rows of
    /// `paths.keys(i)`, and returns the final hidden states (after the last norm) of rows `heads`,
    /// (M, C). With `rec`, the activations go to the record rows numbered as the store's.
    #[allow(clippy::too_many_arguments)]
    fn rows_forward(
        &self,
        prep: &Prepared,
        kv: &mut RowKv,
        tokens: &[u32],
        pos: &[usize],
        paths: PathsRef,
        heads: &[usize],
        rec: Option<&mut Self::Record>,
    ) -> Vec<f32>;

    /// logits (M, V) of final hidden states (M, C).
    fn head_logits(&self, prep: &Prepared, hidden: &[f32]) -> Vec<f32>;

    /// Completes a record for backward with dlogits at record rows `rows`.
    fn finish_record(&self, rec: &mut Self::Record, rows: Vec<usize>, paths: RecordPaths);

    /// The final hidden state of record row `row`, after `finish_record`.
    fn final_hidden<'a>(&self, rec: &'a Self::Record, row: usize) -> &'a [f32];
}

impl RowModel for Gpt2 {
    type Record = Gpt2Activations;

    fn kv_shape(&self) -> (usize, usize) {
        (self.config.n_layer, self.config.n_embd)
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context(&self) -> usize {
        self.config.n_positions
    }

    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }

    fn recording(&self, pos: &[usize], pad: u32) -> Gpt2Activations {
        Gpt2Activations::recording(self, pos.iter().map(|&p| p as u32).collect(), pad)
    }

    fn prepare(&self) -> Prepared {
        Prepared::Nothing
    }

    fn rows_forward(
        &self,
        _prep: &Prepared,
        kv: &mut RowKv,
        tokens: &[u32],
        pos: &[usize],
        paths: PathsRef,
        heads: &[usize],
        rec: Option<&mut Gpt2Activations>,
    ) -> Vec<f32> {
        let at = kv.rows();
        let mut attend = Attend::Rows { kv, paths };
        gpt2::chunk_forward(
            self,
            &mut ChunkBuffers::default(),
            tokens,
            pos,
            &mut attend,
            heads,
            rec.map(|r| (r, at)),
        )
    }

    fn head_logits(&self, _prep: &Prepared, hidden: &[f32]) -> Vec<f32> {
        gpt2::head_forward(self, hidden)
    }

    fn finish_record(&self, rec: &mut Gpt2Activations, rows: Vec<usize>, paths: RecordPaths) {
        rec.finish_record(self, rows, paths);
    }

    fn final_hidden<'a>(&self, rec: &'a Gpt2Activations, row: usize) -> &'a [f32] {
        rec.final_hidden_row(row)
    }
}

impl RowModel for Llama {
    type Record = LlamaActivations;

    fn kv_shape(&self) -> (usize, usize) {
        let cfg = &self.config;
        (cfg.num_hidden_layers, cfg.n_kv_heads() * cfg.head_dim())
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn recording(&self, pos: &[usize], pad: u32) -> LlamaActivations {
        LlamaActivations::recording(self, pos.to_vec(), pad)
    }

    fn prepare(&self) -> Prepared {
        Prepared::Llama(TransposedLlama::of(self))
    }

    fn rows_forward(
        &self,
        prep: &Prepared,
        kv: &mut RowKv,
        tokens: &[u32],
        pos: &[usize],
        paths: PathsRef,
        heads: &[usize],
        rec: Option<&mut LlamaActivations>,
    ) -> Vec<f32> {
        llama::rows_forward(self, prep.llama(), kv, tokens, pos, paths, heads, rec)
    }

    fn head_logits(&self, prep: &Prepared, hidden: &[f32]) -> Vec<f32> {
        llama::head_logits(self, prep.llama(), hidden)
    }

    fn finish_record(&self, rec: &mut LlamaActivations, rows: Vec<usize>, paths: RecordPaths) {
        rec.finish_record(self, rows, paths);
    }

    fn final_hidden<'a>(&self, rec: &'a LlamaActivations, row: usize) -> &'a [f32] {
        rec.final_hidden_row(row)
    }
}
