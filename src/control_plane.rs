//! `weir control-plane`: one replica of the control plane in its own process.
//!
//! It serves the Raft routes (`/raft/…`, see `weir_control_plane::node`) and, until the HTTP API
//! is merged onto the same listener, only `GET /healthz` besides them. It stops on ctrl-c or
//! SIGTERM: the listener drains, then Raft stops; the data directory keeps everything a restart
//! needs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::get;
use weir_control_plane::metadata::ids::ReplicaId;
use weir_control_plane::node::{Replica, ReplicaConfig};

pub fn serve(id: u64, listen: &str, peers: BTreeMap<ReplicaId, String>, data: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut config = ReplicaConfig::new(ReplicaId(id), listen, data);
        config.peers = peers;
        let mut replica = Replica::start(config).await.context("the control-plane replica does not start")?;
        // Placeholder until the API router is passed in here.
        let api = Router::new().route("/healthz", get(|| async { "ok" }));
        replica.serve(api)?;
        // The first line of stdout is the address: scripts and tests that asked for port 0 read it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "control-plane replica {id} listening on {}", replica.local_addr())?;
        out.flush()?;
        drop(out);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!(replica = id, "stopping");
        replica.shutdown().await.context("the replica did not stop cleanly")
    })
}
