//! Three `weir control-plane` processes on loopback, killed with `kill -9` and restarted: a new
//! leader takes writes within seconds, a restarted replica catches up, a lone survivor refuses
//! writes with `no-quorum` in bounded time and takes them again once a peer is back.
//!
//! Writes go through the internal `POST /raft/propose` (the API is not merged yet), leadership
//! is read from `GET /raft/cluster`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// One replica process; its data directory outlives the process so it can restart.
struct ReplicaProcess {
    id: u64,
    address: String,
    data: PathBuf,
    child: Option<Child>,
}

impl ReplicaProcess {
    /// Starts the process; `false` when it exited before listening (its port was taken).
    fn start(&mut self, peers: &str) -> bool {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["control-plane", "--id", &self.id.to_string(), "--listen", &self.address, "--peers", peers])
            .arg("--data")
            .arg(&self.data)
            .env("WEIR_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("weir control-plane starts");
        let mut line = String::new();
        let read = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if read.unwrap_or(0) == 0 {
            let _ = child.wait();
            return false;
        }
        assert!(line.contains("listening on"), "unexpected first line: {line}");
        self.child = Some(child);
        true
    }

    fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").arg("-9").arg(child.id().to_string()).status().expect("kill runs");
        assert!(status.success());
        let _ = child.wait();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    replicas: BTreeMap<u64, ReplicaProcess>,
    peers: String,
    client: reqwest::Client,
}

fn free_port_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("address").to_string()
}

impl Cluster {
    /// Three replicas on ports free a moment ago; if another process took one meanwhile, the
    /// replica exits at once and the whole cluster starts again on other ports.
    fn start(root: &Path) -> Cluster {
        for attempt in 0..5 {
            let mut replicas: BTreeMap<u64, ReplicaProcess> = (1..=3)
                .map(|id| {
                    let data = root.join(format!("attempt-{attempt}/replica-{id}"));
                    (id, ReplicaProcess { id, address: free_port_address(), data, child: None })
                })
                .collect();
            let peers = replicas.values().map(|r| format!("{}={}", r.id, r.address)).collect::<Vec<_>>().join(",");
            if replicas.values_mut().all(|replica| replica.start(&peers)) {
                return Cluster { replicas, peers, client: reqwest::Client::new() };
            }
            eprintln!("a port was taken; starting again on other ports");
        }
        panic!("no free ports in 5 attempts");
    }

    fn restart(&mut self, id: u64) {
        let peers = self.peers.clone();
        let replica = self.replicas.get_mut(&id).expect("known replica");
        // Its port was free a moment ago and is ours; a collision here would be a real failure.
        assert!(replica.start(&peers), "replica {id} restarts on its address");
    }

    fn running(&self) -> impl Iterator<Item = &ReplicaProcess> {
        self.replicas.values().filter(|r| r.child.is_some())
    }

    async fn view(&self, id: u64) -> Option<Value> {
        let answer = self.client.get(self.replicas[&id].url("/raft/cluster")).send().await.ok()?;
        answer.json().await.ok()
    }

    /// Waits until every running replica names the same running leader.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut leaders = Vec::new();
            for replica in self.running() {
                leaders.push(self.view(replica.id).await.and_then(|view| view["leader"].as_u64()));
            }
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && self.replicas[leader].child.is_some()
            {
                return *leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {WAIT:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes creating `tenant` through replica `via`: the status and the JSON answer.
    async fn create_tenant(&self, via: u64, tenant: &str) -> (u16, Value) {
        let command = json!({"kind": "create-tenant", "tenant": tenant, "display_name": tenant, "at": 1});
        let answer = self
            .client
            .post(self.replicas[&via].url("/raft/propose"))
            .json(&command)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the replica answers");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// Writes through `via` until one write succeeds; returns when it did.
    async fn write_until_accepted(&self, via: u64, prefix: &str) -> Instant {
        let deadline = Instant::now() + WAIT;
        for attempt in 0.. {
            let (status, answer) = self.create_tenant(via, &format!("{prefix}-{attempt}")).await;
            if status == 200 {
                assert_eq!(answer, json!({"kind": "done"}));
                return Instant::now();
            }
            assert_eq!(status, 503, "{answer}");
            assert!(Instant::now() < deadline, "no write accepted within {WAIT:?}: {answer}");
        }
        unreachable!("the loop returns or fails")
    }

    /// Waits until replica `id` applied at least what the leader had applied when called.
    async fn caught_up(&self, id: u64, leader: u64) {
        let target = self.view(leader).await.expect("the leader answers")["last_applied"].as_u64().expect("applied");
        let deadline = Instant::now() + WAIT;
        loop {
            let applied = self.view(id).await.and_then(|view| view["last_applied"].as_u64());
            if applied >= Some(target) {
                return;
            }
            assert!(Instant::now() < deadline, "replica {id} at {applied:?}, not {target} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replica_processes_survive_kill_9_of_the_leader_and_refuse_writes_without_quorum() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut cluster = Cluster::start(root.path());
    let leader = cluster.leader().await;
    for replica in cluster.replicas.values() {
        let health = cluster.client.get(replica.url("/api/v1/healthz")).send().await.expect("answers");
        let health: Value = health.json().await.expect("a JSON body");
        assert_eq!(health["status"], "ok");
    }

    // A write through a follower is forwarded to the leader.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert_eq!(cluster.create_tenant(follower, "acme").await, (200, json!({"kind": "done"})));
    let (status, answer) = cluster.create_tenant(follower, "acme").await;
    assert_eq!(
        (status, answer["kind"].as_str(), answer["code"].as_str()),
        (200, Some("rejected"), Some("tenant-exists"))
    );

    // kill -9 the leader, write through a survivor until it is accepted, restart the killed one
    // and let it catch up. Three times, so each replica may have led.
    let mut failovers = Vec::new();
    for round in 0..3 {
        let leader = cluster.leader().await;
        let survivor = (1..=3).find(|id| *id != leader).expect("a survivor");
        cluster.replicas.get_mut(&leader).expect("leader").kill_9();
        let killed_at = Instant::now();
        let accepted_at = cluster.write_until_accepted(survivor, &format!("failover-{round}")).await;
        failovers.push(accepted_at - killed_at);
        let new_leader = cluster.leader().await;
        assert_ne!(new_leader, leader);
        cluster.restart(leader);
        cluster.caught_up(leader, new_leader).await;
    }
    eprintln!("kill -9 of the leader to the first accepted write: {failovers:?}");
    for took in &failovers {
        assert!(*took < Duration::from_secs(5), "a failover took {took:?}: {failovers:?}");
    }

    // Two of three killed, the leader among them and then not: the survivor (a follower left
    // without a leader, or a leader without a quorum) answers no-quorum within a bounded time;
    // once one replica is back, writes are accepted again.
    for leader_survives in [false, true] {
        let leader = cluster.leader().await;
        let survivor = if leader_survives { leader } else { (1..=3).find(|id| *id != leader).expect("a follower") };
        let killed: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
        for id in &killed {
            cluster.replicas.get_mut(id).expect("replica").kill_9();
        }
        for attempt in 0..2 {
            let started = Instant::now();
            let (status, answer) =
                cluster.create_tenant(survivor, &format!("lonely-{leader_survives}-{attempt}")).await;
            let took = started.elapsed();
            assert_eq!((status, answer["code"].as_str()), (503, Some("no-quorum")), "{answer}");
            assert!(took < Duration::from_secs(4), "no-quorum took {took:?}");
            eprintln!("leader survives: {leader_survives}; no-quorum answered in {took:?}: {answer}");
        }
        cluster.restart(killed[0]);
        cluster.write_until_accepted(survivor, &format!("quorum-again-{leader_survives}")).await;
        cluster.restart(killed[1]);
        let leader = cluster.leader().await;
        cluster.caught_up(killed[1], leader).await;
    }
    let leader = cluster.leader().await;
    let second = (1..=3).find(|id| *id != leader).expect("a follower");

    // SIGTERM stops a replica cleanly.
    let mut child = cluster.replicas.get_mut(&second).expect("replica").child.take().expect("running");
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill runs");
    assert!(status.success());
    assert!(child.wait().expect("exits").success(), "a replica exits 0 on SIGTERM");
}
