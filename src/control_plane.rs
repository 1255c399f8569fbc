//! `weir control-plane`: one replica of the control plane in its own process, and what
//! `weir standalone` shares with it: the root token, and serving a replica until a signal.
//! `weir worker` is served from here too (the role itself is `weir_workers::service`), and
//! `weir key`.
//!
//! A replica serves the HTTP API (`/api/v1/…`) on `--listen`, and on `--internal-listen` the
//! Raft routes (`/raft/…`, see `weir_control_plane::node`) and the routes workers call
//! (`/internal/v1/…`). The root token is required: it opens the API's operator routes, and the
//! keys the parts of the cluster present to each other are derived from it (peers, workers, the
//! shuffle server; `weir_dataflow::auth::ClusterKey`); workers and the shuffle server are given
//! their key, never the root token. Its dispatcher, while it leads, runs jobs on the workers
//! (`weir_control_plane::workers`). It stops on ctrl-c or SIGTERM: the listeners drain, then
//! Raft stops; the data directory keeps everything a restart needs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use weir_control_plane::api::{self, ApiState, RootToken, Sandbox};
use weir_control_plane::dispatcher::Dispatcher;
use weir_control_plane::metadata::ids::ReplicaId;
use weir_control_plane::metadata::records::Quota;
use weir_control_plane::node::{InternalConfig, Replica, ReplicaConfig};
use weir_control_plane::provisioner::{EcsService, LocalProcesses};
use weir_control_plane::workers::{Provisioning, RemoteExecutor, WorkerOptions, Workers, internal_router};
use weir_dataflow::auth::{ClusterKey, KeyPurpose};
use weir_net::{Plaintext, ServerTls, Transport};
use weir_workers::service::{BoundWorker, WorkerConfig};

/// Where a replica listens, and how it reaches the rest of the cluster.
pub struct Listeners {
    /// The HTTP API.
    pub api: String,
    pub api_tls: Option<ServerTls>,
    /// Raft, forwarding between replicas, workers' heartbeats.
    pub internal: String,
    pub internal_tls: Option<ServerTls>,
    /// How the replica calls its peers and the workers.
    pub transport: Transport,
    /// Where either listener may serve without TLS.
    pub plaintext: Plaintext,
}

/// Where the leader's workers come from (`--provisioner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProvisionerKind {
    /// The workers that register: started by hand or by an orchestrator; none is started or
    /// stopped.
    Fixed,
    /// `weir worker` processes this replica starts and stops on its own host while it leads.
    Local,
    /// The desired count of the workers' ECS service (`--ecs-cluster`, `--ecs-service`).
    Ecs,
}

/// How the leader has workers started (`--provisioner` and the `--worker-*` flags).
pub struct ProvisionOptions {
    pub kind: ProvisionerKind,
    /// Slots of each worker it starts.
    pub slots: u32,
    /// How long fewer workers must have been enough before some are stopped.
    pub cool_down: std::time::Duration,
    /// What each worker it starts is given besides the control plane, its slots and its state
    /// folder: the task endpoint's TLS and the CA to trust.
    pub worker_args: Vec<String>,
    /// With `ecs`: the cluster and the workers' service.
    pub ecs_cluster: Option<String>,
    pub ecs_service: Option<String>,
}

/// A replica's own flags.
pub struct ReplicaOptions {
    pub id: u64,
    pub listeners: Listeners,
    pub peers: BTreeMap<ReplicaId, String>,
    pub data: PathBuf,
    /// Root templates of the tenant sandbox (`{tenant}` for the tenant's id).
    pub storage_roots: Vec<String>,
    /// The operator's default quota of a tenant.
    pub quota: Quota,
    pub provision: ProvisionOptions,
}

pub fn serve(replica: ReplicaOptions, root_token_file: Option<&Path>, options: WorkerOptions) -> Result<()> {
    let ReplicaOptions { id, listeners, peers, data, storage_roots, quota, provision } = replica;
    let secret = root_secret(root_token_file)?.ok_or_else(|| {
        anyhow!(
            "a control-plane replica needs the root token (--root-token-file, or WEIR_ROOT_TOKEN): the keys its \
             peers, workers and shuffle server present are derived from it; make one with `openssl rand -hex 32`"
        )
    })?;
    let root = RootToken::from_secret(&secret).map_err(|e| anyhow!("root token: {e}"))?;
    let derive = |purpose| ClusterKey::derive(&secret, purpose).map_err(|e| anyhow!("root token: {e}"));
    let (peer_key, worker_key) = (derive(KeyPurpose::Peer)?, derive(KeyPurpose::Worker)?);
    let options = WorkerOptions { shuffle_key: Some(derive(KeyPurpose::Shuffle)?), ..options };
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let _lock = crate::standalone::lock_data_dir(&data)?;
    // Relative paths mean nothing on the workers: refused. The data directory is never a job's.
    let sandbox = Sandbox::new(storage_roots, None).forbid(&data);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut config = ReplicaConfig::new(ReplicaId(id), listeners.api, data.clone());
        config.tls = listeners.api_tls;
        config.plaintext = listeners.plaintext;
        config.internal = Some(InternalConfig {
            listen: listeners.internal,
            key: peer_key.clone(),
            tls: listeners.internal_tls,
            transport: listeners.transport,
        });
        config.peers = peers.clone();
        let replica = Replica::start(config).await.context("the control-plane replica does not start")?;
        let handle = replica.handle();
        let provisioning = match provision.kind {
            ProvisionerKind::Fixed => None,
            ProvisionerKind::Ecs => {
                let (Some(cluster), Some(service)) = (provision.ecs_cluster, provision.ecs_service) else {
                    bail!("--provisioner ecs needs --ecs-cluster and --ecs-service (the workers' ECS service)");
                };
                let workers = EcsService::from_env(cluster, service).await;
                Some(Provisioning {
                    provisioner: Arc::new(workers),
                    slots_per_worker: provision.slots,
                    cool_down: provision.cool_down,
                })
            }
            ProvisionerKind::Local => {
                // Every replica's internal listener: the workers follow the leader.
                let own = replica.internal_addr().map(|a| a.to_string());
                let control_planes: Vec<String> =
                    if peers.is_empty() { own.into_iter().collect() } else { peers.values().cloned().collect() };
                Some(local_workers(&control_planes, &data, &provision, worker_key.clone())?)
            }
        };
        let workers =
            Workers::with_provisioning(handle.clone(), worker_key, options, provisioning).map_err(|e| anyhow!(e))?;
        let dispatcher = Dispatcher::new(handle.clone(), Arc::new(RemoteExecutor(workers.clone()))).with_quota(quota);
        let state = ApiState::new(handle, Arc::new(dispatcher.runtime()))
            .with_root_token(root)
            .with_sandbox(sandbox)
            .with_quota(quota);
        tokio::spawn(workers.clone().watch());
        let internal = internal_router(workers).merge(dispatcher.live_router(peer_key));
        tokio::spawn(dispatcher.run());
        let notes = match replica.internal_addr() {
            Some(address) => vec![format!("internal listener on {address}")],
            None => Vec::new(),
        };
        serve_until_stopped(replica, api::router(state), internal, &format!("control-plane replica {id}"), &notes).await
    })
}

/// Workers started as children of this process (`--provisioner local`): `weir worker` with the
/// worker key by environment, reporting to `control_planes`, its state folder under `data`,
/// exiting with this process.
pub fn local_workers(
    control_planes: &[String],
    data: &Path,
    provision: &ProvisionOptions,
    key: ClusterKey,
) -> Result<Provisioning> {
    let state = data.join("worker-state");
    let mut args = vec![
        "worker".to_string(),
        "--control-plane".to_string(),
        control_planes.join(","),
        "--slots".to_string(),
        provision.slots.to_string(),
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
        "--exit-with-parent".to_string(),
    ];
    args.extend(provision.worker_args.iter().cloned());
    let program = std::env::current_exe().context("the path of this program, to start workers with")?;
    let workers = LocalProcesses::new(program, args).with_key(key);
    Ok(Provisioning {
        provisioner: Arc::new(workers),
        slots_per_worker: provision.slots,
        cool_down: provision.cool_down,
    })
}

/// The parts of a cluster whose key `weir key` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KeyName {
    /// What workers present (`weir worker --key-file`, WEIR_WORKER_KEY).
    Worker,
    /// What the shuffle server signs namespace tokens with (`weir shuffle --key-file`,
    /// WEIR_SHUFFLE_KEY).
    Shuffle,
    /// What replicas present to each other (for an operator calling an internal route).
    Peer,
}

impl KeyName {
    fn purpose(self) -> KeyPurpose {
        match self {
            KeyName::Worker => KeyPurpose::Worker,
            KeyName::Shuffle => KeyPurpose::Shuffle,
            KeyName::Peer => KeyPurpose::Peer,
        }
    }
}

/// `weir key NAME`: prints the key derived from the root token.
pub fn print_key(name: KeyName, root_token_file: Option<&Path>) -> Result<()> {
    let secret = root_secret(root_token_file)?
        .ok_or_else(|| anyhow!("`weir key` derives from the root token: --root-token-file, or WEIR_ROOT_TOKEN"))?;
    let key = ClusterKey::derive(&secret, name.purpose()).map_err(|e| anyhow!("root token: {e}"))?;
    println!("{}", key.reveal());
    Ok(())
}

/// The key of `purpose` a worker or the shuffle server is given: the contents of `file`, else
/// `WEIR_<PURPOSE>_KEY`.
pub fn cluster_key(purpose: KeyPurpose, file: Option<&Path>) -> Result<ClusterKey> {
    let variable = format!("WEIR_{}_KEY", purpose.name().to_ascii_uppercase());
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {} key {}", purpose.name(), path.display()))?,
        None => std::env::var(&variable).map_err(|_| {
            anyhow!(
                "the {name} key is missing: --key-file, or {variable} (`weir key {name}` prints it from the root token)",
                name = purpose.name()
            )
        })?,
    };
    ClusterKey::from_text(&text).map_err(|e| anyhow!("the {} key: {e}", purpose.name()))
}

/// Runs a worker (`weir worker`) until ctrl-c or SIGTERM; prints `weir worker ID listening on
/// ADDR` as the first line of stdout.
pub fn serve_worker(config: WorkerConfig, exit_with_parent: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let worker = BoundWorker::bind(config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "weir worker {} listening on {}", worker.id(), worker.address())?;
        out.flush()?;
        drop(out);
        let stop = stop_signal()?;
        if exit_with_parent {
            let parent = std::os::unix::process::parent_id();
            let orphaned = async move {
                // An orphan is adopted by another process (init, or a subreaper).
                while std::os::unix::process::parent_id() == parent {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                tracing::warn!(parent, "the process that started this worker is gone: stopping");
            };
            worker
                .serve(async move {
                    tokio::select! { _ = stop => {}, _ = orphaned => {} }
                })
                .await;
        } else {
            worker.serve(stop).await;
        }
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

/// Serves `api` and `internal` (beside the replica's Raft routes), prints `NAME listening on
/// ADDR` (the API's) as the first line of stdout (scripts and tests that asked for port 0 read
/// it) and then `notes`, and runs until ctrl-c or SIGTERM.
pub async fn serve_until_stopped(
    mut replica: Replica,
    api: Router,
    internal: Router,
    name: &str,
    notes: &[String],
) -> Result<()> {
    replica.serve(api, internal)?;
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
