//! Business metrics: figures a service author reports beside the framework's own (messages
//! per send, a cache's hit rate, users online), in the manner of Tars' property reports and
//! WeChat's OssAgent.
//!
//! A metric is registered once, by name, and kept as a `&'static` handle: recording is a
//! relaxed atomic addition on a cell of the recording thread's shard, as the framework's
//! per-method counters are, with no lock, lookup or allocation. A metric may have one label
//! whose values are fixed when it is registered (`kind` = `text`, `image`, `voice`): resolve
//! each value's series once with [`Family::with`] and keep it. The process exposes every
//! metric on `/metrics` under its own name, and `/stats.json` and the dashboard show them.
//!
//! ```
//! use svrkit_runtime::metrics::business;
//!
//! let sends = business::counter("chat_sends", "Messages sent.");
//! let fan_out = business::histogram("chat_fan_out", "Recipients per message.");
//! let parked = business::gauge("chat_polls_parked", "Long polls waiting.");
//! let by_kind = business::counter_with("chat_sends_by_kind", "Messages by kind.", "kind", &["text", "image"]);
//! let text = by_kind.with("text").unwrap();
//! sends.inc();
//! text.inc();
//! fan_out.record(12);
//! parked.add(1);
//! assert_eq!((sends.get(), text.get(), parked.get()), (1, 1, 1));
//! ```

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::histogram::{Cells, Histogram};
use super::method::{shard, shards};

/// A count that only goes up.
#[derive(Debug)]
pub struct Counter {
    cells: Box<[Padded]>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Counter {
    fn new() -> Counter {
        Counter {
            cells: (0..shards()).map(|_| Padded::default()).collect(),
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.cells[shard()].0.fetch_add(n, Relaxed);
    }

    /// The count so far (summed over shards: for reading, not for the hot path).
    pub fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Relaxed)).sum()
    }
}

/// A value that goes up and down (set, or moved by deltas).
#[derive(Debug, Default)]
pub struct Gauge {
    value: AtomicI64,
}

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, value: i64) {
        self.value.store(value, Relaxed);
    }

    /// Adds `delta` (negative to take away).
    #[inline]
    pub fn add(&self, delta: i64) {
        self.value.fetch_add(delta, Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.value.load(Relaxed)
    }
}

/// A distribution of whole values (0 to about 1.3e8), read as percentiles within 6.25% of
/// the true value of their rank: the framework's latency histogram, counting a value `v`
/// where a latency of `v` µs would go.
#[derive(Debug)]
pub struct ValueHistogram {
    cells: Box<[Cells]>,
}

impl ValueHistogram {
    fn new() -> ValueHistogram {
        ValueHistogram {
            cells: (0..shards()).map(|_| Cells::default()).collect(),
        }
    }

    /// Counts one value.
    #[inline]
    pub fn record(&self, value: u64) {
        self.cells[shard()].observe(Duration::from_micros(value));
    }

    /// Everything recorded so far, as a histogram whose "microseconds" are the values.
    pub fn read(&self) -> Histogram {
        let mut h = Histogram::default();
        for c in self.cells.iter() {
            c.add_to(&mut h);
        }
        h
    }
}

/// A metric's series: one, or one per value of its label.
#[derive(Debug)]
pub struct Family<T: 'static> {
    /// The name, as `/metrics` shows it.
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// The label's name and its values, if the metric has one.
    pub label: Option<(&'static str, &'static [&'static str])>,
    series: Box<[T]>,
}

impl<T> Family<T> {
    /// The series of the label's `value` (`None` for a value not registered): resolve it
    /// once and keep it, rather than on every record.
    pub fn with(&self, value: &str) -> Option<&T> {
        let (_, values) = self.label?;
        values
            .iter()
            .position(|v| *v == value)
            .map(|i| &self.series[i])
    }

    /// Every series with its label value (`""` for an unlabelled metric).
    pub fn series(&self) -> impl Iterator<Item = (&'static str, &T)> {
        let values: &'static [&'static str] = self.label.map_or(&[""], |(_, v)| v);
        values.iter().copied().zip(self.series.iter())
    }
}

/// A registered metric, by kind.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// Counters.
    Counter(&'static Family<Counter>),
    /// Gauges.
    Gauge(&'static Family<Gauge>),
    /// Histograms.
    Histogram(&'static Family<ValueHistogram>),
}

impl Metric {
    /// The metric's name.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Counter(f) => f.name,
            Metric::Gauge(f) => f.name,
            Metric::Histogram(f) => f.name,
        }
    }

    /// The name of its label, if it has one.
    pub fn label(&self) -> Option<&'static str> {
        let label = match self {
            Metric::Counter(f) => f.label,
            Metric::Gauge(f) => f.label,
            Metric::Histogram(f) => f.label,
        };
        label.map(|(name, _)| name)
    }
}

/// One series of a business metric as read now, for `/stats.json` and the dashboard.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeriesRead {
    /// The metric's name.
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// The label and this series' value of it, if the metric has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<(&'static str, &'static str)>,
    /// A counter's count, a gauge's value, a histogram's number of values.
    pub value: f64,
    /// A histogram's median and 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[allow(missing_docs)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

/// Every series of every business metric, read now.
pub fn read_all() -> Vec<SeriesRead> {
    fn series<T>(
        f: &'static Family<T>,
        kind: &'static str,
        read: impl Fn(&T) -> (f64, Option<f64>, Option<f64>),
        out: &mut Vec<SeriesRead>,
    ) {
        for (value, s) in f.series() {
            let (read, p50, p99) = read(s);
            out.push(SeriesRead {
                name: f.name,
                help: f.help,
                kind,
                label: f.label.map(|(name, _)| (name, value)),
                value: read,
                p50,
                p99,
            });
        }
    }
    let mut out = Vec::new();
    for metric in all() {
        match metric {
            Metric::Counter(f) => series(f, "counter", |c| (c.get() as f64, None, None), &mut out),
            Metric::Gauge(f) => series(f, "gauge", |g| (g.get() as f64, None, None), &mut out),
            Metric::Histogram(f) => series(
                f,
                "histogram",
                |h| {
                    let h = h.read();
                    // The histogram's "microseconds" are the values.
                    let at = |q| h.quantile(q).map(|seconds| seconds * 1e6);
                    (h.count() as f64, at(0.5), at(0.99))
                },
                &mut out,
            ),
        }
    }
    out
}

fn registry() -> &'static Mutex<Vec<Metric>> {
    static REGISTRY: OnceLock<Mutex<Vec<Metric>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Every business metric registered, in registration order.
pub fn all() -> Vec<Metric> {
    registry().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A counter named `name` (what `/metrics` calls it, with `_total`): registered on the
/// first call, the same one on later calls.
///
/// # Panics
/// If `name` is not a Prometheus metric name (`[a-zA-Z_][a-zA-Z0-9_]*`), or is taken by a
/// metric of another kind or with other labels: both are mistakes in the code, found the
/// first time it runs.
pub fn counter(name: &'static str, help: &'static str) -> &'static Counter {
    &family::<Counter>(name, help, None).series[0]
}

/// A counter with one label whose values are `values` (see [`counter`]).
///
/// # Panics
/// As [`counter`], and if `label` is not a label name or `values` is empty.
pub fn counter_with(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
) -> &'static Family<Counter> {
    family(name, help, Some((label, values)))
}

/// A gauge (see [`counter`] for names).
///
/// # Panics
/// As [`counter`].
pub fn gauge(name: &'static str, help: &'static str) -> &'static Gauge {
    &family::<Gauge>(name, help, None).series[0]
}

/// A gauge with one label (see [`counter_with`]).
///
/// # Panics
/// As [`counter_with`].
pub fn gauge_with(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
) -> &'static Family<Gauge> {
    family(name, help, Some((label, values)))
}

/// A histogram of whole values (see [`ValueHistogram`], and [`counter`] for names).
///
/// # Panics
/// As [`counter`].
pub fn histogram(name: &'static str, help: &'static str) -> &'static ValueHistogram {
    &family::<ValueHistogram>(name, help, None).series[0]
}

/// A histogram with one label (see [`counter_with`]).
///
/// # Panics
/// As [`counter_with`].
pub fn histogram_with(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
) -> &'static Family<ValueHistogram> {
    family(name, help, Some((label, values)))
}

type Label = Option<(&'static str, &'static [&'static str])>;

/// A kind of metric: how one series is made, and how the registry holds its families.
trait Kind: Sized + 'static {
    fn make() -> Self;
    fn wrap(family: &'static Family<Self>) -> Metric;
    fn unwrap(metric: Metric) -> Option<&'static Family<Self>>;
}

impl Kind for Counter {
    fn make() -> Counter {
        Counter::new()
    }
    fn wrap(family: &'static Family<Counter>) -> Metric {
        Metric::Counter(family)
    }
    fn unwrap(metric: Metric) -> Option<&'static Family<Counter>> {
        match metric {
            Metric::Counter(f) => Some(f),
            _ => None,
        }
    }
}

impl Kind for Gauge {
    fn make() -> Gauge {
        Gauge::default()
    }
    fn wrap(family: &'static Family<Gauge>) -> Metric {
        Metric::Gauge(family)
    }
    fn unwrap(metric: Metric) -> Option<&'static Family<Gauge>> {
        match metric {
            Metric::Gauge(f) => Some(f),
            _ => None,
        }
    }
}

impl Kind for ValueHistogram {
    fn make() -> ValueHistogram {
        ValueHistogram::new()
    }
    fn wrap(family: &'static Family<ValueHistogram>) -> Metric {
        Metric::Histogram(family)
    }
    fn unwrap(metric: Metric) -> Option<&'static Family<ValueHistogram>> {
        match metric {
            Metric::Histogram(f) => Some(f),
            _ => None,
        }
    }
}

/// The metric named `name`: the one registered already if it is of the same kind and has
/// the same label, else a new one.
fn family<T: Kind>(name: &'static str, help: &'static str, label: Label) -> &'static Family<T> {
    assert!(
        valid_name(name),
        "business metric name {name:?}: use letters, digits and _"
    );
    if let Some((label_name, values)) = label {
        assert!(
            valid_name(label_name) && !values.is_empty(),
            "business metric {name}: label {label_name:?} needs a valid name and values"
        );
    }
    let mut registered = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&existing) = registered.iter().find(|m| m.name() == name) {
        return T::unwrap(existing)
            .filter(|f| f.label == label)
            .unwrap_or_else(|| {
                panic!(
                    "business metric {name} is registered already as another kind or with other labels"
                )
            });
    }
    let n = label.map_or(1, |(_, values)| values.len());
    let family: &'static Family<T> = Box::leak(Box::new(Family {
        name,
        help,
        label,
        series: (0..n).map(|_| T::make()).collect(),
    }));
    registered.push(T::wrap(family));
    family
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_registered_twice_is_one_metric() {
        let a = counter("business_test_twice", "a");
        let b = counter("business_test_twice", "a");
        assert!(std::ptr::eq(a, b));
        a.add(2);
        b.inc();
        assert_eq!(a.get(), 3);
    }

    #[test]
    #[should_panic(expected = "registered already as another kind")]
    fn a_name_taken_by_another_kind_is_refused() {
        counter("business_test_kinds", "a");
        gauge("business_test_kinds", "a");
    }

    #[test]
    #[should_panic(expected = "use letters, digits and _")]
    fn a_name_prometheus_cannot_take_is_refused() {
        counter("business test", "a");
    }

    #[test]
    fn labels_have_a_series_each_and_only_their_values() {
        let family = counter_with("business_test_kind", "k", "kind", &["text", "image"]);
        family.with("image").unwrap().add(5);
        assert!(family.with("voice").is_none());
        let read: Vec<(&str, u64)> = family.series().map(|(v, c)| (v, c.get())).collect();
        assert_eq!(read, [("text", 0), ("image", 5)]);
    }

    #[test]
    fn histograms_read_values_back_within_their_error() {
        let h = histogram("business_test_fan_out", "f");
        for v in 1..=100 {
            h.record(v);
        }
        let read = h.read();
        assert_eq!(read.count(), 100);
        let p50 = read.quantile_ms(0.5) * 1000.0;
        assert!((47.0..=53.0).contains(&p50), "{p50}");
    }
}
