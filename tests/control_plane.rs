//! Three `weir control-plane` processes on loopback, killed with `kill -9` and restarted: a new
//! leader takes writes within seconds, a restarted replica catches up, a lone survivor refuses
//! writes with `no-quorum` in bounded time and takes them again once a peer is back.
//!
//! Writes go through the internal `POST /raft/propose` (internal listener, peer key); leadership and what each replica has
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
    let peer_key = cluster.key("peer").expect("weir key peer");
    let answer = cluster
        .client()
        .post(cluster.internal_url(via, "/raft/propose"))
        .bearer_auth(peer_key)
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

/// The routes a replica serves on its internal listener, as an attacker would probe them, with
/// the key that opens each (the rest take the peer key).
const INTERNAL_ROUTES: &[(&str, &str)] = &[
    ("POST", "/raft/append"),
    ("POST", "/raft/vote"),
    ("POST", "/raft/pre-vote"),
    ("POST", "/raft/snapshot"),
    ("POST", "/raft/propose"),
    ("POST", "/raft/read-index"),
    ("POST", "/raft/members"),
    ("DELETE", "/raft/members/2"),
    ("GET", "/raft/cluster"),
    ("GET", "/raft/jobs/job-x/live"),
    ("POST", "/internal/v1/heartbeat"),
];

/// Every route of both listeners of a replica process, probed with every kind of credential: no
/// internal route answers on the API listener (404), none answers on the internal listener
/// without the key that opens it (401, before its body is read), the API answers nothing on the
/// internal listener, and the cluster keys open no API route. Nothing is created, nor a member
/// added, by any refused request. (Who may do what within the API: `control-plane/tests/api.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_both_listeners_takes_only_its_own_credential() {
    let cluster = common::weir().cluster().replicas(3).wait(WAIT).start().unwrap_or_else(|e| panic!("{e}"));
    let leader = agreed_leader(&cluster).await;
    let admin = cluster.tenant_admin("acme").await.unwrap_or_else(|e| panic!("{e}"));
    let other = cluster.tenant_admin("globex").await.unwrap_or_else(|e| panic!("{e}"));
    let reader = cluster
        .write(leader, cluster.root_token(), "/api/v1/tenants/acme/tokens", json!({"role": "read-only"}))
        .await
        .unwrap_or_else(|e| panic!("{e}"))["secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    let job = cluster
        .write(leader, &admin, "/api/v1/jobs", json!({"name": "probe", "sql": PROBE_SQL}))
        .await
        .unwrap_or_else(|e| panic!("{e}"))["id"]
        .as_str()
        .expect("a job id")
        .to_string();
    let peer = cluster.key("peer").expect("weir key peer");
    let worker = cluster.key("worker").expect("weir key worker");
    let credentials: [(&str, Option<&str>); 7] = [
        ("none", None),
        ("other tenant", Some(&other)),
        ("read-only", Some(&reader)),
        ("admin", Some(&admin)),
        ("root", Some(cluster.root_token())),
        ("peer key", Some(&peer)),
        ("worker key", Some(&worker)),
    ];
    let evil_tenant = json!({"kind": "create-tenant", "tenant": "evil", "display_name": "evil", "at": 1});
    let evil_member = json!({"id": 9, "address": "127.0.0.1:1"});
    let send = |url: String, method: &str, token: Option<&str>, body: Option<Value>| {
        let mut request = cluster.client().request(method.parse().expect("a method"), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.expect("the replica answers");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut probes = 0;
    for replica in cluster.replica_ids() {
        for (method, path) in INTERNAL_ROUTES {
            let body = match *path {
                "/raft/propose" => Some(evil_tenant.clone()),
                "/raft/members" => Some(evil_member.clone()),
                _ => None,
            };
            let opener = if path.starts_with("/internal/") { "worker key" } else { "peer key" };
            for (who, token) in credentials {
                let (status, answer) = send(cluster.url(replica, path), method, token, body.clone()).await;
                assert_eq!(status, 404, "{method} {path} on the API listener as {who}: {answer}");
                if who == opener {
                    continue; // Opens the route: probed below without a body that would do harm.
                }
                let (status, answer) = send(cluster.internal_url(replica, path), method, token, body.clone()).await;
                assert_eq!(status, 401, "{method} {path} on the internal listener as {who}: {answer}");
                assert_eq!(answer["code"], "unauthorized", "{answer}");
                probes += 2;
            }
        }
        for route in weir_control_plane::api::routes() {
            let path = route.path.replace("{id}", &job).replace("{tenant}", "acme").replace("{token}", "tok-x");
            for (who, token) in credentials {
                let (status, answer) =
                    send(cluster.internal_url(replica, &path), route.method.as_str(), token, None).await;
                let want = if who == "peer key" { 404 } else { 401 };
                assert_eq!(status, want, "{} {path} on the internal listener as {who}: {answer}", route.method);
                probes += 1;
            }
            for (who, token) in [("peer key", Some(peer.as_str())), ("worker key", Some(worker.as_str()))] {
                let (status, anonymous) = send(cluster.url(replica, &path), route.method.as_str(), None, None).await;
                let (keyed, answer) = send(cluster.url(replica, &path), route.method.as_str(), token, None).await;
                assert_eq!(
                    keyed, status,
                    "{} {path} on the API as {who} answers as to no one: {answer} {anonymous}",
                    route.method
                );
                probes += 1;
            }
        }
    }
    eprintln!("{probes} refused probes");
    // The peer key opens the replicas' routes (a harmless read), the worker key the heartbeat.
    let (status, view) = send(cluster.internal_url(leader, "/raft/cluster"), "GET", Some(&peer), None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["members"].as_array().map(Vec::len), Some(3), "no member was added: {view}");
    let beat = json!({"worker": "worker-probe", "address": "127.0.0.1:9", "slots": 0, "attempts": []});
    let (status, answer) =
        send(cluster.internal_url(leader, "/internal/v1/heartbeat"), "POST", Some(&worker), Some(beat)).await;
    assert_ne!(status, 401, "{answer}");
    // Nothing a refused request asked for happened.
    let (_, jobs) = send(cluster.url(leader, "/api/v1/jobs"), "GET", Some(&admin), None).await;
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1), "{jobs}");
    let evil = cluster.write(leader, cluster.root_token(), "/api/v1/tenants", json!({"id": "evil"})).await;
    assert!(evil.is_ok(), "tenant evil did not exist before: {evil:?}");
}

/// A job that needs no storage: it passes any sandbox.
const PROBE_SQL: &str = "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id FROM g;";
