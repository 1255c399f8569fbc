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

#[derive(Clone, Debug)]
pub struct JobEdge {
    pub index: usize,
    pub source: VertexId,
    pub target: VertexId,
    /// Which input of the target's head node this edge feeds.
    pub target_input: usize,
    pub partitioning: Partitioning,
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
