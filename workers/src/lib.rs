//! The worker: runs the tasks of a job — its runtime ([`runtime`]), streaming operators
//! ([`operators`]) and connectors ([`connectors`]).
//!
//! Today a worker runs jobs in-process (`weir run`); registration with the control plane
//! and remote deployment come with the control plane.

pub mod checkpoint;
pub mod connectors;
pub mod error;
pub mod operators;
pub mod output;
pub mod runtime;

pub use error::{TaskError, TaskResult};
