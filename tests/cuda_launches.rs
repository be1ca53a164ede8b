//! What the host launches on a device for a rollout and an update, counted on the emulated device
//! (the counts are the code's, not the device's): a rollout of a batch shape seen before is one
//! graph launch and no kernel launched on its own; launched one by one, the same rollout takes
//! a launch per kernel of every step. An update on the rollout's recorded pass launches fewer
//! kernels than one that runs the policy again, and no device copy one by one; neither makes a
//! buffer. A GPT-2 of GPT-2 small's 12 layers (narrow), at the word tasks' 2 new tokens.

use pgsrm::cuda::device::{Gpu, LaunchCounts};
use pgsrm::cuda::policy::CudaPolicy;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::spec::Model;
use pgsrm::ppo::{Critic, Episode, PolicyBackend, PpoConfig};
use pgsrm::rng::Rng;
use pgsrm::sample::{Generator, SamplingParams};
use std::sync::Arc;

const EOS: u32 = 3;

/// What one steady round (the third) asked of the device.
struct Round {
    rollout: LaunchCounts,
    update: LaunchCounts,
    /// Buffers the rollout and the update made.
    rollout_buffers: u64,
    update_buffers: u64,
}

fn steady_round(gpu: &Arc<Gpu>, graphs: bool, reuse: bool) -> Round {
    let cfg: Gpt2Config = serde_json::from_str(
        r#"{"vocab_size": 61, "n_positions": 64, "n_embd": 32, "n_layer": 12, "n_head": 4}"#,
    )
    .unwrap();
    let model = Model::Gpt2(Gpt2::random(cfg, 5));
    let critic = Critic::new(model.hidden_size(), 1);
    let (m, r) = (model.clone(), model.clone());
    let mut dev = CudaPolicy::new(gpu.clone(), PpoConfig::default(), m, r, critic, EOS).unwrap();
    dev.passes.set_decode_graphs(graphs);
    dev.reuse_rollout = reuse;
    let prompts: Vec<Vec<u32>> = (0..8)
        .map(|i| (0..6).map(|j| (5 + i * 7 + j * 3) as u32 % 61).collect())
        .collect();
    let params = SamplingParams {
        max_new_tokens: 2,
        ..SamplingParams::default()
    };
    let mut rng = Rng::new(3);
    let mut last = Round {
        rollout: LaunchCounts::default(),
        update: LaunchCounts::default(),
        rollout_buffers: 0,
        update_buffers: 0,
    };
    for _ in 0..3 {
        let (before, buffers) = (gpu.launch_counts(), gpu.buffers_made());
        let gens = dev.generate(&prompts, &params, &mut rng).unwrap();
        let (rolled, rollout_buffers) = (gpu.launch_counts(), gpu.buffers_made() - buffers);
        let eps: Vec<Episode> = prompts
            .iter()
            .zip(&gens)
            .enumerate()
            .map(|(i, (p, g))| Episode {
                prompt: p.clone(),
                response: g.tokens.clone(),
                logprobs: g.logprobs.clone(),
                reward: i as f32 * 0.1,
            })
            .collect();
        let buffers = gpu.buffers_made();
        dev.update(&eps, 0.1, &mut rng).unwrap();
        last = Round {
            rollout: rolled - before,
            update: gpu.launch_counts() - rolled,
            rollout_buffers,
            update_buffers: gpu.buffers_made() - buffers,
        };
    }
    last
}

#[test]
fn a_repeated_rollout_is_one_graph_and_the_recorded_pass_saves_the_updates_forward() {
    let gpu = Arc::new(Gpu::emulated().unwrap());
    let steady = steady_round(&gpu, true, true);
    let (rollout, update) = (steady.rollout, steady.update);
    let eager_rollout = steady_round(&gpu, false, true).rollout;
    let fresh = steady_round(&gpu, true, false);
    let fresh_update = fresh.update;
    println!("rollout: {rollout:?} (one by one: {eager_rollout:?})");
    println!("update: {update:?} (on a fresh pass: {fresh_update:?})");
    println!(
        "buffers made: rollout {}, update {} (on a fresh pass: {})",
        steady.rollout_buffers, steady.update_buffers, fresh.update_buffers
    );
    assert_eq!(
        (rollout.kernels, rollout.graphs, rollout.copies),
        (0, 1, 0),
        "{rollout:?}"
    );
    assert_eq!(eager_rollout.graphs, 0);
    // Every layer's kernels, for the prefill and each fed step.
    assert!(eager_rollout.kernels > 12 * 10 * 2, "{eager_rollout:?}");
    assert!(
        update.kernels < fresh_update.kernels,
        "{update:?} {fresh_update:?}"
    );
    // A rollout or an update of a shape seen before allocates nothing.
    assert_eq!(
        (
            steady.rollout_buffers,
            steady.update_buffers,
            fresh.update_buffers
        ),
        (0, 0, 0),
        "buffers made by a steady rollout, update, and update on a fresh pass"
    );
    // The frozen reference's kept prompt rows go into its decoding cache in one launch, not a
    // device copy per prompt and layer.
    assert_eq!(update.copies, 0, "{update:?}");
}
