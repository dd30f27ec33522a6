//! The dashboard page: per-minute charts drawn on the server as inline SVG (askama
//! template `templates/dashboard.html`), so the page needs no script and no network beyond
//! itself. A process's admin endpoint and the ossagent render the same [`Page`].

use askama::Template;

use super::alarm::{Alarm, Figure};
use super::rollup::Figures;

/// A dashboard page.
#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct Page {
    /// What the page shows (`hello.Greeter on 127.0.0.1:7000`).
    pub title: String,
    /// A line under the title (uptime, version, instances).
    pub subtitle: String,
    /// Seconds between reloads.
    pub refresh_secs: u32,
    /// Minutes the charts span.
    pub window: usize,
    /// Alarms firing.
    pub alerts: Vec<AlertRow>,
    /// The summary table.
    pub rows: Vec<Row>,
    /// Charts, a panel per method and side (the agent's first panel is the overview).
    pub panels: Vec<Panel>,
    /// The agent's table of reporting processes (empty on a process's own page).
    pub instances: Vec<InstanceRow>,
    /// Links to other window sizes.
    pub windows: Vec<(usize, bool)>,
    /// The service's own metrics, a row per series (on the agent's page, summed over the
    /// instances that report them).
    pub business: Vec<BusinessRow>,
    /// Who calls whom (the agent's page).
    pub map: Option<ServiceMap>,
}

/// The service map: calling services on the left, called ones on the right, a line for
/// each pair that talked, as wide as its share of the calls.
pub struct ServiceMap {
    /// The drawing's height.
    pub height: u32,
    /// The callers, with their heights in the drawing.
    pub callers: Vec<(f64, String)>,
    /// The services called, likewise.
    pub services: Vec<(f64, String)>,
    /// The pairs, most calls first.
    pub edges: Vec<MapEdge>,
}

/// Calls from one service to another: what the map is drawn from (the ossagent's
/// `service_map`, also in its `/system.json`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MapPair {
    #[allow(missing_docs)]
    pub caller: String,
    #[allow(missing_docs)]
    pub service: String,
    /// Since the reporting processes started.
    pub calls: u64,
    /// A minute, between the reporting processes' last two reports (none before any
    /// reported twice).
    pub per_minute: Option<f64>,
}

/// One pair on the service map.
pub struct MapEdge {
    #[allow(missing_docs)]
    pub caller: String,
    #[allow(missing_docs)]
    pub service: String,
    /// Calls since the reporting processes started.
    pub calls: u64,
    /// Calls a minute between the last reports (`12/min`), or empty before there are two.
    pub per_minute: String,
    /// The line's ends and width in the drawing.
    pub y1: f64,
    #[allow(missing_docs)]
    pub y2: f64,
    #[allow(missing_docs)]
    pub width: f64,
}

impl ServiceMap {
    /// Rows of the drawing.
    const ROW: f64 = 24.0;

    /// The map of `pairs`; `None` when there are none.
    pub fn new(pairs: Vec<MapPair>) -> Option<ServiceMap> {
        if pairs.is_empty() {
            return None;
        }
        let mut callers: Vec<String> = pairs.iter().map(|p| p.caller.clone()).collect();
        let mut services: Vec<String> = pairs.iter().map(|p| p.service.clone()).collect();
        callers.sort();
        callers.dedup();
        services.sort();
        services.dedup();
        let y = |i: usize| Self::ROW * (i as f64 + 1.0);
        let at = |list: &[String], name: &str| y(list.iter().position(|n| n == name).unwrap_or(0));
        let most = pairs.iter().map(|p| p.calls).max().unwrap_or(1).max(1) as f64;
        let mut edges: Vec<MapEdge> = pairs
            .iter()
            .map(|p| MapEdge {
                caller: p.caller.clone(),
                service: p.service.clone(),
                calls: p.calls,
                per_minute: p
                    .per_minute
                    .map_or_else(String::new, |r| format!("{}/min", significant(r))),
                y1: at(&callers, &p.caller),
                y2: at(&services, &p.service),
                width: 1.0 + 7.0 * (p.calls as f64 / most),
            })
            .collect();
        edges.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.caller.cmp(&b.caller)));
        let rows = callers.len().max(services.len());
        Some(ServiceMap {
            height: (Self::ROW * (rows as f64 + 1.0)) as u32,
            callers: callers
                .into_iter()
                .enumerate()
                .map(|(i, n)| (y(i), n))
                .collect(),
            services: services
                .into_iter()
                .enumerate()
                .map(|(i, n)| (y(i), n))
                .collect(),
            edges,
        })
    }
}

/// One series of a business metric on the page.
pub struct BusinessRow {
    /// The metric's name, with its label's value (`chat_sends{kind="text"}`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// The count, the value, or a histogram's count, median and 99th percentile.
    pub value: String,
    /// What the last minute ended added (a counter), or a histogram's values in it; empty
    /// where the page has no minutes (a gauge is its value).
    pub last_minute: String,
    /// What it counts.
    pub help: &'static str,
}

impl BusinessRow {
    /// Every business series of the process, read now, with the last minute `board` ended.
    pub fn all(board: &super::board::Board) -> Vec<BusinessRow> {
        crate::metrics::business::read_all()
            .into_iter()
            .map(|s| {
                let name = match s.label {
                    Some((label, value)) => format!("{}{{{label}=\"{value}\"}}", s.name),
                    None => s.name.to_owned(),
                };
                let minute = board
                    .business
                    .iter()
                    .find(|t| t.name == name)
                    .and_then(|t| t.minutes.last());
                let last_minute = match (s.kind, minute) {
                    ("counter", Some(f)) => format!("{}/min", f.calls),
                    ("histogram", Some(f)) => {
                        format!("{} values, p99 {}", f.calls, significant(f.p99_ms))
                    }
                    _ => String::new(),
                };
                (s, name, last_minute)
            })
            .map(|(s, name, last_minute)| BusinessRow {
                name,
                last_minute,
                kind: s.kind,
                value: match (s.p50, s.p99) {
                    (Some(p50), Some(p99)) => format!(
                        "{} values, p50 {}, p99 {}",
                        s.value,
                        significant(p50),
                        significant(p99)
                    ),
                    _ => format!("{}", s.value),
                },
                help: s.help,
            })
            .collect()
    }
}

impl Page {
    /// The page as HTML.
    pub fn render(&self) -> String {
        Template::render(self).unwrap_or_else(|e| format!("cannot render: {e}"))
    }
}

/// A firing alarm on the page.
pub struct AlertRow {
    /// `service.method`.
    pub what: String,
    /// The figure's name.
    pub figure: &'static str,
    /// The figure's value in the minute it is of, and its baseline, formatted as the charts
    /// format them (`12.9% at 14:03`).
    pub value: String,
    #[allow(missing_docs)]
    pub baseline: String,
    /// How long ago it fired.
    pub since: String,
}

impl AlertRow {
    /// The row of a failing readiness check.
    pub fn unready(failing: &super::health::Failing) -> AlertRow {
        AlertRow {
            what: failing.name.clone(),
            figure: "not ready",
            value: failing.reason.chars().take(120).collect(),
            baseline: "ready".into(),
            since: format!("{:.0} s ago", failing.for_seconds),
        }
    }

    /// The row of `alarm`, at minute `now`.
    pub fn of(alarm: &Alarm, now: u64) -> AlertRow {
        AlertRow::new(
            format!("{}.{}", alarm.service, alarm.method),
            alarm.figure,
            (alarm.value, alarm.value_minute),
            alarm.baseline,
            alarm.since_minute,
            now,
        )
    }

    /// The row of an alarm on `what`: `figure` was `value` in a minute, against
    /// `baseline`; it fired in `since_minute`.
    pub fn new(
        what: String,
        figure: Figure,
        (value, minute): (f64, u64),
        baseline: f64,
        since_minute: u64,
        now: u64,
    ) -> AlertRow {
        AlertRow {
            what,
            figure: figure.name(),
            value: format!("{} at {}", figure.format(value), clock(minute)),
            baseline: figure.format(baseline),
            since: format!("{} min ago", now.saturating_sub(since_minute)),
        }
    }
}

pub use super::format::{clock, millis, percent, significant};

/// A row of the summary table: one side of one method over the window.
pub struct Row {
    /// The panel it links to.
    pub id: String,
    /// `service.method`.
    pub name: String,
    /// `server` or `client`.
    pub side: &'static str,
    /// Calls in the window.
    pub calls: u64,
    /// Calls in the minute under way.
    pub calls_now: u64,
    /// The server's faults per call over the window.
    pub error_rate: String,
    /// Calls that failed by the caller's doing, and calls cancelled, in the window.
    pub caller_errors: u64,
    #[allow(missing_docs)]
    pub cancelled: u64,
    /// Refusals in the window.
    pub rejected: u64,
    /// p50 and p99 of the newest ended minute with calls (the minute the charts label).
    pub p50: String,
    #[allow(missing_docs)]
    pub p99: String,
}

/// The charts of one side of one method.
pub struct Panel {
    /// Anchor id.
    pub id: String,
    /// `service.method`.
    pub heading: String,
    /// `server`, `client` or `all`.
    pub side: &'static str,
    /// Its charts.
    pub charts: Vec<Chart>,
}

/// One chart: bars (counts) or lines (rates, latencies) over the window.
pub struct Chart {
    /// `calls`, `error_rate`, `latency`, `queue_wait`, `rejected`.
    pub series: &'static str,
    /// Heading.
    pub title: &'static str,
    /// Sum of a count series over the window (`data-total`); empty for other series.
    pub total: String,
    /// The newest value, formatted.
    pub latest: String,
    /// The top of the scale, formatted.
    pub max_label: String,
    /// Bars as (x, y, height).
    pub bars: Vec<(f64, f64, f64)>,
    /// Lines as (css class, points).
    pub lines: Vec<(&'static str, String)>,
    /// Dots at each line's newest point: (css class, x, y).
    pub dots: Vec<(&'static str, f64, f64)>,
}

/// A reporting process, on the agent's page.
pub struct InstanceRow {
    /// Its name.
    pub instance: String,
    /// Its services.
    pub services: String,
    /// Seconds since its last report.
    pub age: String,
    /// Whether it reported recently.
    pub live: bool,
    /// Server calls and errors in its last reported minute.
    pub calls: u64,
    #[allow(missing_docs)]
    pub errors: u64,
    /// Its firing alarms.
    pub firing: String,
}

/// A line of a chart: its css class and the figure it draws.
pub type Line = (&'static str, fn(&Figures) -> f64);

/// How a line chart shows a figure (its raw value, before the chart's scale).
pub type Format = fn(f64) -> String;

/// Chart size, in SVG units.
pub const WIDTH: f64 = 300.0;
/// Chart height.
pub const HEIGHT: f64 = 80.0;

/// The window's minutes, oldest first: `minutes[i]` is minute `first + i` (`None`: nothing
/// recorded).
pub struct Window {
    /// The first minute.
    pub first: u64,
    /// Figures per minute.
    pub minutes: Vec<Option<Figures>>,
}

impl Window {
    /// The `len` minutes ending at `now` (inclusive) out of `figures` (any order).
    pub fn new<'a>(now: u64, len: usize, figures: impl IntoIterator<Item = &'a Figures>) -> Window {
        let len = len.max(1);
        let first = now.saturating_sub(len as u64 - 1);
        let mut minutes = vec![None; len];
        for f in figures {
            if f.minute >= first && f.minute <= now {
                minutes[(f.minute - first) as usize] = Some(*f);
            }
        }
        Window { first, minutes }
    }

    fn x(&self, i: usize) -> f64 {
        let step = WIDTH / self.minutes.len() as f64;
        i as f64 * step
    }

    fn bar_width(&self) -> f64 {
        (WIDTH / self.minutes.len() as f64).max(1.0)
    }

    /// The sum of a count over the window.
    pub fn sum(&self, f: impl Fn(&Figures) -> u64) -> u64 {
        self.minutes
            .iter()
            .flatten()
            .map(f)
            .fold(0u64, u64::saturating_add)
    }

    /// The newest minute with calls that has ended (the last minute of the window is the
    /// one under way), else the minute under way: the minute charts label and alarms judge.
    pub fn last_ended(&self) -> Option<(&Figures, bool)> {
        let (under_way, ended) = self.minutes.split_last()?;
        ended
            .iter()
            .rev()
            .flatten()
            .find(|f| f.calls > 0)
            .map(|f| (f, true))
            .or_else(|| {
                under_way
                    .as_ref()
                    .filter(|f| f.calls > 0)
                    .map(|f| (f, false))
            })
    }

    /// A bar chart of a count.
    pub fn bars(
        &self,
        series: &'static str,
        title: &'static str,
        f: impl Fn(&Figures) -> u64,
    ) -> Chart {
        let values: Vec<u64> = self
            .minutes
            .iter()
            .map(|m| m.as_ref().map_or(0, &f))
            .collect();
        let max = values.iter().copied().max().unwrap_or(0).max(1);
        let w = self.bar_width();
        let bars = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0)
            .map(|(i, &v)| {
                let h = (v as f64 / max as f64 * (HEIGHT - 4.0)).max(1.5);
                (self.x(i), HEIGHT - h, w.max(1.0))
            })
            .collect();
        Chart {
            series,
            title,
            total: self.sum(&f).to_string(),
            latest: format!("{} this min", values.last().copied().unwrap_or(0)),
            max_label: max.to_string(),
            bars,
            lines: Vec::new(),
            dots: Vec::new(),
        }
    }

    /// A line chart of one or more figures (skipping minutes without calls), with `unit`.
    pub fn lines(
        &self,
        series: &'static str,
        title: &'static str,
        (unit, scale, format): (&'static str, f64, Format),
        each: &[Line],
    ) -> Chart {
        let max = self
            .minutes
            .iter()
            .flatten()
            .filter(|f| f.calls > 0)
            .flat_map(|f| each.iter().map(move |(_, g)| g(f) * scale))
            .fold(0.0f64, f64::max);
        let top = nice(max);
        let mut lines = Vec::new();
        let mut dots = Vec::new();
        let mut latest = String::from("-");
        for (class, g) in each {
            let points: Vec<(f64, f64)> = self
                .minutes
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.filter(|f| f.calls > 0).map(|f| (i, g(&f) * scale)))
                .map(|(i, v)| {
                    let x = self.x(i) + self.bar_width() / 2.0;
                    (x, HEIGHT - 2.0 - v / top * (HEIGHT - 4.0))
                })
                .collect();
            if let Some(&(x, y)) = points.last() {
                dots.push((*class, x, y));
            }
            let text: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            lines.push((*class, text.join(" ")));
        }
        // The newest ended minute, as alarms see it; a young process's first minute
        // so far.
        if let Some((f, ended)) = self.last_ended() {
            latest = each
                .iter()
                .map(|(_, g)| format(g(f)))
                .collect::<Vec<_>>()
                .join(" / ");
            latest += &if ended {
                format!(" at {}", clock(f.minute))
            } else {
                " so far".to_owned()
            };
        }
        Chart {
            series,
            title,
            total: String::new(),
            latest,
            max_label: format!("{} {unit}", trim(top)),
            bars: Vec::new(),
            lines,
            dots,
        }
    }

    /// The standard panel of one side of a method.
    pub fn panel(&self, id: String, heading: String, side: &'static str) -> Panel {
        let mut charts = vec![
            self.bars("calls", "calls / min", |f| f.calls),
            self.lines(
                "error_rate",
                "error rate (server faults)",
                ("%", 100.0, percent),
                &[("err", |f| f.error_rate())],
            ),
            self.lines(
                "latency",
                "latency p50 / p99",
                ("ms", 1.0, millis),
                &[("p50", |f| f.p50_ms), ("p99", |f| f.p99_ms)],
            ),
        ];
        if side != "client" {
            charts.push(self.lines(
                "queue_wait",
                "queue wait p99",
                ("ms", 1.0, millis),
                &[("queue", |f| f.queue_p99_ms)],
            ));
        }
        charts.push(self.lines(
            "caller_errors",
            "caller errors + cancelled",
            ("%", 100.0, percent),
            &[("caller", |f| f.caller_error_rate())],
        ));
        charts.push(self.bars("rejected", "rejected / min", |f| f.rejected));
        // The counts ride along on the rate charts, for readers and tests.
        charts[1].total = self.sum(|f| f.errors).to_string();
        let caller = charts.len() - 2;
        charts[caller].total = self
            .sum(|f| f.caller_errors.saturating_add(f.cancelled))
            .to_string();
        Panel {
            id,
            heading,
            side,
            charts,
        }
    }

    /// The summary row of one side of a method.
    pub fn row(&self, id: String, name: String, side: &'static str) -> Row {
        let calls = self.sum(|f| f.calls);
        let errors = self.sum(|f| f.errors);
        let busy = self.last_ended().map(|(f, _)| f);
        Row {
            id,
            name,
            side,
            calls,
            calls_now: self
                .minutes
                .last()
                .and_then(|m| m.as_ref())
                .map_or(0, |f| f.calls),
            error_rate: if calls == 0 {
                "-".to_owned()
            } else {
                percent(errors as f64 / calls as f64)
            },
            caller_errors: self.sum(|f| f.caller_errors),
            cancelled: self.sum(|f| f.cancelled),
            rejected: self.sum(|f| f.rejected),
            p50: busy.map_or("-".to_owned(), |f| millis(f.p50_ms)),
            p99: busy.map_or("-".to_owned(), |f| millis(f.p99_ms)),
        }
    }
}

/// A round number at or above `v` for the top of a scale.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if v <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn trim(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// `1h 5m` for a number of seconds.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(minute: u64, calls: u64, errors: u64) -> Figures {
        Figures {
            minute,
            calls,
            errors,
            p50_ms: 1.0,
            p99_ms: 4.0,
            ..Figures::default()
        }
    }

    #[test]
    fn charts_cover_the_window_and_count_what_is_in_it() {
        let figures = [minute(90, 500, 0), minute(98, 10, 1), minute(100, 7, 0)];
        let w = Window::new(100, 10, &figures);
        assert_eq!(w.first, 91);
        let panel = w.panel("p".into(), "s.M".into(), "server");
        let calls = &panel.charts[0];
        assert_eq!(calls.total, "17"); // minute 90 is outside the window
        assert_eq!(calls.bars.len(), 2);
        assert_eq!(panel.charts[1].total, "1");
        let latency = &panel.charts[2];
        assert_eq!(latency.lines.len(), 2);
        assert_eq!(latency.lines[1].1.split(' ').count(), 2);
        assert_eq!(latency.max_label, "5 ms");
        assert_eq!(w.row("p".into(), "s.M".into(), "server").calls_now, 7);
    }

    #[test]
    fn the_page_renders() {
        let w = Window::new(100, 5, &[minute(100, 3, 1)]);
        let page = Page {
            title: "t <b>".into(),
            subtitle: String::new(),
            refresh_secs: 10,
            window: 5,
            alerts: Vec::new(),
            rows: vec![w.row("a".into(), "s.M".into(), "server")],
            panels: vec![w.panel("a".into(), "s.M".into(), "server")],
            instances: Vec::new(),
            windows: vec![(60, false), (5, true)],
            map: None,
            business: Vec::new(),
        };
        let html = page.render();
        assert!(
            html.contains("t &#60;b&#62;") || html.contains("t &lt;b&gt;"),
            "escaped"
        );
        assert!(
            html.contains(r#"data-series="calls" data-total="3""#),
            "{html}"
        );
        assert!(html.contains("<svg"));
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.2), 5.0);
        assert_eq!(nice(0.013), 0.02);
        assert_eq!(nice(100.0), 100.0);
        assert_eq!(age(65), "65s");
        assert_eq!(age(7300), "2h 1m");
    }
}
