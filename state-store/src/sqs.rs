//! Compaction work items on Amazon SQS: tasks send them ([`SqsQueue`], a [`CompactionQueue`]),
//! `weir compactor` processes take them ([`serve`]).
//!
//! A work item is `{"location": "<state.checkpoints.dir>", "db": "<database path>"}`. A compactor
//! takes only items whose location lies under one of the state folders it was started with, and
//! whose database lies under that location: a queue cannot point it anywhere else. An item is
//! deleted once its compaction ran; while it runs, the compactor keeps the item invisible to
//! others, so a compactor killed mid-way lets the item come back to another after the visibility
//! timeout (SlateDB fences the dead one's unfinished work). An item that failed
//! [`MAX_RECEIVES`] times is dropped with an error in the log (a task asks again while its
//! database needs it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde::{Deserialize, Serialize};
use slatedb::object_store::path::Path;
use tracing::{debug, error, info, warn};

use crate::compaction::{self, CompactionQueue, CompactorSettings};
use crate::error::{Result, StateError};
use crate::location::{S3Options, StateLocation};

/// Receives after which a failing item is dropped.
pub const MAX_RECEIVES: u32 = 5;

/// One request for a compaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The job's state location (`state.checkpoints.dir`).
    pub location: String,
    /// The database's path inside the location's store.
    pub db: String,
}

/// How to reach SQS: `AWS_ENDPOINT_URL_SQS` (or `AWS_ENDPOINT_URL`), `AWS_REGION` (or
/// `AWS_DEFAULT_REGION`), and credentials from the environment, as the S3 settings are taken.
pub async fn client_from_env() -> Client {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let s3 = S3Options::from_env();
    let mut config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(s3.region.clone().unwrap_or_else(|| "us-east-1".into())));
    if let Some(endpoint) = env("AWS_ENDPOINT_URL_SQS").or_else(|| env("AWS_ENDPOINT_URL")) {
        config = config.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (s3.access_key_id, s3.secret_access_key) {
        config = config.credentials_provider(Credentials::new(id, secret, s3.session_token, None, "environment"));
    }
    Client::new(&config.load().await)
}

fn sqs_error(what: &str, e: impl std::error::Error) -> StateError {
    // The SDK's Display is terse; its source chain says what went wrong.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    StateError::Compaction(format!("{what}: {text}"))
}

/// Tasks' side: sends a work item per request.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    /// Made on the first request, on the runtime of the task that made it.
    client: Arc<tokio::sync::OnceCell<Client>>,
    url: String,
}

impl SqsQueue {
    /// A queue whose client is configured from the environment ([`client_from_env`]).
    pub fn from_env(url: impl Into<String>) -> SqsQueue {
        SqsQueue { client: Arc::new(tokio::sync::OnceCell::new()), url: url.into() }
    }

    pub fn new(client: Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue { client: Arc::new(tokio::sync::OnceCell::new_with(Some(client))), url: url.into() }
    }

    /// Sends one work item and waits for SQS to take it.
    pub async fn send(&self, item: &WorkItem) -> Result<()> {
        let body = serde_json::to_string(item).map_err(|e| StateError::Compaction(e.to_string()))?;
        let client = self.client.get_or_init(client_from_env).await;
        let mut send = client.send_message().queue_url(&self.url).message_body(body);
        if self.url.ends_with(".fifo") {
            // One database's items in order, never two at once; repeats within SQS's five-minute
            // window of the same request interval dropped.
            let interval =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() / 5;
            let id = weir_dataflow::keygroup::stable_hash(item.db.as_bytes());
            send =
                send.message_group_id(format!("{id:016x}")).message_deduplication_id(format!("{id:016x}-{interval}"));
        }
        send.send().await.map_err(|e| sqs_error("sending a compaction request", e))?;
        Ok(())
    }
}

impl CompactionQueue for SqsQueue {
    fn request(&self, location: &StateLocation, db: &Path) {
        let item = WorkItem { location: location.url().to_string(), db: db.to_string() };
        let queue = self.clone();
        // Never blocks the task: a request that fails is logged, and asked again later.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = queue.send(&item).await {
                        warn!(db = %item.db, error = %e, "a compaction request was not sent");
                    }
                });
            }
            Err(_) => warn!(db = %item.db, "a compaction request outside a runtime was dropped"),
        }
    }

    fn ask_again_after(&self) -> Duration {
        // A compactor renews its item while it works, so a database asked for again sooner than
        // it could finish would only pile up items (and on a standard queue, a second compactor
        // taking one would fence the first).
        Duration::from_secs(15)
    }
}

/// A `weir compactor`'s settings.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub queue_url: String,
    /// The state folders (`state.checkpoints.dir` values, or a folder above them) whose
    /// databases this compactor may compact.
    pub allowed: Vec<String>,
    /// Work items compacted at once.
    pub concurrency: usize,
    /// How long a taken item stays invisible to other compactors; renewed while it runs.
    pub visibility_timeout: Duration,
    /// Longest wait of one receive (SQS long polling, at most 20 s).
    pub wait: Duration,
    pub compactor: CompactorSettings,
    pub s3: S3Options,
}

/// Whether `location` (a state folder URL) lies at or under `allowed`.
fn is_under(location: &str, allowed: &str) -> bool {
    let allowed = allowed.trim_end_matches('/');
    location == allowed || location.strip_prefix(allowed).is_some_and(|rest| rest.starts_with('/'))
}

/// Checks a work item against what the compactor may touch; answers the database's location
/// (opened once per location URL, kept in `opened`) and path.
fn admit(
    item: &WorkItem,
    settings: &ServeSettings,
    opened: &mut HashMap<String, StateLocation>,
) -> Result<(StateLocation, Path)> {
    if item.location.contains("/../") || item.location.ends_with("/..") {
        return Err(StateError::Compaction(format!("refused `{}`: `..` in the location", item.location)));
    }
    if !settings.allowed.iter().any(|a| is_under(&item.location, a)) {
        return Err(StateError::Compaction(format!(
            "refused `{}`: not under the compactor's state folders",
            item.location
        )));
    }
    let location = match opened.get(&item.location) {
        Some(location) => location.clone(),
        None => {
            let location = StateLocation::parse_with(&item.location, &settings.s3)?;
            opened.insert(item.location.clone(), location.clone());
            location
        }
    };
    let db = Path::parse(&item.db)
        .map_err(|e| StateError::Compaction(format!("refused database path `{}`: {e}", item.db)))?;
    let root = location.root().as_ref();
    if !root.is_empty() && !db.as_ref().starts_with(&format!("{root}/")) {
        return Err(StateError::Compaction(format!(
            "refused database `{}`: not inside its location `{}`",
            item.db, item.location
        )));
    }
    Ok((location, db))
}

/// Takes work items from the queue and compacts their databases until `stop` completes. Work
/// items being compacted then are left to come back to another compactor.
pub async fn serve(client: Client, settings: ServeSettings, stop: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(stop);
    let settings = Arc::new(settings);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
    let mut locations: HashMap<String, StateLocation> = HashMap::new();
    info!(queue = %settings.queue_url, allowed = ?settings.allowed, "compactor taking work");
    loop {
        // Wait for a free slot, so a taken item is never left waiting in this process.
        let permit = tokio::select! {
            _ = &mut stop => return Ok(()),
            permit = slots.clone().acquire_owned() => permit.map_err(|e| StateError::Compaction(e.to_string()))?,
        };
        let received = tokio::select! {
            _ = &mut stop => return Ok(()),
            received = client
                .receive_message()
                .queue_url(&settings.queue_url)
                .max_number_of_messages(1)
                .wait_time_seconds(settings.wait.as_secs().clamp(0, 20) as i32)
                .visibility_timeout(settings.visibility_timeout.as_secs().max(1) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send() => received,
        };
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %sqs_error("receiving", e), "cannot receive work items; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(message) = received.messages().first().cloned() else { continue };
        let Some(receipt) = message.receipt_handle().map(str::to_string) else { continue };
        let receives: u32 = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let admitted = serde_json::from_str::<WorkItem>(message.body().unwrap_or_default())
            .map_err(|e| StateError::Compaction(format!("not a work item: {e}")))
            .and_then(|item| admit(&item, &settings, &mut locations));
        let (location, db) = match admitted {
            Ok(found) => found,
            Err(e) => {
                // Never valid: drop it, so it does not come back.
                error!(error = %e, "dropped a work item");
                delete(&client, &settings.queue_url, &receipt).await;
                continue;
            }
        };
        let (client, settings) = (client.clone(), settings.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = {
                let work = compaction::compact(&location, &db, &settings.compactor);
                tokio::pin!(work);
                let mut renew = tokio::time::interval(settings.visibility_timeout / 3);
                renew.tick().await;
                loop {
                    tokio::select! {
                        outcome = &mut work => break outcome,
                        _ = renew.tick() => {
                            let renewed = client
                                .change_message_visibility()
                                .queue_url(&settings.queue_url)
                                .receipt_handle(&receipt)
                                .visibility_timeout(settings.visibility_timeout.as_secs().max(1) as i32)
                                .send()
                                .await;
                            if let Err(e) = renewed {
                                warn!(db = %db, error = %sqs_error("renewing", e), "cannot keep the work item");
                            }
                        }
                    }
                }
            };
            match outcome {
                Ok(done) => {
                    info!(db = %db, ?done, "compaction run ended");
                    delete(&client, &settings.queue_url, &receipt).await;
                }
                Err(e) if receives >= MAX_RECEIVES => {
                    error!(db = %db, error = %e, receives, "compaction failed too often; dropped the work item");
                    delete(&client, &settings.queue_url, &receipt).await;
                }
                Err(e) => warn!(db = %db, error = %e, receives, "compaction failed; the work item comes back"),
            }
        });
    }
}

async fn delete(client: &Client, queue_url: &str, receipt: &str) {
    if let Err(e) = client.delete_message().queue_url(queue_url).receipt_handle(receipt).send().await {
        debug!(error = %sqs_error("deleting", e), "a done work item was not deleted; it comes back and is a no-op");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allowed: &[&str]) -> ServeSettings {
        ServeSettings {
            queue_url: String::new(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            concurrency: 1,
            visibility_timeout: Duration::from_secs(30),
            wait: Duration::from_secs(1),
            compactor: CompactorSettings::default(),
            s3: S3Options::default(),
        }
    }

    #[test]
    fn a_work_item_is_admitted_only_inside_the_allowed_folders_and_its_location() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().to_string();
        let s = settings(&[&root]);
        let mut opened = HashMap::new();
        let item = |location: String, db: &str| WorkItem { location, db: db.to_string() };
        let job = format!("{root}/jobs");
        let location = StateLocation::parse(&job).unwrap();
        let db = format!("{}/j1/state/v1-s0-a1", location.root());
        assert!(admit(&item(job.clone(), &db), &s, &mut opened).is_ok());
        // Another folder, a sibling whose name only starts the same, a climb out.
        assert!(admit(&item("/etc".into(), "etc/passwd"), &s, &mut opened).is_err());
        assert!(admit(&item(format!("{root}-other"), &db), &s, &mut opened).is_err());
        assert!(admit(&item(format!("{root}/../x"), &db), &s, &mut opened).is_err());
        // A path that does not parse (a local location's store is its folder: any path that
        // parses lies inside it).
        assert!(admit(&item(job.clone(), "j1/../../x"), &s, &mut opened).is_err());
        // In a bucket, a database outside the item's own location.
        let s3 = ServeSettings {
            s3: S3Options { region: Some("us-east-1".into()), ..S3Options::default() },
            ..settings(&["s3://bucket/weir"])
        };
        let in_bucket = |db: &str| item("s3://bucket/weir/acme".into(), db);
        assert!(admit(&in_bucket("weir/acme/job/state/v1-s0-a1"), &s3, &mut opened).is_ok());
        assert!(admit(&in_bucket("weir/other/job/state/v1-s0-a1"), &s3, &mut opened).is_err());
        assert!(admit(&in_bucket("weir/acme-2/job/state/v1-s0-a1"), &s3, &mut opened).is_err());
        assert!(admit(&item("s3://other/weir".into(), "weir/job/state/v1"), &s3, &mut opened).is_err());
    }
}
