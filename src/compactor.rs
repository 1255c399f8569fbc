//! `weir compactor`: compaction off the workers. Takes work items from an SQS queue (the
//! workers' `--compaction-queue-url`) and compacts the state databases they name, within the
//! state folders it is given; SIGTERM or Ctrl-C stops it, leaving work in progress to come back
//! to another compactor.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use weir_state_store::S3Options;
use weir_state_store::compaction::CompactorSettings;
use weir_state_store::sqs::{self, ServeSettings};

pub struct Flags {
    pub queue_url: String,
    pub state_dirs: Vec<String>,
    pub concurrency: usize,
    pub visibility_timeout: Duration,
    pub max_run: Duration,
    pub max_sst_size: usize,
}

pub fn serve(flags: Flags) -> Result<()> {
    if flags.state_dirs.is_empty() {
        bail!("--state-dir names the state folders this compactor may compact");
    }
    if flags.visibility_timeout < Duration::from_secs(3) {
        bail!("--visibility-timeout must be at least 3 s (it is renewed every third of it)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = sqs::client_from_env().await;
        let settings = ServeSettings {
            queue_url: flags.queue_url.clone(),
            allowed: flags.state_dirs,
            concurrency: flags.concurrency.max(1),
            visibility_timeout: flags.visibility_timeout,
            wait: Duration::from_secs(20),
            compactor: CompactorSettings {
                max_run: flags.max_run,
                max_sst_size: flags.max_sst_size.max(1 << 20),
                ..CompactorSettings::default()
            },
            s3: S3Options::from_env(),
        };
        // The first line of stdout says it is up: scripts and tests wait for it.
        let mut out = std::io::stdout().lock();
        writeln!(out, "compactor taking work items from {}", flags.queue_url)?;
        out.flush()?;
        drop(out);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        };
        sqs::serve(client, settings, stop).await?;
        Ok(())
    })
}
