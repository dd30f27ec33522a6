//! The server's overload control (DAGOR): detect overload from queueing, and admit requests
//! by priority level so that an overloaded server sheds the least important work first and
//! keeps the rest within their deadlines.
//!
//! **Detection.** Each request's queue wait (its frame's read to its handler's start) is
//! summed per *window*, which ends after [`AdmissionConfig::window`] or
//! [`AdmissionConfig::window_requests`] requests, whichever comes first. A frame waits unread
//! in the kernel while the connection's reader waits for a CPU, which the read stamp cannot
//! see; so a probe task measures how late the runtime wakes it (its scheduling lag) and that
//! is added. The server is overloaded in a window when the average exceeds
//! [`AdmissionConfig::queue_wait`] (20 ms by default).
//!
//! **Admission.** The server admits the levels below its admission level
//! ([`priority`](super::priority): business priority, then a hash of the user). It counts the
//! requests of the window by level; at the window's end, overloaded, it lowers the level
//! until about [`AdmissionConfig::shed_step`] (5%) fewer of the requests it admitted would
//! have been; not overloaded, it raises it until about [`AdmissionConfig::admit_step`] (1%)
//! more would have. A request at or above the level is answered `OVERLOADED` before its body
//! is decoded. Every response says the level, and callers drop what would be refused.
//!
//! Per request this is two relaxed atomic additions and a load; the window closes on one
//! thread, which the others do not wait for.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::priority::LEVELS;

/// How the server detects overload and how fast it sheds and re-admits (`[overload]` in the
/// configuration file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Whether the server sheds load at all (default: yes).
    pub enabled: bool,
    /// Average queue wait above which a window counts as overloaded (`queue_wait_ms`).
    #[serde(rename = "queue_wait_ms", with = "millis")]
    pub queue_wait: Duration,
    /// Longest window (`window_ms`).
    #[serde(rename = "window_ms", with = "millis")]
    pub window: Duration,
    /// Requests that end a window early.
    pub window_requests: u32,
    /// Share of admitted requests to shed more of after an overloaded window.
    pub shed_step: f64,
    /// Share of admitted requests to admit more of after a window that was not.
    pub admit_step: f64,
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            enabled: true,
            queue_wait: Duration::from_millis(20),
            window: Duration::from_secs(1),
            window_requests: 2_000,
            shed_step: 0.05,
            admit_step: 0.01,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The admission state of one server.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    /// Levels admitted: a request is admitted when its level is below this.
    level: AtomicU32,
    /// Requests of the window so far, by level (admitted or not).
    by_level: Box<[AtomicU32]>,
    /// Requests of the window so far.
    requests: AtomicU32,
    /// When the window ends (milliseconds on the policy clock).
    window_end: AtomicU64,
    /// Queue waits of the window: their sum in microseconds, and how many.
    wait_us: AtomicU64,
    waits: AtomicU64,
    /// Scheduling lag of the window, from the probe: its sum in microseconds, and how many.
    lag_us: AtomicU64,
    lags: AtomicU64,
    /// Held by the thread closing a window; the others do not wait for it.
    closing: Mutex<()>,
    /// Whether the last window was overloaded.
    overloaded: AtomicBool,
    /// Whether a lag probe runs.
    probed: AtomicBool,
    /// Whether the level is pinned by [`Admission::pin`].
    pinned: AtomicBool,
}

/// What a closed window found, for tests and the dashboard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowReport {
    /// Requests in the window.
    pub requests: u64,
    /// Average queue wait including the scheduling lag.
    pub queue_wait: Duration,
    /// Whether that was over the threshold.
    pub overloaded: bool,
    /// The admission level after the window.
    pub level: u32,
}

impl Admission {
    /// A server's admission control, admitting everything until it first sees overload.
    pub fn new(config: AdmissionConfig) -> Admission {
        Admission {
            level: AtomicU32::new(LEVELS),
            by_level: (0..LEVELS).map(|_| AtomicU32::new(0)).collect(),
            requests: AtomicU32::new(0),
            window_end: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            lags: AtomicU64::new(0),
            closing: Mutex::new(()),
            overloaded: AtomicBool::new(false),
            probed: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            config,
        }
    }

    /// The levels admitted now (1 to [`LEVELS`]): what responses carry.
    #[inline]
    pub fn level(&self) -> u32 {
        self.level.load(Relaxed)
    }

    /// Pins the admission level (1 to [`LEVELS`]): windows still count and report, but
    /// leave it where it is until `pin(None)` hands it back to them. For operators who
    /// shed by hand (only critical traffic during an incident, say) and for tests.
    pub fn pin(&self, level: Option<u32>) {
        if let Some(level) = level {
            self.level.store(level.clamp(1, LEVELS), Relaxed);
        }
        self.pinned.store(level.is_some(), Relaxed);
    }

    /// Whether the last window was overloaded.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    /// Counts a request of `level` that arrived for pickup at `now`; whether to admit it.
    #[inline]
    pub fn admit(&self, level: u32, now: Instant) -> bool {
        let level = level.min(LEVELS - 1);
        self.by_level[level as usize].fetch_add(1, Relaxed);
        let n = self.requests.fetch_add(1, Relaxed) + 1;
        let now_ms = super::millis(now);
        if n >= self.config.window_requests || now_ms >= self.window_end.load(Relaxed) {
            self.close_window(now_ms);
        }
        level < self.level.load(Relaxed)
    }

    /// Counts an admitted request's queue wait.
    #[inline]
    pub fn waited(&self, wait: Duration) {
        self.wait_us.fetch_add(wait.as_micros() as u64, Relaxed);
        self.waits.fetch_add(1, Relaxed);
    }

    /// Counts a sample of the runtime's scheduling lag.
    pub fn lagged(&self, lag: Duration) {
        self.lag_us.fetch_add(lag.as_micros() as u64, Relaxed);
        self.lags.fetch_add(1, Relaxed);
    }

    /// Closes the window if its time is up.
    pub(crate) fn tick(&self, now: Instant) {
        let now_ms = super::millis(now);
        if now_ms >= self.window_end.load(Relaxed) {
            self.close_window(now_ms);
        }
    }

    /// Closes the window if it is still due and no other thread is closing it.
    #[cold]
    fn close_window(&self, now_ms: u64) -> Option<WindowReport> {
        let _closing = self.closing.try_lock().ok()?;
        let due = self.requests.load(Relaxed) >= self.config.window_requests
            || now_ms >= self.window_end.load(Relaxed);
        if !due {
            return None;
        }
        let window_ms = self.config.window.as_millis().max(1) as u64;
        self.window_end.store(now_ms + window_ms, Relaxed);
        let requests = u64::from(self.requests.swap(0, Relaxed));
        let counts: Vec<u32> = self.by_level.iter().map(|c| c.swap(0, Relaxed)).collect();
        let average = |sum: &AtomicU64, n: &AtomicU64| {
            let n = n.swap(0, Relaxed);
            let sum = sum.swap(0, Relaxed);
            sum.checked_div(n).unwrap_or(0)
        };
        let queue_wait = Duration::from_micros(
            average(&self.wait_us, &self.waits) + average(&self.lag_us, &self.lags),
        );
        let overloaded = queue_wait > self.config.queue_wait;
        self.overloaded.store(overloaded, Relaxed);
        let before = self.level.load(Relaxed);
        let level = next_level(
            &counts,
            before,
            overloaded,
            self.config.shed_step,
            self.config.admit_step,
        );
        if self.pinned.load(Relaxed) {
            return None;
        }
        self.level.store(level, Relaxed);
        if level != before && (level == LEVELS || before == LEVELS) {
            tracing::info!(
                queue_wait_ms = queue_wait.as_secs_f64() * 1e3,
                level,
                "{}",
                if overloaded {
                    "overloaded: shedding the lowest priorities"
                } else {
                    "no longer overloaded: admitting everything"
                }
            );
        }
        Some(WindowReport {
            requests,
            queue_wait,
            overloaded,
            level,
        })
    }

    /// Starts the probe that measures the runtime's scheduling lag (once per server; it stops
    /// when the server is dropped).
    pub(crate) fn start_probe(self: &Arc<Admission>) {
        if self.probed.swap(true, Relaxed) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let admission = Arc::downgrade(self);
        tokio::spawn(probe(admission));
    }
}

/// How often the probe samples the scheduling lag.
const PROBE_EVERY: Duration = Duration::from_millis(5);

async fn probe(admission: Weak<Admission>) {
    let mut due = tokio::time::Instant::now() + PROBE_EVERY;
    loop {
        tokio::time::sleep_until(due).await;
        let Some(admission) = admission.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        // The timer fires on a millisecond grid: lateness below that is not lag.
        let lag = now.saturating_duration_since(due);
        admission.lagged(lag.saturating_sub(Duration::from_millis(1)));
        // Windows end on time without traffic too, so that an idle server recovers.
        admission.tick(now.into_std());
        due = now + PROBE_EVERY;
    }
}

/// The admission level after a window that counted `counts` requests per level with `level`
/// admitted: lowered to shed about `shed` of what was admitted when `overloaded`, else
/// raised to admit about `admit` more. Always at least 1.
pub(crate) fn next_level(
    counts: &[u32],
    level: u32,
    overloaded: bool,
    shed: f64,
    admit: f64,
) -> u32 {
    let top = counts.len() as u32;
    let level = level.clamp(1, top);
    let admitted: u64 = counts[..level as usize].iter().map(|&c| u64::from(c)).sum();
    if overloaded {
        if admitted == 0 {
            return level;
        }
        let target = ((admitted as f64 * shed).ceil() as u64).max(1);
        let mut next = level;
        let mut removed = 0;
        while next > 1 && removed < target {
            next -= 1;
            removed += u64::from(counts[next as usize]);
        }
        next
    } else {
        if level == top {
            return top;
        }
        let target = ((admitted as f64 * admit).ceil() as u64).max(1);
        let mut next = level;
        let mut added = 0;
        while next < top && added < target {
            added += u64::from(counts[next as usize]);
            next += 1;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(per_level: u32) -> Vec<u32> {
        vec![per_level; LEVELS as usize]
    }

    #[test]
    fn overload_sheds_about_five_percent_of_what_was_admitted() {
        let counts = uniform(10);
        // All 512 levels admitted: 5120 requests; 5% is 256, 26 levels of 10.
        let next = next_level(&counts, LEVELS, true, 0.05, 0.01);
        assert_eq!(next, LEVELS - 26);
        // Repeated overload keeps shedding, never below one level.
        let mut level = LEVELS;
        for _ in 0..1_000 {
            level = next_level(&counts, level, true, 0.05, 0.01);
        }
        assert_eq!(level, 1);
    }

    #[test]
    fn recovery_admits_about_one_percent_more_per_window() {
        let counts = uniform(10);
        // 256 levels admitted: 2560 requests; 1% is 26, three levels of 10.
        assert_eq!(next_level(&counts, 256, false, 0.05, 0.01), 259);
        // Levels nobody asked for in the window are opened at once.
        let mut sparse = vec![0; LEVELS as usize];
        sparse[0] = 100;
        assert_eq!(next_level(&sparse, 10, false, 0.05, 0.01), LEVELS);
        assert_eq!(next_level(&sparse, LEVELS, false, 0.05, 0.01), LEVELS);
    }

    #[test]
    fn shedding_takes_the_lowest_levels_first() {
        // Traffic only at levels 0-9 (critical) and 400-409 (low).
        let mut counts = vec![0; LEVELS as usize];
        for l in (0..10).chain(400..410) {
            counts[l] = 100;
        }
        let mut level = LEVELS;
        let mut steps = 0;
        while level > 400 {
            level = next_level(&counts, level, true, 0.05, 0.01);
            steps += 1;
        }
        // Each step sheds at least one low level; the critical ones stay admitted.
        assert!(steps <= 110, "{steps}");
        assert!(level >= 10);
    }

    #[test]
    fn a_window_closes_after_its_requests_and_sheds_when_waits_are_long() {
        let admission = Admission::new(AdmissionConfig {
            window: Duration::from_secs(3600),
            window_requests: 100,
            ..AdmissionConfig::default()
        });
        let now = Instant::now();
        // The first request opens the first window (its end is still 0).
        assert!(admission.admit(LEVELS - 1, now));
        for i in 0..100 {
            admission.waited(Duration::from_millis(50));
            assert!(admission.admit(LEVELS - 1 - (i % 10), now));
        }
        // 100 admitted, 10 at each of the top ten levels: shedding 5 takes the top level.
        assert_eq!(
            admission.level(),
            LEVELS - 1,
            "the 100th closed an overloaded window"
        );
        assert!(admission.is_overloaded());
        assert!(
            !admission.admit(LEVELS - 1, now),
            "the lowest level is refused now"
        );
        // Windows without waiting admit again.
        for _ in 0..100 {
            admission.admit(0, now);
        }
        assert!(!admission.is_overloaded());
        assert_eq!(admission.level(), LEVELS);
    }

    #[test]
    fn lag_counts_as_waiting() {
        let admission = Admission::new(AdmissionConfig::default());
        let now = Instant::now();
        admission.admit(0, now);
        admission.waited(Duration::from_millis(1));
        admission.lagged(Duration::from_millis(30));
        let report = admission
            .close_window(super::super::millis(now) + 10_000)
            .unwrap();
        assert_eq!(report.queue_wait, Duration::from_millis(31));
        assert!(report.overloaded);
    }
}
