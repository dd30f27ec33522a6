//! The [`Arbiter`] on etcd, and the watch that keeps callers' routing tables.
//!
//! Keys, under the discovery prefix (`/svrkit` by default), readable with `etcdctl`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `im.seq/config` | `shards=<n>`: every allocator and caller must agree | none |
//! | `im.seq/allocators/<address>` | the allocator's address | the allocator's |
//! | `im.seq/shards/<shard>` | the owner's address | the owner's |
//! | `im.seq/max/<section>` | the section's bound, in decimal | none |
//!
//! A claim is a transaction that creates the shard's key only if it does not exist. A raise
//! is a transaction that writes the bound only while the shard's key is under the raiser's
//! lease and the bound is still the one read (so two writers cannot interleave). etcd
//! itself is replicated (a 3-member cluster in `deploy/chaos.sh`), so the bounds survive
//! the loss of a member.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use svrkit_runtime::discovery::DiscoveryConfig;
use svrkit_runtime::{Code, Status};

use super::BoxFuture;
use super::lease::{Arbiter, Owner, Table};
use super::route::Routes;

/// Time allowed for one request to etcd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The arbiter on etcd.
pub struct EtcdArbiter {
    config: DiscoveryConfig,
    /// A client of one member; replaced by one of another when a request fails.
    client: Mutex<Client>,
    prefix: String,
}

impl std::fmt::Debug for EtcdArbiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdArbiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::new(Code::UNAVAILABLE, format!("etcd: {what}: {e}"))
}

async fn timed<T>(
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Status> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(unavailable(what, "no answer in time")),
    }
}

/// The keys' common prefix: `<discovery prefix>/im.seq/`.
fn base(config: &DiscoveryConfig) -> String {
    format!("{}/im.seq/", config.prefix.trim_end_matches('/'))
}

async fn connect(config: &DiscoveryConfig) -> Result<Client, Status> {
    svrkit_runtime::discovery::etcd::connect(config)
        .await
        .map_err(|e| Status::new(Code::UNAVAILABLE, e.to_string()))
}

impl EtcdArbiter {
    /// Connects to the etcd of `config` (`[discovery]`) and checks that the deployment's
    /// shard count is `shards` (recording it if this is the first allocator).
    ///
    /// # Errors
    /// When etcd cannot be reached, or the deployment was set up with another shard count.
    pub async fn connect(config: &DiscoveryConfig, shards: u32) -> Result<EtcdArbiter, Status> {
        let client = connect(config).await?;
        agree(&client, &base(config), shards).await?;
        Ok(EtcdArbiter {
            config: config.clone(),
            client: Mutex::new(client),
            prefix: base(config),
        })
    }

    fn key(&self, kind: &str, name: impl std::fmt::Display) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    fn kv(&self) -> Client {
        lock(&self.client).clone()
    }

    /// Runs `op` on the client; when it fails (its member may be gone), connects to a
    /// member that answers and runs it once more. Every operation here may run twice:
    /// reads, puts of the same value, and transactions whose comparisons make a repeat a
    /// no-op (a claim, a release) or re-read (a raise); a second grant leaves a lease that
    /// expires unused.
    async fn call<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Status>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match timed(what, op(self.kv())).await {
            Ok(value) => Ok(value),
            Err(first) => {
                let Ok(client) = connect(&self.config).await else {
                    return Err(first);
                };
                *lock(&self.client) = client;
                timed(what, op(self.kv())).await
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records `shards` as the deployment's shard count, or checks it against the one recorded.
async fn agree(client: &Client, prefix: &str, shards: u32) -> Result<(), Status> {
    let key = format!("{prefix}config");
    let value = format!("shards={shards}");
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let answer = timed("config", client.clone().txn(txn)).await?;
    if answer.succeeded() {
        return Ok(());
    }
    let recorded = answer.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    match recorded {
        Some(v) if v == value.as_bytes() => Ok(()),
        other => Err(Status::new(
            Code::INVALID_ARGUMENT,
            format!(
                "app.seq.shards: {shards}, but the deployment's etcd has {:?} at {key}: every \
                 allocator and caller must use the same count",
                String::from_utf8_lossy(&other.unwrap_or_default())
            ),
        )),
    }
}

fn parse_u64(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Arbiter for EtcdArbiter {
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<(i64, Duration), Status>> {
        Box::pin(async move {
            let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
            let granted = self
                .call("grant", |mut c| async move {
                    c.lease_grant(seconds, None).await
                })
                .await?;
            let ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(0));
            Ok((granted.id(), ttl))
        })
    }

    fn renew(&self, lease: i64) -> BoxFuture<'_, Result<Option<Duration>, Status>> {
        Box::pin(async move {
            let renewed = self
                .call("keep-alive", |mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await;
            match renewed {
                Ok(Some(a)) if a.ttl() > 0 => Ok(Some(Duration::from_secs(
                    u64::try_from(a.ttl()).unwrap_or(0),
                ))),
                Ok(Some(_)) => Ok(None),
                Ok(None) => Err(unavailable("keep-alive", "stream closed")),
                Err(e) => {
                    // The client refuses a stream for a lease etcd no longer has: ask.
                    let left = self
                        .call("lease", |mut c| async move {
                            c.lease_time_to_live(lease, None).await
                        })
                        .await?;
                    if left.ttl() <= 0 { Ok(None) } else { Err(e) }
                }
            }
        })
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            self.call("revoke", |mut c| async move { c.lease_revoke(lease).await })
                .await?;
            Ok(())
        })
    }

    fn join<'a>(&'a self, holder: &'a str, lease: i64) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let key = self.key("allocators", holder);
            self.call("join", |mut c| {
                let key = key.clone();
                async move {
                    let options = PutOptions::new().with_lease(lease);
                    c.put(key, holder, Some(options)).await
                }
            })
            .await?;
            Ok(())
        })
    }

    fn table(&self) -> BoxFuture<'_, Result<Table, Status>> {
        Box::pin(async move {
            let allocators = self.key("allocators", "");
            let count = self
                .call("table", |mut c| {
                    let allocators = allocators.clone();
                    async move {
                        let options = GetOptions::new().with_prefix().with_count_only();
                        c.get(allocators, Some(options)).await
                    }
                })
                .await?;
            let shards = self.key("shards", "");
            let listed = self
                .call("table", |mut c| {
                    let shards = shards.clone();
                    async move { c.get(shards, Some(GetOptions::new().with_prefix())).await }
                })
                .await?;
            let mut owners = BTreeMap::new();
            for kv in listed.kvs() {
                let shard = kv
                    .key_str()
                    .ok()
                    .and_then(|k| k.strip_prefix(shards.as_str()))
                    .and_then(|s| s.parse::<u32>().ok());
                if let (Some(shard), Ok(holder)) = (shard, kv.value_str()) {
                    let owner = Owner {
                        holder: holder.to_owned(),
                        lease: kv.lease(),
                    };
                    owners.insert(shard, owner);
                }
            }
            Ok(Table {
                allocators: usize::try_from(count.count()).unwrap_or(0),
                owners,
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
            let key = self.key("shards", shard);
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    holder,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let answer = self
                .call("claim", |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            Ok(answer.succeeded())
        })
    }

    fn release(&self, shard: u32, lease: i64) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let key = self.key("shards", shard);
            let txn = Txn::new()
                .when([Compare::lease(key.as_str(), CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            self.call("release", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
            Ok(())
        })
    }

    fn load(&self, section: u32) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            let key = self.key("max", section);
            let got = self
                .call("load", |mut c| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })
                .await?;
            Ok(got
                .kvs()
                .first()
                .and_then(|kv| parse_u64(kv.value()))
                .unwrap_or(0))
        })
    }

    fn raise(
        &self,
        shard: u32,
        lease: i64,
        section: u32,
        max_seq: u64,
    ) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async move {
            let owner = self.key("shards", shard);
            let bound = self.key("max", section);
            let get = |key: String| {
                move |mut c: Client| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                }
            };
            loop {
                let got = self.call("raise", get(bound.clone())).await?;
                let (stored, revision) = got.kvs().first().map_or((0, 0), |kv| {
                    (parse_u64(kv.value()).unwrap_or(0), kv.mod_revision())
                });
                let new = stored.max(max_seq);
                let txn = Txn::new()
                    .when([
                        Compare::lease(owner.as_str(), CompareOp::Equal, lease),
                        Compare::mod_revision(bound.as_str(), CompareOp::Equal, revision),
                    ])
                    .and_then([TxnOp::put(bound.as_str(), new.to_string(), None)]);
                let answer = self
                    .call("raise", |mut c| {
                        let txn = txn.clone();
                        async move { c.txn(txn).await }
                    })
                    .await?;
                if answer.succeeded() {
                    return Ok(Some(new));
                }
                let got = self.call("raise", get(owner.clone())).await?;
                if got.kvs().first().is_none_or(|kv| kv.lease() != lease) {
                    return Ok(None);
                }
                // Still the owner: the bound changed under it (a write of its own that
                // was answered late, or repeated). Read it again.
            }
        })
    }
}

/// Keeps `routes` as etcd lists the shards' owners, from a task that ends when the routes
/// are dropped. After an error it reads the whole table afresh, with backoff; meanwhile
/// the table it has stays (callers still reach owners that are alive).
///
/// # Errors
/// When etcd cannot be reached at start, or its shard count differs from the routes'.
pub async fn follow(
    config: &DiscoveryConfig,
    shards: u32,
    routes: &Arc<Routes>,
) -> Result<(), Status> {
    let client = connect(config).await?;
    let prefix = base(config);
    agree(&client, &prefix, shards).await?;
    let weak = Arc::downgrade(routes);
    let config = config.clone();
    tokio::spawn(async move {
        let mut client = client;
        let mut retry = MIN_RETRY;
        loop {
            match watch(&mut client, &prefix, &weak).await {
                Ok(()) => return,
                Err(e) => tracing::warn!("seq routing table: {e}"),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
            if let Ok(again) = connect(&config).await {
                client = again;
                retry = MIN_RETRY;
            }
        }
    });
    Ok(())
}

/// Reads the table, then applies every change after it; `Ok` once the routes are gone.
async fn watch(client: &mut Client, prefix: &str, routes: &Weak<Routes>) -> Result<(), Status> {
    let shards = format!("{prefix}shards/");
    let shard_of = |key: &[u8]| {
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(shards.as_str())?
            .parse::<u32>()
            .ok()
    };
    let options = GetOptions::new().with_prefix();
    let listed = timed("list", client.get(shards.as_str(), Some(options))).await?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let owners = listed
        .kvs()
        .iter()
        .filter_map(|kv| Some((shard_of(kv.key())?, kv.value_str().ok()?.to_owned())))
        .collect();
    match routes.upgrade() {
        Some(routes) => routes.replace(owners),
        None => return Ok(()),
    }
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = timed("watch", client.watch(shards.as_str(), Some(options))).await?;
    loop {
        // Woken now and then to notice dropped routes on a quiet table.
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        let Some(routes) = routes.upgrade() else {
            return Ok(());
        };
        let answer = match message {
            Err(_) => continue,
            Ok(answer) => answer.map_err(|e| unavailable("watch", e))?,
        };
        let Some(answer) = answer else {
            return Err(unavailable("watch", "stream closed"));
        };
        if answer.canceled() {
            return Err(unavailable("watch", "cancelled (compacted?)"));
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(shard) = shard_of(kv.key()) else {
                continue;
            };
            match event.event_type() {
                EventType::Put => routes.set(shard, kv.value_str().ok().map(str::to_owned)),
                EventType::Delete => routes.set(shard, None),
            }
        }
    }
}
