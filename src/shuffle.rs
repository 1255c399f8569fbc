//! `weir shuffle`: a remote shuffle server in its own process.

use std::io::Write;

use anyhow::{Context, Result, bail};
use weir_shuffle_service::remote::{ServerConfig, ShuffleServer};

pub fn serve(listen: &str, channel_capacity: u32) -> Result<()> {
    if channel_capacity == 0 {
        bail!("--channel-capacity must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = ShuffleServer::bind(listen, ServerConfig { channel_capacity })
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = server.local_addr()?;
        // The first line of stdout is the address: scripts and tests that asked for port 0 read it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "shuffle server listening on {addr}")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            served = server.serve() => served.context("the shuffle server stopped"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
