//! Sequences that share token prefixes, stored as one row per distinct prefix.
//!
//! A batch's prompts are mostly the same tokens: a chat model's prompts share the system turn and
//! the task's instruction (about 40 of their 55 tokens), and a prompt drawn twice shares all of
//! them. Row i holds one token at position `pos[i]` after its parent row; the rows of a sequence
//! are its path from the root, and every sequence that starts with the same tokens goes through
//! the same rows. A model run on the rows (`cpu::kv::Attend::Rows`) computes each shared token
//! once; attention reads each row's path (`cpu::ops::path_attention`), and backward sums the
//! gradients of a shared row over every path through it.

use crate::cpu::ops::{KeyUses, PathsRef};
use std::collections::HashMap;
use std::ops::Range;

/// Rows of tokens, each after its parent row (or first in its sequence), parents before children.
#[derive(Clone, Debug, Default)]
pub struct PrefixRows {
    pub tokens: Vec<u32>,
    /// Position id of each row: its index in its sequence.
    pub pos: Vec<usize>,
    parent: Vec<Option<usize>>,
    /// The row of (parent, token), for rows that sequences share.
    shared: HashMap<(Option<usize>, u32), usize>,
}

/// The paths of a range of rows, ragged: row `first + i` attends to `keys(i)`.
#[derive(Clone, Debug, Default)]
pub struct Paths {
    offsets: Vec<usize>,
    rows: Vec<usize>,
}

impl Paths {
    /// The paths of all the rows.
    pub fn all(&self) -> PathsRef<'_> {
        PathsRef {
            offsets: &self.offsets,
            rows: &self.rows,
        }
    }

    /// The paths of rows `range` (indices into these paths, not row numbers).
    pub fn range(&self, range: Range<usize>) -> PathsRef<'_> {
        PathsRef {
            offsets: &self.offsets[range.start..=range.end],
            rows: &self.rows,
        }
    }
}

impl PrefixRows {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The row of the last token of `seq` continued after row `after` (from the start with
    /// `None`), adding rows for the tokens not yet present. `after` itself for an empty `seq`.
    pub fn insert(&mut self, after: Option<usize>, seq: &[u32]) -> Option<usize> {
        let mut at = after;
        for &tok in seq {
            at = Some(match self.shared.get(&(at, tok)) {
                Some(&r) => r,
                None => {
                    let r = self.push(at, tok);
                    self.shared.insert((at, tok), r);
                    r
                }
            });
        }
        at
    }

    /// A new row of `token` after row `after`, of its own even if another row has the same
    /// prefix (a sampled continuation belongs to one sequence).
    pub fn push(&mut self, after: Option<usize>, token: u32) -> usize {
        let r = self.tokens.len();
        self.tokens.push(token);
        self.pos.push(after.map_or(0, |p| self.pos[p] + 1));
        self.parent.push(after);
        r
    }

    /// Forgets rows `n..`.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.tokens.truncate(n);
            self.pos.truncate(n);
            self.parent.truncate(n);
            self.shared.retain(|_, r| *r < n);
        }
    }

    /// The rows of the sequence that ends at row `r`, first to last.
    pub fn path(&self, r: usize) -> Vec<usize> {
        let mut out = vec![r];
        let mut at = self.parent[r];
        while let Some(p) = at {
            out.push(p);
            at = self.parent[p];
        }
        out.reverse();
        out
    }

    /// The paths of rows `range`.
    pub fn paths(&self, range: Range<usize>) -> Paths {
        let mut p = Paths {
            offsets: vec![0],
            rows: Vec::new(),
        };
        for r in range {
            p.rows.extend(self.path(r));
            p.offsets.push(p.rows.len());
        }
        p
    }
}

/// What backward needs to know about a kept forward pass over prefix rows: the paths of the rows
/// that can receive a gradient (`..live`; the rows after them come last, and nothing that is
/// scored reads them), and which of those rows read each row.
#[derive(Clone, Debug)]
pub struct RecordPaths {
    pub paths: Paths,
    pub uses: KeyUses,
    pub live: usize,
}

impl RecordPaths {
    /// The paths of rows `..live` of `rows`.
    pub fn new(rows: &PrefixRows, live: usize) -> Self {
        let paths = rows.paths(0..live);
        let uses = KeyUses::new(paths.all(), live);
        RecordPaths { paths, uses, live }
    }

    pub fn live_paths(&self) -> PathsRef<'_> {
        self.paths.all()
    }
}
