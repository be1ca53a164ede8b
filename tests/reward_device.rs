//! The PGSRM reward on a device (all-MiniLM-L6-v2 and the fused pool-cosine-shaping kernel, behind
//! `Embedder::shaped_rewards`) against the CPU path (`embed` on the CPU encoder, shaping on the
//! host): within 1e-5 for every embedding shaping on a batch with repeated parents, empty child
//! answers and exact matches; the same bits once the parents' vectors are cached, with only the
//! children through the encoder; the binary shaping unchanged. On the emulated device, and on a
//! CUDA device when there is one. The model folder comes through the asset code.

use pgsrm::cpu::bert::CpuEncoder;
use pgsrm::cuda::device::Gpu;
use pgsrm::cuda::model::bert::DeviceEncoders;
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::vector_cache::VectorCache;
use pgsrm::reward::embedder::{MINILM_ASSET, SentenceEncoder};
use pgsrm::reward::shaping::{self, Shaping};
use pgsrm::rng::Rng;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn model_dir() -> PathBuf {
    pgsrm::assets::resolve_dir(MINILM_ASSET).expect("all-MiniLM-L6-v2 through the asset code")
}

fn cpu() -> &'static SentenceEncoder {
    static ENC: OnceLock<SentenceEncoder> = OnceLock::new();
    ENC.get_or_init(|| SentenceEncoder::load(&model_dir(), "minilm", &CpuEncoder).unwrap())
}

/// The emulated device, and the first CUDA device when there is one.
fn devices() -> Vec<Gpu> {
    let mut gpus = vec![Gpu::emulated().unwrap()];
    if pgsrm::cuda::device_count() > 0 {
        gpus.push(Gpu::new(0).unwrap());
    }
    gpus
}

fn on_device(gpu: Gpu) -> SentenceEncoder {
    let encoders = DeviceEncoders { gpu: Arc::new(gpu) };
    SentenceEncoder::load(&model_dir(), "minilm", &encoders).unwrap()
}

/// Rewards of `dev` and the worst difference from the CPU path under `shaping`, after checking
/// that the device answered and that `shaping::rewards` took its answer.
fn worst_against_cpu(
    dev: &SentenceEncoder,
    shaping: Shaping,
    power: f32,
    parents: &[&str],
    children: &[&str],
) -> (Vec<f32>, f32) {
    assert!(
        cpu()
            .shaped_rewards(shaping, power, parents, children)
            .is_none(),
        "the CPU encoder shapes on the host"
    );
    let got = dev
        .shaped_rewards(shaping, power, parents, children)
        .expect("the device encoder answers for an embedding shaping")
        .unwrap();
    let through = shaping::rewards(Some(dev), shaping, power, parents, children).unwrap();
    assert_eq!(got, through, "shaping::rewards takes the device's answer");
    let want = shaping::rewards(Some(cpu()), shaping, power, parents, children).unwrap();
    let d = max_diff(&got, &want);
    (got, d)
}

/// (parents, children): parents repeated, empty child answers (and one empty parent), exact
/// matches, a match up to case and spaces, unrelated answers.
fn batch() -> (Vec<&'static str>, Vec<&'static str>) {
    let pairs = [
        ("purple", "purple"),
        ("purple", "violet"),
        ("purple", ""),
        ("green", "Green "),
        ("green", "dark green"),
        ("green", "purple"),
        ("hot", "cold"),
        ("hot", ""),
        ("hot", "hot"),
        ("a pear", "an apple"),
        ("a pear", "a pear"),
        ("purple", "violet"),
        ("", "nothing"),
        ("", ""),
        ("the sea", "deep sea blue"),
        ("musical instrument", "violin"),
    ];
    pairs.iter().copied().unzip()
}

/// A colors batch of 50 as training sees it: the reference answers of 50 drawn prompts as parents
/// (many repeat), the answers of 50 other draws as the children.
fn colors_batch() -> (Vec<String>, Vec<String>) {
    let task = pgsrm::tasks::by_name("colors").unwrap();
    let mut rng = Rng::new(7);
    let mut answers = |n| -> Vec<String> {
        task.sample_batch(&mut rng, n)
            .iter()
            .map(|e| e.answer.to_string())
            .collect()
    };
    (answers(50), answers(50))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn device_rewards_match_the_cpu_path_for_every_embedding_shaping() {
    let (parents, children) = batch();
    for gpu in devices() {
        let name = gpu.name.clone();
        let dev = on_device(gpu);
        for shaping in Shaping::ALL.into_iter().filter(|s| s.needs_embeddings()) {
            for power in [4.0, 1.5] {
                let (got, d) = worst_against_cpu(&dev, shaping, power, &parents, &children);
                println!("{name}: {shaping} p={power}: worst |device - cpu| = {d:.3e}");
                assert!(d <= 1e-5, "{name}: {shaping} p={power}: differs by {d}");
                // Exact matches score the top of each shaping's range, other answers less.
                assert!((got[0] - 1.0).abs() <= 1e-5, "{shaping}: {}", got[0]);
                assert!(got[1] < 0.999 && got[6] < 0.999, "{shaping}: {got:?}");
            }
        }
    }
}

#[test]
fn children_split_over_several_passes_keep_their_parents() {
    let (parents, children) = batch();
    // 8 word pieces a pass: two or three children per pass.
    let dev = on_device(Gpu::emulated().unwrap()).with_rows_per_pass(8);
    let (_, d) = worst_against_cpu(&dev, Shaping::Pgsrm, 4.0, &parents, &children);
    assert!(d <= 1e-5, "differs by {d}");
}

#[test]
fn cached_parents_give_the_same_bits_and_only_the_children_go_through_the_encoder() {
    let (parents, children) = batch();
    parents_once_then_children_only("mixed", &parents, &children);
    let (parents, children) = colors_batch();
    let parents: Vec<&str> = parents.iter().map(|s| s.as_str()).collect();
    let children: Vec<&str> = children.iter().map(|s| s.as_str()).collect();
    parents_once_then_children_only("colors", &parents, &children);
}

/// Rewards of the batch twice on each device: the first call encodes the distinct parents and
/// the distinct children, the second only the children, with the same bits; without the
/// cache every call encodes both.
fn parents_once_then_children_only<'a>(label: &str, parents: &[&'a str], children: &[&'a str]) {
    // Word pieces of the distinct children, and of the distinct parents.
    let distinct = |texts: &[&'a str]| -> Vec<&'a str> {
        let set: HashSet<&str> = texts.iter().copied().collect();
        set.into_iter().collect()
    };
    let (distinct_parents, distinct_children) = (distinct(parents), distinct(children));
    let rows = |texts: &[&str]| -> usize {
        cpu()
            .tokenize(texts)
            .unwrap()
            .iter()
            .map(|e| e.ids.len())
            .sum()
    };
    let (child_rows, parent_rows) = (rows(&distinct_children), rows(&distinct_parents));
    let host_texts: HashSet<&str> = parents.iter().chain(children).copied().collect();
    let host_texts: Vec<&str> = host_texts.into_iter().collect();
    println!(
        "{label}: {} pairs, {} distinct parents, {} distinct children; encoder rows per call: \
         cached {child_rows}, uncached {}, host path {} ({} distinct texts)",
        parents.len(),
        distinct_parents.len(),
        distinct_children.len(),
        parent_rows + child_rows,
        rows(&host_texts),
        host_texts.len()
    );
    for gpu in devices() {
        let dev = on_device(gpu);
        let call = || {
            let before = dev.rows_encoded();
            let r = shaping::rewards(Some(&dev), Shaping::Pgsrm, 4.0, parents, children).unwrap();
            (r, dev.rows_encoded() - before)
        };
        let (first, first_rows) = call();
        assert_eq!(first_rows, parent_rows + child_rows);
        assert_eq!(dev.cached_parents(), distinct_parents.len());
        let (second, second_rows) = call();
        assert_eq!(second_rows, child_rows, "the parents come from the cache");
        let bits = |r: &[f32]| r.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first), bits(&second));
    }
    let uncached = on_device(Gpu::emulated().unwrap()).with_parent_cache(0);
    for _ in 0..2 {
        let before = uncached.rows_encoded();
        shaping::rewards(Some(&uncached), Shaping::Pgsrm, 4.0, parents, children).unwrap();
        assert_eq!(uncached.rows_encoded() - before, parent_rows + child_rows);
    }
    assert_eq!(uncached.cached_parents(), 0);
}

#[test]
fn binary_shaping_still_works_on_a_device() {
    let (parents, children) = batch();
    let dev = on_device(Gpu::emulated().unwrap());
    assert!(
        dev.shaped_rewards(Shaping::Binary, 4.0, &parents, &children)
            .is_none()
    );
    let got = shaping::rewards(Some(&dev), Shaping::Binary, 4.0, &parents, &children).unwrap();
    let want: Vec<f32> = parents
        .iter()
        .zip(&children)
        .map(|(p, c)| shaping::binary(p, c))
        .collect();
    assert_eq!(got, want);
    // purple/purple, green/"Green ", hot/hot, a pear/a pear, ""/"".
    assert_eq!(got.iter().sum::<f32>(), 5.0);
    assert_eq!(dev.rows_encoded(), 0, "binary needs no encoder");
}

#[test]
fn mismatched_batches_are_an_error_and_an_empty_one_is_empty_on_the_device() {
    let dev = on_device(Gpu::emulated().unwrap());
    let r = dev.shaped_rewards(Shaping::Pgsrm, 4.0, &["purple", "green"], &["red"]);
    let e = r.expect("the device answers").unwrap_err();
    assert!(
        e.to_string().contains("2 parent answers for 1 child"),
        "{e}"
    );
    let none = shaping::rewards(Some(&dev), Shaping::Pgsrm, 4.0, &[], &[]).unwrap();
    assert!(none.is_empty());
}

#[test]
fn the_parent_cache_keeps_at_most_its_cap() {
    let mut c = VectorCache::new(2);
    c.insert("a", vec![1.0]);
    c.insert("b", vec![2.0]);
    c.insert("a", vec![3.0]);
    assert_eq!((c.len(), c.get("a")), (2, Some(&[3.0][..])));
    c.insert("c", vec![4.0]);
    assert_eq!(c.len(), 2);
    assert!(c.get("a").is_none(), "the oldest entry goes first");
    assert_eq!(
        (c.get("b"), c.get("c")),
        (Some(&[2.0][..]), Some(&[4.0][..]))
    );
    let mut none = VectorCache::new(0);
    none.insert("a", vec![1.0]);
    assert!(none.is_empty());
}
