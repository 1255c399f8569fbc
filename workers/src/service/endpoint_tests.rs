//! A worker's task endpoint over real HTTP: every route, asked wrongly in each way a caller can
//! (no credential, a wrong one, a malformed body, an attempt it does not run, a route that does
//! not exist), answers a problem+json whose code is in the one error table, with the table's
//! status; a deploy of a script that does not plan is refused as `invalid-sql`, not retried as a
//! transient fault.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use weir_dataflow::auth::{ClusterKey, KeyPurpose};
use weir_dataflow::wire::{self, ErrorCode, PROBLEM_CONTENT_TYPE};

use crate::service::parts::{COMPLETE_PATH, REPORT_PATH, TRIGGER_PATH};
use crate::service::{BoundWorker, WorkerConfig};

const ROOT: &str = "cluster-secret-for-tests-0123456789";

/// The worker key of the root secret above, as `weir key worker` prints it.
fn key() -> ClusterKey {
    ClusterKey::derive(ROOT, KeyPurpose::Worker).expect("long enough")
}

/// A worker whose control plane is nowhere (its heartbeats fail, which is fine here).
async fn worker() -> (String, tokio::sync::oneshot::Sender<()>) {
    let state = tempfile::tempdir().expect("a temporary folder");
    let config = WorkerConfig {
        control_planes: vec!["http://127.0.0.1:9".into()],
        slots: 2,
        managed_memory: crate::runtime::ManagedMemory { bytes: 64 << 20 },
        listen: "127.0.0.1:0".into(),
        tls: None,
        plaintext: weir_net::Plaintext::LoopbackOnly,
        transport: weir_net::Transport::Plain,
        state_dir: state.path().display().to_string(),
        key: key(),
    };
    let worker = BoundWorker::bind(config).await.expect("the worker binds");
    let address = worker.address().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _state = state;
        worker.serve(async move { drop(stopped.await) }).await;
    });
    (format!("http://{address}"), stop)
}

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    fn assert_from_the_table(&self) {
        assert_eq!(self.content_type, PROBLEM_CONTENT_TYPE, "{}", self.body);
        let code = ErrorCode::parse(self.code()).unwrap_or_else(|| panic!("{} is not in the table", self.body));
        assert_eq!(self.status, code.http_status(), "{}", self.body);
        assert_eq!(self.body["status"], self.status);
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", self.body);
    }
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>, body: &str) -> Answer {
    let mut request = client.post(url).header("content-type", "application/json").body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the worker answers");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = response.text().await.expect("a body");
    Answer { status, content_type, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_the_task_endpoint_comes_from_the_error_table() {
    let (base, _stop) = worker().await;
    let client = reqwest::Client::new();
    let unknown = json!({ "job": "job-x", "attempt": 3 });
    let well_formed = [
        (
            wire::DEPLOY_PATH,
            json!({ "attempt": unknown, "tenant": "acme", "sql": "SELEC 1", "parallelism": 1, "restore": { "kind": "nothing" }, "state_dir": null }),
        ),
        (wire::CANCEL_PATH, unknown.clone()),
        (wire::SAVEPOINT_PATH, json!({ "attempt": unknown, "stop": false })),
        (TRIGGER_PATH, json!({ "attempt": unknown, "checkpoint": 1 })),
        (COMPLETE_PATH, json!({ "attempt": unknown, "checkpoint": 1 })),
        (REPORT_PATH, json!({ "attempt": unknown, "report": { "kind": "decline", "checkpoint": 1, "reason": "no" } })),
        ("/no/such/route", json!({})),
    ];
    let mut seen = BTreeSet::new();
    for (path, body) in &well_formed {
        let url = format!("{base}{path}");
        // The root secret itself is refused: workers take only the key derived from it.
        for token in [None, Some("not-the-secret"), Some(ROOT)] {
            let answer = post(&client, &url, token, &body.to_string()).await;
            answer.assert_from_the_table();
            seen.insert(answer.code().to_owned());
        }
        for malformed in ["{", "[]", "{\"attempt\": 5}"] {
            let answer = post(&client, &url, Some(key().reveal()), malformed).await;
            answer.assert_from_the_table();
            seen.insert(answer.code().to_owned());
        }
        let answer = post(&client, &url, Some(key().reveal()), &body.to_string()).await;
        if answer.status >= 400 {
            answer.assert_from_the_table();
            seen.insert(answer.code().to_owned());
        }
    }
    for code in ["unauthorized", "invalid-request", "unknown-attempt", "not-found", "invalid-sql"] {
        assert!(seen.contains(code), "{code} not met; met {seen:?}");
    }
    let refused =
        post(&client, &format!("{base}{}", wire::DEPLOY_PATH), Some(key().reveal()), &well_formed[0].1.to_string())
            .await;
    assert_eq!(refused.code(), "invalid-sql", "{}", refused.body);
    assert!(!ErrorCode::InvalidSql.retryable());
}
