//! `weir bench shuffle`: throughput and batch latency through one remote shuffle server.
//!
//! The server runs as its own `weir shuffle` process; producers and consumers run as tasks of
//! this process, all on one machine. `P` producers each write a partition of `C`
//! sub-partitions and `C` consumers each read a gate of `P` channels: a `P × C` exchange.
//! Every batch carries the time it was sent in its first column, so consumers measure the
//! latency of each batch through encode, producer → server → consumer and decode.
//!
//! `--mode blocking` measures blocking partitions instead: the producers write `--gigabytes`
//! into blocking partitions on a server whose memory budget is small, so nearly everything goes
//! to its spill files; the write ends when the server has stored every frame and the bench has
//! `fdatasync`ed the files. Then the files are dropped from the page cache
//! (`posix_fadvise(DONTNEED)`), so the read-back comes from the disk, and the consumers read
//! everything. `dd` measures the disk's sequential bandwidth in the same directory beside it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Args;
use weir_dataflow::event::{ChangeBatch, StreamEvent};
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};
use weir_shuffle_service::remote::RemoteShuffle;
use weir_shuffle_service::{GateId, PartitionKind, ShuffleService};
use weir_testkit::{ShuffleServer, Weir};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Streaming throughput and latency.
    Pipelined,
    /// Write then read back blocking partitions that spill to disk.
    Blocking,
}

#[derive(Args)]
pub struct ShuffleArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "pipelined")]
    mode: Mode,
    /// Blocking mode: data to write, in GB (Arrow data bytes).
    #[arg(long, default_value_t = 2.0)]
    gigabytes: f64,
    /// Blocking mode: the server's memory budget (K/M/G/KiB/MiB/GiB suffixes).
    #[arg(long, default_value = "64MiB", value_parser = weir_dataflow::config::parse_bytes)]
    memory_budget: u64,
    /// Blocking mode: the directory the server spills to (and dd writes to); default: the
    /// system's temporary directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Producing subtasks.
    #[arg(long, default_value_t = 8)]
    producers: u32,
    /// Consuming subtasks; channels = producers × consumers.
    #[arg(long, default_value_t = 8)]
    consumers: u32,
    /// Rows per batch (four BIGINT columns, so 32 bytes of Arrow data per row).
    #[arg(long, default_value_t = 8192)]
    batch_rows: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Offered load in MB/s for the latency run; default: half the measured throughput.
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Use a running server instead of starting one.
    #[arg(long)]
    server: Option<String>,
}

struct Outcome {
    bytes: u64,
    batches: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    backpressure: Duration,
}

impl Outcome {
    fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    fn latency_percentile(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// A `weir shuffle` server of this binary (the harness's), with `extra` flags; killed when the
/// benchmark ends however it ends.
fn start_server(extra: &[String]) -> Result<ShuffleServer> {
    let flags: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    Ok(Weir::current_exe()?.shuffle_server(&flags)?)
}

pub fn run(args: ShuffleArgs) -> Result<()> {
    if args.producers == 0 || args.consumers == 0 || args.batch_rows == 0 {
        bail!("--producers, --consumers and --batch-rows must be at least 1");
    }
    if args.mode == Mode::Blocking {
        return blocking(args);
    }
    let (server, addr) = match &args.server {
        Some(addr) => (None, addr.clone()),
        None => {
            let server = start_server(&[])?;
            let addr = server.addr.clone();
            (Some(server), addr)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let channels = args.producers * args.consumers;
    println!(
        "remote shuffle on {addr}: {} producers × {} consumers = {channels} channels, {} rows × 4 BIGINT per batch ({} KiB)",
        args.producers,
        args.consumers,
        args.batch_rows,
        args.batch_rows * 32 / 1024
    );
    let mut full = runtime.block_on(measure(&args, &addr, "throughput", None))?;
    let rate = args.latency_rate.unwrap_or(full.mb_per_second() / 2.0);
    let mut half = runtime.block_on(measure(&args, &addr, "latency", Some(rate)))?;
    println!("| run | offered MB/s | MB/s | batches/s | p50 ms | p99 ms | max ms | producer backpressure |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, offered, o) in [("unthrottled", None, &mut full), ("throttled", Some(rate), &mut half)] {
        let backpressure = o.backpressure.as_secs_f64() / (o.elapsed.as_secs_f64() * args.producers as f64) * 100.0;
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {backpressure:.0}% |",
            offered.map_or("max".to_string(), |r| format!("{r:.0}")),
            o.mb_per_second(),
            o.batches as f64 / o.elapsed.as_secs_f64(),
            o.latency_percentile(0.5),
            o.latency_percentile(0.99),
            o.latency_percentile(1.0),
        );
    }
    if let Some(server) = &server {
        println!("server peak RSS: {} MiB", crate::peak_rss_kib(server.id()).unwrap_or(0) / 1024);
    }
    Ok(())
}

/// The benchmark's batches: four BIGINT columns (32 bytes of Arrow data per row), and a column
/// of `rows` values to fill them with.
fn batch_parts(rows: usize) -> (Arc<Schema>, ArrayRef) {
    let fields = (0..4).map(|i| Field::new(format!("c{i}"), DataType::Int64, false)).collect::<Vec<_>>();
    (Arc::new(Schema::new(fields)), Arc::new(Int64Array::from_iter_values(0..rows as i64)))
}

async fn measure(args: &ShuffleArgs, addr: &str, namespace: &str, rate_mb: Option<f64>) -> Result<Outcome> {
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(addr, namespace));
    let (schema, filler) = batch_parts(args.batch_rows);
    let epoch = Instant::now();
    let mut consumers = Vec::new();
    for c in 0..args.consumers {
        let channels = (0..args.producers)
            .map(|p| ChannelId {
                partition: PartitionId { edge: 0, producer: SubtaskIndex(p) },
                consumer: SubtaskIndex(c),
            })
            .collect();
        let mut gate = shuffle.open_gate(GateId { vertex: VertexId(1), subtask: SubtaskIndex(c) }, channels).await?;
        consumers.push(tokio::spawn(async move {
            let (mut bytes, mut batches, mut latencies) = (0u64, 0u64, Vec::new());
            while let Some((_, event)) = gate.next().await? {
                if let StreamEvent::Data(b) = event {
                    let sent = b.data.column(0).as_any().downcast_ref::<Int64Array>().map_or(0, |a| a.value(0));
                    latencies.push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent as u64) / 1000);
                    bytes += (b.data.num_rows() * b.data.num_columns() * 8) as u64;
                    batches += 1;
                }
            }
            anyhow::Ok((bytes, batches, latencies))
        }));
    }
    let deadline = Duration::from_secs_f64(args.seconds);
    let batch_bytes = (args.batch_rows * 32) as f64;
    let mut producers = Vec::new();
    for p in 0..args.producers {
        let mut writer = shuffle
            .create_partition(
                PartitionId { edge: 0, producer: SubtaskIndex(p) },
                args.consumers,
                PartitionKind::Pipelined,
            )
            .await?;
        let (schema, filler) = (schema.clone(), filler.clone());
        let rows = args.batch_rows;
        let per_producer_rate = rate_mb.map(|r| r * 1e6 / args.producers as f64);
        producers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < deadline {
                if let Some(rate) = per_producer_rate {
                    let due = Duration::from_secs_f64(sent as f64 * batch_bytes / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let stamp: ArrayRef = Arc::new(Int64Array::from_value(epoch.elapsed().as_nanos() as i64, rows));
                let batch =
                    RecordBatch::try_new(schema.clone(), vec![stamp, filler.clone(), filler.clone(), filler.clone()])?;
                let target = (sent % writer.num_subpartitions() as u64) as u32;
                writer.send(target, StreamEvent::Data(ChangeBatch::inserts(batch))).await?;
                sent += 1;
            }
            for s in 0..writer.num_subpartitions() {
                writer.send(s, StreamEvent::EndOfPartition).await?;
            }
            anyhow::Ok(writer.backpressure())
        }));
    }
    let started = Instant::now();
    let mut backpressure = Duration::ZERO;
    for p in producers {
        backpressure += p.await??;
    }
    let mut outcome = Outcome { bytes: 0, batches: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), backpressure };
    for c in consumers {
        let (bytes, batches, latencies) = c.await??;
        outcome.bytes += bytes;
        outcome.batches += batches;
        outcome.latencies_us.extend(latencies);
    }
    outcome.elapsed = started.elapsed();
    eprintln!("{namespace}: {:.0} MB/s over {:.1} s", outcome.mb_per_second(), outcome.elapsed.as_secs_f64());
    Ok(outcome)
}

/// `--mode blocking`: write, sync, evict, read back; with dd's figures in the same directory.
fn blocking(args: ShuffleArgs) -> Result<()> {
    if args.server.is_some() {
        bail!("--mode blocking starts its own server (it needs to reach the spill files)");
    }
    let parent = args.data.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("weir-bench-shuffle-").tempdir_in(&parent)?;
    let server = start_server(&[
        "--data".into(),
        dir.path().display().to_string(),
        "--memory-budget".into(),
        args.memory_budget.to_string(),
    ])?;
    let addr = server.addr.clone();
    let batch_bytes = (args.batch_rows * 32) as u64;
    let total_batches = ((args.gigabytes * 1e9) as u64).div_ceil(batch_bytes).max(1);
    let per_producer = total_batches.div_ceil(args.producers as u64);
    println!(
        "blocking partitions on {addr}: {} producers × {} sub-partitions, {} rows × 4 BIGINT per batch ({} KiB), {:.2} GB, memory budget {} MiB, spilling to {}",
        args.producers,
        args.consumers,
        args.batch_rows,
        batch_bytes / 1024,
        (per_producer * args.producers as u64 * batch_bytes) as f64 / 1e9,
        args.memory_budget >> 20,
        dir.path().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(&addr, "blocking"));
    let (schema, filler) = batch_parts(args.batch_rows);

    // Write: every frame stored by the server, then the spill files synced.
    let started = Instant::now();
    let written: u64 = runtime.block_on(async {
        let mut producers = Vec::new();
        for p in 0..args.producers {
            let mut writer = shuffle
                .create_partition(
                    PartitionId { edge: 0, producer: SubtaskIndex(p) },
                    args.consumers,
                    PartitionKind::Blocking,
                )
                .await?;
            let batch = RecordBatch::try_new(schema.clone(), vec![filler.clone(); 4])?;
            producers.push(tokio::spawn(async move {
                for i in 0..per_producer {
                    let target = (i % writer.num_subpartitions() as u64) as u32;
                    writer.send(target, StreamEvent::Data(ChangeBatch::inserts(batch.clone()))).await?;
                }
                for s in 0..writer.num_subpartitions() {
                    writer.send(s, StreamEvent::EndOfPartition).await?;
                }
                writer.finish().await?;
                anyhow::Ok(per_producer * batch_bytes)
            }));
        }
        let mut bytes = 0;
        for p in producers {
            bytes += p.await??;
        }
        anyhow::Ok(bytes)
    })?;
    let stored = started.elapsed();
    let files = files_under(dir.path())?;
    let file_bytes: u64 = files.iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
    for f in &files {
        std::fs::File::open(f)?.sync_data().with_context(|| format!("fdatasync {}", f.display()))?;
    }
    let write = started.elapsed();
    // The read must come from the disk: drop the (now clean) pages of the spill files.
    for f in &files {
        let file = std::fs::File::open(f)?;
        // SAFETY: a valid open descriptor; fadvise only changes caching.
        let rc =
            unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!("posix_fadvise on {}: error {rc}", f.display());
        }
    }

    // Read: every consumer reads all producers' sub-partitions.
    let started = Instant::now();
    let read: u64 = runtime.block_on(async {
        let mut consumers = Vec::new();
        for c in 0..args.consumers {
            let channels = (0..args.producers)
                .map(|p| ChannelId {
                    partition: PartitionId { edge: 0, producer: SubtaskIndex(p) },
                    consumer: SubtaskIndex(c),
                })
                .collect();
            let mut gate =
                shuffle.open_gate(GateId { vertex: VertexId(1), subtask: SubtaskIndex(c) }, channels).await?;
            consumers.push(tokio::spawn(async move {
                let mut bytes = 0u64;
                while let Some((_, event)) = gate.next().await? {
                    if let StreamEvent::Data(b) = event {
                        bytes += (b.data.num_rows() * b.data.num_columns() * 8) as u64;
                    }
                }
                anyhow::Ok(bytes)
            }));
        }
        let mut bytes = 0;
        for c in consumers {
            bytes += c.await??;
        }
        anyhow::Ok(bytes)
    })?;
    let read_time = started.elapsed();
    if read != written {
        bail!("read {read} bytes back of {written} written");
    }
    let rss = crate::peak_rss_kib(server.id()).unwrap_or(0) / 1024;
    runtime.block_on(shuffle.release_all())?;
    drop(server);

    let (dd_write, dd_read) = dd_bandwidth(dir.path(), file_bytes)?;
    let mb = |bytes: u64, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!("| run | data MB | spill file MB | seconds | data MB/s | file MB/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| write (stored by the server) | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
        written as f64 / 1e6,
        file_bytes as f64 / 1e6,
        stored.as_secs_f64(),
        mb(written, stored),
        mb(file_bytes, stored)
    );
    println!(
        "| write + fdatasync | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
        written as f64 / 1e6,
        file_bytes as f64 / 1e6,
        write.as_secs_f64(),
        mb(written, write),
        mb(file_bytes, write)
    );
    println!(
        "| read (page cache dropped) | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
        read as f64 / 1e6,
        file_bytes as f64 / 1e6,
        read_time.as_secs_f64(),
        mb(read, read_time),
        mb(file_bytes, read_time)
    );
    println!("| dd write, conv=fdatasync | | {:.0} | | | {dd_write:.0} |", file_bytes as f64 / 1e6);
    println!("| dd read, iflag=direct | | {:.0} | | | {dd_read:.0} |", file_bytes as f64 / 1e6);
    println!(
        "dd's bandwidth over ours (the bar is ≤ 2): write + fdatasync {:.2}×, read {:.2}×; server peak RSS {rss} MiB",
        dd_write / mb(file_bytes, write),
        dd_read / mb(file_bytes, read_time)
    );
    Ok(())
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// The disk's sequential write and read bandwidth in MB/s, measured with `dd` on a file of
/// `bytes` in `dir`: written with `conv=fdatasync`, read with `iflag=direct` (no page cache).
fn dd_bandwidth(dir: &Path, bytes: u64) -> Result<(f64, f64)> {
    let file = dir.join("dd.tmp");
    let count = bytes.div_ceil(1 << 20).max(1).to_string();
    let of = format!("of={}", file.display());
    let iff = format!("if={}", file.display());
    let write = run_dd(&["if=/dev/zero", &of, "bs=1M", &format!("count={count}"), "conv=fdatasync"])?;
    let read = run_dd(&[&iff, "of=/dev/null", "bs=1M", "iflag=direct"])?;
    let _ = std::fs::remove_file(&file);
    Ok((write, read))
}

fn run_dd(args: &[&str]) -> Result<f64> {
    let out = Command::new("dd").args(args).output().context("cannot run dd")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("dd {}: {text}", args.join(" "));
    }
    // "2147483648 bytes (2.1 GB, 2.0 GiB) copied, 1.23 s, 1.7 GB/s": bytes over seconds.
    let line = text.lines().find(|l| l.contains("copied")).context("dd printed no summary")?;
    let bytes: f64 = line.split_whitespace().next().and_then(|b| b.parse().ok()).context("dd's byte count")?;
    let seconds: f64 =
        line.split(", ").find_map(|part| part.strip_suffix(" s").and_then(|s| s.parse().ok())).context("dd's time")?;
    Ok(bytes / 1e6 / seconds)
}
