//! Latency histograms: fixed 1-2-5 buckets from 5 µs to 50 s, counted lock-free, read as
//! Prometheus buckets or as percentiles.
//!
//! Fixed bounds make every histogram of the process (and of every process reporting to an
//! agent) mergeable by adding counts, and let a minute's histogram be the difference of two
//! snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds; one more bucket holds everything above.
pub const BOUNDS_NS: [u64; 23] = [
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    50_000_000_000,
    u64::MAX,
];

/// Buckets in a histogram (the last is unbounded).
pub const BUCKETS: usize = BOUNDS_NS.len();

/// The bucket `nanos` falls in. Latencies are mostly small, so a scan from the bottom ends
/// after a few comparisons.
#[inline]
pub(crate) fn bucket(nanos: u64) -> usize {
    BOUNDS_NS
        .iter()
        .position(|&b| nanos <= b)
        .unwrap_or(BUCKETS - 1)
}

/// Lock-free cells of one histogram.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Cells {
    #[inline]
    pub(crate) fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(nanos)].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(nanos, Relaxed);
    }

    pub(crate) fn add_to(&self, h: &mut Histogram) {
        for (total, cell) in h.counts.iter_mut().zip(&self.counts) {
            *total += cell.load(Relaxed);
        }
        h.sum_ns = h.sum_ns.wrapping_add(self.sum_ns.load(Relaxed));
    }
}

/// A histogram read out of its cells: counts per bucket (not cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket, in the order of [`BOUNDS_NS`].
    pub counts: [u64; BUCKETS],
    /// Sum of all observations, in nanoseconds (wraps after 584 years of latency).
    pub sum_ns: u64,
}

impl Histogram {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        // Saturating: histograms from reports are not to be trusted to add up.
        self.counts.iter().fold(0u64, |n, c| n.saturating_add(*c))
    }

    /// What was observed since `earlier` (a snapshot of the same cells).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut d = Histogram::default();
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        d.sum_ns = self.sum_ns.wrapping_sub(earlier.sum_ns);
        d
    }

    /// Adds `other`'s observations.
    pub fn merge(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c = c.saturating_add(*o);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// The `q` quantile in milliseconds, 0 when empty (what rollups and pages show).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile(q).map_or(0.0, |s| s * 1e3)
    }

    /// The `q` quantile (0..=1) in seconds, interpolated linearly inside its bucket; `None`
    /// when empty. Values above the last bound read as that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based, at least the first observation.
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen.saturating_add(c) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BOUNDS_NS[i - 1] };
                if i == BUCKETS - 1 {
                    return Some(lower as f64 / 1e9);
                }
                let upper = BOUNDS_NS[i];
                let within = (rank - seen as f64) / c as f64;
                return Some((lower as f64 + within * (upper - lower) as f64) / 1e9);
            }
            seen = seen.saturating_add(c);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(5_000), 0);
        assert_eq!(bucket(5_001), 1);
        assert_eq!(bucket(1_000_000), 7);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        let cells = Cells::default();
        cells.observe(Duration::from_secs(100_000));
        let mut h = Histogram::default();
        cells.add_to(&mut h);
        assert_eq!(h.counts[BUCKETS - 1], 1);
    }

    fn of(latencies_us: &[u64]) -> Histogram {
        let cells = Cells::default();
        for &us in latencies_us {
            cells.observe(Duration::from_micros(us));
        }
        let mut h = Histogram::default();
        cells.add_to(&mut h);
        h
    }

    #[test]
    fn percentiles_fall_in_the_right_bucket() {
        // 98 calls of 30 µs, 2 of 30 ms: p50 in (20, 50] µs, p99 in (20, 50] ms.
        let mut us = vec![30; 98];
        us.extend([30_000, 30_000]);
        let h = of(&us);
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert!((20e-6..=50e-6).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((20e-3..=50e-3).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), h.quantile(0.995));
        assert_eq!(h.sum_ns, (98 * 30 + 60_000) * 1000);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn a_quantile_interpolates_within_its_bucket() {
        // 10 observations in (100, 200] µs: the median is halfway through it.
        let h = of(&[150; 10]);
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 150e-6).abs() < 1e-9, "{p50}");
    }

    #[test]
    fn differences_and_merges_add_up() {
        let a = of(&[10, 10, 1_000]);
        let b = of(&[10, 10, 1_000, 7, 7]);
        let d = b.since(&a);
        assert_eq!(d.count(), 2);
        assert_eq!(d.counts[bucket(7_000)], 2);
        let mut m = a.clone();
        m.merge(&d);
        assert_eq!(m, b);
    }
}
