//! Test support: a real S3 endpoint (and SQS on the same server) for tests and benchmarks.
//!
//! `WEIR_TEST_S3_ENDPOINT` names an endpoint to use (with `WEIR_TEST_S3_BUCKET`, an existing
//! bucket; otherwise buckets are created with an unsigned request, as moto and other local
//! emulators accept). Without it, the first caller starts `python3 -m moto.server` on a free
//! loopback port, once per process; the server dies with the process (`PR_SET_PDEATHSIG`).
//! If no endpoint can be had, callers panic with what to install: tests fail, never skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::location::{S3Options, StateLocation};

const INSTALL_HINT: &str = "install moto with `python3 -m pip install 'moto[server]>=5.2.1'` \
     (scripts/test.sh does), or set WEIR_TEST_S3_ENDPOINT to an S3-compatible endpoint";

static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
static NEXT_BUCKET: AtomicU64 = AtomicU64::new(0);

/// The S3 endpoint URL for tests, starting moto if needed. Panics (failing the test) if there
/// is none.
pub fn s3_endpoint() -> String {
    try_s3_endpoint().unwrap_or_else(|e| panic!("no S3 endpoint for the tests: {e}; {INSTALL_HINT}"))
}

/// The S3 endpoint URL, starting moto if needed; an error says why there is none.
pub fn try_s3_endpoint() -> Result<String, String> {
    ENDPOINT
        .get_or_init(|| match std::env::var("WEIR_TEST_S3_ENDPOINT") {
            Ok(url) if !url.is_empty() => Ok(url.trim_end_matches('/').to_string()),
            _ => start_moto(),
        })
        .clone()
}

/// The S3 settings for the test endpoint (moto accepts any credentials).
pub fn s3_options() -> S3Options {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    S3Options {
        endpoint: Some(s3_endpoint()),
        region: Some(env("AWS_REGION").unwrap_or_else(|| "us-east-1".into())),
        access_key_id: Some(env("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "test".into())),
        secret_access_key: Some(env("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into())),
        session_token: None,
    }
}

/// A fresh, empty S3 location for one test: a new bucket named after the test (or a new
/// prefix in `WEIR_TEST_S3_BUCKET`).
pub fn s3_location(test: &str) -> StateLocation {
    let options = s3_options();
    let endpoint = options.endpoint.clone().expect("s3_options sets the endpoint");
    let unique = format!("{}-{}", std::process::id(), NEXT_BUCKET.fetch_add(1, Ordering::Relaxed));
    let url = match std::env::var("WEIR_TEST_S3_BUCKET") {
        Ok(bucket) if !bucket.is_empty() => format!("s3://{bucket}/weir-tests/{test}-{unique}"),
        _ => {
            let mut name: String = test
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
                .take(40)
                .collect();
            name = format!("weir-{}-{unique}", name.trim_matches('-'));
            if let Err(e) = create_bucket(&endpoint, &name) {
                panic!("cannot create bucket `{name}` at {endpoint}: {e}; {INSTALL_HINT}");
            }
            format!("s3://{name}/state")
        }
    };
    StateLocation::parse_with(&url, &options).unwrap_or_else(|e| panic!("test location `{url}`: {e}"))
}

fn host_port(endpoint: &str) -> Result<&str, String> {
    endpoint
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .ok_or_else(|| format!("endpoint `{endpoint}` is not http://host:port"))
}

/// One HTTP/1.1 request without a body; returns the status code.
fn http_request(endpoint: &str, method: &str, path: &str) -> Result<u16, String> {
    let host = host_port(endpoint)?;
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect to {host}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send to {host}: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read from {host}: {e}"))?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("unexpected answer from {host}: {head:?}"))
}

fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    match http_request(endpoint, "PUT", &format!("/{bucket}"))? {
        200 => Ok(()),
        status => Err(format!("PUT /{bucket} answered {status}")),
    }
}

fn start_moto() -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    // PR_SET_PDEATHSIG fires when the *thread* that started the child exits, so the child is
    // started from a thread that lives as long as the process.
    std::thread::Builder::new()
        .name("weir-test-moto".into())
        .spawn(move || {
            let started = spawn_moto_with_retries();
            let child = match started {
                Ok((child, url)) => {
                    let _ = tx.send(Ok(url));
                    child
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _keep = child;
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start the moto thread: {e}"))?;
    rx.recv().map_err(|_| "the moto thread died".to_string())?
}

fn spawn_moto_with_retries() -> Result<(Child, String), String> {
    let mut last_error = String::new();
    // A free port can be taken between probing and binding it: try a few.
    for _ in 0..3 {
        match spawn_moto() {
            Ok(started) => return Ok(started),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn spawn_moto() -> Result<(Child, String), String> {
    let port =
        TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))?.port();
    let python = std::env::var("WEIR_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let log_path = std::env::temp_dir().join(format!("weir-moto-{}-{port}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(&python);
    command
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            let parent = libc::getpid();
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run `{python} -m moto.server`: {e}"))?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(format!("`{python} -m moto.server` exited with {status}: {tail}"));
        }
        if http_request(&url, "GET", "/").is_ok() {
            return Ok((child, url));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("moto did not answer on {url} within 60 s (log: {})", log_path.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An SQS client for the test endpoint (moto serves SQS beside S3), and a fresh queue named
/// after the test; answers the client and the queue's URL.
pub async fn sqs_queue(test: &str) -> (aws_sdk_sqs::Client, String) {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let options = s3_options();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(s3_endpoint())
        .region(Region::new(options.region.unwrap_or_else(|| "us-east-1".into())))
        .credentials_provider(Credentials::new(
            options.access_key_id.unwrap_or_default(),
            options.secret_access_key.unwrap_or_default(),
            None,
            None,
            "test",
        ))
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    let name: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(40).collect();
    let name = format!("weir-{name}-{}-{}", std::process::id(), NEXT_BUCKET.fetch_add(1, Ordering::Relaxed));
    let created = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create queue `{name}`: {e:?}; {INSTALL_HINT}"));
    let url = created.queue_url().unwrap_or_else(|| panic!("no URL for queue `{name}`")).to_string();
    (client, url)
}
