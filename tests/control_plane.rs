//! Three `weir control-plane` processes on loopback, killed with `kill -9` and restarted: a new
//! leader takes writes within seconds, a restarted replica catches up, a lone survivor refuses
//! writes with `no-quorum` in bounded time and takes them again once a peer is back.
//!
//! Writes go through the internal `POST /raft/propose`; leadership and what each replica has
//! applied are read from `GET /api/v1/cluster`. The processes are the harness's
//! (`weir_testkit::Cluster`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testkit::Cluster;

mod common;

const WAIT: Duration = Duration::from_secs(20);

/// Three replicas on ports free a moment ago, started again on other ports if one was taken.
fn start() -> Cluster {
    common::weir().cluster().replicas(3).wait(WAIT).start().unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until every running replica names the same running leader.
async fn agreed_leader(cluster: &Cluster) -> u64 {
    cluster.leader().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Restarts a killed replica on its address and data.
fn restart(cluster: &mut Cluster, id: u64) {
    // Its port was free a moment ago and is ours; a collision here would be a real failure.
    cluster.restart_replica(id).unwrap_or_else(|e| panic!("replica {id} restarts on its address: {e}"));
}

/// Waits until replica `id` applied at least what the leader had applied when called.
async fn caught_up(cluster: &Cluster, id: u64, leader: u64) {
    cluster.caught_up(id, leader).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Proposes creating `tenant` through replica `via`: the status and the JSON answer.
async fn create_tenant(cluster: &Cluster, via: u64, tenant: &str) -> (u16, Value) {
    let command = json!({"kind": "create-tenant", "tenant": tenant, "display_name": tenant, "at": 1});
    let answer = cluster
        .client()
        .post(cluster.url(via, "/raft/propose"))
        .json(&command)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the replica answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Writes through `via` until one write succeeds; returns when it did.
async fn write_until_accepted(cluster: &Cluster, via: u64, prefix: &str) -> Instant {
    let deadline = Instant::now() + WAIT;
    for attempt in 0.. {
        let (status, answer) = create_tenant(cluster, via, &format!("{prefix}-{attempt}")).await;
        if status == 200 {
            assert_eq!(answer, json!({"kind": "done"}));
            return Instant::now();
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "no write accepted within {WAIT:?}: {answer}");
    }
    unreachable!("the loop returns or fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replica_processes_survive_kill_9_of_the_leader_and_refuse_writes_without_quorum() {
    let mut cluster = start();
    let leader = agreed_leader(&cluster).await;
    for replica in cluster.replica_ids() {
        let health = cluster.client().get(cluster.url(replica, "/api/v1/healthz")).send().await.expect("answers");
        let health: Value = health.json().await.expect("a JSON body");
        assert_eq!(health["status"], "ok");
    }

    // A write through a follower is forwarded to the leader.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert_eq!(create_tenant(&cluster, follower, "acme").await, (200, json!({"kind": "done"})));
    let (status, answer) = create_tenant(&cluster, follower, "acme").await;
    assert_eq!(
        (status, answer["kind"].as_str(), answer["code"].as_str()),
        (200, Some("rejected"), Some("tenant-exists"))
    );

    // kill -9 the leader, write through a survivor until it is accepted, restart the killed one
    // and let it catch up. Three times, so each replica may have led.
    let mut failovers = Vec::new();
    for round in 0..3 {
        let leader = agreed_leader(&cluster).await;
        let survivor = (1..=3).find(|id| *id != leader).expect("a survivor");
        cluster.kill_9_replica(leader);
        let killed_at = Instant::now();
        let accepted_at = write_until_accepted(&cluster, survivor, &format!("failover-{round}")).await;
        failovers.push(accepted_at - killed_at);
        let new_leader = agreed_leader(&cluster).await;
        assert_ne!(new_leader, leader);
        restart(&mut cluster, leader);
        caught_up(&cluster, leader, new_leader).await;
    }
    eprintln!("kill -9 of the leader to the first accepted write: {failovers:?}");
    for took in &failovers {
        assert!(*took < Duration::from_secs(5), "a failover took {took:?}: {failovers:?}");
    }

    // Two of three killed, the leader among them and then not: the survivor (a follower left
    // without a leader, or a leader without a quorum) answers no-quorum within a bounded time;
    // once one replica is back, writes are accepted again.
    for leader_survives in [false, true] {
        let leader = agreed_leader(&cluster).await;
        let survivor = if leader_survives { leader } else { (1..=3).find(|id| *id != leader).expect("a follower") };
        let killed: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
        for id in &killed {
            cluster.kill_9_replica(*id);
        }
        for attempt in 0..2 {
            let started = Instant::now();
            let (status, answer) =
                create_tenant(&cluster, survivor, &format!("lonely-{leader_survives}-{attempt}")).await;
            let took = started.elapsed();
            assert_eq!((status, answer["code"].as_str()), (503, Some("no-quorum")), "{answer}");
            assert!(took < Duration::from_secs(4), "no-quorum took {took:?}");
            eprintln!("leader survives: {leader_survives}; no-quorum answered in {took:?}: {answer}");
        }
        restart(&mut cluster, killed[0]);
        write_until_accepted(&cluster, survivor, &format!("quorum-again-{leader_survives}")).await;
        restart(&mut cluster, killed[1]);
        let leader = agreed_leader(&cluster).await;
        caught_up(&cluster, killed[1], leader).await;
    }
    let leader = agreed_leader(&cluster).await;
    let second = (1..=3).find(|id| *id != leader).expect("a follower");

    // SIGTERM stops a replica cleanly.
    let status = cluster.terminate_replica(second).unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "a replica exits 0 on SIGTERM");
}
