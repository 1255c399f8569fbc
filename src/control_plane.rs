//! `weir control-plane`: one replica of the control plane in its own process, and what
//! `weir standalone` shares with it: the root token, and serving a replica until a signal.
//!
//! A replica serves the Raft routes (`/raft/…`, see `weir_control_plane::node`) and the HTTP API
//! (`/api/v1/…`) on one listener. Without remote workers there is nothing for its dispatcher to
//! run jobs on, so `weir control-plane` answers job actions with the metadata-only runtime (they
//! are recorded as desired state); `weir standalone` runs them in its own process. It stops on
//! ctrl-c or SIGTERM: the listener drains, then Raft stops; the data directory keeps everything
//! a restart needs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use axum::Router;
use weir_control_plane::api::{self, ApiState, RootToken};
use weir_control_plane::metadata::ids::ReplicaId;
use weir_control_plane::node::{Replica, ReplicaConfig};

pub fn serve(
    id: u64,
    listen: &str,
    peers: BTreeMap<ReplicaId, String>,
    data: PathBuf,
    root_token_file: Option<&Path>,
) -> Result<()> {
    let root_token = root_token(root_token_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut config = ReplicaConfig::new(ReplicaId(id), listen, data);
        config.peers = peers;
        let replica = Replica::start(config).await.context("the control-plane replica does not start")?;
        let mut state = ApiState::metadata_only(replica.handle());
        if let Some(root_token) = root_token {
            state = state.with_root_token(root_token);
        }
        serve_until_stopped(replica, api::router(state), &format!("control-plane replica {id}"), &[]).await
    })
}

/// The operator's root token: the contents of `file`, else `WEIR_ROOT_TOKEN`, else none (then
/// tenants cannot be created through the API).
pub fn root_token(file: Option<&Path>) -> Result<Option<RootToken>> {
    let secret = match file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("cannot read the root token {}", path.display()))?,
        ),
        None => std::env::var("WEIR_ROOT_TOKEN").ok(),
    };
    secret.map(|secret| RootToken::from_secret(&secret).map_err(|e| anyhow!("root token: {e}"))).transpose()
}

/// Serves `api` beside the replica's Raft routes, prints `NAME listening on ADDR` as the first
/// line of stdout (scripts and tests that asked for port 0 read it) and then `notes`, and runs
/// until ctrl-c or SIGTERM.
pub async fn serve_until_stopped(mut replica: Replica, api: Router, name: &str, notes: &[String]) -> Result<()> {
    replica.serve(api)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{name} listening on {}", replica.local_addr())?;
    out.flush()?;
    // Best effort: a reader that took the address and closed the pipe must not stop the server.
    for note in notes {
        let _ = writeln!(out, "{note}").and_then(|()| out.flush());
    }
    drop(out);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(name, "stopping");
    replica.shutdown().await.context("the replica did not stop cleanly")
}
