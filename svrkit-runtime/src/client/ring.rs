//! Consistent hashing with bounded load: each endpoint is placed on a ring at many points
//! (virtual nodes), and a call goes to the first endpoint clockwise of its key's hash whose
//! load is within `balance` times the average (Mirrokni, Thorup and Zadimoghaddam's bound).
//! All of a user's calls reach the same replica while it is healthy and not much busier than
//! the rest; when the set changes, only the keys of the endpoints that came or went move.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Call;
use super::balance::{Balancer, PowerOfTwo};
use super::endpoint::{DEFAULT_WEIGHT, Endpoint};
use crate::random;

/// The consistent-hash balancer, keyed by [`Call::key`] (the user key, unless a layer set
/// another), with points per endpoint in proportion to its [weight](Endpoint::weight). Calls
/// without a key are spread by [`PowerOfTwo`].
#[derive(Debug)]
pub struct Ring {
    vnodes: usize,
    balance: f64,
    built: ArcSwapOption<Built>,
}

impl Default for Ring {
    /// 100 points per endpoint; loads within 1.25 times the average.
    fn default() -> Ring {
        Ring::new(100, 1.25)
    }
}

/// The ring for one set of endpoints.
#[derive(Debug)]
struct Built {
    /// The endpoints it was built for (held, so that their addresses identify them).
    endpoints: Vec<Arc<Endpoint>>,
    /// Their weights then.
    weights: Vec<u32>,
    /// (hash, index in `endpoints`), sorted by hash.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// A ring with `vnodes` points per endpoint, sending a key elsewhere when its endpoint has
    /// more than `balance` (at least 1) times the average load.
    pub fn new(vnodes: usize, balance: f64) -> Ring {
        Ring {
            vnodes: vnodes.max(1),
            balance: balance.max(1.0),
            built: ArcSwapOption::empty(),
        }
    }

    fn build(&self, endpoints: &[Arc<Endpoint>]) -> Arc<Built> {
        let mut points = Vec::with_capacity(endpoints.len() * self.vnodes);
        for (i, e) in endpoints.iter().enumerate() {
            let base = fnv(e.addr().as_bytes());
            // Points in proportion to weight (the default weight gets `vnodes`).
            let n = (self.vnodes as u64 * u64::from(e.weight()))
                .div_ceil(u64::from(DEFAULT_WEIGHT))
                .max(1);
            for v in 0..n {
                points.push((random::mix(base ^ random::mix(v + 1)), i));
            }
        }
        points.sort_unstable();
        Arc::new(Built {
            endpoints: endpoints.to_vec(),
            weights: endpoints.iter().map(|e| e.weight()).collect(),
            points,
        })
    }

    /// The ring for `endpoints`, rebuilt when the set changed.
    fn ring(&self, endpoints: &[Arc<Endpoint>]) -> Arc<Built> {
        if let Some(built) = &*self.built.load()
            && built.endpoints.len() == endpoints.len()
            && built
                .endpoints
                .iter()
                .zip(endpoints)
                .zip(&built.weights)
                .all(|((a, b), &w)| Arc::ptr_eq(a, b) && b.weight() == w)
        {
            return built.clone();
        }
        let built = self.build(endpoints);
        self.built.store(Some(built.clone()));
        built
    }
}

impl Balancer for Ring {
    fn pick(&self, call: &Call, endpoints: &[Arc<Endpoint>]) -> Option<usize> {
        if call.key == 0 || endpoints.len() == 1 {
            return PowerOfTwo.pick(call, endpoints);
        }
        let ring = self.ring(endpoints);
        let hash = random::mix(call.key);
        let start = ring.points.partition_point(|&(h, _)| h < hash);
        let total: usize = endpoints.iter().map(|e| e.load()).sum();
        // The bound counts this call: an idle set always has room.
        let cap = (self.balance * (total + 1) as f64 / endpoints.len() as f64).ceil() as usize;
        let len = ring.points.len();
        let mut first_healthy = None;
        for j in 0..len {
            let i = ring.points[(start + j) % len].1;
            let e = &endpoints[i];
            if !e.is_healthy() {
                continue;
            }
            if e.load() < cap {
                return Some(i);
            }
            first_healthy.get_or_insert(i);
        }
        first_healthy.or(Some(ring.points[start % len].1))
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{test_call, test_endpoints};

    #[test]
    fn a_user_stays_on_one_replica_and_users_spread() {
        let ring = Ring::default();
        let endpoints = test_endpoints(3);
        let mut per = [0usize; 3];
        for user in 1..=3_000u64 {
            let i = ring.pick(&test_call(user), &endpoints).unwrap();
            assert_eq!(ring.pick(&test_call(user), &endpoints), Some(i));
            per[i] += 1;
        }
        for n in per {
            assert!((700..1_300).contains(&n), "{per:?}");
        }
    }

    #[test]
    fn a_change_of_set_moves_only_the_keys_of_what_changed() {
        let ring = Ring::default();
        let four = test_endpoints(4);
        let three = &four[..3];
        let mut moved = 0;
        for user in 1..=4_000u64 {
            let before = ring.pick(&test_call(user), three).unwrap();
            let after = ring.pick(&test_call(user), &four).unwrap();
            if after != before {
                assert_eq!(after, 3, "a key moved between two replicas that stayed");
                moved += 1;
            }
        }
        // About a quarter of the keys go to the newcomer.
        assert!((700..1_300).contains(&moved), "{moved}");
    }

    #[test]
    fn a_busy_or_down_replica_passes_its_keys_on() {
        let ring = Ring::default();
        let endpoints = test_endpoints(3);
        let user = 42;
        let home = ring.pick(&test_call(user), &endpoints).unwrap();
        // Loaded past 1.25 times the average (counting this call): the next one clockwise.
        let _load: Vec<_> = (0..10).map(|_| endpoints[home].start()).collect();
        let busy = ring.pick(&test_call(user), &endpoints).unwrap();
        assert_ne!(busy, home);
        drop(_load);
        assert_eq!(ring.pick(&test_call(user), &endpoints), Some(home));
        for _ in 0..5 {
            endpoints[home].failed();
        }
        assert!(!endpoints[home].is_healthy());
        assert_ne!(ring.pick(&test_call(user), &endpoints), Some(home));
    }
}
