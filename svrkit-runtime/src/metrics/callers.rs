//! Who calls a method: the server's requests counted by calling service (the `caller` of
//! each request header), bounded so that callers cannot grow the series without limit: the
//! busiest [`MAX_CALLERS`] trusted callers by name, then `other`.
//!
//! Strangers' requests count as `untrusted` whatever name they give (a stranger could
//! otherwise take every slot with made-up names), requests that name no caller as `none`, and
//! names that are not service names (a label could not carry them as they are) as `other`.
//!
//! A method learns up to [`MAX_NAMES`] trusted names, each for good under an id: finding a
//! request's name is a scan of the names learnt (a service has a few callers), and only a
//! name's first request takes a lock. The first [`MAX_CALLERS`] names get a slot each at
//! once; later ones count in `other`, and so do names past [`MAX_NAMES`]. A name without a
//! slot also counts on its own (one shared counter per name, touched only while it has no
//! slot), so that it can be weighed: when the counts are read, at most once per [`WINDOW`],
//! each name waiting in `other` that made more than twice the calls of the quietest named
//! slot over the window (and at least [`MIN_CALLS`]) takes that slot, whose name then waits in
//! `other` in turn. A slot's count starts again from zero with each new name: the series
//! leaving stops, and the one arriving starts from zero (its calls before that stay in
//! `other`), so `other` and every series that stays only grow. A name that comes back later
//! starts from zero again, which Prometheus reads as a counter reset. Requests counted while
//! a slot changes hands (a few, on threads that read the old owner) go to its new name.
//!
//! The counts live in the method's per-thread shards; a request reads its name's slot with
//! one more relaxed load than a fixed table would need. A name waiting in `other` also adds
//! to its own counter, shared by the threads (until it is busy enough to take a slot, within
//! a window). Learnt names are never forgotten: past [`MAX_NAMES`] (callers named per
//! version, say), a new name counts in `other` and is never weighed.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use faststr::FastStr;

/// Callers named per method at once; the rest are `other`.
pub const MAX_CALLERS: usize = 16;

/// Trusted caller names a method tells apart, with a slot or waiting in `other`; names
/// beyond count as `other` and are never weighed.
pub const MAX_NAMES: usize = 64;

/// How often, at most, the callers waiting in `other` are weighed against the named ones.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The fewest calls in a window with which a caller waiting in `other` takes a slot.
pub const MIN_CALLS: u64 = 10;

/// Slots per method: the named callers, then `other`, `untrusted` and `none`.
pub(crate) const SLOTS: usize = MAX_CALLERS + 3;
const OTHER: usize = MAX_CALLERS;
const UNTRUSTED: usize = MAX_CALLERS + 1;
const NONE: usize = MAX_CALLERS + 2;

/// In `slot_of`: the name has no slot (its calls count in `other`).
const WAITING: u8 = u8::MAX;

/// The caller names of one method's slots.
#[derive(Debug)]
pub(crate) struct Callers {
    /// Names learnt, in order: a name's place is its id for good.
    names: [OnceLock<FastStr>; MAX_NAMES],
    /// Names learnt so far.
    known: AtomicUsize,
    /// Each learnt name's slot, or [`WAITING`].
    slot_of: [AtomicU8; MAX_NAMES],
    /// Each learnt name's calls while it waited in `other`: what it is weighed by.
    waited: [AtomicU64; MAX_NAMES],
    /// Who holds which slot; taken by a name's first request and by the reads.
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Each named slot's name id, in slot order.
    owners: Vec<usize>,
    /// Each slot's count when its name took it.
    base: [u64; MAX_CALLERS],
    /// At the last weighing: each slot's count and each name's `waited`, and when.
    last_counts: [u64; MAX_CALLERS],
    last_waited: Vec<u64>,
    weighed: Option<Instant>,
}

impl Default for Callers {
    fn default() -> Self {
        Callers {
            names: std::array::from_fn(|_| OnceLock::new()),
            known: AtomicUsize::new(0),
            slot_of: std::array::from_fn(|_| AtomicU8::new(WAITING)),
            waited: std::array::from_fn(|_| AtomicU64::new(0)),
            slots: Mutex::default(),
        }
    }
}

impl Callers {
    /// The slot a request from `caller` counts in.
    #[inline]
    pub(crate) fn slot(&self, caller: &str, trusted: bool) -> usize {
        if !trusted {
            return UNTRUSTED;
        }
        if caller.is_empty() {
            return NONE;
        }
        let known = self.known.load(Ordering::Acquire);
        for (id, name) in self.names[..known].iter().enumerate() {
            if name.get().is_some_and(|n| n == caller) {
                return self.slot_of(id);
            }
        }
        if known == MAX_NAMES || !fit_for_a_label(caller) {
            return OTHER;
        }
        self.learn(caller)
    }

    #[inline]
    fn slot_of(&self, id: usize) -> usize {
        match self.slot_of[id].load(Ordering::Relaxed) {
            WAITING => {
                self.waited[id].fetch_add(1, Ordering::Relaxed);
                OTHER
            }
            slot => usize::from(slot),
        }
    }

    #[cold]
    fn learn(&self, caller: &str) -> usize {
        let mut slots = self.slots();
        let known = self.known.load(Ordering::Acquire);
        // Another thread may have learnt it meanwhile.
        if let Some(id) = self.names[..known]
            .iter()
            .position(|n| n.get().is_some_and(|n| n == caller))
        {
            return self.slot_of(id);
        }
        if known == MAX_NAMES {
            return OTHER;
        }
        let _ = self.names[known].set(FastStr::new(caller));
        if slots.owners.len() < MAX_CALLERS {
            // A slot never held before: its count is zero.
            let slot = slots.owners.len();
            slots.owners.push(known);
            self.slot_of[known].store(slot as u8, Ordering::Relaxed);
        }
        self.known.store(known + 1, Ordering::Release);
        self.slot_of(known)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each slot's label, for the slots that have one (`counts` are per slot, since start),
    /// after giving the busiest waiting callers their slots if a window has passed.
    pub(crate) fn read(&self, counts: &[u64; SLOTS]) -> Vec<(FastStr, u64)> {
        self.read_at(counts, Instant::now())
    }

    fn read_at(&self, counts: &[u64; SLOTS], now: Instant) -> Vec<(FastStr, u64)> {
        let mut slots = self.slots();
        if slots
            .weighed
            .is_none_or(|then| now.saturating_duration_since(then) >= WINDOW)
        {
            self.weigh(&mut slots, counts);
            slots.weighed = Some(now);
        }
        let mut out: Vec<(FastStr, u64)> = slots
            .owners
            .iter()
            .enumerate()
            .filter_map(|(slot, &id)| {
                // Another reader's counts may be older than the last change of hands.
                let n = counts[slot].saturating_sub(slots.base[slot]);
                Some((self.names[id].get()?.clone(), n))
            })
            .collect();
        for (slot, label) in [(OTHER, "other"), (UNTRUSTED, "untrusted"), (NONE, "none")] {
            if counts[slot] > 0 {
                out.push((FastStr::from_static_str(label), counts[slot]));
            }
        }
        out
    }

    /// Gives the quietest named slots over the window to the busiest waiting names that made
    /// more than twice their calls.
    fn weigh(&self, slots: &mut Slots, counts: &[u64; SLOTS]) {
        let known = self.known.load(Ordering::Acquire);
        let waited: Vec<u64> = self.waited[..known]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        let since = |now: &[u64], then: &[u64], i: usize| {
            now[i].saturating_sub(then.get(i).copied().unwrap_or(0))
        };
        let mut quiet: Vec<(u64, usize)> = (0..slots.owners.len())
            .map(|slot| (since(counts, &slots.last_counts, slot), slot))
            .collect();
        quiet.sort_unstable();
        let mut busy: Vec<(u64, usize)> = (0..known)
            .filter(|&id| self.slot_of[id].load(Ordering::Relaxed) == WAITING)
            .map(|id| (since(&waited, &slots.last_waited, id), id))
            .collect();
        busy.sort_unstable_by(|a, b| b.cmp(a));
        for (&(calls, id), &(least, slot)) in busy.iter().zip(&quiet) {
            if calls < MIN_CALLS || calls <= least.saturating_mul(2) {
                break;
            }
            let leaving = slots.owners[slot];
            self.slot_of[leaving].store(WAITING, Ordering::Relaxed);
            self.slot_of[id].store(slot as u8, Ordering::Relaxed);
            slots.owners[slot] = id;
            slots.base[slot] = counts[slot];
        }
        slots.last_counts.copy_from_slice(&counts[..MAX_CALLERS]);
        slots.last_waited = waited;
    }
}

/// Whether a caller's name may be a label value as it is: a service name (letters, digits,
/// `-`, `_`, `.`, `:`, `/`, at most 64 bytes), and not one of the slots' own names.
fn fit_for_a_label(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
        && !["other", "untrusted", "none"]
            .iter()
            .any(|own| name.eq_ignore_ascii_case(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_get_slots_until_they_run_out_and_strangers_never_take_one() {
        let callers = Callers::default();
        assert_eq!(callers.slot("im-gateway", true), 0);
        assert_eq!(callers.slot("im-group", true), 1);
        assert_eq!(callers.slot("im-gateway", true), 0);
        assert_eq!(callers.slot("made-up", false), UNTRUSTED);
        assert_eq!(callers.slot("", true), NONE);
        // Names a label could not carry as they are, or the slots' own, take no slot.
        for odd in ["a\"b", "line\nbreak", "other", "untrusted", &"x".repeat(65)] {
            assert_eq!(callers.slot(odd, true), OTHER, "{odd:?}");
        }
        for i in 2..MAX_CALLERS {
            assert_eq!(callers.slot(&format!("service-{i}"), true), i);
        }
        assert_eq!(callers.slot("one-too-many", true), OTHER);
        assert_eq!(callers.slot("im-group", true), 1);

        let mut counts = [0u64; SLOTS];
        counts[0] = 5;
        counts[UNTRUSTED] = 2;
        let read = callers.read(&counts);
        assert_eq!(read[0], (FastStr::new("im-gateway"), 5));
        assert_eq!(
            read.len(),
            MAX_CALLERS + 1,
            "named slots, and untrusted which counted"
        );
        assert_eq!(read.last().unwrap(), &(FastStr::new("untrusted"), 2));
    }

    /// Calls `name` made `n` times, counted as the method's shards would count them.
    fn call(callers: &Callers, counts: &mut [u64; SLOTS], name: &str, n: u64) {
        for _ in 0..n {
            counts[callers.slot(name, true)] += 1;
        }
    }

    fn count(read: &[(FastStr, u64)], name: &str) -> Option<u64> {
        read.iter().find(|(n, _)| n == name).map(|&(_, c)| c)
    }

    #[test]
    fn busy_callers_in_other_take_the_quietest_slots_and_no_series_goes_back() {
        let callers = Callers::default();
        let mut counts = [0u64; SLOTS];
        for i in 0..MAX_CALLERS {
            call(&callers, &mut counts, &format!("service-{i}"), 100);
        }
        let t0 = Instant::now();
        let mut reads = vec![callers.read_at(&counts, t0)];

        // A window in which service-3 makes few calls and three latecomers wait in other.
        for i in 0..MAX_CALLERS {
            let n = if i == 3 { 10 } else { 100 };
            call(&callers, &mut counts, &format!("service-{i}"), n);
        }
        call(&callers, &mut counts, "late-heavy", 1000);
        call(&callers, &mut counts, "late-mid", 300);
        // Not more than twice the quietest named slot left (service-0's 100).
        call(&callers, &mut counts, "late-light", 150);
        assert_eq!(callers.slot("late-heavy", true), OTHER);
        counts[OTHER] += 1;
        // Within the window nothing changes hands.
        reads.push(callers.read_at(&counts, t0 + WINDOW / 2));
        assert_eq!(callers.slot("late-heavy", true), OTHER);
        counts[OTHER] += 1;
        assert_eq!(count(reads.last().unwrap(), "late-heavy"), None);

        reads.push(callers.read_at(&counts, t0 + WINDOW));
        assert_eq!(callers.slot("late-heavy", true), 3, "the quietest slot");
        assert_eq!(callers.slot("late-mid", true), 0, "the next quietest");
        assert_eq!(callers.slot("late-light", true), OTHER);
        assert_eq!(callers.slot("service-3", true), OTHER);
        assert_eq!(callers.slot("service-0", true), OTHER);
        counts[3] += 1;
        counts[0] += 1;
        counts[OTHER] += 3;
        call(&callers, &mut counts, "late-heavy", 49);
        reads.push(callers.read_at(&counts, t0 + WINDOW + WINDOW / 2));
        let last = reads.last().unwrap();
        // A new name's count starts at its slot: its calls from before stay in other.
        assert_eq!(count(last, "late-heavy"), Some(50));
        assert_eq!(count(last, "late-mid"), Some(1));
        assert_eq!(count(last, "service-3"), None, "{last:?}");
        assert_eq!(count(last, "service-1"), Some(200));
        assert_eq!(count(last, "other"), Some(counts[OTHER]));
        assert_eq!(last.len(), MAX_CALLERS + 1);

        // The one that left comes back busier than the one that took its slot.
        call(&callers, &mut counts, "service-3", 500);
        call(&callers, &mut counts, "late-heavy", 5);
        for i in [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] {
            call(&callers, &mut counts, &format!("service-{i}"), 100);
        }
        call(&callers, &mut counts, "late-mid", 100);
        reads.push(callers.read_at(&counts, t0 + 2 * WINDOW));
        assert_eq!(callers.slot("service-3", true), 3);
        assert_eq!(callers.slot("late-heavy", true), OTHER);

        // No label's count ever went down from one read to the next.
        for pair in reads.windows(2) {
            for (name, before) in &pair[0] {
                if let Some(after) = count(&pair[1], name) {
                    assert!(after >= *before, "{name}: {before} then {after}");
                }
            }
        }
    }
}
