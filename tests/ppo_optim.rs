//! AdamW, gradient-norm clipping and the adaptive KL controller against hand-computed values.

use pgsrm::ppo::adamw::{clip_coef, grad_norm};
use pgsrm::ppo::{AdamW, KlController, clip_grad_norm};
use pgsrm::tensor::Tensor;

/// lr 0.1, weight decay 0.01, betas 0.9/0.999, eps 1e-8; parameters [1, -2].
/// Element 0, gradients 0.5, -0.25, 0.125:
///  step 1: p = 1 (1 - 0.001) = 0.999; m = 0.05; v = 0.00025; m_hat = 0.5; v_hat = 0.25;
///          p -= 0.1 * 0.5 / (0.5 + 1e-8) -> 0.899
///  step 2: p = 0.899 * 0.999 = 0.898101; m = 0.045 - 0.025 = 0.02; v = 0.00024975 + 0.0000625
///          = 0.00031225; m_hat = 0.02 / 0.19; v_hat = 0.00031225 / 0.001999;
///          p -= 0.1 m_hat / sqrt(v_hat) -> 0.871467299
///  step 3: -> 0.836552918 (the same arithmetic)
/// Element 1, gradients 0, 1, 1: step 1 only decays (m = v = 0): -1.998; then -2.070415681,
/// -2.154191520. (PyTorch's AdamW on the same inputs gives the same values.)
#[test]
fn adamw_matches_hand_computed_steps() {
    let mut p = Tensor::from_vec(&[2], vec![1.0, -2.0]);
    let mut opt = AdamW::new(&[&p], 0.1, 0.9, 0.999, 1e-8, 0.01);
    let expected = [
        [0.899, -1.998],
        [0.871467299, -2.070415681],
        [0.836552918, -2.154191520],
    ];
    for (g, want) in [[0.5, 0.0], [-0.25, 1.0], [0.125, 1.0]]
        .iter()
        .zip(expected)
    {
        let g = Tensor::from_vec(&[2], g.to_vec());
        opt.step(&mut [&mut p], &[&g]).unwrap();
        for (x, w) in p.data.iter().zip(want) {
            assert!((*x as f64 - w).abs() < 2e-6, "{x} vs {w}");
        }
    }
    assert_eq!(opt.step, 3);
    // A mismatched list is an error, not a panic.
    let g = Tensor::zeros(&[2]);
    assert!(opt.step(&mut [], &[&g]).is_err());
}

#[test]
fn a_step_on_scaled_gradients_equals_clipping_then_stepping_bit_for_bit() {
    let g0: Vec<f32> = (0..50)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7)
        .collect();
    let p0: Vec<f32> = (0..50).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.1).collect();
    let mut p1 = Tensor::from_vec(&[50], p0.clone());
    let mut p2 = Tensor::from_vec(&[50], p0);
    let mut o1 = AdamW::new(&[&p1], 1e-3, 0.9, 0.999, 1e-8, 0.01);
    let mut o2 = o1.clone();
    for round in 0..3 {
        let mut g1 = Tensor::from_vec(&[50], g0.iter().map(|x| x * round as f32).collect());
        let g2 = g1.clone();
        let n1 = clip_grad_norm(&mut [&mut g1], 1.0).unwrap();
        o1.step(&mut [&mut p1], &[&g1]).unwrap();
        let n2 = grad_norm(&[&g2]).unwrap();
        o2.step_scaled(&mut [&mut p2], &[&g2], clip_coef(n2, 1.0))
            .unwrap();
        assert_eq!(n1, n2);
        assert_eq!(p1.data, p2.data, "round {round}");
        assert_eq!(o1, o2);
    }
    assert!(clip_coef(5.0, 1.0) < 1.0 && clip_coef(0.5, 1.0) == 1.0);
}

#[test]
fn clip_grad_norm_scales_only_above_the_limit() {
    // Global norm over both tensors: sqrt(3^2 + 4^2 + 0^2) = 5, so scale by 1 / (5 + 1e-6).
    let mut a = Tensor::from_vec(&[2], vec![3.0, 4.0]);
    let mut b = Tensor::from_vec(&[1], vec![0.0]);
    let n = clip_grad_norm(&mut [&mut a, &mut b], 1.0).unwrap();
    assert!((n - 5.0).abs() < 1e-6);
    assert!((a.data[0] - 0.6).abs() < 1e-6 && (a.data[1] - 0.8).abs() < 1e-6);
    // Norm 0.5 is under the limit: unchanged.
    let mut c = Tensor::from_vec(&[2], vec![0.3, -0.4]);
    let n = clip_grad_norm(&mut [&mut c], 1.0).unwrap();
    assert!((n - 0.5).abs() < 1e-6);
    assert_eq!(c.data, vec![0.3, -0.4]);
    // A non-finite gradient is an error and leaves the gradients alone.
    let mut d = Tensor::from_vec(&[2], vec![f32::NAN, 10.0]);
    assert!(clip_grad_norm(&mut [&mut d], 1.0).is_err());
    assert_eq!(d.data[1], 10.0);
    let mut e = Tensor::from_vec(&[1], vec![f32::INFINITY]);
    assert!(clip_grad_norm(&mut [&mut e], 1.0).is_err());
}

#[test]
fn kl_controller_moves_by_one_and_a_half() {
    // Target 0.8: up when KL > 1.2, down when KL < 0.8 / 1.5 = 0.5333.
    let mut k = KlController::new(0.1, 0.8, true);
    assert!((k.update(1.3) - 0.15).abs() < 1e-7);
    assert!((k.update(0.5) - 0.1).abs() < 1e-7);
    assert!((k.update(1.2) - 0.1).abs() < 1e-7, "1.2 is not above 1.2");
    assert!((k.update(0.6) - 0.1).abs() < 1e-7, "inside the band");
    assert!((k.update(0.0) - 0.1 / 1.5).abs() < 1e-7);
    let mut off = KlController::new(0.1, 0.8, false);
    assert_eq!(off.update(100.0), 0.1);
    assert_eq!(off.update(0.0), 0.1);
}
