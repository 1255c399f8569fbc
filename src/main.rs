//! `weir`: every role of Weir behind one command line.
//!
//! - `weir run FILE.sql` plans a Flink SQL script and runs it in this process; a final
//!   `SELECT` prints its changelog like Flink's SQL client in tableau mode, or writes it as JSON
//!   lines with `--output`.
//! - `weir shuffle --listen ADDR` runs a remote shuffle server.
//! - `weir standalone [--listen ADDR] [--data DIR]` runs all of Weir in one process: the control
//!   plane (one Raft replica), its HTTP API, and jobs in this process.
//! - `weir job submit|list|status|cancel|savepoint|rescale` is the client of that API.
//! - `weir control-plane --id N --listen ADDR --internal-listen ADDR [--peers …] --data DIR` runs a
//!   control-plane replica; `weir worker --control-plane URL,… --slots N` runs the jobs its leader
//!   deploys; `weir key worker|shuffle|peer` prints the key a part of the cluster presents.
//! - `weir compactor --queue-url URL --state-dir URL` compacts state databases named by work items
//!   on an SQS queue (the workers' `--compaction-queue-url`).
//! - `weir bench nexmark` measures the Nexmark queries; `weir bench shuffle` the remote shuffle.
//! - `weir nexmark-gen` writes Nexmark events as newline-delimited JSON.

mod compactor;
mod control_plane;
mod executor;
mod job;
mod run;
mod shuffle;
mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_control_plane::metadata::records::Quota;
use weir_dataflow::auth::KeyPurpose;
use weir_workers::runtime::ManagedMemory;
use weir_workers::service::WorkerConfig;

#[derive(Parser)]
#[command(name = "weir", version, about = "Flink SQL stream processing, rebuilt in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Flink SQL script in this process.
    Run {
        /// The script: CREATE TABLE/VIEW, SET, INSERT INTO and an optional final SELECT.
        file: PathBuf,
        /// Default parallelism of every operator (overrides SET 'parallelism.default').
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
        /// Route every exchange through this remote shuffle server (`weir shuffle`) instead of
        /// handing batches over in-process; the run's namespace token is signed with
        /// WEIR_SHUFFLE_KEY when the server has a key.
        #[arg(long, value_name = "ADDR")]
        shuffle_server: Option<String>,
        #[command(flatten)]
        internal_ca: InternalCaFlag,
        /// Start from the job's latest completed checkpoint under `state.checkpoints.dir`.
        #[arg(long)]
        resume: bool,
        /// Write the final SELECT's changelog here, one JSON object per row.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Do not print the result table (with --output, or to time a job).
        #[arg(long)]
        quiet: bool,
        /// Write the run's figures (rows, CPU time, peak RSS) as JSON to this file.
        #[arg(long, hide = true)]
        stats_json: Option<PathBuf>,
    },
    /// Stop a running checkpointed `weir run` with a savepoint (Flink's stop-with-savepoint):
    /// it takes a checkpoint, writes it as a savepoint under `state.savepoints.dir` (default:
    /// `savepoints` beside the checkpoints), prints its path and exits. Restore it with
    /// `SET 'execution.savepoint.path' = '…'`, at any parallelism.
    Savepoint {
        /// The process id of the `weir run` (it takes SIGUSR1 as the same request, SIGUSR2 as
        /// the request with `--native`).
        pid: i32,
        /// Take it by reference (Flink's NATIVE format): about as fast as a checkpoint, valid
        /// while the job's state folder is kept. Without it the savepoint is self-contained.
        #[arg(long)]
        native: bool,
    },
    /// Run a remote shuffle server: it relays the exchanges of tasks in other processes.
    Shuffle {
        /// Address to listen on; port 0 picks a free port (the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Frames each channel may queue on the server before its producer waits for credit.
        #[arg(long, default_value_t = 4)]
        channel_capacity: u32,
        /// Directory for spilled blocking/hybrid partitions (a fresh folder is made inside it and
        /// removed on exit); default: the system's temporary directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Bytes of retained partitions held in memory before spilling to disk (K/M/G/KiB/MiB/GiB suffixes).
        #[arg(long, value_name = "BYTES", value_parser = weir_dataflow::config::parse_bytes)]
        memory_budget: Option<u64>,
        /// Bytes of spill files before spills go to --spill-url; default: unlimited.
        #[arg(long, value_name = "BYTES", value_parser = weir_dataflow::config::parse_bytes)]
        disk_budget: Option<u64>,
        /// Object store for spills beyond the disk budget: file:///DIR or s3://BUCKET/PREFIX
        /// (credentials, region and endpoint from the AWS_* environment variables).
        #[arg(long, value_name = "URL")]
        spill_url: Option<String>,
        /// File holding the shuffle key (`weir key shuffle`), which every connection's namespace
        /// token must be signed with; default: WEIR_SHUFFLE_KEY.
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Take any client for any namespace, without a key: only on a machine where every
        /// process that can reach the port is trusted.
        #[arg(long, conflicts_with = "key_file")]
        insecure_no_auth: bool,
        #[command(flatten)]
        tls: TlsFlags,
    },
    /// Run Weir in one process: a one-replica control plane, the HTTP API, and the jobs it runs.
    /// On first start it creates tenant `default` and writes an admin token to DATA/admin-token.
    Standalone {
        /// Address of the HTTP API; port 0 picks a free port (printed on the first line).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Directory of the metadata, checkpoints and admin token (created if missing; kept
        /// across restarts, so jobs resume).
        #[arg(long, value_name = "DIR", default_value = standalone::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Once listening, submit this SQL script as a job of tenant `default` (as
        /// `weir job submit FILE` would), unless a job of that name is still live from an
        /// earlier start (it resumes instead), and keep serving.
        #[arg(long, value_name = "FILE.sql")]
        submit: Option<PathBuf>,
        /// More storage jobs may read and write, besides the current directory (repeatable;
        /// `{tenant}` stands for the tenant's id): `s3://BUCKET/PREFIX/`, or a folder.
        #[arg(long, value_name = "URL")]
        storage_root: Vec<String>,
        /// File holding the operator's root token (creates tenants and sets their quotas);
        /// default: the WEIR_ROOT_TOKEN environment variable, else none.
        #[arg(long, value_name = "PATH")]
        root_token_file: Option<PathBuf>,
        /// Where jobs run: `in-process`, in this process; `local`, on `weir worker` processes
        /// it starts as their slots need and stops when idle.
        #[arg(long, value_enum, default_value = "in-process")]
        provisioner: StandaloneProvisioner,
        /// With `--provisioner local`: slots of each worker.
        #[arg(long, value_name = "N", default_value_t = weir_workers::service::default_slots())]
        worker_slots: u32,
        /// With `--provisioner local`: how long fewer workers must have been enough before
        /// some are stopped.
        #[arg(long, value_name = "DURATION", default_value = "20 s", value_parser = weir_dataflow::config::parse_duration)]
        worker_cool_down: std::time::Duration,
        #[command(flatten)]
        quota: QuotaFlags,
        #[command(flatten)]
        tls: TlsFlags,
    },
    /// Manage jobs of a running `weir standalone` (or control plane) through its HTTP API.
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
        #[command(flatten)]
        connection: job::Connection,
    },
    /// Run one control-plane replica: the Raft-replicated metadata store and the HTTP API.
    ControlPlane {
        /// This replica's id (a positive integer, unique in the cluster).
        #[arg(long)]
        id: u64,
        /// Address the HTTP API listens on; port 0 picks a free port (printed).
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: String,
        /// Address the internal listener (Raft, forwarding between replicas, workers' heartbeats)
        /// listens on; every request to it presents a key derived from the root token. Port 0
        /// picks a free port (printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7401")]
        internal_listen: String,
        /// The voters of a fresh cluster by internal address: `1=host:port,2=host:port,…`, this
        /// one included. The smallest id initializes the cluster; omitted: this replica alone. A
        /// list without this id means it joins an existing cluster (added with `POST
        /// /raft/members` on a member's internal listener).
        #[arg(long, value_name = "ID=ADDR,...", value_parser = weir_control_plane::node::parse_peers)]
        peers: Option<std::collections::BTreeMap<weir_control_plane::metadata::ids::ReplicaId, String>>,
        /// Directory of the replica's Raft log and snapshots (created if missing).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// File holding the operator's root token (creates tenants and their tokens; the keys of
        /// peers, workers and the shuffle server derive from it); default: the WEIR_ROOT_TOKEN
        /// environment variable. Required.
        #[arg(long, value_name = "PATH")]
        root_token_file: Option<PathBuf>,
        /// The default `state.checkpoints.dir` of jobs on workers: storage every worker reaches
        /// (`s3://BUCKET/PREFIX`, or a folder they share). Default: each worker's `--state-dir`.
        #[arg(long, value_name = "URL")]
        state_dir: Option<String>,
        /// A shuffle server (`weir shuffle`) through which a job too large for one worker's
        /// slots runs spread over several; without one, such a job waits.
        #[arg(long, value_name = "ADDR")]
        shuffle: Option<String>,
        /// Storage a tenant's jobs may read and write, as a template in which `{tenant}`
        /// stands for the tenant's id: `s3://BUCKET/tenants/{tenant}/` (repeatable). A job
        /// naming a location outside its tenant's roots is refused. Default: none (jobs use
        /// only --state-dir).
        #[arg(long, value_name = "URL")]
        storage_root: Vec<String>,
        #[command(flatten)]
        quota: QuotaFlags,
        #[command(flatten)]
        tls: TlsFlags,
        /// PEM certificate chain the internal listener presents (leaf first); with
        /// --internal-tls-key, the internal listener serves TLS.
        #[arg(long, value_name = "PEM", requires = "internal_tls_key")]
        internal_tls_cert: Option<PathBuf>,
        /// PEM private key of --internal-tls-cert.
        #[arg(long, value_name = "PEM", requires = "internal_tls_cert")]
        internal_tls_key: Option<PathBuf>,
        #[command(flatten)]
        internal_ca: InternalCaFlag,
        /// Where workers come from: `fixed`, the workers that register (started by hand or by an
        /// orchestrator); `local`, `weir worker` processes this replica starts on its host while
        /// it leads, as many as its jobs' slots need, and stops when they are idle; `ecs`, the
        /// desired count of the workers' ECS service (--ecs-cluster, --ecs-service; AWS_REGION,
        /// credentials and AWS_ENDPOINT_URL_ECS as the AWS SDK reads them).
        #[arg(long, value_enum, default_value = "fixed")]
        provisioner: control_plane::ProvisionerKind,
        /// Slots of each worker the provisioner starts.
        #[arg(long, value_name = "N", default_value_t = weir_workers::service::default_slots())]
        worker_slots: u32,
        /// How long fewer workers must have been enough before the provisioner stops some (so a
        /// job restarting or rescaling keeps its workers).
        #[arg(long, value_name = "DURATION", default_value = "20 s", value_parser = weir_dataflow::config::parse_duration)]
        worker_cool_down: std::time::Duration,
        /// With `--provisioner ecs`: the ECS cluster of the workers' service.
        #[arg(long, value_name = "NAME", required_if_eq("provisioner", "ecs"))]
        ecs_cluster: Option<String>,
        /// With `--provisioner ecs`: the workers' ECS service, whose tasks run `weir worker`
        /// with `--slots` equal to --worker-slots.
        #[arg(long, value_name = "NAME", required_if_eq("provisioner", "ecs"))]
        ecs_service: Option<String>,
    },
    /// A worker: runs the job attempts the control plane's leader deploys (the worker key, from
    /// --key-file or WEIR_WORKER_KEY, authenticates it to the cluster; `weir key worker`).
    Worker {
        /// The control plane's replicas, by internal address (HOST:PORT, or a URL), comma-separated.
        #[arg(long, value_name = "URL,...", value_delimiter = ',', required = true)]
        control_plane: Vec<String>,
        /// How many subtask indices it runs at once (a job at parallelism N takes N slots);
        /// default: one per core.
        #[arg(long, default_value_t = weir_workers::service::default_slots())]
        slots: u32,
        /// Where its task endpoint listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The state folder of jobs when the control plane names none.
        #[arg(long, value_name = "URL", default_value = "weir-worker-state")]
        state_dir: String,
        /// Memory its slots give keyed state, shared evenly (Flink's managed memory: operators'
        /// working sets, the state databases' block cache and memtables), e.g. `2 gb`; colder
        /// state goes to the state databases. Default: 40% of the machine's memory.
        #[arg(long, value_name = "SIZE", value_parser = parse_managed_memory)]
        managed_memory: Option<u64>,
        /// File holding the worker key (`weir key worker`); default: WEIR_WORKER_KEY.
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// An SQS queue for the compaction of state databases on S3, taken by `weir compactor`
        /// processes; without it (and for local folders) the worker compacts them itself, on a
        /// thread of its own.
        #[arg(long, value_name = "URL")]
        compaction_queue_url: Option<String>,
        /// Exit when the process that started it does (a control plane's `--provisioner local`
        /// starts its workers so: killed, it leaves none behind).
        #[arg(long)]
        exit_with_parent: bool,
        #[command(flatten)]
        tls: TlsFlags,
        #[command(flatten)]
        internal_ca: InternalCaFlag,
    },
    /// A compactor: takes work items from an SQS queue (workers' --compaction-queue-url) and
    /// compacts the state databases they name. SQS and S3 are reached as the workers reach them
    /// (AWS_ENDPOINT_URL, AWS_REGION, credentials from the environment or the task role).
    Compactor {
        /// The queue's URL.
        #[arg(long, value_name = "URL")]
        queue_url: String,
        /// A state folder (a jobs' `state.checkpoints.dir`, or a folder above them) whose
        /// databases it may compact; work items naming anything else are dropped (repeatable).
        #[arg(long = "state-dir", value_name = "URL", required = true)]
        state_dirs: Vec<String>,
        /// Databases compacted at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// How long a work item it took stays hidden from other compactors, renewed while it
        /// works: a compactor that dies leaves its item to another after this long.
        #[arg(long, value_name = "DURATION", default_value = "60 s", value_parser = weir_dataflow::config::parse_duration)]
        visibility_timeout: std::time::Duration,
        /// The longest it stays on one database before taking other work (the database's task
        /// asks again if it needs more).
        #[arg(long, value_name = "DURATION", default_value = "60 s", value_parser = weir_dataflow::config::parse_duration)]
        max_run: std::time::Duration,
        /// Largest SST a compaction writes; each compaction holds one in memory until it is
        /// uploaded (Flink's MemorySize syntax).
        #[arg(long, value_name = "SIZE", default_value = "64 mb", value_parser = parse_managed_memory)]
        max_sst_size: u64,
    },
    /// Write a CA and a certificate it signed for the given hosts into a folder (`ca.pem`,
    /// `cert.pem`, `key.pem`), for a development or test cluster whose every process presents
    /// that certificate (--tls-cert, --internal-tls-cert) and trusts that CA (--internal-ca).
    /// The CA's key is not kept. A production cluster takes its certificates from its PKI.
    DevCerts {
        /// The folder (created if missing).
        dir: PathBuf,
        /// A host name or IP address the certificate is valid for (repeatable).
        #[arg(long = "host", value_name = "HOST", required = true)]
        hosts: Vec<String>,
    },
    /// Print the key a part of the cluster presents, derived from the root token (from
    /// --root-token-file or WEIR_ROOT_TOKEN): give workers the `worker` key and the shuffle
    /// server the `shuffle` key, never the root token itself.
    Key {
        #[arg(value_enum)]
        purpose: control_plane::KeyName,
        #[arg(long, value_name = "PATH")]
        root_token_file: Option<PathBuf>,
    },
    /// Benchmarks.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        bench: weir_bench::BenchCommand,
    },
    /// Write Nexmark events as newline-delimited JSON (the layout of the conformance data).
    #[cfg(feature = "bench")]
    NexmarkGen {
        /// Number of events.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Where `weir standalone` runs jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StandaloneProvisioner {
    /// In its own process.
    InProcess,
    /// On `weir worker` processes it starts and stops.
    Local,
}

/// A listener's TLS. Without a certificate, a listener serves plain text, and only on loopback
/// unless --insecure-plaintext says otherwise.
#[derive(clap::Args)]
struct TlsFlags {
    /// PEM certificate chain this listener presents (leaf first); with --tls-key, it serves TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve without TLS on addresses other than loopback (TLS ends in front of the process,
    /// or the network is the operator's alone).
    #[arg(long)]
    insecure_plaintext: bool,
}

impl TlsFlags {
    fn server(&self) -> anyhow::Result<Option<weir_net::ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(weir_net::ServerTls::from_pem_files(cert, key)?)),
            _ => Ok(None),
        }
    }

    fn plaintext(&self) -> weir_net::Plaintext {
        if self.insecure_plaintext { weir_net::Plaintext::Anywhere } else { weir_net::Plaintext::LoopbackOnly }
    }
}

/// The CA of the cluster's internal traffic.
#[derive(clap::Args)]
struct InternalCaFlag {
    /// PEM certificate(s) of the CA that signed the cluster's internal certificates: calls to
    /// replicas' internal listeners, workers and the shuffle server use TLS and trust only it.
    /// Without it, they use plain text.
    #[arg(long, value_name = "PEM")]
    internal_ca: Option<PathBuf>,
}

impl InternalCaFlag {
    fn transport(&self) -> anyhow::Result<weir_net::Transport> {
        Ok(weir_net::Transport::from_ca_file(self.internal_ca.as_deref())?)
    }
}

/// The operator's default quota of every tenant; the root token sets a tenant's own with
/// `PUT /api/v1/tenants/{tenant}/quota`.
#[derive(clap::Args)]
struct QuotaFlags {
    /// Jobs a tenant may have that have not ended.
    #[arg(long, default_value_t = Quota::default().max_running_jobs)]
    max_running_jobs: u32,
    /// Task slots a tenant's unended jobs may take together (a job at parallelism N takes N).
    #[arg(long, default_value_t = Quota::default().max_slots)]
    max_slots: u32,
    /// Job submissions a tenant may make a minute on each replica, up to a sixth of them at once.
    #[arg(long, default_value_t = Quota::default().submissions_per_minute,
          value_parser = clap::value_parser!(u32).range(1..))]
    submissions_per_minute: u32,
}

impl QuotaFlags {
    fn quota(&self) -> Quota {
        Quota {
            max_running_jobs: self.max_running_jobs,
            max_slots: self.max_slots,
            submissions_per_minute: self.submissions_per_minute,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { file, parallelism, shuffle_server, internal_ca, resume, output, quiet, stats_json } => {
            internal_ca.transport().and_then(|transport| {
                let shuffle = shuffle_server.as_deref().map(|address| (address, transport));
                run::run_file(&file, parallelism, shuffle, resume, output.as_deref(), quiet, stats_json.as_deref())
            })
        }
        Command::Shuffle {
            listen,
            channel_capacity,
            data,
            memory_budget,
            disk_budget,
            spill_url,
            key_file,
            insecure_no_auth,
            tls,
        } => {
            let key = if insecure_no_auth {
                Ok(None)
            } else {
                control_plane::cluster_key(KeyPurpose::Shuffle, key_file.as_deref()).map(Some)
            };
            key.and_then(|key| {
                let store = shuffle::StoreFlags { data, memory_budget, disk_budget, spill_url };
                shuffle::serve(&listen, channel_capacity, store, key, tls.server()?, tls.plaintext())
            })
        }
        Command::ControlPlane {
            id,
            listen,
            internal_listen,
            peers,
            data,
            root_token_file,
            state_dir,
            shuffle,
            storage_root,
            quota,
            tls,
            internal_tls_cert,
            internal_tls_key,
            internal_ca,
            provisioner,
            worker_slots,
            worker_cool_down,
            ecs_cluster,
            ecs_service,
        } => (|| {
            let transport = internal_ca.transport()?;
            // Workers it starts serve their task endpoint as its internal listener serves, and
            // trust the same CA.
            let mut worker_args = Vec::new();
            if let (Some(cert), Some(key)) = (&internal_tls_cert, &internal_tls_key) {
                let (cert, key) = (cert.display().to_string(), key.display().to_string());
                worker_args.extend(["--tls-cert".to_string(), cert, "--tls-key".to_string(), key]);
            }
            if let Some(ca) = &internal_ca.internal_ca {
                worker_args.extend(["--internal-ca".to_string(), ca.display().to_string()]);
            }
            let provision = control_plane::ProvisionOptions {
                kind: provisioner,
                slots: worker_slots,
                cool_down: worker_cool_down,
                worker_args,
                ecs_cluster,
                ecs_service,
            };
            let internal_tls = match (internal_tls_cert, internal_tls_key) {
                (Some(cert), Some(key)) => Some(weir_net::ServerTls::from_pem_files(&cert, &key)?),
                _ => None,
            };
            let options = weir_control_plane::workers::WorkerOptions {
                state_dir,
                shuffle,
                transport: transport.clone(),
                ..Default::default()
            };
            let listeners = control_plane::Listeners {
                api: listen,
                api_tls: tls.server()?,
                internal: internal_listen,
                internal_tls,
                transport,
                plaintext: tls.plaintext(),
            };
            let replica = control_plane::ReplicaOptions {
                id,
                listeners,
                peers: peers.unwrap_or_default(),
                data,
                storage_roots: storage_root,
                quota: quota.quota(),
                provision,
            };
            control_plane::serve(replica, root_token_file.as_deref(), options)
        })(),
        Command::Worker {
            control_plane,
            slots,
            listen,
            state_dir,
            managed_memory,
            key_file,
            compaction_queue_url,
            exit_with_parent,
            tls,
            internal_ca,
        } => {
            let managed_memory =
                managed_memory.map_or_else(ManagedMemory::machine_default, |bytes| ManagedMemory { bytes });
            weir_state_store::backend::set_block_cache_bytes(managed_memory.block_cache_bytes());
            if let Some(url) = compaction_queue_url {
                weir_state_store::compaction::set_remote_queue(std::sync::Arc::new(
                    weir_state_store::sqs::SqsQueue::from_env(url),
                ));
            }
            control_plane::cluster_key(KeyPurpose::Worker, key_file.as_deref()).and_then(|key| {
                let config = WorkerConfig {
                    managed_memory,
                    control_planes: control_plane,
                    slots,
                    listen,
                    tls: tls.server()?,
                    plaintext: tls.plaintext(),
                    transport: internal_ca.transport()?,
                    state_dir,
                    key,
                };
                control_plane::serve_worker(config, exit_with_parent)
            })
        }
        Command::Compactor { queue_url, state_dirs, concurrency, visibility_timeout, max_run, max_sst_size } => {
            compactor::serve(compactor::Flags {
                queue_url,
                state_dirs,
                concurrency,
                visibility_timeout,
                max_run,
                max_sst_size: usize::try_from(max_sst_size).unwrap_or(usize::MAX),
            })
        }
        Command::DevCerts { dir, hosts } => weir_net::dev_certs::write(&dir, &hosts)
            .map(|files| {
                println!("CA certificate (--internal-ca): {}", files.ca.display());
                println!("certificate (--tls-cert, --internal-tls-cert): {}", files.certificate.display());
                println!("private key (--tls-key, --internal-tls-key): {}", files.key.display());
            })
            .map_err(anyhow::Error::from),
        Command::Key { purpose, root_token_file } => control_plane::print_key(purpose, root_token_file.as_deref()),
        Command::Standalone {
            listen,
            data,
            submit,
            storage_root,
            root_token_file,
            provisioner,
            worker_slots,
            worker_cool_down,
            quota,
            tls,
        } => (|| {
            let listener = standalone::ApiListener { address: listen, tls: tls.server()?, plaintext: tls.plaintext() };
            let local = (provisioner == StandaloneProvisioner::Local).then(|| control_plane::ProvisionOptions {
                kind: control_plane::ProvisionerKind::Local,
                slots: worker_slots,
                cool_down: worker_cool_down,
                worker_args: Vec::new(),
                ecs_cluster: None,
                ecs_service: None,
            });
            standalone::serve(listener, data, submit, storage_root, root_token_file.as_deref(), quota.quota(), local)
        })(),
        Command::Job { command, connection } => job::run(command, connection),
        #[cfg(feature = "bench")]
        Command::Bench { bench } => weir_bench::run(bench),
        Command::Savepoint { pid, native } => {
            let signal = if native { libc::SIGUSR2 } else { libc::SIGUSR1 };
            // SAFETY: kill(2) with a plain pid and signal number touches no memory of ours.
            if unsafe { libc::kill(pid, signal) } == 0 {
                eprintln!("asked process {pid} to stop with a savepoint; it prints the savepoint's path");
                Ok(())
            } else {
                Err(anyhow::anyhow!("cannot signal process {pid}: {}", std::io::Error::last_os_error()))
            }
        }
        #[cfg(feature = "bench")]
        Command::NexmarkGen { events, out, seed } => weir_bench::generate_json(events, seed, &out).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`weir run q.sql | head`): what it wanted, it has.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `--managed-memory`: a memory size as Flink writes one (`512 mb`, `2g`).
fn parse_managed_memory(text: &str) -> Result<u64, String> {
    weir_dataflow::config::parse_memory_size(text)
}
