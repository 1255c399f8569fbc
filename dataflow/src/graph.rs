//! The job graph: plan nodes chained into vertices, connected by edges that cross a task
//! boundary (and therefore the shuffle service).
//!
//! A node joins its input's chain when the edge is forward, the parallelism is equal, and the
//! input feeds nothing else: then rows pass between them as plain function calls, with no
//! exchange. Every other edge becomes a [`JobEdge`].

use std::fmt;

use crate::ids::VertexId;
use crate::plan::{NodeId, Partitioning, StreamPlan};

#[derive(Clone, Debug)]
pub struct JobVertex {
    pub id: VertexId,
    pub parallelism: u32,
    /// Plan nodes, head first. Only the head has inputs from other vertices.
    pub chain: Vec<NodeId>,
    /// Edges into this vertex, in the head node's input order.
    pub inputs: Vec<usize>,
    /// Edges out of this vertex, from its tail.
    pub outputs: Vec<usize>,
}

/// How an edge's data is kept between producer and consumer, after Flink's result partition
/// types. Streaming jobs use pipelined edges only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExchangeMode {
    /// Streamed as produced, bounded by credits, not kept: both ends run at once.
    #[default]
    Pipelined,
    /// Written in full before any consumer starts; re-readable until released.
    Blocking,
    /// Consumers may read while the producer runs; everything is kept.
    HybridFull,
    /// Consumers may read while the producer runs; only what they have not read is kept.
    HybridSelective,
}

impl ExchangeMode {
    /// Whether the data is kept after it is read (every mode but pipelined).
    pub fn is_retained(self) -> bool {
        self != ExchangeMode::Pipelined
    }
}

#[derive(Clone, Debug)]
pub struct JobEdge {
    pub index: usize,
    pub source: VertexId,
    pub target: VertexId,
    /// Which input of the target's head node this edge feeds.
    pub target_input: usize,
    pub partitioning: Partitioning,
    pub mode: ExchangeMode,
}

#[derive(Clone, Debug)]
pub struct JobGraph {
    pub vertices: Vec<JobVertex>,
    pub edges: Vec<JobEdge>,
    pub max_parallelism: u32,
}

impl JobGraph {
    pub fn from_plan(plan: &StreamPlan) -> JobGraph {
        let mut vertex_of: Vec<usize> = vec![usize::MAX; plan.nodes.len()];
        let mut vertices: Vec<JobVertex> = Vec::new();
        let mut edges: Vec<JobEdge> = Vec::new();
        for node in &plan.nodes {
            debug_assert!(node.inputs.iter().all(|i| i.node < node.id), "plan nodes are in topological order");
            let chain_into = match node.inputs.as_slice() {
                [input] if input.partitioning == Partitioning::Forward => {
                    let upstream = &plan.nodes[input.node];
                    let v = vertex_of[input.node];
                    let is_tail = vertices[v].chain.last() == Some(&input.node);
                    let single_consumer = plan.consumers(input.node).count() == 1;
                    (upstream.parallelism == node.parallelism && is_tail && single_consumer).then_some(v)
                }
                _ => None,
            };
            if let Some(v) = chain_into {
                vertices[v].chain.push(node.id);
                vertex_of[node.id] = v;
                continue;
            }
            let v = vertices.len();
            vertices.push(JobVertex {
                id: VertexId(v as u32),
                parallelism: node.parallelism,
                chain: vec![node.id],
                inputs: vec![],
                outputs: vec![],
            });
            vertex_of[node.id] = v;
            for (target_input, input) in node.inputs.iter().enumerate() {
                let source = vertex_of[input.node];
                let mut partitioning = input.partitioning.clone();
                if partitioning == Partitioning::Forward && vertices[source].parallelism != node.parallelism {
                    partitioning = Partitioning::Rebalance;
                }
                let index = edges.len();
                edges.push(JobEdge {
                    index,
                    source: VertexId(source as u32),
                    target: VertexId(v as u32),
                    target_input,
                    partitioning,
                    mode: ExchangeMode::Pipelined,
                });
                vertices[source].outputs.push(index);
                vertices[v].inputs.push(index);
            }
        }
        JobGraph { vertices, edges, max_parallelism: plan.max_parallelism }
    }

    pub fn vertex(&self, id: VertexId) -> &JobVertex {
        &self.vertices[id.0 as usize]
    }

    /// Gives every exchange `mode` (a batch job's `execution.batch-shuffle-mode`). Forward
    /// edges stay pipelined: they join operators Flink would chain (a source feeding several
    /// consumers), and keeping their rows would copy whole input records for nothing.
    pub fn with_exchange_mode(mut self, mode: ExchangeMode) -> JobGraph {
        for edge in self.edges.iter_mut().filter(|e| e.partitioning != Partitioning::Forward) {
            edge.mode = mode;
        }
        self
    }

    /// The job's pipelined regions, in an order where every region comes after those it reads
    /// from: vertices joined by pipelined edges must run at once, while the other edges keep
    /// their data, so the regions on either side of one can run apart. Jobs give all their
    /// edges one mode, so regions never wait on each other in a cycle (Flink merges regions
    /// that would; mixed modes would need that too).
    pub fn pipelined_regions(&self) -> Vec<PipelinedRegion> {
        // Union-find over pipelined edges.
        let mut parent: Vec<usize> = (0..self.vertices.len()).collect();
        fn root(parent: &mut [usize], mut v: usize) -> usize {
            while parent[v] != v {
                parent[v] = parent[parent[v]];
                v = parent[v];
            }
            v
        }
        for edge in self.edges.iter().filter(|e| e.mode == ExchangeMode::Pipelined) {
            let (a, b) = (root(&mut parent, edge.source.0 as usize), root(&mut parent, edge.target.0 as usize));
            parent[a.max(b)] = a.min(b);
        }
        // Vertices are in topological order, so numbering regions by their first vertex orders
        // them topologically too (a region's inputs come from vertices numbered lower).
        let mut region_of_root: Vec<Option<usize>> = vec![None; self.vertices.len()];
        let mut regions: Vec<PipelinedRegion> = Vec::new();
        let mut region_of = Vec::with_capacity(self.vertices.len());
        for v in 0..self.vertices.len() {
            let r = root(&mut parent, v);
            let index = *region_of_root[r].get_or_insert_with(|| {
                regions.push(PipelinedRegion { vertices: vec![], blocking_inputs: vec![], hybrid_inputs: vec![] });
                regions.len() - 1
            });
            regions[index].vertices.push(VertexId(v as u32));
            region_of.push(index);
        }
        for edge in &self.edges {
            let (from, to) = (region_of[edge.source.0 as usize], region_of[edge.target.0 as usize]);
            let inputs = match edge.mode {
                ExchangeMode::Pipelined => continue,
                ExchangeMode::Blocking => &mut regions[to].blocking_inputs,
                ExchangeMode::HybridFull | ExchangeMode::HybridSelective => &mut regions[to].hybrid_inputs,
            };
            if !inputs.contains(&from) {
                inputs.push(from);
            }
        }
        regions
    }
}

/// Which regions may start: a region starts once the regions feeding it blocking edges have
/// finished and those feeding it hybrid edges have started. Pure bookkeeping, so a local run
/// and a job master schedule the same way.
#[derive(Debug)]
pub struct RegionSchedule {
    regions: Vec<PipelinedRegion>,
    started: Vec<bool>,
    finished: Vec<bool>,
}

impl RegionSchedule {
    pub fn new(regions: Vec<PipelinedRegion>) -> RegionSchedule {
        let n = regions.len();
        RegionSchedule { regions, started: vec![false; n], finished: vec![false; n] }
    }

    pub fn region(&self, index: usize) -> &PipelinedRegion {
        &self.regions[index]
    }

    /// The regions that may start now, marked started. Starting one can let another start (a
    /// hybrid consumer), so this repeats until nothing changes.
    pub fn start_ready(&mut self) -> Vec<usize> {
        let mut ready = Vec::new();
        loop {
            let next = (0..self.regions.len()).find(|&r| {
                !self.started[r]
                    && self.regions[r].blocking_inputs.iter().all(|i| self.finished[*i])
                    && self.regions[r].hybrid_inputs.iter().all(|i| self.started[*i])
            });
            let Some(r) = next else { return ready };
            self.started[r] = true;
            ready.push(r);
        }
    }

    pub fn all_started(&self) -> bool {
        self.started.iter().all(|s| *s)
    }

    pub fn finish(&mut self, region: usize) {
        debug_assert!(self.started[region], "a region finishes after it started");
        self.finished[region] = true;
    }

    /// The exchanges' retained data is lost (its shuffle server went away): every region that
    /// has not finished runs again, and so does every region upstream of one, whose output it
    /// needs again. Returns how many regions will run again.
    pub fn restart_after_data_loss(&mut self) -> usize {
        let mut again: Vec<bool> = self.finished.iter().map(|f| !f).collect();
        // Inputs come from lower-numbered regions: one backward pass reaches every ancestor.
        for r in (0..self.regions.len()).rev() {
            if again[r] {
                for &i in self.regions[r].blocking_inputs.iter().chain(&self.regions[r].hybrid_inputs) {
                    again[i] = true;
                }
            }
        }
        for (r, _) in again.iter().enumerate().filter(|(_, a)| **a) {
            self.started[r] = false;
            self.finished[r] = false;
        }
        again.iter().filter(|a| **a).count()
    }

    /// Every region has finished.
    pub fn is_done(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }
}

/// Vertices that must be scheduled together: connected by pipelined edges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelinedRegion {
    pub vertices: Vec<VertexId>,
    /// Regions that must have finished before this one starts (they feed it blocking edges).
    pub blocking_inputs: Vec<usize>,
    /// Regions that must have started before this one starts (they feed it hybrid edges).
    pub hybrid_inputs: Vec<usize>,
}

impl fmt::Display for JobGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.vertices {
            writeln!(f, "{} (parallelism {}): nodes {:?}", v.id, v.parallelism, v.chain)?;
        }
        for e in &self.edges {
            writeln!(f, "{} -> {} [{}] input {}", e.source, e.target, e.partitioning, e.target_input)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// source(0) -> a(1) -> join(3) <- b(2) <- source(0), then join -> sink(4).
    fn diamond(mode: ExchangeMode) -> JobGraph {
        let pairs = [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)];
        let mut vertices: Vec<JobVertex> = (0..5)
            .map(|v| JobVertex {
                id: VertexId(v),
                parallelism: 2,
                chain: vec![v as usize],
                inputs: vec![],
                outputs: vec![],
            })
            .collect();
        let mut edges = Vec::new();
        for (index, (s, t)) in pairs.into_iter().enumerate() {
            vertices[s].outputs.push(index);
            vertices[t].inputs.push(index);
            edges.push(JobEdge {
                index,
                source: VertexId(s as u32),
                target: VertexId(t as u32),
                target_input: vertices[t].inputs.len() - 1,
                partitioning: Partitioning::Rebalance,
                mode: ExchangeMode::Pipelined,
            });
        }
        JobGraph { vertices, edges, max_parallelism: 128 }.with_exchange_mode(mode)
    }

    #[test]
    fn pipelined_edges_make_one_region() {
        let regions = diamond(ExchangeMode::Pipelined).pipelined_regions();
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].vertices.len(), 5);
        assert!(regions[0].blocking_inputs.is_empty());
    }

    #[test]
    fn blocking_edges_split_every_vertex_into_ordered_stages() {
        let regions = diamond(ExchangeMode::Blocking).pipelined_regions();
        assert_eq!(regions.len(), 5);
        for (r, region) in regions.iter().enumerate() {
            assert_eq!(region.vertices, vec![VertexId(r as u32)]);
            assert!(region.blocking_inputs.iter().all(|i| *i < r), "region {r} reads only earlier regions");
        }
        assert_eq!(regions[3].blocking_inputs, vec![1, 2]);
        assert!(regions[3].hybrid_inputs.is_empty());
    }

    #[test]
    fn blocking_stages_start_after_their_inputs_finish() {
        let mut schedule = RegionSchedule::new(diamond(ExchangeMode::Blocking).pipelined_regions());
        assert_eq!(schedule.start_ready(), vec![0]);
        assert!(schedule.start_ready().is_empty(), "nothing else until the source finishes");
        schedule.finish(0);
        assert_eq!(schedule.start_ready(), vec![1, 2]);
        schedule.finish(1);
        assert!(schedule.start_ready().is_empty(), "the join waits for both sides");
        schedule.finish(2);
        assert_eq!(schedule.start_ready(), vec![3]);
        schedule.finish(3);
        assert_eq!(schedule.start_ready(), vec![4]);
        assert!(!schedule.is_done());
        schedule.finish(4);
        assert!(schedule.is_done());
    }

    #[test]
    fn lost_data_reruns_the_unfinished_regions_and_their_ancestors() {
        let mut schedule = RegionSchedule::new(diamond(ExchangeMode::Blocking).pipelined_regions());
        schedule.start_ready();
        schedule.finish(0);
        schedule.start_ready();
        schedule.finish(1);
        schedule.finish(2);
        assert_eq!(schedule.start_ready(), vec![3]);
        // The join (3) fails: its inputs (1, 2) and theirs (0) must be written again.
        assert_eq!(schedule.restart_after_data_loss(), 5);
        assert_eq!(schedule.start_ready(), vec![0]);

        let mut schedule = RegionSchedule::new(diamond(ExchangeMode::Blocking).pipelined_regions());
        for r in 0..4 {
            schedule.start_ready();
            schedule.finish(r);
        }
        schedule.start_ready();
        // Only the sink's stage is left; it reads the join's output, which reads everything.
        assert_eq!(schedule.restart_after_data_loss(), 5);
    }

    #[test]
    fn hybrid_stages_all_start_at_once() {
        let mut schedule = RegionSchedule::new(diamond(ExchangeMode::HybridFull).pipelined_regions());
        assert_eq!(schedule.start_ready(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn hybrid_edges_make_regions_that_start_together() {
        let regions = diamond(ExchangeMode::HybridSelective).pipelined_regions();
        assert_eq!(regions.len(), 5);
        assert_eq!(regions[3].hybrid_inputs, vec![1, 2]);
        assert!(regions.iter().all(|r| r.blocking_inputs.is_empty()));
    }
}
