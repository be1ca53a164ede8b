//! KV-cache decoding against the full forward, seeded generation, stopping at end-of-text.

use pgsrm::batch::Batch;
use pgsrm::cpu::gpt2::forward;
use pgsrm::cpu::gpt2_decode::{Gpt2Decoder, generate};
use pgsrm::model::gpt2::{Gpt2, Gpt2Config};
use pgsrm::rng::Rng;
use pgsrm::sample::SamplingParams;

fn small_model(seed: u64) -> Gpt2 {
    let config = Gpt2Config {
        vocab_size: 41,
        n_positions: 24,
        n_embd: 16,
        n_layer: 2,
        n_head: 4,
        layer_norm_epsilon: 1e-5,
        bos_token_id: 0,
        eos_token_id: 0,
    };
    let mut model = Gpt2::random(config, seed);
    // Larger weights than GPT-2's init, so that outputs depend visibly on the context.
    let mut rng = Rng::new(seed + 100);
    for (_, t) in model.weights.named_mut() {
        for x in t.data.iter_mut() {
            *x += (rng.normal() * 0.3) as f32;
        }
    }
    model
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![4, 8, 15, 16, 23], vec![42 % 41, 7], vec![1, 2, 3]]
}

/// Log-probabilities of the next token at the last index of each row, by a full forward.
fn full_last_logits(model: &Gpt2, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let batch = Batch::left_padded(seqs, 0).unwrap();
    let pos: Vec<(usize, usize)> = (0..batch.b).map(|r| (r, batch.t - 1)).collect();
    let (logits, _) = forward(model, &batch, &pos).unwrap();
    logits
        .data
        .chunks(model.config.vocab_size)
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn cached_decoding_gives_the_full_forward_logits() {
    let model = small_model(1);
    let v = model.config.vocab_size;
    let mut seqs = prompts();
    let mut dec = Gpt2Decoder::new(&model, &seqs, 5, 0).unwrap();
    let feed = [[3u32, 9, 40], [0, 11, 5], [12, 12, 12], [39, 1, 0]];
    for step in 0..=feed.len() {
        let want = full_last_logits(&model, &seqs);
        for (r, w) in want.iter().enumerate() {
            let got = &dec.logits()[r * v..(r + 1) * v];
            for (x, y) in got.iter().zip(w) {
                assert!((x - y).abs() < 1e-5, "step {step} row {r}: {x} vs {y}");
            }
        }
        if step < feed.len() {
            dec.step(&feed[step]).unwrap();
            for (s, &t) in seqs.iter_mut().zip(&feed[step]) {
                s.push(t);
            }
        }
    }
    assert_eq!(dec.len(), 5 + feed.len());
}

#[test]
fn same_seed_same_tokens_and_logprobs_match_the_model() {
    let model = small_model(2);
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: 6,
    };
    // An end-of-text id outside this model's favourites keeps every row going for all steps.
    let eos = 40;
    let run = |seed| generate(&model, &prompts(), &params, eos, &mut Rng::new(seed)).unwrap();
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
    // Each logprob is log softmax(logits / 0.8) of the full forward over prompt + tokens so far.
    for (r, g) in a.iter().enumerate() {
        assert_eq!(g.tokens.len(), g.logprobs.len());
        let mut seq = prompts()[r].clone();
        for (&tok, &lp) in g.tokens.iter().zip(&g.logprobs) {
            let logits = &full_last_logits(&model, std::slice::from_ref(&seq))[0];
            let z: Vec<f64> = logits.iter().map(|&x| x as f64 / 0.8).collect();
            let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
            let want = z[tok as usize] - lse;
            assert!((lp as f64 - want).abs() < 1e-4, "row {r}: {lp} vs {want}");
            seq.push(tok);
        }
    }
}

#[test]
fn a_row_that_samples_end_of_text_stops_and_the_others_go_on() {
    let model = small_model(3);
    let greedy = SamplingParams::greedy(5);
    let first = generate(&model, &prompts(), &greedy, 40, &mut Rng::new(0)).unwrap();
    // Make row 0's first greedy token the end-of-text id.
    let eos = first[0].tokens[0];
    let out = generate(&model, &prompts(), &greedy, eos, &mut Rng::new(0)).unwrap();
    assert_eq!(out[0].tokens, vec![eos]);
    for (r, g) in out.iter().enumerate().skip(1) {
        // Until they produce eos themselves, the other rows follow the run without a stop.
        let n = g.tokens.len();
        assert_eq!(&g.tokens[..], &first[r].tokens[..n], "row {r}");
        assert!(n == 5 || g.tokens[n - 1] == eos, "row {r} stopped early");
        assert!(g.tokens[..n - 1].iter().all(|&t| t != eos));
    }
}

#[test]
fn prompts_that_do_not_fit_are_errors() {
    let model = small_model(4);
    let params = SamplingParams {
        max_new_tokens: 20,
        ..SamplingParams::default()
    };
    let long = vec![vec![1u32; 2], vec![1u32; 5]];
    let e = generate(&model, &long, &params, 0, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("prompt 1"), "{e}");
    assert!(e.to_string().contains("24"), "{e}");
    let e = generate(&model, &[vec![]], &params, 0, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = generate(&model, &[vec![41]], &params, 0, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("41"), "{e}");
}
