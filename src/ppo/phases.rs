//! The phases of an update, timed by the backend that runs them (`Clock`) and read once the
//! update is done, so a device is not waited for at each phase's end.

use crate::ppo::trainer::PhaseSeconds;
use anyhow::Result;

/// How a backend times its work.
pub trait Clock {
    /// A point in the backend's work.
    type Mark;
    /// Marks where the work asked of the backend so far will have got it: the CPU reads its
    /// clock; a device records a timing event on its stream, so a phase is timed by the device
    /// without the host waiting for it there.
    fn mark(&self) -> Result<Self::Mark>;
    /// Seconds of the backend's work between two marks, waiting until it has passed `to`.
    fn seconds(&self, from: &Self::Mark, to: &Self::Mark) -> Result<f32>;
}

/// A phase the policy runs (the trainer times the reward itself).
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    Rollout,
    Reference,
    Actor,
    Optimiser,
}

/// Stretches of the backend's work, each with its phase, not yet read.
pub struct Spans<M>(Vec<(Phase, M, M)>);

impl<M> Default for Spans<M> {
    fn default() -> Self {
        Spans(Vec::new())
    }
}

impl<M> Spans<M> {
    /// Runs `f` on the backend and keeps the stretch of the backend's work it asked for.
    pub fn timed<P: Clock<Mark = M>, T>(
        &mut self,
        passes: &mut P,
        phase: Phase,
        f: impl FnOnce(&mut P) -> Result<T>,
    ) -> Result<T> {
        let from = passes.mark()?;
        let out = f(passes)?;
        self.0.push((phase, from, passes.mark()?));
        Ok(out)
    }

    /// The seconds of every phase, summed over its stretches; waits for the last. The spans are
    /// emptied.
    pub fn read<P: Clock<Mark = M>>(&mut self, passes: &P) -> Result<PhaseSeconds> {
        let mut s = PhaseSeconds::default();
        for (phase, from, to) in self.0.drain(..) {
            let slot = match phase {
                Phase::Rollout => &mut s.rollout,
                Phase::Reference => &mut s.reference,
                Phase::Actor => &mut s.actor,
                Phase::Optimiser => &mut s.optimiser,
            };
            *slot += passes.seconds(&from, &to)?;
        }
        Ok(s)
    }
}
