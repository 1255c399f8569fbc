//! `weir control-plane`: one replica of the control plane in its own process, and what
//! `weir standalone` shares with it: the root token, and serving a replica until a signal.
//! `weir worker` is served from here too (the role itself is `weir_workers::service`).
//!
//! A replica serves the Raft routes (`/raft/…`, see `weir_control_plane::node`), the HTTP API
//! (`/api/v1/…`) and the routes workers call (`/internal/v1/…`) on one listener. Its
//! dispatcher, while it leads, runs jobs on the workers (`weir_control_plane::workers`). The
//! root token is also the cluster's secret, which workers present; without one, no worker can
//! join and job actions are only recorded as desired state. It stops on ctrl-c or SIGTERM: the
//! listener drains, then Raft stops; the data directory keeps everything a restart needs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use axum::Router;
use weir_control_plane::api::{self, ApiState, RootToken};
use weir_control_plane::dispatcher::Dispatcher;
use weir_control_plane::metadata::ids::ReplicaId;
use weir_control_plane::metadata::records::Quota;
use weir_control_plane::node::{Replica, ReplicaConfig};
use weir_control_plane::workers::{RemoteExecutor, WorkerOptions, Workers, internal_router};
use weir_workers::service::{BoundWorker, WorkerConfig};

pub fn serve(
    id: u64,
    listen: &str,
    peers: BTreeMap<ReplicaId, String>,
    data: PathBuf,
    root_token_file: Option<&Path>,
    options: WorkerOptions,
    quota: Quota,
) -> Result<()> {
    let secret = root_secret(root_token_file)?;
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let _lock = crate::standalone::lock_data_dir(&data)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut config = ReplicaConfig::new(ReplicaId(id), listen, data);
        config.peers = peers;
        let replica = Replica::start(config).await.context("the control-plane replica does not start")?;
        let handle = replica.handle();
        let Some(secret) = secret else {
            tracing::warn!("no root token: workers cannot join, so jobs are recorded but not run");
            let api = api::router(ApiState::metadata_only(handle).with_quota(quota));
            return serve_until_stopped(replica, api, &format!("control-plane replica {id}"), &[]).await;
        };
        let root = RootToken::from_secret(&secret).map_err(|e| anyhow!("root token: {e}"))?;
        let workers = Workers::new(handle.clone(), &secret, options).map_err(|e| anyhow!(e))?;
        let dispatcher = Dispatcher::new(handle.clone(), Arc::new(RemoteExecutor(workers.clone())));
        let state = ApiState::new(handle, Arc::new(dispatcher.runtime())).with_root_token(root).with_quota(quota);
        tokio::spawn(workers.clone().watch());
        let live = dispatcher.live_router();
        tokio::spawn(dispatcher.run());
        let routes = api::router(state).merge(internal_router(workers)).merge(live);
        serve_until_stopped(replica, routes, &format!("control-plane replica {id}"), &[]).await
    })
}

/// Runs a worker (`weir worker`) until ctrl-c or SIGTERM; prints `weir worker ID listening on
/// ADDR` as the first line of stdout.
pub fn serve_worker(config: WorkerConfig) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let worker = BoundWorker::bind(config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "weir worker {} listening on {}", worker.id(), worker.address())?;
        out.flush()?;
        drop(out);
        worker.serve(stop_signal()?).await;
        Ok(())
    })
}

/// Completes on ctrl-c or SIGTERM.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// The operator's root token: the contents of `file`, else `WEIR_ROOT_TOKEN`, else none (then
/// tenants cannot be created through the API).
pub fn root_token(file: Option<&Path>) -> Result<Option<RootToken>> {
    root_secret(file)?.map(|secret| RootToken::from_secret(&secret).map_err(|e| anyhow!("root token: {e}"))).transpose()
}

/// The root token's secret: the contents of `file`, else `WEIR_ROOT_TOKEN`, else none.
pub fn root_secret(file: Option<&Path>) -> Result<Option<String>> {
    let secret = match file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("cannot read the root token {}", path.display()))?,
        ),
        None => std::env::var("WEIR_ROOT_TOKEN").ok(),
    };
    Ok(secret.map(|s| s.trim().to_string()))
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
    stop_signal()?.await;
    tracing::info!(name, "stopping");
    replica.shutdown().await.context("the replica did not stop cleanly")
}
