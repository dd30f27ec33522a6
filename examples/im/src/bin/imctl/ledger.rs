//! `imctl bench --check`: every acknowledged send and every delivery, kept so that the end
//! of a run can say exactly what was lost, repeated or reordered, and for how long a user
//! could not send. `deploy/chaos.sh` reads its one-line report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use svrkit_im::im::msg::Msg;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One acknowledged send.
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) id: String,
    /// The recipient's sequence the backend answered.
    pub(crate) seq: u64,
    pub(crate) started: Instant,
    pub(crate) acked: Instant,
}

/// What one user's sync received, and how its own sends fared.
#[derive(Debug, Default)]
pub(crate) struct UserLedger {
    /// `(seq, sender, client id)` in the order the sync received them.
    received: Mutex<Vec<(u64, u64, String)>>,
    outage: Mutex<Outage>,
}

#[derive(Debug, Default)]
struct Outage {
    /// The start of the first failed send since the last success.
    since: Option<Instant>,
    longest: Duration,
    /// Every outage that ended: (first failed send's start, next success).
    windows: Vec<(Instant, Instant)>,
}

impl UserLedger {
    pub(crate) fn deliver(&self, msgs: &[Msg]) {
        let mut received = lock(&self.received);
        for m in msgs {
            received.push((m.seq, m.from_uid, m.client_msg_id.to_string()));
        }
    }

    pub(crate) fn received(&self) -> Vec<(u64, u64, String)> {
        lock(&self.received).clone()
    }

    /// A send of this user that started at `started` failed.
    pub(crate) fn send_failed(&self, started: Instant) {
        let mut o = lock(&self.outage);
        o.since.get_or_insert(started);
    }

    /// A send of this user was acknowledged at `at`: an outage, if there was one, ends.
    pub(crate) fn sent_ok(&self, at: Instant) {
        let mut o = lock(&self.outage);
        if let Some(since) = o.since.take() {
            o.longest = o.longest.max(at.saturating_duration_since(since));
            o.windows.push((since, at));
        }
    }

    /// This user's outages, one still going at `now` included.
    pub(crate) fn windows(&self, now: Instant) -> Vec<(Instant, Instant)> {
        let o = lock(&self.outage);
        let mut windows = o.windows.clone();
        windows.extend(o.since.map(|s| (s, now)));
        windows
    }

    /// The longest time this user's sends failed, an outage still going at `now` included.
    pub(crate) fn longest_outage(&self, now: Instant) -> Duration {
        let o = lock(&self.outage);
        let open = o
            .since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        o.longest.max(open)
    }
}

/// The counts of a checked run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) acked: usize,
    /// Acknowledged and never delivered.
    pub(crate) lost: usize,
    /// Deliveries of a message beyond its first.
    pub(crate) duplicated: usize,
    /// Sends that were delivered below one of the same conversation (sender to recipient)
    /// acknowledged before they started.
    pub(crate) out_of_order: usize,
    /// Deliveries whose sequence was not above the one before, in a recipient's sync.
    pub(crate) seq_regressions: usize,
    pub(crate) longest_outage: Duration,
}

impl Report {
    /// Counts, from every acknowledged send and what each recipient received (by uid).
    pub(crate) fn of(
        sends: &[Sent],
        received: &HashMap<u64, Vec<(u64, u64, String)>>,
        longest_outage: Duration,
    ) -> Report {
        let mut copies: HashMap<(u64, u64, &str), usize> = HashMap::new();
        let mut seq_regressions = 0;
        for (&to, list) in received {
            for w in list.windows(2) {
                if w[1].0 <= w[0].0 {
                    seq_regressions += 1;
                }
            }
            for (_, from, id) in list {
                *copies.entry((to, *from, id.as_str())).or_default() += 1;
            }
        }
        let duplicated = copies.values().map(|&n| n.saturating_sub(1)).sum();
        let lost = sends
            .iter()
            .filter(|s| !copies.contains_key(&(s.to, s.from, s.id.as_str())))
            .count();
        Report {
            acked: sends.len(),
            lost,
            duplicated,
            out_of_order: out_of_order(sends),
            seq_regressions,
            longest_outage,
        }
    }

    /// Nothing lost, repeated or reordered.
    pub(crate) fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.seq_regressions == 0
    }
}

/// In each conversation, the sends whose sequence is below that of a send acknowledged
/// before they started: a reader would see them in the wrong order.
fn out_of_order(sends: &[Sent]) -> usize {
    let mut conversations: BTreeMap<(u64, u64), Vec<&Sent>> = BTreeMap::new();
    for s in sends {
        conversations.entry((s.from, s.to)).or_default().push(s);
    }
    let mut count = 0;
    for list in conversations.values() {
        let mut by_ack = list.clone();
        by_ack.sort_by_key(|s| s.acked);
        let mut by_start = list.clone();
        by_start.sort_by_key(|s| s.started);
        // The highest sequence among the sends acknowledged before each start.
        let (mut i, mut highest) = (0, 0);
        for s in by_start {
            while i < by_ack.len() && by_ack[i].acked < s.started {
                highest = highest.max(by_ack[i].seq);
                i += 1;
            }
            if s.seq < highest {
                count += 1;
            }
        }
    }
    count
}

/// The times some user could not send, from every user's outages merged where they
/// overlap, longest first, as `(start, length)` with the start counted from `origin`.
pub(crate) fn outages(
    mut windows: Vec<(Instant, Instant)>,
    origin: Instant,
) -> Vec<(Duration, Duration)> {
    windows.sort();
    let mut merged: Vec<(Instant, Instant)> = Vec::new();
    for (start, end) in windows {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out: Vec<(Duration, Duration)> = merged
        .into_iter()
        .map(|(s, e)| (s.saturating_duration_since(origin), e - s))
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.1));
    out
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked={} lost={} duplicated={} out_of_order={} seq_regressions={} longest_outage_s={:.1}",
            self.acked,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.seq_regressions,
            self.longest_outage.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(from: u64, to: u64, id: &str, seq: u64, started: u64, acked: u64) -> Sent {
        let base = Instant::now();
        Sent {
            from,
            to,
            id: id.into(),
            seq,
            started: base + Duration::from_millis(started),
            acked: base + Duration::from_millis(acked),
        }
    }

    #[test]
    fn the_report_counts_each_kind_of_fault_once() {
        let sends = [
            sent(1, 2, "a", 1, 0, 10),
            sent(1, 2, "b", 2, 20, 30),
            // Started after "b" was acknowledged, yet stored below it.
            sent(1, 2, "c", 1, 40, 50),
            sent(3, 2, "lost", 9, 0, 5),
            // Overlapping sends may land in either order.
            sent(3, 4, "x", 2, 0, 20),
            sent(3, 4, "y", 1, 10, 30),
        ];
        let received = HashMap::from([
            (
                2,
                vec![
                    (1, 1, "a".to_owned()),
                    (2, 1, "b".to_owned()),
                    (2, 1, "b".to_owned()),
                    (1, 1, "c".to_owned()),
                ],
            ),
            (4, vec![(1, 3, "y".to_owned()), (2, 3, "x".to_owned())]),
        ]);
        let report = Report::of(&sends, &received, Duration::from_millis(4200));
        assert_eq!(
            report.to_string(),
            "acked=6 lost=1 duplicated=1 out_of_order=1 seq_regressions=2 longest_outage_s=4.2"
        );
        assert!(!report.clean());
    }

    #[test]
    fn an_outage_runs_from_the_first_failure_to_the_next_success() {
        let user = UserLedger::default();
        let t = Instant::now();
        user.send_failed(t);
        user.send_failed(t + Duration::from_secs(1));
        user.sent_ok(t + Duration::from_secs(3));
        user.send_failed(t + Duration::from_secs(4));
        assert_eq!(
            user.longest_outage(t + Duration::from_secs(5)),
            Duration::from_secs(3)
        );
        assert_eq!(
            user.longest_outage(t + Duration::from_secs(9)),
            Duration::from_secs(5)
        );
    }
}
