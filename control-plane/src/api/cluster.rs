//! The cluster as this replica sees it: registered workers, Raft members, leader and term, and
//! the health probe.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use weir_dataflow::wire::ErrorCode;

use super::ApiState;
use super::auth::AnyCaller;
use super::problem::ApiError;

pub(crate) async fn workers(State(state): State<ApiState>, _caller: AnyCaller) -> Json<Value> {
    let workers: Vec<Value> = state.replica.reader().read(|metadata| metadata.workers().map(|w| json!(w)).collect());
    Json(json!({ "workers": workers }))
}

pub(crate) async fn cluster(State(state): State<ApiState>, _caller: AnyCaller) -> Json<Value> {
    Json(json!(state.replica.cluster()))
}

/// 200 when this replica knows a leader (it can serve reads, and forward writes), 503 with the
/// reason otherwise. No token: load balancers and orchestrators probe it.
pub(crate) async fn healthz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let view = state.replica.cluster();
    match view.leader {
        Some(leader) => Ok(Json(json!({
            "status": "ok",
            "replica": view.id,
            "leader": leader,
            "term": view.term,
        }))),
        None => Err(ApiError::new(
            ErrorCode::NoLeader,
            format!(
                "{} knows no leader in term {}: an election is under way or a majority of replicas is unreachable",
                view.id, view.term
            ),
        )),
    }
}
