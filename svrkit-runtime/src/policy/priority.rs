//! Where a request stands in the order overload control sheds in: its *level*.
//!
//! A level combines the business priority (the IDL method's `priority`, inherited by every
//! call made while serving the request) with a user priority: a hash of the request's user
//! key into [`USER_LEVELS`] levels, re-seeded every wall-clock hour so that no user is always
//! shed first. Level 0 is shed last; the server admits the levels below its admission level.
//!
//! Every process computes the same level for the same request, from the same header fields:
//! a request that fans out into several calls is admitted by all its servers or shed at the
//! first one, instead of failing at one of them after the others did the work. A request with
//! no user key is ranked by its trace id, which every hop of its call chain shares.

use std::time::Instant;

use crate::clock;
use crate::random;
use crate::service::Priority;

/// User priorities per business priority.
pub const USER_LEVELS: u32 = 128;

/// Levels in all: four business priorities times [`USER_LEVELS`].
pub const LEVELS: u32 = 4 * USER_LEVELS;

/// The level of a request of `priority` for `user` (0 to `USER_LEVELS - 1`).
#[inline]
pub fn level(priority: Priority, user: u32) -> u32 {
    (priority.to_wire() - 1) * USER_LEVELS + user.min(USER_LEVELS - 1)
}

/// The user priority of `user_key` (or, when it is 0, of `trace_id`) in the hour `now` falls
/// in.
#[inline]
pub fn user_level(user_key: u64, trace_id: &[u8], now: Instant) -> u32 {
    let key = if user_key != 0 {
        user_key
    } else {
        // FNV-1a over the trace id: stable, and a trace id is already random.
        trace_id.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    user_level_in_hour(key, clock::unix_hour(now))
}

/// The user priority of `key` in wall-clock hour `hour`.
pub(crate) fn user_level_in_hour(key: u64, hour: u64) -> u32 {
    (random::mix(key ^ random::mix(hour.wrapping_add(0x5eed))) % u64::from(USER_LEVELS)) as u32
}

/// The level of a request with this header's priority, user key and trace id.
#[inline]
pub fn of_header(header: &crate::frame::Header, now: Instant) -> u32 {
    level(
        Priority::from_wire(header.priority),
        user_level(header.user_key, &header.trace_id, now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_priority_orders_before_user_priority() {
        assert_eq!(level(Priority::Critical, 0), 0);
        assert_eq!(level(Priority::Critical, 127), 127);
        assert_eq!(level(Priority::High, 0), 128);
        assert_eq!(level(Priority::Low, 127), LEVELS - 1);
        assert_eq!(level(Priority::Low, 999), LEVELS - 1);
    }

    #[test]
    fn a_user_keeps_a_level_for_the_hour_and_gets_a_new_one_after() {
        let spread: std::collections::HashSet<u32> =
            (1..=10_000).map(|k| user_level_in_hour(k, 7)).collect();
        assert_eq!(spread.len(), USER_LEVELS as usize, "keys cover every level");
        assert_eq!(user_level_in_hour(42, 7), user_level_in_hour(42, 7));
        let moved = (1..=1_000)
            .filter(|&k| user_level_in_hour(k, 7) != user_level_in_hour(k, 8))
            .count();
        assert!(moved > 900, "re-seeding moves almost every user: {moved}");
        // Without a user key the trace id decides, the same way on every hop.
        let now = Instant::now();
        assert_eq!(
            user_level(0, b"trace-a", now),
            user_level(0, b"trace-a", now)
        );
    }
}
