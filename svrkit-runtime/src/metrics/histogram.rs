//! Latency histograms with a bounded relative error: log-linear buckets in the manner of
//! HdrHistogram, counted lock-free, read as Prometheus buckets or as percentiles.
//!
//! A value is counted in units of 64 ns. Below 8 units (512 ns) each unit has a bucket of
//! its own; above, every power of two is split into 8 equal buckets, so a bucket is at most
//! 1/8 of its lower bound wide. A percentile is read as the middle of its bucket: within
//! [`RELATIVE_ERROR`] (1/16, 6.25%) of the true value of that rank for anything from 512 ns
//! up, within 32 ns below. The last bucket holds everything from 2^37 ns (137 s) up.
//!
//! Fixed buckets make every histogram of the process (and of every process reporting to an
//! agent) mergeable by adding counts, and let a minute's histogram be the difference of two
//! snapshots. Finding a bucket is a leading-zeros count and two shifts: no search.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Nanoseconds per unit: `2^UNIT_SHIFT`.
const UNIT_SHIFT: u32 = 6;
/// Buckets per power of two: `2^SUB_BITS`.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// The largest power of two (in units) split into buckets; values from `2^(TOP + 1)` units
/// up share the last bucket.
const TOP: u32 = 30;

/// Buckets in a histogram (the last is unbounded).
pub const BUCKETS: usize = (TOP - SUB_BITS + 2) as usize * SUB + 1;

/// The most a percentile read from a histogram can be off, relative to the true value of
/// its rank (for values of 512 ns and up; 32 ns at most below).
pub const RELATIVE_ERROR: f64 = 1.0 / (2 * SUB) as f64;

/// The bucket `nanos` falls in.
#[inline]
pub fn bucket(nanos: u64) -> usize {
    let units = nanos >> UNIT_SHIFT;
    if units < SUB as u64 {
        return units as usize;
    }
    let e = 63 - units.leading_zeros(); // units is in [2^e, 2^(e+1))
    if e > TOP {
        return BUCKETS - 1;
    }
    let sub = (units >> (e - SUB_BITS)) as usize & (SUB - 1);
    (e - SUB_BITS + 1) as usize * SUB + sub
}

/// The lowest value of bucket `i`, in nanoseconds (the last bucket's lowest for `BUCKETS`).
pub fn lower_ns(i: usize) -> u64 {
    let units = if i < SUB {
        i as u64
    } else {
        let e = (i / SUB) as u32 + SUB_BITS - 1;
        ((SUB + i % SUB) as u64) << (e - SUB_BITS)
    };
    units << UNIT_SHIFT
}

/// The upper bounds of the 1-2-5 buckets of runtimes before the log-linear ones, in µs
/// (one more bucket holds everything above): reports still carry them for older agents.
const OLD_BOUNDS_US: [u64; 22] = [
    5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
];

/// Lock-free cells of one histogram.
#[derive(Debug)]
pub(crate) struct Cells {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for Cells {
    fn default() -> Cells {
        Cells {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket, in bucket order ([`bucket`], [`lower_ns`]).
    pub counts: [u64; BUCKETS],
    /// Sum of all observations, in nanoseconds (wraps after 584 years of latency).
    pub sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: [0; BUCKETS],
            sum_ns: 0,
        }
    }
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

    /// The nonzero buckets as `[index, count, index, count, ...]`: what reports carry (a
    /// minute of one method touches a few dozen of the buckets).
    pub fn to_pairs(&self) -> Vec<u64> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .flat_map(|(i, c)| [i as u64, *c])
            .collect()
    }

    /// A histogram from [`to_pairs`](Histogram::to_pairs)' form; `None` if an index is out
    /// of range, a pair is cut short or the counts overflow.
    pub fn from_pairs(pairs: &[u64]) -> Option<Histogram> {
        if !pairs.len().is_multiple_of(2) {
            return None;
        }
        let mut h = Histogram::default();
        for pair in pairs.chunks_exact(2) {
            let slot = h.counts.get_mut(usize::try_from(pair[0]).ok()?)?;
            *slot = slot.checked_add(pair[1])?;
        }
        Some(h)
    }

    /// A histogram from the counts of the fixed 1-2-5 buckets reporters before the
    /// log-linear ones sent (5 µs to 50 s and one above): each bucket's count goes to the
    /// bucket of its middle, so percentiles read from it are as rough as they were.
    pub fn from_old_buckets(counts: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for (i, &c) in counts.iter().enumerate().take(OLD_BOUNDS_US.len() + 1) {
            let lower = if i == 0 { 0 } else { OLD_BOUNDS_US[i - 1] };
            let upper = OLD_BOUNDS_US.get(i).copied().unwrap_or(lower * 2);
            let middle = (lower + upper) / 2 * 1000;
            let slot = &mut h.counts[bucket(middle)];
            *slot = slot.saturating_add(c);
        }
        h
    }

    /// The counts of the 1-2-5 buckets of runtimes before these ones (5 µs to 50 s and one
    /// above), each bucket counted in the old bucket its middle falls in: what reports
    /// carry for agents that read only those.
    pub fn to_old_buckets(&self) -> Vec<u64> {
        let mut old = vec![0u64; OLD_BOUNDS_US.len() + 1];
        for (i, &c) in self.counts.iter().enumerate().filter(|(_, c)| **c != 0) {
            let middle_us = if i == BUCKETS - 1 {
                u64::MAX
            } else {
                (lower_ns(i) + lower_ns(i + 1)) / 2 / 1000
            };
            let slot = OLD_BOUNDS_US
                .iter()
                .position(|&b| middle_us <= b)
                .unwrap_or(OLD_BOUNDS_US.len());
            old[slot] = old[slot].saturating_add(c);
        }
        old
    }

    /// The `q` quantile in milliseconds, 0 when empty (what rollups and pages show).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile(q).map_or(0.0, |s| s * 1e3)
    }

    /// The `q` quantile (0..=1) in seconds: the middle of the bucket that holds the
    /// observation of rank `ceil(q * count)`, so within [`RELATIVE_ERROR`] of it; `None`
    /// when empty. Values in the last bucket read as its lower bound.
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
            seen = seen.saturating_add(c);
            if seen as f64 >= rank {
                let lower = lower_ns(i) as f64;
                if i == BUCKETS - 1 {
                    return Some(lower / 1e9);
                }
                return Some((lower + lower_ns(i + 1) as f64) / 2.0 / 1e9);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_with_bounded_width() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(63), 0);
        assert_eq!(bucket(64), 1);
        assert_eq!(bucket(511), 7);
        assert_eq!(bucket(512), 8);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket((1u64 << 37) - 1), BUCKETS - 2);
        assert_eq!(bucket(1 << 37), BUCKETS - 1);
        for i in 0..BUCKETS - 1 {
            let (lo, hi) = (lower_ns(i), lower_ns(i + 1));
            assert!(hi > lo, "{i}");
            assert_eq!(bucket(lo), i, "{i}");
            assert_eq!(bucket(hi - 1), i, "{i}");
            if lo >= 512 {
                assert!(
                    (hi - lo) as f64 <= lo as f64 / SUB as f64,
                    "{i}: {lo}..{hi}"
                );
            }
        }
        let cells = Cells::default();
        cells.observe(Duration::from_secs(100_000));
        let mut h = Histogram::default();
        cells.add_to(&mut h);
        assert_eq!(h.counts[BUCKETS - 1], 1);
    }

    fn of(latencies_ns: &[u64]) -> Histogram {
        let cells = Cells::default();
        for &ns in latencies_ns {
            cells.observe(Duration::from_nanos(ns));
        }
        let mut h = Histogram::default();
        cells.add_to(&mut h);
        h
    }

    /// Percentiles against the exact ones of a recorded sample, over seven decades of
    /// latency and shapes from tight to heavy-tailed: never further off than the stated
    /// bound.
    #[test]
    fn percentiles_are_within_the_stated_error_of_the_exact_ones() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let shapes: [(&str, &dyn Fn(f64) -> f64); 3] = [
            ("uniform 30-40 µs", &|u| 30_000.0 + 10_000.0 * u),
            ("log-uniform 1 µs-10 s", &|u| 1_000.0 * 10f64.powf(7.0 * u)),
            ("pareto from 200 µs", &|u| {
                200_000.0 / (1.0 - u).max(1e-9).powf(1.0 / 1.2)
            }),
        ];
        let mut worst = 0.0f64;
        for (name, shape) in shapes {
            let mut sample: Vec<u64> = (0..20_000).map(|_| shape(next()) as u64).collect();
            let h = of(&sample);
            sample.sort_unstable();
            for q in [0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let rank = ((q * sample.len() as f64).ceil() as usize).max(1);
                let exact = sample[rank - 1] as f64;
                if exact >= (1u64 << 37) as f64 {
                    continue; // the open last bucket
                }
                let read = h.quantile(q).unwrap() * 1e9;
                let error = (read - exact).abs() / exact;
                worst = worst.max(error);
                assert!(
                    error <= RELATIVE_ERROR,
                    "{name}: p{q}: read {read} ns, exact {exact} ns, off by {:.2}%",
                    error * 100.0
                );
            }
        }
        assert!(worst > 0.0, "the sample tested something");
    }

    #[test]
    fn percentiles_fall_in_the_right_place() {
        // 98 calls of 30 µs, 2 of 30 ms.
        let mut ns = vec![30_000; 98];
        ns.extend([30_000_000, 30_000_000]);
        let h = of(&ns);
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 / 30e-6 - 1.0).abs() <= RELATIVE_ERROR, "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 / 30e-3 - 1.0).abs() <= RELATIVE_ERROR, "{p99}");
        assert_eq!(h.quantile(1.0), h.quantile(0.995));
        assert_eq!(h.sum_ns, 98 * 30_000 + 60_000_000);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn differences_merges_and_pairs_add_up() {
        let a = of(&[10_000, 10_000, 1_000_000]);
        let b = of(&[10_000, 10_000, 1_000_000, 7_000, 7_000]);
        let d = b.since(&a);
        assert_eq!(d.count(), 2);
        assert_eq!(d.counts[bucket(7_000)], 2);
        let mut m = a.clone();
        m.merge(&d);
        assert_eq!(m, b);
        let pairs = b.to_pairs();
        assert_eq!(pairs.len(), 6);
        let back = Histogram::from_pairs(&pairs).unwrap();
        assert_eq!(back.counts, b.counts);
        assert_eq!(Histogram::from_pairs(&[1]), None);
        assert_eq!(Histogram::from_pairs(&[BUCKETS as u64, 1]), None);
        assert_eq!(Histogram::from_pairs(&[3, u64::MAX, 3, 1]), None);
    }

    #[test]
    fn old_buckets_land_in_the_middle_of_their_range() {
        // 10 calls in (100, 200] µs, 1 above 50 s.
        let mut old = vec![0; 23];
        old[5] = 10;
        old[22] = 1;
        let h = Histogram::from_old_buckets(&old);
        assert_eq!(h.count(), 11);
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 / 150e-6 - 1.0).abs() <= RELATIVE_ERROR, "{p50}");
        assert!(h.quantile(1.0).unwrap() >= 50.0);
        // And back, for older agents: the same buckets.
        assert_eq!(h.to_old_buckets(), old);
    }
}
