//! Readiness: whether the process can do its work, as the parts that know say.
//!
//! A process that answers is *live*; one whose store refuses writes (a full disk, a lost
//! database) is live but not *ready*: an orchestrator should stop sending it traffic, not
//! restart it. Parts of the application register a [`Check`] and report into it as they
//! find out (`fail` when a write fails, `pass` when one succeeds again); the admin endpoint
//! answers `/livez` with 200 while the process serves, and `/readyz` and `/healthz` with 503
//! and the failing checks while any fails. `/alerts.json` and the dashboard list them too.
//!
//! Reporting success is one atomic load while nothing changes, so a part may report on every
//! operation; a failure takes the check's mutex (failures are rare).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One part's readiness (see the module docs).
#[derive(Debug)]
pub struct Check {
    name: String,
    failing: AtomicBool,
    state: Mutex<Failure>,
}

#[derive(Debug, Default)]
struct Failure {
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
        &self.name
    }

    fn failing(&self) -> Option<Failing> {
        if !self.is_failing() {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(Failing {
            name: self.name.clone(),
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
        name: name.to_owned(),
        failing: AtomicBool::new(false),
        state: Mutex::default(),
    });
    checks.push(c.clone());
    c
}

/// The checks failing now, in registration order.
pub fn failing() -> Vec<Failing> {
    let checks = checks().lock().unwrap_or_else(|e| e.into_inner());
    checks.iter().filter_map(|c| c.failing()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
