//! `GET /api/v1/metrics`: the replica in Prometheus' text format (0.0.4). A small hand-rolled
//! exposition rather than a metrics crate: the gauges are read from the metadata and the cluster
//! view at scrape time, and the only state kept is the API request counters.
//!
//! No token: scrapers rarely carry one, and nothing here names a tenant or a job (jobs are
//! counted by status over all tenants).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::metadata::records::JobStatus;

/// Every job status, so a scrape shows zeros rather than series that come and go.
const STATUSES: [JobStatus; 8] = [
    JobStatus::Created,
    JobStatus::Running,
    JobStatus::Failing,
    JobStatus::Restarting,
    JobStatus::Cancelling,
    JobStatus::Cancelled,
    JobStatus::Finished,
    JobStatus::Failed,
];

/// API requests by (route template, method, status class). Route templates, never raw paths:
/// a label per job id would grow without bound.
#[derive(Default)]
pub(crate) struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, String, &'static str), u64>>,
}

impl ApiMetrics {
    fn count(&self, route: String, method: String, status_class: &'static str) {
        // Counters only go up; a panic elsewhere cannot leave the map torn.
        let mut requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *requests.entry((route, method, status_class)).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(String, String, &'static str), u64> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Middleware counting every request by its matched route and the class of its answer.
pub(crate) async fn count_request(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status_class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state.metrics.count(route, method, status_class);
    response
}

/// Label values escaped as the text format requires.
fn label(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', r#"\""#).replace('\n', r"\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) async fn exposition(State(state): State<ApiState>) -> Response {
    let (jobs_by_status, workers, slots) = state.replica.reader().read(|metadata| {
        let mut jobs: BTreeMap<JobStatus, u64> = STATUSES.iter().map(|status| (*status, 0)).collect();
        for job in metadata.jobs() {
            *jobs.entry(job.status).or_default() += 1;
        }
        let slots: u64 = metadata.workers().map(|worker| u64::from(worker.slots)).sum();
        (jobs, metadata.workers().count(), slots)
    });
    let view = state.replica.cluster();
    let mut out = String::new();
    family(&mut out, "weir_jobs", "gauge", "Jobs in the replicated metadata, by status.");
    for (status, count) in &jobs_by_status {
        let _ = writeln!(out, "weir_jobs{{status=\"{}\"}} {count}", label(&status.to_string()));
    }
    family(&mut out, "weir_workers", "gauge", "Registered workers.");
    let _ = writeln!(out, "weir_workers {workers}");
    family(&mut out, "weir_worker_slots", "gauge", "Task slots of all registered workers.");
    let _ = writeln!(out, "weir_worker_slots {slots}");
    family(&mut out, "weir_raft_term", "gauge", "The Raft term this replica is in.");
    let _ = writeln!(out, "weir_raft_term {}", view.term);
    family(&mut out, "weir_raft_is_leader", "gauge", "1 if this replica is the Raft leader, else 0.");
    let _ = writeln!(out, "weir_raft_is_leader {}", u8::from(view.leader == Some(view.id)));
    family(&mut out, "weir_raft_has_leader", "gauge", "1 if this replica knows a leader, else 0.");
    let _ = writeln!(out, "weir_raft_has_leader {}", u8::from(view.leader.is_some()));
    family(&mut out, "weir_raft_last_applied_index", "gauge", "The last Raft log index applied to the metadata.");
    let _ = writeln!(out, "weir_raft_last_applied_index {}", view.last_applied.unwrap_or(0));
    family(&mut out, "weir_api_requests_total", "counter", "API requests answered, by route, method and status class.");
    for ((route, method, class), count) in state.metrics.snapshot() {
        let _ = writeln!(
            out,
            "weir_api_requests_total{{route=\"{}\",method=\"{}\",status_class=\"{class}\"}} {count}",
            label(&route),
            label(&method)
        );
    }
    let mut response = out.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
