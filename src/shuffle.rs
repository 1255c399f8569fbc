//! `weir shuffle`: a remote shuffle server in its own process. With the shuffle key (the
//! default), a connection opens only the namespace whose token it presents; with a certificate
//! (`--tls-cert`), connections are TLS.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use weir_dataflow::auth::ClusterKey;
use weir_net::{Plaintext, ServerTls};
use weir_shuffle_service::remote::{ServerConfig, ShuffleServer};
use weir_shuffle_service::store::{SpillTarget, StoreConfig};

/// Where retained partitions go (`--data`, `--memory-budget`, `--disk-budget`, `--spill-url`).
pub struct StoreFlags {
    pub data: Option<PathBuf>,
    pub memory_budget: Option<u64>,
    pub disk_budget: Option<u64>,
    pub spill_url: Option<String>,
}

pub fn serve(
    listen: &str,
    channel_capacity: u32,
    store: StoreFlags,
    key: Option<ClusterKey>,
    tls: Option<ServerTls>,
    plaintext: Plaintext,
) -> Result<()> {
    if channel_capacity == 0 {
        bail!("--channel-capacity must be at least 1");
    }
    let defaults = StoreConfig::default();
    let store = StoreConfig {
        memory_budget: store.memory_budget.unwrap_or(defaults.memory_budget),
        disk_budget: store.disk_budget.unwrap_or(defaults.disk_budget),
        data_dir: store.data,
        spill: store.spill_url.as_deref().map(SpillTarget::from_url).transpose()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = ShuffleServer::bind(listen, ServerConfig { channel_capacity, store, key, tls, plaintext }).await?;
        let addr = server.local_addr();
        let store = server.store();
        // The first line of stdout is the address: scripts and tests that asked for port 0 read it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "shuffle server listening on {addr}")?;
        out.flush()?;
        drop(out);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let outcome = tokio::select! {
            served = server.serve() => served.context("the shuffle server stopped"),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate.recv() => Ok(()),
        };
        // A clean exit deletes every spill file and object.
        store.close().await;
        outcome
    })
}
