//! The operating-point sweep: overload control across handler costs, worker threads, load
//! levels, open and closed loops and deadlines, each point on a fresh server.
//!
//! Per point: capacity is measured closed-loop (32 calls in flight, 256 for a server that does
//! thousands a second), then load is offered for a phase:
//! - **open loop**: `factor` times capacity, calls started on schedule whatever happens, at
//!   most 50,000 a second (the generator's one thread falls behind past that; the table
//!   says when a point was capped);
//! - **closed loop**: `factor × capacity × deadline` callers (at most 4,000), each sending
//!   its next call when the last returns; after a refusal it backs off as client libraries
//!   do, 10 ms doubling to 320 ms, each wait spread ±50% (a caller that retried at once, or
//!   every 10 ms, would measure the client's loop, not the server).
//!
//! Goodput counts successful calls by when they ended (what the server did of use in that
//! time): over the first second, the first five (the whole phase if shorter) and the second
//! half (steady state), as a share of capacity; for a sleeping handler, which has no
//! capacity of its own, as a share of what was offered. Queue wait is the server's (frame read to handler start, p99 over the phase);
//! latency the client's, of successful calls. Recovery is the time from the end of the load
//! to the first success of a fresh call sent every 5 ms. `SWEEP_TIMELINE=1` also prints
//! each point's successes and failures per 100 ms of its first two seconds;
//! `SWEEP_RECOVERY=1` each recovery call, when it was sent and how it ended (the caller's
//! copy of the level, its throttle, the server's queue: what held recovery back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svrkit_runtime::metrics;
use svrkit_runtime::policy::AdmissionConfig;
use svrkit_runtime::{CallOptions, ChannelOptions, Code};
use svrkit_tests::svrkit::test::overload::{WorkReq, WorkSvrClient};
use svrkit_tests::work::{self, Work};

use crate::{Settings, Tally, offer};

/// The most calls a second the open-loop generator offers: its one worker thread starts a
/// task per call, and past this it falls behind its own schedule and measures itself.
const MAX_OPEN_RATE: f64 = 50_000.0;

/// What a handler spends.
#[derive(Clone, Copy)]
pub(crate) enum Cost {
    /// CPU, in microseconds, without awaiting.
    Cpu(u32),
    /// Waiting (a timer), in milliseconds: no CPU, so no overload of its own.
    Sleep(u64),
}

/// One operating point.
#[derive(Clone, Copy)]
pub(crate) struct Point {
    pub(crate) cost: Cost,
    pub(crate) workers: usize,
    pub(crate) factor: f64,
    pub(crate) closed: bool,
    pub(crate) deadline: Duration,
}

impl Point {
    fn handler(&self) -> String {
        match self.cost {
            Cost::Cpu(us) if us >= 1000 => format!("{} ms CPU", us / 1000),
            Cost::Cpu(us) => format!("{us} µs CPU"),
            Cost::Sleep(ms) => format!("{ms} ms sleep"),
        }
    }
}

/// The points `--quick` runs: the tuned point, the 5 ms closed loop, a steep open
/// loop on two workers, a cheap handler with short deadlines, and a sleeping handler.
pub(crate) fn quick_points() -> Vec<Point> {
    let s2 = Duration::from_secs(2);
    let ms100 = Duration::from_millis(100);
    vec![
        point(Cost::Cpu(200), 1, 5.0, false, s2),
        point(Cost::Cpu(5_000), 1, 5.0, true, s2),
        point(Cost::Cpu(1_000), 2, 20.0, false, ms100),
        point(Cost::Cpu(50), 1, 2.0, true, ms100),
        point(Cost::Sleep(5), 1, 2.0, false, s2),
    ]
}

/// The full sweep: every cost at 2x, 5x and 20x, open and closed, one worker and 2 s
/// deadlines; then two workers, 100 ms deadlines and sleeping handlers at 5x.
pub(crate) fn all_points() -> Vec<Point> {
    let s2 = Duration::from_secs(2);
    let ms100 = Duration::from_millis(100);
    let costs = [
        Cost::Cpu(50),
        Cost::Cpu(1_000),
        Cost::Cpu(5_000),
        Cost::Cpu(20_000),
    ];
    let mut points = Vec::new();
    for cost in costs {
        for factor in [2.0, 5.0, 20.0] {
            for closed in [false, true] {
                points.push(point(cost, 1, factor, closed, s2));
            }
        }
    }
    for cost in costs {
        points.push(point(cost, 2, 5.0, false, s2));
        points.push(point(cost, 2, 5.0, true, s2));
        points.push(point(cost, 1, 5.0, false, ms100));
        points.push(point(cost, 1, 5.0, true, ms100));
    }
    points.push(point(Cost::Sleep(5), 1, 5.0, false, s2));
    points.push(point(Cost::Sleep(5), 1, 5.0, true, s2));
    points
}

fn point(cost: Cost, workers: usize, factor: f64, closed: bool, deadline: Duration) -> Point {
    Point {
        cost,
        workers,
        factor,
        closed,
        deadline,
    }
}

pub(crate) async fn sweep(settings: &Settings, points: &[Point]) {
    println!("\n## Operating points: overload control from 2x to 20x\n");
    println!(
        "| handler | workers | load | deadline | capacity | goodput 1st s | first 5 s | steady | p99 queue wait | p99 ok latency | recovery |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // `SWEEP_MATCH=closed` (say) runs only the points whose description contains it.
    let only = std::env::var("SWEEP_MATCH").ok();
    for p in points {
        let name = format!(
            "{} {}w {}x {}",
            p.handler(),
            p.workers,
            p.factor,
            if p.closed { "closed" } else { "open" }
        );
        if only.as_ref().is_none_or(|o| name.contains(o.as_str())) {
            run(settings, p).await;
        }
    }
}

fn request(p: &Point) -> WorkReq {
    WorkReq {
        cost_us: match p.cost {
            Cost::Cpu(us) => us,
            Cost::Sleep(_) => 0,
        },
        ..WorkReq::default()
    }
}

/// Calls in flight at once for `duration`: what the server completes a second. 32 in
/// flight, or 256 for a server that does thousands a second (cheap handlers serve more when
/// more calls share each read and write).
///
/// A sleeping handler's capacity is what 32 calls in flight get, always: that is the row's
/// definition (its load is a multiple of it, and the server serves more, unshed). Deciding
/// by the first figure flipped it: 32 sleeps of 5 ms make about 5,000 a second, on either
/// side of the threshold from run to run, and the row's capacity jumped sevenfold.
async fn capacity(client: &WorkSvrClient, req: &WorkReq, cost: Cost, duration: Duration) -> f64 {
    let first = capacity_with(client, req, duration / 2, 32).await;
    if first < 5_000.0 || matches!(cost, Cost::Sleep(_)) {
        return first;
    }
    capacity_with(client, req, duration / 2, 256).await
}

async fn capacity_with(
    client: &WorkSvrClient,
    req: &WorkReq,
    duration: Duration,
    in_flight: usize,
) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (client, req) = (client.clone(), req.clone());
        tasks.spawn(async move {
            let mut ok = 0u64;
            let options = CallOptions::timeout(Duration::from_secs(5));
            while start.elapsed() < duration {
                if client.normal_with(&req, &options).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        });
    }
    let ok: u64 = tasks.join_all().await.into_iter().sum();
    ok as f64 / start.elapsed().as_secs_f64()
}

/// `callers` callers, each calling again when its last call returns, until `duration`.
///
/// A refused caller waits before it calls again, as client libraries do: 10 ms, doubling
/// with each refusal in a row up to [`MOST_BACKOFF`], each wait spread ±50% by jitter
/// (5-480 ms in all). (With a fixed 10 ms, the
/// two thousand callers a slow server refuses made 170,000 refused calls a second, and the
/// tool's one client thread, at 100% of its core, sent the admitted callers' calls late:
/// the server idled at levels that admitted more than it could serve.)
async fn closed_loop(
    client: &WorkSvrClient,
    req: &WorkReq,
    callers: usize,
    duration: Duration,
    deadline: Duration,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..callers {
        let (client, req, tally) = (client.clone(), req.clone(), tally.clone());
        tasks.spawn(async move {
            let options = CallOptions {
                timeout: Some(deadline),
                user_key: Some(i as u64 + 1),
                ..CallOptions::default()
            };
            let mut refusals = 0u32;
            while start.elapsed() < duration {
                let began = Instant::now();
                let result = client.normal_with(&req, &options).await;
                let at = began.saturating_duration_since(start);
                let refused = matches!(&result, Err(e) if e.code() == Code::OVERLOADED);
                tally.lock().unwrap().record(&result, began.elapsed(), at);
                if refused {
                    let backoff = (Duration::from_millis(10) * (1 << refusals.min(5)))
                        .min(MOST_BACKOFF)
                        .mul_f64(0.5 + crate::random_unit());
                    refusals += 1;
                    tokio::time::sleep(backoff).await;
                } else {
                    refusals = 0;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(tally)
        .ok()
        .expect("every caller ended")
        .into_inner()
        .unwrap()
}

/// The longest backoff of a refused closed-loop caller, before its jitter (10 ms × 2^5).
const MOST_BACKOFF: Duration = Duration::from_millis(320);

/// From now, a fresh call every 5 ms until one succeeds (at most 10 s): how long it took.
async fn recovery(client: &WorkSvrClient, req: &WorkReq, deadline: Duration) -> Option<Duration> {
    let ended = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    while ended.elapsed() < Duration::from_secs(10) && !done.load(Ordering::Relaxed) {
        let (client, req, done) = (client.clone(), req.clone(), done.clone());
        tasks.spawn(async move {
            let sent = ended.elapsed();
            let result = client
                .normal_with(&req, &CallOptions::timeout(deadline))
                .await;
            if std::env::var_os("SWEEP_RECOVERY").is_some() {
                let outcome = result
                    .as_ref()
                    .map_or_else(|e| e.message().to_string(), |_| "ok".into());
                eprintln!(
                    "  recovery call sent at {sent:.1?}, ended at {:.1?}: {outcome}",
                    ended.elapsed()
                );
            }
            let ok = result.is_ok();
            if ok {
                done.store(true, Ordering::Relaxed);
            }
            ok.then(Instant::now)
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut first: Option<Instant> = None;
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(at)) = r {
            first = Some(first.map_or(at, |f| f.min(at)));
        }
    }
    first.map(|at| at.saturating_duration_since(ended))
}

/// How long a point's load lasts: five seconds quick, ten otherwise (the first five and a
/// steady second half), whatever the other scenarios' phases.
fn phase(settings: &Settings) -> Duration {
    settings.phase.min(Duration::from_secs(10))
}

async fn run(settings: &Settings, p: &Point) {
    let backend = work::start(Work::new("sweep"), AdmissionConfig::default(), p.workers);
    if let Cost::Sleep(ms) = p.cost {
        backend.behaviour.delay_ms.store(ms, Ordering::SeqCst);
    }
    let client = work::client(&[&backend.addr], ChannelOptions::default());
    let req = request(p);
    let cap = capacity(
        &client,
        &req,
        p.cost,
        settings.capacity.min(Duration::from_secs(2)),
    )
    .await;
    let method = &WorkSvrClient::DESCRIPTOR.methods[2];
    assert_eq!(method.name, "Normal");
    let queue_before = metrics::find_method(method).map(|m| m.server_totals().queue_wait);

    let phase = phase(settings);
    let watch = crate::trace_admission(settings, &backend);
    let load = {
        let (client, req, p) = (client.clone(), req.clone(), *p);
        tokio::spawn(async move {
            if p.closed {
                let callers =
                    ((p.factor * cap * p.deadline.as_secs_f64()) as usize).clamp(1, 4_000);
                closed_loop(&client, &req, callers, phase, p.deadline).await
            } else {
                let options = CallOptions::timeout(p.deadline);
                offer((p.factor * cap).min(MAX_OPEN_RATE), phase, move |i| {
                    let (client, req) = (client.clone(), req.clone());
                    let options = CallOptions {
                        user_key: Some(i % 10_000 + 1),
                        ..options.clone()
                    };
                    async move { client.normal_with(&req, &options).await }
                })
                .await
            }
        })
    };
    tokio::time::sleep(phase).await;
    let recovered = recovery(&client, &req, p.deadline).await;
    if let Some(watch) = watch {
        watch.abort();
    }
    let mut tally = load.await.expect("the load ran");
    let queue = metrics::find_method(method)
        .zip(queue_before)
        .map(|(m, before)| m.server_totals().queue_wait.since(&before));

    let share = |from: Duration, to: Duration| {
        let ok = tally
            .ok_done
            .iter()
            .filter(|&&at| at >= from && at < to)
            .count();
        let of = match p.cost {
            Cost::Sleep(_) => cap * p.factor,
            Cost::Cpu(_) => cap,
        };
        100.0 * ok as f64 / (to - from).as_secs_f64() / of
    };
    if std::env::var_os("SWEEP_TIMELINE").is_some() {
        let buckets: Vec<String> = (0..20)
            .map(|i| {
                let (a, b) = (
                    Duration::from_millis(i * 100),
                    Duration::from_millis(i * 100 + 100),
                );
                let ok = tally
                    .ok_done
                    .iter()
                    .filter(|&&at| at >= a && at < b)
                    .count();
                let failed = tally
                    .failed_at
                    .iter()
                    .filter(|&&at| at >= a && at < b)
                    .count();
                format!("{}/{}", ok, failed)
            })
            .collect();
        eprintln!("  ok/failed per 100 ms: {}", buckets.join(" "));
    }
    let first = share(Duration::ZERO, Duration::from_secs(1).min(phase));
    let five = share(Duration::ZERO, Duration::from_secs(5).min(phase));
    let steady = share(phase / 2, phase);
    let load = if p.closed {
        format!("{}x closed", p.factor)
    } else if p.factor * cap > MAX_OPEN_RATE {
        format!("{}x open (capped: {:.1}x)", p.factor, MAX_OPEN_RATE / cap)
    } else {
        format!("{}x open", p.factor)
    };
    println!(
        "| {} | {} | {load} | {:?} | {:.0}/s | {first:.0}% | {five:.0}% | {steady:.0}% | {} | {:.1} ms | {} |",
        p.handler(),
        p.workers,
        p.deadline,
        cap,
        queue.map_or("-".to_owned(), |q| format!("{:.1} ms", q.quantile_ms(0.99))),
        tally.p99_ms(),
        recovered.map_or("over 10 s".to_owned(), |d| format!(
            "{:.0} ms",
            d.as_secs_f64() * 1e3
        )),
    );
}
