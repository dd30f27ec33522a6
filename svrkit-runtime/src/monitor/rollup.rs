//! Per-minute rollups: what each method did in each minute of the last 24 hours, in fixed
//! memory, plus the minute under way.
//!
//! Once a minute the counters are read and the difference from the previous reading becomes
//! that minute's [`Figures`]. A ring of 1440 minutes per method and side is allocated when
//! the method is first seen and never grows.

use std::collections::VecDeque;

use serde::Serialize;

use super::histogram::Histogram;
use super::metrics::{ClientTotals, MethodMetrics, ServerTotals};

/// Minutes of history kept: 24 hours.
pub const HISTORY: usize = 24 * 60;

/// What one side of a method did in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// The minute, in minutes since the Unix epoch.
    pub minute: u64,
    /// Calls answered (server: refusals included; client: every call that ended).
    pub calls: u64,
    /// Calls that failed, refusals not counted.
    pub errors: u64,
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
    /// Errors per call (0 with no calls).
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.calls)
    }

    /// Refusals per call (0 with no calls).
    pub fn rejection_rate(&self) -> f64 {
        ratio(self.rejected, self.calls)
    }

    /// The figures of a server's minute from two readings of its counters.
    pub fn server(minute: u64, now: &ServerTotals, before: &ServerTotals) -> Figures {
        let calls = sum_since(&now.responses, &before.responses);
        let ok = now.responses[0].saturating_sub(before.responses[0]);
        let rejected = sum_since(&now.rejected, &before.rejected);
        let latency = now.latency.since(&before.latency);
        Figures {
            minute,
            calls,
            errors: calls.saturating_sub(ok).saturating_sub(rejected),
            rejected,
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
            queue_p99_ms: now.queue_wait.since(&before.queue_wait).quantile_ms(0.99),
        }
    }

    /// The figures of a client's minute from two readings of its counters.
    pub fn client(minute: u64, now: &ClientTotals, before: &ClientTotals) -> Figures {
        let calls = sum_since(&now.responses, &before.responses);
        let ok = now.responses[0].saturating_sub(before.responses[0]);
        let latency = now.latency.since(&before.latency);
        Figures {
            minute,
            calls,
            errors: calls.saturating_sub(ok),
            rejected: now.local_rejects.saturating_sub(before.local_rejects),
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
            queue_p99_ms: 0.0,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn sum_since<const N: usize>(now: &[u64; N], before: &[u64; N]) -> u64 {
    now.iter()
        .zip(before)
        .map(|(n, b)| n.saturating_sub(*b))
        .sum()
}

/// The last minutes of one series ([`HISTORY`] unless said otherwise), oldest first.
#[derive(Clone, Debug)]
pub struct Ring(VecDeque<Figures>, usize);

impl Default for Ring {
    fn default() -> Ring {
        Ring::with_capacity(HISTORY)
    }
}

impl Ring {
    /// A ring of `minutes`, allocated now.
    pub fn with_capacity(minutes: usize) -> Ring {
        Ring(VecDeque::with_capacity(minutes), minutes.max(1))
    }

    /// This ring holding at most `minutes` (allocated as they come).
    pub fn bounded(mut self, minutes: usize) -> Ring {
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
    pub server: Ring,
    /// Client-side minutes.
    pub client: Ring,
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
            server: Ring::default(),
            client: Ring::default(),
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

    /// The minute under way so far.
    pub fn current(&self, minute: u64) -> Measured {
        let server = self.metrics.server_totals();
        let client = self.metrics.client_totals();
        self.since_tick(minute, &server, &client)
    }

    fn since_tick(&self, minute: u64, server: &ServerTotals, client: &ClientTotals) -> Measured {
        Measured {
            server: Figures::server(minute, server, &self.last_server),
            client: Figures::client(minute, client, &self.last_client),
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
    use crate::monitor::metrics::ServiceMetrics;
    use crate::service::{MethodDescriptor, Priority, Retry, ServiceDescriptor};
    use crate::status::Code;
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
            m.server_refused(Code::OVERLOADED, Some(super::super::Rejection::Overload));
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

    #[test]
    fn the_ring_keeps_a_day() {
        let mut ring = Ring::default();
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
        let mut ring = Ring::with_capacity(0).bounded(3);
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
