//! Alarms against history: each minute's figures are compared with their own recent past
//! and with the same minute of previous hours; a figure out of band raises an alarm, which
//! clears when the figure comes back.
//!
//! The band is robust rather than clever: the baseline is the median of the last
//! `window_minutes`, its spread the median absolute deviation, and a figure is out of band
//! only when it departs from the baseline by more than `mad_factor` spreads **and** by more
//! than a floor that makes sense for the figure (five points of error rate, a doubling of
//! p99, a tripling of volume, a drop to a fifth of it). The floors keep ordinary noise and
//! quiet services from firing; the median follows slow drifts, so a service that grows or
//! slows gradually does not fire either. A figure that is out of band but within what the
//! same minute of at least two previous hours showed is a pattern (an hourly job), not an
//! anomaly.

use serde::{Deserialize, Serialize};

use super::rollup::{Figures, History};

/// What alarms compare, and how far a figure may go: `[monitor.alarms]` in the
/// configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// Whether alarms are evaluated at all.
    pub enabled: bool,
    /// Minutes of recent history the baseline is the median of.
    pub window_minutes: usize,
    /// Minutes of history (with enough calls) needed before anything can fire.
    pub min_history: usize,
    /// Calls in a minute below which rates and latencies are not judged (too few to mean
    /// anything), and the baseline volume below which a drop is not an alarm.
    pub min_calls: u64,
    /// How many spreads (median absolute deviations) away from the baseline is out of band.
    pub mad_factor: f64,
    /// Error rate must exceed the baseline by at least this much (0.05 = five points).
    pub error_rate_rise: f64,
    /// Rejection rate must exceed the baseline by at least this much.
    pub rejection_rate_rise: f64,
    /// p99 latency must exceed the baseline by at least this fraction of it (1.0 = double).
    pub latency_rise: f64,
    /// ... and by at least this many milliseconds.
    pub latency_rise_min_ms: f64,
    /// Volume must exceed the baseline by this fraction of it (2.0 = triple).
    pub volume_rise: f64,
    /// Volume must fall below the baseline by this fraction of it (0.8 = to a fifth).
    pub volume_drop: f64,
    /// Consecutive minutes out of band before an alarm fires.
    pub fire_after: u32,
    /// Consecutive minutes back in band before it clears.
    pub clear_after: u32,
    /// URL (`http://host:port/path`) that alarm changes are POSTed to as JSON.
    pub webhook: Option<String>,
}

impl Default for AlarmConfig {
    fn default() -> AlarmConfig {
        AlarmConfig {
            enabled: true,
            window_minutes: 30,
            min_history: 10,
            min_calls: 20,
            mad_factor: 6.0,
            error_rate_rise: 0.05,
            rejection_rate_rise: 0.05,
            latency_rise: 1.0,
            latency_rise_min_ms: 5.0,
            volume_rise: 2.0,
            volume_drop: 0.8,
            fire_after: 1,
            clear_after: 2,
            webhook: None,
        }
    }
}

/// A figure alarms watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// Errors per call.
    ErrorRate,
    /// 99th percentile latency.
    P99Latency,
    /// Calls per minute.
    Volume,
    /// Refusals per call.
    RejectionRate,
    /// A readiness check fails ([`health`](super::health)); the value is how many failures
    /// it has seen. Not judged against history, and not in [`Figure::ALL`].
    Unready,
    /// A business counter's gain in a minute ([`metrics::business`](crate::metrics::business)),
    /// or how many values a business histogram took: judged as calls are, by rise and drop.
    Count,
    /// A business gauge's value at the end of a minute (below zero read as zero), judged
    /// by rise and drop as a count is.
    Value,
    /// The 99th percentile of a business histogram's values in a minute, judged as latency
    /// is (a doubling, and at least `latency_rise_min_ms` of its own units).
    #[serde(rename = "p99")]
    ValueP99,
}

impl Figure {
    /// Every figure.
    pub const ALL: [Figure; 4] = [
        Figure::ErrorRate,
        Figure::P99Latency,
        Figure::Volume,
        Figure::RejectionRate,
    ];

    /// The figures of business metrics, none of them in [`Figure::ALL`].
    pub const BUSINESS: [Figure; 3] = [Figure::Count, Figure::Value, Figure::ValueP99];

    /// Its name in alarms.
    pub fn name(self) -> &'static str {
        match self {
            Figure::ErrorRate => "error_rate",
            Figure::P99Latency => "p99_latency",
            Figure::Volume => "volume",
            Figure::RejectionRate => "rejection_rate",
            Figure::Unready => "unready",
            Figure::Count => "count",
            Figure::Value => "value",
            Figure::ValueP99 => "p99",
        }
    }

    /// The figure named `name` (as [`Figure::name`] gives it).
    pub fn from_name(name: &str) -> Option<Figure> {
        Figure::ALL
            .into_iter()
            .chain([Figure::Unready])
            .chain(Figure::BUSINESS)
            .find(|f| f.name() == name)
    }

    /// A value of the figure as pages show it, rates and latencies to three significant
    /// digits: `12.9%`, `1.86 ms`, `350 µs`, `10 s`, `1234/min`. Every place that shows a figure formats
    /// it here, so the same number reads the same everywhere.
    pub fn format(self, v: f64) -> String {
        match self {
            Figure::ErrorRate | Figure::RejectionRate => super::format::percent(v),
            Figure::P99Latency => super::format::millis(v),
            // A count is exact: no digits to drop.
            Figure::Volume => format!("{v:.0}/min"),
            Figure::Unready => format!("{v:.0} failures"),
            Figure::Count => format!("{v:.0}/min"),
            Figure::Value => format!("{v:.0}"),
            Figure::ValueP99 => super::format::significant(v),
        }
    }

    /// Its value in a minute.
    pub fn of(self, f: &Figures) -> f64 {
        match self {
            Figure::ErrorRate => f.error_rate(),
            Figure::P99Latency => f.p99_ms,
            Figure::Volume | Figure::Count | Figure::Value => f.calls as f64,
            Figure::RejectionRate => f.rejection_rate(),
            Figure::Unready => 0.0,
            Figure::ValueP99 => f.p99_ms,
        }
    }

    /// Whether this figure is an amount judged by how far it rises and falls (a volume)
    /// rather than a rate or a percentile of enough calls.
    fn is_amount(self) -> bool {
        matches!(self, Figure::Volume | Figure::Count | Figure::Value)
    }

    /// Whether a minute with `calls` has enough of them for this figure to mean something.
    fn judged(self, calls: u64, config: &AlarmConfig) -> bool {
        self.is_amount() || calls >= config.min_calls
    }
}

/// How a minute's figure compares with its history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Not enough history, or too few calls, to say.
    Unknown,
    /// Within its band.
    Normal,
    /// Out of band.
    Out {
        /// The figure.
        value: f64,
        /// The baseline it was compared with.
        baseline: f64,
    },
}

/// Judges the newest minute of `ring` against the minutes before it (before `firing_since`,
/// while an alarm fires: an outage must not become the baseline it is judged against).
pub fn judge(
    figure: Figure,
    ring: &History,
    config: &AlarmConfig,
    firing_since: Option<u64>,
) -> Verdict {
    let Some(now) = ring.last() else {
        return Verdict::Unknown;
    };
    if !figure.judged(now.calls, config) {
        return Verdict::Unknown;
    }
    let value = figure.of(now);
    let history = ring.len() - 1;
    let mut window: Vec<f64> = ring
        .iter()
        .take(history)
        .rev()
        .filter(|f| firing_since.is_none_or(|since| f.minute < since))
        .take(config.window_minutes)
        .filter(|f| figure.judged(f.calls, config))
        .map(|f| figure.of(f))
        .collect();
    if window.len() < config.min_history {
        return Verdict::Unknown;
    }
    let baseline = median(&mut window);
    let mut deviations: Vec<f64> = window.iter().map(|x| (x - baseline).abs()).collect();
    // Scaled so that it estimates the standard deviation of normally distributed noise.
    let spread = median(&mut deviations) * 1.4826;
    let rise = match figure {
        Figure::ErrorRate => config.error_rate_rise,
        Figure::RejectionRate => config.rejection_rate_rise,
        Figure::P99Latency | Figure::ValueP99 => {
            (config.latency_rise * baseline).max(config.latency_rise_min_ms)
        }
        Figure::Volume | Figure::Count | Figure::Value => {
            (config.volume_rise * baseline).max(config.min_calls as f64)
        }
        Figure::Unready => return Verdict::Unknown,
    };
    let up = value > baseline + rise.max(config.mad_factor * spread);
    let down = figure.is_amount()
        && baseline >= config.min_calls as f64
        && value < baseline - (config.volume_drop * baseline).max(config.mad_factor * spread);
    if !(up || down) {
        return Verdict::Normal;
    }
    // The same minute of previous hours: if at least two of them were like this, it is a
    // pattern.
    let seasonal: Vec<f64> = (1..24u64)
        .filter_map(|h| now.minute.checked_sub(60 * h))
        .filter_map(|m| ring.iter().rev().find(|f| f.minute == m))
        .filter(|f| figure.judged(f.calls, config))
        .map(|f| figure.of(f))
        .collect();
    if seasonal.len() >= 2 {
        let lo = seasonal.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = seasonal.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let margin = rise.max(config.mad_factor * spread) / 2.0;
        if value >= lo - margin && value <= hi + margin {
            return Verdict::Normal;
        }
    }
    Verdict::Out { value, baseline }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// An alarm, firing or cleared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alarm {
    /// The service.
    pub service: &'static str,
    /// The method.
    pub method: &'static str,
    /// The figure.
    pub figure: Figure,
    /// The figure in minute `value_minute`: when it fired, then each minute judged while it
    /// fires (in band or not), so that it is the figure the charts show for that minute.
    pub value: f64,
    /// The minute `value` is of.
    pub value_minute: u64,
    /// The baseline it was compared with.
    pub baseline: f64,
    /// The minute it fired (minutes since the Unix epoch).
    pub since_minute: u64,
    /// The minute it cleared, if it has.
    pub cleared_minute: Option<u64>,
}

/// The state of one figure's alarm.
#[derive(Clone, Debug, Default)]
pub struct Detector {
    out: u32,
    normal: u32,
    firing: Option<Alarm>,
}

/// What a minute changed about an alarm.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// It fired.
    Fired(Alarm),
    /// It cleared.
    Cleared(Alarm),
}

impl Detector {
    /// The alarm, while it fires.
    pub fn firing(&self) -> Option<&Alarm> {
        self.firing.as_ref()
    }

    /// Takes the newest minute of `ring` into account.
    pub fn step(
        &mut self,
        figure: Figure,
        ring: &History,
        config: &AlarmConfig,
        who: (&'static str, &'static str),
    ) -> Option<Change> {
        let minute = ring.last()?.minute;
        let since = self.firing.as_ref().map(|a| a.since_minute);
        match judge(figure, ring, config, since) {
            Verdict::Out { value, baseline } => {
                self.out += 1;
                self.normal = 0;
                if let Some(alarm) = &mut self.firing {
                    alarm.value = value;
                    alarm.value_minute = minute;
                    return None;
                }
                if self.out >= config.fire_after.max(1) {
                    let alarm = Alarm {
                        service: who.0,
                        method: who.1,
                        figure,
                        value,
                        value_minute: minute,
                        baseline,
                        since_minute: minute,
                        cleared_minute: None,
                    };
                    self.firing = Some(alarm.clone());
                    return Some(Change::Fired(alarm));
                }
                None
            }
            // Too few calls to judge counts as back to normal for a firing alarm only
            // once the figure is judged again; a volume drop to nothing is judged.
            Verdict::Unknown => {
                self.out = 0;
                None
            }
            Verdict::Normal => {
                self.out = 0;
                self.normal += 1;
                if let (Some(alarm), Some(now)) = (&mut self.firing, ring.last()) {
                    alarm.value = figure.of(now);
                    alarm.value_minute = minute;
                }
                if self.firing.is_some() && self.normal >= config.clear_after.max(1) {
                    let mut alarm = self.firing.take()?;
                    alarm.cleared_minute = Some(minute);
                    return Some(Change::Cleared(alarm));
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise source (a linear congruential generator), in [-1, 1).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    /// Minutes of a service taking about `calls` a minute with an error rate near 1% and
    /// p99 near 20 ms, with noise of the given relative size; `shape` changes a minute.
    fn run(
        minutes: u64,
        noise: f64,
        shape: impl Fn(u64, &mut Figures),
    ) -> Vec<(u64, Figure, Change)> {
        let config = AlarmConfig::default();
        let mut rng = Noise(7);
        let mut ring = History::default();
        let mut detectors: Vec<Detector> =
            Figure::ALL.iter().map(|_| Detector::default()).collect();
        let mut changes = Vec::new();
        for minute in 0..minutes {
            let calls = (1000.0 * (1.0 + noise * rng.next())).round() as u64;
            let mut f = Figures {
                minute,
                calls,
                errors: (calls as f64 * 0.01 * (1.0 + noise * rng.next())).round() as u64,
                rejected: 0,
                p50_ms: 5.0,
                p99_ms: 20.0 * (1.0 + noise * rng.next()),
                queue_p99_ms: 0.1,
                ..Figures::default()
            };
            shape(minute, &mut f);
            ring.push(f);
            for (d, &figure) in detectors.iter_mut().zip(&Figure::ALL) {
                if let Some(c) = d.step(figure, &ring, &config, ("s.S", "M")) {
                    changes.push((minute, figure, c));
                }
            }
        }
        changes
    }

    /// Every page, report and webhook names a figure the same way.
    #[test]
    fn a_figure_has_one_name() {
        for figure in Figure::ALL
            .into_iter()
            .chain([Figure::Unready])
            .chain(Figure::BUSINESS)
        {
            let json = serde_json::to_value(figure).unwrap();
            assert_eq!(json, figure.name(), "{figure:?}");
            assert_eq!(Figure::from_name(figure.name()), Some(figure));
        }
    }

    #[test]
    fn an_error_spike_fires_and_clears() {
        let changes = run(120, 0.2, |m, f| {
            if (60..63).contains(&m) {
                f.errors = f.calls / 5;
            }
        });
        let summary: Vec<_> = changes
            .iter()
            .map(|(m, fig, c)| (*m, *fig, matches!(c, Change::Fired(_))))
            .collect();
        assert_eq!(
            summary,
            [
                (60, Figure::ErrorRate, true),
                (64, Figure::ErrorRate, false)
            ]
        );
        let Change::Fired(alarm) = &changes[0].2 else {
            unreachable!()
        };
        assert!(alarm.value > 0.19 && alarm.baseline < 0.02, "{alarm:?}");
    }

    #[test]
    fn a_latency_spike_fires() {
        let changes = run(90, 0.2, |m, f| {
            if m == 70 {
                f.p99_ms = 400.0;
            }
        });
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!((changes[0].0, changes[0].1), (70, Figure::P99Latency));
    }

    #[test]
    fn a_drop_to_zero_volume_fires() {
        let changes = run(90, 0.2, |m, f| {
            if m >= 50 {
                *f = Figures {
                    minute: m,
                    ..Figures::default()
                };
            }
        });
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].0, changes[0].1), (50, Figure::Volume));
    }

    #[test]
    fn slow_drift_and_noise_do_not_fire() {
        // A day of ordinary noise.
        assert_eq!(run(1440, 0.25, |_, _| {}), []);
        // Latency and traffic that grow by half a percent a minute for five hours (elevenfold).
        let changes = run(300, 0.1, |m, f| {
            let growth = 1.005f64.powi(m as i32);
            f.p99_ms *= growth;
            f.calls = (f.calls as f64 * growth) as u64;
            f.errors = f.calls / 100;
        });
        assert_eq!(changes, []);
    }

    #[test]
    fn an_hourly_pattern_fires_once_then_is_known() {
        // Every hour at minute 30 a batch job triples traffic.
        let changes = run(300, 0.1, |m, f| {
            if m % 60 == 30 {
                f.calls *= 4;
                f.errors = f.calls / 100;
            }
        });
        let fired: Vec<_> = changes
            .iter()
            .filter(|(_, _, c)| matches!(c, Change::Fired(_)))
            .map(|(m, fig, _)| (*m, *fig))
            .collect();
        // The first two hours have too little seasonal history; from the third on it is a
        // pattern.
        assert_eq!(fired, [(30, Figure::Volume), (90, Figure::Volume)]);
    }
}
