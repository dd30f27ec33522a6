//! Who calls a method: the server's requests counted by calling service (the `caller` of
//! each request header), bounded so that callers cannot grow the series without limit.
//!
//! A method keeps the first [`MAX_CALLERS`] caller names that trusted peers give it, each
//! with a count; later names, and names that are not service names (a label could not carry
//! them as they are), count as `other`. Strangers' requests count as `untrusted` whatever
//! name they give (a stranger could otherwise take every slot with made-up names), and
//! requests that name no caller as `none`. Finding a caller's slot is a scan of the names
//! claimed so far (a service has a few callers); only a name's first request takes a lock.
//! The counts live in the method's per-thread shards. The slots go to the first names, not
//! the busiest: the callers a method has among trusted peers are few and fixed by the
//! deployment, and a first-come table needs no lock once filled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use faststr::FastStr;

/// Callers named per method; the rest are `other`.
pub const MAX_CALLERS: usize = 16;

/// Slots per method: the named callers, then `other`, `untrusted` and `none`.
pub(crate) const SLOTS: usize = MAX_CALLERS + 3;
const OTHER: usize = MAX_CALLERS;
const UNTRUSTED: usize = MAX_CALLERS + 1;
const NONE: usize = MAX_CALLERS + 2;

/// The caller names of one method's slots.
#[derive(Debug, Default)]
pub(crate) struct Callers {
    names: [OnceLock<FastStr>; MAX_CALLERS],
    /// Slots with a name, in order.
    claimed: AtomicUsize,
    claiming: Mutex<()>,
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
        let claimed = self.claimed.load(Ordering::Acquire);
        for (i, name) in self.names[..claimed].iter().enumerate() {
            if name.get().is_some_and(|n| n == caller) {
                return i;
            }
        }
        if claimed == MAX_CALLERS || !fit_for_a_label(caller) {
            return OTHER;
        }
        self.claim(caller)
    }

    #[cold]
    fn claim(&self, caller: &str) -> usize {
        let _claiming = self.claiming.lock().unwrap_or_else(|e| e.into_inner());
        let claimed = self.claimed.load(Ordering::Acquire);
        // Another thread may have claimed it meanwhile.
        if let Some(i) = self.names[..claimed]
            .iter()
            .position(|n| n.get().is_some_and(|n| n == caller))
        {
            return i;
        }
        if claimed == MAX_CALLERS {
            return OTHER;
        }
        let _ = self.names[claimed].set(FastStr::new(caller));
        self.claimed.store(claimed + 1, Ordering::Release);
        claimed
    }

    /// Each slot's label, for the slots that have one (`counts` are per slot).
    pub(crate) fn read(&self, counts: &[u64; SLOTS]) -> Vec<(FastStr, u64)> {
        let claimed = self.claimed.load(Ordering::Acquire);
        let mut out: Vec<(FastStr, u64)> = self.names[..claimed]
            .iter()
            .zip(counts)
            .filter_map(|(name, &n)| Some((name.get()?.clone(), n)))
            .collect();
        for (slot, label) in [(OTHER, "other"), (UNTRUSTED, "untrusted"), (NONE, "none")] {
            if counts[slot] > 0 {
                out.push((FastStr::from_static_str(label), counts[slot]));
            }
        }
        out
    }
}

/// Whether a caller's name may be a label value as it is: a service name (letters, digits,
/// `-`, `_`, `.`, `:`, `/`, at most 64 bytes), and not one of the slots' own names.
fn fit_for_a_label(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
        && !matches!(name, "other" | "untrusted" | "none")
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
}
