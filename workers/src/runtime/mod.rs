//! The task runtime: runs a job graph's subtasks as async tasks of one process, wired through a
//! [`ShuffleService`](weir_shuffle_service::ShuffleService), and restarts the job here when its
//! exchange is lost. Its rooms:
//!
//! - `driver.rs`: [`run_local`] runs a [`LocalJob`] to its end, attempt by attempt; each
//!   attempt deploys the regions as they become ready and runs the checkpoint coordinator;
//! - `restart.rs`: in-process restarts ([`InProcessRestarts`]): after a lost exchange a batch
//!   job re-runs regions and a checkpointed streaming job restarts from its latest checkpoint,
//!   both as one restart strategy says;
//! - `deployment.rs`: one attempt's regions deployed: input gates, output partitions, tasks;
//! - `parts.rs`: one process's part of a job spread over several ([`JobPart`], [`PartLink`]);
//! - `task/`: a task's loop — read an event, push it through the operator chain, send what
//!   comes out — and, in `task/checkpoints.rs`, its checkpoint side;
//! - `edges.rs`: a task's output edges, partitioning rows among the consumer subtasks;
//! - `figures.rs`: counters and live figures of a job's tasks ([`JobCounters`]).

mod deployment;
mod driver;
mod edges;
mod figures;
mod parts;
mod restart;
mod task;

pub use task::{ManagedMemory, TaskMemory, budgeted_tasks};

pub use driver::{LocalJob, run_local};
pub use figures::{JobCounters, TaskFigures, VertexFigures};
pub use parts::{JobPart, PartLink};
pub use restart::InProcessRestarts;
