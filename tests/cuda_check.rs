//! Every kernel against its CPU reference on a real device. Needs a CUDA GPU, which CI does not
//! have: scripts/gpu-check.sh runs this binary with `--ignored` on a GPU machine.

#[test]
#[ignore = "needs a CUDA device (run by scripts/gpu-check.sh)"]
fn every_kernel_matches_the_cpu_reference() {
    let gpu = pgsrm::cuda::device::Gpu::new(0).expect("a CUDA device");
    let rows = pgsrm::cuda::check::run_all(&gpu, 7).expect("checks run");
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(
        failed.is_empty(),
        "{}",
        pgsrm::cuda::check::format_table(&rows)
    );
}
