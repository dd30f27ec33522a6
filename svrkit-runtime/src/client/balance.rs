//! Balancers: which endpoint of a set each call attempt goes to, from the call's key and
//! each endpoint's load and health.
//!
//! - [`PowerOfTwo`] (the default): of two endpoints picked at random, the one with fewer calls
//!   in flight. Nearly as good as asking every endpoint, at the cost of two loads.
//! - [`RoundRobin`]: each endpoint in turn.
//! - [`Ring`](super::Ring): consistent hashing of [`Call::key`] (the user key) with bounded
//!   load, so that all of a user's calls reach the same replica.
//!
//! Each skips endpoints that are down or ejected while others are up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Call;
use super::endpoint::Endpoint;
use crate::random;

/// Chooses an endpoint for each call attempt.
///
/// It sees the call (its method, its key: [`Call::key`], by default the user key) and every
/// endpoint's [`load`](Endpoint::load) and [`health`](Endpoint::is_healthy).
pub trait Balancer: Send + Sync + 'static {
    /// The index in `endpoints` (never empty) to call, or `None` to fail the attempt with
    /// `UNAVAILABLE`.
    fn pick(&self, call: &Call, endpoints: &[Arc<Endpoint>]) -> Option<usize>;
}

/// Cycles through the healthy endpoints; when none is healthy, through all of them (so that
/// the call fails with the real reason and reconnection is tried on schedule).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, _call: &Call, endpoints: &[Arc<Endpoint>]) -> Option<usize> {
        let n = endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| endpoints[i].is_healthy())
            .or(Some(start % n))
    }
}

/// Power of two choices: two distinct endpoints at random, the one with fewer calls in
/// flight per unit of [weight](Endpoint::weight) (healthy ones first). The default balancer.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl Balancer for PowerOfTwo {
    fn pick(&self, _call: &Call, endpoints: &[Arc<Endpoint>]) -> Option<usize> {
        let n = endpoints.len();
        if n == 1 {
            return Some(0);
        }
        let r = random::random();
        let a = (r % n as u64) as usize;
        // A different second choice: an offset of 1..n from the first.
        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
        let best = if lighter(&endpoints[b], &endpoints[a]) {
            b
        } else {
            a
        };
        if endpoints[best].is_healthy() {
            return Some(best);
        }
        // Both down: any healthy one, else the first choice (to fail with its reason).
        (0..n)
            .map(|i| (a + i) % n)
            .find(|&i| endpoints[i].is_healthy())
            .or(Some(best))
    }
}

/// Whether `x` should get the next call rather than `y`: healthy before down, then fewer
/// calls in flight per unit of weight, counting the call to place (so that of two idle
/// endpoints the heavier wins, and calls spread in proportion to weight).
fn lighter(x: &Endpoint, y: &Endpoint) -> bool {
    match (x.is_healthy(), y.is_healthy()) {
        (true, false) => return true,
        (false, true) => return false,
        _ => {}
    }
    let cost = |e: &Endpoint, other: &Endpoint| (e.load() as u64 + 1) * u64::from(other.weight());
    cost(x, y) < cost(y, x)
}

/// Which balancer a channel made from configuration uses (`balancer` in `[client]` or a
/// service's section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// [`PowerOfTwo`].
    #[default]
    P2c,
    /// [`RoundRobin`].
    RoundRobin,
    /// [`Ring`](super::Ring) keyed by the user key.
    Ring,
}

impl BalancerKind {
    pub(crate) fn build(self) -> Arc<dyn Balancer> {
        match self {
            BalancerKind::P2c => Arc::new(PowerOfTwo),
            BalancerKind::RoundRobin => Arc::new(RoundRobin::default()),
            BalancerKind::Ring => Arc::new(super::Ring::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{test_call, test_endpoints};

    #[test]
    fn two_choices_prefer_the_less_loaded_and_the_healthy() {
        let endpoints = test_endpoints(3);
        let _busy: Vec<_> = (0..100).map(|_| endpoints[0].start()).collect();
        let mut per = [0usize; 3];
        for _ in 0..3_000 {
            per[PowerOfTwo.pick(&test_call(0), &endpoints).unwrap()] += 1;
        }
        // The busy one loses every pairing it is in.
        assert_eq!(per[0], 0, "{per:?}");
        assert!(per[1] > 1_000 && per[2] > 1_000, "{per:?}");
        for _ in 0..5 {
            endpoints[1].failed();
        }
        // Ejected: never chosen while others are up, however idle it is.
        for _ in 0..1_000 {
            assert_ne!(PowerOfTwo.pick(&test_call(0), &endpoints), Some(1));
        }
    }

    #[test]
    fn two_choices_follow_the_weights() {
        let endpoints = test_endpoints(2);
        // Weights 300 and 100, with calls held in flight as they are placed: the heavier
        // takes about three quarters.
        endpoints[0].set_weight(300);
        let mut held = Vec::new();
        let mut per = [0usize; 2];
        for _ in 0..400 {
            let i = PowerOfTwo.pick(&test_call(0), &endpoints).unwrap();
            per[i] += 1;
            held.push(endpoints[i].start());
        }
        assert!((290..=310).contains(&per[0]), "{per:?}");
    }
}
