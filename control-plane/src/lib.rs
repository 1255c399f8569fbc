//! The control plane: Raft-replicated job metadata, the HTTP API, dispatcher, job masters,
//! scheduler and checkpoint coordinator.
//!
//! Not built yet: jobs run in-process through `weir run` until the control-plane issue lands.
//! It will talk to workers only through the wire protocol in `weir-dataflow`, never by
//! importing `weir-workers`.
