//! `weir bench nexmark` and `weir nexmark-gen`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Not yet available.
    Nexmark,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Nexmark => anyhow::bail!("weir bench nexmark is not implemented yet"),
    }
}

pub fn generate_json(events: u64, seed: u64, out: &Path) -> Result<u64> {
    let mut options = std::collections::BTreeMap::new();
    options.insert("events.num".to_string(), events.to_string());
    options.insert("seed".to_string(), seed.to_string());
    let config =
        weir_workers::connectors::nexmark::NexmarkConfig::from_options(&options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let n = weir_workers::connectors::nexmark::write_json_lines(&config, &mut writer)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(n)
}
