//! `im.gateway.GatewaySvr`: what chat clients call.
//!
//! Every method but `Register` and `Login` starts by checking the session token with the
//! account service; the answer (user and expiry) is cached for `session_cache_ms`, so a busy
//! client costs one check every few seconds, not one per message, and a session ended
//! through another gateway is refused here within that time (at once through this one). A request acts only as the token's
//! user: `Sync` reads the token user's inbox and nobody else's, `Send` sends as them.
//! Calls onwards carry the user's id as the user key, so overload control and key-based
//! balancing see the end user.
//!
//! The spam check is a weak dependency: a check that fails or is slow (over
//! `spam_timeout_ms`) is skipped and counted, and the message goes through. It runs before
//! the recipient is looked up, so that a message refused as spam does not tell whether the
//! recipient exists.
//!
//! **Quotas.** A user's messages are charged to `sends_per_minute` and their inbox copies
//! (messages times recipients) to `deliveries_per_minute`; past either a send is refused
//! `RESOURCE_EXHAUSTED`, saying which and when to try again. Everything else that names a
//! user (a contact request, answer, removal or block, a group add per name, a removal or
//! transfer) counts as one message too, before the name is looked up: asking whether names
//! exist costs what sending does. A group message is charged for every member before it is
//! sent. Users the gateway meets through a trusted peer that names no client (a tool inside
//! the network, a load test) are not charged.
//!
//! The client's address, which the account service throttles logins and registrations by,
//! is the caller's own when it is a stranger; a trusted caller (a proxy in front) names it
//! in the `client-addr` metadata, or names none and speaks for many users.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use svrkit_runtime::{CallOptions, Code, Context, FastStr, Status};

use crate::home::Inboxes;
use crate::im::account::{
    AccountSvrClient, ChangePasswordReq as AccountChangePassword, CheckTokenReq, Contact,
    ContactList, ContactReq as AccountContact, FindReq, Link, ListReq, LoginReq, LogoutReq,
    LogoutResp, RegisterReq, SessionList,
};
use crate::im::gateway::{
    ChangePasswordReq, ContactReq, Credentials, GatewaySvr, GroupAddReq, GroupCreateReq,
    GroupMemberReq, GroupResp, GroupSendReq, GroupSendResp, LoginResp, SendReq, SendResp, SyncReq,
    SyncResp,
};
use crate::im::group::{
    AddReq, CreateReq, GetReq, Group, GroupSvrClient, MemberReq, SendReq as GroupSend,
};
use crate::im::msg::{AppendReq, FetchReq};
use crate::im::spam::{CheckReq, SpamSvrClient, Verdict};
use crate::throttle::Budget;

/// `[app.gateway]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// How long a spam check may take before it is skipped.
    pub spam_timeout_ms: u64,
    /// How long a checked session token is taken without asking again (default 5 s): the
    /// longest a session ended through another gateway still works here.
    pub session_cache_ms: u64,
    /// Messages a user may send a minute (default 60).
    pub sends_per_minute: u32,
    /// Inbox copies a user's messages may make a minute: one message to a group of 1,000 is
    /// 1,000 (default 2,000).
    pub deliveries_per_minute: u32,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            spam_timeout_ms: 50,
            session_cache_ms: 5_000,
            sends_per_minute: 60,
            deliveries_per_minute: 2_000,
        }
    }
}

/// The metadata key in which a trusted proxy names the client's address.
pub const CLIENT_ADDR: &str = "client-addr";

/// Entries a cache holds before it starts over.
const CACHE_ENTRIES: usize = 100_000;

/// The services the gateway calls.
#[derive(Debug)]
pub struct Downstream {
    /// `im.account.AccountSvr`.
    pub account: AccountSvrClient,
    /// `im.msg.MsgSvr`, in each user's home SET.
    pub msg: Inboxes,
    /// `im.spam.SpamSvr` (weak).
    pub spam: SpamSvrClient,
    /// `im.group.GroupSvr`.
    pub group: GroupSvrClient,
}

/// The gateway.
#[derive(Debug)]
pub struct Gateway {
    down: Downstream,
    spam_timeout: Duration,
    session_cache_ms: u64,
    /// token → the session, until the cache's time for it is up.
    sessions: Mutex<HashMap<FastStr, Cached>>,
    /// name → uid and uid → name of users seen (ids and names never change).
    names: Mutex<HashMap<FastStr, u64>>,
    users: Mutex<HashMap<u64, FastStr>>,
    /// The highest user id known to exist: ids are handed out in order and never deleted,
    /// so every id up to it exists.
    max_uid: AtomicU64,
    /// Per user: messages, and their inbox copies.
    sends: Budget,
    deliveries: Budget,
}

/// A checked token.
#[derive(Clone, Debug)]
struct Cached {
    uid: u64,
    name: FastStr,
    expires_at_ms: u64,
    /// When to ask the account service again.
    until_ms: u64,
}

/// The user a request acts as.
struct User {
    uid: u64,
    name: FastStr,
}

impl User {
    fn options(&self) -> CallOptions {
        CallOptions {
            user_key: Some(self.uid),
            ..CallOptions::default()
        }
    }
}

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, V>>, key: &K) -> Option<V> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

impl Gateway {
    /// A gateway calling `down`.
    pub fn new(down: Downstream, config: &GatewayConfig) -> Gateway {
        Gateway {
            down,
            spam_timeout: Duration::from_millis(config.spam_timeout_ms),
            session_cache_ms: config.session_cache_ms,
            sessions: Mutex::default(),
            names: Mutex::default(),
            users: Mutex::default(),
            max_uid: AtomicU64::new(0),
            sends: Budget::per(config.sends_per_minute, 60_000),
            deliveries: Budget::per(config.deliveries_per_minute, 60_000),
        }
    }

    async fn auth(&self, token: &FastStr) -> Result<User, Status> {
        if token.is_empty() {
            return Err(Status::new(
                Code::UNAUTHENTICATED,
                "no session token: log in first",
            ));
        }
        let now = crate::now_ms();
        if let Some(session) = cached(&self.sessions, token)
            && now < session.until_ms
        {
            if session.expires_at_ms > now {
                return Ok(User {
                    uid: session.uid,
                    name: session.name,
                });
            }
            return Err(Status::new(Code::UNAUTHENTICATED, "session token expired"));
        }
        let session = self
            .down
            .account
            .check_token(&CheckTokenReq {
                token: token.clone(),
                ..CheckTokenReq::default()
            })
            .await?;
        self.learn(session.uid, &session.name);
        let cached = Cached {
            uid: session.uid,
            name: session.name.clone(),
            expires_at_ms: session.expires_at_ms,
            until_ms: now.saturating_add(self.session_cache_ms),
        };
        insert_bounded(&self.sessions, token.clone(), cached);
        Ok(User {
            uid: session.uid,
            name: session.name,
        })
    }

    /// Forgets checked tokens: `token`'s, or with `uid` every one of that user's.
    fn forget_sessions(&self, token: &FastStr, uid: Option<u64>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(token);
        if let Some(uid) = uid {
            sessions.retain(|_, s| s.uid != uid);
        }
    }

    /// Charges a message to `user`'s quotas, `deliveries` copies of it up front.
    ///
    /// `actions` counts against `sends_per_minute`: messages, and everything else that names
    /// a user (a contact request, an answer, a group add per name), so that asking whether
    /// names exist costs what sending does.
    fn charge(&self, user: &User, actions: u64, deliveries: u64) -> Result<(), Status> {
        let (key, now) = (user.uid.to_string(), crate::now_ms());
        self.sends.take_n(&key, actions, now).map_err(|l| {
            quota(
                "messages and contact or group actions a minute",
                l.retry_after_ms,
            )
        })?;
        self.deliveries.take_n(&key, deliveries, now).map_err(|l| {
            quota(
                "deliveries a minute (messages times recipients)",
                l.retry_after_ms,
            )
        })
    }

    fn learn(&self, uid: u64, name: &FastStr) {
        self.max_uid.fetch_max(uid, Ordering::Relaxed);
        insert_bounded(&self.names, name.clone(), uid);
        insert_bounded(&self.users, uid, name.clone());
    }

    /// The id of the user named `name`, or the user `uid` (if not 0), checked to exist.
    async fn resolve(&self, name: &FastStr, uid: u64, user: &User) -> Result<u64, Status> {
        if uid != 0 {
            if uid <= self.max_uid.load(Ordering::Relaxed) {
                return Ok(uid);
            }
            let request = FindReq {
                uid,
                ..FindReq::default()
            };
            return match self.down.account.find_with(&request, &user.options()).await {
                Ok(found) => {
                    self.learn(found.uin, &found.nickname);
                    Ok(found.uin)
                }
                Err(e) if e.code() == Code::NOT_FOUND => {
                    Err(Status::new(Code::NOT_FOUND, format!("no user {uid}")))
                }
                Err(e) => Err(e),
            };
        }
        if name.is_empty() {
            return Err(Status::new(Code::INVALID_ARGUMENT, "no recipient"));
        }
        if let Some(uid) = cached(&self.names, name) {
            return Ok(uid);
        }
        let request = FindReq {
            name: name.clone(),
            ..FindReq::default()
        };
        match self.down.account.find_with(&request, &user.options()).await {
            Ok(found) => {
                self.learn(found.uin, &found.nickname);
                Ok(found.uin)
            }
            Err(e) if e.code() == Code::NOT_FOUND => Err(Status::new(
                Code::NOT_FOUND,
                format!("no user named {name}"),
            )),
            Err(e) => Err(e),
        }
    }

    async fn name_of(&self, uid: u64, user: &User) -> Result<FastStr, Status> {
        if let Some(name) = cached(&self.users, &uid) {
            return Ok(name);
        }
        let request = FindReq {
            uid,
            ..FindReq::default()
        };
        let found = self
            .down
            .account
            .find_with(&request, &user.options())
            .await?;
        self.learn(found.uin, &found.nickname);
        Ok(found.nickname)
    }

    /// Whether the spam check passed (`Ok(false)`: skipped), or the refusal.
    async fn spam_check(&self, user: &User, text: &FastStr) -> Result<bool, Status> {
        let request = CheckReq {
            from_uid: user.uid,
            text: text.clone(),
            ..CheckReq::default()
        };
        match self.down.spam.check_weak(&request, self.spam_timeout).await {
            None => Ok(false),
            Some(verdict) if verdict.verdict == Verdict::REJECT => Err(Status::new(
                Code::PERMISSION_DENIED,
                format!("rejected as spam: {}", verdict.reason),
            )),
            Some(_) => Ok(true),
        }
    }

    async fn group_resp(&self, group: Group, user: &User) -> Result<GroupResp, Status> {
        let mut members = Vec::with_capacity(group.members.len());
        for &uid in &group.members {
            members.push(self.name_of(uid, user).await?);
        }
        let owner = match group.owner_uid {
            0 => FastStr::empty(),
            uid => self.name_of(uid, user).await?,
        };
        Ok(GroupResp {
            group_id: group.group_id,
            name: group.name,
            members,
            owner,
            ..GroupResp::default()
        })
    }

    /// The token's user, and the group service's request for the member the request names
    /// (charged as an action before the name is looked up).
    async fn member_req(
        &self,
        ctx: &Context,
        request: &GroupMemberReq,
    ) -> Result<(User, MemberReq), Status> {
        let user = self.auth(&request.token).await?;
        if metered(ctx) {
            self.charge(&user, 1, 0)?;
        }
        let uid = self.resolve(&request.name, 0, &user).await?;
        let member = MemberReq {
            group_id: request.group_id,
            by_uid: user.uid,
            uid,
            ..MemberReq::default()
        };
        Ok((user, member))
    }

    /// The token's user and the user the request names, charged as an action with
    /// `deliveries` copies before the name is looked up.
    async fn contact_pair(
        &self,
        ctx: &Context,
        request: &ContactReq,
        deliveries: u64,
    ) -> Result<(User, u64), Status> {
        let user = self.auth(&request.token).await?;
        if metered(ctx) {
            self.charge(&user, 1, deliveries)?;
        }
        let other = self.resolve(&request.name, 0, &user).await?;
        Ok((user, other))
    }

    fn account_contact(&self, user: &User, other: u64, note: FastStr, yes: bool) -> AccountContact {
        AccountContact {
            uid: user.uid,
            other_uid: other,
            note,
            yes,
            ..AccountContact::default()
        }
    }

    /// Whether `other` is a contact of `user`.
    async fn is_contact(&self, user: &User, other: u64) -> Result<bool, Status> {
        if other == user.uid {
            return Ok(true);
        }
        let ask = self.account_contact(user, other, FastStr::empty(), false);
        let link = self
            .down
            .account
            .relation_with(&ask, &user.options())
            .await?;
        Ok(link.link == Link::CONTACT)
    }
}

impl GatewaySvr for Gateway {
    async fn register(&self, ctx: Context, request: Credentials) -> Result<LoginResp, Status> {
        let request = RegisterReq {
            name: request.name,
            password: request.password,
            client: client_addr(&ctx),
            ..RegisterReq::default()
        };
        let uid = self.down.account.register(&request).await?.uid;
        self.learn(uid, &request.name);
        Ok(LoginResp {
            uid,
            ..LoginResp::default()
        })
    }

    async fn login(&self, ctx: Context, request: Credentials) -> Result<LoginResp, Status> {
        // Keyed by the name, so that a name's attempts meet the same account replica (and
        // its throttle) when balancing is by key.
        let options = CallOptions {
            user_key: Some(name_key(&request.name)),
            ..CallOptions::default()
        };
        let request = LoginReq {
            name: request.name,
            password: request.password,
            client: client_addr(&ctx),
            ..LoginReq::default()
        };
        let session = self.down.account.login_with(&request, &options).await?;
        self.learn(session.uid, &session.name);
        Ok(LoginResp {
            uid: session.uid,
            token: session.token,
            expires_at_ms: session.expires_at_ms,
            ..LoginResp::default()
        })
    }

    async fn send(&self, ctx: Context, request: SendReq) -> Result<SendResp, Status> {
        let user = self.auth(&request.token).await?;
        crate::msg::check_message(&request.client_msg_id, &request.text)?;
        if metered(&ctx) {
            self.charge(&user, 1, 1)?;
        }
        let spam_checked = self.spam_check(&user, &request.text).await?;
        let to = self.resolve(&request.to, request.to_uid, &user).await?;
        if metered(&ctx) && !self.is_contact(&user, to).await? {
            // Not a contact yet: the message is a request (its note) they may accept.
            let ask = self.account_contact(&user, to, request.text.clone(), false);
            self.down
                .account
                .request_with(&ask, &user.options())
                .await?;
            return Ok(SendResp {
                spam_checked,
                request: true,
                ..SendResp::default()
            });
        }
        let append = AppendReq {
            from_uid: user.uid,
            from_name: user.name.clone(),
            to_uids: vec![to],
            client_msg_id: request.client_msg_id,
            text: request.text,
            ..AppendReq::default()
        };
        let seqs = self
            .down
            .msg
            .append_with(&append, &user.options())
            .await?
            .seqs;
        Ok(SendResp {
            seq: seqs.first().copied().unwrap_or(0),
            spam_checked,
            ..SendResp::default()
        })
    }

    async fn sync(&self, _ctx: Context, request: SyncReq) -> Result<SyncResp, Status> {
        let user = self.auth(&request.token).await?;
        let fetch = FetchReq {
            uid: user.uid,
            after_seq: request.sync_key,
            // Saturating: the message service clamps both (to its page size and to the
            // call's deadline), and a number past 32 bits must not wrap into a small one.
            limit: u32::try_from(request.limit).unwrap_or(u32::MAX),
            wait_ms: u32::try_from(request.wait_ms).unwrap_or(u32::MAX),
            ..FetchReq::default()
        };
        let fetched = self.down.msg.fetch_with(&fetch, &user.options()).await?;
        let sync_key = fetched.msgs.last().map_or(request.sync_key, |m| m.seq);
        Ok(SyncResp {
            msgs: fetched.msgs,
            sync_key,
            has_more: fetched.has_more,
            ..SyncResp::default()
        })
    }

    async fn group_create(
        &self,
        _ctx: Context,
        request: GroupCreateReq,
    ) -> Result<GroupResp, Status> {
        let user = self.auth(&request.token).await?;
        let create = CreateReq {
            owner_uid: user.uid,
            name: request.name,
            ..CreateReq::default()
        };
        let group = self
            .down
            .group
            .create_with(&create, &user.options())
            .await?;
        self.group_resp(group, &user).await
    }

    async fn group_add(&self, ctx: Context, request: GroupAddReq) -> Result<GroupResp, Status> {
        let user = self.auth(&request.token).await?;
        if request.names.is_empty() {
            return Err(Status::new(Code::INVALID_ARGUMENT, "no one to add"));
        }
        let metered = metered(&ctx);
        if metered {
            self.charge(&user, request.names.len() as u64, 0)?;
        }
        let mut uids = Vec::with_capacity(request.names.len());
        for name in &request.names {
            let uid = self.resolve(name, 0, &user).await?;
            if metered && !self.is_contact(&user, uid).await? {
                return Err(Status::new(
                    Code::PERMISSION_DENIED,
                    format!("{name} is not your contact: ask them to be one first"),
                ));
            }
            uids.push(uid);
        }
        let add = AddReq {
            group_id: request.group_id,
            by_uid: user.uid,
            uids,
            ..AddReq::default()
        };
        let group = self.down.group.add_with(&add, &user.options()).await?;
        self.group_resp(group, &user).await
    }

    async fn group_send(
        &self,
        ctx: Context,
        request: GroupSendReq,
    ) -> Result<GroupSendResp, Status> {
        let user = self.auth(&request.token).await?;
        crate::msg::check_message(&request.client_msg_id, &request.text)?;
        if metered(&ctx) {
            // Charged for every member before the send, so that sends in flight together
            // cannot pass the quota together.
            let get = GetReq {
                group_id: request.group_id,
                ..GetReq::default()
            };
            let members = self
                .down
                .group
                .get_with(&get, &user.options())
                .await?
                .members;
            self.charge(&user, 1, members.len() as u64)?;
        }
        let spam_checked = self.spam_check(&user, &request.text).await?;
        let send = GroupSend {
            from_uid: user.uid,
            from_name: user.name.clone(),
            group_id: request.group_id,
            client_msg_id: request.client_msg_id,
            text: request.text,
            ..GroupSend::default()
        };
        let sent = self.down.group.send_with(&send, &user.options()).await?;
        Ok(GroupSendResp {
            recipients: sent.recipients,
            seq: sent.seq,
            spam_checked,
            ..GroupSendResp::default()
        })
    }

    async fn contact_request(&self, ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        // A request's note is a message to a stranger: charged and checked as one.
        let (user, other) = self.contact_pair(&ctx, &request, 1).await?;
        if !request.note.is_empty() {
            self.spam_check(&user, &request.note).await?;
        }
        let ask = self.account_contact(&user, other, request.note.clone(), false);
        self.down.account.request_with(&ask, &user.options()).await
    }

    async fn contact_answer(&self, ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        let (user, other) = self.contact_pair(&ctx, &request, 0).await?;
        let answer = self.account_contact(&user, other, FastStr::empty(), request.yes);
        self.down
            .account
            .answer_with(&answer, &user.options())
            .await
    }

    async fn contact_remove(&self, ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        let (user, other) = self.contact_pair(&ctx, &request, 0).await?;
        let remove = self.account_contact(&user, other, FastStr::empty(), false);
        self.down
            .account
            .remove_with(&remove, &user.options())
            .await
    }

    async fn contact_block(&self, ctx: Context, request: ContactReq) -> Result<Contact, Status> {
        let (user, other) = self.contact_pair(&ctx, &request, 0).await?;
        let block = self.account_contact(&user, other, FastStr::empty(), request.yes);
        self.down.account.block_with(&block, &user.options()).await
    }

    async fn contacts(&self, _ctx: Context, request: CheckTokenReq) -> Result<ContactList, Status> {
        let user = self.auth(&request.token).await?;
        let list = ListReq {
            uid: user.uid,
            ..ListReq::default()
        };
        self.down
            .account
            .contacts_with(&list, &user.options())
            .await
    }

    async fn group_leave(
        &self,
        _ctx: Context,
        request: GroupMemberReq,
    ) -> Result<GroupResp, Status> {
        let user = self.auth(&request.token).await?;
        let leave = MemberReq {
            group_id: request.group_id,
            by_uid: user.uid,
            ..MemberReq::default()
        };
        let group = self.down.group.leave_with(&leave, &user.options()).await?;
        self.group_resp(group, &user).await
    }

    async fn group_remove(
        &self,
        ctx: Context,
        request: GroupMemberReq,
    ) -> Result<GroupResp, Status> {
        let (user, remove) = self.member_req(&ctx, &request).await?;
        let group = self
            .down
            .group
            .remove_with(&remove, &user.options())
            .await?;
        self.group_resp(group, &user).await
    }

    async fn group_transfer(
        &self,
        ctx: Context,
        request: GroupMemberReq,
    ) -> Result<GroupResp, Status> {
        let (user, transfer) = self.member_req(&ctx, &request).await?;
        let group = self
            .down
            .group
            .transfer_with(&transfer, &user.options())
            .await?;
        self.group_resp(group, &user).await
    }

    async fn logout(&self, _ctx: Context, request: LogoutReq) -> Result<LogoutResp, Status> {
        let user = self.auth(&request.token).await?;
        let ended = self
            .down
            .account
            .logout_with(&request, &user.options())
            .await?;
        let all = request.everywhere || !request.id.is_empty();
        self.forget_sessions(&request.token, all.then_some(user.uid));
        Ok(ended)
    }

    async fn sessions(&self, _ctx: Context, request: CheckTokenReq) -> Result<SessionList, Status> {
        let user = self.auth(&request.token).await?;
        self.down
            .account
            .sessions_with(&request, &user.options())
            .await
    }

    async fn change_password(
        &self,
        ctx: Context,
        request: ChangePasswordReq,
    ) -> Result<LoginResp, Status> {
        let user = self.auth(&request.token).await?;
        let change = AccountChangePassword {
            token: request.token.clone(),
            old_password: request.old_password,
            new_password: request.new_password,
            client: client_addr(&ctx),
            ..AccountChangePassword::default()
        };
        let session = self
            .down
            .account
            .change_password_with(&change, &user.options())
            .await?;
        // The other sessions are gone: so are their cached checks here.
        self.forget_sessions(&request.token, Some(user.uid));
        Ok(LoginResp {
            uid: session.uid,
            token: request.token,
            expires_at_ms: session.expires_at_ms,
            ..LoginResp::default()
        })
    }
}

/// Whether the caller's user is held to the quotas: a stranger, or one a trusted front
/// names (see the module docs).
fn metered(ctx: &Context) -> bool {
    !ctx.trusted || ctx.metadata.contains_key(CLIENT_ADDR)
}

fn quota(what: &str, retry_after_ms: u64) -> Status {
    Status::new(
        Code::RESOURCE_EXHAUSTED,
        format!(
            "{what} used up: try again in {} s",
            retry_after_ms.div_ceil(1000)
        ),
    )
}

/// The client's address as the account service should count it (see the module docs).
fn client_addr(ctx: &Context) -> FastStr {
    if ctx.trusted {
        return ctx.metadata.get(CLIENT_ADDR).cloned().unwrap_or_default();
    }
    ctx.peer
        .map(|peer| FastStr::from(peer.ip().to_string()))
        .unwrap_or_default()
}

/// A name's user key for the calls made before there is a user: FNV-1a of its bytes.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
