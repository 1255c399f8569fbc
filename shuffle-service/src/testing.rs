//! One test suite for every [`ShuffleService`] implementation: the in-process one now, the
//! remote one when it lands. Each check takes a fresh service from the factory it is given.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use weir_dataflow::event::{ChangeBatch, RowKind, StreamEvent};
use weir_dataflow::ids::{ChannelId, PartitionId, SubtaskIndex, VertexId};

use crate::{GateId, ShuffleError, ShuffleService};

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

/// Runs every check against services made by `make`. `credits` is how many events a channel
/// may have in flight before a producer waits.
pub async fn run_all(make: &dyn Fn() -> Arc<dyn ShuffleService>, credits: usize) {
    // A hung check fails in seconds instead of holding up the whole test run.
    let limit = Duration::from_secs(30);
    let timed = |name: &'static str| {
        move |r: Result<(), tokio::time::error::Elapsed>| {
            r.unwrap_or_else(|_| panic!("shuffle suite: {name} did not finish within {limit:?}"))
        }
    };
    timed("ordering")(tokio::time::timeout(limit, ordered_per_channel_until_every_producer_ends(make())).await);
    timed("credits")(tokio::time::timeout(limit, producer_waits_for_credit(make(), credits)).await);
    timed("integrity")(tokio::time::timeout(limit, batches_and_row_kinds_arrive_intact(make())).await);
    timed("fan-out")(tokio::time::timeout(limit, fan_out_over_many_channels(make())).await);
    timed("consumer gone")(tokio::time::timeout(limit, producer_learns_its_consumer_left(make())).await);
    timed("unknown channel")(tokio::time::timeout(limit, unknown_consumer_is_an_error(make())).await);
}

/// Events of one channel arrive in order; the gate ends when every producer has ended.
pub async fn ordered_per_channel_until_every_producer_ends(shuffle: Arc<dyn ShuffleService>) {
    let mut input =
        shuffle.open_gate(gate(0), vec![channel(0, 0, 0), channel(0, 1, 0), channel(0, 2, 0)]).await.expect("gate");
    let mut producers = Vec::new();
    for p in 0..3 {
        let mut w =
            shuffle.create_partition(PartitionId { edge: 0, producer: SubtaskIndex(p) }, 1).await.expect("partition");
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
    let mut w =
        shuffle.create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1).await.expect("partition");
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

/// Batches arrive with their values and row kinds unchanged.
pub async fn batches_and_row_kinds_arrive_intact(shuffle: Arc<dyn ShuffleService>) {
    let mut input = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut w =
        shuffle.create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 1).await.expect("partition");
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
        .create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, consumers)
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
    let err =
        shuffle.create_partition(PartitionId { edge: 7, producer: SubtaskIndex(0) }, 1).await.err().expect("refused");
    assert!(matches!(err, ShuffleError::UnknownChannel(_)));
}

/// A consumer that goes away fails its producer's sends on that channel, promptly, instead of
/// leaving the producer waiting for credit forever; its other channels carry on.
pub async fn producer_learns_its_consumer_left(shuffle: Arc<dyn ShuffleService>) {
    let leaving = shuffle.open_gate(gate(0), vec![channel(0, 0, 0)]).await.expect("gate");
    let mut staying = shuffle.open_gate(gate(1), vec![channel(0, 0, 1)]).await.expect("gate");
    let mut w =
        shuffle.create_partition(PartitionId { edge: 0, producer: SubtaskIndex(0) }, 2).await.expect("partition");
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
