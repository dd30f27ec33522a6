//! `svrkit bench`: load from one request, a live progress line, then QPS, status counts and
//! a latency percentile table.
//!
//! Closed loop (the default): `-c` callers, each sending its next call when the last one
//! answers. Open loop (`--rate`): calls start on a fixed schedule whatever the answers, at
//! most `-c` in flight, and each latency runs from the call's *intended* start, so a stalled
//! server shows up as latency instead of as fewer samples (no coordinated omission).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use svrkit_runtime::client::RetryConfig;
use svrkit_runtime::codec::Encoded;
use svrkit_runtime::{Bytes, CallOptions, Channel, ChannelOptions, Code};
use tokio::time::Instant;

use crate::Failure;
use crate::target::{Target, channel_options};

/// How to load.
pub(crate) struct Load {
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) rate: Option<f64>,
    pub(crate) connections: usize,
    pub(crate) timeout: Option<Duration>,
}

/// What the calls came to.
struct Stats {
    latency: Histogram<u64>,
    codes: BTreeMap<Code, u64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            // Nanoseconds, three significant digits, up to an hour.
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
            codes: BTreeMap::new(),
        }
    }

    fn record(&mut self, latency: Duration, code: Code) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
        *self.codes.entry(code).or_default() += 1;
    }
}

/// Calls made and failed so far, for the progress line.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
}

pub(crate) fn run(
    target: &Target,
    addr: &str,
    json: Option<&str>,
    load: &Load,
) -> Result<ExitCode, Failure> {
    if target.descriptor.oneway {
        return Err(Failure::Message(format!(
            "{} is oneway: there is no answer to time",
            target.descriptor.full_name
        )));
    }
    let body = Bytes::from(target.request_bytes(json)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Message(format!("cannot start the async runtime: {e}")))?;
    let method = target.descriptor;
    let options = CallOptions::timeout(target.timeout(load.timeout));
    let mode = match load.rate {
        Some(rate) => format!(
            "open loop at {rate} calls/s, at most {} in flight",
            load.concurrency
        ),
        None => format!("{} concurrent callers", load.concurrency),
    };
    let outcome = runtime.block_on(async {
        let channel = bench_channel(addr, load.connections);
        // Connect before the clock starts, so the first calls do not time the handshake; a
        // server that cannot be reached is an error, not a table of failures.
        if let Err(status) = channel
            .call::<Encoded, Encoded>(method, &Encoded(body.clone()), &options)
            .await
            && matches!(status.code(), Code::UNAVAILABLE)
        {
            return Err(Failure::Message(format!(
                "{} {}",
                method.full_name,
                crate::call::status_line(&status)
            )));
        }
        note!(
            "bench {} at {addr}: {mode}, {} connection(s), {:.1} s",
            method.full_name,
            load.connections,
            load.duration.as_secs_f64()
        );
        // One histogram for the run behind a short lock: a histogram per caller would take
        // a quarter of a megabyte each.
        let stats = Arc::new(Mutex::new(Stats::new()));
        let progress = Arc::new(Progress::default());
        let start = Instant::now();
        let end = start + load.duration;
        let ticker = tokio::spawn(show_progress(progress.clone(), start));
        let call = Caller {
            channel,
            method,
            body,
            options,
            stats: stats.clone(),
            progress,
        };
        // Calls per second are counted over the time calls were being started: the run's
        // length for the open loop (answers that come later are waited for, not counted as
        // time), until the last answer for the closed one.
        let (window, unsent) = match load.rate {
            None => {
                closed_loop(call, load.concurrency, end).await;
                (start.elapsed(), 0)
            }
            Some(rate) => {
                let unsent = open_loop(call, load.concurrency, rate, start, end).await;
                (load.duration, unsent)
            }
        };
        ticker.abort();
        if std::io::stderr().is_terminal() {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
        let stats = std::mem::replace(&mut *stats.lock().expect("not poisoned"), Stats::new());
        Ok((stats, window, unsent))
    });
    let (stats, window, unsent) = outcome?;
    crate::print(&report(&stats, window))?;
    if unsent > 0 {
        note!(
            "{unsent} scheduled calls were not started: the sender could not keep the rate (a \
             lower --rate, or more -c, or fewer tasks on this machine)"
        );
    }
    if !stats.codes.contains_key(&Code::OK) {
        return Err(Failure::Message(format!(
            "no call to {} succeeded",
            method.full_name
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// A channel for load: no retries, no client-side throttling and no ejection, so that every
/// call counted went to the server and its answer is the server's.
fn bench_channel(addr: &str, connections: usize) -> Channel {
    Channel::lazy(
        [addr],
        ChannelOptions {
            retry: RetryConfig {
                enabled: false,
                ..RetryConfig::default()
            },
            throttle: None,
            eject_after: u32::MAX,
            ..channel_options("svrkit-bench", connections)
        },
    )
}

#[derive(Clone)]
struct Caller {
    channel: Channel,
    method: &'static svrkit_runtime::service::MethodDescriptor,
    body: Bytes,
    options: CallOptions,
    stats: Arc<Mutex<Stats>>,
    progress: Arc<Progress>,
}

impl Caller {
    /// One call, its latency counted from `from`.
    async fn call(&self, from: Instant) {
        let result = self
            .channel
            .call::<Encoded, Encoded>(self.method, &Encoded(self.body.clone()), &self.options)
            .await;
        let code = result.map_or_else(|status| status.code(), |_| Code::OK);
        self.stats
            .lock()
            .expect("not poisoned")
            .record(from.elapsed(), code);
        self.progress.done.fetch_add(1, Relaxed);
        if code != Code::OK {
            self.progress.failed.fetch_add(1, Relaxed);
        }
    }
}

async fn closed_loop(call: Caller, concurrency: usize, end: Instant) {
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    call.call(Instant::now()).await;
                }
            })
        })
        .collect();
    for c in callers {
        let _ = c.await;
    }
}

/// Starts calls on the schedule `start + i / rate` until `end`; returns how many scheduled
/// calls it could not start before `end` (the sender fell behind).
async fn open_loop(
    call: Caller,
    concurrency: usize,
    rate: f64,
    start: Instant,
    end: Instant,
) -> u64 {
    // At most `concurrency` calls in flight, each holding a slot.
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut sent = 0u64;
    // Each time from the start, not by adding intervals, so that rounding does not add up
    // (three a second for a second is three calls, not four).
    while let Ok(offset) = Duration::try_from_secs_f64(sent as f64 / rate) {
        let intended = start + offset;
        if intended >= end || Instant::now() >= end {
            break;
        }
        wait_until(intended).await;
        // Waiting for a slot delays the send, not the clock: the latency still runs from
        // `intended`.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let call = call.clone();
        tokio::spawn(async move {
            call.call(intended).await;
            drop(slot);
        });
        sent += 1;
    }
    // Every slot back: every call answered.
    let _ = slots
        .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
        .await;
    let scheduled = (rate * (end - start).as_secs_f64()).ceil();
    (scheduled - sent as f64).max(0.0) as u64
}

/// Waits for `at` more precisely than the timer's millisecond: sleeps to a millisecond
/// before, then yields until it is due. A send that is late counts as latency (the clock runs
/// from `at`), so the tool's own lateness must not be the bulk of it.
async fn wait_until(at: Instant) {
    let margin = Duration::from_millis(1);
    if at > Instant::now() + margin {
        tokio::time::sleep_until(at - margin).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

async fn show_progress(progress: Arc<Progress>, start: Instant) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut last = 0;
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tick.tick().await;
        let done = progress.done.load(Relaxed);
        let failed = progress.failed.load(Relaxed);
        let line = format!(
            "\r\x1b[2K{:>6.1} s  {done:>10} calls  {:>8}/s  {failed} failed",
            start.elapsed().as_secs_f64(),
            done - last
        );
        let mut err = std::io::stderr();
        let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
        last = done;
    }
}

/// The summary: totals, one row per status, then the percentiles.
fn report(stats: &Stats, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let total: u64 = stats.codes.values().sum();
    let secs = elapsed.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{total} calls in {secs:.2} s: {:.1} calls/s",
        total as f64 / secs
    );
    let _ = writeln!(out, "\n{:<20} {:>12}", "status", "calls");
    for (code, n) in &stats.codes {
        let name = code
            .name()
            .map_or_else(|| format!("code {}", code.0), str::to_ascii_uppercase);
        let _ = writeln!(out, "{name:<20} {n:>12}");
    }
    let _ = writeln!(out, "{:<20} {total:>12}", "total");
    if total > 0 {
        let _ = writeln!(out, "\n{:<20} {:>12}", "latency", "ms");
        let h = &stats.latency;
        let ms = |ns: u64| ns as f64 / 1e6;
        for (label, q) in [
            ("min", 0.0),
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p99.9", 0.999),
        ] {
            let v = if q == 0.0 {
                h.min()
            } else {
                h.value_at_quantile(q)
            };
            let _ = writeln!(out, "{label:<20} {:>12.3}", ms(v));
        }
        let _ = writeln!(out, "{:<20} {:>12.3}", "max", ms(h.max()));
        let _ = writeln!(out, "{:<20} {:>12.3}", "mean", h.mean() / 1e6);
    }
    out
}
