//! Launches that repeat over the same buffers, replayed as a graph from their third run.

use super::{Gpu, Graph};
use anyhow::Result;

/// Whether launches that repeat are replayed as graphs: yes, unless `PGSRM_GRAPHS=0` says to
/// launch every kernel one by one (to compare, or for a profiler that does not follow graphs).
pub fn graphs_wanted() -> bool {
    std::env::var("PGSRM_GRAPHS").map_or(true, |v| v != "0")
}

/// One stretch of launches that runs again and again over the same buffers: launched one by one
/// the first time (which makes whatever scratch they grow), recorded as a graph the second, and
/// replayed from then on. Whatever changes between runs must be written into those buffers
/// before each.
#[derive(Default)]
pub struct Replayed {
    graph: Option<Graph>,
    eager_runs: usize,
}

impl Replayed {
    /// Runs `launches` as above; one by one when `graphs` is false. A recording that fails (a
    /// driver that cannot record this stream, say) leaves the device as it was, says so once,
    /// naming `what`, and turns `graphs` off. True when a graph ran.
    pub fn run(
        &mut self,
        g: &Gpu,
        graphs: &mut bool,
        what: &str,
        mut launches: impl FnMut() -> Result<()>,
    ) -> Result<bool> {
        if !g.records_graphs() {
            *graphs = false;
        }
        if *graphs && self.graph.is_none() && self.eager_runs > 0 {
            match g.capture(&mut launches) {
                Ok(graph) => self.graph = Some(graph),
                Err(e) => {
                    eprintln!(
                        "pgsrm: recording {what} as a graph on {} failed ({e:#}); its kernels are \
                         launched one by one instead",
                        g.name
                    );
                    *graphs = false;
                }
            }
        }
        match &self.graph {
            Some(graph) => g.replay(graph).map(|_| true),
            None => {
                self.eager_runs += 1;
                launches().map(|_| false)
            }
        }
    }
}
