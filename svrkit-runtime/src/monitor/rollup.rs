//! Per-minute rollups: what each method did in each minute of the last 24 hours, in fixed
//! memory, plus the minute under way.
//!
//! Once a minute the counters are read and the difference from the previous reading becomes
//! that minute's [`Figures`]. A ring of 1440 minutes per method and side is allocated when
//! the method is first seen and never grows.

use std::collections::VecDeque;

use serde::Serialize;

use crate::metrics::histogram::Histogram;
use crate::metrics::{ClientTotals, MethodMetrics, Rejection, ServerTotals};
use crate::status::{Class, Classes, Code};

/// Minutes of history kept: 24 hours.
pub const HISTORY: usize = 24 * 60;

/// What one side of a method did in one minute.
///
/// Calls are split by whose doing their outcome was ([`Class`]): `errors` are the server's
/// faults only, the figure availability and the error-rate alarm judge; the caller's
/// errors and cancellations are counted beside them and page nobody.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// The minute, in minutes since the Unix epoch.
    pub minute: u64,
    /// Calls answered (server: refusals included; client: every call that ended).
    pub calls: u64,
    /// Calls the server failed (class `fault`), refusals not counted.
    pub errors: u64,
    /// Calls that failed by the caller's doing (class `caller`).
    pub caller_errors: u64,
    /// Calls the caller gave up on (class `cancelled`).
    pub cancelled: u64,
    /// Server: requests refused without running. Client: calls refused locally.
    pub rejected: u64,
    /// Median latency, milliseconds (0 with no calls).
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Server: 99th percentile of queue wait, milliseconds.
    pub queue_p99_ms: f64,
}

impl Figures {
    /// The server's faults per call (0 with no calls): the error rate.
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.calls)
    }

    /// The caller's errors and cancellations per call (0 with no calls).
    pub fn caller_error_rate(&self) -> f64 {
        ratio(
            self.caller_errors.saturating_add(self.cancelled),
            self.calls,
        )
    }

    /// Refusals per call (0 with no calls).
    pub fn rejection_rate(&self) -> f64 {
        ratio(self.rejected, self.calls)
    }

    /// The figures of a server's minute from two readings of its counters, its codes
    /// classed by `classes`.
    pub fn server(
        minute: u64,
        now: &ServerTotals,
        before: &ServerTotals,
        classes: &Classes,
    ) -> Figures {
        let responses = since(&now.responses, &before.responses);
        let rejected = since(&now.rejected, &before.rejected);
        // Refusals are counted by their code too; those counted as refusals are not
        // counted again in the class of their code.
        let refused_as = |class| {
            let mut n = 0u64;
            if classes.of(Code::OVERLOADED) == class {
                n += rejected[Rejection::Overload as usize]
                    + rejected[Rejection::InFlightLimit as usize];
            }
            if classes.of(Code::DEADLINE_EXCEEDED) == class {
                n += rejected[Rejection::Expired as usize];
            }
            n
        };
        let of = |class| {
            classes
                .count(class, &responses)
                .saturating_sub(refused_as(class))
        };
        let latency = now.latency.since(&before.latency);
        Figures {
            minute,
            calls: responses.iter().sum(),
            errors: of(Class::Fault),
            caller_errors: of(Class::Caller),
            cancelled: of(Class::Cancelled),
            rejected: rejected.iter().sum(),
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
            queue_p99_ms: now.queue_wait.since(&before.queue_wait).quantile_ms(0.99),
        }
    }

    /// The figures of a client's minute from two readings of its counters, its codes
    /// classed by `classes`.
    pub fn client(
        minute: u64,
        now: &ClientTotals,
        before: &ClientTotals,
        classes: &Classes,
    ) -> Figures {
        let responses = since(&now.responses, &before.responses);
        let latency = now.latency.since(&before.latency);
        let rejected = now.local_rejects.saturating_sub(before.local_rejects);
        // A call a client policy dropped before sending ends `OVERLOADED`: counted as a
        // rejection, not again in that code's class.
        let of = |class| {
            let n = classes.count(class, &responses);
            if classes.of(Code::OVERLOADED) == class {
                n.saturating_sub(rejected)
            } else {
                n
            }
        };
        Figures {
            minute,
            calls: responses.iter().sum(),
            errors: of(Class::Fault),
            caller_errors: of(Class::Caller),
            cancelled: of(Class::Cancelled),
            rejected,
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
            queue_p99_ms: 0.0,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn since<const N: usize>(now: &[u64; N], before: &[u64; N]) -> [u64; N] {
    std::array::from_fn(|i| now[i].saturating_sub(before[i]))
}

/// The last minutes of one series ([`HISTORY`] unless said otherwise), oldest first.
#[derive(Clone, Debug)]
pub struct History(VecDeque<Figures>, usize);

impl Default for History {
    fn default() -> History {
        History::with_capacity(HISTORY)
    }
}

impl History {
    /// A ring of `minutes`, allocated now.
    pub fn with_capacity(minutes: usize) -> History {
        History(VecDeque::with_capacity(minutes), minutes.max(1))
    }

    /// This ring holding at most `minutes` (allocated as they come).
    pub fn bounded(mut self, minutes: usize) -> History {
        self.1 = minutes.max(1);
        self
    }

    /// Appends a minute, dropping the oldest beyond the capacity.
    pub fn push(&mut self, figures: Figures) {
        if self.0.len() == self.1 {
            self.0.pop_front();
        }
        self.0.push_back(figures);
    }

    /// Sets the figures of `figures.minute`, keeping the minutes in order: replaces that
    /// minute if it is kept, inserts it where it belongs otherwise (a minute older than
    /// everything kept in a full ring is dropped).
    pub fn upsert(&mut self, figures: Figures) {
        match self.0.back_mut() {
            Some(last) if last.minute == figures.minute => *last = figures,
            Some(last) if last.minute > figures.minute => {
                match self.0.binary_search_by_key(&figures.minute, |f| f.minute) {
                    Ok(i) => self.0[i] = figures,
                    Err(0) if self.0.len() == self.1 => {}
                    Err(i) => {
                        self.0.insert(i, figures);
                        if self.0.len() > self.1 {
                            self.0.pop_front();
                        }
                    }
                }
            }
            _ => self.push(figures),
        }
    }

    /// The minutes kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Figures> + ExactSizeIterator {
        self.0.iter()
    }

    /// The newest minute.
    pub fn last(&self) -> Option<&Figures> {
        self.0.back()
    }

    /// Minutes kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no minute is kept yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One method's rollups: its history on both sides and the readings they are made from.
#[derive(Debug)]
pub struct MethodRollup {
    /// The method's counters.
    pub metrics: &'static MethodMetrics,
    /// Server-side minutes.
    pub server: History,
    /// Client-side minutes.
    pub client: History,
    last_server: ServerTotals,
    last_client: ClientTotals,
    /// The histograms of the last minute ended (server latency, server queue wait, client
    /// latency), for reports.
    pub ended: [Histogram; 3],
}

impl MethodRollup {
    /// Starts the rollups of a method. Its first minute holds everything counted since the
    /// method was registered (the board may first look at it later).
    pub fn new(metrics: &'static MethodMetrics) -> MethodRollup {
        MethodRollup {
            metrics,
            ended: Default::default(),
            server: History::default(),
            client: History::default(),
            last_server: ServerTotals::default(),
            last_client: ClientTotals::default(),
        }
    }

    /// Ends `minute`: what the counters gained since the last tick becomes its figures.
    pub fn tick(&mut self, minute: u64) {
        let server = self.metrics.server_totals();
        let client = self.metrics.client_totals();
        let ended = self.since_tick(minute, &server, &client);
        self.server.push(ended.server);
        self.client.push(ended.client);
        self.ended = ended.histograms;
        self.last_server = server;
        self.last_client = client;
    }

    fn classes(&self) -> Classes {
        self.metrics.descriptor.classes
    }

    /// The minute under way so far.
    pub fn current(&self, minute: u64) -> Measured {
        let server = self.metrics.server_totals();
        let client = self.metrics.client_totals();
        self.since_tick(minute, &server, &client)
    }

    fn since_tick(&self, minute: u64, server: &ServerTotals, client: &ClientTotals) -> Measured {
        Measured {
            server: Figures::server(minute, server, &self.last_server, &self.classes()),
            client: Figures::client(minute, client, &self.last_client, &self.classes()),
            histograms: [
                server.latency.since(&self.last_server.latency),
                server.queue_wait.since(&self.last_server.queue_wait),
                client.latency.since(&self.last_client.latency),
            ],
        }
    }
}

/// One method's figures over part of a minute, both sides, with the histograms they came
/// from (server latency, server queue wait, client latency), for reports.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The server side.
    pub server: Figures,
    /// The client side.
    pub client: Figures,
    /// As in [`MethodRollup::ended`].
    pub histograms: [Histogram; 3],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ServiceMetrics;
    use crate::service::{MethodDescriptor, Priority, Retry, ServiceDescriptor};
    use crate::status::{Class, Code};
    use std::time::Duration;

    static METHODS: [MethodDescriptor; 1] = [MethodDescriptor {
        name: "Put",
        full_name: "r.S.Put",
        id: 1,
        service_id: 3,
        timeout_ms: 100,
        retry: Retry::None,
        priority: Priority::Normal,
        oneway: false,
        long_poll: false,
        classes: crate::status::Classes::DEFAULT,
    }];
    static SERVICE: ServiceDescriptor = ServiceDescriptor {
        name: "r.S",
        id: 3,
        methods: &METHODS,
    };

    fn serve(m: &MethodMetrics, ok: u64, failed: u64, refused: u64, latency: Duration) {
        for i in 0..ok + failed {
            m.server_request(1);
            m.server_started(Duration::ZERO);
            let code = if i < ok { Code::OK } else { Code::INTERNAL };
            m.server_finished(code, latency, 1);
        }
        for _ in 0..refused {
            m.server_request(1);
            m.server_refused(Code::OVERLOADED, Some(crate::metrics::Rejection::Overload));
        }
    }

    #[test]
    fn each_minute_holds_what_happened_in_it() {
        let metrics: &'static ServiceMetrics =
            Box::leak(Box::new(ServiceMetrics::new(&SERVICE, None)));
        let m = &metrics.methods[0];
        serve(m, 5, 0, 0, Duration::from_millis(3)); // before the board looked
        let mut r = MethodRollup::new(m);
        serve(m, 85, 10, 5, Duration::from_millis(3));
        let now = r.current(100).server;
        assert_eq!((now.calls, now.errors, now.rejected), (105, 10, 5));
        r.tick(100);
        serve(m, 7, 0, 0, Duration::from_micros(30));
        r.tick(101);
        r.tick(102);
        let minutes: Vec<_> = r
            .server
            .iter()
            .map(|f| (f.minute, f.calls, f.errors))
            .collect();
        assert_eq!(minutes, [(100, 105, 10), (101, 7, 0), (102, 0, 0)]);
        let first = r.server.iter().next().unwrap();
        assert!((2.0..=5.0).contains(&first.p99_ms), "{first:?}");
        assert!((first.error_rate() - 10.0 / 105.0).abs() < 1e-12);
        assert_eq!(r.server.last().unwrap().p99_ms, 0.0);
    }

    fn answer(m: &MethodMetrics, code: Code, n: u64) {
        for _ in 0..n {
            m.server_request(1);
            m.server_started(Duration::ZERO);
            m.server_finished(code, Duration::from_millis(1), 1);
        }
    }

    /// Counters to minutes to alarms: a minute of mistyped names and hang-ups is counted
    /// apart and fires nothing; a minute of `INTERNAL` fires the error-rate alarm.
    #[test]
    fn only_the_servers_faults_make_the_error_rate_and_its_alarm() {
        use crate::monitor::alarm::{AlarmConfig, Change, Detector, Figure};
        let metrics: &'static ServiceMetrics =
            Box::leak(Box::new(ServiceMetrics::new(&SERVICE, None)));
        let m = &metrics.methods[0];
        let mut r = MethodRollup::new(m);
        let mut alarm = Detector::default();
        let config = AlarmConfig::default();
        let mut step = |r: &mut MethodRollup, minute| {
            r.tick(minute);
            alarm.step(Figure::ErrorRate, &r.server, &config, ("r.S", "Put"))
        };
        for minute in 0..30 {
            answer(m, Code::OK, 1000);
            answer(m, Code::INTERNAL, 2);
            answer(m, Code::NOT_FOUND, 10);
            assert_eq!(step(&mut r, minute), None);
        }
        answer(m, Code::OK, 1000);
        answer(m, Code::NOT_FOUND, 600);
        answer(m, Code::CANCELLED, 400);
        answer(m, Code::PERMISSION_DENIED, 50);
        answer(m, Code(1001), 50);
        answer(m, Code::INTERNAL, 2);
        assert_eq!(step(&mut r, 30), None);
        let f = *r.server.last().unwrap();
        assert_eq!(
            (f.calls, f.errors, f.caller_errors, f.cancelled),
            (2102, 2, 700, 400)
        );
        answer(m, Code::OK, 1000);
        answer(m, Code::INTERNAL, 300);
        answer(m, Code::DEADLINE_EXCEEDED, 20);
        match step(&mut r, 31) {
            Some(Change::Fired(a)) => {
                assert_eq!(a.value, 320.0 / 1320.0);
                assert_eq!(a.value_minute, 31);
            }
            other => panic!("no alarm: {other:?}"),
        }
    }

    /// A method whose IDL says `faults="not_found"` counts a missing record as its fault,
    /// and refusals are counted once, as refusals, whatever the class of their code.
    #[test]
    fn a_method_may_move_codes_between_classes() {
        static MOVED: [MethodDescriptor; 1] = [MethodDescriptor {
            classes: crate::status::Classes::DEFAULT
                .with(Code::NOT_FOUND, Class::Fault)
                .with(Code::OVERLOADED, Class::Caller),
            ..METHODS[0]
        }];
        static MOVED_SERVICE: ServiceDescriptor = ServiceDescriptor {
            name: "r.Moved",
            id: 4,
            methods: &MOVED,
        };
        let metrics: &'static ServiceMetrics =
            Box::leak(Box::new(ServiceMetrics::new(&MOVED_SERVICE, None)));
        let m = &metrics.methods[0];
        let mut r = MethodRollup::new(m);
        answer(m, Code::OK, 10);
        answer(m, Code::NOT_FOUND, 3);
        answer(m, Code::INVALID_ARGUMENT, 4);
        serve(m, 0, 0, 5, Duration::ZERO); // refused OVERLOADED
        r.tick(7);
        let f = *r.server.last().unwrap();
        assert_eq!(
            (f.calls, f.errors, f.caller_errors, f.rejected),
            (22, 3, 4, 5)
        );
    }

    /// `OVERLOADED` passed on from a dependency that sheds failed this service's caller: a
    /// fault. This server's own refusals are rejections, counted once; and on the client,
    /// calls a local policy dropped are rejections too.
    #[test]
    fn an_overloaded_answer_passed_on_is_a_fault_and_a_refusal_a_rejection() {
        static SHEDDING: ServiceDescriptor = ServiceDescriptor {
            name: "r.Shedding",
            id: 5,
            methods: &METHODS,
        };
        let metrics: &'static ServiceMetrics =
            Box::leak(Box::new(ServiceMetrics::new(&SHEDDING, None)));
        let m = &metrics.methods[0];
        let mut r = MethodRollup::new(m);
        answer(m, Code::OK, 10);
        answer(m, Code::OVERLOADED, 7); // the handler passed a refusal on
        serve(m, 0, 0, 5, Duration::ZERO); // refused here
        for _ in 0..3 {
            m.client_request();
            m.client_local_reject();
            m.client_finished(Code::OVERLOADED, Duration::ZERO);
        }
        m.client_request();
        m.client_finished(Code::OVERLOADED, Duration::ZERO); // the server refused it
        r.tick(9);
        let f = *r.server.last().unwrap();
        assert_eq!((f.calls, f.errors, f.rejected), (22, 7, 5));
        let c = *r.client.last().unwrap();
        assert_eq!((c.calls, c.errors, c.rejected), (4, 1, 3));
    }

    #[test]
    fn the_ring_keeps_a_day() {
        let mut ring = History::default();
        for minute in 0..(HISTORY as u64 + 10) {
            ring.push(Figures {
                minute,
                ..Figures::default()
            });
        }
        assert_eq!(ring.len(), HISTORY);
        assert_eq!(ring.iter().next().unwrap().minute, 10);
    }

    #[test]
    fn upserts_keep_minutes_in_order() {
        let at = |minute, calls| Figures {
            minute,
            calls,
            ..Figures::default()
        };
        let mut ring = History::with_capacity(0).bounded(3);
        ring.upsert(at(10, 1));
        ring.upsert(at(12, 1));
        ring.upsert(at(11, 1)); // late: goes between
        ring.upsert(at(12, 5)); // again: replaces
        let kept: Vec<_> = ring.iter().map(|f| (f.minute, f.calls)).collect();
        assert_eq!(kept, [(10, 1), (11, 1), (12, 5)]);
        ring.upsert(at(9, 1)); // older than all of a full ring
        ring.upsert(at(13, 1));
        let kept: Vec<_> = ring.iter().map(|f| f.minute).collect();
        assert_eq!(kept, [11, 12, 13]);
    }
}
