//! What a report says of one method side in one minute: its counts and histograms, checked
//! to be plausible before anything is kept, and their sum over every instance.

use svrkit_runtime::metrics::histogram::Histogram;
use svrkit_runtime::monitor::ossagent::MethodMinute;
use svrkit_runtime::monitor::rollup::Figures;

use crate::MAX_CALLS_PER_MINUTE;

/// The counts of one method side in one minute, as a report gives them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) caller_errors: u64,
    pub(crate) cancelled: u64,
    pub(crate) rejected: u64,
}

impl Tally {
    /// The tally of a method minute.
    pub(crate) fn of(m: &MethodMinute) -> Tally {
        Tally {
            calls: m.calls,
            errors: m.errors,
            caller_errors: m.caller_errors,
            cancelled: m.cancelled,
            rejected: m.rejected,
        }
    }

    /// Each count `op` the other's.
    pub(crate) fn apply(&mut self, other: &Tally, op: impl Fn(u64, u64) -> u64) {
        self.calls = op(self.calls, other.calls);
        self.errors = op(self.errors, other.errors);
        self.caller_errors = op(self.caller_errors, other.caller_errors);
        self.cancelled = op(self.cancelled, other.cancelled);
        self.rejected = op(self.rejected, other.rejected);
    }
}

/// One instance's report of one method side in one minute; its histograms as the pairs of
/// bucket index and count of their nonzero buckets ([`Histogram::to_pairs`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub(crate) tally: Tally,
    pub(crate) latency: Box<[u64]>,
    pub(crate) queue: Box<[u64]>,
}

impl Counts {
    /// A method minute of a report, if it can be true: its counts add up, its histograms
    /// read whole (log-linear pairs, or the 1-2-5 buckets of older reporters) and nothing
    /// passes [`MAX_CALLS_PER_MINUTE`].
    ///
    /// Histograms are bounded by that cap, not by the calls: a minute's queue waits count
    /// the handlers started in it, long polls still waiting included, and a reporter reads
    /// a call's latency and its answer a moment apart.
    pub(crate) fn plausible(m: &MethodMinute) -> Option<Counts> {
        let read = |pairs: &[u64], old: &[u64]| {
            if pairs.is_empty() {
                // At most the old buckets' number, as before.
                (old.len() <= 23).then(|| Histogram::from_old_buckets(old))
            } else {
                Histogram::from_pairs(pairs)
            }
        };
        let latency = read(&m.latency_buckets, &m.latency)?;
        let queue = read(&m.queue_wait_buckets, &m.queue_wait)?;
        let sum = |h: &[u64]| h.iter().try_fold(0u64, |a, &c| a.checked_add(c));
        let most = MAX_CALLS_PER_MINUTE;
        let implausible = m.calls > most
            || latency.count() > most
            || queue.count() > most
            || [m.errors, m.caller_errors, m.cancelled]
                .iter()
                .try_fold(0u64, |a, &c| a.checked_add(c))
                .is_none_or(|n| n > m.calls)
            || m.rejected > m.calls
            || sum(&m.latency).is_none_or(|n| n > most)
            || sum(&m.queue_wait).is_none_or(|n| n > most);
        (!implausible).then(|| Counts {
            tally: Tally::of(m),
            latency: latency.to_pairs().into(),
            queue: queue.to_pairs().into(),
        })
    }

    /// The heap bytes it holds.
    pub(crate) fn bytes(&self) -> usize {
        (self.latency.len() + self.queue.len()) * 8
    }
}

/// The sum of every instance's report of one method side in one minute.
#[derive(Debug, Clone, Default)]
pub(crate) struct Total {
    pub(crate) tally: Tally,
    pub(crate) latency: Histogram,
    pub(crate) queue: Histogram,
}

impl Total {
    /// Adds (`add` true) or takes away `report`, wrapping: a total that had a report added
    /// can have it taken away again exactly, whatever the numbers.
    pub(crate) fn apply(&mut self, report: &Counts, add: bool) {
        let op = |a: u64, b: u64| {
            if add {
                a.wrapping_add(b)
            } else {
                a.wrapping_sub(b)
            }
        };
        self.tally.apply(&report.tally, op);
        for (total, pairs) in [
            (&mut self.latency, &report.latency),
            (&mut self.queue, &report.queue),
        ] {
            // Indices were checked when the report was taken.
            for pair in pairs.chunks_exact(2) {
                if let Some(c) = total.counts.get_mut(pair[0] as usize) {
                    *c = op(*c, pair[1]);
                }
            }
        }
    }
}

/// The figures of a minute from the sum of every instance's report of it: percentiles from
/// the merged histograms.
pub(crate) fn figures(minute: u64, total: &Total) -> Figures {
    let t = &total.tally;
    Figures {
        minute,
        calls: t.calls,
        errors: t.errors,
        caller_errors: t.caller_errors,
        cancelled: t.cancelled,
        rejected: t.rejected,
        p50_ms: total.latency.quantile_ms(0.5),
        p99_ms: total.latency.quantile_ms(0.99),
        queue_p99_ms: total.queue.quantile_ms(0.99),
    }
}
