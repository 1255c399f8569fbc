//! One test suite for every [`ShuffleService`] implementation (in-process and remote). Each
//! check takes a fresh service from the factory it is given; the spill checks take theirs from a
//! second factory whose services have a memory budget of a few KiB, so retained data goes to
//! disk.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use weir_dataflow::event::{ChangeBatch, RowKind, StreamEvent};
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};

use crate::{GateId, InputGate, PartitionKind, ShuffleError, ShuffleService};

fn channel(edge: u32, producer: u32, consumer: u32) -> ChannelId {
    ChannelId { partition: PartitionId { edge, producer: SubtaskIndex(producer) }, consumer: SubtaskIndex(consumer) }
}

fn gate(subtask: u32) -> GateId {
    GateId { vertex: VertexId(1), subtask: SubtaskIndex(subtask) }
}

fn batch(values: &[i64]) -> ChangeBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    ChangeBatch::inserts(
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).expect("valid"),
    )
}

/// Runs every check against services made by `make` (and `make_spilling`, whose services spill
/// retained partitions past a tiny memory budget). `credits` is how many events a pipelined
/// channel may have in flight before a producer waits.
pub async fn run_all(
    make: &dyn Fn() -> Arc<dyn ShuffleService>,
    make_spilling: &dyn Fn() -> Arc<dyn ShuffleService>,
    credits: usize,
) {
    // A hung check fails in seconds instead of holding up the whole test run.
    let limit = Duration::from_secs(30);
    let timed = |name: &'static str| {
        move |r: Result<(), tokio::time::error::Elapsed>| {
            r.unwrap_or_else(|_| panic!("shuffle suite: {name} did not finish within {limit:?}"))
        }
    };
    timed("ordering")(tokio::time::timeout(limit, ordered_per_channel_until_every_producer_ends(make())).await);
    timed("credits")(tokio::time::timeout(limit, producer_waits_for_credit(make(), credits)).await);
    timed("pause")(tokio::time::timeout(limit, a_paused_channel_holds_back_its_producer(make(), credits)).await);
    timed("integrity")(tokio::time::timeout(limit, batches_and_row_kinds_arrive_intact(make())).await);
    timed("fan-out")(tokio::time::timeout(limit, fan_out_over_many_channels(make())).await);
    timed("consumer gone")(tokio::time::timeout(limit, producer_learns_its_consumer_left(make())).await);
    timed("unknown channel")(tokio::time::timeout(limit, unknown_consumer_is_an_error(make())).await);
    timed("blocking")(tokio::time::timeout(limit, blocking_partition_is_read_after_its_end_and_again(make())).await);
    for kind in [PartitionKind::HybridFull, PartitionKind::HybridSelective] {
        timed("hybrid")(tokio::time::timeout(limit, hybrid_partition_is_read_while_produced(make(), kind)).await);
    }
    timed("mixed kinds")(tokio::time::timeout(limit, a_gate_reads_pipelined_and_blocking_inputs(make())).await);
    timed("release")(tokio::time::timeout(limit, released_partitions_are_freed(make())).await);
    for kind in [PartitionKind::Blocking, PartitionKind::HybridFull, PartitionKind::HybridSelective] {
        timed("spill")(tokio::time::timeout(limit, spilled_partitions_come_back_intact(make_spilling(), kind)).await);
    }
}

fn partition(edge: u32) -> PartitionId {
    PartitionId { edge, producer: SubtaskIndex(0) }
}

/// Reads a gate to its end; returns each channel's events.
async fn drain(input: &mut Box<dyn InputGate>) -> Vec<Vec<StreamEvent>> {
    let mut events = vec![Vec::new(); input.num_channels()];
    while let Some((index, event)) = input.next().await.expect("a healthy channel") {
        events[index].push(event);
    }
    events
}

fn watermarks(events: &[StreamEvent]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Watermark(w) => Some(*w),
            _ => None,
        })
        .collect()
}

/// A blocking partition is written without any consumer and without waiting for credit; it
/// becomes readable when every sub-partition has ended, and a consumer that opens its gate
/// again (a restarted consumer) reads it all again from the beginning.
pub async fn blocking_partition_is_read_after_its_end_and_again(shuffle: Arc<dyn ShuffleService>) {
    let mut w =
        shuffle.create_partition(partition(0), 2, PartitionKind::Blocking).await.expect("created before any consumer");
    // Far more events than any credit window: a retained partition's producer does not wait.
    for i in 0..200 {
        w.send(0, StreamEvent::Watermark(i)).await.expect("send");
        w.send(1, StreamEvent::Watermark(1000 + i)).await.expect("send");
    }
    w.send(0, StreamEvent::EndOfPartition).await.expect("send");
    let mut early = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let waited = tokio::time::timeout(Duration::from_millis(200), early.next()).await;
    assert!(waited.is_err(), "a blocking partition must not be readable before every sub-partition ended");
    w.send(1, StreamEvent::EndOfPartition).await.expect("send");
    w.finish().await.expect("finish");
    let expected: Vec<i64> = (0..200).collect();
    let events = drain(&mut early).await;
    assert_eq!(watermarks(&events[0]), expected);
    assert!(matches!(events[0].last(), Some(StreamEvent::EndOfPartition)));
    drop(early);
    for _ in 0..2 {
        let mut again = shuffle.open_gate(gate(0), vec![channel(0, 0, 0), channel(0, 0, 1)]).await.expect("gate");
        let events = drain(&mut again).await;
        assert_eq!(watermarks(&events[0]), expected, "a re-read returns the same events");
        assert_eq!(watermarks(&events[1]), (1000..1200).collect::<Vec<_>>());
        assert_eq!(events[0].len(), 201);
    }
}

/// A hybrid partition is read while it is produced; a full one can be read again afterwards, a
/// selective one cannot (it keeps only what has not been read).
pub async fn hybrid_partition_is_read_while_produced(shuffle: Arc<dyn ShuffleService>, kind: PartitionKind) {
    let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut w = shuffle.create_partition(partition(0), 1, kind).await.expect("partition");
    w.send(0, StreamEvent::Watermark(0)).await.expect("send");
    let first = tokio::time::timeout(Duration::from_secs(5), input.next()).await.expect("read while producing");
    assert!(matches!(first.expect("channel"), Some((0, StreamEvent::Watermark(0)))));
    for i in 1..100 {
        w.send(0, StreamEvent::Watermark(i)).await.expect("send");
    }
    w.send(0, StreamEvent::EndOfPartition).await.expect("send");
    let events = drain(&mut input).await;
    assert_eq!(watermarks(&events[0]), (1..100).collect::<Vec<_>>());
    drop(input);
    let mut again = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    match kind {
        PartitionKind::HybridFull => {
            let events = drain(&mut again).await;
            assert_eq!(watermarks(&events[0]), (0..100).collect::<Vec<_>>(), "hybrid-full is re-readable");
        }
        _ => {
            let err = again.next().await.expect_err("hybrid-selective data is consumed once");
            assert!(err.to_string().contains("cannot be read again"), "unexpected {err}");
        }
    }
}

/// A gate over a pipelined and a blocking input reads both to their ends.
pub async fn a_gate_reads_pipelined_and_blocking_inputs(shuffle: Arc<dyn ShuffleService>) {
    let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0), channel(1, 0, 0)]).await.expect("gate");
    let mut pipelined = shuffle.create_partition(partition(0), 1, PartitionKind::Pipelined).await.expect("partition");
    let mut blocking = shuffle.create_partition(partition(1), 1, PartitionKind::Blocking).await.expect("partition");
    let producers = [
        tokio::spawn(async move {
            for i in 0..50 {
                pipelined.send(0, StreamEvent::Watermark(i)).await.expect("send");
            }
            pipelined.send(0, StreamEvent::EndOfPartition).await.expect("send");
        }),
        tokio::spawn(async move {
            for i in 0..50 {
                blocking.send(0, StreamEvent::Watermark(100 + i)).await.expect("send");
            }
            blocking.send(0, StreamEvent::EndOfPartition).await.expect("send");
        }),
    ];
    let events = drain(&mut input).await;
    assert_eq!(watermarks(&events[0]), (0..50).collect::<Vec<_>>());
    assert_eq!(watermarks(&events[1]), (100..150).collect::<Vec<_>>());
    for p in producers {
        p.await.expect("producer");
    }
}

/// Released partitions are gone: their ids can be created anew.
pub async fn released_partitions_are_freed(shuffle: Arc<dyn ShuffleService>) {
    for edge in 0..2 {
        let mut w = shuffle.create_partition(partition(edge), 1, PartitionKind::Blocking).await.expect("partition");
        w.send(0, StreamEvent::Watermark(1)).await.expect("send");
        w.send(0, StreamEvent::EndOfPartition).await.expect("send");
        w.finish().await.expect("finish");
    }
    assert!(shuffle.create_partition(partition(0), 1, PartitionKind::Blocking).await.is_err(), "ids are unique");
    shuffle.release_partitions(vec![partition(0)]).await.expect("release");
    shuffle.release_partitions(vec![partition(0)]).await.expect("releasing twice is harmless");
    shuffle.create_partition(partition(0), 1, PartitionKind::Blocking).await.expect("a released id is free");
    shuffle.release_all().await.expect("release all");
    shuffle.create_partition(partition(1), 1, PartitionKind::HybridFull).await.expect("a released id is free");
}

/// Far more data than the memory budget: it spills and comes back intact and in order.
pub async fn spilled_partitions_come_back_intact(shuffle: Arc<dyn ShuffleService>, kind: PartitionKind) {
    let subpartitions = 3u32;
    let rounds = 200i64;
    // A hybrid-selective consumer reads as the data is produced; the others read afterwards.
    let mut early = match kind {
        PartitionKind::HybridSelective => Some(
            shuffle.open_gate(gate(0), (0..subpartitions).map(|c| channel(0, 0, c)).collect()).await.expect("gate"),
        ),
        _ => None,
    };
    let mut w = shuffle.create_partition(partition(0), subpartitions, kind).await.expect("partition");
    let producer = tokio::spawn(async move {
        for round in 0..rounds {
            for s in 0..subpartitions {
                let values: Vec<i64> = (0..128).map(|i| round * 1_000_000 + s as i64 * 1000 + i).collect();
                w.send(s, StreamEvent::Data(batch(&values))).await.expect("send");
            }
        }
        for s in 0..subpartitions {
            w.send(s, StreamEvent::EndOfPartition).await.expect("send");
        }
        w.finish().await.expect("finish");
    });
    let check = |events: Vec<Vec<StreamEvent>>| {
        for (s, events) in events.iter().enumerate() {
            let mut round = 0;
            for event in events {
                if let StreamEvent::Data(b) = event {
                    let v = b.data.column(0).as_any().downcast_ref::<Int64Array>().expect("int64");
                    assert_eq!(v.len(), 128);
                    for i in 0..128 {
                        assert_eq!(v.value(i), round * 1_000_000 + s as i64 * 1000 + i as i64, "sub-partition {s}");
                    }
                    round += 1;
                }
            }
            assert_eq!(round, rounds, "sub-partition {s} lost batches");
        }
    };
    if let Some(input) = early.as_mut() {
        check(drain(input).await);
    }
    producer.await.expect("producer");
    if early.is_none() {
        for _ in 0..2 {
            let mut input =
                shuffle.open_gate(gate(0), (0..subpartitions).map(|c| channel(0, 0, c)).collect()).await.expect("gate");
            check(drain(&mut input).await);
        }
    }
}

/// Events of one channel arrive in order; the gate ends when every producer has ended.
pub async fn ordered_per_channel_until_every_producer_ends(shuffle: Arc<dyn ShuffleService>) {
    let mut input =
        shuffle.open_gate(gate(0), vec![channel(0, 0, 0), channel(0, 1, 0), channel(0, 2, 0)]).await.expect("gate");
    let mut producers = Vec::new();
    for p in 0..3 {
        let mut w = shuffle
            .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(p) }, 1, PartitionKind::Pipelined)
            .await
            .expect("partition");
        producers.push(tokio::spawn(async move {
            for i in 0..100 {
                w.send(0, StreamEvent::Watermark(p as i64 * 1000 + i)).await.expect("send");
            }
            w.send(0, StreamEvent::EndOfPartition).await.expect("send");
        }));
    }
    let mut last = [-1i64; 3];
    let mut ended = 0;
    while let Some((index, event)) = input.next().await.expect("channel") {
        match event {
            StreamEvent::Watermark(w) => {
                assert!(w > last[index], "channel {index} out of order: {w} after {}", last[index]);
                last[index] = w;
            }
            StreamEvent::EndOfPartition => ended += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ended, 3);
    assert_eq!(last, [99, 1099, 2099]);
    for p in producers {
        p.await.expect("producer");
    }
}

/// A producer that has spent its credits waits until the consumer takes an event.
pub async fn producer_waits_for_credit(shuffle: Arc<dyn ShuffleService>, credits: usize) {
    let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut w = shuffle
        .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
        .await
        .expect("partition");
    for i in 0..credits {
        w.send(0, StreamEvent::Watermark(i as i64)).await.expect("send within credit");
    }
    let blocked = tokio::time::timeout(Duration::from_millis(100), w.send(0, StreamEvent::Watermark(-1))).await;
    assert!(blocked.is_err(), "a send beyond {credits} credits must wait");
    assert!(matches!(input.next().await.expect("channel"), Some((0, StreamEvent::Watermark(0)))));
    tokio::time::timeout(Duration::from_secs(5), w.send(0, StreamEvent::Watermark(-1)))
        .await
        .expect("a returned credit lets the producer go on")
        .expect("send");
}

/// A paused channel keeps its credits back: its producer stops once it has spent what it holds,
/// whatever the consumer takes meanwhile, and goes on when the channel is resumed.
pub async fn a_paused_channel_holds_back_its_producer(shuffle: Arc<dyn ShuffleService>, credits: usize) {
    let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut w = shuffle
        .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
        .await
        .expect("partition");
    input.pause(0);
    let total = credits * 4;
    let producer = tokio::spawn(async move {
        for i in 0..total {
            w.send(0, StreamEvent::Watermark(i as i64)).await.expect("send");
        }
        w.send(0, StreamEvent::EndOfPartition).await.expect("send");
    });
    let mut taken = 0;
    while let Ok(got) = tokio::time::timeout(Duration::from_millis(200), input.next()).await {
        assert!(matches!(got.expect("channel"), Some((0, StreamEvent::Watermark(w))) if w == taken as i64));
        taken += 1;
    }
    assert!(taken <= credits, "{taken} events passed a paused channel with {credits} credits");
    assert!(!producer.is_finished(), "a paused channel must hold back its producer");
    input.resume(0);
    while taken < total {
        let got = tokio::time::timeout(Duration::from_secs(5), input.next()).await.expect("resumed in time");
        let got = got.expect("channel");
        assert!(matches!(got, Some((0, StreamEvent::Watermark(w))) if w == taken as i64), "{taken}: {got:?}");
        taken += 1;
    }
    assert!(matches!(input.next().await.expect("channel"), Some((0, StreamEvent::EndOfPartition))));
    producer.await.expect("producer");
}

/// Batches arrive with their values and row kinds unchanged.
pub async fn batches_and_row_kinds_arrive_intact(shuffle: Arc<dyn ShuffleService>) {
    let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut w = shuffle
        .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
        .await
        .expect("partition");
    let changelog = ChangeBatch::with_kinds(batch(&[1, 2]).data, vec![RowKind::UpdateBefore, RowKind::UpdateAfter]);
    w.send(0, StreamEvent::Data(batch(&[7, 8, 9]))).await.expect("send");
    w.send(0, StreamEvent::Data(changelog)).await.expect("send");
    let Some((_, StreamEvent::Data(first))) = input.next().await.expect("channel") else { panic!("expected data") };
    assert_eq!(first.data, batch(&[7, 8, 9]).data);
    assert!(first.is_append_only());
    let Some((_, StreamEvent::Data(second))) = input.next().await.expect("channel") else { panic!("expected data") };
    assert_eq!(second.kind(0), RowKind::UpdateBefore);
    assert_eq!(second.kind(1), RowKind::UpdateAfter);
}

/// One producer feeding 64 consumers: every consumer gets exactly its own events.
pub async fn fan_out_over_many_channels(shuffle: Arc<dyn ShuffleService>) {
    let consumers = 64u32;
    let mut gates = Vec::new();
    for c in 0..consumers {
        gates.push(shuffle.open_gate(gate(c), vec![channel(0, 0, c)]).await.expect("gate"));
    }
    let mut w = shuffle
        .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, consumers, PartitionKind::Pipelined)
        .await
        .expect("partition");
    let producer = tokio::spawn(async move {
        for round in 0..20i64 {
            for c in 0..consumers {
                w.send(c, StreamEvent::Data(batch(&[c as i64, round]))).await.expect("send");
            }
        }
        for c in 0..consumers {
            w.send(c, StreamEvent::EndOfPartition).await.expect("send");
        }
    });
    // Consumers read concurrently, as tasks do: a consumer that waits holds back its producer.
    let readers: Vec<_> = gates
        .drain(..)
        .enumerate()
        .map(|(c, mut g)| {
            tokio::spawn(async move {
                let mut rounds = 0;
                while let Some((_, event)) = g.next().await.expect("channel") {
                    if let StreamEvent::Data(b) = event {
                        let v = b.data.column(0).as_any().downcast_ref::<Int64Array>().expect("int64");
                        assert_eq!(v.value(0), c as i64, "an event reached the wrong consumer");
                        assert_eq!(v.value(1), rounds);
                        rounds += 1;
                    }
                }
                assert_eq!(rounds, 20);
            })
        })
        .collect();
    for r in readers {
        r.await.expect("consumer");
    }
    producer.await.expect("producer");
}

/// A partition whose consumers never opened their gates is refused.
pub async fn unknown_consumer_is_an_error(shuffle: Arc<dyn ShuffleService>) {
    let err = shuffle
        .create_partition(PartitionId { edge: 7, producer: SubtaskIndex(0) }, 1, PartitionKind::Pipelined)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, ShuffleError::UnknownChannel(_)));
}

/// A consumer that goes away fails its producer's sends on that channel, promptly, instead of
/// leaving the producer waiting for credit forever; its other channels carry on.
pub async fn producer_learns_its_consumer_left(shuffle: Arc<dyn ShuffleService>) {
    let leaving = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut staying = shuffle.open_gate(gate(1), vec![channel(0, 0, 1)]).await.expect("gate");
    let mut w = shuffle
        .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 2, PartitionKind::Pipelined)
        .await
        .expect("partition");
    drop(leaving);
    let mut sent = 0;
    let err = loop {
        match w.send(0, StreamEvent::Watermark(sent)).await {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 10_000, "sends to a consumer that left kept succeeding");
    };
    assert!(matches!(err, ShuffleError::ConsumerGone(_)), "unexpected error {err}");
    w.send(1, StreamEvent::Watermark(5)).await.expect("the other channel still works");
    assert!(matches!(staying.next().await.expect("channel"), Some((0, StreamEvent::Watermark(5)))));
}
