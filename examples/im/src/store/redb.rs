//! The embedded engine: one redb file in the data directory, written by one committer
//! thread that commits whatever writes are waiting together.
//!
//! Reads open their own read transaction on the caller's thread (redb readers do not wait
//! for the writer). Writes are sent to the committer as operations; it takes every
//! operation queued, applies them in order in one write transaction, commits it durably
//! (`Durability::Immediate`: fsync) and only then answers each. While it flushes, the next
//! batch queues up, so under load a flush serves many writes: group commit. Operations are
//! applied in the order they were sent, which gives [`InboxStore::append`] its ordering.
//!
//! Appends go to a log first and reach the inbox table later, in chunks (see
//! [`recent`](super::recent) for why and how readers see both).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use svrkit_runtime::codec::Message;
use tokio::sync::oneshot;

use super::recent::{Logged, Recent, Window};
use super::reopen::{DbFile, probe_dir};
use super::{
    AccountStore, Append, Appended, ContactStore, Edge, GroupChange, GroupEdit, GroupStore,
    InboxStore, Link, MAX_SESSIONS, Pair, Relate, Revoke, SeqStore, SessionRecord, StoreConfig,
    StoreError, StoreFuture, User,
};
use crate::im::group::Group;
use crate::im::msg::{InboxChunk, LogRecord, Msg};
use svrkit_runtime::monitor::health::Transition;

/// Counters: `next_uid`, `next_group_id`; `log_moved`: the last log entry moved into
/// `inbox`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// name → uid.
const NAMES: TableDefinition<&str, u64> = TableDefinition::new("names");
/// uid → (name, password hash).
const USERS: TableDefinition<u64, (&str, &str)> = TableDefinition::new("users");
/// session id (the SHA-256 of its token) → (uid, created_at_ms, expires_at_ms).
const SESSIONS: TableDefinition<&[u8], (u64, u64, u64)> = TableDefinition::new("session_ids");
/// (uid, created_at_ms, session id) → (): a user's sessions, oldest first.
const USER_SESSIONS: TableDefinition<(u64, u64, &[u8]), ()> = TableDefinition::new("user_sessions");
/// What stores written before sessions were kept by id held: raw tokens. Deleted at open.
const RAW_TOKENS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("sessions");
/// section → max_seq.
const SECTIONS: TableDefinition<u32, u64> = TableDefinition::new("seq_sections");
/// (uid, first seq) → encoded `im.msg.InboxChunk`: up to [`CHUNK_MSGS`] consecutive
/// messages of the user's inbox, so that moving many messages of a user is one insert.
const INBOX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("inbox_chunks");
/// Appends, in the order committed: log id → encoded `im.msg.LogRecord`. Kept while in the
/// idempotency window (and until moved into `inbox`).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox_log");
/// group id → encoded `im.group.Group`.
const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
/// (owner, group id) → (): the groups each user owns.
const OWNED: TableDefinition<(u64, u64), ()> = TableDefinition::new("groups_owned");
/// sender → bytes its stored messages cost ([`Append::charge`] summed).
const STORED_BYTES: TableDefinition<u64, u64> = TableDefinition::new("stored_bytes");
/// (user, other user) → the user's side of their relation: (link, at_ms, note).
const EDGES: TableDefinition<(u64, u64), (u8, u64, &str)> = TableDefinition::new("edges");

/// Operations a batch takes at most, so that one flush does not keep the first writer
/// waiting behind an unbounded queue.
const MAX_BATCH: usize = 4096;
/// Messages an inbox chunk holds at most (a fetch decodes a whole chunk).
const CHUNK_MSGS: usize = 64;

/// The embedded store: every service's tables in `<data>/im.redb`.
pub struct Redb {
    file: Arc<DbFile>,
    /// `None` only while dropping.
    writes: Option<mpsc::Sender<Op>>,
    committer: Option<thread::JoinHandle<()>>,
    recent: Arc<Mutex<Recent>>,
}

impl Drop for Redb {
    /// Waits for the committer to finish what was sent and let go of the file, so that it
    /// can be opened again at once.
    fn drop(&mut self) {
        self.writes = None;
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redb").finish_non_exhaustive()
    }
}

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::engine(e.into())
}

impl Redb {
    /// Opens (or creates) the store in directory `data`, and starts its committer thread
    /// (which ends when the store is dropped).
    ///
    /// # Errors
    /// When the directory or the file cannot be created or opened, or the file is not a
    /// redb database (or is one already open in another process).
    pub fn open(data: &Path, config: &StoreConfig) -> Result<Redb, StoreError> {
        std::fs::create_dir_all(data)
            .map_err(|e| StoreError::wrap(format!("cannot create {}", data.display()), e))?;
        let path = data.join("im.redb");
        let cache = config.cache_bytes;
        let dir = data.to_owned();
        Redb::open_with(
            config,
            move || {
                Database::builder()
                    .set_cache_size(cache)
                    .create(&path)
                    .map_err(|e| StoreError::wrap(path.display(), e))
            },
            move || probe_dir(&dir),
        )
    }

    /// Opens the store on the database `open` opens, each time the store opens it (at
    /// start, and again after an I/O error): a file, or in tests a storage backend that
    /// fails on demand. After an I/O error, writes resume once `probe` says there is room.
    ///
    /// # Errors
    /// As [`Redb::open`].
    pub fn open_with(
        config: &StoreConfig,
        open: impl Fn() -> Result<Database, StoreError> + Send + Sync + 'static,
        probe: impl Fn() -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> Result<Redb, StoreError> {
        if config.move_chunk == 0 || config.move_at == 0 {
            return Err(StoreError::new(
                "app.store.move_at and move_chunk: at least 1",
            ));
        }
        // Opening again after an I/O error writes nothing: the tables exist by then, and
        // the disk may still be full.
        let file = Arc::new(DbFile::open(Box::new(open), Box::new(probe))?);
        create_tables(&*file.get()?)?;
        let db = file.get()?;
        let (recent, window, next_log_id) = recover(&db)?;
        let trimmed = window.first().unwrap_or(next_log_id);
        drop(db);
        let recent = Arc::new(Mutex::new(recent));
        let (writes, queue) = mpsc::channel();
        let committer = Committer {
            file: file.clone(),
            recent: recent.clone(),
            window,
            next_log_id,
            trimmed,
            config: config.clone(),
            health: svrkit_runtime::monitor::health::check(super::WRITES_CHECK),
            broken: None,
        };
        let committer = thread::Builder::new()
            .name("im-redb-commit".into())
            .spawn(move || committer.run(&queue))
            .map_err(|e| StoreError::wrap("cannot start the committer", e))?;
        Ok(Redb {
            file,
            writes: Some(writes),
            committer: Some(committer),
            recent,
        })
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        lock(&self.recent)
    }

    /// Sends a write to the committer; the future resolves once it is durable.
    fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> StoreFuture<'static, T> {
        let (tx, rx) = oneshot::channel();
        let sent = match &self.writes {
            Some(writes) => writes.send(op(tx)).map_err(drop),
            None => Err(()),
        };
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError::new("the committer has stopped"));
            }
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::new(
                    "the write failed with its batch (see the log)",
                ))
            })
        })
    }

    /// Runs a read in a read transaction.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> StoreFuture<'static, T> {
        // A read of a few pages: done before returning rather than on another thread, which
        // would cost more than it takes.
        let result = self
            .file
            .get()
            .and_then(|db| db.begin_read().map_err(err))
            .and_then(|txn| f(&txn));
        Box::pin(std::future::ready(result))
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write for the committer.
enum Op {
    CreateUser {
        name: String,
        hash: String,
        reply: Reply<Option<u64>>,
    },
    PutSession {
        id: [u8; 32],
        session: SessionRecord,
        reply: Reply<()>,
    },
    Revoke {
        uid: u64,
        which: Revoke,
        reply: Reply<u64>,
    },
    SetPassword {
        uid: u64,
        hash: String,
        keep: Option<[u8; 32]>,
        reply: Reply<()>,
    },
    RaiseMax {
        section: u32,
        to: u64,
        reply: Reply<u64>,
    },
    Append {
        append: Append,
        reply: Reply<Appended>,
    },
    CreateGroup {
        owner: u64,
        name: String,
        max_owned: usize,
        reply: Reply<Option<Group>>,
    },
    UpdateGroup {
        group_id: u64,
        edit: GroupEdit,
        reply: Reply<GroupChange>,
    },
    Relate {
        a: u64,
        b: u64,
        relate: Relate,
        reply: Reply<Result<Pair, svrkit_runtime::Status>>,
    },
}

impl Op {
    /// Answers the operation with `e`, unapplied.
    fn fail(self, e: &StoreError) {
        fn send<T>(reply: Reply<T>, e: &StoreError) {
            let _ = reply.send(Err(e.clone()));
        }
        match self {
            Op::CreateUser { reply, .. } => send(reply, e),
            Op::PutSession { reply, .. } | Op::SetPassword { reply, .. } => send(reply, e),
            Op::Revoke { reply, .. } => send(reply, e),
            Op::RaiseMax { reply, .. } => send(reply, e),
            Op::Append { reply, .. } => send(reply, e),
            Op::CreateGroup { reply, .. } => send(reply, e),
            Op::UpdateGroup { reply, .. } => send(reply, e),
            Op::Relate { reply, .. } => send(reply, e),
        }
    }
}

/// An applied operation's answer, sent once its batch is durable.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, value: T) -> Answer {
    Box::new(move |failed| {
        let _ = reply.send(match failed {
            None => Ok(value),
            Some(e) => Err(e.clone()),
        });
    })
}

fn lock(recent: &Mutex<Recent>) -> MutexGuard<'_, Recent> {
    recent.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the tables readers open (they must exist), and deletes what older versions kept
/// that must not stay.
fn create_tables(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(err)?;
    txn.open_table(META).map_err(err)?;
    txn.open_table(NAMES).map_err(err)?;
    txn.open_table(USERS).map_err(err)?;
    txn.open_table(SESSIONS).map_err(err)?;
    txn.open_table(USER_SESSIONS).map_err(err)?;
    // Its tokens would log in whoever copies the file: those sessions end.
    txn.delete_table(RAW_TOKENS).map_err(err)?;
    txn.open_table(SECTIONS).map_err(err)?;
    txn.open_table(INBOX).map_err(err)?;
    txn.open_table(GROUPS).map_err(err)?;
    txn.open_table(EDGES).map_err(err)?;
    txn.open_table(LOG).map_err(err)?;
    txn.open_table(STORED_BYTES).map_err(err)?;
    {
        // Stores from before owners were indexed: index them once.
        let groups = txn.open_table(GROUPS).map_err(err)?;
        let mut owned = txn.open_table(OWNED).map_err(err)?;
        if owned.is_empty().map_err(err)? {
            for entry in groups.iter().map_err(err)? {
                let (id, body) = entry.map_err(err)?;
                let group =
                    Group::decode(body.value()).map_err(|e| StoreError::wrap("group record", e))?;
                if group.owner_uid != 0 {
                    owned
                        .insert((group.owner_uid, id.value()), ())
                        .map_err(err)?;
                }
            }
        }
    }
    txn.commit().map_err(err)
}

/// What the log holds at start: the appends not yet moved into the inbox table, the
/// idempotency window, the next log id.
fn recover(db: &Database) -> Result<(Recent, Window, u64), StoreError> {
    let txn = db.begin_read().map_err(err)?;
    let meta = txn.open_table(META).map_err(err)?;
    let moved = meta.get("log_moved").map_err(err)?.map_or(0, |v| v.value());
    let log = txn.open_table(LOG).map_err(err)?;
    let mut recent = Recent::default();
    let mut window = Window::default();
    let mut next = moved + 1;
    let now = Instant::now();
    for entry in log.iter().map_err(err)? {
        let (id, value) = entry.map_err(err)?;
        let id = id.value();
        let record = LogRecord::decode(value.value())
            .map_err(|e| StoreError::wrap(format!("log record {id}"), e))?;
        next = next.max(id + 1);
        let m = &record.msg;
        window.push(id, m.from_uid, &m.client_msg_id, record.logged_at_ms);
        if id > moved {
            recent.push(logged(id, now, record));
        }
    }
    Ok((recent, window, next))
}

fn logged(log_id: u64, at: Instant, record: LogRecord) -> Logged {
    Logged {
        log_id,
        at,
        from_uid: record.msg.from_uid,
        client_msg_id: record.msg.client_msg_id.to_string(),
        to: record.to_uids.into_iter().zip(record.seqs).collect(),
        msg: record.msg,
        logged_at_ms: record.logged_at_ms,
    }
}

/// How long after a failed write the store first tries to reopen; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// While writes keep failing, the log says so at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Writes fail: when to try to reopen, and what was last logged.
struct Broken {
    retry_at: Instant,
    backoff: Duration,
    logged_at: Instant,
}

/// The committer thread's state.
struct Committer {
    file: Arc<DbFile>,
    /// `/readyz`'s word on writes.
    health: Arc<svrkit_runtime::monitor::health::Check>,
    broken: Option<Broken>,
    recent: Arc<Mutex<Recent>>,
    window: Window,
    next_log_id: u64,
    /// Log entries below this are deleted (or never were).
    trimmed: u64,
    config: StoreConfig,
}

/// What a batch changes in the recent tier once committed.
#[derive(Default)]
struct Pending {
    logged: Vec<Logged>,
    /// Appends of this batch by (sender, client id): a second one in the same batch is a
    /// duplicate of the first.
    keys: std::collections::HashMap<(u64, String), Vec<(u64, u64)>>,
}

impl Committer {
    fn run(mut self, queue: &mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let mut wait = Duration::from_millis(self.config.move_after_ms);
            if let Some(broken) = &self.broken {
                wait = wait.min(broken.retry_at.saturating_duration_since(Instant::now()));
            }
            match queue.recv_timeout(wait) {
                Ok(op) => batch.push(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if self
                .broken
                .as_ref()
                .is_some_and(|b| Instant::now() >= b.retry_at)
            {
                self.reopen();
            }
            if self.broken.is_some() {
                // Until the file is open again and takes a write, writes fail at once,
                // without touching it.
                let e = StoreError::new("writes fail (an I/O error; the store retries by itself)");
                for op in batch.drain(..) {
                    op.fail(&e);
                }
                continue;
            }
            let moving = self.to_move();
            if batch.is_empty() && moving == 0 {
                continue;
            }
            let mut answers = Vec::with_capacity(batch.len());
            let mut pending = Pending::default();
            let (ops, started) = (batch.len(), Instant::now());
            let batch_first = self.next_log_id;
            let result = self.begin_write().and_then(|txn| {
                for op in batch.drain(..) {
                    answers.push(self.apply(&txn, op, &mut pending)?);
                }
                self.move_into_inbox(&txn, moving)?;
                let trimmed = self.trim_log(&txn, batch_first)?;
                txn.commit().map_err(err).map(|()| trimmed)
            });
            tracing::trace!(ops, moving, took = ?started.elapsed(), "committed a batch");
            // A failed batch fails every write in it: nothing of it was committed. The
            // writes not yet applied when it failed were dropped, and their callers see that.
            let failed = result.as_ref().err().cloned();
            match result {
                Err(e) => {
                    self.failed(&e);
                    // At once, so that reads work again meanwhile (redb latched the error,
                    // and reads fail with it too); writes stay refused until the probe.
                    if let Err(e) = self.file.reopen() {
                        tracing::debug!("reopen after a failed write: {e}");
                    }
                }
                Ok(trimmed) => {
                    self.passed();
                    self.trimmed = trimmed;
                    for l in &pending.logged {
                        self.window
                            .push(l.log_id, l.from_uid, &l.client_msg_id, l.logged_at_ms);
                    }
                    let mut recent = lock(&self.recent);
                    recent.moved(moving);
                    for logged in pending.logged {
                        recent.push(logged);
                    }
                }
            }
            for answer in answers.drain(..) {
                answer(failed.as_ref());
            }
            batch.clear();
        }
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.file.get()?.begin_write().map_err(err)
    }

    /// Notes a failed write: readiness fails, the log says so (once, then at most every
    /// [`LOG_EVERY`]), and a reopen is due after the backoff.
    fn failed(&mut self, e: &StoreError) {
        let now = Instant::now();
        let transition = self.health.fail(e.to_string());
        let backoff = self
            .broken
            .as_ref()
            .map_or(FIRST_BACKOFF, |b| (b.backoff * 2).min(MAX_BACKOFF));
        let mut logged_at = self.broken.as_ref().map_or(now, |b| b.logged_at);
        if transition == Transition::Failed {
            tracing::error!("writes fail: {e}; the store reopens and retries by itself");
        } else if now.duration_since(logged_at) >= LOG_EVERY {
            tracing::error!("writes still fail: {e}");
            logged_at = now;
        }
        self.broken = Some(Broken {
            retry_at: now + backoff,
            backoff,
            logged_at,
        });
    }

    /// Notes a committed batch.
    fn passed(&mut self) {
        self.broken = None;
        if let Transition::Recovered(after) = self.health.pass() {
            tracing::info!(?after, "writes work again");
        }
    }

    /// After a failure: opens the file if it is not open, and once the probe says there is
    /// room, takes the state in memory back from the file (the failed batches left nothing
    /// in it) and lets writes through.
    fn reopen(&mut self) {
        let reopened = self
            .file
            .get()
            .or_else(|_| self.file.reopen())
            .and_then(|db| {
                self.file.probe()?;
                recover(&db)
            });
        match reopened {
            Ok((recent, window, next_log_id)) => {
                self.trimmed = window.first().unwrap_or(next_log_id);
                self.window = window;
                self.next_log_id = next_log_id;
                *lock(&self.recent) = recent;
                self.passed();
            }
            Err(e) => self.failed(&e),
        }
    }

    /// How many recent appends to move into the inbox table with this batch.
    fn to_move(&self) -> usize {
        let recent = lock(&self.recent);
        let due = recent.len() >= self.config.move_at
            || recent
                .oldest()
                .is_some_and(|at| at.elapsed() >= Duration::from_millis(self.config.move_after_ms));
        if due {
            recent.len().min(self.config.move_chunk)
        } else {
            0
        }
    }

    /// Writes the oldest `n` recent appends into the inbox table, each user's messages in
    /// chunks.
    fn move_into_inbox(&mut self, txn: &WriteTransaction, n: usize) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let recent = lock(&self.recent);
        let mut by_user: std::collections::BTreeMap<u64, Vec<Msg>> =
            std::collections::BTreeMap::new();
        let mut last = 0;
        for logged in recent.oldest_entries(n) {
            for &(uid, seq) in &logged.to {
                let mut msg = logged.msg.clone();
                msg.seq = seq;
                by_user.entry(uid).or_default().push(msg);
            }
            last = logged.log_id;
        }
        drop(recent);
        let mut inbox = txn.open_table(INBOX).map_err(err)?;
        for (uid, msgs) in by_user {
            for chunk in msgs.chunks(CHUNK_MSGS) {
                let record = InboxChunk {
                    msgs: chunk.to_vec(),
                    ..InboxChunk::default()
                };
                inbox
                    .insert((uid, chunk[0].seq), record.encode_to_vec().as_slice())
                    .map_err(err)?;
            }
        }
        let mut meta = txn.open_table(META).map_err(err)?;
        meta.insert("log_moved", last).map_err(err)?;
        Ok(())
    }

    /// Deletes the log entries that left the idempotency window and are in the inbox table.
    ///
    /// `batch_first` is the first log id of the batch being committed, whose entries are in
    /// neither the window nor the recent tier yet.
    /// Returns where the log starts once this batch is committed.
    fn trim_log(&mut self, txn: &WriteTransaction, batch_first: u64) -> Result<u64, StoreError> {
        let first_kept = self.window.trim(crate::now_ms()).unwrap_or(batch_first);
        let moved = lock(&self.recent).first_log_id().unwrap_or(batch_first);
        let until = first_kept.min(moved);
        if until <= self.trimmed {
            return Ok(self.trimmed);
        }
        let mut log = txn.open_table(LOG).map_err(err)?;
        for id in self.trimmed..until {
            log.remove(id).map_err(err)?;
        }
        Ok(until)
    }
}

fn next_id(txn: &WriteTransaction, counter: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(err)?;
    let next = meta.get(counter).map_err(err)?.map_or(1, |v| v.value());
    meta.insert(counter, next + 1).map_err(err)?;
    Ok(next)
}

impl Committer {
    /// The pairs of the append in log entry `log_id`, if it has this key.
    fn logged_pairs(
        &self,
        txn: &WriteTransaction,
        log_id: u64,
        from_uid: u64,
        client_msg_id: &str,
    ) -> Result<Option<Vec<(u64, u64)>>, StoreError> {
        if let Some(pairs) = lock(&self.recent).find(log_id, from_uid, client_msg_id) {
            return Ok(Some(pairs));
        }
        let log = txn.open_table(LOG).map_err(err)?;
        let Some(value) = log.get(log_id).map_err(err)? else {
            return Ok(None);
        };
        let record = LogRecord::decode(value.value())
            .map_err(|e| StoreError::wrap(format!("log record {log_id}"), e))?;
        let same = record.msg.from_uid == from_uid && record.msg.client_msg_id == client_msg_id;
        Ok(same.then(|| record.to_uids.into_iter().zip(record.seqs).collect()))
    }

    fn apply(
        &mut self,
        txn: &WriteTransaction,
        op: Op,
        pending: &mut Pending,
    ) -> Result<Answer, StoreError> {
        Ok(match op {
            Op::CreateUser { name, hash, reply } => {
                let mut names = txn.open_table(NAMES).map_err(err)?;
                if names.get(name.as_str()).map_err(err)?.is_some() {
                    return Ok(answer(reply, None));
                }
                let uid = next_id(txn, "next_uid")?;
                names.insert(name.as_str(), uid).map_err(err)?;
                let mut users = txn.open_table(USERS).map_err(err)?;
                users
                    .insert(uid, (name.as_str(), hash.as_str()))
                    .map_err(err)?;
                answer(reply, Some(uid))
            }
            Op::PutSession { id, session, reply } => {
                let s = session;
                let now = crate::now_ms();
                let mut kept = {
                    let sessions = txn.open_table(SESSIONS).map_err(err)?;
                    let by_user = txn.open_table(USER_SESSIONS).map_err(err)?;
                    sessions_in(&sessions, &by_user, s.uid)?
                };
                kept.retain(|(_, r)| r.expires_at_ms > now);
                let excess = (kept.len() + 1).saturating_sub(MAX_SESSIONS);
                let kept: Vec<[u8; 32]> = kept.iter().skip(excess).map(|(id, _)| *id).collect();
                end_sessions(txn, s.uid, |other| !kept.contains(other))?;
                txn.open_table(SESSIONS)
                    .map_err(err)?
                    .insert(id.as_slice(), (s.uid, s.created_at_ms, s.expires_at_ms))
                    .map_err(err)?;
                txn.open_table(USER_SESSIONS)
                    .map_err(err)?
                    .insert((s.uid, s.created_at_ms, id.as_slice()), ())
                    .map_err(err)?;
                answer(reply, ())
            }
            Op::Revoke { uid, which, reply } => {
                let ended = end_sessions(txn, uid, |id| match which {
                    Revoke::One(one) => *id == one,
                    Revoke::AllBut(keep) => Some(*id) != keep,
                })?;
                answer(reply, ended)
            }
            Op::SetPassword {
                uid,
                hash,
                keep,
                reply,
            } => {
                let mut users = txn.open_table(USERS).map_err(err)?;
                let name = users
                    .get(uid)
                    .map_err(err)?
                    .map(|v| v.value().0.to_owned())
                    .ok_or_else(|| StoreError::new(format!("no user {uid}")))?;
                users
                    .insert(uid, (name.as_str(), hash.as_str()))
                    .map_err(err)?;
                end_sessions(txn, uid, |id| Some(*id) != keep)?;
                answer(reply, ())
            }
            Op::RaiseMax { section, to, reply } => {
                let mut sections = txn.open_table(SECTIONS).map_err(err)?;
                let stored = sections.get(section).map_err(err)?.map_or(0, |v| v.value());
                let max = stored.max(to);
                if max != stored {
                    sections.insert(section, max).map_err(err)?;
                }
                answer(reply, max)
            }
            Op::Append { append, reply } => {
                let (charge, quota) = (append.charge(), append.quota);
                let key = (append.from_uid, append.client_msg_id);
                let earlier = match pending.keys.get(&key) {
                    Some(pairs) => Some(pairs.clone()),
                    None => match self.window.find(key.0, &key.1) {
                        Some(log_id) => self.logged_pairs(txn, log_id, key.0, &key.1)?,
                        None => None,
                    },
                };
                if let Some(pairs) = earlier {
                    return Ok(answer(reply, Appended::Duplicate(pairs)));
                }
                // Charged in this transaction: appends are applied one after another, so
                // two that each fit the quota cannot pass it together.
                let mut stored = txn.open_table(STORED_BYTES).map_err(err)?;
                let used = stored.get(key.0).map_err(err)?.map_or(0, |v| v.value());
                if quota.is_some_and(|q| used.saturating_add(charge) > q) {
                    let needed = charge;
                    return Ok(answer(reply, Appended::OverQuota { used, needed }));
                }
                stored
                    .insert(key.0, used.saturating_add(charge))
                    .map_err(err)?;
                let log_id = self.next_log_id;
                self.next_log_id += 1;
                let (to_uids, seqs) = append.to.iter().copied().unzip();
                let mut msg = append.msg;
                msg.seq = append.to.first().map_or(0, |&(_, seq)| seq);
                let record = LogRecord {
                    to_uids,
                    seqs,
                    msg,
                    logged_at_ms: crate::now_ms(),
                    ..LogRecord::default()
                };
                let mut log = txn.open_table(LOG).map_err(err)?;
                log.insert(log_id, record.encode_to_vec().as_slice())
                    .map_err(err)?;
                pending.keys.insert(key, append.to);
                pending.logged.push(logged(log_id, Instant::now(), record));
                answer(reply, Appended::Stored)
            }
            Op::CreateGroup {
                owner,
                name,
                max_owned,
                reply,
            } => {
                let mut owned = txn.open_table(OWNED).map_err(err)?;
                if count_owned(&owned, owner)? >= max_owned {
                    return Ok(answer(reply, None));
                }
                let group = Group {
                    group_id: next_id(txn, "next_group_id")?,
                    name: name.into(),
                    owner_uid: owner,
                    members: vec![owner],
                    ..Group::default()
                };
                let mut groups = txn.open_table(GROUPS).map_err(err)?;
                groups
                    .insert(group.group_id, group.encode_to_vec().as_slice())
                    .map_err(err)?;
                owned.insert((owner, group.group_id), ()).map_err(err)?;
                answer(reply, Some(group))
            }
            Op::UpdateGroup {
                group_id,
                edit,
                reply,
            } => {
                // Applied here, one after another: two edits that each fit a cap cannot
                // pass it together.
                let mut groups = txn.open_table(GROUPS).map_err(err)?;
                let Some(mut group) = decode_group(groups.get(group_id).map_err(err)?)? else {
                    return Ok(answer(reply, GroupChange::NoGroup));
                };
                let owner = group.owner_uid;
                if let Err(refusal) = edit(&mut group) {
                    return Ok(answer(reply, GroupChange::Refused(refusal)));
                }
                groups
                    .insert(group_id, group.encode_to_vec().as_slice())
                    .map_err(err)?;
                if group.owner_uid != owner {
                    let mut owned = txn.open_table(OWNED).map_err(err)?;
                    owned.remove((owner, group_id)).map_err(err)?;
                    if group.owner_uid != 0 {
                        owned.insert((group.owner_uid, group_id), ()).map_err(err)?;
                    }
                }
                answer(reply, GroupChange::Done(group))
            }
            Op::Relate {
                a,
                b,
                relate,
                reply,
            } => {
                let mut edges = txn.open_table(EDGES).map_err(err)?;
                let now = (read_edge(&edges, a, b)?, read_edge(&edges, b, a)?);
                let (ab, ba) = match relate(now) {
                    Ok(pair) => pair,
                    Err(refusal) => return Ok(answer(reply, Err(refusal))),
                };
                for (from, to, edge) in [(a, b, &ab), (b, a, &ba)] {
                    match edge {
                        Some(e) => {
                            edges
                                .insert((from, to), (e.link as u8, e.at_ms, e.note.as_str()))
                                .map_err(err)?;
                        }
                        None => {
                            edges.remove((from, to)).map_err(err)?;
                        }
                    }
                }
                answer(reply, Ok((ab, ba)))
            }
        })
    }
}

/// The first `limit` messages of the table's and the recent tier's (each in order), and
/// whether there are more. A message moved between the two reads is in both: once here.
fn merge_tiers(mut table: Vec<Msg>, recent: Vec<Msg>, limit: usize) -> (Vec<Msg>, bool) {
    let table_last = table.last().map_or(0, |m| m.seq);
    table.extend(recent.into_iter().filter(|m| m.seq > table_last));
    let more = table.len() > limit;
    table.truncate(limit);
    (table, more)
}

fn decode_group(stored: Option<redb::AccessGuard<'_, &[u8]>>) -> Result<Option<Group>, StoreError> {
    stored
        .map(|v| Group::decode(v.value()).map_err(|e| StoreError::wrap("group record", e)))
        .transpose()
}

impl AccountStore for Redb {
    fn create_user(&self, name: &str, password_hash: &str) -> StoreFuture<'_, Option<u64>> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.write(|reply| Op::CreateUser { name, hash, reply })
    }

    fn user_by_name(&self, name: &str) -> StoreFuture<'_, Option<User>> {
        let name = name.to_owned();
        self.read(move |txn| {
            let names = txn.open_table(NAMES).map_err(err)?;
            let Some(uid) = names.get(name.as_str()).map_err(err)?.map(|v| v.value()) else {
                return Ok(None);
            };
            read_user(txn, uid)
        })
    }

    fn user_by_id(&self, uid: u64) -> StoreFuture<'_, Option<User>> {
        self.read(move |txn| read_user(txn, uid))
    }

    fn put_session(&self, id: [u8; 32], session: SessionRecord) -> StoreFuture<'_, ()> {
        self.write(|reply| Op::PutSession { id, session, reply })
    }

    fn session(&self, id: [u8; 32]) -> StoreFuture<'_, Option<SessionRecord>> {
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS).map_err(err)?;
            Ok(sessions.get(id.as_slice()).map_err(err)?.map(|v| {
                let (uid, created_at_ms, expires_at_ms) = v.value();
                SessionRecord {
                    uid,
                    created_at_ms,
                    expires_at_ms,
                }
            }))
        })
    }

    fn sessions_of(&self, uid: u64) -> StoreFuture<'_, Vec<([u8; 32], SessionRecord)>> {
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS).map_err(err)?;
            let by_user = txn.open_table(USER_SESSIONS).map_err(err)?;
            sessions_in(&sessions, &by_user, uid)
        })
    }

    fn revoke(&self, uid: u64, which: Revoke) -> StoreFuture<'_, u64> {
        self.write(|reply| Op::Revoke { uid, which, reply })
    }

    fn set_password(
        &self,
        uid: u64,
        password_hash: &str,
        keep: Option<[u8; 32]>,
    ) -> StoreFuture<'_, ()> {
        let hash = password_hash.to_owned();
        self.write(|reply| Op::SetPassword {
            uid,
            hash,
            keep,
            reply,
        })
    }
}

type SessionTable<'a> = &'a [u8];

/// The user's sessions, oldest first, from the session tables of a read or a write
/// transaction.
fn sessions_in(
    sessions: &impl ReadableTable<SessionTable<'static>, (u64, u64, u64)>,
    by_user: &impl ReadableTable<(u64, u64, SessionTable<'static>), ()>,
    uid: u64,
) -> Result<Vec<([u8; 32], SessionRecord)>, StoreError> {
    let mut out = Vec::new();
    let empty: &[u8] = &[];
    for entry in by_user
        .range((uid, 0, empty)..(uid + 1, 0, empty))
        .map_err(err)?
    {
        let (key, _) = entry.map_err(err)?;
        let Ok(id) = <[u8; 32]>::try_from(key.value().2) else {
            continue;
        };
        if let Some(v) = sessions.get(id.as_slice()).map_err(err)? {
            let (uid, created_at_ms, expires_at_ms) = v.value();
            let session = SessionRecord {
                uid,
                created_at_ms,
                expires_at_ms,
            };
            out.push((id, session));
        }
    }
    Ok(out)
}

/// Ends the sessions of `uid` whose ids `end` picks; how many.
fn end_sessions(
    txn: &WriteTransaction,
    uid: u64,
    end: impl Fn(&[u8; 32]) -> bool,
) -> Result<u64, StoreError> {
    let mut sessions = txn.open_table(SESSIONS).map_err(err)?;
    let mut by_user = txn.open_table(USER_SESSIONS).map_err(err)?;
    let ended: Vec<([u8; 32], SessionRecord)> = sessions_in(&sessions, &by_user, uid)?
        .into_iter()
        .filter(|(id, _)| end(id))
        .collect();
    for (id, s) in &ended {
        sessions.remove(id.as_slice()).map_err(err)?;
        by_user
            .remove((uid, s.created_at_ms, id.as_slice()))
            .map_err(err)?;
    }
    Ok(ended.len() as u64)
}

/// Groups `owner` owns.
fn count_owned(
    owned: &impl ReadableTable<(u64, u64), ()>,
    owner: u64,
) -> Result<usize, StoreError> {
    Ok(owned
        .range((owner, 0)..=(owner, u64::MAX))
        .map_err(err)?
        .count())
}

/// `a`'s side of its relation with `b`.
fn read_edge(
    edges: &impl ReadableTable<(u64, u64), (u8, u64, &'static str)>,
    a: u64,
    b: u64,
) -> Result<Option<Edge>, StoreError> {
    Ok(edges
        .get((a, b))
        .map_err(err)?
        .and_then(|v| edge(v.value())))
}

fn edge((link, at_ms, note): (u8, u64, &str)) -> Option<Edge> {
    Some(Edge {
        link: Link::from_u8(link)?,
        at_ms,
        note: note.to_owned(),
    })
}

impl ContactStore for Redb {
    fn edges(&self, uid: u64) -> StoreFuture<'_, Vec<(u64, Edge)>> {
        self.read(move |txn| {
            let edges = txn.open_table(EDGES).map_err(err)?;
            let mut out = Vec::new();
            for entry in edges.range((uid, 0)..=(uid, u64::MAX)).map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                if let Some(e) = edge(value.value()) {
                    out.push((key.value().1, e));
                }
            }
            Ok(out)
        })
    }

    fn pair(&self, a: u64, b: u64) -> StoreFuture<'_, Pair> {
        self.read(move |txn| {
            let edges = txn.open_table(EDGES).map_err(err)?;
            Ok((read_edge(&edges, a, b)?, read_edge(&edges, b, a)?))
        })
    }

    fn relate(
        &self,
        a: u64,
        b: u64,
        relate: Relate,
    ) -> StoreFuture<'_, Result<Pair, svrkit_runtime::Status>> {
        self.write(|reply| Op::Relate {
            a,
            b,
            relate,
            reply,
        })
    }
}

fn read_user(txn: &redb::ReadTransaction, uid: u64) -> Result<Option<User>, StoreError> {
    let users = txn.open_table(USERS).map_err(err)?;
    Ok(users.get(uid).map_err(err)?.map(|v| {
        let (name, hash) = v.value();
        User {
            uid,
            name: name.to_owned(),
            password_hash: hash.to_owned(),
        }
    }))
}

impl SeqStore for Redb {
    fn max_seq(&self, section: u32) -> StoreFuture<'_, u64> {
        self.read(move |txn| {
            let sections = txn.open_table(SECTIONS).map_err(err)?;
            Ok(sections.get(section).map_err(err)?.map_or(0, |v| v.value()))
        })
    }

    fn raise_max_seq(&self, section: u32, to: u64) -> StoreFuture<'_, u64> {
        self.write(|reply| Op::RaiseMax { section, to, reply })
    }
}

impl InboxStore for Redb {
    fn append(&self, append: Append) -> StoreFuture<'static, Appended> {
        self.write(|reply| Op::Append { append, reply })
    }

    fn stored_bytes(&self, uid: u64) -> StoreFuture<'_, u64> {
        self.read(move |txn| {
            let stored = txn.open_table(STORED_BYTES).map_err(err)?;
            Ok(stored.get(uid).map_err(err)?.map_or(0, |v| v.value()))
        })
    }

    fn fetch(&self, uid: u64, after_seq: u64, limit: usize) -> StoreFuture<'_, (Vec<Msg>, bool)> {
        // The recent tier first, then the table (see `recent` for why this order).
        let (recent, table_max) = {
            let r = self.recent();
            (r.fetch(uid, after_seq, limit + 1), r.table_max(uid))
        };
        if table_max.is_some_and(|max| max <= after_seq) {
            return Box::pin(std::future::ready(Ok(merge_tiers(
                Vec::new(),
                recent,
                limit,
            ))));
        }
        let shared = self.recent.clone();
        self.read(move |txn| {
            let inbox = txn.open_table(INBOX).map_err(err)?;
            let mut msgs = Vec::new();
            if let Some(first) = after_seq.checked_add(1) {
                // The chunk that may hold `first`, then the ones after it.
                let start = inbox
                    .range((uid, 0)..=(uid, first))
                    .map_err(err)?
                    .next_back()
                    .transpose()
                    .map_err(err)?
                    .map_or(first, |(k, _)| k.value().1);
                for entry in inbox.range((uid, start)..=(uid, u64::MAX)).map_err(err)? {
                    let (_, value) = entry.map_err(err)?;
                    let chunk = InboxChunk::decode(value.value())
                        .map_err(|e| StoreError::wrap("inbox record", e))?;
                    msgs.extend(chunk.msgs.into_iter().filter(|m| m.seq >= first));
                    if msgs.len() > limit {
                        break;
                    }
                }
            }
            if table_max.is_none() {
                let last = inbox
                    .range((uid, 0)..=(uid, u64::MAX))
                    .map_err(err)?
                    .next_back()
                    .transpose()
                    .map_err(err)?;
                let max = match last {
                    Some((_, value)) => InboxChunk::decode(value.value())
                        .map_err(|e| StoreError::wrap("inbox record", e))?
                        .msgs
                        .last()
                        .map_or(0, |m| m.seq),
                    None => 0,
                };
                lock(&shared).saw_table_max(uid, max);
            }
            Ok(merge_tiers(msgs, recent, limit))
        })
    }
}

impl GroupStore for Redb {
    fn create_group(
        &self,
        owner_uid: u64,
        name: &str,
        max_owned: usize,
    ) -> StoreFuture<'_, Option<Group>> {
        let name = name.to_owned();
        self.write(|reply| Op::CreateGroup {
            owner: owner_uid,
            name,
            max_owned,
            reply,
        })
    }

    fn groups_owned(&self, uid: u64) -> StoreFuture<'_, usize> {
        self.read(move |txn| count_owned(&txn.open_table(OWNED).map_err(err)?, uid))
    }

    fn group(&self, group_id: u64) -> StoreFuture<'_, Option<Group>> {
        self.read(move |txn| {
            let groups = txn.open_table(GROUPS).map_err(err)?;
            decode_group(groups.get(group_id).map_err(err)?)
        })
    }

    fn update_group(&self, group_id: u64, edit: GroupEdit) -> StoreFuture<'_, GroupChange> {
        self.write(|reply| Op::UpdateGroup {
            group_id,
            edit,
            reply,
        })
    }
}

#[cfg(test)]
#[test]
fn a_message_read_from_both_tiers_is_returned_once() {
    let msg = |seq| Msg {
        seq,
        ..Msg::default()
    };
    let seqs =
        |(msgs, more): (Vec<Msg>, bool)| (msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), more);
    // 3 and 4 were moved between the reads: in the table and still in the recent snapshot.
    let table = vec![msg(1), msg(2), msg(3), msg(4)];
    let recent = vec![msg(3), msg(4), msg(5), msg(6)];
    assert_eq!(
        seqs(merge_tiers(table.clone(), recent.clone(), 10)),
        (vec![1, 2, 3, 4, 5, 6], false)
    );
    assert_eq!(
        seqs(merge_tiers(table, recent, 5)),
        (vec![1, 2, 3, 4, 5], true)
    );
    assert_eq!(
        seqs(merge_tiers(Vec::new(), vec![msg(7), msg(8)], 1)),
        (vec![7], true)
    );
}
