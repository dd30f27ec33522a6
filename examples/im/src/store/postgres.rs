//! The networked engine: every service's tables in one PostgreSQL database, shared by any
//! number of processes (`[app.store] kind = "postgres"`).
//!
//! - **Schema.** [`MIGRATIONS`] run at start, in one transaction under an advisory lock (so
//!   that processes starting together do not race), each recorded in `schema_version`.
//! - **Appends** go to one committer task per process, which owns a connection and commits
//!   whatever appends are waiting in one transaction (group commit, as the embedded store
//!   does), in the order they were sent: within a process, appends are visible in call order
//!   (the [`InboxStore`] contract).
//! - **Across processes** (several message replicas), each append locks its recipients'
//!   `inbox_head` rows and is refused as [`Appended::Stale`] when a recipient already has a
//!   higher sequence visible; the message service then allocates again. So an inbox only
//!   ever grows at its end, and a reader's sync key never skips a message.
//! - **Wake-ups.** Each append transaction notifies its recipients (`NOTIFY`), and every
//!   process listens, so a long poll waiting in one message replica is woken by an append
//!   made in another ([`InboxStore::appended`]).
//! - **Idempotency** is a primary key on (sender, client message id) in `sends`, with no
//!   window: a retry finds the first append's (recipient, sequence) pairs however late.
//! - Everything else is a plain statement on a pooled connection; a group's member change
//!   locks its row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use svrkit_runtime::codec::Message;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Statement};

use super::{
    AccountStore, Append, Appended, ContactStore, Edge, GroupChange, GroupEdit, GroupStore,
    InboxStore, Link, MAX_SESSIONS, Pair, Relate, Revoke, SeqStore, SessionRecord, StoreError,
    StoreFuture, User,
};
use crate::im::group::Group;
use crate::im::msg::Msg;

/// The schema, one step per entry; a database records how many it has run. Append only.
pub const MIGRATIONS: &[&str] = &[
    // 1: every table.
    "CREATE TABLE users (
        uid bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,
        password_hash text NOT NULL
    );
    CREATE TABLE sessions (
        token bytea PRIMARY KEY,
        uid bigint NOT NULL,
        expires_at_ms bigint NOT NULL
    );
    CREATE TABLE seq_sections (
        section integer PRIMARY KEY,
        max_seq bigint NOT NULL
    );
    CREATE TABLE sends (
        from_uid bigint NOT NULL,
        client_msg_id text NOT NULL,
        to_uids bigint[] NOT NULL,
        seqs bigint[] NOT NULL,
        PRIMARY KEY (from_uid, client_msg_id)
    );
    CREATE TABLE inbox (
        uid bigint NOT NULL,
        seq bigint NOT NULL,
        msg bytea NOT NULL,
        PRIMARY KEY (uid, seq)
    );
    CREATE TABLE inbox_head (
        uid bigint PRIMARY KEY,
        max_seq bigint NOT NULL
    );
    CREATE TABLE groups (
        group_id bigserial PRIMARY KEY,
        body bytea NOT NULL
    );",
    // 2: sessions under the SHA-256 of their tokens, listed by user. The tokens stored
    // raw until now would log in whoever reads the table: those sessions end.
    "DROP TABLE sessions;
    CREATE TABLE sessions (
        id bytea PRIMARY KEY,
        uid bigint NOT NULL,
        created_at_ms bigint NOT NULL,
        expires_at_ms bigint NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions (uid, created_at_ms);",
    // 3: contacts, requests and blocks, each relation from both sides.
    "CREATE TABLE edges (
        a bigint NOT NULL,
        b bigint NOT NULL,
        link smallint NOT NULL,
        at_ms bigint NOT NULL,
        note text NOT NULL,
        PRIMARY KEY (a, b)
    );",
    // 4: each group's owner as a column, to count the groups a user owns (filled in from
    // the bodies of groups made before it when the store opens).
    "ALTER TABLE groups ADD COLUMN owner_uid bigint;
    CREATE INDEX groups_by_owner ON groups (owner_uid);",
    // 5: what each sender's stored messages cost, for the storage quota (counted from here
    // on: messages stored before are not charged).
    "CREATE TABLE stored_bytes (
        uid bigint PRIMARY KEY,
        bytes bigint NOT NULL
    );",
];

/// `[app.store]` keys of the PostgreSQL engine.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// libpq-style connection string (`host=/run/postgresql port=5432 user=im dbname=im`).
    pub url: String,
    /// Pooled connections for reads and single writes (the committer has its own).
    pub connections: usize,
    /// The readiness check the append committer reports into ([`super::WRITES_CHECK`];
    /// tests name their own, since checks are shared by name across the process).
    pub readiness: String,
}

/// Appends one commit takes at most.
const MAX_BATCH: usize = 1024;

/// The PostgreSQL store.
pub struct Postgres {
    pool: Pool,
    appends: mpsc::UnboundedSender<Pending>,
    /// Recipients of appends committed by any process.
    appended: broadcast::Sender<Arc<[u64]>>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

/// A failure, with the causes the driver and the pool keep behind their short messages
/// (`db error` alone says nothing).
fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    let e = e.into();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    StoreError {
        message: format!("postgres: {text}"),
        source: Some(std::sync::Arc::from(e)),
    }
}

/// Time allowed to connect (and authenticate), for the store's connections and for a
/// call waiting on the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A u64 id as PostgreSQL's bigint (ids never reach 2^63; one that did is refused).
fn big(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::new(format!("{v} does not fit a bigint")))
}

fn unbig(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

struct Pending {
    append: Append,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

impl Postgres {
    /// Connects, brings the schema up to date and starts the append committer (a task of
    /// the current runtime, ending when the store is dropped).
    ///
    /// # Errors
    /// When the server cannot be reached or a migration fails.
    pub async fn open(config: &PostgresConfig) -> Result<Postgres, StoreError> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::wrap("app.store.url", e))?;
        // Statements are prepared once per connection, but planned at each run: a plan
        // made once, when the tables were empty, scans `sends` whole forever after (seen:
        // throughput halving run after run until the process restarted).
        pg.options("-c plan_cache_mode=force_custom_plan");
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(err)?;
        let mut client = connect(&pg).await?;
        migrate(&mut client).await?;
        index_owners(&client).await?;
        let (appends, queue) = mpsc::unbounded_channel();
        let health = svrkit_runtime::monitor::health::check(&config.readiness);
        tokio::spawn(commit_appends(pg.clone(), client, queue, health));
        let (appended, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(pg, appended.clone()));
        Ok(Postgres {
            pool,
            appends,
            appended,
            listener,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(err)
    }

    /// Runs `sql` on a pooled connection, prepared once per connection (parsing and
    /// planning a statement costs more than running these).
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(err)?;
        client.query(&statement, params).await.map_err(err)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(sql, params).await?;
        Ok(rows.pop())
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| err("no row answered"))
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(err)?;
        client.execute(&statement, params).await.map_err(err)
    }
}

async fn connect(pg: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(NoTls))
        .await
        .map_err(|_| err("the server did not answer within 5 s"))?
        .map_err(err)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection: {e}");
        }
    });
    Ok(client)
}

/// Runs the migrations this database has not run yet.
/// Fills in the owner column of groups made before it existed, from their bodies.
async fn index_owners(client: &Client) -> Result<(), StoreError> {
    let rows = client
        .query(
            "SELECT group_id, body FROM groups WHERE owner_uid IS NULL",
            &[],
        )
        .await
        .map_err(err)?;
    for row in rows {
        let id: i64 = row.get(0);
        let group = decode_group(row.get(1))?;
        if group.owner_uid != 0 {
            client
                .execute(
                    "UPDATE groups SET owner_uid = $2 WHERE group_id = $1 AND owner_uid IS NULL",
                    &[&id, &big(group.owner_uid)?],
                )
                .await
                .map_err(err)?;
        }
    }
    Ok(())
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let txn = client.transaction().await.map_err(err)?;
    // One process migrates at a time; the others then find the work done.
    txn.execute("SELECT pg_advisory_xact_lock(7305)", &[])
        .await
        .map_err(err)?;
    txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)",
        &[],
    )
    .await
    .map_err(err)?;
    let done: i32 = txn
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(err)?
        .get(0);
    let done = usize::try_from(done).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::new(format!(
            "postgres: the database has schema version {done}, newer than this build's {}",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        txn.batch_execute(sql)
            .await
            .map_err(|e| StoreError::wrap(format!("postgres: migration {}", i + 1), e))?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        txn.execute("INSERT INTO schema_version VALUES ($1)", &[&version])
            .await
            .map_err(err)?;
    }
    txn.commit().await.map_err(err)
}

/// The committer: takes every append waiting (up to [`MAX_BATCH`]), commits them in one
/// transaction in the order sent, answers each. A failed commit fails its batch (nothing of
/// it is stored); after a lost connection it connects again, with backoff, while the next
/// appends wait. Readiness ([`super::WRITES_CHECK`]) follows the commits, and the log says
/// when they start failing, at most once a minute while they do, and when they work again.
/// Ends when the store is dropped.
async fn commit_appends(
    pg: tokio_postgres::Config,
    mut client: Client,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    health: Arc<svrkit_runtime::monitor::health::Check>,
) {
    use svrkit_runtime::monitor::health::Transition;
    let mut logged_at = std::time::Instant::now();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut statements = Statements::default();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let appends: Vec<&Append> = batch.iter().map(|p| &p.append).collect();
        match commit(&mut client, &mut statements, &appends).await {
            Ok(results) => {
                // Only a batch that stored something says writes work: one whose appends
                // were all refused (quota, duplicates, stale) commits an empty transaction,
                // which goes through even while every insert would fail.
                let wrote = results.contains(&Appended::Stored);
                if wrote && let Transition::Recovered(after) = health.pass() {
                    tracing::info!(?after, "postgres: writes work again");
                }
                for (pending, result) in batch.drain(..).zip(results) {
                    let _ = pending.reply.send(Ok(result));
                }
            }
            Err(e) => {
                if health.fail(e.to_string()) == Transition::Failed {
                    tracing::error!("postgres: appends fail: {e}");
                    logged_at = std::time::Instant::now();
                } else if logged_at.elapsed() >= Duration::from_secs(60) {
                    tracing::error!("postgres: appends still fail: {e}");
                    logged_at = std::time::Instant::now();
                }
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(e.clone()));
                }
                let mut wait = Duration::from_millis(50);
                while client.is_closed() {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                    match connect(&pg).await {
                        Ok(new) => {
                            client = new;
                            statements = Statements::default();
                        }
                        Err(e) => tracing::debug!("postgres append committer: {e}"),
                    }
                }
            }
        }
    }
}

/// The committer's statements, prepared once per connection.
#[derive(Default)]
struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    async fn prepared(
        &mut self,
        txn: &tokio_postgres::Transaction<'_>,
        sql: &'static str,
    ) -> Result<Statement, StoreError> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = txn.prepare(sql).await.map_err(err)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }

    async fn query(
        &mut self,
        txn: &tokio_postgres::Transaction<'_>,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepared(txn, sql).await?;
        txn.query(&statement, params).await.map_err(err)
    }

    async fn execute(
        &mut self,
        txn: &tokio_postgres::Transaction<'_>,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let statement = self.prepared(txn, sql).await?;
        txn.execute(&statement, params).await.map_err(err)
    }
}

const EARLIER_SENDS: &str = "SELECT s.from_uid, s.client_msg_id, s.to_uids, s.seqs FROM sends s
    JOIN unnest($1::bigint[], $2::text[]) AS k(from_uid, id)
      ON s.from_uid = k.from_uid AND s.client_msg_id = k.id";
const ADD_HEADS: &str = "INSERT INTO inbox_head (uid, max_seq)
    SELECT u, 0 FROM unnest($1::bigint[]) AS u ON CONFLICT DO NOTHING";
const LOCK_HEADS: &str =
    "SELECT uid, max_seq FROM inbox_head WHERE uid = ANY($1) ORDER BY uid FOR UPDATE";
const INSERT_SENDS: &str = "INSERT INTO sends (from_uid, client_msg_id, to_uids, seqs)
    SELECT f, i, t::bigint[], s::bigint[]
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS x(f, i, t, s)
    ON CONFLICT DO NOTHING RETURNING from_uid, client_msg_id";
const INSERT_INBOX: &str = "INSERT INTO inbox (uid, seq, msg)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])";
const RAISE_HEADS: &str = "UPDATE inbox_head h SET max_seq = x.s
    FROM unnest($1::bigint[], $2::bigint[]) AS x(u, s)
    WHERE h.uid = x.u AND h.max_seq < x.s";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
const ADD_STORED: &str = "INSERT INTO stored_bytes (uid, bytes)
    SELECT u, 0 FROM unnest($1::bigint[]) AS u ON CONFLICT DO NOTHING";
const LOCK_STORED: &str =
    "SELECT uid, bytes FROM stored_bytes WHERE uid = ANY($1) ORDER BY uid FOR UPDATE";
const SET_STORED: &str = "UPDATE stored_bytes s SET bytes = x.b
    FROM unnest($1::bigint[], $2::bigint[]) AS x(u, b) WHERE s.uid = x.u";

/// Makes sure a row exists for each user of `uids` (`add`), then locks them until commit
/// (`lock`, in uid order, so that two committers never wait on each other in a cycle): each
/// user's value.
async fn lock_rows(
    cache: &mut Statements,
    txn: &tokio_postgres::Transaction<'_>,
    [add, lock]: [&'static str; 2],
    mut uids: Vec<i64>,
) -> Result<HashMap<u64, u64>, StoreError> {
    uids.sort_unstable();
    uids.dedup();
    cache.execute(txn, add, &[&uids]).await?;
    Ok(cache
        .query(txn, lock, &[&uids])
        .await?
        .iter()
        .map(|row| (unbig(row.get(0)), unbig(row.get(1))))
        .collect())
}

/// (recipient, sequence) pairs from the `to_uids` and `seqs` columns of `sends`.
fn pairs(row: &Row, to: usize, seqs: usize) -> Vec<(u64, u64)> {
    let to: Vec<i64> = row.get(to);
    let seqs: Vec<i64> = row.get(seqs);
    to.into_iter()
        .map(unbig)
        .zip(seqs.into_iter().map(unbig))
        .collect()
}

/// Stores a batch of appends in one transaction: what each did, in order.
async fn commit(
    client: &mut Client,
    cache: &mut Statements,
    appends: &[&Append],
) -> Result<Vec<Appended>, StoreError> {
    let txn = client.transaction().await.map_err(err)?;
    let froms: Vec<i64> = appends
        .iter()
        .map(|a| big(a.from_uid))
        .collect::<Result<_, _>>()?;
    let ids: Vec<&str> = appends.iter().map(|a| a.client_msg_id.as_str()).collect();
    // Appends stored before (by any process): their pairs.
    let earlier: HashMap<(u64, String), Vec<(u64, u64)>> = cache
        .query(&txn, EARLIER_SENDS, &[&froms, &ids])
        .await?
        .iter()
        .map(|row| ((unbig(row.get(0)), row.get(1)), pairs(row, 2, 3)))
        .collect();
    // The recipients' heads, locked until commit: an append to one of them by another
    // process waits for this one, and then sees what it raised.
    let recipients: Vec<i64> = appends
        .iter()
        .flat_map(|a| a.to.iter().map(|&(uid, _)| big(uid)))
        .collect::<Result<_, _>>()?;
    let mut heads = lock_rows(cache, &txn, [ADD_HEADS, LOCK_HEADS], recipients).await?;
    // The senders' storage counts, locked after the heads (every committer takes them in
    // that order), so that two processes' appends cannot pass a quota together.
    let mut stored = lock_rows(cache, &txn, [ADD_STORED, LOCK_STORED], froms).await?;

    // What each append costs its sender: computed once, used to charge and to refund.
    let charges: Vec<u64> = appends.iter().map(|a| a.charge()).collect();
    let mut results = Vec::with_capacity(appends.len());
    let mut accepted: Vec<usize> = Vec::new();
    for (i, a) in appends.iter().enumerate() {
        if let Some(pairs) = earlier.get(&(a.from_uid, a.client_msg_id.clone())) {
            results.push(Appended::Duplicate(pairs.clone()));
            continue;
        }
        let first = accepted
            .iter()
            .map(|&j| appends[j])
            .find(|b| b.from_uid == a.from_uid && b.client_msg_id == a.client_msg_id);
        if let Some(first) = first {
            // Twice in this batch: the first one's pairs.
            results.push(Appended::Duplicate(first.to.clone()));
            continue;
        }
        if a.to
            .iter()
            .any(|(uid, seq)| heads.get(uid).is_some_and(|h| h >= seq))
        {
            results.push(Appended::Stale);
            continue;
        }
        let used = stored.entry(a.from_uid).or_default();
        let needed = charges[i];
        if a.quota.is_some_and(|q| used.saturating_add(needed) > q) {
            results.push(Appended::OverQuota {
                used: *used,
                needed,
            });
            continue;
        }
        *used = used.saturating_add(needed);
        for &(uid, seq) in &a.to {
            heads.insert(uid, seq);
        }
        accepted.push(i);
        results.push(Appended::Stored);
    }
    if accepted.is_empty() {
        txn.commit().await.map_err(err)?;
        return Ok(results);
    }

    // The idempotency keys first. One another process committed after the lookup above
    // (a retry through another replica, to recipients not all locked here) conflicts:
    // that append is a duplicate of the one that won.
    let (mut s_from, mut s_id, mut s_to, mut s_seqs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in &accepted {
        let a = appends[i];
        s_from.push(big(a.from_uid)?);
        s_id.push(a.client_msg_id.as_str());
        let (to, seqs): (Vec<u64>, Vec<u64>) = a.to.iter().copied().unzip();
        for &seq in &seqs {
            big(seq)?;
        }
        // An array column per row, of rows' own lengths: passed as array literals.
        s_to.push(array_text(&to));
        s_seqs.push(array_text(&seqs));
    }
    let won: HashSet<(u64, String)> = cache
        .query(&txn, INSERT_SENDS, &[&s_from, &s_id, &s_to, &s_seqs])
        .await?
        .iter()
        .map(|row| (unbig(row.get(0)), row.get(1)))
        .collect();

    let (mut i_uid, mut i_seq, mut i_msg) = (Vec::new(), Vec::new(), Vec::<Vec<u8>>::new());
    let mut raised: HashMap<u64, u64> = HashMap::new();
    for &i in &accepted {
        let a = appends[i];
        if !won.contains(&(a.from_uid, a.client_msg_id.clone())) {
            let row = txn
                .query_one(
                    "SELECT to_uids, seqs FROM sends WHERE from_uid = $1 AND client_msg_id = $2",
                    &[&big(a.from_uid)?, &a.client_msg_id],
                )
                .await
                .map_err(err)?;
            results[i] = Appended::Duplicate(pairs(&row, 0, 1));
            if let Some(used) = stored.get_mut(&a.from_uid) {
                *used = used.saturating_sub(charges[i]);
            }
            continue;
        }
        let mut msg = a.msg.clone();
        for &(uid, seq) in &a.to {
            msg.seq = seq;
            i_uid.push(big(uid)?);
            i_seq.push(big(seq)?);
            i_msg.push(msg.encode_to_vec());
            let head = raised.entry(uid).or_default();
            *head = (*head).max(seq);
        }
    }
    cache
        .execute(&txn, INSERT_INBOX, &[&i_uid, &i_seq, &i_msg])
        .await?;
    let (h_uid, h_seq): (Vec<i64>, Vec<i64>) = raised
        .iter()
        .map(|(&u, &s)| Ok::<_, StoreError>((big(u)?, big(s)?)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    cache.execute(&txn, RAISE_HEADS, &[&h_uid, &h_seq]).await?;
    let (b_uid, b_bytes): (Vec<i64>, Vec<i64>) = stored
        .iter()
        .map(|(&u, &b)| Ok::<_, StoreError>((big(u)?, i64::try_from(b).unwrap_or(i64::MAX))))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    cache.execute(&txn, SET_STORED, &[&b_uid, &b_bytes]).await?;
    // Long polls waiting in other processes are woken on commit (LISTEN/NOTIFY).
    for payload in notify_payloads(i_uid.iter().copied()) {
        cache.execute(&txn, NOTIFY, &[&CHANNEL, &payload]).await?;
    }
    txn.commit().await.map_err(err)?;
    Ok(results)
}

/// The notification channel of appends: the payload is recipients' ids, comma-separated.
const CHANNEL: &str = "svrkit_inbox";
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7900;

/// The recipients, deduplicated, as payloads within PostgreSQL's size limit.
fn notify_payloads(uids: impl Iterator<Item = i64>) -> Vec<String> {
    let mut uids: Vec<i64> = uids.collect();
    uids.sort_unstable();
    uids.dedup();
    let mut payloads = vec![String::new()];
    for uid in uids {
        let uid = uid.to_string();
        let last = payloads.last_mut().expect("one at least");
        if last.len() + uid.len() + 1 > MAX_PAYLOAD {
            payloads.push(uid);
        } else {
            if !last.is_empty() {
                last.push(',');
            }
            last.push_str(&uid);
        }
    }
    payloads
}

/// Listens for the appends of every process and passes their recipients on; after a
/// (re)connect, when notifications may have been missed, it sends an empty list: wake
/// everyone.
async fn listen(pg: tokio_postgres::Config, tx: broadcast::Sender<Arc<[u64]>>) {
    let mut wait = Duration::from_millis(50);
    loop {
        if let Err(e) = listen_once(&pg, &tx, &mut wait).await {
            tracing::warn!("postgres notifications: {e}");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// One connection's worth of [`listen`]: returns when it is lost.
async fn listen_once(
    pg: &tokio_postgres::Config,
    tx: &broadcast::Sender<Arc<[u64]>>,
    wait: &mut Duration,
) -> Result<(), StoreError> {
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(NoTls))
        .await
        .map_err(|_| err("the server did not answer within 5 s"))?
        .map_err(err)?;
    // The connection hands notifications out as it is polled: a task polls it.
    let (notes, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("postgres notifications: {e}");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(err)?;
    *wait = Duration::from_millis(50);
    let _ = tx.send(Arc::from(Vec::new()));
    while let Some(note) = received.recv().await {
        let uids: Vec<u64> = note
            .payload()
            .split(',')
            .filter_map(|u| u.parse().ok())
            .collect();
        if !uids.is_empty() {
            let _ = tx.send(Arc::from(uids));
        }
    }
    driver.abort();
    Ok(())
}

/// `{1,2,3}`: a bigint array literal.
fn array_text(values: &[u64]) -> String {
    let inner: Vec<String> = values.iter().map(u64::to_string).collect();
    format!("{{{}}}", inner.join(","))
}

impl AccountStore for Postgres {
    fn create_user(&self, name: &str, password_hash: &str) -> StoreFuture<'_, Option<u64>> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        Box::pin(async move {
            let row = self
                .query_opt(
                    "INSERT INTO users (name, password_hash) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING RETURNING uid",
                    &[&name, &hash],
                )
                .await?;
            Ok(row.map(|r| unbig(r.get(0))))
        })
    }

    fn user_by_name(&self, name: &str) -> StoreFuture<'_, Option<User>> {
        let name = name.to_owned();
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT uid, name, password_hash FROM users WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(row.map(|r| user(&r)))
        })
    }

    fn user_by_id(&self, uid: u64) -> StoreFuture<'_, Option<User>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT uid, name, password_hash FROM users WHERE uid = $1",
                    &[&big(uid)?],
                )
                .await?;
            Ok(row.map(|r| user(&r)))
        })
    }

    fn put_session(&self, id: [u8; 32], session: SessionRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let keep = i64::try_from(MAX_SESSIONS - 1).map_err(err)?;
            // One statement: the user's expired sessions and those past the cap go as the
            // new one comes.
            self.execute(
                "WITH gone AS (
                   DELETE FROM sessions WHERE uid = $2 AND (expires_at_ms <= $5 OR id IN (
                     SELECT id FROM sessions WHERE uid = $2 AND expires_at_ms > $5
                     ORDER BY created_at_ms DESC, id OFFSET $6))
                 )
                 INSERT INTO sessions (id, uid, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                &[
                    &id.as_slice(),
                    &big(session.uid)?,
                    &big(session.created_at_ms)?,
                    &big(session.expires_at_ms)?,
                    &big(crate::now_ms())?,
                    &keep,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn session(&self, id: [u8; 32]) -> StoreFuture<'_, Option<SessionRecord>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT uid, created_at_ms, expires_at_ms FROM sessions WHERE id = $1",
                    &[&id.as_slice()],
                )
                .await?;
            Ok(row.map(|r| session(&r)))
        })
    }

    fn sessions_of(&self, uid: u64) -> StoreFuture<'_, Vec<([u8; 32], SessionRecord)>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT uid, created_at_ms, expires_at_ms, id FROM sessions WHERE uid = $1
                     ORDER BY created_at_ms, id",
                    &[&big(uid)?],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let id: &[u8] = r.get(3);
                    Some((<[u8; 32]>::try_from(id).ok()?, session(r)))
                })
                .collect())
        })
    }

    fn revoke(&self, uid: u64, which: Revoke) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let uid = big(uid)?;
            match which {
                Revoke::One(id) => {
                    self.execute(
                        "DELETE FROM sessions WHERE uid = $1 AND id = $2",
                        &[&uid, &id.as_slice()],
                    )
                    .await
                }
                Revoke::AllBut(keep) => {
                    let keep = keep.as_ref().map(<[u8; 32]>::as_slice);
                    self.execute(
                        "DELETE FROM sessions WHERE uid = $1 AND id IS DISTINCT FROM $2",
                        &[&uid, &keep],
                    )
                    .await
                }
            }
        })
    }

    fn set_password(
        &self,
        uid: u64,
        password_hash: &str,
        keep: Option<[u8; 32]>,
    ) -> StoreFuture<'_, ()> {
        let hash = password_hash.to_owned();
        Box::pin(async move {
            let keep = keep.as_ref().map(<[u8; 32]>::as_slice);
            // One statement, so one transaction: no window in which the new password is
            // set and the old one's sessions still live.
            let changed = self
                .execute(
                    "WITH gone AS (
                       DELETE FROM sessions WHERE uid = $1 AND id IS DISTINCT FROM $3
                     )
                     UPDATE users SET password_hash = $2 WHERE uid = $1",
                    &[&big(uid)?, &hash, &keep],
                )
                .await?;
            if changed == 0 {
                return Err(StoreError::new(format!("no user {uid}")));
            }
            Ok(())
        })
    }
}

/// A session from a row starting with `uid, created_at_ms, expires_at_ms`.
fn session(row: &tokio_postgres::Row) -> SessionRecord {
    SessionRecord {
        uid: unbig(row.get(0)),
        created_at_ms: unbig(row.get(1)),
        expires_at_ms: unbig(row.get(2)),
    }
}

fn edge_of(row: &tokio_postgres::Row) -> Option<Edge> {
    let link: i16 = row.get("link");
    Some(Edge {
        link: Link::from_u8(u8::try_from(link).ok()?)?,
        at_ms: unbig(row.get("at_ms")),
        note: row.get("note"),
    })
}

impl ContactStore for Postgres {
    fn edges(&self, uid: u64) -> StoreFuture<'_, Vec<(u64, Edge)>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT b, link, at_ms, note FROM edges WHERE a = $1 ORDER BY b",
                    &[&big(uid)?],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| Some((unbig(r.get("b")), edge_of(r)?)))
                .collect())
        })
    }

    fn pair(&self, a: u64, b: u64) -> StoreFuture<'_, Pair> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT a, link, at_ms, note FROM edges
                     WHERE (a = $1 AND b = $2) OR (a = $2 AND b = $1)",
                    &[&big(a)?, &big(b)?],
                )
                .await?;
            let side = |from: u64| {
                rows.iter()
                    .find(|r| unbig(r.get("a")) == from)
                    .and_then(edge_of)
            };
            Ok((side(a), side(b)))
        })
    }

    fn relate(
        &self,
        a: u64,
        b: u64,
        relate: Relate,
    ) -> StoreFuture<'_, Result<Pair, svrkit_runtime::Status>> {
        Box::pin(async move {
            let (ia, ib) = (big(a)?, big(b)?);
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(err)?;
            // The pair's rows may not exist yet: a lock on the pair itself serializes its
            // changes (two users asking each other at once become contacts, once).
            let key = ia.min(ib).wrapping_mul(0x9E37_79B9) ^ ia.max(ib);
            txn.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .await
                .map_err(err)?;
            let rows = txn
                .query(
                    "SELECT a, link, at_ms, note FROM edges
                     WHERE (a = $1 AND b = $2) OR (a = $2 AND b = $1)",
                    &[&ia, &ib],
                )
                .await
                .map_err(err)?;
            let side = |from: i64| {
                rows.iter()
                    .find(|r| r.get::<_, i64>("a") == from)
                    .and_then(edge_of)
            };
            let (ab, ba) = match relate((side(ia), side(ib))) {
                Ok(pair) => pair,
                Err(refusal) => return Ok(Err(refusal)),
            };
            for (from, to, edge) in [(ia, ib, &ab), (ib, ia, &ba)] {
                match edge {
                    Some(e) => {
                        let link = i16::from(e.link as u8);
                        txn.execute(
                            "INSERT INTO edges (a, b, link, at_ms, note) VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (a, b) DO UPDATE SET link = excluded.link,
                               at_ms = excluded.at_ms, note = excluded.note",
                            &[&from, &to, &link, &big(e.at_ms)?, &e.note],
                        )
                        .await
                        .map_err(err)?;
                    }
                    None => {
                        txn.execute("DELETE FROM edges WHERE a = $1 AND b = $2", &[&from, &to])
                            .await
                            .map_err(err)?;
                    }
                }
            }
            txn.commit().await.map_err(err)?;
            Ok(Ok((ab, ba)))
        })
    }
}

fn user(row: &tokio_postgres::Row) -> User {
    User {
        uid: unbig(row.get(0)),
        name: row.get(1),
        password_hash: row.get(2),
    }
}

impl SeqStore for Postgres {
    fn max_seq(&self, section: u32) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let section = i32::try_from(section).map_err(err)?;
            let row = self
                .query_opt(
                    "SELECT max_seq FROM seq_sections WHERE section = $1",
                    &[&section],
                )
                .await?;
            Ok(row.map_or(0, |r| unbig(r.get(0))))
        })
    }

    fn raise_max_seq(&self, section: u32, to: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let section = i32::try_from(section).map_err(err)?;
            let row = self
                .query_one(
                    "INSERT INTO seq_sections (section, max_seq) VALUES ($1, $2)
                     ON CONFLICT (section) DO UPDATE
                       SET max_seq = greatest(seq_sections.max_seq, excluded.max_seq)
                     RETURNING max_seq",
                    &[&section, &big(to)?],
                )
                .await?;
            Ok(unbig(row.get(0)))
        })
    }
}

impl InboxStore for Postgres {
    fn append(&self, append: Append) -> StoreFuture<'static, Appended> {
        let (reply, answer) = oneshot::channel();
        let sent = self.appends.send(Pending { append, reply });
        Box::pin(async move {
            sent.map_err(|_| err("the append committer has stopped"))?;
            answer
                .await
                .map_err(|_| err("the append committer has stopped"))?
        })
    }

    fn appended(&self) -> Option<broadcast::Receiver<Arc<[u64]>>> {
        Some(self.appended.subscribe())
    }

    fn fetch(&self, uid: u64, after_seq: u64, limit: usize) -> StoreFuture<'_, (Vec<Msg>, bool)> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT msg FROM inbox WHERE uid = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[
                        &big(uid)?,
                        &big(after_seq)?,
                        &i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            let more = rows.len() > limit;
            let msgs = rows
                .iter()
                .take(limit)
                .map(|row| {
                    Msg::decode(row.get::<_, &[u8]>(0))
                        .map_err(|e| StoreError::wrap(format!("inbox of {uid}"), e))
                })
                .collect::<Result<_, _>>()?;
            Ok((msgs, more))
        })
    }

    fn stored_bytes(&self, uid: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT bytes FROM stored_bytes WHERE uid = $1",
                    &[&big(uid)?],
                )
                .await?;
            Ok(rows.first().map_or(0, |row| unbig(row.get(0))))
        })
    }
}

impl GroupStore for Postgres {
    fn create_group(
        &self,
        owner_uid: u64,
        name: &str,
        max_owned: usize,
    ) -> StoreFuture<'_, Option<Group>> {
        let name = name.to_owned();
        Box::pin(async move {
            let owner = big(owner_uid)?;
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(err)?;
            // One creation per owner at a time: two cannot pass the cap together.
            txn.execute(
                "SELECT pg_advisory_xact_lock(1, hashtext($1::text))",
                &[&owner.to_string()],
            )
            .await
            .map_err(err)?;
            let owned: i64 = txn
                .query_one(
                    "SELECT count(*) FROM groups WHERE owner_uid = $1",
                    &[&owner],
                )
                .await
                .map_err(err)?
                .get(0);
            if usize::try_from(owned).unwrap_or(usize::MAX) >= max_owned {
                return Ok(None);
            }
            let id: i64 = txn
                .query_one("SELECT nextval('groups_group_id_seq')", &[])
                .await
                .map_err(err)?
                .get(0);
            let group = Group {
                group_id: unbig(id),
                name: name.into(),
                owner_uid,
                members: vec![owner_uid],
                ..Group::default()
            };
            txn.execute(
                "INSERT INTO groups (group_id, body, owner_uid) VALUES ($1, $2, $3)",
                &[&id, &group.encode_to_vec(), &owner],
            )
            .await
            .map_err(err)?;
            txn.commit().await.map_err(err)?;
            Ok(Some(group))
        })
    }

    fn groups_owned(&self, uid: u64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let row = self
                .query_one(
                    "SELECT count(*) FROM groups WHERE owner_uid = $1",
                    &[&big(uid)?],
                )
                .await?;
            let n: i64 = row.get(0);
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn group(&self, group_id: u64) -> StoreFuture<'_, Option<Group>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT body FROM groups WHERE group_id = $1",
                    &[&big(group_id)?],
                )
                .await?;
            row.map(|r| decode_group(r.get(0))).transpose()
        })
    }

    fn update_group(&self, group_id: u64, edit: GroupEdit) -> StoreFuture<'_, GroupChange> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(err)?;
            let id = big(group_id)?;
            // Locked: two edits that each fit a cap cannot pass it together.
            let Some(row) = txn
                .query_opt(
                    "SELECT body FROM groups WHERE group_id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(err)?
            else {
                return Ok(GroupChange::NoGroup);
            };
            let mut group = decode_group(row.get(0))?;
            if let Err(refusal) = edit(&mut group) {
                return Ok(GroupChange::Refused(refusal));
            }
            let owner = (group.owner_uid != 0)
                .then(|| big(group.owner_uid))
                .transpose()?;
            txn.execute(
                "UPDATE groups SET body = $2, owner_uid = $3 WHERE group_id = $1",
                &[&id, &group.encode_to_vec(), &owner],
            )
            .await
            .map_err(err)?;
            txn.commit().await.map_err(err)?;
            Ok(GroupChange::Done(group))
        })
    }
}

fn decode_group(body: &[u8]) -> Result<Group, StoreError> {
    Group::decode(body).map_err(|e| StoreError::wrap("group", e))
}
