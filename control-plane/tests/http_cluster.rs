//! Replicas in one test process talking real HTTP on loopback: bootstrap, writes and reads
//! through a follower, membership changes over the internal endpoints (which take the peer key
//! and are not served on the API listener), bad RPC bodies, and a single replica restarting from
//! its disk. (Killing processes: the root `tests/control_plane.rs`.)

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_control_plane::handle::{ProposeError, ReplicaHandle};
use weir_control_plane::metadata::Command;
use weir_control_plane::metadata::Response;
use weir_control_plane::metadata::ids::{ReplicaId, TenantId, UnixMillis};
use weir_control_plane::node::{InternalConfig, NodeError, Replica, ReplicaConfig};
use weir_dataflow::auth::{ClusterKey, KeyPurpose};

const WAIT: Duration = Duration::from_secs(10);

/// A loopback address with a port free right now (another process may still take it: starting
/// a replica retries with new ports when binding fails).
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local address").to_string()
}

fn create_tenant(name: &str) -> Command {
    Command::CreateTenant { tenant: TenantId::from(name), display_name: name.into(), at: UnixMillis(1) }
}

fn has_tenant(handle: &dyn ReplicaHandle, name: &str) -> bool {
    handle.reader().read(|state| state.tenant(&TenantId::from(name)).is_some())
}

const ROOT: &str = "http-cluster-root-secret-0123456789";

fn key(purpose: KeyPurpose) -> ClusterKey {
    ClusterKey::derive(ROOT, purpose).expect("long enough")
}

/// Starts replica `id` with its internal listener on `internal` (its API on any free port).
async fn start(
    id: u64,
    internal: &str,
    peers: &BTreeMap<ReplicaId, String>,
    data: &Path,
) -> Result<Replica, NodeError> {
    let mut config = ReplicaConfig::new(ReplicaId(id), "127.0.0.1:0", data.join(id.to_string()));
    config.internal = Some(InternalConfig::plain(internal, key(KeyPurpose::Peer)));
    config.peers = peers.clone();
    let mut replica = Replica::start(config).await?;
    replica.serve(axum::Router::new(), axum::Router::new())?;
    Ok(replica)
}

/// Sends only the headers of a POST to `path` declaring a body of `length` bytes, and answers
/// the status line and headers the server sends back without the body.
async fn declaring_a_body(base: &str, path: &str, length: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    let head = format!("POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("sends the headers");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(WAIT, stream.read(&mut answer)).await.expect("answered without the body");
    String::from_utf8_lossy(&answer[..read.expect("reads")]).into_owned()
}

/// A client presenting the peer key, as replicas do.
fn peer_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = key(KeyPurpose::Peer).bearer().parse().expect("a header value");
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    reqwest::Client::builder().default_headers(headers).build().expect("a client")
}

/// Starts replicas `ids` as one fresh cluster on free ports.
async fn start_cluster(ids: &[u64], data: &Path) -> BTreeMap<ReplicaId, Replica> {
    for _attempt in 0..5 {
        let peers: BTreeMap<ReplicaId, String> = ids.iter().map(|id| (ReplicaId(*id), free_address())).collect();
        let mut replicas = BTreeMap::new();
        for (id, address) in &peers {
            match start(id.0, address, &peers, data).await {
                Ok(replica) => {
                    replicas.insert(*id, replica);
                }
                Err(error @ NodeError::Listen { .. }) => {
                    eprintln!("port taken, trying others: {error}");
                    break;
                }
                Err(error) => panic!("replica {id} does not start: {error}"),
            }
        }
        if replicas.len() == peers.len() {
            return replicas;
        }
        for (_, replica) in replicas {
            replica.shutdown().await.expect("shuts down");
        }
        std::fs::remove_dir_all(data).ok();
    }
    panic!("no free ports after 5 attempts");
}

/// Waits until every replica names the same leader.
async fn agreed_leader(replicas: &BTreeMap<ReplicaId, Replica>) -> ReplicaId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leaders: Vec<Option<ReplicaId>> = replicas.values().map(|r| r.handle().cluster().leader).collect();
        if let Some(Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*leader))
        {
            return *leader;
        }
        assert!(tokio::time::Instant::now() < deadline, "no agreed leader within {WAIT:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_over_http_forward_writes_serve_linearizable_reads_and_change_members() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut replicas = start_cluster(&[1, 2, 3], data.path()).await;
    let leader = agreed_leader(&replicas).await;
    let follower = *replicas.keys().find(|id| **id != leader).expect("a follower");
    let follower_handle: Arc<dyn ReplicaHandle> = replicas[&follower].handle();
    assert!(!follower_handle.is_leader());
    assert!(replicas[&leader].handle().is_leader());

    // A write proposed on a follower is forwarded to the leader; a read synced on another
    // follower sees it.
    assert_eq!(follower_handle.propose(create_tenant("acme")).await, Ok(Response::Done));
    let duplicate = follower_handle.propose(create_tenant("acme")).await.expect("answered");
    assert!(matches!(duplicate, Response::Rejected(ref r) if r.code() == "tenant-exists"), "{duplicate:?}");
    for replica in replicas.values() {
        let handle = replica.handle();
        handle.sync_reads().await.expect("linearizable read point");
        assert!(has_tenant(handle.as_ref(), "acme"), "{} sees the write after sync_reads", replica.id());
    }
    let view = follower_handle.cluster();
    assert_eq!(view.id, follower);
    assert_eq!(view.leader, Some(leader));
    assert!(view.term >= 1);
    assert_eq!(view.members.len(), 3);
    assert!(view.members.iter().all(|m| m.voter && m.address.starts_with("127.0.0.1:")));
    assert!(view.last_applied.is_some());

    // Without the peer key (none, another key, the root secret itself) every internal route is
    // 401 before its body is read; the API listener serves none of them. With the key, malformed
    // RPC bodies are answered 400, and the replica carries on.
    let anonymous = reqwest::Client::new();
    let client = peer_client();
    let base = format!("http://{}", replicas[&follower].internal_addr().expect("an internal listener"));
    let api = format!("http://{}", replicas[&follower].local_addr());
    let wrong = [None, Some(key(KeyPurpose::Worker).bearer()), Some(format!("Bearer {ROOT}"))];
    let posts = ["/raft/append", "/raft/vote", "/raft/pre-vote", "/raft/snapshot", "/raft/propose", "/raft/members"];
    for path in posts.iter().chain(&["/raft/read-index"]) {
        for bearer in &wrong {
            let mut request = anonymous.post(format!("{base}{path}")).body("{}");
            if let Some(bearer) = bearer {
                request = request.header("authorization", bearer);
            }
            let answer = request.send().await.expect("answers");
            assert_eq!(answer.status(), 401, "{path} with {bearer:?}");
        }
        let answer = client.post(format!("{api}{path}")).json(&create_tenant("evil")).send().await.expect("answers");
        assert_eq!(answer.status(), 404, "{path} on the API listener");
    }
    // A request that declares a snapshot-sized body is refused from its headers alone: nothing
    // of the body is awaited or read before the caller is known.
    let declared = declaring_a_body(&base, "/raft/snapshot", 1 << 30).await;
    assert!(declared.starts_with("HTTP/1.1 401"), "{declared}");
    for path in ["/raft/cluster", "/raft/jobs/job-1/live"] {
        assert_eq!(anonymous.get(format!("{base}{path}")).send().await.expect("answers").status(), 401, "{path}");
    }
    let answer = anonymous.delete(format!("{base}/raft/members/2")).send().await.expect("answers");
    assert_eq!(answer.status(), 401);
    assert!(!has_tenant(replicas[&leader].handle().as_ref(), "evil"));
    for path in posts {
        let answer = client.post(format!("{base}{path}")).body("{not json").send().await.expect("answers");
        assert_eq!(answer.status(), 400, "{path}");
    }
    let answer = client.delete(format!("{base}/raft/members/not-a-number")).send().await.expect("answers");
    assert_eq!(answer.status(), 400);

    // The internal propose endpoint, on a follower, forwards too.
    let answer =
        client.post(format!("{base}/raft/propose")).json(&create_tenant("globex")).send().await.expect("answers");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<Response>().await.expect("a response"), Response::Done);

    // A new replica joins: it is not among the peers, so it waits; adding it through a follower
    // makes it a learner, then a voter, and it receives the metadata.
    let newcomer_address = free_address();
    let peers: BTreeMap<ReplicaId, String> =
        replicas.values().map(|r| (r.id(), r.internal_addr().expect("internal").to_string())).collect();
    let newcomer = start(4, &newcomer_address, &peers, data.path()).await.expect("replica 4 starts");
    let view =
        replicas[&follower].add_member(ReplicaId(4), newcomer_address.clone()).await.expect("replica 4 is added");
    assert!(view.members.iter().any(|m| m.id == ReplicaId(4) && m.voter), "{view:?}");
    let newcomer_handle = newcomer.handle();
    newcomer_handle.sync_reads().await.expect("the newcomer syncs");
    assert!(has_tenant(newcomer_handle.as_ref(), "globex"));
    replicas.insert(ReplicaId(4), newcomer);

    // Remove a follower over HTTP, sent to the newcomer (a follower: forwarded to the leader).
    let removed = *replicas.keys().find(|id| **id != leader && **id != ReplicaId(4)).expect("another follower");
    let answer =
        client.delete(format!("http://{newcomer_address}/raft/members/{}", removed.0)).send().await.expect("answers");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    replicas.remove(&removed).expect("running").shutdown().await.expect("shuts down");
    let view = replicas[&leader].handle().cluster();
    assert_eq!(view.members.iter().filter(|m| m.voter).count(), 3, "{view:?}");
    assert!(view.members.iter().all(|m| m.id != removed));
    // Three voters left, all running: writes go on.
    assert_eq!(newcomer_handle.propose(create_tenant("initech")).await, Ok(Response::Done));

    for (_, replica) in replicas {
        replica.shutdown().await.expect("shuts down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_replica_initializes_alone_and_restarts_from_its_disk() {
    let data = tempfile::tempdir().expect("temp dir");
    let alone = BTreeMap::new();
    let replica = start(1, "127.0.0.1:0", &alone, data.path()).await.expect("starts");
    let handle = replica.handle();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !handle.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "a replica alone leads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handle.propose(create_tenant("acme")).await, Ok(Response::Done));
    drop(handle);
    replica.shutdown().await.expect("shuts down");

    // Same flags again: already initialized, so no second bootstrap; the tenant is still there.
    // openraft's tasks release the store a moment after shutdown: retry the open briefly.
    let deadline = tokio::time::Instant::now() + WAIT;
    let replica = loop {
        match start(1, "127.0.0.1:0", &alone, data.path()).await {
            Ok(replica) => break replica,
            Err(error @ NodeError::Store(_)) if tokio::time::Instant::now() < deadline => {
                eprintln!("store not released yet: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("restart fails: {error}"),
        }
    };
    let handle = replica.handle();
    handle.sync_reads().await.expect("the restarted replica leads again");
    assert!(has_tenant(handle.as_ref(), "acme"));
    assert_eq!(handle.propose(create_tenant("globex")).await, Ok(Response::Done));
    drop(handle);
    replica.shutdown().await.expect("shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_to_join_answers_writes_with_no_quorum_in_bounded_time() {
    // Peers that do not include this replica: it waits to be added and never learns of a leader.
    let data = tempfile::tempdir().expect("temp dir");
    let peers = BTreeMap::from([(ReplicaId(1), free_address())]);
    let replica = start(2, "127.0.0.1:0", &peers, data.path()).await.expect("starts");
    let handle = replica.handle();
    let started = std::time::Instant::now();
    let error = handle.propose(create_tenant("acme")).await.expect_err("no leader");
    assert!(matches!(error, ProposeError::NoQuorum(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    let error = handle.sync_reads().await.expect_err("no leader");
    assert!(matches!(error, ProposeError::NoQuorum(_)), "{error}");
    drop(handle);
    replica.shutdown().await.expect("shuts down");
}
