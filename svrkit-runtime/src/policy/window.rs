//! Counters over a sliding window of time, kept without locks: a ring of buckets, each a
//! slice of time with `K` counters and the number of the slice it holds.
//!
//! A bucket whose slice is over is taken for the new slice by whoever adds to it first (one
//! compare-and-swap), and zeroed. An addition that races with that zeroing can be lost: the
//! figures feed ratios over thousands of calls (a retry budget, a refusal rate), where a
//! lost count now and then changes nothing, and the hot path stays a few atomic operations.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// `K` counters over the last `span` of time, in buckets.
#[derive(Debug)]
pub(crate) struct SlidingCounts<const K: usize> {
    buckets: Box<[Bucket<K>]>,
    width_ms: u64,
}

#[derive(Debug)]
struct Bucket<const K: usize> {
    /// The number of the time slice this bucket counts, plus one (0: never used).
    slice: AtomicU64,
    counts: [AtomicU64; K],
}

impl<const K: usize> SlidingCounts<K> {
    /// A window of `span` in `buckets` slices (at least one, at least a millisecond each).
    pub(crate) fn new(span: Duration, buckets: usize) -> SlidingCounts<K> {
        let buckets = buckets.max(1);
        SlidingCounts {
            buckets: (0..buckets)
                .map(|_| Bucket {
                    slice: AtomicU64::new(0),
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            width_ms: (span.as_millis() as u64 / buckets as u64).max(1),
        }
    }

    /// Adds `n` to counter `which` at `now_ms`. Returns whether this call opened a new slice
    /// (at most once per slice), for callers that recompute something once per slice.
    pub(crate) fn add(&self, now_ms: u64, which: usize, n: u64) -> bool {
        let slice = now_ms / self.width_ms + 1;
        let bucket = &self.buckets[(slice as usize) % self.buckets.len()];
        let seen = bucket.slice.load(Relaxed);
        let opened = seen < slice
            && bucket
                .slice
                .compare_exchange(seen, slice, Relaxed, Relaxed)
                .is_ok();
        if opened {
            for c in &bucket.counts {
                c.store(0, Relaxed);
            }
        }
        bucket.counts[which].fetch_add(n, Relaxed);
        opened
    }

    /// The counters summed over the last `slices` slices up to `now_ms` (the whole window
    /// when `slices` is larger).
    pub(crate) fn sums_over(&self, now_ms: u64, slices: usize) -> [u64; K] {
        let now = now_ms / self.width_ms + 1;
        let oldest = now.saturating_sub(slices.min(self.buckets.len()) as u64 - 1);
        let mut sums = [0; K];
        for bucket in &self.buckets {
            let slice = bucket.slice.load(Relaxed);
            if (oldest..=now).contains(&slice) {
                for (sum, c) in sums.iter_mut().zip(&bucket.counts) {
                    *sum += c.load(Relaxed);
                }
            }
        }
        sums
    }

    /// The counters summed over the whole window up to `now_ms`.
    pub(crate) fn sums(&self, now_ms: u64) -> [u64; K] {
        self.sums_over(now_ms, self.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_of_the_window() {
        let w = SlidingCounts::<2>::new(Duration::from_secs(10), 10);
        assert!(w.add(0, 0, 5));
        assert!(!w.add(500, 0, 1));
        w.add(1_000, 1, 2);
        assert_eq!(w.sums(1_500), [6, 2]);
        assert_eq!(w.sums_over(1_500, 1), [0, 2]);
        // At 10.0 s the first slice (0-1 s) has left the window.
        assert_eq!(w.sums(10_000), [0, 2]);
        // Its bucket is reused for the slice 10-11 s, and starts from zero.
        assert!(w.add(10_000, 0, 1));
        assert_eq!(w.sums(10_999), [1, 2]);
        assert_eq!(w.sums(30_000), [0, 0]);
    }

    #[test]
    fn concurrent_adds_within_a_slice_are_all_counted() {
        let w = std::sync::Arc::new(SlidingCounts::<1>::new(Duration::from_secs(60), 60));
        w.add(0, 0, 0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.add(10, 0, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.sums(10), [40_000]);
    }
}
