//! Shaping values against hand-computed examples.

use pgsrm::reward::shaping::{self, Shaping, binary, cosine, euclidean, pgsrm, truncate};

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() < 1e-6
}

#[test]
fn identical_opposite_and_orthogonal_vectors() {
    let a = [1.0, 2.0, -2.0];
    let neg = [-1.0, -2.0, 2.0];
    let orth = [2.0, -1.0, 0.0];
    assert!(close(cosine(&a, &a), 1.0));
    assert!(close(cosine(&a, &neg), -1.0));
    assert!(close(cosine(&a, &orth), 0.0));

    // cos = 1
    assert!(close(pgsrm(1.0, 4.0), 1.0));
    assert!(close(truncate(1.0, 4.0), 1.0));
    assert!(close(euclidean(&a, &a), 1.0));
    // cos = -1: ((-1 + 1) / 2)^4 = 0; max(0, -1)^4 = 0; 1 - ||u - (-u)|| = 1 - 2 = -1
    assert!(close(pgsrm(-1.0, 4.0), 0.0));
    assert!(close(truncate(-1.0, 4.0), 0.0));
    assert!(close(euclidean(&a, &neg), -1.0));
    // cos = 0: (1/2)^4 = 0.0625; 0; 1 - sqrt(2)
    assert!(close(pgsrm(0.0, 4.0), 0.0625));
    assert!(close(truncate(0.0, 4.0), 0.0));
    assert!(close(euclidean(&a, &orth), 1.0 - 2f64.sqrt()));
}

#[test]
fn forty_five_degrees() {
    let a = [3.0, 0.0];
    let b = [0.5, 0.5];
    let c = 0.5f64.sqrt();
    assert!(close(cosine(&a, &b), c));
    // ((1 + 1/sqrt 2) / 2)^4, by hand: 0.8535534^2 = 0.7285534, squared 0.5307904
    assert!((pgsrm(c as f32, 4.0) as f64 - 0.5307904).abs() < 1e-6);
    // (1/sqrt 2)^4 = 1/4, (1/sqrt 2)^2 = 1/2
    assert!(close(truncate(c as f32, 4.0), 0.25));
    assert!(close(truncate(c as f32, 2.0), 0.5));
    // unit vectors (1, 0) and (c, c): distance^2 = (1 - c)^2 + c^2 = 2 - 2c
    assert!(close(euclidean(&a, &b), 1.0 - (2.0 - 2.0 * c).sqrt()));
    // Scale does not matter.
    assert!(close(
        euclidean(&[30.0, 0.0], &[7.0, 7.0]),
        1.0 - (2.0 - 2.0 * c).sqrt()
    ));
}

#[test]
fn zero_vectors_and_broken_inputs_give_defined_rewards() {
    let z = [0.0f32; 3];
    let a = [0.3f32, -0.1, 0.9];
    // docs/METHOD.md: a zero vector gives cos = 0 and so r = 0.0625.
    assert_eq!(cosine(&z, &a), 0.0);
    assert_eq!(cosine(&z, &z), 0.0);
    let r = Shaping::Pgsrm.reward(4.0, "", "x", &z, &a);
    assert!(close(r, 0.0625));
    assert_eq!(Shaping::Truncate.reward(4.0, "", "", &z, &z), 0.0);
    // A zero vector stays zero when normalised: distance 1 to a unit vector, 0 to another zero.
    assert!(close(euclidean(&z, &a), 0.0));
    assert!(close(euclidean(&z, &z), 1.0));
    // Empty and mismatched vectors, NaN and infinite components: finite rewards, never NaN.
    let nan = [f32::NAN, 1.0, 0.0];
    let inf = [f32::INFINITY, 1.0, 0.0];
    for s in Shaping::ALL {
        for (p, c) in [
            (&[][..], &[][..]),
            (&a[..], &[1.0f32, 2.0][..]),
            (&nan[..], &a[..]),
            (&inf[..], &inf[..]),
            (&z[..], &z[..]),
        ] {
            for power in [0.0, 1.0, 4.0, 0.5] {
                let r = s.reward(power, "", "", p, c);
                assert!(r.is_finite(), "{s} gave {r}");
                assert!((-1.0..=1.0).contains(&r), "{s} gave {r}");
            }
        }
    }
}

#[test]
fn rewards_stay_in_range_and_pgsrm_is_monotone() {
    let mut last = -1.0f32;
    for i in 0..=200 {
        let c = -1.0 + i as f32 / 100.0;
        let p = pgsrm(c, 4.0);
        assert!((0.0..=1.0).contains(&p));
        assert!(p >= last);
        last = p;
        assert!((0.0..=1.0).contains(&truncate(c, 4.0)));
    }
    // Components past [-1, 1] (rounding) are clamped.
    assert!(close(pgsrm(1.0001, 4.0), 1.0));
    assert!(close(truncate(1.5, 3.0), 1.0));
}

#[test]
fn binary_matches_after_strip_and_lower_case() {
    assert_eq!(binary("Purple", "  purple\n"), 1.0);
    assert_eq!(binary("The Cat sat.", "the cat sat."), 1.0);
    assert_eq!(binary("", ""), 1.0);
    assert_eq!(binary("", "   "), 1.0);
    assert_eq!(binary("", "red"), 0.0);
    assert_eq!(binary("red", "dark red"), 0.0);
    assert_eq!(binary("red", "red."), 0.0);
    // Binary ignores the vectors entirely.
    assert_eq!(
        Shaping::Binary.reward(4.0, "Cold", "cold", &[1.0], &[-1.0]),
        1.0
    );
}

#[test]
fn names_parse_and_unknown_ones_list_the_valid_ones() {
    for s in Shaping::ALL {
        assert_eq!(Shaping::from_name(s.name()).unwrap(), s);
        assert_eq!(s.name().parse::<Shaping>().unwrap(), s);
    }
    assert_eq!(Shaping::from_name(" PGSRM ").unwrap(), Shaping::Pgsrm);
    let err = Shaping::from_name("cosine").unwrap_err().to_string();
    for s in Shaping::ALL {
        assert!(err.contains(s.name()), "{err}");
    }
    assert!(err.contains("cosine"));
    assert!(!Shaping::Binary.needs_embeddings());
    assert!(Shaping::Pgsrm.uses_power() && !Shaping::Euclidean.uses_power());
    assert_eq!(shaping::DEFAULT_POWER, 4.0);
}

/// An embedder that maps a text to (number of 'a', number of 'b').
struct Counts;

impl pgsrm::reward::Embedder for Counts {
    fn name(&self) -> String {
        "counts".into()
    }
    fn dim(&self) -> usize {
        2
    }
    fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| vec![t.matches('a').count() as f32, t.matches('b').count() as f32])
            .collect())
    }
}

#[test]
fn batch_rewards_pair_each_parent_with_its_child() {
    let parents = ["a", "a", "ab", "x"];
    let children = ["aa", "b", "ba", "x"];
    // cos: 1, 0, 1, 0 (zero vectors)
    let r = shaping::rewards(Some(&Counts), Shaping::Truncate, 4.0, &parents, &children).unwrap();
    assert_eq!(r, vec![1.0, 0.0, 1.0, 0.0]);
    let r = shaping::rewards(Some(&Counts), Shaping::Pgsrm, 4.0, &parents, &children).unwrap();
    assert_eq!(r, vec![1.0, 0.0625, 1.0, 0.0625]);
    let r = shaping::rewards(None, Shaping::Binary, 4.0, &parents, &children).unwrap();
    assert_eq!(r, vec![0.0, 0.0, 0.0, 1.0]);
    assert!(shaping::rewards(None, Shaping::Pgsrm, 4.0, &parents, &children).is_err());
    assert!(
        shaping::rewards(Some(&Counts), Shaping::Pgsrm, 4.0, &parents, &children[..3]).is_err()
    );
}
