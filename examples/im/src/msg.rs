//! `im.msg.MsgSvr`: inboxes.
//!
//! An append allocates each recipient's next sequence (`im.seq.SeqAllocSvr.Alloc`) and hands
//! the message to the store while holding the recipients' locks, then waits for it to be
//! durable without them. The store makes appends visible in the order they were handed to
//! it, so a reader never sees a recipient's sequence `n + 1` before `n`: a sync key (the
//! highest sequence a client has) never skips a message. Concurrent appends for different
//! recipients share a disk flush (group commit).
//!
//! An append is idempotent on (sender, client message id): a retry finds the first one's
//! record and answers its sequences.
//!
//! A fetch with nothing newer waits (long poll) for an append to the user to land, then
//! reads again: notify, then pull.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svrkit_runtime::{CallOptions, Code, Context, Status};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

use crate::im::msg::{AppendReq, AppendResp, FetchReq, FetchResp, Msg, MsgSvr};
use crate::seq::route::Sequences;
use crate::store::{Append, Appended, InboxStore};

/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_MSG_ID: usize = 64;
/// Recipients one append may have (a group's members).
pub const MAX_RECIPIENTS: usize = 1000;
/// Messages one fetch may return.
pub const MAX_FETCH: u32 = 1000;
/// A long poll answers this long before its deadline, so that its empty answer arrives.
const POLL_MARGIN: Duration = Duration::from_millis(50);

/// Lock stripes over recipients.
const STRIPES: usize = 1024;
/// Allocations one append tries when a shared store keeps answering `Stale`.
const STALE_ATTEMPTS: usize = 8;

/// `[app.msg]`: the message service's settings.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MsgConfig {
    /// Bytes each sender's stored messages may take, every recipient's copy counted
    /// (default 1 GiB; 0: no limit). A message that would pass it is refused with
    /// `RESOURCE_EXHAUSTED`. The backend keeps every message, so the count only grows: a
    /// lifetime cap until messages are deleted after a retention period (not built), which
    /// an operator raises for a user who needs more.
    pub storage_bytes_per_user: u64,
}

impl Default for MsgConfig {
    fn default() -> MsgConfig {
        MsgConfig {
            storage_bytes_per_user: 1 << 30,
        }
    }
}

/// The message service.
pub struct MsgService {
    store: Arc<dyn InboxStore>,
    /// Each sender's storage quota in bytes.
    quota: Option<u64>,
    seq: Sequences,
    /// This replica's SET among the users' homes (its index and their count), when
    /// inboxes are kept per SET: appends and fetches for users homed elsewhere are refused.
    home: Option<(usize, usize)>,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    waiters: Arc<Waiters>,
}

impl std::fmt::Debug for MsgService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgService").finish_non_exhaustive()
    }
}

/// Checks what every message carries, as the gateway and the group service also do.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the problem.
pub fn check_message(client_msg_id: &str, text: &str) -> Result<(), Status> {
    if client_msg_id.is_empty() || client_msg_id.len() > MAX_CLIENT_MSG_ID {
        return Err(Status::new(
            Code::INVALID_ARGUMENT,
            format!("a client message id is 1 to {MAX_CLIENT_MSG_ID} bytes"),
        ));
    }
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(Status::new(
            Code::INVALID_ARGUMENT,
            format!("a message is 1 to {MAX_TEXT} bytes, not {}", text.len()),
        ));
    }
    Ok(())
}

impl MsgService {
    /// A message service over `store`, allocating sequences through `seq`.
    ///
    /// On a store other processes append to as well, a task (of the current runtime) wakes
    /// the long polls waiting here for their appends.
    pub fn new(store: Arc<dyn InboxStore>, seq: Sequences, config: &MsgConfig) -> MsgService {
        let waiters = Arc::new(Waiters::default());
        if let Some(mut appended) = store.appended() {
            let waiters = Arc::downgrade(&waiters);
            tokio::spawn(async move {
                loop {
                    let uids = appended.recv().await;
                    let Some(waiters) = waiters.upgrade() else {
                        return;
                    };
                    match uids {
                        Ok(uids) if !uids.is_empty() => {
                            for &uid in uids.iter() {
                                waiters.wake(uid);
                            }
                        }
                        // Missed some: every poll reads again.
                        Ok(_) | Err(RecvError::Lagged(_)) => waiters.wake_all(),
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        }
        MsgService {
            store,
            quota: (config.storage_bytes_per_user > 0).then_some(config.storage_bytes_per_user),
            seq,
            home: None,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            waiters,
        }
    }

    fn stripe(uid: u64) -> usize {
        // Fibonacci hashing: consecutive ids land far apart.
        usize::try_from(uid.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54).unwrap_or(0) % STRIPES
    }

    /// This replica serves the users homed in SET `index` of `count` (`crate::home`), and
    /// refuses the others': their inboxes are in another SET's database.
    #[must_use]
    pub fn with_home(mut self, index: usize, count: usize) -> MsgService {
        self.home = Some((index, count));
        self
    }

    fn check_home(&self, uid: u64) -> Result<(), Status> {
        match self.home {
            Some((index, count)) if crate::home::home_of(uid, count) != index => Err(Status::new(
                Code::INVALID_ARGUMENT,
                format!("user {uid} is homed in another SET: its inbox is not stored here"),
            )),
            _ => Ok(()),
        }
    }

    /// Allocates and stores; again, with new sequences, when a shared store says another
    /// process got ahead for a recipient.
    async fn store_new(&self, request: &AppendReq) -> Result<(Vec<u64>, bool), Status> {
        for _ in 0..STALE_ATTEMPTS {
            if let Some(stored) = self.try_store(request).await? {
                return Ok(stored);
            }
        }
        Err(Status::new(
            Code::UNAVAILABLE,
            "the recipients' inboxes kept moving; try again",
        ))
    }

    /// `None` when the store refused the sequences as stale.
    async fn try_store(&self, request: &AppendReq) -> Result<Option<(Vec<u64>, bool)>, Status> {
        let mut stripes: Vec<usize> = request.to_uids.iter().map(|&u| Self::stripe(u)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        // In ascending order, so that two appends never wait on each other's locks.
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.stripes[i].lock().await);
        }
        let options = CallOptions {
            user_key: Some(request.from_uid),
            ..CallOptions::default()
        };
        let seqs = self.seq.alloc(&request.to_uids, &options).await?;
        let msg = Msg {
            from_uid: request.from_uid,
            from_name: request.from_name.clone(),
            group_id: request.group_id,
            client_msg_id: request.client_msg_id.clone(),
            text: request.text.clone(),
            sent_at_ms: crate::now_ms(),
            ..Msg::default()
        };
        let to: Vec<(u64, u64)> = request
            .to_uids
            .iter()
            .copied()
            .zip(seqs.iter().copied())
            .collect();
        // Handed to the store under the locks: visible in sequence order.
        let append = Append {
            from_uid: request.from_uid,
            client_msg_id: request.client_msg_id.to_string(),
            msg,
            to,
            quota: self.quota,
        };
        let stored = self.store.append(append);
        drop(guards);
        match stored.await? {
            Appended::Stored => {
                for &uid in &request.to_uids {
                    self.waiters.wake(uid);
                }
                Ok(Some((seqs, false)))
            }
            Appended::Stale => Ok(None),
            Appended::OverQuota { used, needed } => Err(Status::new(
                Code::RESOURCE_EXHAUSTED,
                format!(
                    "storage quota: your messages take {used} of {} bytes, and this one \
                     needs {needed} more (messages are kept: this does not clear by itself)",
                    self.quota.unwrap_or(0)
                ),
            )),
            // A concurrent retry of the same message won: ours took sequences that stay
            // unused (sequences increase, they need not be dense).
            Appended::Duplicate(pairs) => {
                if !request
                    .to_uids
                    .iter()
                    .any(|u| pairs.iter().any(|(p, _)| p == u))
                {
                    // Not a retry: the sender used the id for a message to someone else.
                    // (A group's retry after members changed still shares recipients.)
                    return Err(Status::new(
                        Code::INVALID_ARGUMENT,
                        format!(
                            "client message id {} was used for a message to someone else",
                            request.client_msg_id
                        ),
                    ));
                }
                Ok(Some((in_order(&request.to_uids, &pairs), true)))
            }
        }
    }
}

/// The sequences of `pairs` in the order of `uids`.
fn in_order(uids: &[u64], pairs: &[(u64, u64)]) -> Vec<u64> {
    uids.iter()
        .map(|uid| pairs.iter().find(|(u, _)| u == uid).map_or(0, |&(_, s)| s))
        .collect()
}

impl MsgSvr for MsgService {
    async fn append(&self, _ctx: Context, request: AppendReq) -> Result<AppendResp, Status> {
        check_message(&request.client_msg_id, &request.text)?;
        if request.from_uid == 0 {
            return Err(Status::new(Code::INVALID_ARGUMENT, "no sender"));
        }
        let n = request.to_uids.len();
        if n == 0 || n > MAX_RECIPIENTS {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                format!("a message has 1 to {MAX_RECIPIENTS} recipients"),
            ));
        }
        let mut sorted = request.to_uids.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) || sorted[0] == 0 {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                "a recipient twice, or id 0",
            ));
        }
        for &uid in &request.to_uids {
            self.check_home(uid)?;
        }
        let (seqs, duplicate) = self.store_new(&request).await?;
        if !duplicate {
            crate::figures::appended(request.group_id != 0, n);
        }
        Ok(AppendResp {
            seqs,
            duplicate,
            ..AppendResp::default()
        })
    }

    async fn fetch(&self, ctx: Context, request: FetchReq) -> Result<FetchResp, Status> {
        if request.uid == 0 {
            return Err(Status::new(Code::INVALID_ARGUMENT, "user id 0"));
        }
        self.check_home(request.uid)?;
        let limit = usize::try_from(request.limit.clamp(1, MAX_FETCH)).unwrap_or(1);
        let now = Instant::now();
        let mut until = now + Duration::from_millis(request.wait_ms.into());
        if let Some(deadline) = ctx.deadline() {
            until = until.min(deadline.checked_sub(POLL_MARGIN).unwrap_or(now));
        }
        loop {
            // Registered before the read, so an append landing between the read and the
            // wait still wakes it.
            let waiter = (until > Instant::now()).then(|| self.waiters.register(request.uid));
            let notified = waiter.as_ref().map(|w| {
                let mut n = Box::pin(w.notify.notified());
                n.as_mut().enable();
                n
            });
            let (msgs, has_more) = self
                .store
                .fetch(request.uid, request.after_seq, limit)
                .await?;
            let Some(notified) = notified else {
                return Ok(FetchResp {
                    msgs,
                    has_more,
                    ..FetchResp::default()
                });
            };
            if !msgs.is_empty() {
                return Ok(FetchResp {
                    msgs,
                    has_more,
                    ..FetchResp::default()
                });
            }
            tokio::select! {
                () = notified => {
                    if waiter.as_ref().is_some_and(Waiter::is_ended) {
                        return Ok(FetchResp::default());
                    }
                }
                () = tokio::time::sleep_until(until.into()) => {
                    return Ok(FetchResp::default());
                }
                () = ctx.cancelled() => return Err(Status::new(Code::CANCELLED, "cancelled")),
            }
        }
    }
}

/// Long polls one user may have waiting at once. One more ends the oldest (it answers
/// with nothing new, as if its wait had run out): a client that polls again is always
/// heard, and one user's polls cannot pile up on the server.
pub const MAX_POLLS_PER_USER: usize = 8;

/// Long polls waiting per user.
#[derive(Debug, Default)]
struct Waiters {
    shards: [Mutex<HashMap<u64, Polls>>; 16],
}

/// One user's waiting polls.
#[derive(Debug, Default)]
struct Polls {
    notify: Arc<Notify>,
    /// Tickets of the polls waiting, oldest first.
    tickets: std::collections::VecDeque<u64>,
    next: u64,
    /// Polls with a ticket below this are told to end.
    ended_below: Arc<std::sync::atomic::AtomicU64>,
}

/// A registered long poll; unregisters when dropped.
struct Waiter<'a> {
    waiters: &'a Waiters,
    uid: u64,
    ticket: u64,
    notify: Arc<Notify>,
    ended_below: Arc<std::sync::atomic::AtomicU64>,
}

impl Waiter<'_> {
    /// Whether a newer poll of the user ended this one.
    fn is_ended(&self) -> bool {
        self.ticket < self.ended_below.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Waiters {
    fn shard(&self, uid: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Polls>> {
        let i = usize::try_from(uid % 16).unwrap_or(0);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, uid: u64) -> Waiter<'_> {
        let mut shard = self.shard(uid);
        let polls = shard.entry(uid).or_default();
        let ticket = polls.next;
        polls.next += 1;
        polls.tickets.push_back(ticket);
        if polls.tickets.len() > MAX_POLLS_PER_USER
            && let Some(oldest) = polls.tickets.pop_front()
        {
            polls
                .ended_below
                .store(oldest + 1, std::sync::atomic::Ordering::Release);
            polls.notify.notify_waiters();
        }
        crate::figures::POLLS_PARKED.add(1);
        Waiter {
            waiters: self,
            uid,
            ticket,
            notify: polls.notify.clone(),
            ended_below: polls.ended_below.clone(),
        }
    }

    fn wake(&self, uid: u64) {
        if let Some(polls) = self.shard(uid).get(&uid) {
            polls.notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for polls in shard.values() {
                polls.notify.notify_waiters();
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        crate::figures::POLLS_PARKED.add(-1);
        let mut shard = self.waiters.shard(self.uid);
        if let Some(polls) = shard.get_mut(&self.uid) {
            polls.tickets.retain(|&t| t != self.ticket);
            if polls.tickets.is_empty() {
                shard.remove(&self.uid);
            }
        }
    }
}
