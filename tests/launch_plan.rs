//! The launch plan of every product at the paper's shapes, held to an H200 without one: a product
//! of more than 10 MFLOP must launch at least two blocks per multiprocessor (264), so that no
//! multiprocessor idles while another works, or this test must say why it cannot. The column
//! reductions of backward (biases, norm weights) are held to one block per multiprocessor.
//!
//! The shapes (`cuda::paper_shapes`): GPT-2 small and SmolLM2-135M updates at batch 50, GPT-2
//! large at batch 10, over prompts of 20 to 60 tokens plus the new tokens (2 for the word tasks, 10
//! for the sentence tasks), with the head at the response positions only; and decoding steps of
//! 1, 10 and 50 rows.

use pgsrm::cuda::ops::sgemm::{Family, SMS, Shape, TARGET_BLOCKS, most_tile_splits, plan};
use pgsrm::cuda::ops::{COLUMN_STRETCH_ROWS, column_grid};
use pgsrm::cuda::paper_shapes::{GPT2_LARGE, GPT2_SMALL, SMOLLM2, products};

/// Why a product need not reach `TARGET_BLOCKS`, or `None` when it must.
fn exemption(s: &Shape) -> Option<String> {
    if s.flops() <= 10e6 {
        return Some("at most 10 MFLOP: a few microseconds whatever the grid".into());
    }
    // The smallest tile, with K cut into parts of two 8-deep slices (thinner parts would move
    // more partial sums than products), and still under the target: the output is too small and
    // K too short. (SmolLM2's k/v projection when decoding 50 rows: 1 x 3 tiles, 36 parts.)
    let tiles = s.m.div_ceil(64) * s.n.div_ceil(64);
    let most = tiles * most_tile_splits(s.k);
    if s.m > 16 && most < TARGET_BLOCKS {
        return Some(format!(
            "{tiles} tiles of 64 x 64 times at most {} parts of K make {most} blocks",
            most_tile_splits(s.k)
        ));
    }
    None
}

#[test]
fn every_product_over_10_mflop_fills_two_blocks_per_multiprocessor() {
    let mut table = String::new();
    let mut short = Vec::new();
    for p in products(&[20, 40, 60], &[1, 10, 50]) {
        let plan = plan(p.shape);
        let blocks = plan.blocks(&p.shape);
        let why = exemption(&p.shape);
        table.push_str(&format!(
            "{:<48} {:?} m={:<5} n={:<6} k={:<6} {:>9.1} MFLOP  {:<30} {blocks:>6} blocks{}\n",
            p.what,
            p.shape.layout,
            p.shape.m,
            p.shape.n,
            p.shape.k,
            p.shape.flops() / 1e6,
            plan.describe(p.shape.layout),
            why.as_ref().map(|w| format!("  ({w})")).unwrap_or_default(),
        ));
        if blocks < TARGET_BLOCKS && why.is_none() {
            short.push(p.what);
        }
    }
    println!("{table}");
    assert!(
        short.is_empty(),
        "products under {TARGET_BLOCKS} blocks: {short:?}\n{table}"
    );
}

#[test]
fn few_rows_stream_the_weights_once_and_splits_cover_k() {
    for p in products(&[20, 40, 60], &[1, 10, 50]) {
        let plan = plan(p.shape);
        match plan.family {
            Family::Rows { rm } => assert!(p.shape.m <= rm && rm <= 16, "{}: {plan:?}", p.what),
            Family::Tile { .. } => assert!(p.shape.m > 16, "{}: {plan:?}", p.what),
        }
        assert!(plan.splits * plan.kc >= p.shape.k, "{}: {plan:?}", p.what);
        assert!(
            (plan.splits - 1) * plan.kc < p.shape.k,
            "{}: {plan:?}",
            p.what
        );
    }
}

/// The column reductions of an update's backward (GPT-2's biases and layernorm weights, Llama's
/// norm weights) over its batch's rows, at the paper's shapes: at least one block per
/// multiprocessor, or as many stretches of rows as the rows make.
#[test]
fn column_reductions_fill_the_device_where_the_rows_allow() {
    let mut table = String::new();
    let mut short = Vec::new();
    for prompt in [20, 40, 60] {
        for (w, batch, new) in [
            (&GPT2_SMALL, 50, 2),
            (&SMOLLM2, 50, 2),
            (&GPT2_LARGE, 10, 10),
        ] {
            let rows = batch * (prompt + new);
            let columns = if w.llama {
                vec![("norm weight", w.c)]
            } else {
                vec![
                    ("layernorm weight and bias", w.c),
                    ("qkv bias", 3 * w.c),
                    ("fc bias", w.mlp),
                ]
            };
            for (what, c) in columns {
                let [col_blocks, stretches, _] = column_grid(rows, c).blocks;
                let blocks = (col_blocks * stretches) as usize;
                let row_bound = stretches as usize == rows.div_ceil(COLUMN_STRETCH_ROWS);
                let name = format!("{} B={batch} T={} {what}", w.name, prompt + new);
                table.push_str(&format!(
                    "{name:<48} rows={rows:<6} columns={c:<6} {col_blocks:>4} x {stretches:<3} = {blocks:>4} blocks{}\n",
                    if row_bound { "  (one stretch per 64 rows)" } else { "" },
                ));
                if blocks < SMS && !row_bound {
                    short.push(name);
                }
            }
        }
    }
    println!("{table}");
    assert!(
        short.is_empty(),
        "reductions under {SMS} blocks: {short:?}\n{table}"
    );
}
