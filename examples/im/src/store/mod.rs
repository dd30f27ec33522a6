//! What the services keep on disk, behind one trait per service, with two engines: the
//! embedded [`Redb`] (the default: one file, one process) and [`Postgres`] (a database any
//! number of processes share), chosen by `[app.store] kind`.
//!
//! Every write is durable when its future resolves: a service answers only after that. Both
//! engines commit concurrent appends together (group commit), so durability costs one disk
//! flush per batch rather than per message.
//!
//! Ordering contract of [`InboxStore::append`]: appends become visible in the order
//! `append` was *called* (not awaited). The message service relies on it: it allocates a
//! recipient's sequence and calls `append` under the recipient's lock, then waits for the
//! commit outside it, so a reader never sees sequence `n + 1` in an inbox before `n`. A
//! store shared by processes cannot order calls made in different processes; it refuses an
//! append that would land below a sequence already visible ([`Appended::Stale`]) instead.

mod postgres;
mod recent;
mod redb;
mod reopen;

pub use self::postgres::{MIGRATIONS, Postgres, PostgresConfig};
pub use self::redb::Redb;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::im::group::Group;
use crate::im::msg::Msg;

/// The readiness check ([`svrkit_runtime::monitor::health`]) the store reports its writes
/// into: `/readyz` answers 503 while writes fail.
pub const WRITES_CHECK: &str = "store.writes";

/// What a store's operations return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Which engine keeps the data (`[app.store] kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// [`Redb`]: a file in the data directory.
    #[default]
    Redb,
    /// [`Postgres`]: the database `url` names.
    Postgres,
}

/// `[app.store]`: the engine, and its settings.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The engine.
    pub kind: StoreKind,
    /// PostgreSQL: the connection string (`host=/run/postgresql user=im dbname=im`).
    pub url: String,
    /// PostgreSQL: pooled connections (besides the append committer's).
    pub connections: usize,
    /// redb: recent appends move from the log into the inbox table once there are this
    /// many ...
    pub move_at: usize,
    /// ... or the oldest is this old (milliseconds) ...
    pub move_after_ms: u64,
    /// ... at most this many in one commit, so that a move does not hold up the writes
    /// committed with it for long.
    pub move_chunk: usize,
    /// redb: bytes of its page cache.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Redb,
            url: String::new(),
            connections: 8,
            move_at: 8192,
            move_after_ms: 500,
            move_chunk: 1024,
            cache_bytes: 64 << 20,
        }
    }
}

/// Every service's storage, from one engine.
pub trait Store: AccountStore + ContactStore + SeqStore + InboxStore + GroupStore {}

impl<T: AccountStore + ContactStore + SeqStore + InboxStore + GroupStore> Store for T {}

/// Opens the engine `config` names: redb in directory `data`, or PostgreSQL at `url`
/// (migrating its schema).
///
/// # Errors
/// When the store cannot be opened or reached, naming the engine.
pub async fn open(data: &Path, config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.kind {
        StoreKind::Redb => Arc::new(Redb::open(data, config)?),
        StoreKind::Postgres => {
            if config.url.is_empty() {
                return Err(StoreError::new(
                    "app.store.url: missing: kind = \"postgres\" needs a connection string",
                ));
            }
            Arc::new(
                Postgres::open(&PostgresConfig {
                    url: config.url.clone(),
                    connections: config.connections,
                    readiness: WRITES_CHECK.into(),
                })
                .await?,
            )
        }
    })
}

/// A storage failure (I/O, corruption, an engine gone away): the request fails, nothing is
/// half-written.
///
/// Its message says what failed; [`source`](std::error::Error::source) gives the engine's
/// error (redb's, PostgreSQL's, the file system's) where there is one. Cheap to clone: one
/// failure of a group commit fails every request in the group.
#[derive(Clone, Debug)]
pub struct StoreError {
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A failure with no error beneath it (a store stopping, a record missing).
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            source: None,
        }
    }

    /// `context` failed with `source`.
    pub fn wrap(
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError {
            message: format!("{context}: {source}"),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// The engine's own error, as its message says it.
    pub fn engine(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError {
            message: source.to_string(),
            source: Some(std::sync::Arc::new(source)),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl From<StoreError> for svrkit_runtime::Status {
    fn from(e: StoreError) -> svrkit_runtime::Status {
        svrkit_runtime::Status::new(svrkit_runtime::Code::INTERNAL, e.to_string())
    }
}

/// A registered user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Handed out in order from 1, never reused.
    pub uid: u64,
    /// Unique.
    pub name: String,
    /// The argon2 PHC string.
    pub password_hash: String,
}

/// A session: its user, when it began and until when it is good. Stored under the SHA-256
/// of its token (the session's *id*), never under the token itself: a copy of the store is
/// not a copy of anyone's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The user logged in.
    pub uid: u64,
    /// Unix milliseconds of the login.
    pub created_at_ms: u64,
    /// Unix milliseconds after which the token is refused.
    pub expires_at_ms: u64,
}

/// Sessions a user keeps at most: a login past it ends the oldest, so that logging in in a
/// loop does not grow the store.
pub const MAX_SESSIONS: usize = 32;

/// Which of a user's sessions [`AccountStore::revoke`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoke {
    /// The one with this id.
    One([u8; 32]),
    /// Every one but this id's (`None`: every one).
    AllBut(Option<[u8; 32]>),
}

/// Accounts and sessions (`im.account`).
pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user with the next id; `None` when the name is taken.
    fn create_user(&self, name: &str, password_hash: &str) -> StoreFuture<'_, Option<u64>>;
    /// The user with this name.
    fn user_by_name(&self, name: &str) -> StoreFuture<'_, Option<User>>;
    /// The user with this id.
    fn user_by_id(&self, uid: u64) -> StoreFuture<'_, Option<User>>;
    /// Records a session under its id (the SHA-256 of its token), and ends the user's
    /// expired sessions and, past [`MAX_SESSIONS`], the oldest.
    fn put_session(&self, id: [u8; 32], session: SessionRecord) -> StoreFuture<'_, ()>;
    /// The session with this id.
    fn session(&self, id: [u8; 32]) -> StoreFuture<'_, Option<SessionRecord>>;
    /// The user's sessions (expired ones included), oldest first.
    fn sessions_of(&self, uid: u64) -> StoreFuture<'_, Vec<([u8; 32], SessionRecord)>>;
    /// Ends sessions of `uid`; how many there were.
    fn revoke(&self, uid: u64, which: Revoke) -> StoreFuture<'_, u64>;
    /// Sets the user's password hash and, in the same transaction, ends every session of
    /// theirs but `keep`: whoever knew the old password is logged out.
    fn set_password(
        &self,
        uid: u64,
        password_hash: &str,
        keep: Option<[u8; 32]>,
    ) -> StoreFuture<'_, ()>;
}

/// Each section's `max_seq` (`im.seq`'s store).
pub trait SeqStore: Send + Sync + 'static {
    /// The section's persisted bound (0 when never raised).
    fn max_seq(&self, section: u32) -> StoreFuture<'_, u64>;
    /// Sets the bound to the larger of the stored one and `to`, durably; the result.
    fn raise_max_seq(&self, section: u32, to: u64) -> StoreFuture<'_, u64>;
}

/// One message for several inboxes, under each recipient's sequence.
#[derive(Clone, Debug)]
pub struct Append {
    /// The sender.
    pub from_uid: u64,
    /// The sender's id for the message: (sender, id) is stored once.
    pub client_msg_id: String,
    /// The message (its `seq` is overwritten by each recipient's).
    pub msg: Msg,
    /// (recipient, sequence) pairs.
    pub to: Vec<(u64, u64)>,
    /// The sender's storage quota in bytes ([`Append::charge`] summed over what the sender
    /// has stored); `None`: no limit. Checked and charged in the append's transaction, so
    /// concurrent appends cannot pass it together.
    pub quota: Option<u64>,
}

/// Bytes a stored copy costs beyond its encoded message: the inbox key (user, sequence)
/// and the engines' per-row overhead, roughly.
const COPY_OVERHEAD: u64 = 32;

impl Append {
    /// The bytes this append charges its sender: each recipient's copy, its encoded message
    /// and [`COPY_OVERHEAD`]. The sender pays for every copy, not the recipients: no one can
    /// use up someone else's quota.
    pub fn charge(&self) -> u64 {
        use svrkit_runtime::codec::Message as _;
        let copy = self.msg.encoded_len() as u64 + COPY_OVERHEAD;
        copy.saturating_mul(self.to.len() as u64)
    }
}

/// What an append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored under the sequences asked for.
    Stored,
    /// An append with the same sender and id was stored before, to these
    /// (recipient, sequence) pairs; nothing was stored now.
    Duplicate(Vec<(u64, u64)>),
    /// A recipient already has a higher sequence stored (another process appended to it
    /// after this append's sequences were allocated); nothing was stored. Allocate again.
    /// Only a store shared by several processes answers this.
    Stale,
    /// Storing it would take the sender past [`Append::quota`]; nothing was stored.
    OverQuota {
        /// Bytes the sender has stored.
        used: u64,
        /// Bytes this append would have added ([`Append::charge`]).
        needed: u64,
    },
}

/// Inboxes (`im.msg`).
pub trait InboxStore: Send + Sync + 'static {
    /// Stores a message in each recipient's inbox, unless (sender, id) was stored before
    /// within the idempotency window (the embedded store: the last million appends or ten
    /// minutes, whichever is shorter). Appends are visible in the order of the calls (see
    /// the module docs).
    fn append(&self, append: Append) -> StoreFuture<'static, Appended>;
    /// The recipients of appends committed by any process sharing the store, as they
    /// commit (an empty list: some may have been missed, wake everyone); `None` for a store
    /// only this process appends to.
    fn appended(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<[u64]>>> {
        None
    }
    /// Up to `limit` messages of `uid`'s inbox after `after_seq`, in order, and whether
    /// there are more.
    fn fetch(&self, uid: u64, after_seq: u64, limit: usize) -> StoreFuture<'_, (Vec<Msg>, bool)>;
    /// Bytes `uid` has stored as a sender ([`Append::charge`] summed since the store began
    /// counting: messages stored by versions before it are not counted).
    fn stored_bytes(&self, uid: u64) -> StoreFuture<'_, u64>;
}

/// What [`GroupStore::update_group`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupChange {
    /// Done: the group as it is now.
    Done(Group),
    /// No such group.
    NoGroup,
    /// The edit refused; nothing changed.
    Refused(svrkit_runtime::Status),
}

/// A change to one group, applied to its stored value atomically: it sees the group as it
/// is, and returns the refusal when the change may not be made.
pub type GroupEdit = Box<dyn FnOnce(&mut Group) -> Result<(), svrkit_runtime::Status> + Send>;

/// Groups (`im.group`).
pub trait GroupStore: Send + Sync + 'static {
    /// Creates a group with the next id, its owner as first member; `None` when the owner
    /// already owns `max_owned` groups.
    fn create_group(
        &self,
        owner_uid: u64,
        name: &str,
        max_owned: usize,
    ) -> StoreFuture<'_, Option<Group>>;
    /// Groups `uid` owns.
    fn groups_owned(&self, uid: u64) -> StoreFuture<'_, usize>;
    /// The group with this id.
    fn group(&self, group_id: u64) -> StoreFuture<'_, Option<Group>>;
    /// Applies `edit` to the group, atomically with every other change to it (two adds
    /// that each fit a cap cannot pass it together); an owner it changes is counted as the
    /// new owner's.
    fn update_group(&self, group_id: u64, edit: GroupEdit) -> StoreFuture<'_, GroupChange>;
}

/// How one user stands to another, from the first one's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Contacts (both sides say so).
    Contact = 1,
    /// This side asked the other to be a contact.
    Sent = 2,
    /// The other side asked this one.
    Received = 3,
    /// This side blocked the other.
    Blocked = 4,
}

impl Link {
    /// The link stored as `n`.
    pub fn from_u8(n: u8) -> Option<Link> {
        Some(match n {
            1 => Link::Contact,
            2 => Link::Sent,
            3 => Link::Received,
            4 => Link::Blocked,
            _ => return None,
        })
    }
}

/// One side of a relation between two users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// What it is.
    pub link: Link,
    /// Unix milliseconds it was set.
    pub at_ms: u64,
    /// A request's note (its first message).
    pub note: String,
}

/// Both sides of the relation between two users: `(a to b, b to a)`.
pub type Pair = (Option<Edge>, Option<Edge>);

/// A change to a relation, applied atomically: it sees both sides as they are, and returns
/// them as they should be, or the refusal.
pub type Relate = Box<dyn FnOnce(Pair) -> Result<Pair, svrkit_runtime::Status> + Send>;

/// Contacts, requests and blocks (`im.account`'s contact methods). Every relation is stored
/// from both sides, so that one user's side lists everything about them.
pub trait ContactStore: Send + Sync + 'static {
    /// `uid`'s side of every relation it has, by the other user's id.
    fn edges(&self, uid: u64) -> StoreFuture<'_, Vec<(u64, Edge)>>;
    /// Both sides of the relation between `a` and `b`.
    fn pair(&self, a: u64, b: u64) -> StoreFuture<'_, Pair>;
    /// Changes the relation between `a` and `b` as `relate` says, atomically; both sides as
    /// they are now.
    fn relate(
        &self,
        a: u64,
        b: u64,
        relate: Relate,
    ) -> StoreFuture<'_, Result<Pair, svrkit_runtime::Status>>;
}

#[cfg(test)]
mod tests;
