//! The per-token rate limit: a token bucket per token id, holding up to
//! `requests` and refilled at `requests / per`. Time is passed in, so the
//! arithmetic is tested without waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::RateLimit;

#[derive(Debug)]
pub(crate) struct Limiter {
    capacity: f64,
    /// Requests regained per second.
    refill: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        let capacity = f64::from(limit.requests.max(1));
        let secs = limit.per.as_secs_f64();
        Limiter {
            capacity,
            refill: if secs > 0.0 {
                capacity / secs
            } else {
                f64::INFINITY
            },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says in how many whole
    /// seconds (at least 1) the next one is allowed.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.refill.is_infinite() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.refill).min(self.capacity);
        bucket.at = now;
        // The tolerance absorbs rounding in the refill arithmetic.
        if bucket.tokens >= 1.0 - 1e-9 {
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.refill;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(requests: u32, secs: u64) -> Limiter {
        Limiter::new(RateLimit {
            requests,
            per: Duration::from_secs(secs),
        })
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_then_waits_for_the_refill() {
        let l = limiter(3, 60);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        assert_eq!(l.check("a", t0), Err(20));
        assert_eq!(l.check("a", t0 + Duration::from_secs(15)), Err(5));
        assert_eq!(l.check("a", t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn tokens_are_limited_separately() {
        let l = limiter(1, 900);
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Ok(()));
        assert!(l.check("a", t0).is_err());
        assert_eq!(l.check("b", t0), Ok(()));
    }

    #[test]
    fn the_default_allows_a_request_every_0_9_seconds_after_the_burst() {
        let l = Limiter::new(RateLimit::default());
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
        assert_eq!(l.check("a", t0), Err(1));
        assert_eq!(l.check("a", t0 + Duration::from_millis(900)), Ok(()));
    }

    #[test]
    fn zero_requests_or_zero_period_do_not_panic() {
        let t0 = Instant::now();
        assert_eq!(limiter(0, 60).check("a", t0), Ok(()));
        let l = limiter(1, 0);
        for _ in 0..5 {
            assert_eq!(l.check("a", t0), Ok(()));
        }
    }
}
