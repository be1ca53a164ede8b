//! `pgsrm check` rows of the product kernels (`kernels/sgemm.cu`): every tile and rows kernel in
//! every layout, with float4 loads and without, unsplit and with K split in three, at sizes whose
//! tiles have edges (odd sizes for the scalar loads, multiples of 4 for the float4 ones). Each row
//! runs the product twice: overwriting a NaN-poisoned c with the bias added, and adding into c.

use super::table::{Checker, TOL, randn};
use crate::cuda::ops::sgemm::{self, Family, Layout, Plan, Shape, TILES};
use anyhow::Result;

pub(super) fn run_all(ck: &mut Checker) -> Result<()> {
    for layout in [Layout::NN, Layout::NT, Layout::TN] {
        for (m, n, k) in [(67, 75, 45), (132, 68, 44)] {
            let s = Shape::new(layout, m, n, k);
            for (bm, bn) in TILES {
                for splits in [1, 3] {
                    let p = Plan::unsplit(Family::Tile { bm, bn }, s.vec, k);
                    product(ck, s, p.with_splits(&s, splits))?;
                }
            }
        }
        if layout == Layout::TN {
            continue;
        }
        for m in [1, 2, 3, 5, 13] {
            for (n, k) in [(75, 45), (68, 264)] {
                let s = Shape::new(layout, m, n, k);
                for splits in [1, 3] {
                    let rm = m.next_power_of_two();
                    let p = Plan::unsplit(Family::Rows { rm }, s.vec, k);
                    product(ck, s, p.with_splits(&s, splits))?;
                }
            }
        }
    }
    Ok(())
}

fn product(ck: &mut Checker, s: Shape, p: Plan) -> Result<()> {
    let (m, n, k) = (s.m, s.n, s.k);
    let a = randn(&mut ck.rng, m * k, 1.0);
    let b = randn(&mut ck.rng, k * n, 0.1);
    let bias = randn(&mut ck.rng, n, 0.1);
    let c0 = randn(&mut ck.rng, m * n, 0.5);
    let (ta, tb) = (s.layout == Layout::TN, s.layout == Layout::NT);
    let mut set = vec![0.0; m * n];
    crate::cpu::gemm::sgemm(m, n, k, &a, ta, &b, tb, &mut set, false);
    for row in set.chunks_exact_mut(n) {
        for (o, bb) in row.iter_mut().zip(&bias) {
            *o += bb;
        }
    }
    let mut add = c0.clone();
    crate::cpu::gemm::sgemm(m, n, k, &a, ta, &b, tb, &mut add, true);
    let shape = format!("M={m} N={n} K={k}, c = and c +=");
    ck.parts(&p.describe(s.layout), shape, &[&set, &add], TOL, |g| {
        let (da, db, dbias) = (g.upload(&a)?, g.upload(&b)?, g.upload(&bias)?);
        let mut got_set = g.poisoned(m * n)?;
        sgemm::launch(g, &p, &s, &mut got_set, &da, &db, Some(&dbias), false)?;
        let mut got_add = g.upload(&c0)?;
        sgemm::launch(g, &p, &s, &mut got_add, &da, &db, None, true)?;
        g.sync()?;
        Ok(vec![g.download(&got_set)?, g.download(&got_add)?])
    })
}
