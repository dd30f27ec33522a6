//! The process's clock base: an `Instant` and the wall-clock time it was, read once, so that
//! policies and counters turn the `Instant`s they already have into milliseconds or hours
//! without another clock read.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The base: an `Instant` and the time since the Unix epoch it was.
fn base() -> &'static (Instant, Duration) {
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    BASE.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), unix)
    })
}

/// The base `Instant`: simulations that start a whole second after it see whole
/// milliseconds where they meant them.
#[cfg(test)]
pub(crate) fn base_instant() -> Instant {
    base().0
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
