//! How fast each tenant may submit jobs: a token bucket per tenant, refilled at the tenant's
//! `submissions_per_minute` and holding at most its [`Quota::submission_burst`].
//!
//! This is soft state of one replica, not replicated: each replica limits what reaches it, so a
//! tenant spreading its submissions over three replicas gets up to three times the rate. That is
//! enough for what the limit is for — keeping one tenant from monopolising the planner and the
//! Raft log of a replica — and needs no write per request. The quotas that must hold
//! cluster-wide (running jobs, task slots) are checked where the jobs are counted, in the
//! replicated metadata. Every submission counts, a refused one too: planning it is the cost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metadata::ids::TenantId;
use crate::metadata::records::Quota;

/// Tokens of one tenant: a submission takes one; they come back at the tenant's rate.
#[derive(Clone, Copy, Debug)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(burst: u32, now: Instant) -> Self {
        TokenBucket { tokens: f64::from(burst), updated: now }
    }

    /// Takes a token at `now`, with the bucket refilled at `per_minute` up to `burst` since it
    /// was last used. With none left, answers how long until one is back.
    fn take(&mut self, now: Instant, per_minute: u32, burst: u32) -> Result<(), Duration> {
        let per_second = f64::from(per_minute.max(1)) / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
        }
    }
}

/// The buckets of every tenant that submitted to this replica.
#[derive(Default)]
pub(crate) struct SubmissionLimiter {
    // Tenants are created by the operator only, so the map stays small.
    buckets: Mutex<HashMap<TenantId, TokenBucket>>,
}

impl SubmissionLimiter {
    /// Admits one submission of `tenant` at `now` under `quota`, or answers how long to wait.
    pub(crate) fn admit(&self, tenant: &TenantId, quota: Quota, now: Instant) -> Result<(), Duration> {
        let burst = quota.submission_burst();
        // A bucket is plain arithmetic: a panic elsewhere cannot leave one torn.
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(tenant.clone()).or_insert_with(|| TokenBucket::full(burst, now));
        bucket.take(now, quota.submissions_per_minute, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_minute: u32) -> Quota {
        Quota { submissions_per_minute: per_minute, ..Quota::default() }
    }

    #[test]
    fn a_burst_passes_then_submissions_wait_for_the_rate() {
        let limiter = SubmissionLimiter::default();
        let (acme, globex) = (TenantId::from("acme"), TenantId::from("globex"));
        let start = Instant::now();
        // 60 a minute: a burst of 10, then one a second.
        for _ in 0..10 {
            assert_eq!(limiter.admit(&acme, quota(60), start), Ok(()));
        }
        let wait = limiter.admit(&acme, quota(60), start).expect_err("the burst is spent");
        assert!((Duration::from_millis(999)..=Duration::from_secs(1)).contains(&wait), "{wait:?}");
        assert_eq!(limiter.admit(&globex, quota(60), start), Ok(()), "buckets are per tenant");
        let later = start + Duration::from_millis(1500);
        assert_eq!(limiter.admit(&acme, quota(60), later), Ok(()));
        let wait = limiter.admit(&acme, quota(60), later).expect_err("half a token left");
        assert!((Duration::from_millis(499)..=Duration::from_millis(500)).contains(&wait), "{wait:?}");
        // A quiet spell refills the burst, never more.
        let quiet = later + Duration::from_secs(3600);
        let admitted = (0..100).take_while(|_| limiter.admit(&acme, quota(60), quiet).is_ok()).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn bursts_are_ten_seconds_of_the_rate_and_at_least_one() {
        assert_eq!([1, 6, 7, 60, 6000].map(|rate| quota(rate).submission_burst()), [1, 1, 2, 10, 1000]);
        let limiter = SubmissionLimiter::default();
        let (tenant, start) = (TenantId::from("slow"), Instant::now());
        assert_eq!(limiter.admit(&tenant, quota(1), start), Ok(()));
        let wait = limiter.admit(&tenant, quota(1), start).expect_err("one a minute");
        assert!((Duration::from_secs(59)..=Duration::from_secs(60)).contains(&wait), "{wait:?}");
    }
}
