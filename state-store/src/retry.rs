//! Bounded retries with exponential backoff for the store's own object-store calls (checkpoint
//! metadata). SlateDB retries its calls itself (`object_store_max_retries`).

use std::future::Future;
use std::time::Duration;

use slatedb::object_store;
use tracing::warn;

/// Attempts of one metadata call, including the first.
pub const MAX_ATTEMPTS: u32 = 6;
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Whether an object-store error may go away by itself. Answers about the object (absent,
/// exists, precondition failed) and misconfiguration never do.
pub fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        error,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::NotSupported { .. }
            | E::InvalidPath { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// Runs `call` until it succeeds, fails with a non-transient error, or `MAX_ATTEMPTS` ran out.
/// Returns the last result and whether any earlier attempt failed (so a create-only put that
/// reports "already exists" after a retry can check whether its own first attempt landed).
pub async fn with_backoff<T, F, Fut>(what: &str, mut call: F) -> (Result<T, object_store::Error>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, object_store::Error>>,
{
    let mut delay = FIRST_DELAY;
    let mut retried = false;
    for attempt in 1..=MAX_ATTEMPTS {
        match call().await {
            Err(e) if is_transient(&e) && attempt < MAX_ATTEMPTS => {
                warn!(what, attempt, error = %e, "transient object store error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
                retried = true;
            }
            result => return (result, retried),
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_a_bounded_number_of_times() {
        let calls = AtomicU32::new(0);
        let (result, retried) = with_backoff("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(object_store::Error::Generic { store: "t", source: "flaky".into() })
        })
        .await;
        assert!(result.is_err() && retried);
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS);

        let calls = AtomicU32::new(0);
        let (result, retried) = with_backoff("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(object_store::Error::NotFound { path: "p".into(), source: "gone".into() })
        })
        .await;
        assert!(result.is_err() && !retried);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "answers are not retried");
    }
}
