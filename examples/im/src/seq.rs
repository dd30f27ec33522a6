//! `im.seq`: the sequence generator of WeChat's seqsvr, as an allocator and a store.
//!
//! - Users are grouped in **sections** of [`SECTION_USERS`] consecutive ids. A section has
//!   one persisted bound, `max_seq`: no user of the section has been handed a sequence above
//!   it.
//! - The **allocator** ([`SeqAlloc`]) keeps every user's last sequence in memory and hands
//!   out the next one. When that would pass the section's bound, it first raises the bound
//!   by [`STEP`] through the **store** ([`SeqStoreService`], `im.seq.SeqStoreSvr`), which
//!   answers once the new bound is on disk. A raise happens once per `STEP` numbers of the
//!   section's busiest user, so nearly every allocation is a memory increment.
//! - After a restart, a section's users resume from its persisted bound: every number handed
//!   out afterwards is above every one handed out before, whatever the crash lost.
//!
//! The allocator and the store talk through the framework's RPC, so they run in one process
//! (in-process channel) or apart (by configuration).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use svrkit_runtime::{Code, Context, Status};

use crate::im::seq::{
    AllocReq, AllocResp, CurrentReq, CurrentResp, SectionReq, SectionResp, SeqAllocSvr,
    SeqStoreSvr, SeqStoreSvrClient,
};
use crate::store::SeqStore;

/// Consecutive user ids that share one persisted `max_seq`.
pub const SECTION_USERS: u64 = 100_000;
/// How far a section's bound is raised at a time.
pub const STEP: u64 = 10_000;
/// Ids one `Alloc` may ask for (a group's members).
pub const MAX_ALLOC: usize = 10_000;

/// The allocator: `im.seq.SeqAllocSvr`.
#[derive(Debug)]
pub struct SeqAlloc {
    store: SeqStoreSvrClient,
    sections: Mutex<HashMap<u32, Arc<SectionSlot>>>,
}

/// One section: its state behind a plain mutex (never held across an await, so an
/// allocation is a few memory operations), and a lock that only the allocations needing the
/// store (a load or a raise) take, one at a time, while the others go on.
#[derive(Debug, Default)]
struct SectionSlot {
    state: Mutex<Section>,
    store: tokio::sync::Mutex<()>,
}

/// One section's state in memory.
#[derive(Debug, Default)]
struct Section {
    /// `None` until loaded from the store.
    max_seq: Option<u64>,
    /// The bound when the section was loaded: where every user of it resumes.
    floor: u64,
    /// Each user's last sequence (indexed by `uid % SECTION_USERS`; 0: at the floor), grown
    /// as users appear.
    last: Vec<u64>,
}

impl Section {
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

fn section_of(uid: u64) -> Result<(u32, usize), Status> {
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
    /// An allocator whose sections' bounds live behind `store`.
    pub fn new(store: SeqStoreSvrClient) -> SeqAlloc {
        SeqAlloc {
            store,
            sections: Mutex::default(),
        }
    }

    fn section(&self, section: u32) -> Arc<SectionSlot> {
        lock(&self.sections).entry(section).or_default().clone()
    }

    /// Loads a section's bound from the store: every user of it resumes there. The caller
    /// holds the section's `store` lock.
    async fn load(&self, id: u32, slot: &SectionSlot) -> Result<(), Status> {
        let request = SectionReq {
            section: id,
            ..SectionReq::default()
        };
        let max = self.store.load(&request).await?.max_seq;
        let mut s = lock(&slot.state);
        s.max_seq = Some(max);
        s.floor = max;
        Ok(())
    }

    /// The next sequence of `uid`, durable bound first.
    async fn next(&self, uid: u64) -> Result<u64, Status> {
        let (id, index) = section_of(uid)?;
        let slot = self.section(id);
        loop {
            if let Some(next) = lock(&slot.state).try_next(index) {
                return Ok(next);
            }
            // Loaded and raised by one allocation at a time; the others that fit within
            // the current bound do not wait for it.
            let _store = slot.store.lock().await;
            let (loaded, wanted) = {
                let s = lock(&slot.state);
                match s.max_seq {
                    None => (false, 0),
                    Some(max) if s.current(index) < max => continue,
                    Some(max) => (true, max + STEP),
                }
            };
            if !loaded {
                self.load(id, &slot).await?;
                continue;
            }
            let request = SectionReq {
                section: id,
                max_seq: wanted,
                ..SectionReq::default()
            };
            let raised = self.store.raise(&request).await?.max_seq;
            let mut s = lock(&slot.state);
            // The store answers the larger of what it had and what was asked.
            s.max_seq = s.max_seq.map(|m| m.max(raised));
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
        if lock(&slot.state).max_seq.is_none() {
            let _store = slot.store.lock().await;
            if lock(&slot.state).max_seq.is_none() {
                self.load(id, &slot).await?;
            }
        }
        let seq = lock(&slot.state).current(index);
        Ok(CurrentResp {
            seq,
            ..CurrentResp::default()
        })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use svrkit_runtime::{Context, Server};

    use super::{STEP, SeqAlloc, SeqStoreService};
    use crate::im::seq::{AllocReq, SeqAllocSvr, SeqStoreSvrClient, SeqStoreSvrServer};
    use crate::store::{Redb, SeqStore, StoreConfig};

    fn allocator(store: &Arc<Redb>) -> SeqAlloc {
        let server = Server::builder()
            .add_service(SeqStoreSvrServer::new(SeqStoreService::new(store.clone())))
            .build();
        SeqAlloc::new(SeqStoreSvrClient::new(server.local_channel()))
    }

    async fn alloc(seq: &SeqAlloc, uids: &[u64]) -> Vec<u64> {
        let request = AllocReq {
            uids: uids.to_vec(),
            ..AllocReq::default()
        };
        seq.alloc(Context::default(), request).await.unwrap().seqs
    }

    #[tokio::test]
    async fn the_bound_is_durable_before_a_number_above_it_is_handed_out_and_a_restart_resumes_above_it()
     {
        let dir = std::env::temp_dir().join(format!("svrkit-im-seq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Redb::open(&dir, &StoreConfig::default()).unwrap());
        let seq = allocator(&store);
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
        let seq = allocator(&store);
        let after = alloc(&seq, &[7, 8, 100_007]).await;
        assert!(after[0] > last && after[1] > last, "{after:?} after {last}");
        assert!(after[2] > 1);
        drop((seq, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
