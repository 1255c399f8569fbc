//! `weir bench shuffle`: throughput and batch latency through one remote shuffle server.
//!
//! The server runs as its own `weir shuffle` process; producers and consumers run as tasks of
//! this process, all on one machine. `P` producers each write a partition of `C`
//! sub-partitions and `C` consumers each read a gate of `P` channels: a `P × C` exchange.
//! Every batch carries the time it was sent in its first column, so consumers measure the
//! latency of each batch through encode, producer → server → consumer and decode.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
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

#[derive(Args)]
pub struct ShuffleArgs {
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

/// The server process, killed when the benchmark ends however it ends.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> Result<(ServerProcess, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["shuffle", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the shuffle server")?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let server = ServerProcess(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
    if addr.is_empty() {
        bail!("the shuffle server did not print its address");
    }
    Ok((server, addr))
}

pub fn run(args: ShuffleArgs) -> Result<()> {
    if args.producers == 0 || args.consumers == 0 || args.batch_rows == 0 {
        bail!("--producers, --consumers and --batch-rows must be at least 1");
    }
    let (server, addr) = match &args.server {
        Some(addr) => (None, addr.clone()),
        None => {
            let (process, addr) = start_server()?;
            (Some(process), addr)
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
    if let Some(ServerProcess(child)) = &server {
        println!("server peak RSS: {} MiB", peak_rss_kib(child.id()).unwrap_or(0) / 1024);
    }
    Ok(())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn measure(args: &ShuffleArgs, addr: &str, namespace: &str, rate_mb: Option<f64>) -> Result<Outcome> {
    let shuffle: Arc<dyn ShuffleService> = Arc::new(RemoteShuffle::new(addr, namespace));
    let schema =
        Arc::new(Schema::new((0..4).map(|i| Field::new(format!("c{i}"), DataType::Int64, false)).collect::<Vec<_>>()));
    let filler: ArrayRef = Arc::new(Int64Array::from_iter_values(0..args.batch_rows as i64));
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
