//! The embedded engine: one redb file in the data directory, written by one committer
//! thread that commits whatever writes are waiting together.
//!
//! Reads open their own read transaction on the caller's thread (redb readers do not wait
//! for the writer). Writes are sent to the committer as operations; it takes every
//! operation queued, applies them in order in one write transaction, commits it durably
//! (`Durability::Immediate`: fsync) and only then answers each. While it flushes, the next
//! batch queues up, so under load a flush serves many writes: group commit. Operations are
//! applied in the order they were sent, which gives [`InboxStore::append`] its ordering.

use std::path::Path;
use std::sync::mpsc;
use std::thread;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use svrkit_runtime::codec::Message;
use tokio::sync::oneshot;

use super::{
    AccountStore, Append, Appended, GroupChange, GroupStore, InboxStore, SeqStore, SessionRecord,
    StoreError, StoreFuture, User,
};
use crate::im::group::Group;
use crate::im::msg::Msg;

/// Counters: `next_uid`, `next_group_id`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// name → uid.
const NAMES: TableDefinition<&str, u64> = TableDefinition::new("names");
/// uid → (name, password hash).
const USERS: TableDefinition<u64, (&str, &str)> = TableDefinition::new("users");
/// token → (uid, expires_at_ms).
const SESSIONS: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("sessions");
/// section → max_seq.
const SECTIONS: TableDefinition<u32, u64> = TableDefinition::new("seq_sections");
/// (uid, seq) → encoded `im.msg.Msg`.
const INBOX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("inbox");
/// (sender, client message id) → (recipient, seq) pairs, 16 bytes each, little-endian.
const APPENDS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("appends");
/// group id → encoded `im.group.Group`.
const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");

/// Operations a batch takes at most, so that one flush does not keep the first writer
/// waiting behind an unbounded queue.
const MAX_BATCH: usize = 4096;

/// The embedded store: every service's tables in `<data>/im.redb`.
pub struct Redb {
    db: std::sync::Arc<Database>,
    writes: mpsc::Sender<Op>,
}

impl std::fmt::Debug for Redb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redb").finish_non_exhaustive()
    }
}

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError(e.into().to_string())
}

impl Redb {
    /// Opens (or creates) the store in directory `data`, and starts its committer thread
    /// (which ends when the store is dropped).
    ///
    /// # Errors
    /// When the directory or the file cannot be created or opened, or the file is not a
    /// redb database (or is one already open in another process).
    pub fn open(data: &Path) -> Result<Redb, StoreError> {
        std::fs::create_dir_all(data)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", data.display())))?;
        let path = data.join("im.redb");
        let db = Database::builder()
            .set_cache_size(256 << 20)
            .create(&path)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(err)?;
        {
            // Readers open tables that must exist.
            txn.open_table(META).map_err(err)?;
            txn.open_table(NAMES).map_err(err)?;
            txn.open_table(USERS).map_err(err)?;
            txn.open_table(SESSIONS).map_err(err)?;
            txn.open_table(SECTIONS).map_err(err)?;
            txn.open_table(INBOX).map_err(err)?;
            txn.open_table(APPENDS).map_err(err)?;
            txn.open_table(GROUPS).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        let db = std::sync::Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let committer = db.clone();
        thread::Builder::new()
            .name("im-redb-commit".into())
            .spawn(move || commit_loop(&committer, &queue))
            .map_err(|e| StoreError(format!("cannot start the committer: {e}")))?;
        Ok(Redb { db, writes })
    }

    /// Sends a write to the committer; the future resolves once it is durable.
    fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> StoreFuture<'static, T> {
        let (tx, rx) = oneshot::channel();
        let sent = self.writes.send(op(tx));
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError("the committer has stopped".into()));
            }
            rx.await.unwrap_or_else(|_| {
                Err(StoreError(
                    "the write failed with its batch (see the log)".into(),
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
        let result = self.db.begin_read().map_err(err).and_then(|txn| f(&txn));
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
        token: [u8; 32],
        session: SessionRecord,
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
        reply: Reply<Group>,
    },
    AddMembers {
        group_id: u64,
        by: u64,
        uids: Vec<u64>,
        reply: Reply<GroupChange>,
    },
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

fn commit_loop(db: &Database, queue: &mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut answers = Vec::with_capacity(batch.len());
        let result = db.begin_write().map_err(err).and_then(|txn| {
            for op in batch.drain(..) {
                answers.push(apply(&txn, op)?);
            }
            txn.commit().map_err(err)
        });
        // A failed batch fails every write in it: nothing of it was committed. The writes
        // not yet applied when it failed were dropped, and their callers see that.
        let failed = result.err();
        if let Some(e) = &failed {
            tracing::error!("a batch of writes failed: {e}");
        }
        for answer in answers.drain(..) {
            answer(failed.as_ref());
        }
        batch.clear();
    }
}

fn next_id(txn: &WriteTransaction, counter: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(err)?;
    let next = meta.get(counter).map_err(err)?.map_or(1, |v| v.value());
    meta.insert(counter, next + 1).map_err(err)?;
    Ok(next)
}

fn apply(txn: &WriteTransaction, op: Op) -> Result<Answer, StoreError> {
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
        Op::PutSession {
            token,
            session,
            reply,
        } => {
            let mut sessions = txn.open_table(SESSIONS).map_err(err)?;
            sessions
                .insert(token.as_slice(), (session.uid, session.expires_at_ms))
                .map_err(err)?;
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
            let mut appends = txn.open_table(APPENDS).map_err(err)?;
            let key = (append.from_uid, append.client_msg_id.as_str());
            if let Some(stored) = appends.get(key).map_err(err)? {
                return Ok(answer(
                    reply,
                    Appended::Duplicate(unpack_pairs(stored.value())),
                ));
            }
            appends
                .insert(key, pack_pairs(&append.to).as_slice())
                .map_err(err)?;
            let mut inbox = txn.open_table(INBOX).map_err(err)?;
            let mut msg = append.msg;
            let mut buf = Vec::with_capacity(msg.encoded_len() + 10);
            for &(uid, seq) in &append.to {
                msg.seq = seq;
                buf.clear();
                msg.encode(&mut buf);
                inbox.insert((uid, seq), buf.as_slice()).map_err(err)?;
            }
            answer(reply, Appended::Stored)
        }
        Op::CreateGroup { owner, name, reply } => {
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
            answer(reply, group)
        }
        Op::AddMembers {
            group_id,
            by,
            uids,
            reply,
        } => {
            let mut groups = txn.open_table(GROUPS).map_err(err)?;
            let Some(mut group) = decode_group(groups.get(group_id).map_err(err)?)? else {
                return Ok(answer(reply, GroupChange::NoGroup));
            };
            if !group.members.contains(&by) {
                return Ok(answer(reply, GroupChange::NotMember));
            }
            for uid in uids {
                if !group.members.contains(&uid) {
                    group.members.push(uid);
                }
            }
            groups
                .insert(group_id, group.encode_to_vec().as_slice())
                .map_err(err)?;
            answer(reply, GroupChange::Done(group))
        }
    })
}

fn decode_group(stored: Option<redb::AccessGuard<'_, &[u8]>>) -> Result<Option<Group>, StoreError> {
    stored
        .map(|v| Group::decode(v.value()).map_err(|e| StoreError(format!("group record: {e}"))))
        .transpose()
}

fn pack_pairs(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 16);
    for &(a, b) in pairs {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
    out
}

fn unpack_pairs(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let (a, b) = c.split_at(8);
            let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
            (word(a), word(b))
        })
        .collect()
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

    fn put_session(&self, token: [u8; 32], session: SessionRecord) -> StoreFuture<'_, ()> {
        self.write(|reply| Op::PutSession {
            token,
            session,
            reply,
        })
    }

    fn session(&self, token: [u8; 32]) -> StoreFuture<'_, Option<SessionRecord>> {
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS).map_err(err)?;
            Ok(sessions.get(token.as_slice()).map_err(err)?.map(|v| {
                let (uid, expires_at_ms) = v.value();
                SessionRecord { uid, expires_at_ms }
            }))
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

    fn find_append(
        &self,
        from_uid: u64,
        client_msg_id: &str,
    ) -> StoreFuture<'_, Option<Vec<(u64, u64)>>> {
        let id = client_msg_id.to_owned();
        self.read(move |txn| {
            let appends = txn.open_table(APPENDS).map_err(err)?;
            Ok(appends
                .get((from_uid, id.as_str()))
                .map_err(err)?
                .map(|v| unpack_pairs(v.value())))
        })
    }

    fn fetch(&self, uid: u64, after_seq: u64, limit: usize) -> StoreFuture<'_, (Vec<Msg>, bool)> {
        self.read(move |txn| {
            let inbox = txn.open_table(INBOX).map_err(err)?;
            let Some(first) = after_seq.checked_add(1) else {
                return Ok((Vec::new(), false));
            };
            let mut msgs = Vec::new();
            for entry in inbox.range((uid, first)..=(uid, u64::MAX)).map_err(err)? {
                let (_, value) = entry.map_err(err)?;
                if msgs.len() == limit {
                    return Ok((msgs, true));
                }
                let msg = Msg::decode(value.value())
                    .map_err(|e| StoreError(format!("message record: {e}")))?;
                msgs.push(msg);
            }
            Ok((msgs, false))
        })
    }
}

impl GroupStore for Redb {
    fn create_group(&self, owner_uid: u64, name: &str) -> StoreFuture<'_, Group> {
        let name = name.to_owned();
        self.write(|reply| Op::CreateGroup {
            owner: owner_uid,
            name,
            reply,
        })
    }

    fn group(&self, group_id: u64) -> StoreFuture<'_, Option<Group>> {
        self.read(move |txn| {
            let groups = txn.open_table(GROUPS).map_err(err)?;
            decode_group(groups.get(group_id).map_err(err)?)
        })
    }

    fn add_members(
        &self,
        group_id: u64,
        by_uid: u64,
        uids: Vec<u64>,
    ) -> StoreFuture<'_, GroupChange> {
        self.write(|reply| Op::AddMembers {
            group_id,
            by: by_uid,
            uids,
            reply,
        })
    }
}
