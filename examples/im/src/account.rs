//! `im.account.AccountSvr`: users, argon2 password hashes and session tokens.
//!
//! - **Names do not leak faster than the throttles allow.** A wrong password and an unknown
//!   name get the same answer, after the same work: a login for an unknown name verifies
//!   against a hash made at start. A registration hashes its password before it looks at
//!   the name, so "taken" comes as late as "created"; registrations are capped per address
//!   and hour.
//! - **Guessing is throttled** per name and per address ([`crate::throttle`]): past a few
//!   failures a key is locked for a time that doubles with each further one, and the answer
//!   (`RESOURCE_EXHAUSTED`) says when to try again. The address is the caller's own when it
//!   is a stranger, or the one a trusted gateway names in the request.
//! - **Sessions.** A token is 32 random bytes; the store keeps only their SHA-256 (the
//!   session's id), so a copy of the data files logs nobody in. Sessions expire, can be
//!   listed and ended one by one or all at once, and a password change ends all but the
//!   one asking. A user keeps at most [`MAX_SESSIONS`](crate::store::MAX_SESSIONS).
//!
//! - **Contacts.** A relation is stored from both sides (`Link`: contact, request sent,
//!   request received, blocked) and changed atomically as a pair, so two users who ask each
//!   other at once become contacts once. A block is never told: the blocked user's requests
//!   still answer `SENT`, and go nowhere. A user holds at most [`MAX_WAITING`] requests
//!   received; more are refused to the askers.
//!
//! Hashing runs on blocking threads, at most one per core at a time: each takes argon2's
//! memory (19 MiB by default), and a burst of logins must not take it all.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use svrkit_runtime::{Code, Context, Status};
use tokio::sync::Semaphore;

use crate::im::account::{
    AccountSvr, ChangePasswordReq, CheckTokenReq, Contact, ContactList, ContactReq, FindReq,
    Link as WireLink, ListReq, LoginReq, LogoutReq, LogoutResp, RegisterReq, RegisterResp, Session,
    SessionList,
};
use crate::im::common::UserRef;
use crate::store::{Edge, Link, Pair, Revoke, SessionRecord, Store};
use crate::throttle::{Budget, FailurePolicy, Failures, Locked, address_key};

/// `[app.account]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    /// How long a session token is good for (default one day).
    pub session_ttl_ms: u64,
    /// Argon2 memory cost in KiB (default 19456, OWASP's recommendation).
    pub argon2_memory_kib: u32,
    /// Argon2 iterations (default 2).
    pub argon2_iterations: u32,
    /// Failed logins of a name before it is locked (default 5) ...
    pub login_free_failures: u32,
    /// ... and of an address (default 50: many users may share one).
    pub login_free_failures_per_address: u32,
    /// The first lock (default 1 s); each further failure doubles it ...
    pub login_lock_ms: u64,
    /// ... up to this (default 15 minutes).
    pub login_lock_max_ms: u64,
    /// Failures are forgotten this long after the last one (default an hour).
    pub login_failures_forgotten_ms: u64,
    /// Registrations an address may make in an hour (default 20).
    pub registrations_per_address_per_hour: u32,
}

impl Default for AccountConfig {
    fn default() -> AccountConfig {
        AccountConfig {
            session_ttl_ms: 24 * 3600 * 1000,
            argon2_memory_kib: Params::DEFAULT_M_COST,
            argon2_iterations: Params::DEFAULT_T_COST,
            login_free_failures: 5,
            login_free_failures_per_address: 50,
            login_lock_ms: 1_000,
            login_lock_max_ms: 15 * 60 * 1000,
            login_failures_forgotten_ms: 3600 * 1000,
            registrations_per_address_per_hour: 20,
        }
    }
}

/// The account service.
pub struct Account {
    store: Arc<dyn Store>,
    ttl: Duration,
    argon: Argon2<'static>,
    /// What a login for an unknown name is verified against.
    decoy: String,
    hashing: Arc<Semaphore>,
    /// Failed logins by name, and by address.
    by_name: Failures,
    by_address: Failures,
    /// Registrations by address.
    registrations: Budget,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Contact requests a user may have waiting for an answer.
pub const MAX_WAITING: usize = 500;
/// Longest request note, in bytes.
pub const MAX_NOTE: usize = 4096;

/// Longest name, in bytes.
pub const MAX_NAME: usize = 32;
/// Password length bounds, in bytes.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=128;

impl Account {
    /// An account service over `store`.
    ///
    /// # Errors
    /// When the argon2 settings are out of range.
    pub fn new(store: Arc<dyn Store>, config: &AccountConfig) -> Result<Account, String> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
            .map_err(|e| format!("app.account.argon2_*: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy = argon
            .hash_password(b"not anyone's password")
            .map_err(|e| format!("argon2: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let policy = |free: u32| FailurePolicy {
            free: free.max(1),
            base_ms: config.login_lock_ms,
            max_ms: config.login_lock_max_ms.max(config.login_lock_ms),
            forget_ms: config.login_failures_forgotten_ms,
        };
        Ok(Account {
            store,
            ttl: Duration::from_millis(config.session_ttl_ms),
            argon,
            decoy,
            hashing: Arc::new(Semaphore::new(cores)),
            by_name: Failures::new(policy(config.login_free_failures)),
            by_address: Failures::new(policy(config.login_free_failures_per_address)),
            registrations: Budget::new(config.registrations_per_address_per_hour),
        })
    }

    /// Charges a password attempt to `name` and `address`, or refuses it while either is
    /// locked.
    ///
    /// The address first: a locked address touches no name's count (it can neither grow
    /// the names' table nor keep a victim's name locked for free).
    fn charge(&self, name: &str, address: Option<&str>) -> Result<(), Status> {
        let now = crate::now_ms();
        if let Some(address) = address {
            self.by_address
                .charge(address, now)
                .map_err(|l| throttled(l, "failed logins from this address"))?;
        }
        if let Err(l) = self.by_name.charge(name, now) {
            if let Some(address) = address {
                self.by_address.refund(address, false);
            }
            return Err(throttled(l, "failed logins for this name"));
        }
        Ok(())
    }

    /// Settles a charged attempt: a right password is refunded (and clears the name's
    /// failures), a wrong one stays counted, and the first lock it brings is logged.
    fn settle(&self, name: &str, address: Option<&str>, right: bool) {
        if right {
            self.by_name.refund(name, true);
            if let Some(address) = address {
                self.by_address.refund(address, false);
            }
            return;
        }
        let now = crate::now_ms();
        for (what, failures, key) in [
            ("name", &self.by_name, Some(name)),
            ("address", &self.by_address, address),
        ] {
            if let Some(key) = key
                && failures.just_locked(key, now)
            {
                tracing::warn!(%key, "login throttled: too many failed logins for this {what}");
            }
        }
    }

    /// A new session for `uid`: its token (hex) and record.
    async fn new_session(&self, uid: u64) -> Result<(String, [u8; 32], SessionRecord), Status> {
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).map_err(internal)?;
        let id = session_id(&token);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let now = crate::now_ms();
        let record = SessionRecord {
            uid,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
        };
        self.store.put_session(id, record).await?;
        Ok((hex(&token), id, record))
    }

    /// Runs `f` (argon2 work) on a blocking thread, one per core at a time.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| internal("closed"))?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || f(&argon))
            .await
            .map_err(internal)
    }

    /// The live session of `token`, its id and its user's name.
    async fn session_of(&self, token: &str) -> Result<(SessionRecord, [u8; 32], String), Status> {
        let bytes = parse_token(token)
            .ok_or_else(|| Status::new(Code::UNAUTHENTICATED, "not a session token"))?;
        let id = session_id(&bytes);
        let session = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| Status::new(Code::UNAUTHENTICATED, "unknown session token"))?;
        if session.expires_at_ms <= crate::now_ms() {
            return Err(Status::new(Code::UNAUTHENTICATED, "session token expired"));
        }
        let user = self
            .store
            .user_by_id(session.uid)
            .await?
            .ok_or_else(|| internal("a session of no user"))?;
        Ok((session, id, user.name))
    }
}

/// A session's id: the SHA-256 of its token's bytes.
pub fn session_id(token: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The address a request counts under: a stranger's own, or the one a trusted caller (the
/// gateway) names; none for a trusted caller that names none (it speaks for many users).
fn client_key(ctx: &Context, claimed: &str) -> Option<String> {
    if ctx.trusted {
        claimed.parse::<IpAddr>().ok().map(address_key)
    } else {
        ctx.peer.map(|peer| address_key(peer.ip()))
    }
}

fn throttled(locked: Locked, what: &str) -> Status {
    let seconds = locked.retry_after_ms.div_ceil(1000);
    Status::new(
        Code::RESOURCE_EXHAUSTED,
        format!("too many {what}: try again in {seconds} s"),
    )
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::new(Code::INTERNAL, e.to_string())
}

/// Checks a user name: 1 to [`MAX_NAME`] bytes of letters, digits, `_`, `-` and `.`.
pub fn check_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Status::new(
            Code::INVALID_ARGUMENT,
            format!("a name is 1 to {MAX_NAME} letters, digits, `_`, `-` or `.`"),
        ))
    }
}

/// The 32 bytes a token's (or a session id's) 64 hex digits spell.
pub fn parse_token(token: &str) -> Option<[u8; 32]> {
    let hex = token.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `edge` as `uid`'s side of the relation with `other`, named.
fn contact(other: u64, name: &str, edge: Option<&Edge>) -> Contact {
    let link = match edge.map(|e| e.link) {
        None => WireLink::NONE,
        Some(Link::Contact) => WireLink::CONTACT,
        Some(Link::Sent) => WireLink::SENT,
        Some(Link::Received) => WireLink::RECEIVED,
        Some(Link::Blocked) => WireLink::BLOCKED,
    };
    Contact {
        uid: other,
        name: name.to_owned().into(),
        link,
        at_ms: edge.map_or(0, |e| e.at_ms),
        note: edge.map_or(String::new(), |e| e.note.clone()).into(),
        ..Contact::default()
    }
}

fn linked(link: Link, note: &str) -> Option<Edge> {
    Some(Edge {
        link,
        at_ms: crate::now_ms(),
        note: note.to_owned(),
    })
}

/// Whether `e` is a link of this kind.
fn is(e: &Option<Edge>, link: Link) -> bool {
    e.as_ref().is_some_and(|e| e.link == link)
}

impl Account {
    /// Checks the two users of a contact request exist and differ; the other's name.
    async fn other(&self, request: &ContactReq) -> Result<String, Status> {
        if request.uid == 0 || request.other_uid == 0 || request.uid == request.other_uid {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                "two different users, neither 0",
            ));
        }
        self.store
            .user_by_id(request.other_uid)
            .await?
            .map(|u| u.name)
            .ok_or_else(|| Status::new(Code::NOT_FOUND, "no such user"))
    }

    /// Changes the relation, answering the asker's side of it.
    async fn relate(
        &self,
        request: &ContactReq,
        change: impl FnOnce(Pair) -> Result<Pair, Status> + Send + 'static,
    ) -> Result<Contact, Status> {
        let name = self.other(request).await?;
        let (mine, _) = self
            .store
            .relate(request.uid, request.other_uid, Box::new(change))
            .await??;
        Ok(contact(request.other_uid, &name, mine.as_ref()))
    }
}

fn check_password(password: &str) -> Result<(), Status> {
    if PASSWORD_BYTES.contains(&password.len()) {
        Ok(())
    } else {
        Err(Status::new(
            Code::INVALID_ARGUMENT,
            "a password is 8 to 128 bytes",
        ))
    }
}

fn session_message(id: &[u8; 32], record: &SessionRecord, name: &str) -> Session {
    Session {
        uid: record.uid,
        name: name.to_owned().into(),
        expires_at_ms: record.expires_at_ms,
        id: hex(id).into(),
        created_at_ms: record.created_at_ms,
        ..Session::default()
    }
}

impl AccountSvr for Account {
    async fn register(&self, ctx: Context, request: RegisterReq) -> Result<RegisterResp, Status> {
        check_name(&request.name)?;
        check_password(&request.password)?;
        if let Some(address) = client_key(&ctx, &request.client) {
            self.registrations
                .take(&address, crate::now_ms())
                .map_err(|l| throttled(l, "registrations from this address"))?;
        }
        // The hash comes first, whether the name is free or not: a taken name is told only
        // after the same work as a new one.
        let password = request.password.clone();
        let hash = self
            .hashing(move |argon| {
                argon
                    .hash_password(password.as_bytes())
                    .map(|h| h.to_string())
            })
            .await?
            .map_err(internal)?;
        match self.store.create_user(&request.name, &hash).await? {
            Some(uid) => Ok(RegisterResp {
                uid,
                ..RegisterResp::default()
            }),
            None => Err(Status::new(Code::INVALID_ARGUMENT, "that name is taken")),
        }
    }

    async fn login(&self, ctx: Context, request: LoginReq) -> Result<Session, Status> {
        // A name no one can have is the same wrong login, without a hash or a throttle
        // entry (whose key it would be, at any length).
        if check_name(&request.name).is_err() {
            return Err(Status::new(Code::UNAUTHENTICATED, "wrong name or password"));
        }
        let address = client_key(&ctx, &request.client);
        self.charge(&request.name, address.as_deref())?;
        let user = self.store.user_by_name(&request.name).await;
        let user = match user {
            Ok(user) => user,
            Err(e) => {
                // Not the caller's failure.
                self.settle(&request.name, address.as_deref(), true);
                return Err(e.into());
            }
        };
        let (uid, name, hash) = match user {
            Some(u) => (u.uid, u.name, u.password_hash),
            None => (0, String::new(), self.decoy.clone()),
        };
        let password = request.password.clone();
        let verified = self
            .hashing(move |argon| {
                argon
                    .verify_password(password.as_bytes(), hash.as_str())
                    .is_ok()
            })
            .await?;
        let right = verified && uid != 0;
        self.settle(&request.name, address.as_deref(), right);
        if !right {
            return Err(Status::new(Code::UNAUTHENTICATED, "wrong name or password"));
        }
        let (token, id, record) = self.new_session(uid).await?;
        Ok(Session {
            token: token.into(),
            ..session_message(&id, &record, &name)
        })
    }

    async fn check_token(&self, _ctx: Context, request: CheckTokenReq) -> Result<Session, Status> {
        let (session, id, name) = self.session_of(&request.token).await?;
        Ok(session_message(&id, &session, &name))
    }

    async fn logout(&self, _ctx: Context, request: LogoutReq) -> Result<LogoutResp, Status> {
        let (session, own, _) = self.session_of(&request.token).await?;
        let which = if request.everywhere {
            Revoke::AllBut(None)
        } else if request.id.is_empty() {
            Revoke::One(own)
        } else {
            let id = parse_token(&request.id).ok_or_else(|| {
                Status::new(Code::INVALID_ARGUMENT, "a session id is 64 hex digits")
            })?;
            Revoke::One(id)
        };
        // The store ends only sessions of this token's user: another user's id ends nothing.
        let ended = self.store.revoke(session.uid, which).await?;
        Ok(LogoutResp {
            ended: u32::try_from(ended).unwrap_or(u32::MAX),
            ..LogoutResp::default()
        })
    }

    async fn sessions(&self, _ctx: Context, request: CheckTokenReq) -> Result<SessionList, Status> {
        let (session, own, name) = self.session_of(&request.token).await?;
        let now = crate::now_ms();
        let sessions = self
            .store
            .sessions_of(session.uid)
            .await?
            .into_iter()
            .filter(|(_, s)| s.expires_at_ms > now)
            .map(|(id, s)| Session {
                current: id == own,
                ..session_message(&id, &s, &name)
            })
            .collect();
        Ok(SessionList {
            sessions,
            ..SessionList::default()
        })
    }

    async fn change_password(
        &self,
        ctx: Context,
        request: ChangePasswordReq,
    ) -> Result<Session, Status> {
        let (session, own, name) = self.session_of(&request.token).await?;
        check_password(&request.new_password)?;
        let address = client_key(&ctx, &request.client);
        // A stolen token must not become a way around the login throttle.
        self.charge(&name, address.as_deref())?;
        let user = self
            .store
            .user_by_id(session.uid)
            .await?
            .ok_or_else(|| internal("a session of no user"))?;
        let (old, new) = (request.old_password.clone(), request.new_password.clone());
        let hash = user.password_hash;
        let changed = self
            .hashing(move |argon| {
                if argon
                    .verify_password(old.as_bytes(), hash.as_str())
                    .is_err()
                {
                    return Ok(None);
                }
                argon
                    .hash_password(new.as_bytes())
                    .map(|h| Some(h.to_string()))
            })
            .await?
            .map_err(internal)?;
        self.settle(&name, address.as_deref(), changed.is_some());
        let Some(hash) = changed else {
            return Err(Status::new(Code::UNAUTHENTICATED, "wrong password"));
        };
        self.store
            .set_password(session.uid, &hash, Some(own))
            .await?;
        Ok(session_message(&own, &session, &name))
    }

    async fn request(&self, _ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        if request.note.len() > MAX_NOTE {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                format!("a note is at most {MAX_NOTE} bytes"),
            ));
        }
        let waiting = self
            .store
            .edges(request.other_uid)
            .await?
            .iter()
            .filter(|(_, e)| e.link == Link::Received)
            .count();
        let full = waiting >= MAX_WAITING;
        let note = request.note.to_string();
        self.relate(&request, move |(mine, theirs)| {
            if is(&mine, Link::Contact) {
                return Ok((mine, theirs));
            }
            if is(&mine, Link::Blocked) {
                return Err(Status::new(
                    Code::PERMISSION_DENIED,
                    "you blocked this user: unblock them first",
                ));
            }
            if is(&mine, Link::Received) {
                // They asked first: both asked, so they are contacts.
                return Ok((linked(Link::Contact, ""), linked(Link::Contact, "")));
            }
            if is(&theirs, Link::Blocked) {
                // Not told: it looks sent, and goes nowhere.
                return Ok((linked(Link::Sent, &note), theirs));
            }
            if full && !is(&theirs, Link::Received) {
                return Err(Status::new(
                    Code::RESOURCE_EXHAUSTED,
                    "this user has too many requests waiting",
                ));
            }
            Ok((linked(Link::Sent, &note), linked(Link::Received, &note)))
        })
        .await
    }

    async fn answer(&self, _ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        let accept = request.yes;
        self.relate(&request, move |(mine, theirs)| {
            if !is(&mine, Link::Received) {
                return Err(Status::new(Code::NOT_FOUND, "no request from this user"));
            }
            if !accept {
                return Ok((None, None));
            }
            if is(&theirs, Link::Sent) {
                Ok((linked(Link::Contact, ""), linked(Link::Contact, "")))
            } else {
                // Their side changed meanwhile (they withdrew): nothing to accept.
                Ok((None, theirs))
            }
        })
        .await
    }

    async fn remove(&self, _ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        self.relate(&request, |(mine, theirs)| {
            if is(&mine, Link::Blocked) {
                return Ok((mine, theirs));
            }
            // Their block stays theirs; anything else between the two ends.
            let theirs = theirs.filter(|e| e.link == Link::Blocked);
            Ok((None, theirs))
        })
        .await
    }

    async fn block(&self, _ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        let block = request.yes;
        self.relate(&request, move |(mine, theirs)| {
            if !block {
                let mine = mine.filter(|e| e.link != Link::Blocked);
                return Ok((mine, theirs));
            }
            // A contact ends; a request they sent stays on their side (they are not told).
            let theirs = theirs.filter(|e| e.link != Link::Contact);
            Ok((linked(Link::Blocked, ""), theirs))
        })
        .await
    }

    async fn relation(&self, _ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        let name = self.other(&request).await?;
        let (mine, _) = self.store.pair(request.uid, request.other_uid).await?;
        Ok(contact(request.other_uid, &name, mine.as_ref()))
    }

    async fn contacts(&self, _ctx: Context, request: ListReq) -> Result<ContactList, Status> {
        let mut contacts = Vec::new();
        for (other, edge) in self.store.edges(request.uid).await? {
            let name = self
                .store
                .user_by_id(other)
                .await?
                .map_or(String::new(), |u| u.name);
            contacts.push(contact(other, &name, Some(&edge)));
        }
        Ok(ContactList {
            contacts,
            ..ContactList::default()
        })
    }

    async fn find(&self, _ctx: Context, request: FindReq) -> Result<UserRef, Status> {
        let user = if request.uid != 0 {
            self.store.user_by_id(request.uid).await?
        } else {
            self.store.user_by_name(&request.name).await?
        };
        let user = user.ok_or_else(|| Status::new(Code::NOT_FOUND, "no such user"))?;
        Ok(UserRef {
            uin: user.uid,
            nickname: user.name.into(),
            ..UserRef::default()
        })
    }
}
