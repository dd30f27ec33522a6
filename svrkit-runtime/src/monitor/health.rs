//! Readiness: whether the process can do its work, as the parts that know say.
//!
//! A process that answers is *live*; one whose store refuses writes (a full disk, a lost
//! database) is live but not *ready*: an orchestrator should stop sending it traffic, not
//! restart it. Parts of the application register a [`Check`] and report into it as they
//! find out (`fail` when a write fails, `pass` when one succeeds again); the admin endpoint
//! answers `/livez` with 200 while the process serves, and `/readyz` and `/healthz` with 503
//! and the failing checks while any fails, or once a server of the process drains or shuts
//! down ([`is_stopping`]). `/alerts.json` and the dashboard list the checks too.
//!
//! Reporting success is one atomic load while nothing changes, so a part may report on every
//! operation; a failure takes the check's mutex (failures are rare).
//!
//! A check that starts failing is also an alarm: [`watch`] looks at the checks every second
//! and hands a `firing` change (figure `unready`, with the reason) and later a `cleared`
//! one to the same place as the history alarms' changes (the log, and the webhook when
//! one is configured). A failure that began and ended between two looks still fires and
//! clears.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One part's readiness (see the module docs).
#[derive(Debug)]
pub struct Check {
    /// Leaked once per name: checks are registered for the life of the process.
    name: &'static str,
    failing: AtomicBool,
    /// How many times it started failing.
    episodes: AtomicU64,
    state: Mutex<Failure>,
}

#[derive(Debug, Default)]
struct Failure {
    /// The last failure reported (kept once it passes, for an alarm that fires late).
    reason: String,
    since: Option<Instant>,
    /// Failures reported since it began.
    count: u64,
}

/// A failing check, as the admin endpoint shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failing {
    /// The check's name (`store.writes`).
    pub name: String,
    /// The last failure reported.
    pub reason: String,
    /// How long it has failed, in seconds.
    pub for_seconds: f64,
    /// Failures reported since it began.
    pub failures: u64,
}

/// What a [`Check::fail`] or [`Check::pass`] changed: the caller logs transitions, not
/// every report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It was passing and now fails.
    Failed,
    /// It was failing and now passes, after this long.
    Recovered(Duration),
    /// No change.
    Same,
}

impl Check {
    /// Reports a failure (`reason` is shown as is: no secrets).
    pub fn fail(&self, reason: impl Into<String>) -> Transition {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let began = !self.failing.swap(true, Ordering::AcqRel);
        if began {
            state.since = Some(Instant::now());
            state.count = 0;
            self.episodes.fetch_add(1, Ordering::AcqRel);
        }
        state.reason = reason.into();
        state.count += 1;
        if began {
            Transition::Failed
        } else {
            Transition::Same
        }
    }

    /// Reports success.
    pub fn pass(&self) -> Transition {
        if !self.failing.load(Ordering::Acquire) {
            return Transition::Same;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !self.failing.swap(false, Ordering::AcqRel) {
            return Transition::Same;
        }
        Transition::Recovered(state.since.map_or(Duration::ZERO, |s| s.elapsed()))
    }

    /// Whether it fails now.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.name
    }

    fn failing(&self) -> Option<Failing> {
        if !self.is_failing() {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(Failing {
            name: self.name.to_owned(),
            reason: state.reason.clone(),
            for_seconds: state.since.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            failures: state.count,
        })
    }
}

fn checks() -> &'static Mutex<Vec<Arc<Check>>> {
    static CHECKS: OnceLock<Mutex<Vec<Arc<Check>>>> = OnceLock::new();
    CHECKS.get_or_init(Mutex::default)
}

/// The process's check named `name`, registered on first use (passing): every part that
/// asks for the same name shares it.
pub fn check(name: &str) -> Arc<Check> {
    let mut checks = checks().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = checks.iter().find(|c| c.name == name) {
        return c.clone();
    }
    let c = Arc::new(Check {
        name: Box::leak(name.into()),
        failing: AtomicBool::new(false),
        episodes: AtomicU64::new(0),
        state: Mutex::default(),
    });
    checks.push(c.clone());
    c
}

/// Whether a server of this process is draining or shutting down (and not yet dropped): the
/// process is then not ready (`/readyz` answers 503), so that an HTTP probe stops sending it
/// traffic as the gRPC health check does. Not a check: a planned stop fires no alarm.
pub fn is_stopping() -> bool {
    crate::metrics::process::servers_stopping() > 0
}

/// The checks failing now, in registration order.
pub fn failing() -> Vec<Failing> {
    let checks = checks().lock().unwrap_or_else(|e| e.into_inner());
    checks.iter().filter_map(|c| c.failing()).collect()
}

/// What the alarm side last saw of each check.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    /// By check: the episodes seen, and the minute of a `firing` sent and not yet cleared.
    seen: std::collections::HashMap<&'static str, (u64, Option<u64>)>,
}

impl Watcher {
    /// The alarm changes since the last look.
    pub(crate) fn step(&mut self) -> Vec<super::board::Event> {
        use super::alarm::{Alarm, Figure};
        let checks: Vec<Arc<Check>> = checks().lock().unwrap_or_else(|e| e.into_inner()).clone();
        let minute = super::board::this_minute();
        let mut events = Vec::new();
        for c in checks {
            // Episodes first: a failure that begins between the two loads shows as failing.
            let episodes = c.episodes.load(Ordering::Acquire);
            let failing = c.failing();
            let (seen, firing) = self.seen.entry(c.name).or_default();
            let (count, reason) = match &failing {
                Some(f) => (f.failures, f.reason.clone()),
                // Passed again before this look: the failure it had.
                None => {
                    let state = c.state.lock().unwrap_or_else(|e| e.into_inner());
                    (state.count, state.reason.clone())
                }
            };
            let reason = (!reason.is_empty()).then_some(reason);
            let event = |state, since_minute, cleared_minute| super::board::Event {
                state,
                alarm: Alarm {
                    service: "readiness",
                    method: c.name,
                    figure: Figure::Unready,
                    value: count as f64,
                    value_minute: minute,
                    baseline: 0.0,
                    since_minute,
                    cleared_minute,
                },
                reason: reason.clone(),
            };
            if episodes != *seen {
                if let Some(since) = firing.take() {
                    events.push(event("cleared", since, Some(minute)));
                }
                events.push(event("firing", minute, None));
                (*seen, *firing) = (episodes, Some(minute));
            }
            if failing.is_none()
                && let Some(since) = firing.take()
            {
                events.push(event("cleared", since, Some(minute)));
            }
        }
        events
    }
}

/// Hands readiness alarms to `changed` as checks start and stop failing (see the module
/// docs). Runs for the life of the process.
pub(crate) async fn watch(changed: impl Fn(Vec<super::board::Event>)) {
    let mut watcher = Watcher::default();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let events = watcher.step();
        if !events.is_empty() {
            changed(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes `watcher` finds for the check `name`, as (state, reason).
    fn changes(watcher: &mut Watcher, name: &str) -> Vec<(&'static str, Option<String>)> {
        watcher
            .step()
            .into_iter()
            .filter(|e| e.alarm.method == name)
            .map(|e| (e.state, e.reason))
            .collect()
    }

    #[test]
    fn a_failing_check_fires_an_alarm_once_and_clears_it_when_it_passes() {
        let name = "test.health.alarm";
        let c = check(name);
        let mut watcher = Watcher::default();
        assert!(changes(&mut watcher, name).is_empty(), "passing: quiet");
        c.fail("No space left on device");
        let fired = changes(&mut watcher, name);
        assert_eq!(
            fired,
            [("firing", Some("No space left on device".to_owned()))]
        );
        c.fail("still no space");
        assert!(changes(&mut watcher, name).is_empty(), "fired once");
        c.pass();
        assert_eq!(
            changes(&mut watcher, name),
            [("cleared", Some("still no space".to_owned()))]
        );
        assert!(changes(&mut watcher, name).is_empty());
        // Failing and passing again between two looks: not lost.
        c.fail("a blip");
        c.pass();
        let blip = changes(&mut watcher, name);
        let reason = Some("a blip".to_owned());
        assert_eq!(blip, [("firing", reason.clone()), ("cleared", reason)]);
    }

    #[test]
    fn a_check_reports_its_transitions_once_and_lists_while_failing() {
        let c = check("test.health.transitions");
        assert_eq!(c.pass(), Transition::Same);
        assert_eq!(c.fail("disk full"), Transition::Failed);
        assert_eq!(c.fail("disk still full"), Transition::Same);
        let listed = failing();
        let me = listed
            .iter()
            .find(|f| f.name == "test.health.transitions")
            .unwrap();
        assert_eq!((me.reason.as_str(), me.failures), ("disk still full", 2));
        assert!(matches!(c.pass(), Transition::Recovered(_)));
        assert_eq!(c.pass(), Transition::Same);
        assert!(
            failing()
                .iter()
                .all(|f| f.name != "test.health.transitions")
        );
        // The same name is the same check.
        check("test.health.transitions").fail("again");
        assert!(c.is_failing());
        c.pass();
    }
}
