//! The replicated metadata of the control plane, as plain data and pure rules: the ids only the
//! control plane hands out, the records (tenants, tokens, workers, jobs, checkpoints,
//! savepoints), the commands that change them and the state that applies those commands.
//! Raft (in `crate::raft`) only orders the commands; it knows nothing of their meaning.

pub mod command;
pub mod ids;
pub mod records;
pub mod state;

pub use command::{Command, Rejection, Response};
pub use state::MetadataState;
