//! The runtime's random numbers: a per-thread SplitMix64 generator for jitter, sampling and
//! trace ids (unique, not secret), and the mix that lets a client and a server hash a user
//! to the same priority.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// A seed for a thread's generator. `RandomState` is keyed from the OS's randomness once per
/// process and varies per thread after; hashing the thread's id and the time mixes in more.
pub(crate) fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    h.finish()
}

/// A random 64-bit number from a per-thread generator (SplitMix64): for jitter and sampling,
/// not secrets.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(step)
}

/// A random number in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

/// Advances a SplitMix64 state and gives its next number.
pub(crate) fn step(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    mix(s)
}

/// A strong 64-bit mix (SplitMix64's finaliser): equal inputs give equal outputs in every
/// process, which is what lets a client and a server agree on a user's priority.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
