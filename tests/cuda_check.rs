//! Every kernel against its CPU reference: `pgsrm check --device emu` in full on the emulated
//! device (any machine with a C++ compiler), and the same table on a real device when one is
//! present (scripts/gpu-check.sh runs the ignored test on a GPU machine).

use std::process::Command;

#[test]
fn pgsrm_check_passes_every_row_on_the_emulated_device() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args(["check", "--device", "emu"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}\n{err}");
    let rows = table.lines().skip(1).count();
    assert!(rows >= 140, "{rows} rows:\n{table}");
    for kernel in [
        "attention_forward (att)",
        "matmul_backward",
        "linear_backward",
        "layernorm_backward",
        "rmsnorm_backward",
        "gelu_tanh_backward",
        "swiglu_backward",
        "residual_backward",
        "embedding_backward",
        "logits_backward",
        "attention_backward",
        "rope_backward",
        "actor_loss",
        "critic_loss",
        "value_forward + value_backward",
        "grad_norm + grad_clip",
        "adamw_step",
        "adamw_step (clip folded in)",
        "gpt2 backward (all gradients)",
        "llama backward (all gradients)",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{kernel:<30} "))),
            "no row for {kernel}:\n{table}"
        );
    }
    assert_eq!(
        table.lines().skip(1).filter(|l| l.ends_with(" ok")).count(),
        rows,
        "{table}"
    );
    assert!(
        table.lines().skip(1).all(|l| l.contains(" same ")),
        "every row runs twice with the same bits:\n{table}"
    );
    assert!(
        err.contains(&format!("all {rows} kernel checks passed")),
        "{err}"
    );
}

#[test]
#[ignore = "needs a CUDA device (run by scripts/gpu-check.sh)"]
fn every_kernel_matches_the_cpu_reference_on_a_gpu() {
    let gpu = pgsrm::cuda::device::Gpu::new(0).expect("a CUDA device");
    let rows = pgsrm::check::run_all(&gpu, 7).expect("checks run");
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "{}", pgsrm::check::format_table(&rows));
}
