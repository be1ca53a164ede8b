//! A Numberbatch-sized file (300,000 words x 300 dimensions, values written like Numberbatch's
//! four-decimal numbers) loads completely and correctly. The load time is printed, not asserted:
//! `cargo test --release --test word_vectors_large -- --nocapture` shows it.

use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::word_vectors::WordVectors;
use std::io::{BufWriter, Write};
use std::time::Instant;

const WORDS: usize = 300_000;
const DIM: usize = 300;

/// Value k of word w: a fixed function, so the test can check any entry after loading.
fn value(w: usize, k: usize) -> i32 {
    ((w * 7919 + k * 104_729) % 20_001) as i32 - 10_000
}

/// Word w written with letters only, so a text lookup finds it.
fn word(w: usize) -> String {
    let mut s = String::from("w");
    let mut x = w;
    loop {
        s.push((b'a' + (x % 26) as u8) as char);
        x /= 26;
        if x == 0 {
            break;
        }
    }
    s
}

#[test]
fn three_hundred_thousand_300d_vectors_load() {
    let path = std::env::temp_dir().join(format!("pgsrm-wv-large-{}.txt", std::process::id()));
    let t0 = Instant::now();
    {
        let mut f = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        writeln!(f, "{WORDS} {DIM}").unwrap();
        // Every value as text, once: x.xxxx with four decimals, as in the Numberbatch release.
        let texts: Vec<String> = (-10_000..=10_000)
            .map(|v: i32| {
                let sign = if v < 0 { "-" } else { "" };
                let a = v.unsigned_abs();
                format!("{sign}{}.{:04}", a / 10_000, a % 10_000)
            })
            .collect();
        let mut line = String::with_capacity(DIM * 8 + 16);
        for w in 0..WORDS {
            line.clear();
            line.push_str(&word(w));
            for k in 0..DIM {
                line.push(' ');
                line.push_str(&texts[(value(w, k) + 10_000) as usize]);
            }
            line.push('\n');
            f.write_all(line.as_bytes()).unwrap();
        }
        f.flush().unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "wrote {WORDS} x {DIM} ({:.0} MB) in {:.2?}",
        size as f64 / 1e6,
        t0.elapsed()
    );

    let t1 = Instant::now();
    let wv = WordVectors::load(&path).unwrap();
    let took = t1.elapsed();
    println!(
        "loaded {} words x {} in {:.2?} ({:.1} M values/s)",
        wv.len(),
        wv.dim(),
        took,
        (WORDS * DIM) as f64 / took.as_secs_f64() / 1e6
    );
    std::fs::remove_file(&path).unwrap();

    assert_eq!(wv.len(), WORDS);
    assert_eq!(wv.dim(), DIM);
    for w in [0, 1, 25, 26, 12_345, 150_001, WORDS - 1] {
        let v = wv.get(&word(w)).unwrap();
        for (k, &x) in v.iter().enumerate() {
            let want = value(w, k) as f32 / 10_000.0;
            assert!((x - want).abs() < 1e-6, "word {w} value {k}: {x} vs {want}");
        }
    }
    let text = format!("{} {}", word(3), word(WORDS - 2));
    let avg = wv.embed(&[&text]).unwrap().remove(0);
    for (k, &x) in avg.iter().enumerate() {
        let want = (value(3, k) + value(WORDS - 2, k)) as f32 / 2.0 / 10_000.0;
        assert!((x - want).abs() < 1e-6);
    }
}
