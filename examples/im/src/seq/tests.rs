//! The allocator on the store, and many allocators under leases on an in-memory arbiter
//! with a paused clock: takeover, fencing and tenures.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svrkit_runtime::{Code, Context, Server, Status};
use tokio::time::Instant;

use super::lease::{Arbiter, LeaseConfig, Leased, Owner, Table};
use super::{BoxFuture, STEP, SeqAlloc, SeqStoreService, StoreBounds, lock};
use crate::im::seq::{AllocReq, SeqAllocSvr, SeqStoreSvrClient, SeqStoreSvrServer};
use crate::store::{Redb, SeqStore, StoreConfig};

fn on_store(store: &Arc<Redb>) -> SeqAlloc {
    let server = Server::builder()
        .add_service(SeqStoreSvrServer::new(SeqStoreService::new(store.clone())))
        .build();
    let bounds = StoreBounds(SeqStoreSvrClient::new(server.local_channel()));
    SeqAlloc::new(Arc::new(bounds))
}

async fn try_alloc(seq: &SeqAlloc, uids: &[u64]) -> Result<Vec<u64>, Status> {
    let request = AllocReq {
        uids: uids.to_vec(),
        ..AllocReq::default()
    };
    Ok(seq.alloc(Context::default(), request).await?.seqs)
}

async fn alloc(seq: &SeqAlloc, uids: &[u64]) -> Vec<u64> {
    try_alloc(seq, uids).await.unwrap()
}

#[tokio::test]
async fn the_bound_is_durable_before_a_number_above_it_is_handed_out_and_a_restart_resumes_above_it()
 {
    let dir = std::env::temp_dir().join(format!("svrkit-im-seq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Redb::open(&dir, &StoreConfig::default()).unwrap());
    let seq = on_store(&store);
    // User 7 passes two raises; user 8 shares the section; user 100_007 is in another.
    let mut last = 0;
    for _ in 0..(2 * STEP + 5) {
        let next = alloc(&seq, &[7]).await[0];
        assert_eq!(next, last + 1);
        last = next;
        // Never above what is on disk.
        assert!(next <= store.max_seq(0).await.unwrap());
    }
    assert_eq!(alloc(&seq, &[8, 8, 100_007]).await, [1, 2, 1]);
    let bound = store.max_seq(0).await.unwrap();
    assert!(bound >= last && bound <= last + STEP, "{bound} for {last}");

    // A restart: a new allocator over the same store. Everyone in the section resumes
    // above the bound, which is above all that was handed out.
    drop(seq);
    let seq = on_store(&store);
    let after = alloc(&seq, &[7, 8, 100_007]).await;
    assert!(after[0] > last && after[1] > last, "{after:?} after {last}");
    assert!(after[2] > 1);
    drop((seq, store));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An arbiter in memory. Its clock is tokio's (paused in these tests); `rate` stretches
/// the TTLs it counts (below 1: its clock runs fast against the allocators').
struct World {
    rate: f64,
    next_lease: i64,
    leases: HashMap<i64, (Instant, Duration)>,
    allocators: HashMap<String, i64>,
    owners: BTreeMap<u32, Owner>,
    bounds: HashMap<u32, u64>,
    /// Every bound stored: (section, bound, when).
    raises: Vec<(u32, u64, Instant)>,
}

impl World {
    fn new(rate: f64) -> Arc<Mutex<World>> {
        Arc::new(Mutex::new(World {
            rate,
            next_lease: 0,
            leases: HashMap::new(),
            allocators: HashMap::new(),
            owners: BTreeMap::new(),
            bounds: HashMap::new(),
            raises: Vec::new(),
        }))
    }

    /// Drops expired leases and everything under them.
    fn expire(&mut self) {
        let now = Instant::now();
        self.leases.retain(|_, (end, _)| *end > now);
        let leases = &self.leases;
        self.allocators.retain(|_, l| leases.contains_key(l));
        self.owners.retain(|_, o| leases.contains_key(&o.lease));
    }

    fn counted(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.rate)
    }
}

/// One allocator's view of the arbiter; `cut` makes it unreachable for that allocator.
#[derive(Clone)]
struct Fake {
    world: Arc<Mutex<World>>,
    cut: Arc<AtomicBool>,
}

impl Fake {
    fn new(world: &Arc<Mutex<World>>) -> Fake {
        Fake {
            world: world.clone(),
            cut: Arc::default(),
        }
    }

    fn reach(&self) -> Result<std::sync::MutexGuard<'_, World>, Status> {
        if self.cut.load(Relaxed) {
            return Err(Status::new(Code::UNAVAILABLE, "cut off"));
        }
        let mut w = lock(&self.world);
        w.expire();
        Ok(w)
    }
}

impl Arbiter for Fake {
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<(i64, Duration), Status>> {
        Box::pin(async move {
            let mut w = self.reach()?;
            w.next_lease += 1;
            let lease = w.next_lease;
            let end = Instant::now() + w.counted(ttl);
            w.leases.insert(lease, (end, ttl));
            Ok((lease, ttl))
        })
    }

    fn renew(&self, lease: i64) -> BoxFuture<'_, Result<Option<Duration>, Status>> {
        Box::pin(async move {
            let mut w = self.reach()?;
            let Some(&(_, ttl)) = w.leases.get(&lease) else {
                return Ok(None);
            };
            let end = Instant::now() + w.counted(ttl);
            w.leases.insert(lease, (end, ttl));
            Ok(Some(ttl))
        })
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let mut w = self.reach()?;
            w.leases.remove(&lease);
            w.expire();
            Ok(())
        })
    }

    fn join<'a>(&'a self, holder: &'a str, lease: i64) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            self.reach()?.allocators.insert(holder.to_owned(), lease);
            Ok(())
        })
    }

    fn table(&self) -> BoxFuture<'_, Result<Table, Status>> {
        Box::pin(async move {
            let w = self.reach()?;
            Ok(Table {
                allocators: w.allocators.len(),
                owners: w.owners.clone(),
            })
        })
    }

    fn claim<'a>(
        &'a self,
        shard: u32,
        holder: &'a str,
        lease: i64,
    ) -> BoxFuture<'a, Result<bool, Status>> {
        Box::pin(async move {
            let mut w = self.reach()?;
            if w.owners.contains_key(&shard) || !w.leases.contains_key(&lease) {
                return Ok(false);
            }
            let owner = Owner {
                holder: holder.to_owned(),
                lease,
            };
            w.owners.insert(shard, owner);
            Ok(true)
        })
    }

    fn release(&self, shard: u32, lease: i64) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let mut w = self.reach()?;
            if w.owners.get(&shard).is_some_and(|o| o.lease == lease) {
                w.owners.remove(&shard);
            }
            Ok(())
        })
    }

    fn load(&self, section: u32) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move { Ok(self.reach()?.bounds.get(&section).copied().unwrap_or(0)) })
    }

    fn raise(
        &self,
        shard: u32,
        lease: i64,
        section: u32,
        max_seq: u64,
    ) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async move {
            let mut w = self.reach()?;
            if w.owners.get(&shard).is_none_or(|o| o.lease != lease) {
                return Ok(None);
            }
            let bound = w.bounds.get(&section).copied().unwrap_or(0).max(max_seq);
            w.bounds.insert(section, bound);
            w.raises.push((section, bound, Instant::now()));
            Ok(Some(bound))
        })
    }
}

const TTL: Duration = Duration::from_secs(3);
const SHARDS: u32 = 4;

struct Allocator {
    fake: Fake,
    leased: Arc<Leased>,
    keeper: tokio::task::JoinHandle<()>,
    seq: SeqAlloc,
}

fn allocator(world: &Arc<Mutex<World>>, holder: &str) -> Allocator {
    let fake = Fake::new(world);
    let config = LeaseConfig {
        shards: SHARDS,
        ttl: TTL,
    };
    let leased = Leased::new(Arc::new(fake.clone()), config);
    let keeper = leased.start(holder.to_owned());
    let seq = SeqAlloc::new(leased.clone());
    Allocator {
        fake,
        leased,
        keeper,
        seq,
    }
}

/// Waits (on the paused clock) until `done`, for at most a minute.
async fn until(mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < end, "not within a minute");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One allocation that succeeded: the sequence, which allocator, when.
type Served = (u64, &'static str, Instant);

/// Every 10 ms asks `a`, then `b`, for a sequence of `uid`, until `b` has answered five
/// times; every answer, in time order. Checks that sequences only grow in that order and
/// that `a` answered nothing once `b` had: the two never served at once.
async fn race(a: &SeqAlloc, b: &SeqAlloc, uid: u64) -> Vec<Served> {
    let mut served: Vec<Served> = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while served.iter().filter(|s| s.1 == "b").count() < 5 {
        for (who, seq) in [("a", a), ("b", b)] {
            match try_alloc(seq, &[uid]).await {
                Ok(seqs) => served.push((seqs[0], who, Instant::now())),
                Err(e) => assert_eq!(e.code(), Code::UNAVAILABLE, "{e}"),
            }
        }
        assert!(
            Instant::now() < end,
            "b did not serve uid {uid} within a minute"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for pair in served.windows(2) {
        assert!(pair[1].0 > pair[0].0, "went backwards: {pair:?}");
    }
    let first_b = served.iter().position(|s| s.1 == "b").unwrap();
    assert!(
        served[first_b..].iter().all(|s| s.1 == "b"),
        "both served: {:?}",
        &served[first_b.saturating_sub(1)..]
    );
    assert!(first_b > 0, "a served nothing");
    served
}

#[tokio::test(start_paused = true)]
async fn shards_are_shared_fairly_and_a_dead_allocators_go_to_the_survivor_which_resumes_above_all()
{
    let world = World::new(1.0);
    let a = allocator(&world, "a");
    until(|| a.leased.owned().len() == SHARDS as usize).await;
    // User 7 (section 0, shard 0) past a raise.
    let mut last = 0;
    for _ in 0..(STEP + 5) {
        last = alloc(&a.seq, &[7]).await[0];
    }

    let b = allocator(&world, "b");
    until(|| a.leased.owned().len() == 2 && b.leased.owned().len() == 2).await;
    let mut all = a.leased.owned();
    all.extend(b.leased.owned());
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "every shard, once");

    // Whoever has shard 0 now resumed user 7 above everything handed out.
    let (owner, other) = if a.leased.owned().contains(&0) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let next = alloc(&owner.seq, &[7]).await[0];
    assert!(next > last, "{next} after {last}");
    last = next;

    // The owner of shard 0 dies: its keeper stops, nothing renews its lease.
    owner.keeper.abort();
    let served = race(&owner.seq, &other.seq, 7).await;
    let first_b = served.iter().position(|s| s.1 == "b").unwrap();
    let (stale_last, _, stale_end) = served[first_b - 1];
    let (took, _, took_at) = served[first_b];
    assert!(stale_last > last);
    assert_eq!(other.leased.owned(), [0, 1, 2, 3]);
    // Before the survivor handed out `took`, the bound above it was durable.
    let w = lock(&world);
    assert!(
        w.raises
            .iter()
            .any(|&(section, bound, at)| section == 0 && bound >= took && at <= took_at),
        "no durable raise before {took}: {:?}",
        w.raises
    );
    // The takeover happened within a TTL and a keeper round of the last renewal.
    drop(w);
    assert!(took_at - stale_end <= TTL + TTL / 3 + Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn an_allocator_cut_off_from_the_arbiter_stops_before_its_shards_move() {
    let world = World::new(1.0);
    let a = allocator(&world, "a");
    until(|| a.leased.owned().len() == SHARDS as usize).await;
    let b = allocator(&world, "b");
    until(|| a.leased.owned().len() == 2 && b.leased.owned().len() == 2).await;
    let shard = a.leased.owned()[0];
    let uid = 7 + u64::from(shard) * super::SECTION_USERS;
    alloc(&a.seq, &[uid]).await;

    // `a` is cut off (a partition): it cannot renew and never hears that it lost.
    a.fake.cut.store(true, Relaxed);
    race(&a.seq, &b.seq, uid).await;
    // Reconnected, `a` learns its lease is gone and serves only what it claims anew.
    a.fake.cut.store(false, Relaxed);
    until(|| a.leased.owned().len() == 2 && b.leased.owned().len() == 2).await;
    assert_ne!(a.leased.lease(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn with_an_arbiter_clock_running_fast_a_stale_raise_is_fenced_and_nothing_is_handed_out_twice()
 {
    // The arbiter counts TTLs at a fifth: it frees a silent allocator's shards while that
    // allocator still believes its lease lives. Only the fenced raise keeps numbers unique.
    let world = World::new(0.2);
    let a = allocator(&world, "a");
    until(|| a.leased.owned().len() == SHARDS as usize).await;
    let mut handed: HashMap<u64, u64> = HashMap::new();
    let mut note = |seq: u64, by: &str| {
        assert!(
            handed.insert(seq, 0).is_none(),
            "{seq} handed out twice ({by})"
        );
    };
    for _ in 0..10 {
        note(alloc(&a.seq, &[7]).await[0], "a");
    }
    a.fake.cut.store(true, Relaxed);
    let b = allocator(&world, "b");
    until(|| b.leased.owned().contains(&0)).await;
    // Both believe they own shard 0 now. `b` starts above the persisted bound...
    for _ in 0..10 {
        note(alloc(&b.seq, &[7]).await[0], "b");
    }
    // ... and `a` can go on only up to the bound it had raised: its next raise is refused.
    a.fake.cut.store(false, Relaxed);
    loop {
        match try_alloc(&a.seq, &[7]).await {
            Ok(seqs) => note(seqs[0], "a"),
            Err(e) => {
                assert_eq!(e.code(), Code::UNAVAILABLE, "{e}");
                break;
            }
        }
    }
    assert!(!a.leased.owned().contains(&0), "a still serves shard 0");
}

#[tokio::test(start_paused = true)]
async fn a_shard_taken_back_resumes_from_the_bound_not_from_what_its_allocator_remembered() {
    let world = World::new(1.0);
    let a = allocator(&world, "a");
    until(|| a.leased.owned().len() == SHARDS as usize).await;
    let first = alloc(&a.seq, &[7]).await[0];
    // `a` gives everything back (as on a drain), `b` serves user 7 far ahead, then stops.
    let lease = a.leased.lease();
    a.keeper.abort();
    a.leased.stop().await.unwrap();
    let b = allocator(&world, "b");
    until(|| b.leased.owned().len() == SHARDS as usize).await;
    let mut far = 0;
    for _ in 0..(STEP + 10) {
        far = alloc(&b.seq, &[7]).await[0];
    }
    b.keeper.abort();
    b.leased.stop().await.unwrap();
    // `a` comes back with the memory of its first tenure still in its allocator.
    let keeper = a.leased.start("a".to_owned());
    until(|| a.leased.owned().len() == SHARDS as usize).await;
    assert_ne!(a.leased.lease(), lease);
    let next = alloc(&a.seq, &[7]).await[0];
    assert!(
        next > far,
        "{next} after {far} (first tenure ended at {first})"
    );
    keeper.abort();
}
