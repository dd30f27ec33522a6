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
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
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
#[derive(Clone)]
pub struct EtcdArbiter {
    client: Client,
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
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        // Not more often than etcd's --grpc-keepalive-min-time (5 s) allows.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    timed(
        "connect",
        Client::connect(config.etcd.clone(), Some(options)),
    )
    .await
}

impl EtcdArbiter {
    /// Connects to the etcd of `config` (`[discovery]`) and checks that the deployment's
    /// shard count is `shards` (recording it if this is the first allocator).
    ///
    /// # Errors
    /// When etcd cannot be reached, or the deployment was set up with another shard count.
    pub async fn connect(config: &DiscoveryConfig, shards: u32) -> Result<EtcdArbiter, Status> {
        let client = connect(config).await?;
        let arbiter = EtcdArbiter {
            client,
            prefix: base(config),
        };
        agree(&arbiter.client, &arbiter.prefix, shards).await?;
        Ok(arbiter)
    }

    fn key(&self, kind: &str, name: impl std::fmt::Display) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    fn kv(&self) -> Client {
        self.client.clone()
    }
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
            let granted = timed("grant", self.kv().lease_grant(seconds, None)).await?;
            let ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(0));
            Ok((granted.id(), ttl))
        })
    }

    fn renew(&self, lease: i64) -> BoxFuture<'_, Result<Option<Duration>, Status>> {
        Box::pin(async move {
            let mut client = self.kv();
            let opened = timed("keep-alive", client.lease_keep_alive(lease)).await;
            let answer = match opened {
                Ok((mut keeper, mut stream)) => {
                    timed("keep-alive", keeper.keep_alive()).await?;
                    timed("keep-alive", stream.message()).await?
                }
                Err(e) => {
                    // The client refuses a stream for a lease etcd no longer has: ask.
                    let left = timed("lease", client.lease_time_to_live(lease, None)).await?;
                    if left.ttl() <= 0 {
                        return Ok(None);
                    }
                    return Err(e);
                }
            };
            match answer {
                Some(a) if a.ttl() > 0 => Ok(Some(Duration::from_secs(
                    u64::try_from(a.ttl()).unwrap_or(0),
                ))),
                Some(_) => Ok(None),
                None => Err(unavailable("keep-alive", "stream closed")),
            }
        })
    }

    fn revoke(&self, lease: i64) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            timed("revoke", self.kv().lease_revoke(lease)).await?;
            Ok(())
        })
    }

    fn join<'a>(&'a self, holder: &'a str, lease: i64) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let options = PutOptions::new().with_lease(lease);
            let key = self.key("allocators", holder);
            timed("join", self.kv().put(key, holder, Some(options))).await?;
            Ok(())
        })
    }

    fn table(&self) -> BoxFuture<'_, Result<Table, Status>> {
        Box::pin(async move {
            let allocators = self.key("allocators", "");
            let options = GetOptions::new().with_prefix().with_count_only();
            let count = timed("table", self.kv().get(allocators, Some(options))).await?;
            let shards = self.key("shards", "");
            let options = GetOptions::new().with_prefix();
            let listed = timed("table", self.kv().get(shards.as_str(), Some(options))).await?;
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
            Ok(timed("claim", self.kv().txn(txn)).await?.succeeded())
        })
    }

    fn release(&self, shard: u32, lease: i64) -> BoxFuture<'_, Result<(), Status>> {
        Box::pin(async move {
            let key = self.key("shards", shard);
            let txn = Txn::new()
                .when([Compare::lease(key.as_str(), CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            timed("release", self.kv().txn(txn)).await?;
            Ok(())
        })
    }

    fn load(&self, section: u32) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async move {
            let got = timed("load", self.kv().get(self.key("max", section), None)).await?;
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
            loop {
                let got = timed("raise", self.kv().get(bound.as_str(), None)).await?;
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
                if timed("raise", self.kv().txn(txn)).await?.succeeded() {
                    return Ok(Some(new));
                }
                let got = timed("raise", self.kv().get(owner.as_str(), None)).await?;
                if got.kvs().first().is_none_or(|kv| kv.lease() != lease) {
                    return Ok(None);
                }
                // Still the owner: the bound changed under it (a raise of its own that
                // timed out and landed late). Read it again.
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
