//! The retry budget: retries are at most a share of the requests a client made lately, plus a
//! small floor, so a dead backend sees about 1.2 times its normal rate instead of
//! `max_attempts` times.

use std::time::Duration;

use super::window::SlidingCounts;

/// Retries allowed per client: at most `ratio` of the requests of the last ten seconds, plus
/// `min_per_second` (so that a client making few calls can still retry).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    /// Requests and retries, per second over ten seconds.
    window: SlidingCounts<2>,
}

const REQUESTS: usize = 0;
const RETRIES: usize = 1;
/// The span the budget is counted over.
pub const SPAN: Duration = Duration::from_secs(10);

impl RetryBudget {
    /// A budget of `ratio` of requests plus `min_per_second`.
    pub fn new(ratio: f64, min_per_second: f64) -> RetryBudget {
        RetryBudget {
            ratio: ratio.max(0.0),
            floor: min_per_second.max(0.0) * SPAN.as_secs_f64(),
            window: SlidingCounts::new(SPAN, 10),
        }
    }

    /// Counts a request (a call's first attempt) at `now_ms`.
    #[inline]
    pub fn deposit(&self, now_ms: u64) {
        self.window.add(now_ms, REQUESTS, 1);
    }

    /// Takes a retry from the budget if there is one left.
    pub fn withdraw(&self, now_ms: u64) -> bool {
        let [requests, retries] = self.window.sums(now_ms);
        let allowed = self.ratio * requests as f64 + self.floor;
        if (retries as f64) < allowed {
            self.window.add(now_ms, RETRIES, 1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_fifth_of_requests_plus_the_floor() {
        let budget = RetryBudget::new(0.2, 1.0);
        let mut granted = 0;
        // 1000 requests over ten seconds, each failing and asking for a retry.
        for i in 0..1_000u64 {
            let now = i * 10;
            budget.deposit(now);
            if budget.withdraw(now) {
                granted += 1;
            }
        }
        // 20% of 1000, plus one a second for ten seconds.
        assert!((200..=210).contains(&granted), "{granted}");
    }

    #[test]
    fn the_budget_refills_as_old_requests_leave_the_window() {
        let budget = RetryBudget::new(0.2, 0.0);
        for _ in 0..100 {
            budget.deposit(0);
        }
        while budget.withdraw(0) {}
        assert!(!budget.withdraw(5_000));
        // Ten seconds on, the old requests and retries are gone; new requests fund retries.
        for _ in 0..10 {
            budget.deposit(10_500);
        }
        assert!(budget.withdraw(10_500));
        assert!(budget.withdraw(10_500));
        assert!(!budget.withdraw(10_500));
    }
}
