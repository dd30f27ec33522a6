//! Throttles for what strangers can try against accounts: failed logins per name and per
//! address, and registrations per address.
//!
//! **Failures** ([`Failures`]). Every attempt is charged before its password is checked and
//! refunded if it was right, so that a burst of concurrent guesses is counted as it arrives
//! rather than after the hashes finish. Past `free` charges a key is locked for
//! `base * 2^(charges - free)`, at most `max`: five free guesses, then 1, 2, 4, ... seconds,
//! so a name sees some twenty guesses an hour instead of argon2's fifty a second. A key
//! forgets its failures `forget` after the last one. A lock is a delay, not a ban: the owner
//! of a name under attack gets in once it lapses, and the lock says when.
//!
//! **Budgets** ([`Budget`]): a token bucket per key, as deep as a period's allowance and
//! refilled over the period: registrations per address an hour (taken names cost the same as
//! free ones, so probing which names exist is held to the same rate), and a user's sends and
//! deliveries (messages times recipients) a minute.
//!
//! Both live in one process's memory, bounded in entries ([`MAX_KEYS`]): the gateway calls
//! logins with the name as its user key, so a name's attempts reach the same account replica
//! when balancing is by key. When full, the entries that matter least go first (forgotten
//! ones, then those with the fewest failures), so flooding the table with fresh keys cannot
//! wipe out a lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Keys a table holds at most (some 100 bytes each).
pub const MAX_KEYS: usize = 100_000;

/// What a throttled caller is told: when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locked {
    /// Milliseconds until the key is let in again.
    pub retry_after_ms: u64,
}

/// How failures lock a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failures without a delay.
    pub free: u32,
    /// The first lock (milliseconds); each further failure doubles it ...
    pub base_ms: u64,
    /// ... up to this.
    pub max_ms: u64,
    /// Failures are forgotten this long after the last one.
    pub forget_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    charges: u32,
    locked_until_ms: u64,
    last_ms: u64,
}

/// Failed attempts per key (a name, an address), with exponential locks.
#[derive(Debug)]
pub struct Failures {
    policy: FailurePolicy,
    keys: Mutex<HashMap<String, Entry>>,
}

impl Failures {
    /// An empty table.
    pub fn new(policy: FailurePolicy) -> Failures {
        Failures {
            policy,
            keys: Mutex::default(),
        }
    }

    /// Charges an attempt of `key` at `now_ms`, or says how long it is locked.
    ///
    /// # Errors
    /// [`Locked`] while the key is locked; the attempt is not charged then.
    pub fn charge(&self, key: &str, now_ms: u64) -> Result<(), Locked> {
        let policy = self.policy;
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = keys.get_mut(key) {
            if now_ms < entry.locked_until_ms {
                return Err(Locked {
                    retry_after_ms: entry.locked_until_ms - now_ms,
                });
            }
            if now_ms.saturating_sub(entry.last_ms) >= policy.forget_ms {
                entry.charges = 0;
            }
            entry.charges += 1;
            entry.last_ms = now_ms;
            entry.locked_until_ms = now_ms.saturating_add(lock_ms(&policy, entry.charges));
            return Ok(());
        }
        if keys.len() >= MAX_KEYS {
            make_room(&mut keys, &policy, now_ms);
        }
        let entry = Entry {
            charges: 1,
            locked_until_ms: now_ms.saturating_add(lock_ms(&policy, 1)),
            last_ms: now_ms,
        };
        keys.insert(key.to_owned(), entry);
        Ok(())
    }

    /// Refunds a charge of `key` whose attempt succeeded; with `forget`, forgets the key's
    /// failures altogether (a name whose owner just proved the password).
    pub fn refund(&self, key: &str, forget: bool) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if forget {
            keys.remove(key);
            return;
        }
        if let Some(entry) = keys.get_mut(key) {
            entry.charges = entry.charges.saturating_sub(1);
            if entry.charges < self.policy.free {
                entry.locked_until_ms = 0;
            }
        }
    }

    /// Whether `key`'s last charge brought its first lock (to log once per attack, not
    /// once per guess).
    pub fn just_locked(&self, key: &str, now_ms: u64) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(key)
            .is_some_and(|e| e.charges == self.policy.free && e.locked_until_ms > now_ms)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The lock after `charges` failures.
fn lock_ms(policy: &FailurePolicy, charges: u32) -> u64 {
    if charges < policy.free {
        return 0;
    }
    let doublings = (charges - policy.free).min(40);
    policy
        .base_ms
        .saturating_mul(1 << doublings)
        .min(policy.max_ms)
}

/// Drops forgotten keys; if that is not enough, the quarter with the fewest failures.
fn make_room(keys: &mut HashMap<String, Entry>, policy: &FailurePolicy, now_ms: u64) {
    keys.retain(|_, e| now_ms.saturating_sub(e.last_ms) < policy.forget_ms);
    if keys.len() < MAX_KEYS {
        return;
    }
    let mut counts: Vec<u32> = keys.values().map(|e| e.charges).collect();
    let quarter = counts.len() / 4;
    let (_, &mut cut, _) = counts.select_nth_unstable(quarter);
    keys.retain(|_, e| e.charges > cut);
    if keys.len() >= MAX_KEYS {
        // Every key has the same count: any quarter will do.
        let drop: Vec<String> = keys.keys().take(quarter.max(1)).cloned().collect();
        for key in drop {
            keys.remove(&key);
        }
    }
}

/// A token bucket per key, `count` deep and refilled at `count` per `period`, kept as the
/// time its bucket will be full again (GCRA: one integer per key, exact).
#[derive(Debug)]
pub struct Budget {
    /// Milliseconds a token takes to come back.
    every_ms: u64,
    /// How far ahead of now a key's full time may be.
    depth_ms: u64,
    keys: Mutex<HashMap<String, u64>>,
}

impl Budget {
    /// Full buckets of `per_hour` (at least 1) an hour.
    pub fn new(per_hour: u32) -> Budget {
        Budget::per(per_hour, 3_600_000)
    }

    /// Full buckets of `count` (at least 1) per `period_ms`.
    pub fn per(count: u32, period_ms: u64) -> Budget {
        let count = u64::from(count.max(1));
        let every_ms = (period_ms / count).max(1);
        Budget {
            every_ms,
            depth_ms: every_ms * count,
            keys: Mutex::default(),
        }
    }

    /// Takes one of `key`'s tokens at `now_ms`.
    ///
    /// # Errors
    /// [`Locked`], saying when the next token comes, when the bucket is empty.
    pub fn take(&self, key: &str, now_ms: u64) -> Result<(), Locked> {
        self.take_n(key, 1, now_ms)
    }

    /// Takes `n` of `key`'s tokens at once at `now_ms`, or none.
    ///
    /// # Errors
    /// [`Locked`], saying when there will be `n`, when there are fewer now (never, when
    /// `n` is more than the bucket holds: then it says the bucket's whole period).
    pub fn take_n(&self, key: &str, n: u64, now_ms: u64) -> Result<(), Locked> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            // Full buckets carry no information.
            keys.retain(|_, full_at| *full_at > now_ms);
            if keys.len() >= MAX_KEYS {
                return Err(Locked {
                    retry_after_ms: self.every_ms,
                });
            }
        }
        let cost = self.every_ms.saturating_mul(n);
        if cost > self.depth_ms {
            return Err(Locked {
                retry_after_ms: self.depth_ms,
            });
        }
        let full_at = keys.entry(key.to_owned()).or_insert(now_ms);
        let after = (*full_at).max(now_ms) + cost;
        if after - now_ms > self.depth_ms {
            return Err(Locked {
                retry_after_ms: after - now_ms - self.depth_ms,
            });
        }
        *full_at = after;
        Ok(())
    }
}

/// The key an address is counted under: an IPv4 address, or an IPv6 address's /64 (one
/// host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: FailurePolicy = FailurePolicy {
        free: 5,
        base_ms: 1_000,
        max_ms: 900_000,
        forget_ms: 3_600_000,
    };

    /// Guesses as fast as the lock lets them through for an hour; how many got through.
    fn guesses_in_an_hour(failures: &Failures) -> u32 {
        let mut now = 0;
        let mut through = 0;
        while now < 3_600_000 {
            match failures.charge("alice", now) {
                Ok(()) => {
                    through += 1;
                    now += 1;
                }
                Err(locked) => now += locked.retry_after_ms,
            }
        }
        through
    }

    #[test]
    fn guesses_at_a_name_are_held_to_a_few_an_hour() {
        let failures = Failures::new(POLICY);
        let through = guesses_in_an_hour(&failures);
        // 5 free, then locks of 1, 2, 4, ... s up to 15 min: about 20 in the hour.
        assert!((15..=25).contains(&through), "{through} guesses in an hour");
        let no_lock = Failures::new(FailurePolicy {
            free: u32::MAX,
            ..POLICY
        });
        assert!(guesses_in_an_hour(&no_lock) > 1_000_000);
    }

    #[test]
    fn a_locked_key_says_when_and_a_success_forgets_its_failures() {
        let failures = Failures::new(POLICY);
        for _ in 0..5 {
            failures.charge("alice", 0).unwrap();
        }
        assert_eq!(
            failures.charge("alice", 10),
            Err(Locked {
                retry_after_ms: 990
            })
        );
        // Other names are not touched.
        failures.charge("bob", 10).unwrap();
        failures.charge("alice", 1_000).unwrap();
        failures.refund("alice", true);
        for _ in 0..4 {
            failures.charge("alice", 1_001).unwrap();
        }
    }

    #[test]
    fn a_refund_lifts_the_lock_its_own_charge_set() {
        let failures = Failures::new(POLICY);
        for _ in 0..4 {
            failures.charge("10.0.0.1", 0).unwrap();
        }
        // The fifth charge locks; it was a right password, and its refund unlocks.
        failures.charge("10.0.0.1", 0).unwrap();
        failures.refund("10.0.0.1", false);
        failures.charge("10.0.0.1", 0).unwrap();
    }

    #[test]
    fn failures_are_forgotten_an_interval_after_the_last() {
        let failures = Failures::new(POLICY);
        for _ in 0..5 {
            failures.charge("alice", 0).unwrap();
        }
        assert!(failures.charge("alice", 3_599_999).is_ok());
        assert!(failures.charge("alice", 7_300_000).is_ok());
        for _ in 0..3 {
            failures.charge("alice", 7_300_000).unwrap();
        }
    }

    #[test]
    fn a_flood_of_fresh_keys_does_not_wipe_out_a_lock() {
        let failures = Failures::new(POLICY);
        for _ in 0..8 {
            let _ = failures.charge("alice", 0);
        }
        for n in 0..MAX_KEYS as u64 + 10 {
            failures.charge(&format!("k{n}"), 1).unwrap();
        }
        assert!(failures.len() <= MAX_KEYS);
        assert!(
            failures.charge("alice", 2).is_err(),
            "alice is still locked"
        );
    }

    #[test]
    fn registrations_are_held_to_the_hourly_budget_and_refill() {
        let budget = Budget::new(10);
        for _ in 0..10 {
            budget.take("10.0.0.1", 0).unwrap();
        }
        let locked = budget.take("10.0.0.1", 0).unwrap_err();
        assert_eq!(locked.retry_after_ms, 360_000);
        budget.take("10.0.0.2", 0).unwrap();
        budget.take("10.0.0.1", 360_000).unwrap();
        assert!(budget.take("10.0.0.1", 360_000).is_err());
    }

    #[test]
    fn a_budget_takes_many_at_once_or_none() {
        // 6,000 deliveries a minute: 10 ms each.
        let budget = Budget::per(6_000, 60_000);
        budget.take_n("ann", 1_000, 0).unwrap();
        for _ in 0..5 {
            budget.take_n("ann", 1_000, 0).unwrap();
        }
        let locked = budget.take_n("ann", 1_000, 0).unwrap_err();
        assert_eq!(locked.retry_after_ms, 10_000, "a thousand more in 10 s");
        budget.take_n("ann", 1, 9_990).unwrap();
        assert!(budget.take_n("ann", 1_000, 9_990).is_err(), "all or none");
        budget.take_n("ann", 998, 9_990).unwrap();
        assert!(
            budget.take_n("ben", 6_001, 0).is_err(),
            "more than it ever holds"
        );
        budget.take_n("ben", 6_000, 0).unwrap();
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::5".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7");
    }
}
