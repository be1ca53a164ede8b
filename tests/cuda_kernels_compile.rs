//! Every kernel in kernels/ compiles with NVRTC for sm_80 and sm_90 and defines the entry points the
//! host code launches. Needs NVRTC (not a GPU): the system's, or the pip wheel's (see .ci/run).

use pgsrm::cuda::device::registry;

const EXPECTED: &[(&str, &[&str])] = &[
    (
        "attention.cu",
        &[
            "attention_forward",
            "attention_cached_forward",
            "kv_append",
            "attention_backward_dq",
            "attention_backward_dkv",
        ],
    ),
    ("copy.cu", &["copy_segments"]),
    (
        "embedding.cu",
        &[
            "embedding_forward",
            "bert_embedding_forward",
            "embedding_backward",
        ],
    ),
    ("encoder_attention.cu", &["encoder_attention_forward"]),
    (
        "gelu.cu",
        &[
            "gelu_tanh_forward",
            "gelu_tanh_backward",
            "gelu_erf_forward",
        ],
    ),
    (
        "layernorm.cu",
        &[
            "layernorm_forward",
            "layernorm_backward_dinp",
            "layernorm_backward_params",
        ],
    ),
    ("logits.cu", &["gather_rows"]),
    ("matmul.cu", &["matmul_backward_dbias"]),
    (
        "optim.cu",
        &[
            "grad_norm_squares",
            "grad_norm_finish",
            "grad_clip",
            "adamw_step",
        ],
    ),
    (
        "ppo_loss.cu",
        &[
            "actor_loss",
            "actor_loss_means",
            "critic_loss",
            "value_forward",
            "value_backward",
        ],
    ),
    ("residual.cu", &["residual_forward", "residual_backward"]),
    ("reward.cu", &["pool_cosine_shape_forward"]),
    (
        "rmsnorm.cu",
        &[
            "rmsnorm_forward",
            "rmsnorm_backward_dinp",
            "rmsnorm_backward_dweight",
        ],
    ),
    ("rope.cu", &["rope_forward", "rope_backward"]),
    ("sampling.cu", &["sample_forward"]),
    // Every kernel a product's plan can name, from the planner itself (below).
    ("sgemm.cu", &[]),
    (
        "softmax.cu",
        &["log_softmax_gather_forward", "entropy_forward"],
    ),
    ("swiglu.cu", &["swiglu_forward", "swiglu_backward"]),
];

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    pgsrm::cuda::device::nvrtc::ensure_loaded()
        .expect("NVRTC must be available to check the kernels");
    let files: Vec<&str> = registry::kernel_files().collect();
    let listed: Vec<&str> = EXPECTED.iter().map(|(f, _)| *f).collect();
    assert_eq!(files, listed, "kernel files and this test's list differ");
    for arch in ["compute_80", "compute_90"] {
        for (file, entries) in EXPECTED {
            let ptx = registry::compile(file, arch).unwrap_or_else(|e| panic!("{e:#}"));
            let found = registry::entry_points(&ptx);
            let planned = match *file {
                "sgemm.cu" => pgsrm::cuda::ops::sgemm::entries(),
                _ => Vec::new(),
            };
            for e in entries.iter().map(|e| e.to_string()).chain(planned) {
                assert!(
                    found.contains(&e),
                    "{file} for {arch}: no entry {e} in {found:?}"
                );
            }
        }
    }
}

#[test]
fn a_broken_kernel_reports_file_and_line() {
    pgsrm::cuda::device::nvrtc::ensure_loaded()
        .expect("NVRTC must be available to check the kernels");
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_80"),
        name: Some("broken.cu".into()),
        ..Default::default()
    };
    let src = "extern \"C\" __global__ void k() {\n  undeclared_thing = 1;\n}\n";
    match cudarc::nvrtc::compile_ptx_with_opts(src, opts) {
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
            let log = log.to_string_lossy();
            assert!(
                log.contains("broken.cu(2)"),
                "log names file and line: {log}"
            );
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}
