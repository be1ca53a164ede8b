//! Points in a device's work, for timing its phases without waiting at each one.

use super::{Dev, Gpu};
use anyhow::{Result, anyhow};
use cudarc::driver::{CudaEvent, sys::CUevent_flags};
use std::time::Instant;

/// A point in the device's stream of work (`Gpu::mark`): a timing event on a GPU, which the
/// device passes when the work launched before it is done; the host's clock on the emulated
/// device, whose launches run to completion when they are made.
pub struct Mark(Point);

enum Point {
    Event(CudaEvent),
    Host(Instant),
}

impl Gpu {
    /// Marks where the work launched so far will have got the device. Not while recording a graph.
    pub fn mark(&self) -> Result<Mark> {
        self.not_capturing("marking a point for timing")?;
        Ok(Mark(match &self.dev {
            Dev::Cuda(d) => Point::Event(
                d.stream
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| anyhow!("recording a timing event: {e:?}"))?,
            ),
            Dev::Emu(_) => Point::Host(Instant::now()),
        }))
    }
}

impl Mark {
    /// The device's seconds from this mark to `later`, waiting until the device has passed it.
    pub fn seconds_to(&self, later: &Mark) -> Result<f32> {
        match (&self.0, &later.0) {
            (Point::Event(a), Point::Event(b)) => a
                .elapsed_ms(b)
                .map(|ms| ms / 1e3)
                .map_err(|e| anyhow!("timing between two events: {e:?}")),
            (Point::Host(a), Point::Host(b)) => Ok(b.duration_since(*a).as_secs_f32()),
            _ => Err(anyhow!("two marks of different devices")),
        }
    }
}
