//! Many allocators: shards of sections owned under leases, and bounds fenced on ownership.
//!
//! Sections are grouped in `shards` shards (`section % shards`). An [`Arbiter`] (etcd in a
//! deployment, [`etcd::EtcdArbiter`](super::etcd::EtcdArbiter)) records which allocator
//! owns each shard, under that allocator's lease, and keeps every section's bound. Each
//! allocator runs a keeper ([`Leased::start`]) that renews its lease (on a task of its own)
//! and claims free shards up to its fair share (shards divided by live allocators, rounded up), or gives back what
//! is above it.
//!
//! Why no sequence is ever handed out twice or goes backwards for a user, whatever dies when:
//!
//! - **A lapsed allocator stops by itself.** Before every renewal the keeper notes the time;
//!   when the arbiter answers, the lease is taken to run until that time plus nine tenths
//!   of the TTL. The arbiter counts the TTL from when it received the renewal, which is
//!   later, so the allocator's own end comes first. Past it, [`Leased::tenure`] refuses and
//!   no number is handed out, even if the allocator is cut off from the arbiter and never
//!   learns that its shards went to another. (The tenth is the allowance for the two clocks
//!   running at different rates.)
//! - **A shard changes hands only after its lease ended.** The arbiter frees a shard when
//!   its owner's lease expires (or the owner gives it back, having stopped serving it
//!   first), and only then can another claim it.
//! - **A raise is fenced.** The arbiter stores a raised bound only while the raiser's lease
//!   still owns the shard. An allocator that lost the shard can hand out at most up to the
//!   bound it had raised; the new owner starts from the persisted bound, which is at least
//!   that, and raises it by a step before handing out anything above it.
//! - **A new tenure starts from the bound.** An allocator that regains a shard forgets what
//!   it knew of its sections ([`Bounds::tenure`]): another may have served them meanwhile.
//!
//! Uniqueness rests on the stored bounds alone. "Never backwards in time" rests also on the
//! first rule, so on the two clocks differing in rate by less than the tenth: an arbiter
//! whose clock runs faster can free a shard while its old owner still serves from memory
//! (below the bound it raised, so nothing repeats, but after the new owner's larger
//! numbers). One test runs exactly that case. The message store's own check, which refuses
//! an append at or below an inbox's head, keeps such a number out of every inbox.
//!
//! Time is `tokio::time::Instant`, so the tests run these rules on a paused clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svrkit_runtime::{Code, Status};
use tokio::time::Instant;

use super::{Bounds, BoxFuture, lock};

/// The owner of a shard, as the arbiter has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Where the owning allocator is served (its advertised address).
    pub holder: String,
    /// The lease it owns the shard under.
    pub lease: i64,
}

/// What the arbiter has: live allocators and shard owners.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Allocators whose lease lives.
    pub allocators: usize,
    /// Each owned shard's owner; a shard missing here is free.
    pub owners: BTreeMap<u32, Owner>,
}

/// Grants leases, records shard owners and keeps sections' bounds, fenced on ownership.
///
/// Every method may fail with `UNAVAILABLE` when the arbiter cannot be reached.
pub trait Arbiter: Send + Sync + 'static {
    /// Grants a lease of about `ttl`; answers its id and the TTL granted.
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<(i64, Duration), Status>>;
    /// Renews `lease`: `Some(ttl)` while it lives, `None` once it has expired.
    fn renew(&self, lease: i64) -> BoxFuture<'_, Result<Option<Duration>, Status>>;
    /// Ends `lease` now, freeing every shard under it.
    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<(), Status>>;
    /// Lists `holder` as a live allocator for as long as `lease` lives.
    fn join<'a>(&'a self, holder: &'a str, lease: i64) -> BoxFuture<'a, Result<(), Status>>;
    /// The live allocators and the shards' owners.
    fn table(&self) -> BoxFuture<'_, Result<Table, Status>>;
    /// Takes `shard` for `holder` under `lease` if nobody owns it; whether it did.
    fn claim<'a>(
        &'a self,
        shard: u32,
        holder: &'a str,
        lease: i64,
    ) -> BoxFuture<'a, Result<bool, Status>>;
    /// Frees `shard` if `lease` owns it.
    fn release(&self, shard: u32, lease: i64) -> BoxFuture<'_, Result<(), Status>>;
    /// A section's bound (0 when it has none yet).
    fn load(&self, section: u32) -> BoxFuture<'_, Result<u64, Status>>;
    /// Sets the section's bound to the larger of the stored one and `max_seq`, if `lease`
    /// still owns `shard`: the bound in force, or `None` when the lease does not own it.
    fn raise(
        &self,
        shard: u32,
        lease: i64,
        section: u32,
        max_seq: u64,
    ) -> BoxFuture<'_, Result<Option<u64>, Status>>;
}

/// `[app.seq]` for many allocators.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Shards the sections are grouped in; every allocator and caller must agree.
    pub shards: u32,
    /// The lease's TTL: how long shards stay unserved after their owner dies.
    pub ttl: Duration,
}

/// The shard of `section`.
pub fn shard_of(section: u32, shards: u32) -> u32 {
    section % shards.max(1)
}

/// Bounds kept by an [`Arbiter`], served while this allocator's lease owns their shard.
pub struct Leased {
    arbiter: Arc<dyn Arbiter>,
    config: LeaseConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leased")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// The lease this allocator holds, if any.
    lease: Option<i64>,
    /// When this allocator takes its lease to end (before the arbiter does).
    until: Option<Instant>,
    /// The shards owned, each with its tenure.
    owned: HashMap<u32, u64>,
    /// Tenures handed out so far.
    tenures: u64,
}

impl State {
    /// Stops serving every shard.
    fn lose_all(&mut self) {
        self.lease = None;
        self.until = None;
        self.owned.clear();
    }
}

/// How often the keeper looks for a lease before the first is granted.
const NO_LEASE_YET: Duration = Duration::from_millis(50);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The part of a granted TTL an allocator counts on (see the module's documentation).
fn counted(ttl: Duration) -> Duration {
    ttl - ttl / 10
}

impl Leased {
    /// Bounds kept by `arbiter`; nothing is served until [`start`](Leased::start).
    pub fn new(arbiter: Arc<dyn Arbiter>, config: LeaseConfig) -> Arc<Leased> {
        Arc::new(Leased {
            arbiter,
            config,
            state: Mutex::default(),
        })
    }

    /// Starts the keeper, as `holder` (the address callers reach this allocator at): it
    /// renews the lease every third of the TTL and claims or gives back shards. It runs until
    /// the returned handle is aborted: abort it before [`stop`](Leased::stop), or its next
    /// round takes a new lease and claims shards again.
    pub fn start(self: &Arc<Self>, holder: String) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            // Renewal runs on a task of its own, so that slow claims or table reads never
            // hold it past the part of the TTL the allocator counts on. It ends with the
            // keeper, whose abort drops this guard.
            let renewer = {
                let (this, holder) = (this.clone(), holder.clone());
                tokio::spawn(async move {
                    loop {
                        if let Err(e) = this.keep_lease(&holder).await {
                            tracing::warn!("seq lease: {e}");
                        }
                        tokio::time::sleep(this.config.ttl / 3).await;
                    }
                })
            };
            let _renewer = AbortOnDrop(renewer);
            loop {
                let Some(lease) = this.lease() else {
                    tokio::time::sleep(NO_LEASE_YET).await;
                    continue;
                };
                if let Err(e) = this.balance(&holder, lease).await {
                    tracing::warn!("seq shards: {e}");
                }
                tokio::time::sleep(this.config.ttl / 3).await;
            }
        })
    }

    /// Stops serving and gives every shard back at once (revoking the lease), so that other
    /// allocators take them without waiting for the TTL.
    ///
    /// # Errors
    /// When the arbiter cannot be reached: the shards then free themselves when the lease
    /// expires.
    pub async fn stop(&self) -> Result<(), Status> {
        let lease = {
            let mut s = lock(&self.state);
            let lease = s.lease;
            s.lose_all();
            lease
        };
        match lease {
            Some(lease) => self.arbiter.revoke(lease).await,
            None => Ok(()),
        }
    }

    /// The shards this allocator owns now.
    pub fn owned(&self) -> Vec<u32> {
        let mut owned: Vec<u32> = lock(&self.state).owned.keys().copied().collect();
        owned.sort_unstable();
        owned
    }

    /// The lease it holds now.
    pub fn lease(&self) -> Option<i64> {
        lock(&self.state).lease
    }

    /// Renews the lease, or grants one when there is none (any more).
    async fn keep_lease(&self, holder: &str) -> Result<(), Status> {
        if self.renew().await?.is_none() {
            self.grant(holder).await?;
        }
        Ok(())
    }

    /// Renews the lease held, if any: `None` when there is none (any more).
    async fn renew(&self) -> Result<Option<i64>, Status> {
        let Some(lease) = lock(&self.state).lease else {
            return Ok(None);
        };
        let sent = Instant::now();
        match self.arbiter.renew(lease).await? {
            Some(ttl) => {
                let mut s = lock(&self.state);
                if s.lease == Some(lease) {
                    s.until = Some(sent + counted(ttl));
                }
                Ok(Some(lease))
            }
            None => {
                let mut s = lock(&self.state);
                if s.lease == Some(lease) {
                    tracing::warn!(lease, "seq lease expired: serving no shard until regranted");
                    s.lose_all();
                }
                Ok(None)
            }
        }
    }

    async fn grant(&self, holder: &str) -> Result<i64, Status> {
        let sent = Instant::now();
        let (lease, ttl) = self.arbiter.grant(self.config.ttl).await?;
        self.arbiter.join(holder, lease).await?;
        let mut s = lock(&self.state);
        s.lease = Some(lease);
        s.until = Some(sent + counted(ttl));
        Ok(lease)
    }

    /// Claims free shards up to the fair share, or gives back those above it.
    async fn balance(&self, holder: &str, lease: i64) -> Result<(), Status> {
        let table = self.arbiter.table().await?;
        let shards = self.config.shards.max(1);
        let fair = shards.div_ceil(u32::try_from(table.allocators.max(1)).unwrap_or(u32::MAX));
        let mine: Vec<u32> = {
            let mut s = lock(&self.state);
            // A shard the arbiter does not list under this lease is not this allocator's,
            // whatever it believed.
            s.owned
                .retain(|shard, _| table.owners.get(shard).is_some_and(|o| o.lease == lease));
            // And one it lists under this lease is: a claim whose answer was lost went
            // through. Nobody else can have served it meanwhile, but its state starts anew.
            for (&shard, owner) in &table.owners {
                if owner.lease == lease && !s.owned.contains_key(&shard) {
                    s.tenures += 1;
                    let tenure = s.tenures;
                    s.owned.insert(shard, tenure);
                }
            }
            let mut mine: Vec<u32> = s.owned.keys().copied().collect();
            mine.sort_unstable();
            mine
        };
        let count = u32::try_from(mine.len()).unwrap_or(u32::MAX);
        if count > fair {
            for &shard in mine.iter().rev().take((count - fair) as usize) {
                // Stop serving first, then free it: another may take it at once.
                lock(&self.state).owned.remove(&shard);
                self.arbiter.release(shard, lease).await?;
                tracing::info!(shard, "seq shard given back");
            }
            return Ok(());
        }
        let mut count = count;
        for shard in 0..shards {
            if count >= fair {
                break;
            }
            if table.owners.contains_key(&shard) {
                continue;
            }
            if self.arbiter.claim(shard, holder, lease).await? {
                let mut s = lock(&self.state);
                if s.lease != Some(lease) {
                    break;
                }
                s.tenures += 1;
                let tenure = s.tenures;
                s.owned.insert(shard, tenure);
                count += 1;
                tracing::info!(shard, lease, "seq shard taken");
            }
        }
        Ok(())
    }
}

impl Bounds for Leased {
    fn tenure(&self, section: u32) -> Result<u64, Status> {
        let shard = shard_of(section, self.config.shards);
        let s = lock(&self.state);
        match (s.owned.get(&shard), s.until) {
            (Some(&tenure), Some(until)) if Instant::now() < until => Ok(tenure),
            (Some(_), _) => Err(Status::new(
                Code::UNAVAILABLE,
                format!("shard {shard}: this allocator's lease has lapsed"),
            )),
            (None, _) => Err(Status::new(
                Code::UNAVAILABLE,
                format!("section {section} (shard {shard}) is not served by this allocator"),
            )),
        }
    }

    fn load(&self, section: u32, _tenure: u64) -> BoxFuture<'_, Result<u64, Status>> {
        self.arbiter.load(section)
    }

    fn raise(&self, section: u32, tenure: u64, max_seq: u64) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            let shard = shard_of(section, self.config.shards);
            self.tenure(section)
                .and_then(|t| (t == tenure).then_some(()).ok_or_else(|| fenced(shard)))?;
            let lease = lock(&self.state).lease.ok_or_else(|| fenced(shard))?;
            match self.arbiter.raise(shard, lease, section, max_seq).await? {
                Some(bound) => Ok(bound),
                None => {
                    let mut s = lock(&self.state);
                    if s.owned.get(&shard) == Some(&tenure) {
                        s.owned.remove(&shard);
                    }
                    tracing::warn!(shard, "seq raise fenced: the shard has another owner");
                    Err(fenced(shard))
                }
            }
        })
    }
}

fn fenced(shard: u32) -> Status {
    Status::new(
        Code::UNAVAILABLE,
        format!("shard {shard} is no longer owned by this allocator"),
    )
}
