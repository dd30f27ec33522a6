//! How callers reach the allocators: one allocator, or the owner of each uid's shard as the
//! routing table says.
//!
//! With many allocators a caller keeps the routing table (shard to owner's address), which a
//! watch on the arbiter keeps current ([`etcd::follow`](super::etcd::follow)), and one channel
//! per owner. An `Alloc` is split by shard and sent to each owner. An allocator that does not
//! (or no longer) serve a shard answers `UNAVAILABLE` without handing anything out, and so
//! does a dead one: the caller waits for the table to change, or a short while, and asks
//! again, until `wait` has passed. Asking again is always safe: a retried allocation can
//! only skip numbers, and sequences need not be dense.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svrkit_runtime::client::CallOptions;
use svrkit_runtime::{Channel, Code, Status};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::lease::shard_of;
use super::{lock, section_of};
use crate::im::seq::{AllocReq, SeqAllocSvrClient};

/// How long to wait for a changed table before asking an owner again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Makes the channel to an allocator at an address.
pub type Connect = Box<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

/// A caller's way to the allocators.
#[derive(Clone, Debug)]
pub enum Sequences {
    /// One allocator (or replicas of one, behind one channel) serving every section.
    One(SeqAllocSvrClient),
    /// Many, each serving the shards the routing table gives it.
    Routed(Arc<Routes>),
}

impl Sequences {
    /// One sequence for each of `uids`, in order.
    ///
    /// # Errors
    /// The allocator's refusal, or `UNAVAILABLE` when a shard had no reachable owner for
    /// the whole wait.
    pub async fn alloc(&self, uids: &[u64], options: &CallOptions) -> Result<Vec<u64>, Status> {
        let seqs = match self {
            Sequences::One(client) => {
                let request = AllocReq {
                    uids: uids.to_vec(),
                    ..AllocReq::default()
                };
                client.alloc_with(&request, options).await?.seqs
            }
            Sequences::Routed(routes) => routes.alloc(uids, options).await?,
        };
        if seqs.len() != uids.len() {
            return Err(Status::new(
                Code::INTERNAL,
                "the allocator answered the wrong count",
            ));
        }
        Ok(seqs)
    }
}

/// The routing table, and a channel to each owner in it.
pub struct Routes {
    shards: u32,
    wait: Duration,
    connect: Connect,
    table: Mutex<Table>,
    changed: Notify,
}

#[derive(Default)]
struct Table {
    owners: BTreeMap<u32, String>,
    clients: HashMap<String, SeqAllocSvrClient>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("shards", &self.shards)
            .field("owners", &lock(&self.table).owners)
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// An empty table over `shards` shards; calls wait up to `wait` for an owner.
    pub fn new(shards: u32, wait: Duration, connect: Connect) -> Arc<Routes> {
        Arc::new(Routes {
            shards: shards.max(1),
            wait,
            connect,
            table: Mutex::default(),
            changed: Notify::new(),
        })
    }

    /// Replaces the whole table (after reading it afresh).
    pub fn replace(&self, owners: BTreeMap<u32, String>) {
        let mut t = lock(&self.table);
        t.owners = owners;
        let live: std::collections::HashSet<&String> = t.owners.values().collect();
        let gone: Vec<String> = t
            .clients
            .keys()
            .filter(|a| !live.contains(a))
            .cloned()
            .collect();
        for addr in gone {
            t.clients.remove(&addr);
        }
        drop(t);
        self.changed.notify_waiters();
    }

    /// Sets (or, with `None`, clears) one shard's owner.
    pub fn set(&self, shard: u32, owner: Option<String>) {
        let mut owners = lock(&self.table).owners.clone();
        match owner {
            Some(addr) => owners.insert(shard, addr),
            None => owners.remove(&shard),
        };
        self.replace(owners);
    }

    /// The owner of each shard, as known now.
    pub fn owners(&self) -> BTreeMap<u32, String> {
        lock(&self.table).owners.clone()
    }

    /// The client for `shard`'s owner, if the table has one.
    fn client(&self, shard: u32) -> Result<Option<SeqAllocSvrClient>, Status> {
        let mut t = lock(&self.table);
        let Some(addr) = t.owners.get(&shard).cloned() else {
            return Ok(None);
        };
        if let Some(client) = t.clients.get(&addr) {
            return Ok(Some(client.clone()));
        }
        let channel = (self.connect)(&addr).map_err(|e| Status::new(Code::INTERNAL, e))?;
        let client = SeqAllocSvrClient::new(channel);
        t.clients.insert(addr, client.clone());
        Ok(Some(client))
    }

    async fn alloc(&self, uids: &[u64], options: &CallOptions) -> Result<Vec<u64>, Status> {
        // Positions of the uids of each shard, in order.
        let mut by_shard: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, &uid) in uids.iter().enumerate() {
            let (section, _) = section_of(uid)?;
            by_shard
                .entry(shard_of(section, self.shards))
                .or_default()
                .push(i);
        }
        let mut seqs = vec![0; uids.len()];
        let end = Instant::now() + self.wait;
        for (shard, positions) in by_shard {
            let request = AllocReq {
                uids: positions.iter().map(|&i| uids[i]).collect(),
                ..AllocReq::default()
            };
            let answer = self.ask(shard, &request, options, end).await?;
            if answer.len() != positions.len() {
                return Err(Status::new(
                    Code::INTERNAL,
                    "the allocator answered the wrong count",
                ));
            }
            for (&i, seq) in positions.iter().zip(answer) {
                seqs[i] = seq;
            }
        }
        Ok(seqs)
    }

    /// Asks `shard`'s owner until it answers, or `end`.
    async fn ask(
        &self,
        shard: u32,
        request: &AllocReq,
        options: &CallOptions,
        end: Instant,
    ) -> Result<Vec<u64>, Status> {
        loop {
            // Registered before the table is read, so that a change in between wakes it.
            let changed = self.changed.notified();
            let failure = match self.client(shard)? {
                Some(client) => match client.alloc_with(request, options).await {
                    Ok(answer) => return Ok(answer.seqs),
                    Err(e) if retryable(&e) => e,
                    Err(e) => return Err(e),
                },
                None => Status::new(Code::UNAVAILABLE, format!("shard {shard} has no allocator")),
            };
            let now = Instant::now();
            if now >= end {
                return Err(failure);
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(RETRY_EVERY.min(end - now)) => {}
            }
        }
    }
}

/// Whether asking again (after the table changes) may succeed.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED | Code::OVERLOADED
    )
}
