//! Word vectors in the Numberbatch text format: averaging as the paper does it, plain and gzipped
//! files, `/c/en/` prefixes, and errors that name the file and line.

use flate2::Compression;
use flate2::write::GzEncoder;
use pgsrm::reward::Embedder;
use pgsrm::reward::embedder::word_vectors::{WordVectors, normalize_text};
use pgsrm::reward::embedder::{EmbedderOptions, by_name};
use std::io::Write;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgsrm-wv-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

// Small integers, so every average below can be checked by hand.
const SMALL: &str = "5 3\n\
red 1 0 0\n\
blue 0 2 0\n\
purple 1 1 4\n\
/c/en/green 0 0 6\n\
/c/fr/rouge 9 9 9\n";

#[test]
fn averages_found_words_after_lowercasing_and_splitting_on_non_letters() {
    let p = tmp("small.txt");
    std::fs::write(&p, SMALL).unwrap();
    let wv = WordVectors::load(&p).unwrap();
    assert_eq!(wv.dim(), 3);
    // The French entry is read but not indexed.
    assert_eq!(wv.len(), 4);
    assert_eq!(wv.get("green"), Some(&[0.0, 0.0, 6.0][..]));
    assert_eq!(wv.get("rouge"), None);

    let v = wv
        .embed(&[
            "red",
            "Red and BLUE!",
            "red-blue",
            "  purple...green  ",
            "rouge",
            "",
            "123 ??",
            "red2blue",
        ])
        .unwrap();
    assert_eq!(v[0], vec![1.0, 0.0, 0.0]);
    // "and" is not in the table: the average is over the two found words.
    assert_eq!(v[1], vec![0.5, 1.0, 0.0]);
    assert_eq!(v[2], vec![0.5, 1.0, 0.0]);
    assert_eq!(v[3], vec![0.5, 0.5, 5.0]);
    // No word found: the zero vector.
    assert_eq!(v[4], vec![0.0; 3]);
    assert_eq!(v[5], vec![0.0; 3]);
    assert_eq!(v[6], vec![0.0; 3]);
    // A digit is a non-letter, so it splits words.
    assert_eq!(v[7], vec![0.5, 1.0, 0.0]);

    assert_eq!(normalize_text("It's RED,blue"), "it s red blue");
}

#[test]
fn gzipped_file_reads_the_same() {
    let plain = tmp("same.txt");
    std::fs::write(&plain, SMALL).unwrap();
    // The gzip magic decides, not the name.
    for name in ["same.txt.gz", "same-gz-without-suffix.txt"] {
        let gz = tmp(name);
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(SMALL.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let a = WordVectors::load(&plain).unwrap();
        let b = WordVectors::load(&gz).unwrap();
        let texts = ["red blue", "purple", "green red", "nothing"];
        assert_eq!(a.embed(&texts).unwrap(), b.embed(&texts).unwrap());
        assert_eq!(b.get("purple"), Some(&[1.0, 1.0, 4.0][..]));
    }
}

#[test]
fn factory_builds_word_vectors() {
    let p = tmp("factory.txt");
    std::fs::write(&p, SMALL).unwrap();
    let opts = EmbedderOptions {
        vectors: Some(p.clone()),
        ..Default::default()
    };
    for name in ["word-vectors", "numberbatch"] {
        let e = by_name(name, &opts).unwrap();
        assert_eq!(e.dim(), 3);
        assert_eq!(e.embed(&["blue"]).unwrap()[0], vec![0.0, 2.0, 0.0]);
    }
}

fn load_err(name: &str, content: &str) -> String {
    let p = tmp(name);
    std::fs::write(&p, content).unwrap();
    let e = WordVectors::load(&p)
        .err()
        .expect("the file should be refused");
    format!("{e:#}")
}

#[test]
fn malformed_files_name_the_file_and_line() {
    let e = load_err("short.txt", "2 3\nred 1 0 0\nblue 0 2\n");
    assert!(e.contains("short.txt:3"), "{e}");
    assert!(e.contains("expected 3 numbers"), "{e}");

    let e = load_err("long.txt", "2 3\nred 1 0 0 7\nblue 0 2 0\n");
    assert!(e.contains("long.txt:2"), "{e}");

    let e = load_err("nan.txt", "2 3\nred 1 0 0\nblue 0 x2 0\n");
    assert!(e.contains("nan.txt:3") && e.contains("'x2'"), "{e}");

    let e = load_err("inf.txt", "1 3\nred 1 inf 0\n");
    assert!(e.contains("inf.txt:2"), "{e}");

    let e = load_err("header.txt", "red 1 0 0\nblue 0 2 0\n");
    assert!(e.contains("header.txt:1") && e.contains("count dim"), "{e}");

    let e = load_err("fewer.txt", "3 3\nred 1 0 0\nblue 0 2 0\n");
    assert!(
        e.contains("fewer.txt") && e.contains("3 vectors") && e.contains("has 2"),
        "{e}"
    );

    let e = load_err("more.txt", "1 3\nred 1 0 0\nblue 0 2 0\n");
    assert!(e.contains("more.txt:3"), "{e}");

    let e = load_err("huge.txt", "99999999999999 300\nred 1 0 0\n");
    assert!(e.contains("huge.txt:1"), "{e}");
    let e = load_err("overstated.txt", "1000000 3\nred 1 0 0\n");
    assert!(e.contains("1000000 vectors") && e.contains("has 1"), "{e}");

    let e = load_err("empty.txt", "");
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");

    let p = tmp("bad-utf8.txt");
    std::fs::write(&p, b"2 3\nred 1 0 0\nbl\xffue 0 2 0\n").unwrap();
    let e = format!("{:#}", WordVectors::load(&p).err().unwrap());
    assert!(e.contains("bad-utf8.txt:3") && e.contains("UTF-8"), "{e}");

    let missing = tmp("does-not-exist.txt");
    let e = format!("{:#}", WordVectors::load(&missing).err().unwrap());
    assert!(e.contains("does-not-exist.txt"), "{e}");
}

#[test]
fn windows_line_ends_and_blank_lines_are_accepted() {
    let p = tmp("crlf.txt");
    std::fs::write(&p, "2 2\r\nred 1 0\r\n\r\nblue 0 1\r\n").unwrap();
    let wv = WordVectors::load(&p).unwrap();
    assert_eq!(wv.embed(&["red blue"]).unwrap()[0], vec![0.5, 0.5]);
}
