//! The server's overload control: DAGOR's priority levels, which decide *who* is shed, and
//! a per-request check on queue time in the manner of CoDel, which decides *how fast*.
//! `docs/policies.md` has the whole design and the measurements behind it.
//!
//! **What a request waited.** From its frame's read to its pickup, where a read that found
//! bytes already waiting is stamped halfway since the previous read (the frame waited in the
//! kernel while the reader ran handlers), plus the scheduling lag the runtime shows
//! throughout: the least of a probe's lateness samples over an interval, so that a handler
//! holding the worker is not read as a queue but a queue of tasks waiting for the worker is.
//!
//! **Per request, at pickup** ([`Admission::admit`]): a level at or above the admission
//! level is shed, unless the server is slow (2 ms or more of a worker a request) and the
//! request finds a worker free ([`Admission::spare`]): shedding it would idle the worker.
//! Otherwise the wait is checked against the target (`queue_wait`, at least
//! ten requests' worth at the capacity last seen). Until the pickups have waited over it for
//! an interval (counted from the first over it since one within it, or since a spell with
//! none over it: an idle server starts afresh), only requests that waited longer than the
//! interval are dropped (a burst is served); once the queue has stood above the target that long, every request over
//! it is dropped unrun, critical ones excepted up to half their deadline. Either limit is at
//! most a fraction of the request's own deadline.
//!
//! **Per window** (1 s, 2,000 requests, or 100 ms with 200, longer while settling; a surge
//! of late drops ends one at once): overloaded when the average wait exceeds the target or more than 2% of pickups
//! were dropped late; then levels are shed by their arrivals down to what the server started,
//! less the queue's excess to drain within half a second, one business priority at a time,
//! never past the last non-critical level with arrivals (the per-request check trims that
//! one), and not again until the queue the old level built has drained. Between 0.5% and 2% late,
//! the level holds (the queue is short and never empty). Calm, it rises by 1% or by the
//! headroom to 95% of the capacity last seen, except into a level whose own demand is more
//! than a quarter over that (a flood parked at one level). Every 50 ms (or twenty requests'
//! time) a shedding server also looks at whether arrivals fell below a quarter of its
//! capacity: then the overload is over, and it admits everything at once. So does a spell of
//! 15 ms (or six requests' time) in which a worker stood idle (the lag probe on time) and as
//! little arrived.
//!
//! **Settling.** Where one user level is a small part of the load, the level then settles:
//! it holds while the queue is busy but under the target, goes down one busy level at a
//! time once settled (taking one off before the queue reaches the target, and a fifth of
//! the step when just over it), goes up by small steps near the capacity and only once the
//! last one has taken effect, on windows up to three times as long. A cut that stays put
//! gives few users both outcomes; one that sweeps gives every user it sweeps over both.
//!
//! Per request this is a few relaxed atomic operations; the window closes on one thread,
//! which the others do not wait for.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::priority::{LEVELS, USER_LEVELS};
use crate::clock;

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
    /// How long the queue may stand above `queue_wait` before requests that waited longer
    /// than that are dropped at pickup; and, when it has not, how long a request may wait
    /// before it is dropped anyway (`queue_interval_ms`, CoDel's interval).
    #[serde(rename = "queue_interval_ms", with = "millis")]
    pub queue_interval: Duration,
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
            queue_interval: Duration::from_millis(100),
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
    /// Requests started in the window, by level.
    started_by_level: Box<[AtomicU32]>,
    /// Requests picked up since this was built (admitted or not). The window's count
    /// and the quick look's are this less what it was when each began (`window_base`,
    /// `recent_base`): one atomic addition per request serves both.
    arrivals: AtomicU64,
    /// `arrivals` when the window began.
    window_base: AtomicU64,
    /// When the window ends (milliseconds on the policy clock).
    window_end: AtomicU64,
    /// When the window began (policy clock, ms).
    window_start: AtomicU64,
    /// The sum of the window's measured queue waits, in microseconds. How many there were
    /// is the window's starts less its `backlog`: the rare request is counted, not the
    /// common one, to keep an atomic addition off every request.
    wait_us: AtomicU64,
    /// The least scheduling lag the probe saw since it last published `lag_floor` (µs).
    lag_min: AtomicU64,
    /// The least it saw in the interval before (µs).
    lag_before: AtomicU64,
    /// Held by the thread closing a window; the others do not wait for it.
    closing: Mutex<()>,
    /// Whether the last window was overloaded.
    overloaded: AtomicBool,
    /// Whether a lag probe runs.
    probed: AtomicBool,
    /// Whether the level is pinned by [`Admission::pin`].
    pinned: AtomicBool,
    /// Whether the last window was settling (see the module docs): windows then run up to
    /// [`STEADY_WINDOWS`] times longer, for averages steady enough that the level stays
    /// put.
    steady: AtomicBool,
    /// The last window's average queue wait (µs).
    last_wait: AtomicU64,
    /// Whether the level last went down by more than one level (until `settle_until`, the
    /// queue that shedding left is still draining).
    shed_far: AtomicBool,
    /// What the last window found.
    last: Mutex<Option<WindowReport>>,
    /// Requests a second the server starts when overloaded (`f64` bits; 0 before the first
    /// overload): its capacity, as last seen.
    capacity: AtomicU64,
    /// `arrivals` when the current short look began, and when it began (policy clock,
    /// ms): what tells, within [`QUICK_LOOK`], that an overload ended.
    recent_base: AtomicU64,
    recent_from: AtomicU64,
    /// Whether every sample of the lag probe since the quick look began was on time: a
    /// runtime with a worker to spare, whose look is shorter (see [`IDLE_LOOK`]).
    idle: AtomicBool,
    /// The lag probe's samples on time in the window: each stands for about one probe
    /// period in which a worker was idle (a busy worker makes the samples late and sparse).
    on_time: AtomicU32,
    /// When (policy clock, ms, plus one; 0 after a late sample, or once a request used it)
    /// the second of the probe's last two samples came, both on time: a worker was free
    /// then (see [`Admission::spare`]).
    free_at: AtomicU64,
    /// The runtime's worker threads (1 until the probe starts): what a request costs a
    /// worker is this over the capacity.
    workers: AtomicU32,
    /// Requests of shed levels run in the window on a free worker ([`Admission::spare`]).
    spare: AtomicU64,
    /// Whether one started since the probe's last sample: then that sample's lateness is
    /// the spare request's own run, not a queue (see [`Admission::sampled`]).
    spared: AtomicBool,
    /// Whether the probe's last sample was on time.
    was_on_time: AtomicBool,
    /// When (policy clock, ms, plus one: 0 is none) the pickups began to wait longer than
    /// the target without one in between that did not: a queue over the target for
    /// `queue_interval` of pickups is standing (CoDel's `first_above_time`). Measured from
    /// the first pickup over it, not from the last one under it, so that an idle spell
    /// (no pickups at all) does not read as a queue that stood.
    above_since: AtomicU64,
    /// The last pickup over the target (policy clock, ms, plus one): with none for an
    /// interval, the queue emptied or the server idled in between (CoDel resets on an
    /// empty queue), and the next pickup over the target starts afresh.
    above_last: AtomicU64,
    /// Requests of the window dropped at pickup for having waited too long.
    late: AtomicU32,
    /// Started requests of the window that arrived before the level last moved (the old
    /// level's backlog), whose waits are left out of `wait_us`.
    backlog: AtomicU64,
    /// When the level last moved (policy clock, ms).
    moved_at: AtomicU64,
    /// Until when (policy clock, ms) the queue left by the last shedding is draining: no
    /// shedding again before.
    settle_until: AtomicU64,
    /// The scheduling lag the runtime shows throughout (µs): the least of the probe's
    /// samples over the last two `queue_interval`s. A handler that holds the worker makes
    /// some samples late, but not all of them; a queue of tasks waiting for the worker (and
    /// the frames unread in the kernel behind them) makes every sample late. Two intervals,
    /// because a worker held for about one interval delays the probe's only sample of it: a
    /// lag that ended must not be added to the waits of the requests that come after it.
    lag_floor: AtomicU64,
}

/// What [`Admission::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Admit,
    /// Its priority level is shed.
    Shed,
    /// It waited in the queue longer than the server allows now.
    Late,
}

/// How often a server that sheds looks at whether its load went away, between windows. A
/// window is long (a second) so that its averages are steady; an overload that ends should
/// not cost its callers that long.
const QUICK_LOOK: Duration = Duration::from_millis(50);

/// The share of the capacity last seen below which a quick look's arrivals mean the load
/// went away. Callers drop what the server sheds, so what arrives while it sheds is about
/// its capacity; a look of a few tens of milliseconds can dip well below that with bursty
/// callers, but not to a quarter.
const QUICK_LOOK_SHARE: f64 = 0.25;

/// The shortest quick look of a server whose workers had time to spare throughout (every
/// sample of the lag probe on time): with arrivals under [`QUICK_LOOK_SHARE`] of its
/// capacity, the overload is over. A look counts arrivals alone, and at a slow server it must
/// be long (twenty requests' time: 400 ms at 20 ms each) to tell a lull from the end; a
/// worker with nothing to do is a sharper sign. While the load goes on, the queue keeps the
/// workers busy and the probe late; when the server idles with little arriving, either the
/// load ended or the callers' copies of its level hold back more than it can do: both are
/// reasons to admit again. At least three samples, so that one that came on time by chance
/// between two handlers does not count, and at least [`IDLE_REQUESTS`]' time.
const IDLE_LOOK: Duration = Duration::from_millis(15);

/// Requests' time at the capacity an idle look lasts at least. With six expected, a load
/// that goes on sends at most one (under a quarter) in about one look of 60 by Poisson's
/// law (looks slide, one after another), and the look must also find the worker idle
/// throughout. (With the 15 ms alone, a
/// server of 50 requests a second, its queue emptied for a moment, saw no arrival in 43% of
/// its looks, and opened every level into its load several times a run.)
const IDLE_REQUESTS: f64 = 6.0;

/// The least a request costs a worker on average (the workers over the capacity) for a
/// shed request that finds one free to run ([`Admission::spare`]): a request that takes
/// more than the probe's grid and lateness threshold makes the sample due while it runs
/// late.
const FREE_COST: Duration = Duration::from_millis(2);

/// How long after the probe's last sample on time a worker still counts as free: one probe
/// period and the timer's grid. The next sample is late from 6.5 ms; the policy clock's
/// milliseconds truncate, so this admits from 6 to just under 7 ms after the sample: up to
/// half a millisecond of stale evidence, which the one-use token bounds to one request.
const FREE_FOR_MS: u64 = 6;

/// A window with a worker idle for more than one part in this many of it was idling.
const IDLE_SHARE_INVERSE: u32 = 20;

/// A probe sample less late than this beyond the timer's millisecond grid (within 1.5 ms of
/// its due time) is on time: the runtime had a worker free when the timer fired (waking one
/// takes tens of microseconds).
const IDLE_LAG: Duration = Duration::from_micros(500);

/// Requests dropped late in a window that end it early (once it is [`MIN_WINDOW_MS`] old):
/// a surge moves the levels within tens of milliseconds.
const LATE_CLOSES: u32 = 32;

/// The shortest window a surge may end.
const MIN_WINDOW_MS: u64 = 50;

/// How soon (seconds) the queue's excess over the target is to drain once levels are shed.
const DRAIN_WITHIN: f64 = 0.5;

/// A window this old with [`SHORT_WINDOW_REQUESTS`] requests is over.
const SHORT_WINDOW_MS: u64 = 100;

/// Requests enough for a window's averages.
const SHORT_WINDOW_REQUESTS: u32 = 200;

/// The share of the requests picked up in a window that, dropped late, makes it overloaded.
const LATE_SHARE_SHEDS: f64 = 0.02;

/// The share above which late drops hold the level where it is: the queue is short and
/// never runs dry. Below it, they are bursts, and the level may rise.
const LATE_SHARE_HOLDS: f64 = 0.005;

/// The share of late drops up to which an overloaded window whose queue is within twice the
/// target is only just over: the level moves by a fifth of `shed_step`.
const LATE_SHARE_SLIGHT: f64 = 0.1;

/// How many times `window_requests` a window may hold while the level settles, and how many
/// times `window` it may last while the queue is in its band.
const STEADY_WINDOWS: u64 = 3;

/// Why a window closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// Its time or its requests are up.
    Due,
    /// Arrivals fell below a quarter of the capacity: the overload is over.
    Calm,
    /// Requests are being dropped late: shed levels now.
    Surge,
}

/// What a closed window found, for tests and the dashboard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowReport {
    /// Requests in the window.
    pub requests: u64,
    /// Requests started in the window, of the levels admitted.
    pub started: u64,
    /// Requests of shed levels run in the window on a free worker ([`Admission::spare`]).
    pub spare: u64,
    /// Requests dropped at pickup for having waited too long.
    pub late: u64,
    /// How long the window lasted.
    pub length: Duration,
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
            started_by_level: (0..LEVELS).map(|_| AtomicU32::new(0)).collect(),
            arrivals: AtomicU64::new(0),
            window_base: AtomicU64::new(0),
            window_end: AtomicU64::new(0),
            window_start: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            lag_min: AtomicU64::new(u64::MAX),
            // No lag before the server started.
            lag_before: AtomicU64::new(0),
            closing: Mutex::new(()),
            overloaded: AtomicBool::new(false),
            probed: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            steady: AtomicBool::new(false),
            last_wait: AtomicU64::new(0),
            shed_far: AtomicBool::new(false),
            last: Mutex::new(None),
            capacity: AtomicU64::new(0),
            recent_base: AtomicU64::new(0),
            recent_from: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            on_time: AtomicU32::new(0),
            free_at: AtomicU64::new(0),
            workers: AtomicU32::new(1),
            spare: AtomicU64::new(0),
            spared: AtomicBool::new(false),
            was_on_time: AtomicBool::new(false),
            above_since: AtomicU64::new(0),
            above_last: AtomicU64::new(0),
            late: AtomicU32::new(0),
            backlog: AtomicU64::new(0),
            moved_at: AtomicU64::new(0),
            settle_until: AtomicU64::new(0),
            lag_floor: AtomicU64::new(0),
            config,
        }
    }

    /// The levels admitted now (1 to [`LEVELS`]): what responses carry.
    #[inline]
    pub fn level(&self) -> u32 {
        self.level.load(Relaxed)
    }

    /// Requests a second the server started when last overloaded (0 before its first
    /// overload).
    pub fn capacity(&self) -> f64 {
        f64::from_bits(self.capacity.load(Relaxed))
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

    /// Counts a request of `level` picked up at `now` after `waited` since its frame was
    /// read; whether to run it.
    ///
    /// Two checks. By level (DAGOR): the priorities the server sheds now. By time (CoDel, as
    /// Facebook's servers use it): the request's wait, plus the scheduling lag the runtime
    /// shows throughout (frames wait unread in the kernel behind it), against
    /// `queue_wait`. Until every pickup for `queue_interval` waited longer (counted from the
    /// first over it since one within it, or since a spell of an interval with none over
    /// it), only a request that waited more than `queue_interval` is dropped: a burst is
    /// served. Once they have (a standing queue), every request that waited more
    /// than `queue_wait` is dropped, critical ones excepted (they may wait up to half their
    /// deadline, while the levels shed the rest), so that
    /// the work the server does is fresh and the queue drains at once instead of after the
    /// window the level needs to react. The levels then follow the drops.
    ///
    /// Neither limit is more than a fraction of the request's own deadline `budget` (a half,
    /// and a quarter once the queue stands): a request that spent its time queueing would
    /// be answered after its caller gave up, and the work would be lost.
    #[inline]
    pub fn admit(&self, level: u32, now: Instant, waited: Duration, budget: Duration) -> Verdict {
        let level = level.min(LEVELS - 1);
        self.by_level[level as usize].fetch_add(1, Relaxed);
        let arrivals = self.arrivals.fetch_add(1, Relaxed) + 1;
        let n = arrivals.saturating_sub(self.window_base.load(Relaxed));
        let now_ms = clock::millis(now);
        if n >= u64::from(self.config.window_requests.min(SHORT_WINDOW_REQUESTS))
            && self.is_due(now_ms)
            || now_ms >= self.window_end.load(Relaxed)
        {
            self.close_window(now_ms, Close::Due);
        }
        if level >= self.level.load(Relaxed) {
            return Verdict::Shed;
        }
        let waited = waited + Duration::from_micros(self.lag_floor.load(Relaxed));
        if waited <= self.config.queue_wait {
            self.under_target();
            return Verdict::Admit;
        }
        let (target, interval) = self.targets();
        let half = budget / 2;
        if waited <= target {
            self.under_target();
            // A slow server's target (ten requests' worth: 200 ms at 20 ms each) can be as
            // long as its callers' deadlines: past half of one, a request would be answered
            // after its caller gave up, or nearly, however normal the queue.
            if waited <= half {
                return Verdict::Admit;
            }
            return self.drop_late(now_ms, waited);
        }
        let interval_ms = interval.as_millis() as u64;
        // The latest wins: threads picking up at once may come in either order.
        let last = self.above_last.fetch_max(now_ms + 1, Relaxed);
        let standing = match self.above_since.load(Relaxed) {
            // The first over the target since one under it, or since a spell without any:
            // a burst, until the pickups have been over it for an interval.
            since if since == 0 || now_ms + 1 > last + interval_ms => {
                self.above_since.store(now_ms + 1, Relaxed);
                false
            }
            since => now_ms + 1 > since + interval_ms,
        };
        // Critical requests are the last to go: they may wait up to half their deadline
        // while the levels make room for them.
        let critical = level < USER_LEVELS;
        let limit = if critical {
            half
        } else if standing {
            target.min(budget / 4)
        } else {
            interval.min(half)
        };
        if waited <= limit {
            return Verdict::Admit;
        }
        self.drop_late(now_ms, waited)
    }

    /// Whether a request that [`admit`](Admission::admit) shed, picked up at `now` after
    /// `waited` while `running` requests of the server were in their handlers, may run on a
    /// worker that is free: overload control conserves work at a slow server. Once it
    /// starts, the caller counts it with [`started_spare`](Admission::started_spare), not
    /// [`started`](Admission::started): it is work the server did (toward the capacity
    /// estimate, and its time toward the window's idle time), not a start of the levels
    /// admitted nor a measure of their queue.
    ///
    /// A slow server's level moves once a window (a second), and until then it shed on
    /// while its worker stood idle: after a 20x load of 20 ms requests, every call its
    /// callers let through was refused, in 0.1 ms, for up to 1.6 s. The evidence that
    /// a worker is free: the lag probe's last two samples on time, the last within
    /// [`FREE_FOR_MS`]; fewer requests in their handlers than the runtime has workers; and
    /// the request picked up as it was read. A sample on time that follows another lets one
    /// request through (the evidence is used up: the worker it saw free is the one this
    /// request takes): at most one per probe period while the samples stay on time, so a
    /// reader woken while a handler held the worker, whose frames look fresh, takes at most
    /// that one. Only where a request costs [`FREE_COST`] or more of a worker (the
    /// workers over the capacity last seen): below that the probe, every 5 ms on a 1 ms
    /// grid, cannot tell a free worker from a busy one, and idle spells are too short to
    /// matter. Never while the level is pinned.
    pub fn spare(&self, now: Instant, waited: Duration, running: usize) -> bool {
        let free_at = self.free_at.load(Relaxed);
        let now_ms = clock::millis(now);
        if free_at == 0 || now_ms + 1 > free_at + FREE_FOR_MS || waited >= IDLE_LAG {
            return false;
        }
        let workers = self.workers.load(Relaxed);
        let capacity = self.capacity();
        let slow = capacity > 0.0 && f64::from(workers) / capacity >= FREE_COST.as_secs_f64();
        // The token last: a refusal for any other reason leaves it for the next request.
        slow && running < workers as usize
            && !self.pinned.load(Relaxed)
            && self
                .free_at
                .compare_exchange(free_at, 0, Relaxed, Relaxed)
                .is_ok()
    }

    /// Counts a request that [`spare`](Admission::spare) let run, once it starts (in place of
    /// [`started`](Admission::started)).
    #[inline]
    pub fn started_spare(&self) {
        self.spare.fetch_add(1, Relaxed);
        self.spared.store(true, Relaxed);
    }

    /// Drops a request picked up at `now_ms` after `waited`, counting it against the
    /// window: enough of them end it at once.
    fn drop_late(&self, now_ms: u64, waited: Duration) -> Verdict {
        // A request that arrived before the level last moved is the backlog of the old
        // level: dropped, but not counted against the new one, which would shed again for
        // a queue that is already draining.
        let arrived_ms = now_ms.saturating_sub(waited.as_millis() as u64);
        if arrived_ms < self.moved_at.load(Relaxed) {
            return Verdict::Late;
        }
        let late = self.late.fetch_add(1, Relaxed) + 1;
        // A surge: the levels react now, not at the end of the window.
        if late >= LATE_CLOSES && now_ms >= self.window_start.load(Relaxed) + MIN_WINDOW_MS {
            self.close_window(now_ms, Close::Surge);
        }
        Verdict::Late
    }

    /// Notes a pickup within the target: the queue, if any, is not standing. (A load first,
    /// so that the common case writes nothing shared.)
    #[inline]
    fn under_target(&self) {
        if self.above_since.load(Relaxed) != 0 {
            self.above_since.store(0, Relaxed);
        }
    }

    /// Requests picked up in the window so far.
    fn window_count(&self) -> u64 {
        self.arrivals
            .load(Relaxed)
            .saturating_sub(self.window_base.load(Relaxed))
    }

    /// Whether the window is over: its time is up, or it has `window_requests` requests,
    /// or it is [`SHORT_WINDOW_MS`] old with [`SHORT_WINDOW_REQUESTS`] (a slow server's
    /// windows would otherwise be a second long, and it would take seconds to converge).
    /// While the level settles, [`STEADY_WINDOWS`] times the requests, and no short windows.
    fn is_due(&self, now_ms: u64) -> bool {
        let requests = self.window_count();
        let age = now_ms.saturating_sub(self.window_start.load(Relaxed));
        let steady = self.steady.load(Relaxed);
        let most = u64::from(self.config.window_requests) * if steady { STEADY_WINDOWS } else { 1 };
        now_ms >= self.window_end.load(Relaxed)
            || requests >= most
            || (age >= SHORT_WINDOW_MS && requests >= u64::from(SHORT_WINDOW_REQUESTS) && !steady)
    }

    /// The queue wait that counts as overload, and how long a queue may stand above it.
    ///
    /// `queue_wait` and `queue_interval` as configured, unless requests are slow to serve:
    /// a queue needs some ten requests in it for the server to stay busy when they arrive at
    /// random, so the target is at least the time the server takes for ten (at the capacity
    /// it last showed), and the interval five targets. A server whose handlers take 5 ms
    /// of CPU then aims at a 50 ms queue, not at a 20 ms one it could keep only by idling.
    fn targets(&self) -> (Duration, Duration) {
        let capacity = self.capacity();
        let ten = if capacity > 0.0 {
            Duration::from_secs_f64((10.0 / capacity).min(60.0))
        } else {
            Duration::ZERO
        };
        let target = self.config.queue_wait.max(ten);
        (target, self.config.queue_interval.max(target * 2))
    }

    /// The queue wait at or above which a window that was not overloaded holds its level:
    /// ten requests' worth at the capacity last seen (a queue that is seldom empty: with
    /// random arrivals and even handlers, the server is busy about 95% of the time), at most
    /// half the target. A slow server's target is itself ten requests' worth, so its band
    /// starts at five, about 91% busy. Between the two the level stays where it is: raising it by a step whenever a
    /// window is under the target makes it climb into overload, shed, and climb again, and
    /// every user level the cut sweeps over gets both outcomes.
    fn busy_wait(&self, target: Duration) -> Duration {
        let capacity = self.capacity();
        if capacity <= 0.0 {
            return target;
        }
        Duration::from_secs_f64((10.0 / capacity).min(60.0)).min(target / 2)
    }

    /// Counts the start at `now` of an admitted request of `level` after `wait` in the
    /// queue. The wait of a request that arrived before the level last moved is the old
    /// level's backlog, and is left out of the window's average.
    #[inline]
    pub fn started(&self, level: u32, now: Instant, wait: Duration) {
        self.started_by_level[level.min(LEVELS - 1) as usize].fetch_add(1, Relaxed);
        let arrived_ms = clock::millis(now).saturating_sub(wait.as_millis() as u64);
        if arrived_ms >= self.moved_at.load(Relaxed) {
            self.wait_us.fetch_add(wait.as_micros() as u64, Relaxed);
        } else {
            self.backlog.fetch_add(1, Relaxed);
        }
    }

    /// Counts a sample of the runtime's scheduling lag.
    ///
    /// The lag counted is the least sample over the last two intervals, and this one is in
    /// them: a sample under it lowers it at once. Until the next publication, a load that
    /// ended would otherwise leave its lag on every pickup, and the first fresh requests on
    /// an idle server were dropped as late (`a_sample_on_time_ends_the_lag_at_once`).
    pub fn lagged(&self, lag: Duration) {
        let us = lag.as_micros() as u64;
        self.lag_min.fetch_min(us, Relaxed);
        self.lag_floor.fetch_min(us, Relaxed);
    }

    /// Counts the lag probe's sample at `now` (its lateness beyond the timer's grid). The
    /// first on time after a late one starts a quick look there, which lasts [`IDLE_LOOK`]
    /// while the samples stay on time (see [`tick`](Admission::tick)); a late one makes
    /// the look a full one again. Samples come from one task, one at a time, as ticks do.
    pub(crate) fn sampled(&self, now: Instant, lag: Duration) {
        self.lagged(lag);
        let spared = self.spared.swap(false, Relaxed);
        let on_time = lag < IDLE_LAG;
        let in_a_row = self.was_on_time.swap(on_time, Relaxed) && on_time;
        if !on_time {
            self.free_at.store(0, Relaxed);
            // The first late sample after a spare request started: the look goes on, the
            // worker was busy only with what it would otherwise have idled through.
            // (Restarting it on every spare put off the end of a 5 ms server's overload by
            // tens of milliseconds: its callers' stale-level probes are the requests
            // spared.) A free worker still takes two samples on time in a row.
            if !spared {
                self.idle.store(false, Relaxed);
            }
        } else if self.idle.swap(true, Relaxed) {
            // Only the second of two on time in a row counts as idle time: busy workers that
            // yield often (two of them, or handlers that await) let a sample through on
            // time now and then.
            self.on_time.fetch_add(1, Relaxed);
            if in_a_row {
                self.free_at.store(clock::millis(now) + 1, Relaxed);
            }
        } else {
            self.recent_base.store(self.arrivals.load(Relaxed), Relaxed);
            self.recent_from.store(clock::millis(now), Relaxed);
        }
    }

    /// Takes the least lag sampled since the call before the last as the lag the runtime
    /// shows throughout (the probe calls this every `queue_interval`).
    pub fn publish_lag(&self) {
        let least = self.lag_min.swap(u64::MAX, Relaxed);
        let before = self.lag_before.swap(least, Relaxed);
        let floor = least.min(before);
        self.lag_floor
            .store(if floor == u64::MAX { 0 } else { floor }, Relaxed);
    }

    /// Closes the window if its time is up; and every [`QUICK_LOOK`], while shedding,
    /// closes it early as calm if requests now arrive at less than a quarter of the capacity
    /// last seen: the overload ended (callers drop what the server would refuse, so what still
    /// arrives is what it admits), and admitting again should not wait for the window.
    pub(crate) fn tick(&self, now: Instant) {
        let now_ms = clock::millis(now);
        if now_ms >= self.window_end.load(Relaxed) {
            self.close_window(now_ms, Close::Due);
            return;
        }
        let capacity = self.capacity();
        let from = self.recent_from.load(Relaxed);
        // Long enough for twenty requests at the capacity: with fewer, a look of a slow
        // server can see almost nothing while its load goes on (a look at 200 requests a
        // second expecting ten finds two or fewer about once in 360), and opening every
        // level into that load costs a surge of late drops and most of a second of
        // shedding (in the unit tests' model). With a worker idle throughout, six requests'
        // time: a slow server's queue empties now and then under its load, and the next
        // arrival can be tens of milliseconds away.
        let look = match (capacity > 0.0, self.idle.load(Relaxed)) {
            (false, _) => QUICK_LOOK.as_millis() as u64,
            (true, false) => (20e3 / capacity).clamp(QUICK_LOOK.as_millis() as f64, 1e3) as u64,
            (true, true) => {
                (IDLE_REQUESTS * 1e3 / capacity).max(IDLE_LOOK.as_secs_f64() * 1e3) as u64
            }
        };
        if now_ms < from + look
            || self
                .recent_from
                .compare_exchange(from, now_ms, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let total = self.arrivals.load(Relaxed);
        let arrived = total.saturating_sub(self.recent_base.swap(total, Relaxed));
        let seconds = (now_ms - from) as f64 / 1e3;
        if self.level() < LEVELS
            && !self.pinned.load(Relaxed)
            && capacity > 0.0
            && (arrived as f64) < QUICK_LOOK_SHARE * capacity * seconds
        {
            self.close_window(now_ms, Close::Calm);
        }
    }

    /// Closes the window if it is still due (or `calm`: the load went away) and no other
    /// thread is closing it.
    #[cold]
    fn close_window(&self, now_ms: u64, why: Close) -> Option<WindowReport> {
        // (A panic while closing poisons the lock; windows must go on closing after it.)
        let _closing = match self.closing.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let due = why != Close::Due || self.is_due(now_ms);
        if !due {
            return None;
        }
        let calm = why == Close::Calm;
        let began = self.window_start.swap(now_ms, Relaxed);
        let length = Duration::from_millis(now_ms.saturating_sub(began));
        let arrivals = self.arrivals.load(Relaxed);
        let requests = arrivals.saturating_sub(self.window_base.swap(arrivals, Relaxed));
        let take = |counts: &[AtomicU32]| -> Vec<u32> {
            counts.iter().map(|c| c.swap(0, Relaxed)).collect()
        };
        let counts = ByLevel {
            arrived: take(&self.by_level),
            started: take(&self.started_by_level),
        };
        let started = total(&counts.started);
        // Requests run on a free worker though their level was shed are work the server
        // did (its capacity), but neither the level's demand nor a measure of its queue.
        let spare = self.spare.swap(0, Relaxed);
        let waited = self.wait_us.swap(0, Relaxed);
        let measured = started.saturating_sub(self.backlog.swap(0, Relaxed));
        let late = u64::from(self.late.swap(0, Relaxed));
        let on_time = self.on_time.swap(0, Relaxed);
        // A worker idle for a twentieth of the window (by the lag probe) while requests were
        // dropped late: arrivals come in bursts that a queue capped by the callers'
        // deadlines cannot hold (a server of 20 ms requests whose callers wait 100 ms holds
        // two), so some are dropped and some gaps stay empty. Late drops cost the server
        // nothing; shedding for them idles it more and holding keeps the gaps. Such a window
        // is not overloaded by its late drops, and the level may rise into the gaps. (At 20
        // ms a request with 100 ms deadlines, the level hovered where arrivals matched the
        // capacity, and the worker idled a tenth of the time: 69-82% goodput.)
        let capacity_now = self.capacity();
        // A spare request ran where the worker would have idled: its time is idle time the
        // probe could not see (it made the samples late).
        let spare_time = if capacity_now > 0.0 {
            Duration::from_secs_f64(
                spare as f64 * f64::from(self.workers.load(Relaxed)) / capacity_now,
            )
        } else {
            Duration::ZERO
        };
        let idle = PROBE_EVERY * on_time + spare_time;
        let idling = length.as_millis() as u64 >= MIN_WINDOW_MS
            && idle * IDLE_SHARE_INVERSE > length
            // And it started less than its capacity: two workers may show one idle while
            // the other's connection holds the queue.
            && (started as f64) < 0.95 * capacity_now * length.as_secs_f64();
        let queue_wait = Duration::from_micros(
            waited.checked_div(measured).unwrap_or(0) + self.lag_floor.load(Relaxed),
        );
        // Requests dropped late are the queue standing: past a few percent of what was
        // picked up, shed levels. Fewer keep the server's queue from ever running dry (it
        // is busy all the time), and the levels are left where they are.
        let picked = started + late;
        let late_share = late as f64 / picked.max(1) as f64;
        let (target, _) = self.targets();
        let overloaded =
            !calm && (queue_wait > target || (late_share > LATE_SHARE_SHEDS && !idling));
        let before = self.level.load(Relaxed);
        // Where one level is a small part of the load (its arrivals at most 2% of the
        // starts: many light callers), a level that fits can be found and kept, and the
        // settling rules below apply. Where it is more (a few heavy callers per level), no
        // level fits, the level must alternate between two, and short windows and whole
        // steps do that faster.
        let next_down = highest_busy_level(&counts.arrived, before);
        let fine = u64::from(counts.arrived[next_down as usize]) * 50 <= started;
        // Settling: the queue is busy (within the band it is held in), or the server near
        // its capacity, or the queue just over the target with few late drops (a window a
        // surge of late drops ended early shows a few percent when the queue is a level too
        // long; an overload of a tenth more than the server can do shows more).
        let busy_wait = self.busy_wait(target);
        // (A window whose waits were all the old level's backlog, or an idle one, measured
        // nothing: its wait is the scheduling lag alone.)
        let busy = fine && measured > 0 && queue_wait >= busy_wait;
        let near = fine
            && capacity_now > 0.0
            && 0.9 * capacity_now * length.as_secs_f64() <= started as f64;
        let slight =
            fine && overloaded && queue_wait <= 2 * target && late_share <= LATE_SHARE_SLIGHT;
        let hold = !calm && !overloaded && ((late_share > LATE_SHARE_HOLDS && !idling) || busy);
        // (Nor does a window that began while the queue a shedding of several levels left
        // was still draining: its waits are that queue's, and holding on them for a long
        // window would keep the level where the shedding overshot.)
        let fresh = !self.shed_far.load(Relaxed) || began >= self.settle_until.load(Relaxed);
        let steady = !calm && fresh && measured > 0 && (slight || (!overloaded && (busy || near)));
        let was_steady = self.steady.swap(steady, Relaxed);
        // Settling, windows run longer: up to `window_requests` times [`STEADY_WINDOWS`],
        // and while the queue is in its band that many times `window` too (a slow server's
        // second holds a few hundred requests, whose count varies by several percent at
        // random). A level still closing in from below keeps its second: a slow server
        // would take minutes to creep up on windows of three.
        let window_ms = self.config.window.as_millis().max(1) as u64;
        let window_ms = if steady && (busy || slight) {
            window_ms.saturating_mul(STEADY_WINDOWS)
        } else {
            window_ms
        };
        self.window_end
            .store(now_ms.saturating_add(window_ms), Relaxed);
        let settled = was_steady && steady && (slight || busy);
        self.overloaded.store(overloaded, Relaxed);
        let seconds = length.as_secs_f64().max(1e-3);
        let mut capacity = capacity_now;
        // After shedding, the queue the old level built takes about its wait to drain, and
        // requests that arrive meanwhile wait behind it: shedding again before it has drained
        // would shed for the old level's queue twice, into priorities that fit.
        let draining = now_ms < self.settle_until.load(Relaxed);
        // Settled and just over the target, a queue that is already shrinking is left to
        // drain: shedding a level more for it would overshoot by one. (Compared with the
        // last window that measured a wait.)
        let wait_us = queue_wait.as_micros() as u64;
        let last_wait = if measured > 0 {
            self.last_wait.swap(wait_us, Relaxed)
        } else {
            self.last_wait.load(Relaxed)
        };
        let falling = wait_us < last_wait;
        // And near the capacity, a queue that grew since the last window is the last step
        // up still taking effect: the level waits for it before it rises again. (Below half
        // the busy wait the queue is near empty, and its ups and downs are noise.)
        let rising = was_steady && near && wait_us > last_wait && queue_wait * 2 >= busy_wait;
        // Settled, a queue past the edge of its band (twice the busy wait, at least half
        // the target) and not shrinking takes a level off before it reaches the target,
        // where requests would be dropped late: those drops fall on users at random, on both
        // sides of the cut. (A slow server's band is narrow: ten requests' worth is already
        // the target, and it leaves this to the target.)
        let edge = (busy_wait * 2).clamp(target / 2, target);
        let edging = settled && before < LEVELS && !overloaded && queue_wait > edge && !falling;
        // Just over: a fifth of the step fewer than arrived below the level. The few late
        // drops are in the arrivals; shedding them as well would take several levels off
        // for a queue one level too long.
        let trim = || {
            let arrived = total(&counts.arrived[..before as usize]);
            Pressure::Overloaded {
                keep: (1.0 - self.config.shed_step / 5.0) * arrived as f64 / started.max(1) as f64,
            }
        };
        let pressure = if overloaded && (draining || (settled && slight && falling)) {
            Pressure::Hold
        } else if overloaded {
            // Overloaded, the server starts what it can: that is its capacity. (A window can
            // be overloaded on average and idle at its end, its queue drained: a lower rate
            // only wears the estimate down, by 5% a window.)
            let rate = (started + spare) as f64 / seconds;
            capacity = rate.max(capacity * 0.95);
            self.capacity.store(capacity.to_bits(), Relaxed);
            if slight {
                trim()
            } else {
                // Admit about what the server started (its capacity), less what the queue
                // holds over the target, to drain within half a second (a short window must
                // not shed for all of it at once). Requests dropped late are in the arrivals
                // the levels are counted by, so they are shed too.
                let excess = queue_wait.saturating_sub(target).as_secs_f64();
                let keep = 1.0 - excess / seconds.max(DRAIN_WITHIN);
                Pressure::Overloaded {
                    keep: keep.min(1.0 - self.config.shed_step),
                }
            }
        } else if edging {
            trim()
        } else if hold || rising {
            Pressure::Hold
        } else {
            Pressure::Calm {
                // Under 90% of the capacity: what 95% would have started in this window beyond
                // what did. Above, a quarter of what 99% would have: the estimate of the
                // capacity and the window's starts are each a few percent off, and near the
                // top the level closes in rather than jumps.
                headroom: if near {
                    ((0.99 * capacity * seconds - started as f64) / 4.0).max(0.0) as u64
                } else {
                    (0.95 * capacity * seconds - started as f64).max(0.0) as u64
                },
                // Near the capacity, half the step: the level creeps toward the queue's band.
                step: if near {
                    self.config.admit_step / 2.0
                } else {
                    self.config.admit_step
                },
            }
        };
        // The load went away: everything, at once. Should it come back, the requests that
        // wait too long are dropped at pickup until the next window sheds levels again.
        let level = if calm {
            LEVELS
        } else if settled {
            // Settled (busy or just over, so never calm), the level goes down one at a time,
            // past levels nobody uses: no level may fit exactly (each is a slice of the
            // load), and alternating between two neighbours gives only the users of one
            // level both outcomes.
            next_level(&counts, before, pressure).max(next_down.max(1))
        } else {
            next_level(&counts, before, pressure)
        };
        let report = WindowReport {
            requests,
            started,
            spare,
            late,
            length,
            queue_wait,
            overloaded,
            level: if self.pinned.load(Relaxed) {
                before
            } else {
                level
            },
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some(report);
        }
        if self.pinned.load(Relaxed) {
            return Some(report);
        }
        self.level.store(level, Relaxed);
        if level != before {
            self.moved_at.store(now_ms, Relaxed);
        }
        if level < before {
            let drain = queue_wait.as_millis() as u64 + MIN_WINDOW_MS;
            self.settle_until.store(now_ms + drain, Relaxed);
            self.shed_far.store(before - level > 1, Relaxed);
        }
        if level != before && (level == LEVELS || before == LEVELS) {
            tracing::info!(
                queue_wait_ms = queue_wait.as_secs_f64() * 1e3,
                level,
                "{}",
                if level < before {
                    "overloaded: shedding the lowest priorities"
                } else {
                    "no longer overloaded: admitting everything"
                }
            );
        }
        Some(report)
    }

    /// What the last window found (`None` before the first one closed).
    pub fn last_window(&self) -> Option<WindowReport> {
        self.last.lock().ok().and_then(|l| *l)
    }

    /// Starts the probe that measures the runtime's scheduling lag (once per server; it stops
    /// when the server is dropped).
    pub(crate) fn start_probe(self: &Arc<Admission>) {
        if self.probed.swap(true, Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let workers = runtime.metrics().num_workers();
        self.workers.store(workers.max(1) as u32, Relaxed);
        let admission = Arc::downgrade(self);
        tokio::spawn(probe(admission));
    }
}

/// How often the probe samples the scheduling lag.
const PROBE_EVERY: Duration = Duration::from_millis(5);

async fn probe(admission: Weak<Admission>) {
    let mut due = tokio::time::Instant::now() + PROBE_EVERY;
    let mut published = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(due).await;
        let Some(admission) = admission.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        // The timer fires on a millisecond grid: lateness below that is not lag.
        let lag = now.saturating_duration_since(due);
        admission.sampled(now.into_std(), lag.saturating_sub(Duration::from_millis(1)));
        if now.duration_since(published) >= admission.config.queue_interval {
            admission.publish_lag();
            published = now;
        }
        // Windows end on time without traffic too, so that an idle server recovers.
        admission.tick(now.into_std());
        due = now + PROBE_EVERY;
    }
}

/// The highest level below `level` that had arrivals in the window (0 when none did):
/// shedding it is the least step down that changes anything.
fn highest_busy_level(arrived: &[u32], level: u32) -> u32 {
    (0..level.min(arrived.len() as u32))
        .rev()
        .find(|&l| arrived[l as usize] > 0)
        .unwrap_or(0)
}

/// The requests of a run of levels.
fn total(counts: &[u32]) -> u64 {
    counts.iter().map(|&c| u64::from(c)).sum()
}

/// How a window found the server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Pressure {
    /// Queue wait over the threshold (or, settled, past the edge of its band and not
    /// shrinking).
    Overloaded {
        /// The share of the window's starts to admit, counted in arrivals below the level:
        /// under 1 for the queue's excess to drain, over 1 when late drops are in the
        /// arrivals and should not be shed again.
        keep: f64,
    },
    /// Within the band the queue is held in, or a few requests dropped late (the queue is
    /// short and never empty), or the last step still taking effect: where the level
    /// should stay.
    Hold,
    /// Under it.
    Calm {
        /// Requests more the window could have started toward the capacity last seen
        /// overloaded (0 when never overloaded).
        headroom: u64,
        /// The share of the admitted requests to admit more of at least.
        step: f64,
    },
}

/// A window's requests by level: those that arrived (admitted or not), and those that
/// started.
pub(crate) struct ByLevel {
    pub(crate) arrived: Vec<u32>,
    pub(crate) started: Vec<u32>,
}

/// The admission level after `window`, with `level` admitted during it.
///
/// - **Overloaded**: lowered until what arrived below it is about `keep` times what the
///   server started in the window (at least half). The window decides `keep`: `shed_step`
///   (5%) less or what drains the queue's excess over the threshold within half a second,
///   or, just over the target, a fifth of the step less than arrived. What started is what
///   the server could do; arrivals also count requests that expired waiting, and shedding by
///   them would overshoot. A server offered five times what it can do gets to its level in a
///   window or two instead of thirty, and its queue drains instead of staying as long as the
///   deadline. The last non-critical level with arrivals is kept (the per-request check
///   trims it).
/// - **Calm**: raised until about `step` (`admit_step`, 1%, or half that near the capacity)
///   more would have got in, or by the `headroom` the window decides if that is more: a
///   server near its capacity creeps up, one that shed too much or whose load went away
///   admits again within a window or two. Callers drop what the server would refuse, so the
///   levels above the admission level show little demand here; each counts as at least the
///   average demand of the admitted levels.
///
/// Always at least 1.
pub(crate) fn next_level(window: &ByLevel, level: u32, pressure: Pressure) -> u32 {
    let top = window.arrived.len() as u32;
    let level = level.clamp(1, top);
    match pressure {
        Pressure::Hold => level,
        Pressure::Overloaded { keep } => {
            let started = total(&window.started[..level as usize]);
            if started == 0 {
                return level;
            }
            // Admit about `keep` of what the server could start, counted in arrivals: what
            // started is skewed toward the priorities the per-request check spares.
            let keep = keep.max(0.5);
            let target = (started as f64 * keep) as u64;
            // One business priority at a time: shedding stops at the bottom of the current
            // one, and goes into the next only if the following window is still
            // overloaded. A queue that is still draining must not take critical requests
            // down with the rest.
            let floor = ((level - 1) / USER_LEVELS * USER_LEVELS).max(1);
            let mut next = level;
            let mut kept = total(&window.arrived[..level as usize]);
            while next > floor && kept > target {
                let without = kept.saturating_sub(u64::from(window.arrived[next as usize - 1]));
                // A level that carries much of the demand (few callers, each calling again
                // as soon as it is answered) is not shed if that would leave the server less
                // than half of what it can do: the per-request check trims its excess. The
                // first step sheds one anyway, unless it is the last level anyone used:
                // shedding that leaves the server idle, its next quick look sees the load
                // gone and opens every level, and the whole load comes back at once (a
                // closed loop of 2,000 callers, 15 to a level, lost a fifth of its goodput
                // that way). Critical levels excepted: the per-request check lets their
                // requests wait up to half their deadline, so it would not trim them.
                let last = without == 0 && next > USER_LEVELS;
                if last || (without < target / 2 && next < level) {
                    break;
                }
                next -= 1;
                kept = without;
            }
            next
        }
        Pressure::Calm { headroom, step } => {
            if level == top {
                return top;
            }
            let below = &window.arrived[..level as usize];
            let admitted = total(below);
            let busy = below.iter().filter(|&&c| c > 0).count().max(1) as u64;
            let per_level = (admitted / busy).max(1);
            let target = ((admitted as f64 * step).ceil() as u64)
                .max(headroom)
                .max(1);
            let mut next = level;
            let mut added = 0;
            while next < top && added < target {
                let demand = u64::from(window.arrived[next as usize]).max(per_level);
                // A level whose own demand is far over the room there is (callers that do
                // not drop what the server sheds, a flood) stays shed: opening it would
                // only overload the server again. One a little over it opens: the room
                // comes from a capacity estimate that windows which were overloaded without
                // being saturated wear down, and a level it just misses would stay shed for
                // good.
                let room = target - added;
                if demand > 2 * per_level && demand > room + room / 4 {
                    break;
                }
                added += demand;
                next += 1;
            }
            next
        }
    }
}

/// The overload control of the first monitored server built in the process, whose state
/// the process's `/metrics` shows as gauges.
pub(crate) fn first_monitored() -> &'static std::sync::OnceLock<std::sync::Weak<Admission>> {
    static FIRST: std::sync::OnceLock<std::sync::Weak<Admission>> = std::sync::OnceLock::new();
    &FIRST
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::priority;

    fn uniform(per_level: u32) -> Vec<u32> {
        vec![per_level; LEVELS as usize]
    }

    /// The next level after a window where `arrived` came and `started` started.
    fn next(arrived: &[u32], started: &[u32], level: u32, pressure: Pressure) -> u32 {
        let window = ByLevel {
            arrived: arrived.to_vec(),
            started: started.to_vec(),
        };
        next_level(&window, level, pressure)
    }

    const OVER: Pressure = Pressure::Overloaded { keep: 0.9 };

    const CALM: Pressure = Pressure::Calm {
        headroom: 0,
        step: 0.01,
    };

    #[test]
    fn overload_sheds_five_percent_of_what_started_or_what_drains_the_queue() {
        let counts = uniform(10);
        // All 512 levels started 10: 5% of 5120 is 256, the top 26 levels.
        let slightly = Pressure::Overloaded { keep: 0.95 };
        assert_eq!(next(&counts, &counts, LEVELS, slightly), LEVELS - 26);
        // Just over the target (a fifth of the step): 1%, six levels.
        let just = Pressure::Overloaded { keep: 0.99 };
        assert_eq!(next(&counts, &counts, LEVELS, just), LEVELS - 6);
        // The queue's excess needs a tenth less to drain: 52 levels.
        assert_eq!(next(&counts, &counts, LEVELS, OVER), LEVELS - 52);
        // Far over: half at most, but one business priority at a time: the 128 levels of
        // the lowest.
        let far = Pressure::Overloaded { keep: 0.01 };
        assert_eq!(next(&counts, &counts, LEVELS, far), LEVELS - 128);
        assert_eq!(next(&counts, &counts, LEVELS - 128, far), LEVELS - 256);
        // Only half of what arrived started (the rest was dropped, or expired): admit about
        // what started, in arrivals.
        let mut started = counts.clone();
        started[256..].fill(0);
        assert_eq!(next(&counts, &started, 300, slightly), 256);
        assert_eq!(next(&counts, &started, 256, slightly), 256 - 13);
        // Repeated overload keeps shedding, never below one level.
        let mut level = LEVELS;
        for _ in 0..1_000 {
            level = next(&counts, &counts, level, OVER);
        }
        assert_eq!(level, 1);
    }

    #[test]
    fn calm_windows_admit_one_percent_more_or_up_to_the_capacity_seen() {
        let counts = uniform(10);
        // 256 levels admitted: 2560 requests; 1% is 26, three levels of 10.
        assert_eq!(next(&counts, &counts, 256, CALM), 259);
        // Callers dropped the rest, so the levels above show nothing: each still counts as
        // the average demand of the admitted ones.
        let mut dropped_above = uniform(10);
        dropped_above[256..].fill(0);
        assert_eq!(next(&dropped_above, &counts, 256, CALM), 259);
        assert_eq!(next(&counts, &counts, LEVELS, CALM), LEVELS);
        // Far below the capacity seen: up by the headroom at once (1000 requests more, at
        // 10 per level).
        let under = Pressure::Calm {
            headroom: 1_000,
            step: 0.01,
        };
        assert_eq!(next(&dropped_above, &counts, 256, under), 356);
        let idle = Pressure::Calm {
            headroom: 100_000,
            step: 0.01,
        };
        assert_eq!(next(&dropped_above, &counts, 256, idle), LEVELS);
    }

    /// Strangers each within their share rank at one level, a flood over its share at the
    /// one below it, and nothing arrives anywhere else. Calm, the strangers' level opens
    /// even when its demand is a little over the room the capacity estimate leaves (an
    /// estimate worn down by windows that were not saturated must not lock them out); the
    /// flood's level, far over the room, stays shed.
    #[test]
    fn calm_opens_a_level_a_little_over_the_room_but_not_a_flood() {
        let mut counts = vec![0; LEVELS as usize];
        counts[382] = 185;
        counts[383] = 1_300;
        let room = Pressure::Calm {
            headroom: 175,
            step: 0.01,
        };
        assert_eq!(next(&counts, &counts, 382, room), 383);
        assert_eq!(next(&counts, &counts, 383, room), 383);
        let roomy = Pressure::Calm {
            headroom: 1_000,
            step: 0.01,
        };
        assert_eq!(
            next(&counts, &counts, 383, roomy),
            383,
            "1,300 is far over 1,000"
        );
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
            level = next(&counts, &counts, level, OVER);
            steps += 1;
        }
        // Each step sheds at least one low level; the critical ones stay admitted.
        assert!(steps <= 110, "{steps}");
        assert!(level >= 10);
    }

    /// Overloaded by the one level anyone used (a closed loop's few heavy callers to a level),
    /// the server keeps it and lets the per-request check trim its excess: shedding it would
    /// leave the server idle. With a busier level below it, or at a critical level, the step
    /// sheds it as before.
    #[test]
    fn the_last_level_anyone_used_is_not_shed() {
        let mut arrived = vec![0; LEVELS as usize];
        let mut started = vec![0; LEVELS as usize];
        arrived[300] = 100;
        started[300] = 60;
        assert_eq!(next(&arrived, &started, 301, OVER), 301);
        assert_eq!(
            next(&arrived, &started, 320, OVER),
            301,
            "empty levels above go"
        );
        // A window of two starts (slow handlers, a surge closing it early) keeps it too.
        let mut two = vec![0; LEVELS as usize];
        two[300] = 2;
        assert_eq!(next(&arrived, &two, 301, OVER), 301);
        // A critical level is shed as before: its requests may wait half their deadline,
        // which the per-request check would not trim.
        let mut critical = vec![0; LEVELS as usize];
        critical[60] = 100;
        assert_eq!(next(&critical, &critical, 61, OVER), 60);
        arrived[290] = 100;
        started[290] = 60;
        assert_eq!(next(&arrived, &started, 301, OVER), 300);
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
        assert_eq!(
            admission.admit(LEVELS - 1, now, Duration::ZERO, Duration::MAX),
            Verdict::Admit
        );
        for i in 0..100 {
            let level = LEVELS - 1 - (i % 10);
            assert_eq!(
                admission.admit(level, now, Duration::ZERO, Duration::MAX),
                Verdict::Admit
            );
            admission.started(level, now, Duration::from_millis(50));
        }
        // 99 started (the 100th closed the window), about 10 at each of the top ten levels.
        // The queue's excess over the threshold (30 ms), to drain within half a second:
        // 6% less, the top level.
        assert_eq!(
            admission.level(),
            LEVELS - 1,
            "the 100th closed an overloaded window"
        );
        assert!(admission.is_overloaded());
        assert!(
            admission.admit(LEVELS - 1, now, Duration::ZERO, Duration::MAX) == Verdict::Shed,
            "the lowest levels are refused now"
        );
        // Windows without waiting admit again, at least a level each.
        for _ in 0..5 {
            for _ in 0..100 {
                admission.admit(0, now, Duration::ZERO, Duration::MAX);
                admission.started(0, now, Duration::ZERO);
            }
            assert!(!admission.is_overloaded());
        }
        assert_eq!(admission.level(), LEVELS);
    }

    /// CoDel's rule is about pickups: a queue stands when every pickup for an interval waited
    /// over the target. A server that was idle (no pickups) and then picks up one request
    /// that waited a little over the target has no standing queue; pickups over the target
    /// for a whole interval do.
    #[test]
    fn an_idle_spell_is_not_a_standing_queue() {
        let admission = Admission::new(AdmissionConfig::default());
        // A business level: critical ones may wait up to half their deadline.
        let level = LEVELS - 1;
        let t0 = clock::base_instant() + Duration::from_secs(10);
        let budget = Duration::from_secs(1);
        let (short, over) = (Duration::from_millis(1), Duration::from_millis(30));
        assert_eq!(admission.admit(level, t0, short, budget), Verdict::Admit);
        // A second of nothing, then a request that waited 30 ms (the target is 20 ms).
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(admission.admit(level, t1, over, budget), Verdict::Admit);
        // Still over the target at every pickup, within the interval (100 ms): a burst.
        assert_eq!(
            admission.admit(level, t1 + Duration::from_millis(60), over, budget),
            Verdict::Admit
        );
        // Over it for longer than the interval: standing, and dropped.
        assert_eq!(
            admission.admit(level, t1 + Duration::from_millis(120), over, budget),
            Verdict::Late
        );
        // A spell without pickups over the target (idle, or an empty queue), and the next
        // over it starts a new interval.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(admission.admit(level, t2, over, budget), Verdict::Admit);
        assert_eq!(
            admission.admit(level, t2 + Duration::from_millis(90), over, budget),
            Verdict::Admit
        );
        // One pickup under the target, and the next over it starts a new interval.
        let t3 = t2 + Duration::from_millis(95);
        assert_eq!(admission.admit(level, t3, short, budget), Verdict::Admit);
        assert_eq!(
            admission.admit(level, t3 + Duration::from_millis(60), over, budget),
            Verdict::Admit
        );
    }

    /// A slow server's target is ten requests' worth (200 ms at 50 a second): no licence to
    /// run a request that waited past half its deadline. On the 20 ms, 100 ms deadline
    /// points of the overload sweep, such requests made most of the server's work late.
    #[test]
    fn within_a_slow_servers_target_no_request_runs_after_half_its_deadline() {
        let admission = Admission::new(AdmissionConfig::default());
        admission.capacity.store(50f64.to_bits(), Relaxed);
        assert_eq!(admission.targets().0, Duration::from_millis(200));
        let ms = Duration::from_millis;
        let t0 = clock::base_instant() + Duration::from_secs(10);
        for level in [LEVELS - 1, 0] {
            assert_eq!(admission.admit(level, t0, ms(45), ms(100)), Verdict::Admit);
            assert_eq!(admission.admit(level, t0, ms(60), ms(100)), Verdict::Late);
            // The same wait with a longer deadline is a queue within its target.
            assert_eq!(admission.admit(level, t0, ms(60), ms(2000)), Verdict::Admit);
        }
        // Within the configured queue wait (20 ms), the deadline is the handler's to judge.
        assert_eq!(
            admission.admit(LEVELS - 1, t0, ms(15), ms(20)),
            Verdict::Admit
        );
    }

    /// After an overload, the level comes back within a quick look of the load ending, not
    /// at the end of a window; while the load goes on, quick looks leave it alone.
    #[test]
    fn a_shedding_server_admits_again_within_a_quick_look_of_the_load_ending() {
        let admission = Admission::new(AdmissionConfig {
            window: Duration::from_secs(3600),
            window_requests: 1_000_000,
            ..AdmissionConfig::default()
        });
        let ms = |n: u64| Duration::from_millis(n);
        let t0 = Instant::now();
        admission.admit(0, t0, Duration::ZERO, Duration::MAX); // opens the first window
        admission.tick(t0); // starts the first look
        // 1,000 requests over a second, each having waited 50 ms: overloaded, at about
        // 1,000 a second.
        let mut at = t0;
        for i in 0..1_000u32 {
            at = t0 + ms(u64::from(i));
            let level = LEVELS - 1 - (i % 100);
            admission.admit(level, at, Duration::ZERO, Duration::MAX);
            admission.started(level, at, ms(50));
            admission.tick(at);
        }
        assert!(admission.is_overloaded());
        let shedding = admission.level();
        assert!(shedding < LEVELS);
        // The load goes on at what the server admits (the callers drop the rest): 60
        // requests per 50 ms look, above a quarter of the capacity (and too few to end a
        // window).
        // The level stays.
        for look in 1..=3 {
            for i in 0..60 {
                admission.admit(
                    0,
                    at + ms(look * 50 - 50 + i * 5 / 6),
                    Duration::ZERO,
                    Duration::MAX,
                );
            }
            admission.tick(at + ms(look * 50 + 1));
            assert_eq!(admission.level(), shedding, "look {look}");
        }
        // It ends: the next look without arrivals admits everything, at once.
        let end = at + ms(3 * 50 + 1);
        admission.tick(end + ms(QUICK_LOOK.as_millis() as u64 + 1));
        assert!(!admission.is_overloaded());
        assert_eq!(admission.level(), LEVELS);
    }

    /// A fresh server on the policy clock's grid, its first window opened.
    fn opened() -> (Admission, Instant) {
        let admission = Admission::new(AdmissionConfig::default());
        let t0 = clock::base_instant() + Duration::from_secs(1);
        admission.admit(0, t0, Duration::ZERO, Duration::MAX);
        admission.tick(t0);
        (admission, t0)
    }

    /// A second of overload from `start`: 100 requests over 50 user levels, each started
    /// after 300 ms in the queue. The window closes overloaded, at about 100 requests a
    /// second, and the server sheds; returns when.
    fn overload_second(admission: &Admission, start: Instant) -> Instant {
        let ms = Duration::from_millis;
        for i in 0..100u64 {
            let at = start + ms(i * 10);
            let level = LEVELS - 1 - (i as u32 % 50);
            admission.admit(level, at, Duration::ZERO, Duration::MAX);
            admission.started(level, at, ms(300));
            admission.tick(at);
        }
        let end = start + ms(1_001);
        admission.tick(end);
        assert!(admission.is_overloaded());
        assert!(admission.level() < LEVELS);
        let capacity = admission.capacity();
        assert!((90.0..110.0).contains(&capacity), "{capacity}");
        end
    }

    /// `samples` probe samples from `from`, every 5 ms and on time, with a request of the
    /// lowest level arriving every 10 ms (the capacity of [`overload_second`]'s server).
    fn at_capacity_on_time(admission: &Admission, from: Instant, samples: u64) {
        for k in 1..=samples {
            let at = from + Duration::from_millis(5 * k);
            if k % 2 == 0 {
                admission.admit(LEVELS - 1, at, Duration::ZERO, Duration::MAX);
            }
            admission.sampled(at, Duration::ZERO);
            admission.tick(at);
        }
    }

    /// A slow server (about 100 requests a second), shedding: its quick look is 200 ms long,
    /// but probe samples on time for six requests' time with nothing arriving end the
    /// overload. Late samples (a worker busy with the queue) or arrivals at the capacity do
    /// not.
    #[test]
    fn a_shedding_server_with_a_worker_idle_and_little_arriving_admits_everything() {
        let ms = |n: u64| Duration::from_millis(n);
        let overloaded = || {
            let (admission, t0) = opened();
            let end = overload_second(&admission, t0);
            (admission, end)
        };
        // Idle and nothing arriving: admitted again after six requests' time (60 ms).
        let (admission, end) = overloaded();
        let shedding = admission.level();
        let mut opened = None;
        for k in 1..=20u64 {
            let at = end + ms(5 * k);
            admission.sampled(at, Duration::ZERO);
            admission.tick(at);
            if admission.level() == LEVELS {
                opened = Some(5 * k);
                break;
            }
            assert_eq!(admission.level(), shedding, "sample {k}");
        }
        let opened = opened.expect("idle and nothing arriving: admitted again");
        assert!((60..=75).contains(&opened), "after {opened} ms");

        // Busy (every sample late) and nothing arriving: still shedding after 100 ms, until
        // the quick look.
        let (admission, end) = overloaded();
        for k in 1..=20u64 {
            let at = end + ms(5 * k);
            admission.sampled(at, ms(4));
            admission.tick(at);
        }
        assert_eq!(admission.level(), shedding, "busy: no idle spell");

        // Idle but arrivals at the capacity (a request every 10 ms): still shedding.
        let (admission, end) = overloaded();
        at_capacity_on_time(&admission, end, 20);
        assert_eq!(admission.level(), shedding, "arrivals at the capacity");
    }

    /// A slow server that sheds runs a request that finds its worker free (the probe's last
    /// two samples on time, nothing in its handler, the request read as it was picked
    /// up): shedding it would idle the worker. Each pair of samples lets one through. A busy
    /// worker, a request that waited, a sample too long ago, a pinned level, an unknown
    /// capacity or a fast server (where the probe cannot tell) shed it.
    #[test]
    fn a_slow_server_runs_a_shed_request_that_finds_a_worker_free() {
        let ms = |n: u64| Duration::from_millis(n);
        let us = Duration::from_micros;
        let (admission, t0) = opened();
        let end = overload_second(&admission, t0);
        let free = |at: u64| {
            admission.sampled(end + ms(at), Duration::ZERO);
            admission.sampled(end + ms(at + 5), Duration::ZERO);
        };
        // As the router asks: a request the level sheds, then whether a worker is free.
        let spare = |at: u64, waited: Duration, running: usize| {
            let now = end + ms(at);
            assert_eq!(
                admission.admit(LEVELS - 1, now, waited, Duration::MAX),
                Verdict::Shed
            );
            let spared = admission.spare(now, waited, running);
            if spared {
                admission.started_spare();
            }
            spared
        };
        assert!(!spare(0, Duration::ZERO, 0), "no sample yet");
        admission.sampled(end + ms(5), Duration::ZERO);
        assert!(
            !spare(5, Duration::ZERO, 0),
            "one sample on time is not enough"
        );
        admission.sampled(end + ms(10), Duration::ZERO);
        assert!(!spare(10, us(500), 0), "it waited");
        assert!(!spare(10, Duration::ZERO, 1), "the worker runs a handler");
        assert!(!spare(17, Duration::ZERO, 0), "the sample is too old");
        assert!(spare(16, us(499), 0), "free");
        assert!(!spare(16, Duration::ZERO, 0), "the free worker is taken");
        // A late sample: busy; then one on time is not enough.
        free(20);
        admission.sampled(end + ms(30), ms(4));
        assert!(!spare(30, Duration::ZERO, 0), "busy");
        admission.sampled(end + ms(35), Duration::ZERO);
        assert!(
            !spare(35, Duration::ZERO, 0),
            "one on time after a late one"
        );
        free(40);
        admission.pin(Some(admission.level()));
        assert!(!spare(45, Duration::ZERO, 0), "pinned");
        admission.pin(None);
        // A fast server (a request under 2 ms of a worker): the level alone decides...
        admission.capacity.store(1_000f64.to_bits(), Relaxed);
        assert!(!spare(45, Duration::ZERO, 0), "fast");
        // ... unless it has workers enough that each request is 2 ms of one.
        admission.workers.store(2, Relaxed);
        assert!(!spare(45, Duration::ZERO, 2), "both workers run handlers");
        assert!(spare(45, Duration::ZERO, 1), "two workers, one free");
        free(50);
        admission.capacity.store(0f64.to_bits(), Relaxed);
        assert!(!spare(55, Duration::ZERO, 0), "no capacity seen");
        // Spares count toward the capacity, not toward the level's starts: a fresh server's
        // overloaded window that started 10 requests of its levels and ran 2 spares in 100
        // ms saw 120 a second.
        let (admission, t0) = opened();
        for i in 0..10 {
            admission.started(0, t0 + ms(1 + i), ms(300));
        }
        admission.started_spare();
        admission.started_spare();
        let report = admission.close_window(clock::millis(t0 + ms(100)), Close::Surge);
        let report = report.expect("closed");
        assert!(report.overloaded);
        assert_eq!((report.started, report.spare), (10, 2));
        let capacity = admission.capacity();
        assert!((119.0..=121.0).contains(&capacity), "{capacity}");
    }

    /// A spare request's run makes the probe's next sample late, but the idle look goes on:
    /// the worker ran only what it would have idled through. The overload ends six
    /// requests' time after the look began, as with nothing spared.
    #[test]
    fn a_spare_request_does_not_restart_the_idle_look() {
        let ms = |n: u64| Duration::from_millis(n);
        let (admission, t0) = opened();
        let end = overload_second(&admission, t0);
        let shedding = admission.level();
        admission.sampled(end + ms(5), Duration::ZERO);
        admission.sampled(end + ms(10), Duration::ZERO);
        let at = end + ms(11);
        assert_eq!(
            admission.admit(LEVELS - 1, at, Duration::ZERO, Duration::MAX),
            Verdict::Shed
        );
        assert!(admission.spare(at, Duration::ZERO, 0));
        admission.started_spare();
        // Its 10 ms run: the sample due at 15 ms comes at 21.
        admission.sampled(end + ms(21), ms(5));
        admission.tick(end + ms(21));
        let mut opened = None;
        for k in 1..=20u64 {
            let at = end + ms(21 + 5 * k);
            admission.sampled(at, Duration::ZERO);
            // The worker is free again after two samples on time in a row, not one.
            if k <= 2 {
                assert_eq!(admission.spare(at, Duration::ZERO, 0), k == 2, "sample {k}");
            }
            admission.tick(at);
            if admission.level() == LEVELS {
                opened = Some(21 + 5 * k);
                break;
            }
            assert_eq!(admission.level(), shedding);
        }
        let opened = opened.expect("admitted again");
        assert!((65..=75).contains(&opened), "after {opened} ms");
    }

    /// A short look, like every look, covers only its own time: a quiet spell before the
    /// overload (a tenth of the capacity, the probe on time throughout) does not average the
    /// overload's arrivals down into a calm.
    #[test]
    fn a_quiet_spell_before_an_overload_does_not_end_it() {
        let ms = |n: u64| Duration::from_millis(n);
        let (admission, t0) = opened();
        // Ten quiet seconds: ten requests a second, the probe on time.
        for i in 0..2_000u64 {
            let at = t0 + ms(5 * i);
            if i % 20 == 0 {
                admission.admit(LEVELS - 1, at, Duration::ZERO, Duration::MAX);
                admission.started(LEVELS - 1, at, Duration::ZERO);
            }
            admission.sampled(at, Duration::ZERO);
            admission.tick(at);
        }
        // A second of overload (the probe starved: no samples).
        let end = overload_second(&admission, t0 + ms(10_000));
        let shedding = admission.level();
        // The load goes on at the capacity; the probe comes back on time.
        at_capacity_on_time(&admission, end, 10);
        assert_eq!(admission.level(), shedding, "no calm from the quiet spell");
    }

    /// A slow server whose callers' deadlines cap its queue at a few requests: bursts of
    /// arrivals are dropped late while gaps between them leave the worker idle. A window
    /// with 17% of its pickups dropped late is overloaded, unless the probe saw the worker
    /// idle for more than a twentieth of it (here a tenth) while it started less than its
    /// capacity: then shedding would idle it more, and the level rises into the gaps.
    #[test]
    fn late_drops_while_the_worker_idles_are_not_overload() {
        let ms = |n: u64| Duration::from_millis(n);
        let window = |idle_samples: u64, run: u64| {
            let (admission, t0) = opened();
            let end = overload_second(&admission, t0);
            let before = admission.level();
            // The next second: 40 started within the target, 8 dropped for having waited
            // past half their 100 ms deadline, and probe samples alternating late and on
            // time (no idle spell long enough to end the overload). Over 16 user levels:
            // shedding can take some off.
            for i in 0..48u64 {
                let level = before - 1 - (i as u32 % 16);
                let at = end + ms(20 * i + 10);
                if i % 6 == 5 {
                    let verdict = admission.admit(level, at, ms(60), ms(100));
                    assert_eq!(verdict, Verdict::Late);
                } else {
                    assert_eq!(admission.admit(level, at, ms(30), ms(100)), Verdict::Admit);
                    admission.started(level, at, ms(30));
                }
            }
            // `run` on time, `run` late, ... (only the second of two on time in a row counts
            // as idle time).
            for k in 0..80u64 {
                let on_time = k % (2 * run) < run && k < idle_samples;
                let lag = if on_time { Duration::ZERO } else { ms(4) };
                admission.sampled(end + ms(12 * k), lag);
            }
            admission.tick(end + ms(1_001));
            (before, admission.level())
        };
        let (before, after) = window(0, 2);
        assert!(
            after < before,
            "busy throughout: shed ({before} -> {after})"
        );
        let (before, after) = window(80, 2);
        assert!(
            after > before,
            "idle a tenth of the window: it rises ({before} -> {after})"
        );
        // As many samples on time, but none after another on time: busy workers that let a
        // sample through now and then, not an idle one.
        let (before, after) = window(80, 1);
        assert!(
            after < before,
            "isolated samples on time: shed ({before} -> {after})"
        );
    }

    /// A discrete-event model of one worker serving a FIFO queue of requests that each cost
    /// `cost` of CPU, offered `factor` times its capacity by open-loop callers spread over
    /// the user levels of one priority, for `seconds` on a simulated clock. Requests the
    /// admission drops cost nothing (they are answered before their body is decoded).
    /// Returns the requests served per simulated second, and the waits of the ones served.
    fn simulate(cost: Duration, factor: f64, seconds: u64) -> (Vec<u64>, Vec<Duration>) {
        let admission = Admission::new(AdmissionConfig::default());
        // On the policy clock's millisecond grid, so that a run is the same in every process.
        let t0 = clock::base_instant() + Duration::from_secs(1);
        let capacity = 1.0 / cost.as_secs_f64();
        let gap = Duration::from_secs_f64(1.0 / (capacity * factor));
        let end = t0 + Duration::from_secs(seconds);
        let budget = Duration::from_secs(2);
        let mut queue = std::collections::VecDeque::new();
        let (mut next_arrival, mut free_at, mut next_tick) = (t0, t0, t0);
        let mut served = vec![0u64; seconds as usize];
        let mut waits = Vec::new();
        let mut n = 0u64;
        while free_at < end {
            // Arrivals up to the moment the worker is free, and the probe's ticks.
            while next_arrival <= free_at {
                // Users drawn at random over the 128 user levels of normal priority.
                queue.push_back((next_arrival, 256 + (crate::random::mix(n) % 128) as u32));
                n += 1;
                next_arrival += gap;
            }
            while next_tick <= free_at {
                admission.tick(next_tick);
                next_tick += PROBE_EVERY;
            }
            let Some((arrived, level)) = queue.pop_front() else {
                free_at = next_arrival;
                continue;
            };
            let waited = free_at - arrived;
            if admission.admit(level, free_at, waited, budget) == Verdict::Admit {
                admission.started(level, free_at, waited);
                waits.push(waited);
                free_at += cost;
                served[(free_at - t0).as_secs() as usize % seconds as usize] += 1;
            }
        }
        (served, waits)
    }

    fn p99(waits: &mut [Duration]) -> Duration {
        waits.sort_unstable();
        waits[waits.len() * 99 / 100]
    }

    /// From 20x and from 2x, one worker with 5 ms CPU handlers serves near its capacity
    /// from the first second, and the requests it serves waited about the queue-wait
    /// target (50 ms: ten requests' worth), not the deadline (2 s).
    #[test]
    fn the_controller_converges_within_a_second_from_any_load() {
        for factor in [2.0, 5.0, 20.0] {
            let (served, mut waits) = simulate(Duration::from_millis(5), factor, 5);
            // Capacity: 200 a second. At least 85% in the first second and every one after,
            // and 92.5% on average after the first (the model's arrivals are random; a
            // second's worth of them is noisy). Without the per-request check or with
            // second-long windows, the first seconds were 30-60%.
            assert!(served.iter().all(|&s| s >= 170), "{factor}x: {served:?}");
            let steady = served[1..].iter().sum::<u64>() / (served.len() as u64 - 1);
            assert!(steady >= 185, "{factor}x: {served:?}");
            let p99 = p99(&mut waits);
            assert!(
                p99 <= Duration::from_millis(150),
                "{factor}x: p99 wait {p99:?}"
            );
        }
        // And with cheap handlers, where windows end by their request count.
        let (served, mut waits) = simulate(Duration::from_micros(200), 20.0, 3);
        assert!(served.iter().all(|&s| s >= 4_500), "{served:?}");
        assert!(p99(&mut waits) <= Duration::from_millis(100));
    }

    /// What [`simulate_priorities`] saw.
    struct Priorities {
        /// Requests served per simulated second.
        served: Vec<u64>,
        /// The lowest and highest admission level over the second half.
        levels: (u32, u32),
        /// Of the high-priority users seen at least twice in the second half, the share
        /// that had both outcomes.
        mixed: f64,
    }

    /// A discrete-event model of the overload tool's priority scenario: one worker with
    /// handlers of `cost`, offered `factor` times its capacity at random (Poisson) over
    /// four business priorities a quarter each and 10,000 users, with 500 ms deadlines;
    /// callers drop what the server's last level would shed (collaborative rejection).
    fn simulate_priorities(cost: Duration, factor: f64, seconds: u64, seed: u64) -> Priorities {
        let admission = Admission::new(AdmissionConfig::default());
        let t0 = clock::base_instant() + Duration::from_secs(1);
        let rate = factor / cost.as_secs_f64();
        let end = t0 + Duration::from_secs(seconds);
        let half = t0 + Duration::from_secs(seconds / 2);
        let budget = Duration::from_millis(500);
        let random = |n: u64| crate::random::mix(n ^ seed << 40);
        let mut queue = std::collections::VecDeque::new();
        let (mut next_arrival, mut free_at, mut next_tick) = (t0, t0, t0);
        let mut served = vec![0; seconds as usize];
        let mut levels = (LEVELS, 0);
        // (high-priority user) -> (served, refused) in the second half
        let mut users = std::collections::HashMap::<u64, (u32, u32)>::new();
        let mut outcome = |at: Instant, class: u32, user: u64, ok: bool| {
            if at >= half && class == 1 {
                let e = users.entry(user).or_default();
                if ok { e.0 += 1 } else { e.1 += 1 }
            }
        };
        let mut n = 0u64;
        while free_at < end {
            while next_arrival <= free_at {
                n += 1;
                let r = random(n);
                let (class, user) = ((r % 4) as u32, (r >> 8) % 10_000);
                let level = class * USER_LEVELS + priority::user_level_in_hour(user, 0);
                if level >= admission.level() {
                    outcome(next_arrival, class, user, false);
                } else {
                    queue.push_back((next_arrival, level, class, user));
                }
                let u = (random(n ^ 0xa5a5) >> 11) as f64 / (1u64 << 53) as f64;
                next_arrival += Duration::from_secs_f64(-(1.0 - u).ln() / rate);
            }
            while next_tick <= free_at {
                admission.tick(next_tick);
                if next_tick >= half {
                    let level = admission.level();
                    levels = (levels.0.min(level), levels.1.max(level));
                }
                next_tick += PROBE_EVERY;
            }
            let Some((arrived, level, class, user)) = queue.pop_front() else {
                free_at = next_arrival;
                continue;
            };
            let waited = free_at - arrived;
            let ok = waited < budget
                && admission.admit(level, free_at, waited, budget) == Verdict::Admit;
            if ok {
                admission.started(level, free_at, waited);
                free_at += cost;
                served[(free_at - t0).as_secs() as usize % seconds as usize] += 1;
            }
            outcome(free_at, class, user, ok);
        }
        let seen: Vec<_> = users.values().filter(|(a, b)| a + b >= 2).collect();
        let mixed = seen.iter().filter(|(a, b)| *a > 0 && *b > 0).count();
        Priorities {
            served,
            levels,
            mixed: mixed as f64 / seen.len().max(1) as f64,
        }
    }

    /// At 3x, over four priorities and 10,000 users, the level the server settles on
    /// moves by a few user levels over ten seconds, not by dozens: each level it sweeps
    /// over is users who get both outcomes. With the old steps (1% up, 5% down, on 100 ms
    /// windows) the cut swept 42-61 levels, and 18-22% of the users it runs through had
    /// both outcomes; it also opened every level at once now and then on a slow server,
    /// when a 50 ms look happened to see few arrivals.
    #[test]
    fn at_three_times_the_capacity_the_cut_settles_within_a_few_levels() {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (cost, capacity) in [
            (Duration::from_micros(200), 5_000),
            (Duration::from_millis(5), 200),
        ] {
            let runs: Vec<_> = (0..7)
                .map(|seed| simulate_priorities(cost, 3.0, 20, seed))
                .collect();
            for p in &runs {
                let steady = p.served[1..].iter().sum::<u64>() / (p.served.len() as u64 - 1);
                assert!(steady * 100 >= capacity * 90, "{cost:?}: {:?}", p.served);
                // Every second after the first near the capacity: a level that holds on the
                // waits of the queue a shedding left would keep the overshoot for seconds.
                if cost < Duration::from_millis(1) {
                    assert!(
                        p.served[1..].iter().all(|&s| s * 100 >= capacity * 85),
                        "{cost:?}: {:?}",
                        p.served
                    );
                }
            }
            let ranges = median(
                runs.iter()
                    .map(|p| f64::from(p.levels.1 - p.levels.0))
                    .collect(),
            );
            // (A slow server's windows hold a few hundred requests, and it settles less
            // well: the old steps swept 25 levels or more, or opened all 512.)
            let most = if cost < Duration::from_millis(1) {
                4.0
            } else {
                8.0
            };
            assert!(
                ranges <= most,
                "{cost:?}: levels {:?}",
                runs.iter().map(|p| p.levels).collect::<Vec<_>>()
            );
            if cost < Duration::from_millis(1) {
                // (A slow server's users make a call or none in ten seconds, and the share
                // is of the hundred or so seen twice: only the fast one is judged.)
                let mixed = median(runs.iter().map(|p| p.mixed).collect());
                assert!(
                    mixed < 0.01,
                    "{cost:?}: users with both outcomes, median {mixed}"
                );
                for p in &runs {
                    assert!(
                        p.levels.1 - p.levels.0 <= 8,
                        "{cost:?}: levels {:?}",
                        p.levels
                    );
                }
            }
        }
    }

    /// Settled (the last window was busy), a window just over the target takes one level
    /// off, though a fifth of `shed_step` of what arrived would be two here; and past levels
    /// that nobody used.
    #[test]
    fn a_settled_level_moves_one_busy_level_at_a_time() {
        // 1,000 critical requests and ten at each of the high levels given, admitted at 170,
        // all after 25 ms in the queue (the target is 20 ms).
        let after = |high: std::ops::Range<u32>| {
            let admission = Admission::new(AdmissionConfig {
                window: Duration::from_secs(3600),
                window_requests: 1_000_000,
                ..AdmissionConfig::default()
            });
            admission.capacity.store(5_000f64.to_bits(), Relaxed);
            admission.level.store(170, Relaxed);
            admission.steady.store(true, Relaxed);
            let now = clock::base_instant() + Duration::from_secs(1);
            // A window open until it is closed below.
            admission.window_start.store(clock::millis(now), Relaxed);
            admission.window_end.store(u64::MAX, Relaxed);
            let wait = Duration::from_millis(25);
            let arrive = |level: u32| {
                assert_eq!(
                    admission.admit(level, now, Duration::ZERO, Duration::MAX),
                    Verdict::Admit
                );
                admission.started(level, now, wait);
            };
            (0..1_000).for_each(|_| arrive(0));
            for level in high {
                (0..10).for_each(|_| arrive(level));
            }
            admission.window_end.store(0, Relaxed);
            let report = admission
                .close_window(clock::millis(now) + 1_000, Close::Due)
                .unwrap();
            assert!(report.overloaded, "25 ms is over the 20 ms target");
            admission.level()
        };
        assert_eq!(after(128..170), 169);
        assert_eq!(after(128..160), 159, "160-169 had no arrivals");
    }

    /// A window's arrivals and starts are its own (the count restarts at each close), and
    /// its average wait leaves out the old level's backlog: starts that arrived before the
    /// level last moved.
    #[test]
    fn a_window_counts_its_own_requests_and_averages_only_fresh_waits() {
        let admission = Admission::new(AdmissionConfig {
            window_requests: 1_000_000,
            ..AdmissionConfig::default()
        });
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let close = |at: Instant| {
            admission.window_end.store(0, Relaxed);
            admission
                .close_window(clock::millis(at), Close::Due)
                .unwrap()
        };
        close(t0); // the first window, empty
        for i in 0..10 {
            let level = LEVELS - 1 - i;
            // (Picked up at once: the wait that counts is the one `started` reports; one
            // given here would meet the per-request check, whose verdict depends on how
            // long the process has run.)
            assert_eq!(
                admission.admit(level, t0, Duration::ZERO, Duration::MAX),
                Verdict::Admit
            );
            if i < 8 {
                admission.started(level, t0, ms(30));
            }
        }
        let first = close(t0 + ms(1_000));
        assert_eq!((first.requests, first.started), (10, 8));
        assert_eq!(first.queue_wait, ms(30));
        assert!(first.overloaded && first.level < LEVELS, "{first:?}");

        // The level moved at 1,000 ms: a start that arrived at 955 ms is the old level's
        // backlog, one that arrived at 1,004 ms is fresh.
        let t1 = t0 + ms(1_005);
        admission.admit(0, t1, Duration::ZERO, Duration::MAX);
        admission.started(0, t1, ms(50));
        admission.started(0, t1, ms(1));
        let second = close(t0 + ms(2_000));
        assert_eq!((second.requests, second.started), (1, 2));
        assert_eq!(second.queue_wait, ms(1), "the backlog's 50 ms left out");

        // Only backlog: nothing measured, the wait is the lag alone (none here).
        admission.started(0, t0 + ms(2_000), ms(1_500));
        let third = close(t0 + ms(3_000));
        assert_eq!((third.requests, third.started), (0, 1));
        assert_eq!(third.queue_wait, Duration::ZERO);
    }

    #[test]
    fn lag_counts_as_waiting() {
        let admission = Admission::new(AdmissionConfig::default());
        let now = Instant::now();
        admission.admit(0, now, Duration::ZERO, Duration::MAX);
        admission.started(0, now, Duration::from_millis(1));
        admission.lagged(Duration::from_millis(30));
        admission.lagged(Duration::from_millis(45));
        admission.publish_lag();
        admission.lagged(Duration::from_millis(40));
        admission.publish_lag();
        let report = admission
            .close_window(clock::millis(now) + 10_000, Close::Due)
            .unwrap();
        assert_eq!(report.queue_wait, Duration::from_millis(31));
        assert!(report.overloaded);
    }

    #[test]
    fn a_sample_on_time_ends_the_lag_at_once() {
        let admission = Admission::new(AdmissionConfig::default());
        let ms = Duration::from_millis;
        // A normal request with a 100 ms deadline: it may wait up to half of it.
        let admits = |admission: &Admission| {
            let waited = Duration::from_micros(20);
            admission.admit(LEVELS - 1, Instant::now(), waited, ms(100)) == Verdict::Admit
        };
        assert!(admits(&admission));
        // A queue of tasks kept every sample of two intervals 60 ms late: counted.
        admission.lagged(ms(60));
        admission.publish_lag();
        admission.lagged(ms(60));
        admission.publish_lag();
        assert!(!admits(&admission), "a standing lag");
        // The load ends: the next sample is on time, and so is the next pickup.
        admission.lagged(Duration::ZERO);
        assert!(admits(&admission), "an idle runtime adds no lag");
    }

    #[test]
    fn one_late_sample_after_a_held_worker_adds_no_lag() {
        let admission = Admission::new(AdmissionConfig::default());
        let admits = |admission: &Admission| {
            let now = Instant::now();
            admission.admit(
                0,
                now,
                Duration::from_micros(20),
                Duration::from_millis(200),
            ) == Verdict::Admit
        };
        // A handler held the worker as the server started: the first interval's only
        // sample is late.
        admission.lagged(Duration::from_millis(150));
        admission.publish_lag();
        assert!(admits(&admission));
        // And later.
        admission.lagged(Duration::ZERO);
        admission.publish_lag();
        admission.lagged(Duration::from_millis(150));
        admission.publish_lag();
        assert!(admits(&admission));
        // A lag that stands is counted.
        admission.lagged(Duration::from_millis(150));
        admission.publish_lag();
        assert!(!admits(&admission));
    }
}
