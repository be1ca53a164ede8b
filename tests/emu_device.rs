//! The emulated device's own checks, on deliberately broken kernels kept in tests/emu_kernels/
//! (never in kernels/): a missing barrier caught by running a block's threads in another order,
//! races between warps caught by running warps one after another in both orders, a
//! barrier half the block never reaches named by kernel and block, a write past the end of a
//! buffer caught by its guard page, a shuffle reading outside its mask, an integer division by
//! zero and a stack overflow; then the errors a GPU
//! gives for launches no device accepts, and a compile error naming the file and line.

use pgsrm::cuda::device::emu::{POISON, Schedule};
use pgsrm::cuda::device::{Arg, Gpu, Grid};

fn emu() -> Gpu {
    Gpu::emulated().expect("the emulated device needs a C++ compiler (c++ or $CXX)")
}

const MISSING_BARRIER: &str = include_str!("emu_kernels/missing_barrier.cu");
const DIVERGENT: &str = include_str!("emu_kernels/divergent_barrier.cu");
const OUT_OF_BOUNDS: &str = include_str!("emu_kernels/out_of_bounds.cu");
const WARP_MASK: &str = include_str!("emu_kernels/warp_mask.cu");
const FAULTS: &str = include_str!("emu_kernels/faults.cu");
const WARP_RACES: &str = include_str!("emu_kernels/warp_races.cu");

/// Runs a reversal kernel of missing_barrier.cu over 4 blocks of 256 under a schedule.
fn reverse(g: &Gpu, entry: &str, schedule: Schedule, poison: u8) -> Vec<f32> {
    let n = 1024;
    let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let din = g.upload(&input).unwrap();
    let mut out = g.alloc::<f32>(n).unwrap();
    g.emu().unwrap().set_schedule(schedule, poison);
    let r = g.launch_source(
        "tests/emu_kernels/missing_barrier.cu",
        MISSING_BARRIER,
        entry,
        Grid::linear(n, 256),
        &[(&mut out).into(), (&din).into()],
    );
    g.emu().unwrap().set_schedule(Schedule::InOrder, POISON);
    r.unwrap();
    g.download(&out).unwrap()
}

#[test]
fn a_missing_barrier_changes_the_bits_under_another_schedule() {
    let g = emu();
    let want: Vec<f32> = (0..1024)
        .map(|i| ((i / 256) * 256 + 255 - i % 256) as f32)
        .collect();
    // The barrier in place: right, and the same bits whatever the order of the threads.
    let a = reverse(&g, "reverse_with_barrier", Schedule::InOrder, POISON);
    let b = reverse(&g, "reverse_with_barrier", Schedule::Shuffled(12345), 0x7f);
    assert_eq!(a, want);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    // Without it: a thread that runs before its partner reads poisoned shared memory, and which
    // threads those are depends on the schedule.
    let a = reverse(&g, "reverse_without_barrier", Schedule::InOrder, POISON);
    let b = reverse(
        &g,
        "reverse_without_barrier",
        Schedule::Shuffled(12345),
        0x7f,
    );
    assert_ne!(a, want);
    assert!(
        a.iter().any(|x| x.is_nan()),
        "in order, the first half reads poison"
    );
    assert_ne!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "a second schedule must expose the race"
    );
}

/// Runs a kernel of warp_races.cu over 2 blocks of 256 under a schedule; the output's bits.
fn warp_race(g: &Gpu, entry: &str, schedule: Schedule, poison: u8) -> Vec<u32> {
    let n = 512;
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 + 0.25).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 1.5).collect();
    let (dx, dy) = (g.upload(&x).unwrap(), g.upload(&y).unwrap());
    let mut out = g.alloc::<f32>(n).unwrap();
    g.emu().unwrap().set_schedule(schedule, poison);
    let r = g.launch_source(
        "tests/emu_kernels/warp_races.cu",
        WARP_RACES,
        entry,
        Grid::linear(n, 256),
        &[(&mut out).into(), (&dx).into(), (&dy).into()],
    );
    g.emu().unwrap().set_schedule(Schedule::InOrder, POISON);
    r.unwrap();
    g.download(&out)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Whether every schedule `pgsrm check` runs a case under gives the bits of the first.
fn same_bits_under_the_checks_schedules(g: &Gpu, entry: &str) -> bool {
    let runs: Vec<Vec<u32>> = pgsrm::check::schedules(1)
        .into_iter()
        .map(|(s, p)| warp_race(g, entry, s, p))
        .collect();
    runs.iter().all(|r| *r == runs[0])
}

#[test]
fn races_between_warps_that_shuffled_threads_miss_change_the_bits_under_warp_serial_schedules() {
    let g = emu();
    for (racy, guarded) in [
        ("write_after_read", "write_after_read_guarded"),
        ("read_before_write", "read_before_write_guarded"),
    ] {
        // Shuffling single threads hides both: the warp collectives before the second access
        // hold it back until the first has happened in every warp.
        let in_order = warp_race(&g, racy, Schedule::InOrder, POISON);
        for seed in [1, 2, 12345] {
            assert_eq!(
                warp_race(&g, racy, Schedule::Shuffled(seed), 0x7f),
                in_order,
                "{racy}: expected to go unnoticed by shuffled threads (seed {seed})"
            );
        }
        // Warps one after another, in both orders, expose them.
        let forward = warp_race(&g, racy, Schedule::WarpsForward, POISON);
        let reverse = warp_race(&g, racy, Schedule::WarpsReverse(7), 0x7f);
        assert_ne!(forward, reverse, "{racy}: the warp-serial schedules agree");
        assert!(
            !same_bits_under_the_checks_schedules(&g, racy),
            "{racy}: pgsrm check's schedules miss the race"
        );
        // With the barrier: the same bits under every schedule.
        let want = warp_race(&g, guarded, Schedule::InOrder, POISON);
        for s in [
            Schedule::Shuffled(3),
            Schedule::WarpsForward,
            Schedule::WarpsReverse(0),
            Schedule::WarpsReverse(9),
        ] {
            assert_eq!(
                warp_race(&g, guarded, s, 0x7f),
                want,
                "{guarded} under {s:?}"
            );
        }
        assert!(same_bits_under_the_checks_schedules(&g, guarded));
    }
}

#[test]
fn a_barrier_not_every_thread_reaches_is_reported_by_kernel_and_block() {
    let g = emu();
    let mut out = g.zeros::<f32>(64).unwrap();
    let e = g
        .launch_source(
            "tests/emu_kernels/divergent_barrier.cu",
            DIVERGENT,
            "half_leave_before_barrier",
            Grid::linear(64, 64),
            &[(&mut out).into(), Arg::I32(64)],
        )
        .unwrap_err();
    let e = format!("{e:#}");
    for part in [
        "half_leave_before_barrier",
        "block (0,0,0)",
        "divergent __syncthreads",
        "divergent_barrier.cu:6",
        "threads 0-31 wait there",
        "threads 32-63 have exited",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
}

#[test]
fn a_write_past_the_end_faults_on_the_guard_page_and_names_the_kernel() {
    let g = emu();
    let n = 100;
    let mut out = g.zeros::<f32>(n).unwrap();
    let e = g
        .launch_source(
            "tests/emu_kernels/out_of_bounds.cu",
            OUT_OF_BOUNDS,
            "fill_without_bounds_check",
            Grid::linear(n, 64),
            &[(&mut out).into(), Arg::I32(n as i32)],
        )
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.starts_with("emulated device: kernel fill_without_bounds_check"),
        "{e}"
    );
    for part in [
        "block (1,0,0)",
        "thread (36,0,0)",
        "invalid write",
        "0 bytes past the end of a buffer of 400 bytes",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    // The device goes on working after the fault, unlike a GPU's context.
    let fine = g.zeros::<f32>(128).unwrap();
    let mut fine = fine;
    g.launch_source(
        "tests/emu_kernels/out_of_bounds.cu",
        OUT_OF_BOUNDS,
        "fill_without_bounds_check",
        Grid::linear(128, 64),
        &[(&mut fine).into(), Arg::I32(7)],
    )
    .unwrap();
    assert!(g.download(&fine).unwrap().iter().all(|&x| x == 7.0));
}

#[test]
fn division_by_zero_and_stack_overflow_are_named() {
    let g = emu();
    let mut out = g.zeros::<i32>(32).unwrap();
    let name = "tests/emu_kernels/faults.cu";
    let e = g
        .launch_source(
            name,
            FAULTS,
            "divide_by_zero",
            Grid::linear(32, 32),
            &[(&mut out).into(), Arg::I32(0)],
        )
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("divide_by_zero") && e.contains("integer division by zero"),
        "{e}"
    );
    let e = g
        .launch_source(
            name,
            FAULTS,
            "recurse_too_deep",
            Grid::linear(32, 32),
            &[(&mut out).into(), Arg::I32(100_000)],
        )
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("recurse_too_deep") && e.contains("stack overflow"),
        "{e}"
    );
    // A shallow recursion fits.
    g.launch_source(
        name,
        FAULTS,
        "recurse_too_deep",
        Grid::linear(32, 32),
        &[(&mut out).into(), Arg::I32(10)],
    )
    .unwrap();
}

#[test]
fn a_shuffle_outside_its_mask_is_reported() {
    let g = emu();
    let mut out = g.zeros::<f32>(32).unwrap();
    let e = g
        .launch_source(
            "tests/emu_kernels/warp_mask.cu",
            WARP_MASK,
            "shuffle_outside_mask",
            Grid::linear(32, 32),
            &[(&mut out).into()],
        )
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("shuffle_outside_mask"), "{e}");
    assert!(e.contains("mask 0xffff"), "{e}");
    assert!(e.contains("warp_mask.cu:5"), "{e}");
}

#[test]
fn launches_no_device_accepts_fail_first_with_the_gpus_error() {
    let g = emu();
    let (mut out, x) = (g.zeros::<f32>(4096).unwrap(), g.zeros::<f32>(4096).unwrap());
    let args = [(&mut out).into(), (&x).into(), (&x).into(), Arg::I64(4096)];
    let big_block = Grid {
        blocks: [2, 1, 1],
        threads: [2048, 1, 1],
        shared_bytes: 0,
    };
    let e = format!(
        "{:#}",
        g.launch("residual.cu", "residual_forward", big_block, &args)
            .unwrap_err()
    );
    assert!(
        e.contains("CUDA_ERROR_INVALID_VALUE") && e.contains("2048 threads"),
        "{e}"
    );
    let big_smem = Grid {
        shared_bytes: 64 * 1024,
        ..Grid::linear(4096, 256)
    };
    let e = format!(
        "{:#}",
        g.launch("residual.cu", "residual_forward", big_smem, &args)
            .unwrap_err()
    );
    assert!(e.contains("65536 bytes of dynamic shared memory"), "{e}");
    // sgemm_nn_64x64 is built with __launch_bounds__(256, 2).
    let e = format!(
        "{:#}",
        g.launch(
            "sgemm.cu",
            "sgemm_nn_64x64",
            Grid::linear(512, 512),
            &[Arg::NULL; 10]
        )
        .unwrap_err()
    );
    assert!(e.contains("too many resources requested for launch"), "{e}");
    // Arguments that do not match the kernel's parameters are refused, not run.
    let e = format!(
        "{:#}",
        g.launch(
            "residual.cu",
            "residual_forward",
            Grid::linear(4096, 256),
            &args[..3]
        )
        .unwrap_err()
    );
    assert!(e.contains("takes 4 parameters"), "{e}");
    // None of these ran: the output is as it was.
    assert!(g.download(&out).unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn a_kernel_that_does_not_compile_names_its_file_and_line() {
    let g = emu();
    let src = "extern \"C\" __global__ void k(float* o) {\n  undeclared_thing = 1;\n}\n";
    let e = format!(
        "{:#}",
        g.launch_source(
            "kernels/broken.cu",
            src,
            "k",
            Grid::linear(1, 32),
            &[Arg::NULL]
        )
        .unwrap_err()
    );
    assert!(e.contains("kernels/broken.cu:2"), "{e}");
    assert!(e.contains("undeclared_thing"), "{e}");
}

#[test]
fn without_a_compiler_the_error_names_cxx() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(["check", "--device", "emu"])
        .env("CXX", "/nonexistent/c++")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("CXX is set to \"/nonexistent/c++\""), "{e}");
    assert!(e.contains("C++ compiler"), "{e}");
}

#[test]
fn the_portable_fiber_switch_gives_the_same_bits() {
    // ucontext is what machines other than x86-64 use; PGSRM_EMU_UCONTEXT selects it here.
    let run = |portable: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgsrm"));
        cmd.args([
            "generate",
            "--model",
            "random:tiny:2",
            "--prompt",
            "The opposite of 'hot' is",
            "--num-samples",
            "3",
            "--max-new-tokens",
            "6",
            "--seed",
            "9",
            "--json",
            "--device",
            "emu",
        ]);
        if portable {
            cmd.env("PGSRM_EMU_UCONTEXT", "1");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["samples"].clone()
    };
    let (asm, portable) = (run(false), run(true));
    assert_eq!(asm.as_array().unwrap().len(), 3);
    assert_eq!(asm, portable);
}
