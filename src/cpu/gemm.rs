//! The one place that calls the `gemm` crate: a safe row-major wrapper with optional transposes.

use gemm::Parallelism;
use rayon::prelude::*;

/// c (m, n) = [c +] op(a) @ op(b), all row-major; op(a) is (m, k), op(b) is (k, n).
/// `ta`/`tb` say that `a` is stored (k, m) / `b` is stored (n, k).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.len() >= m * k,
        "sgemm: a has {} values, needs {}",
        a.len(),
        m * k
    );
    assert!(
        b.len() >= k * n,
        "sgemm: b has {} values, needs {}",
        b.len(),
        k * n
    );
    assert!(
        c.len() >= m * n,
        "sgemm: c has {} values, needs {}",
        c.len(),
        m * n
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // (row stride, column stride) of each operand as seen in its logical orientation.
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let a = Operand {
        ptr: a.as_ptr(),
        rs: a_rs,
        cs: a_cs,
    };
    let big = m * n * k >= 1 << 18;
    if big && n >= 2 * COLUMN_BLOCK && n >= 8 * m {
        // A wide, short product (the LM head: tens of thousands of columns, a few hundred rows)
        // runs as fixed blocks of columns, one single-threaded call each, spread over the
        // threads: the crate's own split of such a product ran slower on two threads than on one
        // (BENCHMARKS.md, the Intel host). The blocks do not depend on the thread count, so
        // neither does the result.
        let c = SendPtr(c.as_mut_ptr());
        let starts: Vec<usize> = (0..n).step_by(COLUMN_BLOCK).collect();
        starts.par_iter().for_each(|&j0| {
            let b = Operand {
                // Column j0 of op(b): offset j0 along its column stride.
                ptr: b[j0 * b_cs as usize..].as_ptr(),
                rs: b_rs,
                cs: b_cs,
            };
            let c = &c;
            // SAFETY: the asserts above bound every index; each block writes its own columns.
            unsafe {
                call(
                    m,
                    COLUMN_BLOCK.min(n - j0),
                    k,
                    c.0.add(j0),
                    n,
                    accumulate,
                    &a,
                    &b,
                    Parallelism::None,
                )
            };
        });
        return;
    }
    let b = Operand {
        ptr: b.as_ptr(),
        rs: b_rs,
        cs: b_cs,
    };
    // Small products are not worth waking the thread pool for.
    let par = if big {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above bound every index the strides can reach.
    unsafe { call(m, n, k, c.as_mut_ptr(), n, accumulate, &a, &b, par) };
}

/// (cols, rows) = the transpose of `src` (rows, cols), both row-major.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(
        src.len(),
        rows * cols,
        "transpose: {rows} x {cols} needs as many values"
    );
    let mut dst = vec![0.0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return dst;
    }
    // A band of TILE output rows (source columns) per task, walked in TILE x TILE tiles so that
    // both sides stay in cache.
    const TILE: usize = 32;
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let j0 = band * TILE;
            let width = out.len() / rows;
            for i0 in (0..rows).step_by(TILE) {
                for i in i0..(i0 + TILE).min(rows) {
                    let row = &src[i * cols + j0..i * cols + j0 + width];
                    for (jj, &x) in row.iter().enumerate() {
                        out[jj * rows + i] = x;
                    }
                }
            }
        });
    dst
}

/// Columns per block of a wide product split over threads.
const COLUMN_BLOCK: usize = 4096;

/// A read-only operand: its first element and its (row, column) strides in its logical shape.
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

// SAFETY: an operand is only read while the product runs.
unsafe impl Sync for Operand {}

/// The output's address, shared by the blocks that write disjoint columns of it.
struct SendPtr(*mut f32);
// SAFETY: the blocks that share it write disjoint elements.
unsafe impl Sync for SendPtr {}

/// c (m, n; row stride `ldc`) = [c +] a (m, k) @ b (k, n).
///
/// # Safety
/// Every element the shapes and strides reach must lie inside the operands' allocations.
#[allow(clippy::too_many_arguments)]
unsafe fn call(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: &Operand,
    b: &Operand,
    par: Parallelism,
) {
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn transpose_moves_every_value() {
        for (rows, cols) in [(1, 1), (3, 70), (70, 3), (33, 65), (64, 32)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&src, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        t[j * rows + i],
                        src[i * cols + j],
                        "{rows} x {cols} at ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn all_transposes_match_naive() {
        check_against_naive(37, 29, 71);
    }

    #[test]
    fn wide_products_split_by_columns_match_naive() {
        // Wide and large enough to run as column blocks, with a last block shorter than the rest.
        let (m, n, k) = (3, 2 * COLUMN_BLOCK + 777, 16);
        assert!(m * n * k >= 1 << 18 && n >= 8 * m);
        check_against_naive(m, n, k);
    }

    fn check_against_naive(m: usize, n: usize, k: usize) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let want = naive(m, n, k, &a, ta, &b, tb);
                let mut c = vec![1.0; m * n];
                sgemm(m, n, k, &a, ta, &b, tb, &mut c, false);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "ta={ta} tb={tb}: {x} vs {y}");
                }
                let mut c2 = vec![1.0; m * n];
                sgemm(m, n, k, &a, ta, &b, tb, &mut c2, true);
                for (x, y) in c2.iter().zip(&want) {
                    assert!((x - (y + 1.0)).abs() < 1e-4);
                }
            }
        }
    }
}
