//! The local parent: a child model through a backend's generator, greedy, behind a few-shot prompt. A seeded
//! random init answers nonsense, but deterministic nonsense that must not depend on batching.

use pgsrm::device::Device;
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::model::spec::{Model, load_model};
use pgsrm::reward::local_parent::LocalParent;
use pgsrm::reward::parent::Parent;
use pgsrm::tasks;

#[test]
fn greedy_answers_are_deterministic_and_batch_independent() {
    let task = tasks::by_name("opposites").unwrap();
    let shots = task.few_shot(3);
    let mut parent = LocalParent::load("random:tiny:5", &Device::Cpu, &shots, 4).unwrap();
    assert!(parent.name().contains("random:tiny:5"));
    let q = parent.query("The opposite of 'hot' is ");
    let expected_prefix: String = shots
        .iter()
        .map(|s| format!("{}{}\n", s.prompt, s.answer))
        .collect();
    assert_eq!(q, format!("{expected_prefix}The opposite of 'hot' is "));
    // A prompt that does not end in a space gets one before the answer.
    let q = parent.query("What category does this word belong to: 'fox'?");
    assert!(q.ends_with("'fox'? "));

    let held: Vec<&str> = task.held_out().iter().map(|e| e.prompt).collect();
    let batch = parent.answers(&held[..6]).unwrap();

    // A fresh parent asked one prompt at a time: the same answers (left padding must not leak).
    let mut single = LocalParent::load("random:tiny:5", &Device::Cpu, &shots, 4).unwrap();
    for (p, a) in held[..6].iter().zip(&batch) {
        assert_eq!(&single.answer(p).unwrap(), a, "{p}");
        assert!(!a.contains('\n'));
    }
    // A different init gives different answers somewhere.
    let mut other = LocalParent::load("random:tiny:6", &Device::Cpu, &shots, 4).unwrap();
    assert_ne!(other.answers(&held[..6]).unwrap(), batch);
}

#[test]
fn answers_stop_at_max_new_tokens() {
    let loaded = load_model("random:tiny:1").unwrap();
    let tokenizer = loaded.tokenizer;
    let model = Model::Gpt2(Gpt2::random(Gpt2Config::named("tiny").unwrap(), 1));
    let task = tasks::by_name("copy").unwrap();
    let mut parent = LocalParent::new(
        model,
        &Device::Cpu,
        tokenizer.clone(),
        "tiny",
        &task.few_shot(1),
        2,
    )
    .unwrap();
    let a = parent.answer(task.held_out()[0].prompt).unwrap();
    // Two tokens at most; re-encoding a decoded piece can split it differently, so allow slack.
    assert!(tokenizer.encode(&a).unwrap().len() <= 4, "{a:?}");
    assert!(
        LocalParent::new(
            Model::Gpt2(Gpt2::random(Gpt2Config::named("tiny").unwrap(), 1)),
            &Device::Cpu,
            tokenizer,
            "tiny",
            &[],
            0
        )
        .is_err()
    );
}
