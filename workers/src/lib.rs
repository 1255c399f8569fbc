//! The worker role: everything that makes a process run tasks.
//!
//! - [`service`]: `weir worker` — registration and heartbeats to the control plane's leader,
//!   the task endpoint it deploys attempts on, and the links between the parts of an attempt
//!   spread over several workers;
//! - [`attempt`]: one attempt of a job in this process, from its SQL to its end, with the
//!   checkpoint and savepoint set-up any local run shares ([`attempt::setup`]);
//! - [`runtime`]: deploys a job graph's subtasks as tasks and runs them, restarting the job in
//!   this process when its exchange is lost;
//! - [`operators`]: the streaming operators; [`connectors`]: sources and sinks;
//! - [`checkpoint`]: barriers, the checkpoint coordinator, and what operators snapshot.
//!
//! It reaches the control plane only through `weir_dataflow::wire` (DESIGN §2): the two roles
//! never import each other.

pub mod attempt;
pub mod checkpoint;
pub mod connectors;
pub mod error;
pub mod operators;
pub mod output;
pub mod runtime;
pub mod service;

pub use error::{TaskError, TaskResult};
