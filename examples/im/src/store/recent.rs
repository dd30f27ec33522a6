//! The embedded store's recent appends: committed to the log, not yet moved into the
//! inbox table.
//!
//! Why: an inbox table keyed by (user, sequence) keeps each user's messages together, so
//! an append dirties the page at the end of its recipient's range. A commit of a hundred
//! appends to different users copies, checksums and writes a hundred pages, and the single
//! committer spends its time on that rather than on the disk flush. So an append is made
//! durable in the **log** (keyed by a counter: every append lands on the same last page) and
//! served from here; the committer moves the oldest entries into the inbox table in chunks,
//! where a user's messages of many batches share one page write. After a crash the log's
//! entries above the `log_moved` mark are read back into this tier.
//!
//! Readers look here first and then at the table; entries leave this tier only after the
//! commit that put them in the table, so a reader sees every message in one of the two
//! (or both: duplicates are merged by sequence).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::im::msg::Msg;

/// One logged append.
#[derive(Debug)]
pub(super) struct Logged {
    pub(super) log_id: u64,
    pub(super) at: Instant,
    pub(super) from_uid: u64,
    pub(super) client_msg_id: String,
    /// (recipient, sequence) pairs.
    pub(super) to: Vec<(u64, u64)>,
    /// With the first recipient's sequence.
    pub(super) msg: Msg,
    /// Unix milliseconds.
    pub(super) logged_at_ms: u64,
}

/// The tier (behind the store's mutex).
#[derive(Debug, Default)]
pub(super) struct Recent {
    /// In log order.
    log: VecDeque<Logged>,
    /// Per user: sequence → index into `log` counted from `base`.
    inbox: HashMap<u64, BTreeMap<u64, u64>>,
    /// The position of `log[0]`.
    base: u64,
    /// Per user, the highest sequence in the inbox table, where known.
    table_max: HashMap<u64, u64>,
}

impl Recent {
    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.log.len()
    }

    /// The log id of the oldest entry.
    pub(super) fn first_log_id(&self) -> Option<u64> {
        self.log.front().map(|l| l.log_id)
    }

    /// When the oldest entry was logged.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.log.front().map(|l| l.at)
    }

    /// Adds a committed append.
    pub(super) fn push(&mut self, logged: Logged) {
        let position = self.base + self.log.len() as u64;
        for &(uid, seq) in &logged.to {
            self.inbox.entry(uid).or_default().insert(seq, position);
        }
        self.log.push_back(logged);
    }

    /// The (recipient, sequence) pairs of the append in log entry `log_id`, if it is held
    /// here and has this key.
    pub(super) fn find(
        &self,
        log_id: u64,
        from_uid: u64,
        client_msg_id: &str,
    ) -> Option<Vec<(u64, u64)>> {
        let first = self.log.front()?.log_id;
        let logged = self
            .log
            .get(usize::try_from(log_id.checked_sub(first)?).ok()?)?;
        (logged.log_id == log_id
            && logged.from_uid == from_uid
            && logged.client_msg_id == client_msg_id)
            .then(|| logged.to.clone())
    }

    /// The oldest `n` entries, to move into the table.
    pub(super) fn oldest_entries(&self, n: usize) -> impl Iterator<Item = &Logged> {
        self.log.iter().take(n)
    }

    /// Drops the oldest `n` entries, now in the table.
    pub(super) fn moved(&mut self, n: usize) {
        for logged in self.log.drain(..n.min(self.log.len())) {
            self.base += 1;
            for &(uid, seq) in &logged.to {
                if let Some(seqs) = self.inbox.get_mut(&uid) {
                    seqs.remove(&seq);
                    if seqs.is_empty() {
                        self.inbox.remove(&uid);
                    }
                }
                let max = self.table_max.entry(uid).or_insert(seq);
                *max = (*max).max(seq);
            }
        }
    }

    /// Up to `limit` messages of `uid` after `after_seq` held here, in order.
    pub(super) fn fetch(&self, uid: u64, after_seq: u64, limit: usize) -> Vec<Msg> {
        let Some(seqs) = self.inbox.get(&uid) else {
            return Vec::new();
        };
        seqs.range(after_seq.saturating_add(1)..)
            .take(limit)
            .filter_map(|(&seq, &position)| {
                let logged = self.log.get(usize::try_from(position - self.base).ok()?)?;
                let mut msg = logged.msg.clone();
                msg.seq = seq;
                Some(msg)
            })
            .collect()
    }

    /// The highest sequence of `uid` in the inbox table, if known.
    pub(super) fn table_max(&self, uid: u64) -> Option<u64> {
        self.table_max.get(&uid).copied()
    }

    /// Learns the highest sequence of `uid` in the table, as a reader saw it.
    pub(super) fn saw_table_max(&mut self, uid: u64, seq: u64) {
        let max = self.table_max.entry(uid).or_insert(seq);
        *max = (*max).max(seq);
    }
}

/// The idempotency window: which (sender, client id) pairs were appended recently, by the
/// log entry that holds them.
///
/// Kept in memory, by a keyed 64-bit hash of the pair, for the last [`WINDOW_ENTRIES`]
/// appends or [`WINDOW_MS`] (by the time they were logged), whichever is shorter; the log keeps those entries, and the
/// window is rebuilt from it after a restart. A durable index of every pair ever sent
/// would be a B-tree with random keys, one page write per message; retries come within
/// seconds, not days.
#[derive(Debug, Default)]
pub(super) struct Window {
    by_key: HashMap<u64, u64>,
    /// (log id, key hash, logged at) in log order.
    order: VecDeque<(u64, u64, u64)>,
    hasher: std::hash::RandomState,
}

/// Appends the idempotency window holds at most.
pub(super) const WINDOW_ENTRIES: usize = 1_000_000;
/// How long an append stays in the idempotency window at most, in milliseconds.
pub(super) const WINDOW_MS: u64 = 10 * 60 * 1000;

impl Window {
    fn hash(&self, from_uid: u64, client_msg_id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((from_uid, client_msg_id))
    }

    /// The log entry of an earlier append with this key, if it is in the window (a hash
    /// match: the caller compares the entry's key).
    pub(super) fn find(&self, from_uid: u64, client_msg_id: &str) -> Option<u64> {
        self.by_key
            .get(&self.hash(from_uid, client_msg_id))
            .copied()
    }

    /// Records an append.
    pub(super) fn push(
        &mut self,
        log_id: u64,
        from_uid: u64,
        client_msg_id: &str,
        sent_at_ms: u64,
    ) {
        let key = self.hash(from_uid, client_msg_id);
        self.by_key.insert(key, log_id);
        self.order.push_back((log_id, key, sent_at_ms));
    }

    /// The first log id it holds.
    pub(super) fn first(&self) -> Option<u64> {
        self.order.front().map(|&(log_id, _, _)| log_id)
    }

    /// Forgets appends beyond the window; the first log id it still holds (`None`: empty).
    pub(super) fn trim(&mut self, now_ms: u64) -> Option<u64> {
        while let Some(&(log_id, key, at)) = self.order.front() {
            if self.order.len() <= WINDOW_ENTRIES && at.saturating_add(WINDOW_MS) > now_ms {
                break;
            }
            self.order.pop_front();
            if self.by_key.get(&key) == Some(&log_id) {
                self.by_key.remove(&key);
            }
        }
        self.order.front().map(|&(log_id, _, _)| log_id)
    }
}
