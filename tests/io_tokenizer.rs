//! GPT-2's byte-level BPE: exact round trip of arbitrary UTF-8, the same ids as the reference
//! JavaScript encoder, and a saved tokenizer.json that loads back the same.

mod io_util;

use io_util::TempDir;
use pgsrm::assets;
use pgsrm::model::tokenizer::Tokenizer;
use pgsrm::rng::Rng;

fn gpt2() -> Tokenizer {
    let path = assets::resolve_file("gpt2-tokenizer", "tokenizer.json").unwrap();
    Tokenizer::from_file(&path).unwrap()
}

/// A random string drawn from pieces that stress byte-level BPE: ASCII words and punctuation,
/// leading/trailing/multiple spaces, control characters, multi-byte letters, CJK, emoji with
/// modifiers and joiners, and arbitrary code points.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: [&str; 20] = [
        "the",
        " the",
        "  ",
        " ",
        "\n",
        "\t",
        "\r\n",
        "'s",
        "'ll",
        "I'm",
        "42",
        "3.14",
        "é",
        "naïve",
        "日本語",
        "🙂",
        "👍🏽",
        "👨‍👩‍👧",
        "\u{0}",
        "<|endoftext|>",
    ];
    let n = rng.below(12);
    let mut s = String::new();
    for _ in 0..n {
        match rng.below(4) {
            0 => s.push_str(PIECES[rng.below(PIECES.len())]),
            1 => s.push((b' ' + rng.below(95) as u8) as char),
            2 => s.push(char::from_u32(rng.below(0x20) as u32).unwrap()),
            _ => {
                // Any scalar value: skip the surrogate range, which is not a char.
                let mut c = rng.below(0x10FFFF - 0x800) as u32;
                if c >= 0xD800 {
                    c += 0x800;
                }
                s.push(char::from_u32(c).unwrap());
            }
        }
    }
    s
}

#[test]
fn round_trips_arbitrary_utf8() {
    let tok = gpt2();
    let mut rng = Rng::new(2025);
    for i in 0..2000 {
        let text = random_text(&mut rng);
        let ids = tok.encode(&text).unwrap();
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        let back = tok.decode(&ids).unwrap();
        assert_eq!(back, text, "case {i}: ids {ids:?}");
    }
    assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
    assert_eq!(tok.decode(&[]).unwrap(), "");
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn matches_the_reference_javascript_encoder() {
    // Made by tests/io_fixtures/gpt2_bpe_ids.js with the npm package's own encoder.
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("io_fixtures/gpt2_bpe_ids.json")).unwrap();
    assert!(cases.len() >= 10);
    let tok = gpt2();
    for c in &cases {
        assert_eq!(tok.encode(&c.text).unwrap(), c.ids, "text {:?}", c.text);
    }
}

#[test]
fn special_ids_token_strings_and_saved_json() {
    let tok = gpt2();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.eos_id(), Some(50256));
    assert_eq!(tok.pad_id(), Some(50256));
    assert_eq!(tok.encode("a<|endoftext|>b").unwrap(), vec![64, 50256, 65]);
    let ids = tok.encode(" red and blue").unwrap();
    assert_eq!(
        tok.token_strings(&ids).unwrap(),
        vec![" red", " and", " blue"]
    );
    assert_eq!(tok.id_to_token(ids[0]).as_deref(), Some("Ġred"));
    let e = format!("{:#}", tok.decode(&[50257]).unwrap_err());
    assert!(
        e.contains("50257") && e.contains("outside the vocabulary"),
        "{e}"
    );

    let tmp = TempDir::new("tok-save");
    let p = tmp.join("tokenizer.json");
    tok.save(&p).unwrap();
    let back = Tokenizer::from_file(&p).unwrap();
    let text = "Zürich 🙂 isn't  far\n";
    assert_eq!(back.encode(text).unwrap(), tok.encode(text).unwrap());

    std::fs::write(&p, "{\"model\": 3}").unwrap();
    let e = format!("{:#}", Tokenizer::from_file(&p).unwrap_err());
    assert!(
        e.contains("tokenizer.json") && e.contains("not a valid"),
        "{e}"
    );
}

#[test]
fn builds_from_encoder_json_and_vocab_bpe_with_clear_errors() {
    let dir = assets::resolve_dir("gpt2-tokenizer").unwrap();
    let (enc, bpe) = (dir.join("encoder.json"), dir.join("vocab.bpe"));
    let built = Tokenizer::from_gpt2_bpe(&enc, &bpe).unwrap();
    let reference = gpt2();
    let mut rng = Rng::new(4);
    for _ in 0..200 {
        let text = random_text(&mut rng);
        assert_eq!(
            built.encode(&text).unwrap(),
            reference.encode(&text).unwrap()
        );
    }

    let tmp = TempDir::new("tok-bad");
    let bad = tmp.join("vocab.bpe");
    std::fs::write(&bad, "#version: 0.2\nĠ t\nĠt he extra\n").unwrap();
    let e = format!("{:#}", Tokenizer::from_gpt2_bpe(&enc, &bad).unwrap_err());
    assert!(e.contains("vocab.bpe line 3"), "{e}");
    let bad_enc = tmp.join("encoder.json");
    std::fs::write(&bad_enc, "[1, 2]").unwrap();
    let e = format!(
        "{:#}",
        Tokenizer::from_gpt2_bpe(&bad_enc, &bpe).unwrap_err()
    );
    assert!(e.contains("encoder.json"), "{e}");
}
