//! `im.seq`: the sequence generator of WeChat's seqsvr, as allocators and a store of bounds.
//!
//! - Users are grouped in **sections** of [`SECTION_USERS`] consecutive ids. A section has
//!   one persisted bound, `max_seq`: no user of the section has been handed a sequence above
//!   it.
//! - An **allocator** ([`SeqAlloc`]) keeps every user's last sequence in memory and hands
//!   out the next one. When that would pass the section's bound, it first raises the bound
//!   by [`STEP`] where bounds persist ([`Bounds`]), and waits until it is durable. A raise
//!   happens once per `STEP` numbers of the section's busiest user, so nearly every
//!   allocation is a memory increment.
//! - After a restart or a takeover, a section's users resume from its persisted bound: every
//!   number handed out afterwards is above every one handed out before, whatever was lost.
//!
//! Two deployments of the same allocator:
//!
//! - **One allocator** ([`StoreBounds`]): bounds live behind the store service
//!   ([`SeqStoreService`], `im.seq.SeqStoreSvr`, on the backend's store), reached through
//!   the framework's RPC, in process or apart. It serves every section.
//! - **Many allocators** ([`lease`], feature `etcd` for the [`etcd`] arbiter): sections are
//!   grouped in shards, each owned by one allocator under an etcd lease; bounds live in
//!   etcd, and a raise is fenced on the owner's lease. Callers follow the routing table
//!   ([`route`]). When an allocator dies, another takes its shards once its lease expires.
//!   `docs/scale-out.md` describes the guarantees and what a failure costs.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use svrkit_runtime::{Code, Context, Status};

use crate::im::seq::{
    AllocReq, AllocResp, CurrentReq, CurrentResp, SectionReq, SectionResp, SeqAllocSvr,
    SeqStoreSvr, SeqStoreSvrClient,
};
use crate::store::SeqStore;

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod lease;
pub mod route;
#[cfg(test)]
mod tests;

/// Consecutive user ids that share one persisted `max_seq`.
pub const SECTION_USERS: u64 = 100_000;
/// How far a section's bound is raised at a time.
pub const STEP: u64 = 10_000;
/// Ids one `Alloc` may ask for (a group's members).
pub const MAX_ALLOC: usize = 10_000;

/// `[app.seq]`: how the allocators share the sections.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeqConfig {
    /// `"store"` (the default): one allocator, bounds behind `im.seq.SeqStoreSvr`.
    /// `"etcd"`: many allocators owning shards under leases on `[discovery] etcd`, bounds in
    /// etcd (build with the `etcd` feature).
    pub arbiter: String,
    /// Shards the sections are grouped in (`"etcd"`); every allocator and caller of a
    /// deployment must agree, and etcd records the first one's.
    pub shards: u32,
    /// An allocator's lease (`"etcd"`): how long its shards stay unserved after it dies.
    pub lease_ttl_s: u32,
    /// How long a caller waits for a shard to have a live owner before it fails.
    pub wait_ms: u64,
}

impl Default for SeqConfig {
    fn default() -> SeqConfig {
        SeqConfig {
            arbiter: "store".to_owned(),
            shards: 16,
            lease_ttl_s: 3,
            wait_ms: 5000,
        }
    }
}

impl SeqConfig {
    /// Whether the allocators are many, under leases.
    pub fn leased(&self) -> bool {
        self.arbiter == "etcd"
    }

    fn check(&self) -> Result<(), String> {
        match self.arbiter.as_str() {
            "store" => Ok(()),
            "etcd" if cfg!(feature = "etcd") => {
                if self.shards == 0 || self.lease_ttl_s == 0 {
                    Err("app.seq: shards and lease_ttl_s must be at least 1".into())
                } else {
                    Ok(())
                }
            }
            "etcd" => Err(
                "app.seq.arbiter = \"etcd\": this build has no etcd: rebuild with \
                           the `etcd` cargo feature (it needs protoc)"
                    .into(),
            ),
            other => Err(format!(
                "app.seq.arbiter: {other:?}: expected \"store\" or \"etcd\""
            )),
        }
    }
}

/// The allocator's bounds under a lease on `[discovery] etcd`, not yet started.
///
/// # Errors
/// A configuration problem, or etcd out of reach.
pub async fn leased(
    config: &svrkit_runtime::Config,
    seq: &SeqConfig,
) -> Result<Arc<lease::Leased>, String> {
    seq.check()?;
    #[cfg(feature = "etcd")]
    {
        let arbiter = etcd::EtcdArbiter::connect(&config.discovery, seq.shards)
            .await
            .map_err(|e| e.message().to_owned())?;
        let lease = lease::LeaseConfig {
            shards: seq.shards,
            ttl: std::time::Duration::from_secs(u64::from(seq.lease_ttl_s)),
        };
        Ok(lease::Leased::new(Arc::new(arbiter), lease))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = config;
        unreachable!("checked above")
    }
}

/// A caller's way to many allocators: the routing table, followed on `[discovery] etcd`.
///
/// # Errors
/// A configuration problem, or etcd out of reach.
pub async fn routed(
    config: &svrkit_runtime::Config,
    seq: &SeqConfig,
) -> Result<route::Sequences, String> {
    seq.check()?;
    #[cfg(feature = "etcd")]
    {
        let owned = config.clone();
        let service = crate::im::seq::SeqAllocSvrClient::DESCRIPTOR.name;
        let connect: route::Connect = Box::new(move |addr: &str| {
            owned
                .channel_to(service, [addr.to_owned()])
                .map_err(|e| e.to_string())
        });
        let wait = std::time::Duration::from_millis(seq.wait_ms);
        let routes = route::Routes::new(seq.shards, wait, connect);
        etcd::follow(&config.discovery, seq.shards, &routes)
            .await
            .map_err(|e| e.message().to_owned())?;
        Ok(route::Sequences::Routed(routes))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = config;
        unreachable!("checked above")
    }
}

/// A boxed future borrowing its receiver, for [`Bounds`] behind a `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where sections' bounds persist, and whether this allocator may serve a section now.
///
/// A *tenure* names one unbroken period in which this allocator serves a section. The
/// allocator keeps a section's state in memory only within one tenure: when the tenure
/// changes (the section was lost and taken again, and another allocator may have served
/// it meanwhile), it loads the bound afresh.
pub trait Bounds: Send + Sync + 'static {
    /// The tenure under which this allocator serves `section` now, or why it may not
    /// (`UNAVAILABLE`: the caller should ask the section's owner).
    ///
    /// # Errors
    /// When the section is not this allocator's, or its lease has lapsed.
    fn tenure(&self, section: u32) -> Result<u64, Status>;

    /// The section's persisted bound.
    fn load(&self, section: u32, tenure: u64) -> BoxFuture<'_, Result<u64, Status>>;

    /// Raises the section's bound to at least `max_seq`, durably, and answers the bound
    /// now in force. Refused when `tenure` is no longer current.
    fn raise(&self, section: u32, tenure: u64, max_seq: u64) -> BoxFuture<'_, Result<u64, Status>>;
}

/// Bounds behind the store service: one allocator serving every section, always.
#[derive(Clone, Debug)]
pub struct StoreBounds(pub SeqStoreSvrClient);

impl Bounds for StoreBounds {
    fn tenure(&self, _section: u32) -> Result<u64, Status> {
        Ok(0)
    }

    fn load(&self, section: u32, _tenure: u64) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            let request = SectionReq {
                section,
                ..SectionReq::default()
            };
            Ok(self.0.load(&request).await?.max_seq)
        })
    }

    fn raise(
        &self,
        section: u32,
        _tenure: u64,
        max_seq: u64,
    ) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            let request = SectionReq {
                section,
                max_seq,
                ..SectionReq::default()
            };
            Ok(self.0.raise(&request).await?.max_seq)
        })
    }
}

/// The allocator: `im.seq.SeqAllocSvr`.
pub struct SeqAlloc {
    bounds: Arc<dyn Bounds>,
    sections: Mutex<HashMap<u32, Arc<SectionSlot>>>,
}

impl std::fmt::Debug for SeqAlloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqAlloc").finish_non_exhaustive()
    }
}

/// One section: its state behind a plain mutex (never held across an await, so an
/// allocation is a few memory operations), and a lock that only the allocations needing the
/// store (a load or a raise) take, one at a time, while the others go on.
#[derive(Debug, Default)]
struct SectionSlot {
    state: Mutex<Section>,
    store: tokio::sync::Mutex<()>,
}

/// One section's state in memory, within one tenure.
#[derive(Debug, Default)]
struct Section {
    /// The tenure the state belongs to.
    tenure: u64,
    /// `None` until loaded in this tenure.
    max_seq: Option<u64>,
    /// The bound when the section was loaded: where every user of it resumes.
    floor: u64,
    /// Each user's last sequence (indexed by `uid % SECTION_USERS`; 0: at the floor), grown
    /// as users appear.
    last: Vec<u64>,
}

impl Section {
    /// Forgets everything learnt in an earlier tenure: another allocator may have served
    /// the section since.
    fn enter(&mut self, tenure: u64) {
        if self.tenure != tenure {
            *self = Section {
                tenure,
                ..Section::default()
            };
        }
    }

    fn current(&self, index: usize) -> u64 {
        self.last.get(index).copied().unwrap_or(0).max(self.floor)
    }

    /// The user's next sequence, if it is within the durable bound.
    fn try_next(&mut self, index: usize) -> Option<u64> {
        let next = self.current(index) + 1;
        if next > self.max_seq? {
            return None;
        }
        if self.last.len() <= index {
            self.last.resize(index + 1, 0);
        }
        self.last[index] = next;
        Some(next)
    }
}

/// The section of `uid`, and the user's index in it.
///
/// # Errors
/// For id 0 and ids past the last section.
pub fn section_of(uid: u64) -> Result<(u32, usize), Status> {
    if uid == 0 {
        return Err(Status::new(Code::INVALID_ARGUMENT, "user id 0"));
    }
    let section = u32::try_from(uid / SECTION_USERS)
        .map_err(|_| Status::new(Code::INVALID_ARGUMENT, "user id out of range"))?;
    let index = usize::try_from(uid % SECTION_USERS).unwrap_or(0);
    Ok((section, index))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SeqAlloc {
    /// An allocator whose sections' bounds persist in `bounds`.
    pub fn new(bounds: Arc<dyn Bounds>) -> SeqAlloc {
        SeqAlloc {
            bounds,
            sections: Mutex::default(),
        }
    }

    fn section(&self, section: u32) -> Arc<SectionSlot> {
        lock(&self.sections).entry(section).or_default().clone()
    }

    /// The next sequence of `uid`, durable bound first.
    async fn next(&self, uid: u64) -> Result<u64, Status> {
        let (id, index) = section_of(uid)?;
        let slot = self.section(id);
        loop {
            // Asked again on every pass: a load or a raise may have waited past the end of
            // the lease, and a number must never be handed out after it.
            let tenure = self.bounds.tenure(id)?;
            {
                let mut s = lock(&slot.state);
                s.enter(tenure);
                if let Some(next) = s.try_next(index) {
                    return Ok(next);
                }
            }
            // Loaded and raised by one allocation at a time; the others that fit within
            // the current bound do not wait for it.
            let _store = slot.store.lock().await;
            let wanted = {
                let mut s = lock(&slot.state);
                s.enter(tenure);
                match s.max_seq {
                    None => None,
                    Some(max) if s.current(index) < max => continue,
                    Some(max) => Some(max + STEP),
                }
            };
            let Some(wanted) = wanted else {
                let max = self.bounds.load(id, tenure).await?;
                let mut s = lock(&slot.state);
                if s.tenure == tenure {
                    s.max_seq = Some(max);
                    s.floor = max;
                }
                continue;
            };
            let raised = self.bounds.raise(id, tenure, wanted).await?;
            let mut s = lock(&slot.state);
            // The store answers the larger of what it had and what was asked.
            if s.tenure == tenure {
                s.max_seq = s.max_seq.map(|m| m.max(raised));
            }
        }
    }
}

impl SeqAllocSvr for SeqAlloc {
    async fn alloc(&self, _ctx: Context, request: AllocReq) -> Result<AllocResp, Status> {
        if request.uids.len() > MAX_ALLOC {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                format!("at most {MAX_ALLOC} ids per call"),
            ));
        }
        let mut seqs = Vec::with_capacity(request.uids.len());
        for &uid in &request.uids {
            seqs.push(self.next(uid).await?);
        }
        Ok(AllocResp {
            seqs,
            ..AllocResp::default()
        })
    }

    async fn current(&self, _ctx: Context, request: CurrentReq) -> Result<CurrentResp, Status> {
        let (id, index) = section_of(request.uid)?;
        let slot = self.section(id);
        loop {
            let tenure = self.bounds.tenure(id)?;
            {
                let mut s = lock(&slot.state);
                s.enter(tenure);
                if s.max_seq.is_some() {
                    return Ok(CurrentResp {
                        seq: s.current(index),
                        ..CurrentResp::default()
                    });
                }
            }
            let _store = slot.store.lock().await;
            if lock(&slot.state).max_seq.is_some() {
                continue;
            }
            let max = self.bounds.load(id, tenure).await?;
            let mut s = lock(&slot.state);
            if s.tenure == tenure && s.max_seq.is_none() {
                s.max_seq = Some(max);
                s.floor = max;
            }
        }
    }
}

/// The store: `im.seq.SeqStoreSvr`.
pub struct SeqStoreService {
    store: Arc<dyn SeqStore>,
}

impl std::fmt::Debug for SeqStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqStoreService").finish_non_exhaustive()
    }
}

impl SeqStoreService {
    /// The store service over `store`.
    pub fn new(store: Arc<dyn SeqStore>) -> SeqStoreService {
        SeqStoreService { store }
    }
}

impl SeqStoreSvr for SeqStoreService {
    async fn load(&self, _ctx: Context, request: SectionReq) -> Result<SectionResp, Status> {
        let max_seq = self.store.max_seq(request.section).await?;
        Ok(SectionResp {
            max_seq,
            ..SectionResp::default()
        })
    }

    async fn raise(&self, _ctx: Context, request: SectionReq) -> Result<SectionResp, Status> {
        let max_seq = self
            .store
            .raise_max_seq(request.section, request.max_seq)
            .await?;
        Ok(SectionResp {
            max_seq,
            ..SectionResp::default()
        })
    }
}
