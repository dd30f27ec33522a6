//! Avalanche protection: the policies that keep an overloaded or failing service from taking
//! its callers down with it, on by default and driven by what the IDL says about each method
//! (`timeout_ms`, `retry`, `max_attempts`, `priority`).
//!
//! - [`admission`]: the server's DAGOR overload control. Overload is read from how long
//!   requests wait to start; an overloaded server lowers its *admission level* so that about
//!   5% fewer requests get in, by business priority first and a per-hour hash of the user
//!   second, and refuses the rest `OVERLOADED` before decoding them. Every response carries
//!   the level, and clients drop locally what the server would refuse.
//! - [`priority`]: where a request stands in the shedding order, the same on every hop of a
//!   call chain, so that a request that makes several calls is admitted by all or none.
//! - [`shares`]: fairness among strangers: an untrusted address or user that has had its
//!   share of the capacity ranks last, so that under overload one of them cannot take the
//!   admission budget from the others.
//! - [`budget`] and [`throttle`]: what keeps retries and calls to a refusing backend from
//!   multiplying load: retries are at most a fifth of requests, and a backend that keeps
//!   refusing gets requests dropped at the caller (the SRE book's adaptive throttling).
//! - `window`: the lock-free counters over sliding time windows these share.
//!
//! The client side (retries, balancers, ejection of failing replicas, gray release, weak
//! dependencies) lives in [`crate::client`], which uses these. `docs/policies.md` describes
//! the whole design and the measurements.

pub mod admission;
pub mod budget;
pub mod priority;
pub mod shares;
pub mod throttle;
pub(crate) mod window;

pub use admission::AdmissionConfig;

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// A random 64-bit number from a per-thread generator (SplitMix64): for jitter and sampling,
/// not secrets.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(crate::monitor::trace::seed());
    }
    STATE.with(mix_step)
}

/// A random number in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

fn mix_step(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    mix(s)
}

/// A strong 64-bit mix (SplitMix64's finaliser): equal inputs give equal outputs in every
/// process, which is what lets a client and a server agree on a user's priority.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The process's clock base: an `Instant` and the wall-clock time it was, read once, so that
/// policies turn the `Instant`s they already have into milliseconds or hours without another
/// clock read.
fn base() -> &'static (Instant, Duration) {
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    BASE.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), unix)
    })
}

/// Milliseconds from the process's clock base to `at` (0 for earlier instants).
pub(crate) fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(base().0).as_millis() as u64
}

/// The wall-clock hour (since the Unix epoch) that `at` falls in.
pub(crate) fn unix_hour(at: Instant) -> u64 {
    let (instant, unix) = *base();
    (unix + at.saturating_duration_since(instant)).as_secs() / 3600
}
