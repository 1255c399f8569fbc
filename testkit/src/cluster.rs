//! A cluster on loopback: `weir control-plane` replicas, `weir worker`s, and optionally a
//! `weir shuffle` server the replicas name, all in one temporary directory.
//!
//! Replicas get the root token; workers get only the worker key, which the harness asks
//! `weir key worker` for, as an operator would.
//!
//! Every process logs to its own file under `logs/` there (or to the caller's stderr). When the
//! thread that owns a cluster panics (a failing test), dropping it says which processes had
//! ended on their own, prints the end of every log, and keeps the directory.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Error, Process, Result, ShuffleServer, Weir, free_loopback_address};

/// How often the cluster polls what it waits for.
const POLL: Duration = Duration::from_millis(50);
/// Lines of each log a failed test shows.
const LOG_TAIL_LINES: usize = 40;
/// Starts of all replicas before giving up when their ports keep being taken.
const START_ATTEMPTS: usize = 5;

/// Where the cluster's processes write their logs (stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logs {
    /// One file per process under `logs/` in the cluster's directory, without colours.
    Files,
    /// The caller's stderr.
    Inherit,
}

/// How a cluster starts; [`ClusterBuilder::start`] starts it.
pub struct ClusterBuilder {
    weir: Weir,
    replicas: u64,
    root_token: String,
    log_filter: String,
    logs: Logs,
    state_dir: Option<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    shuffle: bool,
    tls: bool,
    wait: Duration,
    replica_args: Vec<String>,
}

impl ClusterBuilder {
    pub(crate) fn new(weir: Weir) -> ClusterBuilder {
        ClusterBuilder {
            weir,
            replicas: 3,
            root_token: "weir-testkit-root-token-0123456789abcdef".to_string(),
            log_filter: "info,openraft=warn".to_string(),
            logs: Logs::Files,
            state_dir: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            shuffle: false,
            tls: false,
            wait: Duration::from_secs(30),
            replica_args: Vec::new(),
        }
    }

    /// Flags every replica is started with besides the harness's own (e.g. `--provisioner
    /// local`).
    pub fn replica_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.replica_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How many replicas (default 3), with ids 1..=n.
    pub fn replicas(mut self, n: u64) -> Self {
        self.replicas = n;
        self
    }

    /// The operator's root token every process gets (`WEIR_ROOT_TOKEN`).
    pub fn root_token(mut self, token: impl Into<String>) -> Self {
        self.root_token = token.into();
        self
    }

    /// The processes' `WEIR_LOG` (default `info,openraft=warn`).
    pub fn log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// Where the processes log (default: a file each).
    pub fn logs(mut self, logs: Logs) -> Self {
        self.logs = logs;
        self
    }

    /// Where jobs checkpoint (`--state-dir` of the replicas); default: `state/` in the
    /// cluster's directory, which every worker on this machine reaches.
    pub fn state_dir(mut self, url: impl Into<String>) -> Self {
        self.state_dir = Some(url.into());
        self
    }

    /// An environment variable of every process (an object store's endpoint and credentials).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// An environment variable the processes must not inherit.
    pub fn env_remove(mut self, name: impl Into<String>) -> Self {
        self.env_remove.push(name.into());
        self
    }

    /// With a shuffle server, which the replicas name (`--shuffle`) for jobs spread over
    /// several workers.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// With TLS everywhere: `weir dev-certs` makes a CA and a certificate for 127.0.0.1, which
    /// every listener presents (API, internal, workers' task endpoints, the shuffle server) and
    /// every process trusts (`--internal-ca`), as does [`Cluster::client`].
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// How long a step that takes a few seconds when all is well may take (default 30 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Starts the replicas (and the shuffle server) on ports free a moment ago; if another
    /// process took one meanwhile, that replica exits at once and all start again on other
    /// ports. Answers once every replica listens; see [`Cluster::leader`] for when they agree.
    pub fn start(self) -> Result<Cluster> {
        let dir = tempfile::tempdir().map_err(|e| Error::new(format!("a temp dir: {e}")))?;
        std::fs::create_dir(dir.path().join("logs")).map_err(|e| Error::new(format!("a log folder: {e}")))?;
        let state_dir = self.state_dir.clone().unwrap_or_else(|| dir.path().join("state").display().to_string());
        let shuffle_log = (self.logs == Logs::Files).then(|| dir.path().join("logs/shuffle.log"));
        let tls = if self.tls { Some(Tls::make(&self.weir, &dir.path().join("tls"))?) } else { None };
        let shuffle = if self.shuffle {
            let key = self.weir.key("shuffle", &self.root_token)?;
            let flags: Vec<&OsStr> = tls.as_ref().map(Tls::listener_flags).unwrap_or_default();
            Some(ShuffleServer::start_on(&self.weir, "127.0.0.1:0", &flags, shuffle_log.as_deref(), Some(&key))?)
        } else {
            None
        };
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(tls) = &tls {
            let pem = std::fs::read(&tls.ca).map_err(|e| Error::new(format!("the CA certificate: {e}")))?;
            let ca =
                reqwest::Certificate::from_pem(&pem).map_err(|e| Error::new(format!("the CA certificate: {e}")))?;
            client = client.tls_certs_only([ca]).https_only(true);
        }
        let client = client.build().map_err(|e| Error::new(format!("an HTTP client: {e}")))?;
        let worker_key = self.weir.key("worker", &self.root_token)?;
        let mut cluster = Cluster {
            replica_count: self.replicas,
            worker_key,
            weir: self.weir,
            root_token: self.root_token,
            log_filter: self.log_filter,
            logs: self.logs,
            state_dir,
            env: self.env,
            env_remove: self.env_remove,
            wait: self.wait,
            replica_args: self.replica_args,
            replicas: BTreeMap::new(),
            workers: Vec::new(),
            client,
            shuffle,
            tls,
            dir: Some(dir),
        };
        if let Err(e) = cluster.start_replicas() {
            // The replicas' logs say why: keep them.
            let kept = cluster.dir.take().map(|dir| dir.keep());
            return Err(Error::new(format!("{e}; the cluster's directory is kept: {kept:?}")));
        }
        Ok(cluster)
    }
}

/// The certificates of a cluster over TLS (`weir dev-certs`).
struct Tls {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn make(weir: &Weir, dir: &Path) -> Result<Tls> {
        let output = std::process::Command::new(weir.exe())
            .arg("dev-certs")
            .arg(dir)
            .args(["--host", "127.0.0.1", "--host", "localhost"])
            .output()
            .map_err(|e| Error::new(format!("`weir dev-certs` does not run: {e}")))?;
        if !output.status.success() {
            return Err(Error::new(format!("`weir dev-certs` failed: {}", String::from_utf8_lossy(&output.stderr))));
        }
        Ok(Tls { ca: dir.join("ca.pem"), certificate: dir.join("cert.pem"), key: dir.join("key.pem") })
    }

    /// What a listener is given to serve TLS.
    fn listener_flags(&self) -> Vec<&OsStr> {
        vec!["--tls-cert".as_ref(), self.certificate.as_os_str(), "--tls-key".as_ref(), self.key.as_os_str()]
    }

    /// What a replica is given: TLS on both listeners, and the CA to trust.
    fn replica_args(&self) -> Vec<String> {
        let (ca, certificate, key) = (self.ca.display(), self.certificate.display(), self.key.display());
        ["--tls-cert", &certificate.to_string(), "--tls-key", &key.to_string()]
            .into_iter()
            .chain(["--internal-tls-cert", &certificate.to_string(), "--internal-tls-key", &key.to_string()])
            .chain(["--internal-ca", &ca.to_string()])
            .map(str::to_string)
            .collect()
    }

    /// What a worker is given: TLS on its task endpoint, and the CA to trust.
    fn worker_args(&self) -> Vec<String> {
        let (ca, certificate, key) = (self.ca.display(), self.certificate.display(), self.key.display());
        ["--tls-cert", &certificate.to_string(), "--tls-key", &key.to_string(), "--internal-ca", &ca.to_string()]
            .map(str::to_string)
            .into()
    }
}

/// One control-plane replica.
struct Replica {
    /// Its API listener.
    address: String,
    /// Its internal listener (Raft, forwarding, workers).
    internal: String,
    log: Option<PathBuf>,
    /// What it was started with: a restart starts it again the same way, on the same data.
    args: Vec<String>,
    process: Option<Process>,
}

/// One worker, as it named itself in its first line.
struct Worker {
    id: String,
    log: Option<PathBuf>,
    process: Option<Process>,
}

/// Control-plane replicas and workers on loopback; every process is killed when dropped.
pub struct Cluster {
    weir: Weir,
    replica_count: u64,
    root_token: String,
    /// What workers are given instead of the root token (`weir key worker`).
    worker_key: String,
    log_filter: String,
    logs: Logs,
    state_dir: String,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    wait: Duration,
    replica_args: Vec<String>,
    replicas: BTreeMap<u64, Replica>,
    workers: Vec<Worker>,
    client: reqwest::Client,
    shuffle: Option<ShuffleServer>,
    tls: Option<Tls>,
    /// Kept when the owning thread panics, with the logs in it.
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// The cluster's directory: replicas' data, workers' working directories, logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory is only taken when the cluster is dropped").path()
    }

    /// A path in the cluster's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Where jobs checkpoint (`--state-dir`).
    pub fn state_dir(&self) -> &str {
        &self.state_dir
    }

    /// The operator's root token.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The HTTP client the cluster calls its replicas with (10 s timeout).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// How long a step may take (see [`ClusterBuilder::wait`]).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The replicas' ids, 1..=n.
    pub fn replica_ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    /// `http(s)://ADDRESS{path}` of replica `id`'s API listener.
    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.replica(id).address)
    }

    /// `http(s)://ADDRESS{path}` of replica `id`'s internal listener.
    pub fn internal_url(&self, id: u64, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.replica(id).internal)
    }

    /// `https` for a cluster over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The key `weir key NAME` prints for this cluster's root token (`peer`, `worker`, `shuffle`).
    pub fn key(&self, name: &str) -> Result<String> {
        self.weir.key(name, &self.root_token)
    }

    /// The shuffle server's address, if the cluster has one.
    pub fn shuffle_addr(&self) -> Option<&str> {
        self.shuffle.as_ref().map(|server| server.addr.as_str())
    }

    /// The workers started, by the ids they printed, in the order they started.
    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.iter().map(|worker| worker.id.clone()).collect()
    }

    fn replica(&self, id: u64) -> &Replica {
        self.replicas.get(&id).unwrap_or_else(|| panic!("replica {id} is not one of the cluster's"))
    }

    fn replica_mut(&mut self, id: u64) -> &mut Replica {
        self.replicas.get_mut(&id).unwrap_or_else(|| panic!("replica {id} is not one of the cluster's"))
    }

    /// A `weir ARGS` command with the cluster's environment, run in `cwd`, logging to `log`;
    /// `credential` is the variable that gives it its credential (root token or worker key).
    fn command(&self, args: &[String], cwd: &Path, log: Option<&Path>, credential: (&str, &str)) -> Result<Command> {
        let mut command = Command::new(self.weir.exe());
        command
            .args(args)
            .env_remove("WEIR_ROOT_TOKEN")
            .env(credential.0, credential.1)
            .env("WEIR_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .current_dir(cwd);
        for name in &self.env_remove {
            command.env_remove(name);
        }
        match log {
            Some(log) => crate::process::log_stderr_to(&mut command, log)?,
            None => {
                command.stderr(Stdio::inherit());
            }
        }
        Ok(command)
    }

    fn log_path(&self, name: &str) -> Option<PathBuf> {
        (self.logs == Logs::Files).then(|| self.path(&format!("logs/{name}.log")))
    }

    fn where_logged(log: Option<&Path>) -> String {
        log.map_or_else(|| "its log is on stderr".to_string(), |log| format!("log {}", log.display()))
    }

    fn start_replicas(&mut self) -> Result<()> {
        for attempt in 0..START_ATTEMPTS {
            let addresses: BTreeMap<u64, (String, String)> = (1..=self.replica_count)
                .map(|id| Ok((id, (free_loopback_address()?, free_loopback_address()?))))
                .collect::<Result<_>>()?;
            let peers =
                addresses.iter().map(|(id, (_, internal))| format!("{id}={internal}")).collect::<Vec<_>>().join(",");
            self.replicas.clear();
            for (id, (address, internal)) in addresses {
                let data = self.path(&format!("replica-{id}-{attempt}"));
                let mut args = vec![
                    "control-plane".to_string(),
                    "--id".to_string(),
                    id.to_string(),
                    "--listen".to_string(),
                    address.clone(),
                    "--internal-listen".to_string(),
                    internal.clone(),
                    "--peers".to_string(),
                    peers.clone(),
                    "--data".to_string(),
                    data.display().to_string(),
                    "--state-dir".to_string(),
                    self.state_dir.clone(),
                    // Jobs of every tenant may use the cluster's folder (tests put their
                    // sources and sinks there).
                    "--storage-root".to_string(),
                    self.dir().display().to_string(),
                ];
                if let Some(shuffle) = self.shuffle_addr() {
                    args.extend(["--shuffle".to_string(), shuffle.to_string()]);
                }
                if let Some(tls) = &self.tls {
                    args.extend(tls.replica_args());
                }
                args.extend(self.replica_args.iter().cloned());
                let log = self.log_path(&format!("replica-{id}"));
                let process = self.spawn_replica(id, &args, log.as_deref())?;
                self.replicas.insert(id, Replica { address, internal, log, args, process });
            }
            if self.replicas.values().all(|replica| replica.process.is_some()) {
                return Ok(());
            }
            eprintln!("a replica exited before listening (its port was taken?); starting all again");
        }
        Err(Error::new(format!("the replicas did not all start in {START_ATTEMPTS} attempts; their logs say why")))
    }

    /// Starts replica `id`; `None` when it exited before listening.
    fn spawn_replica(&self, id: u64, args: &[String], log: Option<&Path>) -> Result<Option<Process>> {
        let mut command = self.command(args, self.dir(), log, ("WEIR_ROOT_TOKEN", &self.root_token))?;
        let Some(process) = Process::spawn(&mut command, &format!("replica {id}"))? else { return Ok(None) };
        if !process.first_line().contains("listening on") {
            let line = process.first_line();
            return Err(Error::new(format!("replica {id} printed {line:?}; {}", Self::where_logged(log))));
        }
        Ok(Some(process))
    }

    /// The process id of replica `id`, while it runs.
    pub fn replica_pid(&self, id: u64) -> Option<u32> {
        self.replica(id).process.as_ref().map(Process::id)
    }

    /// `kill -9` of replica `id`.
    pub fn kill_9_replica(&mut self, id: u64) {
        let replica = self.replica_mut(id);
        drop(replica.process.take().unwrap_or_else(|| panic!("replica {id} does not run")));
    }

    /// Stops replica `id` with SIGTERM; answers how it exited.
    pub fn terminate_replica(&mut self, id: u64) -> Result<ExitStatus> {
        let replica = self.replica_mut(id);
        let mut process = replica.process.take().unwrap_or_else(|| panic!("replica {id} does not run"));
        process.terminate()
    }

    /// Starts a stopped replica again, on its address and data. Its port was free a moment
    /// ago and is the cluster's: failing to bind it again is a real failure.
    pub fn restart_replica(&mut self, id: u64) -> Result<()> {
        let replica = self.replica(id);
        assert!(replica.process.is_none(), "replica {id} still runs");
        let process = self.spawn_replica(id, &replica.args, replica.log.as_deref())?.ok_or_else(|| {
            Error::new(format!("replica {id} did not start again; {}", Self::where_logged(replica.log.as_deref())))
        })?;
        self.replica_mut(id).process = Some(process);
        Ok(())
    }

    /// Starts a worker of `slots` slots (its log and working directory are named after its
    /// number); answers its id. [`Cluster::wait_for_workers`] waits until the leader lists it.
    pub fn start_worker(&mut self, slots: u32) -> Result<String> {
        let index = self.workers.len() + 1;
        let control_plane =
            self.replica_ids().iter().map(|id| self.internal_url(*id, "")).collect::<Vec<_>>().join(",");
        let log = self.log_path(&format!("worker-{index}"));
        let cwd = self.path(&format!("worker-{index}"));
        std::fs::create_dir(&cwd).map_err(|e| Error::new(format!("the worker's directory {}: {e}", cwd.display())))?;
        let mut args: Vec<String> =
            ["worker", "--control-plane", &control_plane, "--slots", &slots.to_string(), "--listen", "127.0.0.1:0"]
                .map(str::to_string)
                .into();
        if let Some(tls) = &self.tls {
            args.extend(tls.worker_args());
        }
        let mut command = self.command(&args, &cwd, log.as_deref(), ("WEIR_WORKER_KEY", &self.worker_key))?;
        let process = Process::spawn(&mut command, &format!("worker {index}"))?.ok_or_else(|| {
            Error::new(format!(
                "worker {index} exited before printing its address; {}",
                Self::where_logged(log.as_deref())
            ))
        })?;
        // `weir worker <worker-id> listening on <addr>`
        let id = match process.first_line().split(' ').collect::<Vec<_>>().as_slice() {
            ["weir", "worker", id, "listening", "on", _address] => id.to_string(),
            _ => {
                let line = process.first_line();
                return Err(Error::new(format!(
                    "worker {index} printed {line:?}, not `weir worker <id> listening on <address>`"
                )));
            }
        };
        self.workers.push(Worker { id: id.clone(), log, process: Some(process) });
        Ok(id)
    }

    /// Starts `n` workers of `slots` slots each and waits until the leader lists them.
    pub async fn start_workers(&mut self, n: usize, slots: u32) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.start_worker(slots)?);
        }
        self.wait_for_workers().await?;
        Ok(ids)
    }

    /// `kill -9` of the worker that printed `id`.
    pub fn kill_9_worker(&mut self, id: &str) {
        let worker =
            self.workers.iter_mut().find(|w| w.id == id).unwrap_or_else(|| panic!("no worker {id} was started"));
        drop(worker.process.take().unwrap_or_else(|| panic!("worker {id} does not run")));
    }

    /// `method path` on `replica` with `token`: the status and the JSON body (null if it has
    /// none), or `None` when the replica did not answer.
    pub async fn call(
        &self,
        method: Method,
        replica: u64,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self.client.request(method, self.url(replica, path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// The cluster as replica `id` sees it (`GET /api/v1/cluster`: leader, term, last applied
    /// log index), or `None` when it does not answer.
    pub async fn view(&self, id: u64) -> Option<Value> {
        match self.call(Method::GET, id, &self.root_token, "/api/v1/cluster", None).await {
            Some((200, view)) => Some(view),
            _ => None,
        }
    }

    /// Waits until every running replica names the same running leader.
    pub async fn leader(&self) -> Result<u64> {
        let deadline = Instant::now() + self.wait;
        loop {
            let mut views = Vec::new();
            for (id, _) in self.replicas.iter().filter(|(_, r)| r.process.is_some()) {
                views.push(self.view(*id).await.and_then(|view| view["leader"].as_u64()));
            }
            if let Some(Some(leader)) = views.first()
                && views.iter().all(|view| *view == Some(*leader))
                && self.replicas.get(leader).is_some_and(|r| r.process.is_some())
            {
                return Ok(*leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "the running replicas agree on no running leader within {:?}: {views:?}",
                    self.wait
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until replica `id` has applied at least what `leader` had applied when called.
    pub async fn caught_up(&self, id: u64, leader: u64) -> Result<()> {
        let applied = |view: Option<Value>| view.and_then(|view| view["last_applied"].as_u64());
        let target = applied(self.view(leader).await)
            .ok_or_else(|| Error::new(format!("leader {leader} does not say what it applied")))?;
        let deadline = Instant::now() + self.wait;
        loop {
            let now = applied(self.view(id).await);
            if now >= Some(target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!("replica {id} at {now:?}, not {target} within {:?}", self.wait)));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// POSTs `body` to `path` through `replica` until it is accepted (2xx), and answers the
    /// answer; a refusal for now (503, or no answer: an election is under way) is retried,
    /// any other refusal is an error.
    pub async fn write(&self, replica: u64, token: &str, path: &str, body: Value) -> Result<Value> {
        let deadline = Instant::now() + self.wait;
        loop {
            let answer = self.call(Method::POST, replica, token, path, Some(body.clone())).await;
            match &answer {
                Some((status, answer)) if (200..300).contains(status) => return Ok(answer.clone()),
                Some((503, _)) | None => {}
                Some((status, answer)) => {
                    return Err(Error::new(format!("POST {path} through replica {replica}: {status} {answer}")));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "POST {path} through replica {replica} not accepted within {:?}: {answer:?}",
                    self.wait
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates `tenant` and an admin token of it through the leader; answers the token's
    /// secret.
    pub async fn tenant_admin(&self, tenant: &str) -> Result<String> {
        let leader = self.leader().await?;
        self.write(leader, &self.root_token, "/api/v1/tenants", json!({"id": tenant})).await?;
        let path = format!("/api/v1/tenants/{tenant}/tokens");
        let token = self.write(leader, &self.root_token, &path, json!({"role": "admin"})).await?;
        token["secret"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::new(format!("a token without a secret: {token}")))
    }

    /// Waits until the leader lists every worker started, by the id it printed.
    pub async fn wait_for_workers(&self) -> Result<()> {
        let deadline = Instant::now() + self.wait;
        loop {
            let leader = self.leader().await?;
            let listed = self.call(Method::GET, leader, &self.root_token, "/api/v1/workers", None).await;
            let ids: Vec<&str> = match &listed {
                Some((200, answer)) => {
                    answer["workers"].as_array().into_iter().flatten().filter_map(|w| w["id"].as_str()).collect()
                }
                _ => Vec::new(),
            };
            if self.workers.iter().all(|worker| ids.contains(&worker.id.as_str())) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!("workers not all registered within {:?}: {listed:?}", self.wait)));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if let Some(shuffle) = &mut self.shuffle {
            shuffle.kill_9();
        }
        // A process that ended before the cluster was dropped is a clue: say how it ended.
        // Every process is killed before the logs are shown, so they are complete.
        let processes = self
            .replicas
            .iter_mut()
            .map(|(id, replica)| (format!("replica {id}"), &mut replica.process))
            .chain(self.workers.iter_mut().map(|worker| (format!("worker {}", worker.id), &mut worker.process)));
        for (name, process) in processes {
            if let Some(mut process) = process.take()
                && failed
                && let Some(status) = process.try_wait()
            {
                eprintln!("{name} ended before the cluster stopped it: {status}");
            }
        }
        if !failed {
            return;
        }
        let shuffle_log = self.dir.as_ref().map(|dir| dir.path().join("logs/shuffle.log"));
        let shuffle_log = shuffle_log.filter(|_| self.shuffle.is_some() && self.logs == Logs::Files);
        let logs = self.replicas.values().map(|r| &r.log).chain(self.workers.iter().map(|w| &w.log)).flatten();
        for log in logs.chain(&shuffle_log) {
            let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- the last lines of {} ----", log.display());
            for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                eprintln!("{line}");
            }
        }
        if let Some(dir) = self.dir.take() {
            eprintln!("the failed test's cluster directory is kept: {}", dir.keep().display());
        }
    }
}
