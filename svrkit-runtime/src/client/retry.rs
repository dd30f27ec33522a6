//! Retries: only for methods the IDL marks `retry="idempotent"`, only after failures that
//! are safe to retry (no connection, `UNAVAILABLE`, `OVERLOADED` from a server, no answer
//! within the attempt's share of the deadline), at most `max_attempts` in all, each on
//! another replica where there is one, after a jittered exponential backoff, and only while
//! the channel's [`RetryBudget`] allows: so that a failing backend sees about 1.2 times its
//! normal rate, never `max_attempts` times.
//!
//! An attempt without an answer at the end of its share of the deadline is not abandoned: a
//! hedge starts beside it, and the first good answer wins (see [`Retrying::hedged`]).
//!
//! A call made while serving a retried request carries `no_retry` and is not retried itself
//! (the flag goes on down the chain); a failure that came from a downstream refusal, retried
//! there already, comes back with `no_retry` and is not retried either. Only the level right
//! above a failure retries, and a chain of services multiplies nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Call, CallFuture, Transport};
use crate::clock;
use crate::frame::Frame;
use crate::policy::budget::RetryBudget;
use crate::random;
use crate::service::Retry;
use crate::status::{Code, Status};

/// How a channel retries (`[client]` in the configuration file: `retry`,
/// `retry_budget_ratio`, `retry_min_per_second`, `retry_backoff_ms`,
/// `retry_max_backoff_ms`).
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Whether to retry at all (default: yes, for idempotent methods).
    pub enabled: bool,
    /// Retries allowed as a share of requests over ten seconds.
    pub budget_ratio: f64,
    /// Retries allowed per second besides, so that a quiet client can retry.
    pub min_per_second: f64,
    /// The first backoff's upper bound; each retry doubles it (the wait is uniform below it).
    pub backoff: Duration,
    /// The largest backoff bound.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            enabled: true,
            budget_ratio: 0.2,
            min_per_second: 10.0,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// The retry layer: what [`Channel::lazy`](super::Channel::lazy) puts above its pool.
pub(super) struct Retrying {
    pub(super) inner: Arc<dyn Transport>,
    pub(super) budget: RetryBudget,
    pub(super) config: RetryConfig,
}

impl Retrying {
    pub(super) fn new(inner: Arc<dyn Transport>, config: RetryConfig) -> Retrying {
        Retrying {
            budget: RetryBudget::new(config.budget_ratio, config.min_per_second),
            inner,
            config,
        }
    }

    /// The most attempts `call` may make.
    fn max_attempts(&self, call: &Call) -> u32 {
        match call.method.retry {
            Retry::Idempotent { max_attempts } if self.config.enabled && !call.header.no_retry => {
                u32::from(max_attempts.max(1))
            }
            _ => 1,
        }
    }

    /// The wait before retry number `retry` (1 for the first): uniform below a bound that
    /// doubles with each retry ("full jitter"), so retries of many callers spread out.
    fn backoff(&self, retry: u32) -> Duration {
        let bound = self
            .config
            .backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.config.max_backoff);
        bound.mul_f64(random::random_unit())
    }
}

/// Whether an attempt's result is a failure that is safe to try again: the server did not
/// run the call (`OVERLOADED`, `UNAVAILABLE` from it, unless it says the failure came from
/// further down, where it was retried already), or there was no server to run it (no
/// connection, a connection that broke). A local refusal (`OVERLOADED` without an answer: the
/// client's own overload control) is not retried.
fn retryable(result: &Result<Frame, Status>) -> bool {
    match result {
        Ok(frame) => Code(frame.header.status_code).is_refusal() && !frame.header.no_retry,
        Err(status) => status.code() == Code::UNAVAILABLE,
    }
}

impl Transport for Retrying {
    fn call<'a>(&'a self, call: &'a mut Call) -> CallFuture<'a> {
        let now = Instant::now();
        self.budget.deposit(clock::millis(now));
        let max_attempts = self.max_attempts(call);
        if max_attempts <= 1 {
            return self.inner.call(call);
        }
        Box::pin(async move {
            loop {
                let attempts_left = max_attempts - call.header.attempt;
                let result = if attempts_left > 1 {
                    self.hedged(call, attempts_left).await
                } else {
                    self.inner.call(call).await
                };
                if call.header.attempt + 1 >= max_attempts || !retryable(&result) {
                    return result;
                }
                let wait = self.backoff(call.header.attempt + 1);
                if Instant::now() + wait >= call.deadline
                    || !self.budget.withdraw(clock::millis(Instant::now()))
                {
                    return result;
                }
                tokio::time::sleep(wait).await;
                self.next_attempt(call);
            }
        })
    }
}

impl Retrying {
    /// One attempt that gets its share of the time left (the time left over the attempts
    /// left). With no answer by then, and a retry in the budget, a second attempt starts
    /// beside it (a hedge, on the least loaded replica, which the first attempt's is not)
    /// and the first answer that is not a retryable failure wins; the other is cancelled.
    /// The first attempt is never abandoned: a method slower than its share still succeeds.
    async fn hedged(&self, call: &mut Call, attempts_left: u32) -> Result<Frame, Status> {
        let share = call
            .deadline
            .saturating_duration_since(Instant::now())
            .checked_div(attempts_left)
            .unwrap_or_default();
        // Made now, while `call` is free: the first attempt borrows it until it ends.
        let mut hedge = call.hedge();
        let mut first = self.inner.call(call);
        tokio::select! {
            biased;
            result = &mut first => return result,
            _ = tokio::time::sleep(share) => {}
        }
        if !self.budget.withdraw(clock::millis(Instant::now())) {
            return first.await;
        }
        if let Some(m) = hedge.metrics {
            m.client_retry();
        }
        let mut second = self.inner.call(&mut hedge);
        let (mut first_failed, mut second_failed) = (None, None);
        let result = loop {
            tokio::select! {
                result = &mut first, if first_failed.is_none() => {
                    if !retryable(&result) {
                        break result;
                    }
                    first_failed = Some(result);
                }
                result = &mut second, if second_failed.is_none() => {
                    if !retryable(&result) {
                        break result;
                    }
                    second_failed = Some(result);
                }
            }
            if first_failed.is_some()
                && let Some(result) = second_failed.take()
            {
                break result;
            }
        };
        drop(first);
        drop(second);
        // Further attempts count on from the hedge's.
        call.header.attempt = hedge.header.attempt;
        result
    }
    fn next_attempt(&self, call: &mut Call) {
        call.header.attempt += 1;
        if let Some(m) = call.metrics {
            m.client_retry();
        }
    }
}
