//! The device's decoding loop (`cuda::model::generate::generate_on`) on the emulated device, and
//! on a CUDA device when one is present: a loop replayed from its recorded graph gives the eager
//! loop's tokens and log-probabilities bit for bit and moves the host's generator as far; the
//! keyed draws are the sampling kernel's own counter draws; and a graph takes kernel launches
//! only.

mod devices;

use devices::devices;
use pgsrm::cuda::device::Gpu;
use pgsrm::cuda::model::decode::{Decoder, DeviceModel};
use pgsrm::cuda::model::generate::{DecodeCache, Draws, generate, generate_on};
use pgsrm::cuda::model::gpt2::GpuGpt2;
use pgsrm::cuda::model::llama::GpuLlama;
use pgsrm::cuda::ops::residual_forward;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::llama::{Llama, LlamaConfig};
use pgsrm::rng::Rng;
use pgsrm::sample::{Generation, SamplingParams};

/// Rare enough that most rows run to the end, common enough that some stop early.
const EOS: u32 = 3;

fn gpt2_tiny() -> Gpt2 {
    let cfg: Gpt2Config = serde_json::from_str(
        r#"{"vocab_size": 61, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4}"#,
    )
    .unwrap();
    Gpt2::random(cfg, 5)
}

/// Prompts of 3 to 11 tokens (left padding on every row but the longest), their tokens moved by
/// `shift`: the same shape, other prompts.
fn prompts(v: u32, shift: u32) -> Vec<Vec<u32>> {
    (0..5)
        .map(|i| {
            (0..3 + i * 2)
                .map(|j| (4 + i * 7 + j * 3) as u32 % v)
                .map(|t| (t + shift) % v)
                .collect()
        })
        .collect()
}

/// 20 new tokens: a loop of two segments, with a look at the rows between them.
fn sampling() -> SamplingParams {
    SamplingParams {
        max_new_tokens: 20,
        ..SamplingParams::default()
    }
}

/// Each row's tokens and the bits of its log-probabilities, to compare exactly.
type Bits = Vec<(Vec<u32>, Vec<u32>)>;

fn bits(gens: &[Generation]) -> Bits {
    gens.iter()
        .map(|g| {
            let lp = g.logprobs.iter().map(|x| x.to_bits()).collect();
            (g.tokens.clone(), lp)
        })
        .collect()
}

/// Three rollouts of three prompt sets from three generator seeds with `cache`: their bits and
/// where each left the generator.
fn three_rollouts<M: DeviceModel>(
    g: &Gpu,
    model: &M,
    cache: &mut DecodeCache,
    v: u32,
) -> Vec<(Bits, u64)> {
    (1..=3)
        .map(|seed| {
            let mut rng = Rng::new(seed);
            let gens = generate_on(
                g,
                model,
                cache,
                &prompts(v, seed as u32),
                &sampling(),
                EOS,
                Draws::Host(&mut rng),
            )
            .unwrap();
            (bits(&gens), rng.next_u64())
        })
        .collect()
}

fn replays_match_eager<M: DeviceModel>(name: &str, g: &Gpu, model: &M, v: u32) {
    let mut eager = DecodeCache::new(false);
    let mut graphs = DecodeCache::default();
    let want = three_rollouts(g, model, &mut eager, v);
    let got = three_rollouts(g, model, &mut graphs, v);
    assert_eq!(eager.replays, 0);
    // The first rollout runs eagerly, the second records its two segments and replays them,
    // the third replays them.
    assert_eq!(graphs.replays, 4, "{name} on {}: graphs replayed", g.name);
    assert_eq!(got, want, "{name} on {}: replayed rollouts", g.name);
    let lengths: Vec<usize> = want[0].0.iter().map(|r| r.0.len()).collect();
    println!("{name} on {}: rows of {lengths:?} tokens", g.name);
}

#[test]
fn a_replayed_loop_gives_the_eager_loops_bits_and_moves_the_generator_as_far() {
    let (gpt2, llama) = (gpt2_tiny(), Llama::random(LlamaConfig::tiny(), 7));
    for g in devices() {
        let dev = GpuGpt2::upload(&g, &gpt2).unwrap();
        replays_match_eager("gpt2", &g, &dev, 61);
        let dev = GpuLlama::upload(&g, &llama).unwrap();
        replays_match_eager("llama", &g, &dev, llama.config.vocab_size as u32);
    }
}

#[test]
fn keyed_draws_are_the_sampling_kernels_counter_draws() {
    let model = gpt2_tiny();
    let params = sampling();
    let (seed, ps) = (42, prompts(61, 0));
    for g in devices() {
        let dev = GpuGpt2::upload(&g, &model).unwrap();
        let got = generate(&g, &dev, &ps, &params, EOS, seed).unwrap();
        // The same loop step by step, the kernel drawing for itself from (seed, row, step).
        let mut d = Decoder::new(&g, &dev, &ps, params.max_new_tokens, EOS).unwrap();
        let mut want = vec![Generation::default(); ps.len()];
        for step in 0..params.max_new_tokens {
            let (toks, lps) = d.sample(&params, seed, step as u32).unwrap();
            let mut next = vec![EOS; ps.len()];
            for (r, w) in want.iter_mut().enumerate() {
                if w.tokens.last() == Some(&EOS) {
                    continue;
                }
                w.tokens.push(toks[r]);
                w.logprobs.push(lps[r]);
                next[r] = toks[r];
            }
            if step + 1 < params.max_new_tokens {
                d.step(&next).unwrap();
            }
        }
        assert_eq!(bits(&got), bits(&want), "on {}", g.name);
    }
}

#[test]
fn a_graph_takes_launches_only_and_from_its_own_thread() {
    for g in devices() {
        let err = g
            .capture(|| g.alloc::<f32>(4).map(|_| ()))
            .err()
            .expect("an allocation inside a capture fails");
        assert!(
            format!("{err:#}").contains("allocating a buffer while the device records a graph"),
            "{err:#}"
        );
        // The failed capture is over: the device allocates again, and records.
        let (a, b) = (
            g.upload(&[1.0f32, 2.0]).unwrap(),
            g.upload(&[3.0f32, 4.0]).unwrap(),
        );
        let mut out = g.zeros::<f32>(2).unwrap();
        let err = g
            .capture(|| {
                std::thread::scope(|s| {
                    s.spawn(|| residual_forward(&g, &mut out, &a, &b, 2))
                        .join()
                        .unwrap()
                })
            })
            .err()
            .expect("a launch from another thread fails");
        assert!(
            format!("{err:#}").contains("recording a graph on another thread"),
            "{err:#}"
        );
        // A recorded launch runs at each replay, not at the capture.
        let graph = g
            .capture(|| residual_forward(&g, &mut out, &a, &b, 2))
            .unwrap();
        assert_eq!(graph.launches, 1, "on {}", g.name);
        assert_eq!(g.download(&out).unwrap(), [0.0, 0.0]);
        g.replay(&graph).unwrap();
        assert_eq!(g.download(&out).unwrap(), [4.0, 6.0]);
    }
}

/// A device several threads share (runs trained side by side on one stream) records no graph: a
/// recording would take in the other threads' work.
#[test]
fn a_device_shared_between_threads_records_no_graph() {
    let g = Gpu::emulated().unwrap();
    g.share_between_threads();
    let dev = GpuGpt2::upload(&g, &gpt2_tiny()).unwrap();
    let mut cache = DecodeCache::default();
    let mut eager = DecodeCache::new(false);
    let got = three_rollouts(&g, &dev, &mut cache, 61);
    assert_eq!(cache.replays, 0);
    assert_eq!(got, three_rollouts(&g, &dev, &mut eager, 61));
}

/// Two marks time the device's work between them, in seconds (at most the host's time around
/// them, at least zero), and no mark goes into a graph.
#[test]
fn marks_time_the_work_between_them() {
    for g in devices() {
        let n = 1 << 20;
        let (a, b) = (
            g.upload(&vec![1.0f32; n]).unwrap(),
            g.zeros::<f32>(n).unwrap(),
        );
        let mut out = g.zeros::<f32>(n).unwrap();
        let host = std::time::Instant::now();
        let from = g.mark().unwrap();
        for _ in 0..8 {
            residual_forward(&g, &mut out, &a, &b, n).unwrap();
        }
        let to = g.mark().unwrap();
        let s = from.seconds_to(&to).unwrap();
        let around = host.elapsed().as_secs_f32();
        assert!(
            s > 0.0 && s <= around,
            "{s} s between the marks, {around} s around them"
        );
        assert!(to.seconds_to(&from).unwrap() <= 0.0, "on {}", g.name);
        let err = g
            .capture(|| g.mark().map(|_| ()))
            .err()
            .expect("a mark inside a capture fails");
        assert!(
            format!("{err:#}").contains("marking a point for timing while the device records"),
            "{err:#}"
        );
    }
}
