//! The control plane: Raft-replicated job metadata, the HTTP API, the dispatcher, and the
//! registry and scheduler of workers.
//!
//! - [`api`]: the HTTP API under `/api/v1` (axum), over a [`handle::ReplicaHandle`].
//! - [`dispatcher`]: the leader's service that runs jobs as the metadata says, through a
//!   [`dispatcher::JobExecutor`] the root binary provides.
//! - [`autoscaler`]: the autoscaler's decisions, a pure function of a job's shape, metrics and
//!   the time (per-vertex parallelism, scale-down delay, scale to zero).
//! - [`backlog`]: whether input waits at a suspended job's sources, read without running it.
//! - [`bootstrap`]: a first tenant and its admin token, for a laptop's `weir standalone`.
//! - [`metadata`]: the replicated data (tenants, tokens, workers, jobs, checkpoints, savepoints)
//!   and the pure rules that apply commands to it.
//! - [`handle`]: what the API and the leader's services need of a replica ([`handle::ReplicaHandle`]).
//! - [`raft`]: openraft wiring: durable log and snapshot storage on a local `redb` file, the
//!   state machine, the HTTP transport between replica processes, and an in-process network.
//! - [`node`]: a replica as a process ([`node::Replica`]): bootstrap, its two HTTP listeners
//!   (the API, and the internal one), writes and reads routed to the leader, membership changes.
//! - [`internal`]: the internal listener's door: every route takes a cluster key, and every call
//!   to another part of the cluster presents one.
//! - [`provisioner`]: where workers come from: how many the leader wants (pure, with a
//!   cool-down) and the provisioners that make that many run (local processes, fixed).
//! - [`workers`]: the leader's worker registry (heartbeats, liveness) and the executor that
//!   deploys jobs on workers, adopting a previous leader's attempts.
//!
//! It talks to workers only through the wire protocol in `weir-dataflow`, never by importing
//! `weir-workers`.

pub mod api;
pub mod autoscaler;
pub mod backlog;
pub mod bootstrap;
pub mod dispatcher;
pub mod handle;
pub mod internal;
pub mod metadata;
pub mod node;
pub mod provisioner;
pub mod raft;
pub mod workers;
