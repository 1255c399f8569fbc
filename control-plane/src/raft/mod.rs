//! Raft for the control plane: openraft's type configuration for Weir's metadata, the durable
//! log and state-machine storage on one local `redb` file per replica, the HTTP transport between
//! replica processes ([`http`]), and an in-process network (used by tests and by single-process
//! clusters).
//!
//! Raft orders [`Command`]s; their meaning is in `crate::metadata`. Storage choice:
//! `docs/decisions/raft-storage.md`.

use std::io::Cursor;

use crate::metadata::ids::ReplicaId;
use crate::metadata::{Command, Response};

pub mod http;
pub mod in_process;
pub mod log_store;
pub mod state_machine;
pub mod store;

pub use log_store::LogStore;
pub use state_machine::{MetadataReader, StateMachineStore};
pub use store::{RaftStore, StoreError};

openraft::declare_raft_types!(
    /// openraft's types for the control plane: [`Command`]s in the log, [`Response`]s out of the
    /// state machine, replicas named by [`ReplicaId`] and reached at a [`openraft::BasicNode`]
    /// address. `leader_id_std` gives classic Raft: at most one leader per term.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = ReplicaId,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, ReplicaId>,
);

/// A snapshot on the wire and at rest: the serialized [`crate::metadata::MetadataState`].
pub type SnapshotData = Cursor<Vec<u8>>;

/// A control-plane replica's Raft handle.
pub type MetadataRaft = openraft::Raft<TypeConfig, StateMachineStore>;

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
