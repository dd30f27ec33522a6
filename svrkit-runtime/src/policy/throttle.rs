//! Adaptive throttling (the Google SRE book's client-side throttling): while a backend keeps
//! refusing, the client drops requests itself with probability
//! `max(0, (requests - k * accepts) / (requests + 1))` over the last two minutes, so that a
//! refusing backend stops spending its capacity on refusals and its callers fail fast.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::window::SlidingCounts;

/// The refusal history of a client and the drop probability it gives.
#[derive(Debug)]
pub struct Throttle {
    k: f64,
    /// Requests and refusals, per second over two minutes.
    window: SlidingCounts<2>,
    /// The drop probability (`f64` bits), recomputed once a second: the hot path reads one
    /// word.
    drop: AtomicU64,
}

const REQUESTS: usize = 0;
const REFUSED: usize = 1;
/// Requests in the window below which nothing is dropped: one refusal of a client's first
/// request is not a backend that keeps refusing.
const MIN_REQUESTS: u64 = 20;
/// The span the throttle looks back over.
pub const SPAN: Duration = Duration::from_secs(120);

impl Throttle {
    /// A throttle that lets through `k` times the requests the backend accepts (2 is the SRE
    /// book's choice: a backend refusing half its requests is not throttled yet).
    pub fn new(k: f64) -> Throttle {
        Throttle {
            k: k.max(1.0),
            window: SlidingCounts::new(SPAN, 120),
            drop: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Whether to send a request at `now_ms`; `sample` is uniform in `[0, 1)`. A request
    /// dropped here counts as a request the backend did not accept.
    #[inline]
    pub fn admit(&self, now_ms: u64, sample: impl FnOnce() -> f64) -> bool {
        let p = f64::from_bits(self.drop.load(Relaxed));
        if p > 0.0 && sample() < p {
            self.count(now_ms, false);
            return false;
        }
        true
    }

    /// Counts a request that was sent: whether the backend accepted it (answered anything
    /// but a refusal).
    #[inline]
    pub fn record(&self, now_ms: u64, accepted: bool) {
        self.count(now_ms, accepted);
    }

    fn count(&self, now_ms: u64, accepted: bool) {
        let opened = self.window.add(now_ms, REQUESTS, 1);
        if !accepted {
            self.window.add(now_ms, REFUSED, 1);
        }
        // Refusals start throttling at once; after that the probability moves once a second
        // (summing the window is not for every call).
        if opened || (!accepted && self.probability() == 0.0) {
            self.update(now_ms);
        }
    }

    fn update(&self, now_ms: u64) {
        let [requests, refused] = self.window.sums(now_ms);
        let accepts = requests.saturating_sub(refused) as f64;
        let p = if requests < MIN_REQUESTS {
            0.0
        } else {
            let requests = requests as f64;
            ((requests - self.k * accepts) / (requests + 1.0)).max(0.0)
        };
        self.drop.store(p.to_bits(), Relaxed);
    }

    /// The current drop probability.
    pub fn probability(&self) -> f64 {
        f64::from_bits(self.drop.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_backend_is_never_throttled() {
        let t = Throttle::new(2.0);
        for i in 0..10_000 {
            assert!(t.admit(i, || 0.0));
            t.record(i, i % 3 != 0); // a third refused: still under k = 2
        }
        assert_eq!(t.probability(), 0.0);
    }

    #[test]
    fn a_refusing_backend_gets_about_k_times_its_accepts() {
        let t = Throttle::new(2.0);
        let mut rng = 1u64;
        let mut sample = || {
            rng = crate::random::mix(rng.wrapping_add(1));
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut sent, mut accepted) = (0u64, 0u64);
        let mut last_accept: Option<u64> = None;
        // A request a millisecond for 100 s; the backend accepts one per 10 ms (its
        // capacity) and refuses the rest.
        for now in 0..100_000u64 {
            if !t.admit(now, &mut sample as &mut dyn FnMut() -> f64) {
                continue;
            }
            sent += 1;
            let ok = last_accept.is_none_or(|at| now - at >= 10);
            if ok {
                last_accept = Some(now);
                accepted += 1;
            }
            t.record(now, ok);
        }
        let ratio = sent as f64 / accepted as f64;
        assert!(
            (1.5..2.6).contains(&ratio),
            "sent {sent} for {accepted} accepted"
        );
        assert!(t.probability() > 0.5);
    }

    #[test]
    fn throttling_stops_once_refusals_leave_the_window() {
        let t = Throttle::new(2.0);
        for _ in 0..100 {
            t.record(0, false);
        }
        assert!(t.probability() > 0.9);
        // Two minutes later only accepted requests are in the window.
        t.record(121_000, true);
        assert_eq!(t.probability(), 0.0);
    }
}
