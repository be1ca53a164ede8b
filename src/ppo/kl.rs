//! The adaptive KL coefficient of the reference: after each update, x1.5 when the KL is above
//! 1.5 times the target, /1.5 when below the target / 1.5, unchanged in between.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KlController {
    pub coef: f32,
    pub target: f32,
    pub adaptive: bool,
}

impl KlController {
    pub fn new(coef: f32, target: f32, adaptive: bool) -> Self {
        KlController {
            coef,
            target,
            adaptive,
        }
    }

    /// Adjusts the coefficient after an update whose KL was `kl`; returns the new coefficient.
    pub fn update(&mut self, kl: f32) -> f32 {
        if self.adaptive {
            if kl > 1.5 * self.target {
                self.coef *= 1.5;
            } else if kl < self.target / 1.5 {
                self.coef /= 1.5;
            }
        }
        self.coef
    }
}
