//! Discovery on etcd: a server's [`Registration`] (keys under one lease, kept alive), and the
//! watch that keeps a channel's endpoints as the registry lists them ([`watch`]).
//!
//! Failure behaviour, which the tests in `tests/rpc_discovery.rs` pin down:
//! - A process that dies stops renewing its lease; etcd deletes its keys after
//!   `lease_ttl_s`, and every watcher drops it.
//! - A lost keep-alive stream is re-opened with backoff; if the lease expired meanwhile (etcd
//!   was away longer than the TTL, or lost its data), a new lease is granted and the keys
//!   are put again. Keys deleted by hand while the lease lives are put back within about
//!   three TTLs.
//! - A watcher that loses etcd keeps the endpoints it has and retries with backoff; on
//!   reconnecting it reads the prefix afresh, so nothing that happened meanwhile is missed.
//!   Only etcd saying a replica is gone removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions, WatchStream,
};

use super::{DiscoveryConfig, Instance, Listing};
use crate::client::Channel;
use crate::client::pool::Pool;

/// Why the registry could not be used: what was being done, and what went wrong, with the
/// etcd client's (or the encoder's) error as its [`source`](std::error::Error::source)
/// where there is one.
#[derive(Clone, Debug)]
pub struct DiscoveryError {
    what: String,
    problem: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl DiscoveryError {
    /// What was being done (`connect`, `watch`, `keep-alive`...).
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd: {}: {}", self.what, self.problem)
    }
}

impl std::error::Error for DiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// `what` failed with `e`.
fn error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> DiscoveryError {
    DiscoveryError {
        what: what.to_owned(),
        problem: e.to_string(),
        source: Some(Arc::new(e)),
    }
}

/// `what` went wrong without an error to show for it (a stream that closed, no answer).
fn problem(what: &str, problem: impl Into<String>) -> DiscoveryError {
    DiscoveryError {
        what: what.to_owned(),
        problem: problem.into(),
        source: None,
    }
}

/// Time allowed for one request to etcd (a grant, a put, a read).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on connections to etcd.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Backoff between attempts to reach etcd again.
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The member a connection tries first next time, rotated so that a client whose member
/// died moves on instead of trying the dead one first again.
static NEXT_MEMBER: AtomicUsize = AtomicUsize::new(0);

/// Connects to one member of the etcd cluster that answers, trying them in turn from a
/// rotating start. Any member serves reads, writes, leases and watches (it forwards to the
/// leader). One member rather than a channel balanced over all of them: etcd-client's
/// balanced channel kept sending requests to a member that had been killed, so lease
/// renewals failed for half a minute after one of three members was lost (seen in
/// `deploy/chaos.sh`). A caller whose requests fail connects again, and moves on.
///
/// # Errors
/// When no member answers (the last member's error), or none is configured.
pub async fn connect(config: &DiscoveryConfig) -> Result<Client, DiscoveryError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        // A silent etcd (a partition rather than a closed socket) is noticed by HTTP/2
        // pings. Not more often than every 10 s: etcd closes connections that ping more
        // than once in 5 s (its --grpc-keepalive-min-time), which broke every watch.
        .with_keep_alive(PING_INTERVAL, Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    let members = &config.etcd;
    let start = NEXT_MEMBER.fetch_add(1, Relaxed);
    let mut failure = problem("connect", "no etcd members configured");
    for k in 0..members.len() {
        let member = &members[(start + k) % members.len()];
        let attempt = async {
            let connecting = Client::connect([member.as_str()], Some(options.clone()));
            let mut client = timed("connect", connecting).await?;
            // The channel connects lazily: ask something to know the member answers.
            timed("connect", client.status()).await?;
            Ok::<_, DiscoveryError>(client)
        };
        match attempt.await {
            Ok(client) => return Ok(client),
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

async fn timed<T>(
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error(what, e)),
        Err(_) => Err(problem(what, "no answer in time")),
    }
}

/// A process's entries in the registry, kept alive until [`drain`](Registration::drain) or
/// drop (after which they expire with their lease).
#[derive(Debug)]
pub struct Registration {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    drain: Duration,
}

#[derive(Debug)]
struct Shared {
    config: DiscoveryConfig,
    /// (key, value) of each service hosted.
    entries: Vec<(String, String)>,
    /// The lease the keys are under now.
    lease: AtomicI64,
}

impl Registration {
    /// Registers `services` (full names) as served at `addr` (an address others can call:
    /// see [`DiscoveryConfig::advertised`]), under a lease this process keeps alive from a
    /// task of its own.
    ///
    /// # Errors
    /// When etcd cannot be reached or refuses: a process that cannot be found should not
    /// start as if it could.
    pub async fn register(
        config: &DiscoveryConfig,
        services: &[&str],
        addr: &str,
    ) -> Result<Registration, DiscoveryError> {
        let addr = addr.to_owned();
        let instance = Instance {
            addr: addr.clone(),
            weight: config.weight.max(1),
            set: config.set.clone(),
            group: config.group.clone(),
            zone: config.zone.clone(),
        };
        let value = serde_json::to_string(&instance).map_err(|e| error("encode", e))?;
        let entries = services
            .iter()
            .map(|s| (format!("{}{addr}", config.service_prefix(s)), value.clone()))
            .collect();
        let shared = Arc::new(Shared {
            config: config.clone(),
            entries,
            lease: AtomicI64::new(0),
        });
        let mut client = connect(config).await?;
        shared.put_all(&mut client).await?;
        let task = tokio::spawn(shared.clone().keep_alive(client));
        Ok(Registration {
            drain: Duration::from_millis(config.drain_ms),
            shared,
            task,
        })
    }

    /// The lease the keys are under now.
    pub fn lease(&self) -> i64 {
        self.shared.lease.load(Relaxed)
    }

    /// Deregisters (revokes the lease, so every key goes at once) and waits `drain_ms` for
    /// callers to see it; then stop the server, which finishes what is in flight. If etcd
    /// cannot be reached the keys expire with the lease instead, and this says why.
    ///
    /// # Errors
    /// When the lease could not be revoked (the wait is still done).
    pub async fn drain(self) -> Result<(), DiscoveryError> {
        self.task.abort();
        let revoked = async {
            let mut client = connect(&self.shared.config).await?;
            timed("revoke", client.lease_revoke(self.lease())).await
        }
        .await;
        tokio::time::sleep(self.drain).await;
        revoked.map(drop)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.lease_ttl_s.max(1)))
    }

    /// Grants a lease and puts every key under it.
    async fn put_all(&self, client: &mut Client) -> Result<(), DiscoveryError> {
        let ttl = i64::from(self.config.lease_ttl_s.max(1));
        let lease = timed("grant a lease", client.lease_grant(ttl, None))
            .await?
            .id();
        for (key, value) in &self.entries {
            let options = PutOptions::new().with_lease(lease);
            timed(
                "register",
                client.put(key.as_str(), value.as_str(), Some(options)),
            )
            .await?;
        }
        self.lease.store(lease, Relaxed);
        tracing::info!(lease, keys = self.entries.len(), "registered in etcd");
        Ok(())
    }

    /// Renews the lease at a third of its TTL, forever: after a failure, with backoff, on a
    /// new connection, and under a new lease if the old one expired.
    async fn keep_alive(self: Arc<Self>, mut client: Client) {
        let mut retry = MIN_RETRY;
        loop {
            let failure = self.renew(&mut client).await;
            tracing::warn!("etcd lease keep-alive: {failure}");
            loop {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                let again = async {
                    client = connect(&self.config).await?;
                    if matches!(failure, Renewal::Expired) {
                        self.put_all(&mut client).await?;
                    }
                    Ok::<_, DiscoveryError>(())
                }
                .await;
                match again {
                    Ok(()) => break,
                    Err(e) => tracing::warn!("etcd: {e}"),
                }
            }
            retry = MIN_RETRY;
        }
    }

    /// Renews until something goes wrong, and says what. Every few renewals it also checks
    /// that its keys are there (someone may have deleted them) and puts back any that is
    /// not.
    async fn renew(&self, client: &mut Client) -> Renewal {
        let lease = self.lease.load(Relaxed);
        let (mut keeper, mut stream) =
            match timed("keep-alive", client.lease_keep_alive(lease)).await {
                Ok(pair) => pair,
                // The client refuses to open a stream for a lease etcd no longer has.
                Err(e) => return self.why(client, lease, e).await,
            };
        let mut round = 0u64;
        loop {
            if let Err(e) = timed("keep-alive", keeper.keep_alive()).await {
                return self.why(client, lease, e).await;
            }
            match timed("keep-alive", stream.message()).await {
                Ok(Some(answer)) if answer.ttl() > 0 => {}
                Ok(Some(_)) => return Renewal::Expired,
                Ok(None) => return Renewal::Failed(problem("keep-alive", "stream closed")),
                Err(e) => return Renewal::Failed(e),
            }
            round += 1;
            if round.is_multiple_of(KEY_CHECK_ROUNDS)
                && let Err(e) = self.put_missing(client, lease).await
            {
                return Renewal::Failed(e);
            }
            tokio::time::sleep(self.ttl() / 3).await;
        }
    }

    /// Whether a failed renewal means the lease is gone (etcd answers and does not know
    /// it) or only that etcd could not be asked.
    async fn why(&self, client: &mut Client, lease: i64, failure: DiscoveryError) -> Renewal {
        match timed("lease", client.lease_time_to_live(lease, None)).await {
            Ok(answer) if answer.ttl() <= 0 => Renewal::Expired,
            _ => Renewal::Failed(failure),
        }
    }

    /// Puts back, under `lease`, any key of this process that is not in etcd under it.
    async fn put_missing(&self, client: &mut Client, lease: i64) -> Result<(), DiscoveryError> {
        for (key, value) in &self.entries {
            let got = timed("check", client.get(key.as_str(), None)).await?;
            let present = got
                .kvs()
                .first()
                .is_some_and(|kv| kv.lease() == lease && kv.value() == value.as_bytes());
            if !present {
                tracing::warn!(key, "registration missing from etcd; putting it back");
                let options = PutOptions::new().with_lease(lease);
                timed(
                    "register",
                    client.put(key.as_str(), value.as_str(), Some(options)),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Renewals between checks that the keys are still there (about every 3 TTLs).
const KEY_CHECK_ROUNDS: u64 = 9;

/// Why renewing stopped.
enum Renewal {
    /// etcd could not be reached: the lease may still be alive.
    Failed(DiscoveryError),
    /// etcd says the lease is gone (its keys with it).
    Expired,
}

impl std::fmt::Display for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Renewal::Failed(e) => e.fmt(f),
            Renewal::Expired => f.write_str("the lease expired; registering again"),
        }
    }
}

/// Keeps `channel`'s endpoints (and gray-release groups) as the registry lists `service`'s
/// instances, from a task that ends when the channel is dropped. The channel's calls wait
/// for the first listing (see [`Channel::unresolved`]).
///
/// # Panics
/// Outside a tokio runtime; on an in-process channel.
pub fn watch(channel: &Channel, service: &str, config: &DiscoveryConfig) {
    watch_in(channel, service, config, None);
}

/// As [`watch`], keeping only the instances registered in SET `only` when it is given: for
/// calls that must reach one SET, such as those that touch data kept per SET.
///
/// # Panics
/// Outside a tokio runtime; on an in-process channel.
pub fn watch_in(channel: &Channel, service: &str, config: &DiscoveryConfig, only: Option<&str>) {
    let pool = Arc::downgrade(channel.pool().expect("a remote channel"));
    let watcher = Watcher {
        pool,
        prefix: config.service_prefix(service),
        service: service.to_owned(),
        only: only.map(str::to_owned),
        config: config.clone(),
        groups: BTreeSet::new(),
        last: None,
    };
    tokio::spawn(watcher.run());
}

struct Watcher {
    pool: Weak<Pool>,
    prefix: String,
    service: String,
    /// The one SET whose instances are kept, if any.
    only: Option<String>,
    config: DiscoveryConfig,
    /// The named groups given to the channel, to empty the ones that go.
    groups: BTreeSet<String>,
    /// The last listing applied, to skip events that change nothing the channel sees.
    last: Option<Listing>,
}

/// How often a watcher blocked on etcd checks that its channel still exists.
const ALIVE_CHECK: Duration = Duration::from_secs(1);

impl Watcher {
    async fn run(mut self) {
        let mut retry = MIN_RETRY;
        while self.pool.strong_count() > 0 {
            match self.follow(&mut retry).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(
                    service = self.service,
                    "discovery: {e}; keeping the last known endpoints"
                ),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Reads the prefix, then follows its changes from the revision read; returns when the
    /// channel is gone, fails when etcd does.
    async fn follow(&mut self, retry: &mut Duration) -> Result<(), DiscoveryError> {
        let mut client = connect(&self.config).await?;
        let got = timed(
            "read",
            client.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut instances: BTreeMap<Vec<u8>, Instance> = got
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key().to_vec(), Instance::parse(kv.value())?)))
            .collect();
        let revision = got.header().map_or(0, |h| h.revision());
        if !self.apply(&instances) {
            return Ok(());
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream: WatchStream =
            timed("watch", client.watch(self.prefix.as_str(), Some(options))).await?;
        *retry = MIN_RETRY;
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = tokio::time::sleep(ALIVE_CHECK) => {
                    if self.pool.strong_count() == 0 {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(answer) = message.map_err(|e| error("watch", e))? else {
                return Err(problem("watch", "stream closed"));
            };
            if answer.canceled() {
                // Compacted past our revision, or refused: read afresh.
                return Err(problem(
                    "watch",
                    format!("cancelled ({})", answer.cancel_reason()),
                ));
            }
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match Instance::parse(kv.value()) {
                        Some(instance) => instances.insert(kv.key().to_vec(), instance),
                        None => instances.remove(kv.key()),
                    },
                    EventType::Delete => instances.remove(kv.key()),
                };
            }
            if !self.apply(&instances) {
                return Ok(());
            }
        }
    }

    /// Gives the channel the listing of `instances`; false when the channel is gone.
    fn apply(&mut self, instances: &BTreeMap<Vec<u8>, Instance>) -> bool {
        let Some(pool) = self.pool.upgrade() else {
            return false;
        };
        let kept = instances
            .values()
            .filter(|i| self.only.as_ref().is_none_or(|set| &i.set == set));
        let listing = Listing::of(kept, &self.config.set, &self.config.zone);
        if self.last.as_ref() == Some(&listing) && pool.endpoints.is_resolved() {
            return true;
        }
        tracing::info!(
            service = self.service,
            endpoints = ?listing.main,
            preferred = ?listing.preferred,
            groups = ?listing.groups,
            "discovery: endpoints changed"
        );
        // Groups first: the main set's first update is what lets waiting calls go, and
        // by then the groups their routes name must be there.
        for gone in self
            .groups
            .iter()
            .filter(|g| !listing.groups.contains_key(*g))
        {
            pool.routing.set_group(gone, Vec::new());
        }
        for (name, addrs) in &listing.groups {
            pool.routing.set_group(name, addrs.clone());
        }
        pool.endpoints.update_weighted(listing.main.iter().cloned());
        pool.endpoints.prefer_tiers(&listing.preferred);
        self.groups = listing.groups.keys().cloned().collect();
        self.last = Some(listing);
        true
    }
}
