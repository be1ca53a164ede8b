//! The check table's machinery: a row, the comparison of a device's outputs with the CPU's, the
//! schedules every case runs under on the emulated device, and `Checker`, which the rows of
//! `ops`, `sgemm`, `backward`, `ppo`, `models` and `train` fill.

use crate::cuda::device::Gpu;
use crate::cuda::device::emu::Schedule;
use crate::rng::Rng;
use anyhow::Result;
use std::time::Instant;

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckRow {
    pub kernel: String,
    pub shape: String,
    pub max_abs: f32,
    pub max_rel: f32,
    pub tol: f32,
    /// Whether the second run (on the emulated device: under another schedule) gave the same bits.
    pub same_bits: bool,
    pub pass: bool,
    /// Wall time of the case, both runs and the CPU reference (on the emulated device, what the
    /// case costs to check; never a speed figure).
    pub seconds: f64,
}

/// Forward tolerance of docs/ARCHITECTURE.md: CUDA f32 within 1e-4 of the CPU.
pub const TOL: f32 = 1e-4;

/// The poison byte of the emulated device's later runs (the first uses `emu::POISON`).
const SECOND_POISON: u8 = 0x7f;

/// The schedules (and poison bytes) every case runs under on the emulated device, which must all
/// give the same bits: warps one after another in both orders, so that any two warps meet in
/// both orders at every barrier (a missing barrier between warps shows), then threads shuffled.
pub fn schedules(seed: u64) -> [(Schedule, u8); 3] {
    [
        (Schedule::WarpsForward, crate::cuda::device::emu::POISON),
        (Schedule::WarpsReverse(seed | 1), SECOND_POISON),
        (Schedule::Shuffled(seed | 1), SECOND_POISON),
    ]
}

pub fn compare(kernel: &str, shape: String, got: &[f32], want: &[f32], tol: f32) -> CheckRow {
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let mut max_abs = 0.0f32;
    let mut finite = got.len() == want.len();
    for (g, w) in got.iter().zip(want) {
        if !g.is_finite() {
            finite = false;
        }
        max_abs = max_abs.max((g - w).abs());
    }
    let max_abs = if finite { max_abs } else { f32::NAN };
    let pass = finite && max_abs <= tol * scale.max(1.0);
    CheckRow {
        kernel: kernel.into(),
        shape,
        max_abs,
        max_rel: max_abs / scale.max(f32::MIN_POSITIVE),
        tol,
        same_bits: true,
        pass,
        seconds: 0.0,
    }
}

/// One row over several outputs (a gradient's parts: input, weight, bias...), each compared
/// relative to its own largest reference value: gradients' scales are far from 1, so
/// `compare`'s floor of 1 would hide their errors. The row shows the largest absolute error and
/// the largest of the parts' relative errors, which must be at most `tol`.
pub fn compare_parts(
    kernel: &str,
    shape: String,
    got: &[Vec<f32>],
    want: &[&[f32]],
    tol: f32,
) -> CheckRow {
    let (mut max_abs, mut max_rel) = (0.0f32, 0.0f32);
    let mut finite = got.len() == want.len();
    for (g, w) in got.iter().zip(want) {
        let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let mut part = 0.0f32;
        finite &= g.len() == w.len();
        for (a, b) in g.iter().zip(*w) {
            finite &= a.is_finite();
            part = part.max((a - b).abs());
        }
        max_abs = max_abs.max(part);
        max_rel = max_rel.max(if part == 0.0 { 0.0 } else { part / scale });
    }
    let (max_abs, max_rel) = if finite {
        (max_abs, max_rel)
    } else {
        (f32::NAN, f32::NAN)
    };
    CheckRow {
        kernel: kernel.into(),
        shape,
        max_abs,
        max_rel,
        tol,
        same_bits: true,
        pass: finite && max_rel <= tol,
        seconds: 0.0,
    }
}

pub(super) fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32 * std).collect()
}

fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// A row of `Checker::parts_rows`: its name, shape, how many outputs it compares and to what
/// relative tolerance.
pub(super) struct PartsRow<'a> {
    pub(super) kernel: &'a str,
    pub(super) shape: String,
    pub(super) parts: usize,
    pub(super) tol: f32,
}

/// The table being filled, and what every case needs.
pub(super) struct Checker<'a> {
    pub(super) g: &'a Gpu,
    pub(super) rng: Rng,
    seed: u64,
    pub(super) rows: Vec<CheckRow>,
    /// Only rows whose kernel name contains this run (`pgsrm check --filter`).
    filter: Option<String>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(g: &'a Gpu, seed: u64, filter: Option<&str>) -> Checker<'a> {
        Checker {
            g,
            rng: Rng::new(seed),
            seed,
            rows: Vec::new(),
            filter: filter.map(str::to_string),
        }
    }

    /// Whether a row of this kernel name runs under the filter.
    pub(super) fn wants(&self, kernel: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| kernel.contains(f.as_str()))
    }

    /// Runs `run` (the device's part of a case) under every schedule of `SCHEDULES` and returns
    /// the first run's outputs and whether every other run gave the same bits. On a GPU it runs
    /// twice (the schedules say nothing there; the second run catches races between blocks).
    pub(super) fn under_schedules(
        &self,
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<(Vec<Vec<f32>>, bool)> {
        let Some(e) = self.g.emu() else {
            let first = run(self.g)?;
            let second = run(self.g)?;
            let same = same_bits(&first, &second);
            return Ok((first, same));
        };
        let mut first = None;
        let mut same = true;
        for (schedule, poison) in schedules(self.seed) {
            e.set_schedule(schedule, poison);
            let got = run(self.g);
            e.set_schedule(Schedule::InOrder, crate::cuda::device::emu::POISON);
            let got = got?;
            match &first {
                None => first = Some(got),
                Some(f) => same &= same_bits(f, &got),
            }
        }
        Ok((first.unwrap_or_default(), same))
    }

    /// One row per (name, shape, reference) against the outputs of `run`, in order.
    pub(super) fn cases(
        &mut self,
        named: &[(&str, String)],
        wants: &[&[f32]],
        tol: f32,
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<()> {
        if !named.iter().any(|(kernel, _)| self.wants(kernel)) {
            return Ok(());
        }
        let t = Instant::now();
        let (got, same) = self.under_schedules(run)?;
        let seconds = t.elapsed().as_secs_f64() / named.len() as f64;
        for (i, ((kernel, shape), want)) in named.iter().zip(wants).enumerate() {
            let mut row = compare(kernel, shape.clone(), &got[i], want, tol);
            row.same_bits = same;
            row.pass &= same;
            row.seconds = seconds;
            self.rows.push(row);
        }
        Ok(())
    }

    pub(super) fn case(
        &mut self,
        kernel: &str,
        shape: String,
        want: &[f32],
        run: impl Fn(&Gpu) -> Result<Vec<f32>>,
    ) -> Result<()> {
        self.cases(&[(kernel, shape)], &[want], TOL, |g| Ok(vec![run(g)?]))
    }

    /// One row for the outputs of `run`, each compared with its reference by `compare_parts`.
    pub(super) fn parts(
        &mut self,
        kernel: &str,
        shape: String,
        wants: &[&[f32]],
        tol: f32,
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<()> {
        let row = PartsRow {
            kernel,
            shape,
            parts: wants.len(),
            tol,
        };
        self.parts_rows(vec![row], wants, run)
    }

    /// Rows over consecutive groups of the outputs of `run` (row i takes the next `parts` of
    /// them), each compared with its references by `compare_parts`.
    pub(super) fn parts_rows(
        &mut self,
        rows: Vec<PartsRow>,
        wants: &[&[f32]],
        run: impl Fn(&Gpu) -> Result<Vec<Vec<f32>>>,
    ) -> Result<()> {
        if !rows.iter().any(|r| self.wants(r.kernel)) {
            return Ok(());
        }
        let t = Instant::now();
        let (got, same) = self.under_schedules(run)?;
        let seconds = t.elapsed().as_secs_f64() / rows.len() as f64;
        let mut at = 0;
        for r in rows {
            let end = (at + r.parts).min(got.len()).min(wants.len());
            let mut row = compare_parts(r.kernel, r.shape, &got[at..end], &wants[at..end], r.tol);
            row.pass &= same && end - at == r.parts;
            row.same_bits = same;
            row.seconds = seconds;
            self.rows.push(row);
            at = end;
        }
        Ok(())
    }

    pub(super) fn small(&self) -> bool {
        self.g.emu().is_some()
    }
}

/// The table `pgsrm check` prints.
pub fn format_table(rows: &[CheckRow]) -> String {
    let mut s = format!(
        "{:<30} {:<44} {:>10} {:>10} {:>8} {:>5}  {}\n",
        "kernel", "shape", "max abs", "max rel", "tol", "bits", "pass"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<30} {:<44} {:>10.3e} {:>10.3e} {:>8.0e} {:>5}  {}\n",
            r.kernel,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.same_bits { "same" } else { "DIFF" },
            if r.pass { "ok" } else { "FAIL" }
        ));
    }
    s
}
