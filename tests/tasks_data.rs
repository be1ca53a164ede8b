//! The five tasks: templates as docs/METHOD.md gives them, complete reference tables, a disjoint and
//! fixed held-out split, seeded sampling from the training prompts only.

use pgsrm::reward::parent::Parent;
use pgsrm::rng::Rng;
use pgsrm::tasks::{self, NAMES};
use std::collections::HashSet;

// The templates copied from docs/METHOD.md's task table.
type MakePrompt = fn(&str) -> String;

const COLORS: [&str; 10] = [
    "red", "blue", "yellow", "green", "orange", "purple", "pink", "brown", "black", "white",
];

#[test]
fn prompts_follow_the_paper_templates_exactly() {
    let t = tasks::by_name("colors").unwrap();
    assert_eq!(t.items, COLORS);
    let mut expected = Vec::new();
    for a in COLORS {
        for b in COLORS {
            if a != b {
                expected.push(format!(
                    "Mix the two colors and output only one lowercase color name: {a} and {b} is => "
                ));
            }
        }
    }
    assert_eq!(t.prompts(), expected);

    let cases: [(&str, MakePrompt); 4] = [
        ("opposites", |w| format!("The opposite of '{w}' is ")),
        ("categories", |w| {
            format!("What category does this word belong to: '{w}'?")
        }),
        ("copy", |s| format!("Copy this sentence: '{s}'")),
        ("negative", |s| format!("Rewrite this as sad: '{s}'")),
    ];
    for (name, make) in cases {
        let t = tasks::by_name(name).unwrap();
        let expected: Vec<String> = t.items.iter().map(|i| make(i)).collect();
        assert_eq!(t.prompts(), expected, "{name}");
    }
}

#[test]
fn sizes_are_close_to_the_paper() {
    let sizes: Vec<usize> = tasks::all()
        .unwrap()
        .iter()
        .map(|t| t.items.len())
        .collect();
    assert_eq!(sizes[0], 10);
    for (name, n) in NAMES.iter().zip(&sizes).skip(1) {
        assert!((90..=110).contains(n), "{name}: {n} items");
    }
}

#[test]
fn every_prompt_has_a_parent_answer() {
    for t in tasks::all().unwrap() {
        let mut parent = pgsrm::reward::parent::TableParent::for_task(&t);
        assert_eq!(parent.len(), t.prompts().len(), "{}", t.name);
        for p in t.prompts() {
            let a = parent.answer(p).unwrap();
            assert!(!a.trim().is_empty(), "{}: empty answer for {p:?}", t.name);
            assert_eq!(t.answer(p), Some(a.as_str()));
        }
        // The table on disk is the one compiled in.
        let path = format!(
            "{}/data/parents/{}.jsonl",
            env!("CARGO_MANIFEST_DIR"),
            t.name
        );
        let mut disk = pgsrm::reward::parent::TableParent::open(&path).unwrap();
        for p in t.prompts() {
            assert_eq!(disk.answer(p).unwrap(), parent.answer(p).unwrap());
        }
    }
}

#[test]
fn answers_fit_the_tasks() {
    let copy = tasks::by_name("copy").unwrap();
    for (item, p) in copy.items.iter().zip(copy.prompts()) {
        assert_eq!(copy.answer(p), Some(item.as_str()));
    }
    let neg = tasks::by_name("negative").unwrap();
    for (item, p) in neg.items.iter().zip(neg.prompts()) {
        let a = neg.answer(p).unwrap();
        assert_ne!(a, item, "a sad rewrite differs from the happy sentence");
    }
    let colors = tasks::by_name("colors").unwrap();
    for a in COLORS {
        for b in COLORS {
            if a != b {
                let pa = format!(
                    "Mix the two colors and output only one lowercase color name: {a} and {b} is => "
                );
                let pb = format!(
                    "Mix the two colors and output only one lowercase color name: {b} and {a} is => "
                );
                let ans = colors.answer(&pa).unwrap();
                // Mixing is symmetric, and the answer is one lowercase word.
                assert_eq!(Some(ans), colors.answer(&pb));
                assert!(ans.chars().all(|c| c.is_ascii_lowercase()), "{ans}");
            }
        }
    }
    assert_eq!(
        colors.answer(
            "Mix the two colors and output only one lowercase color name: red and blue is => "
        ),
        Some("purple")
    );
    for name in ["opposites", "categories"] {
        let t = tasks::by_name(name).unwrap();
        for e in t.train().iter().chain(&t.held_out()) {
            assert!(
                e.answer.chars().all(|c| c.is_ascii_lowercase()),
                "{name}: {:?}",
                e.answer
            );
        }
    }
}

#[test]
fn held_out_is_disjoint_fixed_and_about_a_fifth() {
    for t in tasks::all().unwrap() {
        let train: HashSet<&str> = t.train().iter().map(|e| e.prompt).collect();
        let held: HashSet<&str> = t.held_out().iter().map(|e| e.prompt).collect();
        assert!(train.is_disjoint(&held), "{}", t.name);
        assert_eq!(train.len() + held.len(), t.prompts().len());
        let frac = held.len() as f64 / t.prompts().len() as f64;
        assert!((0.15..=0.25).contains(&frac), "{}: {frac}", t.name);
        // Built twice, the split is the same.
        let again = tasks::by_name(t.name).unwrap();
        assert_eq!(again.held_out(), t.held_out());
    }
    // Colors holds out unordered pairs: both orders of a pair fall on the same side.
    let colors = tasks::by_name("colors").unwrap();
    let held: HashSet<&str> = colors.held_out().iter().map(|e| e.prompt).collect();
    for p in &held {
        let rest = p.rsplit(": ").next().unwrap();
        let pair = rest.trim_end_matches(" is => ");
        let (a, b) = pair.split_once(" and ").unwrap();
        let swapped = p.replace(pair, &format!("{b} and {a}"));
        assert!(held.contains(swapped.as_str()), "{p}");
    }
}

#[test]
fn sampling_is_seeded_uniform_and_never_held_out() {
    let t = tasks::by_name("opposites").unwrap();
    let held: HashSet<&str> = t.held_out().iter().map(|e| e.prompt).collect();
    let a = t.sample_batch(&mut Rng::new(3), 50);
    let b = t.sample_batch(&mut Rng::new(3), 50);
    assert_eq!(a, b);
    let n_train = t.train().len();
    let mut counts = std::collections::HashMap::new();
    let draws = 200 * n_train;
    let mut rng = Rng::new(11);
    for _ in 0..draws {
        let e = t.sample(&mut rng);
        assert!(!held.contains(e.prompt));
        assert_eq!(t.answer(e.prompt), Some(e.answer));
        *counts.entry(e.prompt).or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), n_train, "every training prompt is drawn");
    for (p, c) in counts {
        // 200 expected per prompt; 5 standard deviations is about 70.
        assert!((130..=270).contains(&c), "{p}: {c}");
    }
}

#[test]
fn unknown_task_lists_the_valid_ones() {
    let err = tasks::by_name("summarise").err().unwrap().to_string();
    assert!(err.contains("summarise"));
    for n in NAMES {
        assert!(err.contains(n), "{err}");
    }
    assert_eq!(tasks::by_name(" Colors ").unwrap().name, "colors");
}

#[test]
fn settings_follow_the_paper() {
    let t: Vec<_> = tasks::all().unwrap();
    for lexical in &t[..3] {
        let s = &lexical.settings;
        assert_eq!((s.child, s.max_new_tokens, s.batch_size), ("small", 2, 50));
        assert_eq!(s.paper_embedder, "numberbatch");
        assert_eq!(s.embedder, "minilm");
    }
    for sentence in &t[3..] {
        let s = &sentence.settings;
        assert_eq!((s.child, s.max_new_tokens, s.batch_size), ("large", 10, 10));
        assert_eq!(s.paper_embedder, "text-embedding-3-large");
    }
    for task in &t {
        assert!(task.system_message().contains("{\"OUTPUT\": "));
    }
}
