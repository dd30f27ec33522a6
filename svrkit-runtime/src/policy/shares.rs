//! Fair shares of admitted work among the peers a server does not trust.
//!
//! DAGOR's user levels spread users over the shedding order by a hash of their key, which is
//! fair to users who each send a little. A stranger who sends a lot is not shed for it: one
//! address (or one valid account) that floods at a level the cut admits pushes the cut below
//! every other user of that priority. So each untrusted request is counted against its
//! *principal*: the user an authenticating hook named, or else the peer's address. A
//! principal that has already had its share of the current epoch ranks last among its
//! priority until the epoch ends; within its share an anonymous request ranks just above
//! that, and an authenticated one by its user's hash, as a trusted request would.
//!
//! This is a ranking, not a drop: while the server is not overloaded every level is admitted
//! and a principal over its share is served like anyone. Under overload the cut reaches the
//! principals over their share first, so each one keeps about its share of the capacity.
//!
//! The share of an epoch (100 ms) is the capacity the server showed when last overloaded,
//! divided among the principals that sent anything in the previous epoch, and never less
//! than what the principals admitted in that epoch had on average, nor than [`FLOOR`].
//! Principals are counted in a fixed table of [`SLOTS`] counters indexed by a hash seeded
//! at random per server, so the memory is fixed whatever the number of peers and nothing is
//! locked; two principals that share a slot share a count, which at worst ranks one of them
//! lower under overload, and which two do cannot be chosen from outside. An IPv6 peer is
//! counted by its /64.
//!
//! Trusted peers (a service's own callers, which speak for many users each) are not counted.

use crate::random;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counters in the table (a power of two).
pub const SLOTS: usize = 4096;

/// Requests per epoch every principal may have before it counts as over its share.
pub const FLOOR: u32 = 4;

/// How long a count lasts.
pub const EPOCH: Duration = Duration::from_millis(100);

/// The per-principal counts of admitted work (see the module documentation).
#[derive(Debug)]
pub struct Shares {
    base: Instant,
    /// Random per table, so that nobody can work out offline which address shares a slot
    /// with the stranger they want ranked last.
    seed: u64,
    /// When the current epoch ends (nanoseconds since `base`).
    ends: AtomicU64,
    /// Requests admitted this epoch, by slot.
    admitted: Box<[AtomicU32]>,
    /// Which slots sent a request this epoch, one bit each.
    arrived: Box<[AtomicU64]>,
    /// This epoch's share.
    share: AtomicU32,
}

/// A principal's place in the table, from [`Shares::check`].
#[derive(Clone, Copy, Debug)]
pub struct Slot(usize);

impl Shares {
    /// An empty table whose first epoch starts at `now`.
    pub fn new(now: Instant) -> Shares {
        Shares::seeded(now, random::random())
    }

    fn seeded(now: Instant, seed: u64) -> Shares {
        Shares {
            base: now,
            seed,
            ends: AtomicU64::new(nanos(EPOCH)),
            admitted: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            arrived: (0..SLOTS / 64).map(|_| AtomicU64::new(0)).collect(),
            share: AtomicU32::new(FLOOR),
        }
    }

    /// Notes a request of the principal `key` at `now`: its slot, and whether the principal
    /// has had its share of this epoch. `capacity` is the server's, in requests a second (0
    /// if not known yet).
    pub fn check(&self, key: u64, now: Instant, capacity: f64) -> (Slot, bool) {
        self.roll(now, capacity);
        let slot = (random::mix(key ^ self.seed) as usize) & (SLOTS - 1);
        self.arrived[slot / 64].fetch_or(1 << (slot % 64), Relaxed);
        let over = self.admitted[slot].load(Relaxed) >= self.share.load(Relaxed);
        (Slot(slot), over)
    }

    /// Counts an admitted request of the principal at `slot`.
    pub fn admitted(&self, slot: Slot) {
        self.admitted[slot.0].fetch_add(1, Relaxed);
    }

    /// The share principals have this epoch.
    pub fn share(&self) -> u32 {
        self.share.load(Relaxed)
    }

    /// Starts a new epoch if the current one is over: the thread that moves the end sums
    /// and clears the counts; the others go on with the old ones meanwhile.
    fn roll(&self, now: Instant, capacity: f64) {
        let at = nanos(now.saturating_duration_since(self.base));
        let ends = self.ends.load(Relaxed);
        if at < ends
            || self
                .ends
                .compare_exchange(ends, at + nanos(EPOCH), Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let admitted: u64 = self
            .admitted
            .iter()
            .map(|c| u64::from(c.swap(0, Relaxed)))
            .sum();
        let active: u64 = self
            .arrived
            .iter()
            .map(|w| u64::from(w.swap(0, Relaxed).count_ones()))
            .sum();
        self.share
            .store(share(capacity, admitted, active.max(1)), Relaxed);
    }
}

/// The share of one of `active` principals: the capacity of an epoch divided among them, or
/// what they were admitted on average if that was more, and at least [`FLOOR`].
fn share(capacity: f64, admitted: u64, active: u64) -> u32 {
    let of_capacity = (capacity * EPOCH.as_secs_f64() / active as f64) as u64;
    let seen = admitted / active;
    u32::try_from(of_capacity.max(seen))
        .unwrap_or(u32::MAX)
        .max(FLOOR)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_share_is_known_until_the_epoch_ends() {
        let t0 = Instant::now();
        // A fixed seed, under which the keys below have slots of their own.
        let shares = Shares::seeded(t0, 0);
        let (flood, light) = (1, 2);
        let mut over = 0;
        for _ in 0..100 {
            let (slot, o) = shares.check(flood, t0, 0.0);
            if o {
                over += 1;
            } else {
                shares.admitted(slot);
            }
        }
        assert_eq!(
            over,
            100 - FLOOR as usize,
            "the first epoch's share is the floor"
        );
        let (_, o) = shares.check(light, t0, 0.0);
        assert!(!o, "another principal has its own count");
        // The next epoch: two principals were active; the flood had the floor admitted.
        let t1 = t0 + EPOCH;
        let (_, o) = shares.check(flood, t1, 0.0);
        assert!(!o, "counts start again");
        assert_eq!(shares.share(), FLOOR);
    }

    #[test]
    fn the_share_is_the_capacity_divided_among_the_active_principals() {
        let t0 = Instant::now();
        let shares = Shares::seeded(t0, 0);
        for key in 0..10 {
            shares.check(key, t0, 0.0);
        }
        // 10,000 a second is 1,000 an epoch, 100 for each of ten.
        shares.check(0, t0 + EPOCH, 10_000.0);
        assert_eq!(shares.share(), 100);
        assert_eq!(share(0.0, 900, 3), 300, "what they had, when more");
        assert_eq!(share(10.0, 0, 50), FLOOR);
    }
}
