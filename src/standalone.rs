//! `weir standalone`: the whole of Weir in one process — a one-replica control plane (Raft on
//! local disk), the HTTP API, the dispatcher and the in-process executor. It serves the API only:
//! with no peers and no workers, it has no internal listener. Its jobs may use the current
//! directory (and `--storage-root`s), never the data directory (`api::Sandbox`).
//!
//! Everything lives in the data directory (default `./weir-data`, kept across restarts so jobs
//! resume where they were): `raft.redb` (the metadata), `state/tenants/<tenant>/` (checkpoints and
//! savepoints of jobs that set no `state.checkpoints.dir`) and `admin-token`. On first start the tenant
//! `default` and an admin token are created and the token's secret is written to
//! `<data>/admin-token` (mode 0600), where `weir job` finds it; a later start keeps it, or makes
//! a new one if the file is gone. `--root-token-file` or `WEIR_ROOT_TOKEN` enables the root
//! token's routes (tenants, their tokens and quotas).
//!
//! With `--provisioner local` jobs run on `weir worker` processes it starts (and stops) as
//! their slots need, not in its own process: it then has an internal listener on loopback for
//! them, and keys derived from a secret of its own, made afresh at each start (its workers exit
//! with it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weir_control_plane::api::{self, ApiState, Sandbox};
use weir_control_plane::bootstrap::ensure_tenant_admin;
use weir_control_plane::dispatcher::Dispatcher;
use weir_control_plane::handle::ReplicaHandle;
use weir_control_plane::metadata::ids::{ReplicaId, TenantId};
use weir_control_plane::metadata::records::Quota;
use weir_control_plane::node::{Replica, ReplicaConfig};
use weir_net::{Plaintext, ServerTls};

use weir_control_plane::dispatcher::JobExecutor;
use weir_control_plane::node::InternalConfig;
use weir_control_plane::workers::{RemoteExecutor, WorkerOptions, Workers, internal_router};
use weir_dataflow::auth::{ClusterKey, KeyPurpose};

use crate::control_plane::{ProvisionOptions, local_workers, root_token, serve_until_stopped};
use crate::executor::InProcessExecutor;

/// The file, inside the data directory, that holds the `default` tenant's admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The data directory when none is given.
pub const DEFAULT_DATA_DIR: &str = "weir-data";

/// Where the API listens, and how.
pub struct ApiListener {
    pub address: String,
    /// The certificate it presents (`--tls-cert`, `--tls-key`); `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    pub plaintext: Plaintext,
}

pub fn serve(
    listener: ApiListener,
    data: PathBuf,
    submit: Option<PathBuf>,
    storage_roots: Vec<String>,
    root_token_file: Option<&Path>,
    quota: Quota,
    local: Option<ProvisionOptions>,
) -> Result<()> {
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let data = data.canonicalize().with_context(|| format!("cannot read {}", data.display()))?;
    // Jobs run in this process, in its current directory: that is their storage, the data
    // directory excepted.
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut roots = vec![cwd.display().to_string()];
    roots.extend(storage_roots);
    let sandbox = Sandbox::new(roots, Some(cwd)).forbid(&data);
    let _lock = lock_data_dir(&data)?;
    let root_token = root_token(root_token_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut config = ReplicaConfig::new(ReplicaId(1), &listener.address, &data);
        config.tls = listener.tls.clone();
        config.plaintext = listener.plaintext;
        // Local workers reach it on an internal listener, with keys of this start's own secret.
        let keys = match &local {
            Some(_) => {
                let secret = weir_dataflow::auth::fresh_token_secret().context("no randomness for the cluster keys")?;
                let derive = |purpose| ClusterKey::derive(&secret, purpose).map_err(|e| anyhow::anyhow!("{e}"));
                let (peer, worker) = (derive(KeyPurpose::Peer)?, derive(KeyPurpose::Worker)?);
                config.internal = Some(InternalConfig {
                    listen: "127.0.0.1:0".into(),
                    key: peer.clone(),
                    tls: None,
                    transport: weir_net::Transport::Plain,
                });
                Some((peer, worker))
            }
            None => None,
        };
        let replica = Replica::start(config).await.context("the control plane does not start")?;
        let handle = replica.handle();
        wait_until_leader(handle.as_ref()).await?;
        let token_file = data.join(ADMIN_TOKEN_FILE);
        bootstrap_admin_token(handle.as_ref(), &token_file).await?;
        let state_dir = data.join("state");
        let (executor, internal, workers): (Arc<dyn JobExecutor>, _, _) = match (local, keys, replica.internal_addr()) {
            (Some(provision), Some((peer, worker_key)), Some(internal)) => {
                let provisioning = local_workers(&[internal.to_string()], &data, &provision, worker_key.clone())?;
                let options = WorkerOptions { state_dir: Some(state_dir.display().to_string()), ..Default::default() };
                let workers = Workers::with_provisioning(handle.clone(), worker_key, options, Some(provisioning))
                    .map_err(|e| anyhow::anyhow!(e))?;
                tokio::spawn(workers.clone().watch());
                let executor: Arc<dyn JobExecutor> = Arc::new(RemoteExecutor(workers.clone()));
                (executor, Some(peer), Some(workers))
            }
            _ => (Arc::new(InProcessExecutor::new(&state_dir)) as Arc<dyn JobExecutor>, None, None),
        };
        let dispatcher = Dispatcher::new(handle.clone(), executor).with_quota(quota);
        let mut state = ApiState::new(handle, Arc::new(dispatcher.runtime())).with_sandbox(sandbox).with_quota(quota);
        if let Some(root_token) = root_token {
            state = state.with_root_token(root_token);
        }
        let internal_routes = match (workers, internal) {
            (Some(workers), Some(peer)) => internal_router(workers).merge(dispatcher.live_router(peer)),
            _ => axum::Router::new(),
        };
        tokio::spawn(dispatcher.run());
        let notes = [
            format!("data in {}", data.display()),
            format!("admin token of tenant 'default' in {}", token_file.display()),
        ];
        if let Some(file) = submit {
            // Submitted through the API like any job, once the listener below is up.
            let scheme = if listener.tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://{}", replica.local_addr());
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("cannot read {}", token_file.display()))?;
            tokio::spawn(async move {
                match crate::job::submit_file(&url, token.trim(), &file).await {
                    Ok(()) => eprintln!("submitted {}", file.display()),
                    Err(e) => eprintln!("error: submitting {}: {e:#}", file.display()),
                }
            });
        }
        serve_until_stopped(replica, api::router(state), internal_routes, "weir standalone", &notes).await
    })
}

/// Holds the data directory for this process: a second `weir standalone` (or replica) on the same
/// directory is refused with a message that says so, instead of the metadata store's own
/// "database already open". The lock is the kernel's (`flock`), so it goes with the process,
/// however it ends.
pub fn lock_data_dir(data: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = data.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns; it touches no memory of ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "{} is in use by another weir process; stop it, or give this one another --data directory",
                data.display()
            );
        }
        return Err(error).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}

/// A lone replica elects itself within an election timeout; proposals need it to lead.
async fn wait_until_leader(replica: &dyn ReplicaHandle) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica.is_leader() {
        if Instant::now() > deadline {
            bail!("the control plane did not elect itself leader within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Makes sure `file` holds a valid admin token of tenant `default`, creating both if needed.
async fn bootstrap_admin_token(replica: &dyn ReplicaHandle, file: &Path) -> Result<()> {
    let known = std::fs::read_to_string(file).ok();
    let fresh = ensure_tenant_admin(replica, &TenantId::from("default"), known.as_deref())
        .await
        .context("cannot create the default tenant's admin token")?;
    if let Some(secret) = fresh {
        write_private(file, &secret)?;
    }
    Ok(())
}

/// Writes `secret` to `path` readable by its owner only, replacing it whole (never half written).
fn write_private(path: &Path, secret: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    writeln!(file, "{secret}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}
