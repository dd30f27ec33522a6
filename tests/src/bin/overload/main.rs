//! Avalanche protection, measured: real servers over loopback, each on a runtime of its own
//! with one worker thread (a core's worth of capacity), driven by open-loop load from a
//! client runtime of one worker.
//!
//! ```text
//! cargo run --release -p svrkit-tests --bin overload -- --quick   # 5 s phases, under a minute
//! cargo run --release -p svrkit-tests --bin overload              # 20 s phases, about 4 min
//! cargo run --release -p svrkit-tests --bin overload -- --only goodput,retry
//! cargo run --release -p svrkit-tests --bin overload -- --only sweep          # all points, about 10 min
//! cargo run --release -p svrkit-tests --bin overload -- --quick --only sweep  # five points
//! ```
//!
//! Scenarios: `goodput` (2x and 5x capacity, overload control on and off, recovery),
//! `priority` (3x with four priorities), `consistency` (one call against four per
//! request), `retry` (a failing backend, alone and at the end of a three-level chain),
//! `weak` (a weak dependency down or slow), `kill` (a replica killed under load) and `sweep`
//! (operating points: handler costs, workers, 2x to 20x, open and closed loops, deadlines;
//! see `sweep.rs`). Each prints one table; `docs/policies.md` explains the rows.

mod sweep;
mod untrusted;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svrkit_runtime::client::RetryConfig;
use svrkit_runtime::policy::AdmissionConfig;
use svrkit_runtime::policy::priority::LEVELS;
use svrkit_runtime::{CallOptions, ChannelOptions, Code, Status};
use svrkit_tests::svrkit::test::overload::{WorkReq, WorkResp, WorkSvrClient};
use svrkit_tests::work::{self, Work};

/// CPU a backend request costs.
pub(crate) const COST_US: u32 = 200;

pub(crate) struct Settings {
    /// How long each overloaded phase lasts.
    pub(crate) phase: Duration,
    /// How long the retry, weak-dependency and replica phases last.
    short: Duration,
    /// How long capacity is measured.
    pub(crate) capacity: Duration,
    /// Print the admission level every 250 ms while loaded.
    trace: bool,
    quick: bool,
    only: Option<Vec<String>>,
}

impl Settings {
    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_owned).collect());
    let settings = Settings {
        phase: Duration::from_secs(if quick { 5 } else { 20 }),
        short: Duration::from_millis(if quick { 1_500 } else { 10_000 }),
        capacity: Duration::from_millis(if quick { 1_500 } else { 5_000 }),
        only,
        trace: args.iter().any(|a| a == "--trace"),
        quick,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load")
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    runtime.block_on(async {
        if settings.wants("goodput") {
            goodput(&settings).await;
        }
        if settings.wants("priority") {
            priority(&settings).await;
        }
        if settings.wants("consistency") {
            consistency(&settings).await;
        }
        if settings.wants("retry") {
            retry_storm(&settings).await;
        }
        if settings.wants("weak") {
            weak(&settings).await;
        }
        if settings.wants("kill") {
            kill(&settings).await;
        }
        if settings.wants("untrusted") {
            untrusted::untrusted(&settings).await;
        }
        if settings.wants("sweep") {
            let points = if settings.quick {
                sweep::quick_points()
            } else {
                sweep::all_points()
            };
            sweep::sweep(&settings, &points).await;
        }
    });
    eprintln!("(all in {:.0?})", started.elapsed());
}

/// What a phase's calls came to.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    by_code: HashMap<u32, u64>,
    /// Refusals by who refused: the caller itself (collaborative, throttled) or the server.
    dropped_here: u64,
    refused_there: u64,
    /// Latencies of the successful calls, in microseconds.
    latencies: Vec<u32>,
    /// When calls failed, from the phase's start.
    pub(crate) failed_at: Vec<Duration>,
    /// When successful calls started, from the phase's start.
    pub(crate) ok_at: Vec<Duration>,
    /// When successful calls ended, from the phase's start: the server's useful work.
    pub(crate) ok_done: Vec<Duration>,
}

impl Tally {
    pub(crate) fn record(
        &mut self,
        result: &Result<WorkResp, Status>,
        latency: Duration,
        at: Duration,
    ) {
        match result {
            Ok(_) => {
                self.ok += 1;
                self.latencies.push(latency.as_micros() as u32);
                self.ok_at.push(at);
                self.ok_done.push(at + latency);
            }
            Err(e) => {
                *self.by_code.entry(e.code().0).or_default() += 1;
                if e.code() == Code::OVERLOADED {
                    if e.message().contains("dropped before sending") {
                        self.dropped_here += 1;
                    } else {
                        self.refused_there += 1;
                    }
                }
                self.failed_at.push(at);
            }
        }
    }

    /// Successes a second among the calls started in the second half of a phase of
    /// `phase`: the rate once the first reaction is over.
    fn steady_rate(&self, phase: Duration) -> f64 {
        let half = phase / 2;
        let ok = self.ok_at.iter().filter(|&&at| at >= half).count();
        ok as f64 / (phase - half).as_secs_f64()
    }

    fn count(&self, code: Code) -> u64 {
        self.by_code.get(&code.0).copied().unwrap_or(0)
    }

    pub(crate) fn total(&self) -> u64 {
        self.ok + self.by_code.values().sum::<u64>()
    }

    pub(crate) fn p99_ms(&mut self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort_unstable();
        let i = (self.latencies.len() * 99 / 100).min(self.latencies.len() - 1);
        f64::from(self.latencies[i]) / 1e3
    }
}

/// Offers `rate` calls a second for `duration`, open loop (a call is started on schedule
/// whether or not earlier ones finished), each made by `call(i)`; waits for all to end.
pub(crate) async fn offer<F, Fut>(rate: f64, duration: Duration, call: F) -> Tally
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<WorkResp, Status>> + Send + 'static,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let fut = call(sent);
            let tally = tally.clone();
            tasks.spawn(async move {
                let began = Instant::now();
                let result = fut.await;
                let at = began.saturating_duration_since(start);
                tally.lock().unwrap().record(&result, began.elapsed(), at);
            });
            sent += 1;
        }
        // Reap what finished, so that the set does not grow with the phase.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(tally)
        .ok()
        .expect("every call ended")
        .into_inner()
        .unwrap()
}

/// Calls in flight at once, for as long as `duration`: a closed loop that finds capacity.
pub(crate) async fn capacity(client: &WorkSvrClient, duration: Duration) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut ok = 0u64;
            let req = WorkReq {
                cost_us: COST_US,
                ..WorkReq::default()
            };
            while start.elapsed() < duration {
                if client.normal(&req).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        });
    }
    let ok: u64 = tasks.join_all().await.into_iter().sum();
    ok as f64 / start.elapsed().as_secs_f64()
}

fn off() -> AdmissionConfig {
    AdmissionConfig {
        enabled: false,
        ..AdmissionConfig::default()
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub(crate) fn random_user() -> u64 {
    random_u64() % 10_000 + 1
}

/// A random number in [0, 1).
pub(crate) fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random `u64`, from the standard library's randomly keyed hasher (no `rand` needed).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

async fn goodput(settings: &Settings) {
    println!("\n## Goodput: offered 2x and 5x capacity, {COST_US} µs of CPU per request\n");
    println!(
        "| overload control | offered | goodput (of capacity) | second half | ok | deadline exceeded | refused by server | dropped by caller | p99 ok | RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, admission) in [("on", AdmissionConfig::default()), ("off", off())] {
        let backend = work::start(Work::new("backend"), admission, 1);
        let client = work::client(&[&backend.addr], ChannelOptions::default());
        let cap = capacity(&client, settings.capacity).await;
        for factor in [2.0, 5.0] {
            let req = WorkReq {
                cost_us: COST_US,
                ..WorkReq::default()
            };
            let client = client.clone();
            let watch = trace_admission(settings, &backend);
            let mut t = offer(cap * factor, settings.phase, move |_| {
                let (client, req) = (client.clone(), req.clone());
                async move {
                    client
                        .normal_with(
                            &req,
                            &CallOptions {
                                user_key: Some(random_user()),
                                ..CallOptions::default()
                            },
                        )
                        .await
                }
            })
            .await;
            if let Some(watch) = watch {
                watch.abort();
            }
            let goodput = t.ok as f64 / settings.phase.as_secs_f64();
            let steady = t.steady_rate(settings.phase);
            let p99 = t.p99_ms();
            println!(
                "| {label} | {factor}x ({:.0}/s) | {:.0}/s ({:.0}%) | {:.0}/s ({:.0}%) | {} | {} | {} | {} | {:.1} ms | {:.0} MiB |",
                cap * factor,
                goodput,
                100.0 * goodput / cap,
                steady,
                100.0 * steady / cap,
                t.ok,
                t.count(Code::DEADLINE_EXCEEDED),
                t.refused_there,
                t.dropped_here,
                p99,
                rss_mib(),
            );
            if label == "on" {
                let would = t.refused_there + t.dropped_here;
                println!(
                    "|   | collaborative rejection: {:.1}% of the refusals dropped at the caller | | | | | | | | |",
                    100.0 * t.dropped_here as f64 / would.max(1) as f64
                );
            }
        }
        if label == "on" {
            recovery(&backend, &client, cap).await;
        }
        println!("|   | capacity measured: {cap:.0}/s | | | | | | | | |");
    }
}

/// With `--trace`, prints the server's admission level every 250 ms until dropped.
pub(crate) fn trace_admission(
    settings: &Settings,
    backend: &work::Running,
) -> Option<tokio::task::AbortHandle> {
    if !settings.trace {
        return None;
    }
    let server = backend.server.clone();
    let start = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(w) = server.admission().and_then(|a| a.last_window()) {
                eprintln!(
                    "  {:>5.2}s level {:>3} window of {:?}: {} requests, {} started, {} on a free worker, {} late, queue wait {:.1?}",
                    start.elapsed().as_secs_f64(),
                    w.level,
                    w.length,
                    w.requests,
                    w.started,
                    w.spare,
                    w.late,
                    w.queue_wait,
                );
            }
        }
    });
    Some(task.abort_handle())
}

/// After the overload: light load, until the server is out of overload and admits all.
async fn recovery(backend: &work::Running, client: &WorkSvrClient, cap: f64) {
    let admission = backend.server.admission().expect("on");
    let ended = Instant::now();
    let client = client.clone();
    let watch = async {
        let mut calm = None;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if calm.is_none() && !admission.is_overloaded() {
                calm = Some(ended.elapsed());
            }
            if admission.level() == LEVELS {
                return (calm, Some(ended.elapsed()));
            }
            if ended.elapsed() > Duration::from_secs(10) {
                return (calm, None);
            }
        }
    };
    let load = offer(cap * 0.5, Duration::from_secs(10), move |_| {
        let client = client.clone();
        async move {
            client
                .normal(&WorkReq {
                    cost_us: COST_US,
                    ..WorkReq::default()
                })
                .await
        }
    });
    let (calm, open) = tokio::select! {
        r = watch => r,
        _ = load => (None, None),
    };
    println!(
        "|   | recovery at 0.5x: not overloaded after {}, all admitted after {} (windows of 1 s) | | | | | | | | |",
        calm.map_or("-".into(), |d| format!("{d:.1?}")),
        open.map_or("over 10 s".into(), |d| format!("{d:.1?}")),
    );
}

async fn priority(settings: &Settings) {
    println!("\n## Priority: 3x capacity, a quarter each critical, high, normal, low\n");
    let backend = work::start(Work::new("backend"), AdmissionConfig::default(), 1);
    let client = work::client(&[&backend.addr], ChannelOptions::default());
    let cap = capacity(&client, settings.capacity).await;
    // (class, user) -> (admitted, shed)
    type Outcomes = HashMap<(u64, u64), (u64, u64)>;
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let per_class: Arc<Mutex<[Tally; 4]>> = Arc::default();
    let (c, o, p) = (client.clone(), outcomes.clone(), per_class.clone());
    let watch = trace_admission(settings, &backend);
    let begun = Instant::now();
    let phase = settings.phase;
    offer(cap * 3.0, settings.phase, move |i| {
        let (client, outcomes, per_class) = (c.clone(), o.clone(), p.clone());
        let class = i % 4;
        let at = begun.elapsed();
        let key = random_user();
        async move {
            let req = WorkReq {
                cost_us: COST_US,
                ..WorkReq::default()
            };
            let options = CallOptions {
                user_key: Some(key),
                ..CallOptions::default()
            };
            let result = match class {
                0 => client.critical_with(&req, &options).await,
                1 => client.high_with(&req, &options).await,
                2 => client.normal_with(&req, &options).await,
                _ => client.low_with(&req, &options).await,
            };
            let ok = result.is_ok();
            per_class.lock().unwrap()[class as usize].record(&result, Duration::ZERO, at);
            if at < phase / 2 {
                // The users' outcomes are counted once the level has settled.
                return result;
            }
            let mut o = outcomes.lock().unwrap();
            let e = o.entry((class, key)).or_default();
            if ok {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            result
        }
    })
    .await;
    if let Some(watch) = watch {
        watch.abort();
    }
    println!(
        "| class | requests | success | second half | dropped by caller | refused by server | deadline exceeded | users with both outcomes (second half; of users seen twice) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let pc = per_class.lock().unwrap();
    let outcomes = outcomes.lock().unwrap();
    for (class, name) in ["critical", "high", "normal", "low"].iter().enumerate() {
        let t = &pc[class];
        let (n, ok) = (t.total(), t.ok);
        let users: Vec<_> = outcomes
            .iter()
            .filter(|((c, _), (a, b))| *c == class as u64 && a + b >= 2)
            .collect();
        let mixed = users.iter().filter(|(_, (a, b))| *a > 0 && *b > 0).count();
        let half = t
            .ok_at
            .iter()
            .filter(|&&at| at >= settings.phase / 2)
            .count() as f64;
        let sent_half = (t
            .failed_at
            .iter()
            .filter(|&&at| at >= settings.phase / 2)
            .count() as f64)
            + half;
        println!(
            "| {name} | {n} | {:.2}% | {:.2}% | {} | {} | {} | {mixed} of {} |",
            100.0 * ok as f64 / n.max(1) as f64,
            100.0 * half / sent_half.max(1.0),
            t.dropped_here,
            t.refused_there,
            t.count(Code::DEADLINE_EXCEEDED),
            users.len()
        );
    }
    println!("(capacity {cap:.0}/s, offered {:.0}/s)", cap * 3.0);
}

async fn consistency(settings: &Settings) {
    println!("\n## Consistency: entries calling an overloaded backend once or four times\n");
    let backend = work::start(Work::new("backend"), AdmissionConfig::default(), 1);
    let direct = work::client(&[&backend.addr], ChannelOptions::default());
    let cap = capacity(&direct, settings.capacity).await;
    let front = work::start(
        Work {
            downstream: Some(work::client(&[&backend.addr], ChannelOptions::default())),
            ..Work::new("front")
        },
        AdmissionConfig::default(),
        1,
    );
    let client = work::client(&[&front.addr], ChannelOptions::default());
    // Half the entries call once, half four times: 2.5 backend calls per entry on average;
    // offered to make 3x the backend's capacity.
    let rate = cap * 3.0 / 2.5;
    let results: Arc<Mutex<[(u64, u64); 2]>> = Arc::default();
    let r = results.clone();
    offer(rate, settings.phase, move |i| {
        let (client, results) = (client.clone(), r.clone());
        let four = i % 2 == 1;
        async move {
            let req = WorkReq {
                cost_us: COST_US,
                calls: if four { 4 } else { 1 },
                ..WorkReq::default()
            };
            let result = client
                .fan_with(
                    &req,
                    &CallOptions {
                        user_key: Some(random_user()),
                        ..CallOptions::default()
                    },
                )
                .await;
            let mut r = results.lock().unwrap();
            r[usize::from(four)].0 += 1;
            r[usize::from(four)].1 += u64::from(result.is_ok());
            result
        }
    })
    .await;
    let r = *results.lock().unwrap();
    let p1 = r[0].1 as f64 / r[0].0.max(1) as f64;
    let p4 = r[1].1 as f64 / r[1].0.max(1) as f64;
    println!("| entry | requests | success | if each call were shed alone (p^4) |");
    println!("|---|---|---|---|");
    println!("| one call | {} | {:.1}% | |", r[0].0, 100.0 * p1);
    println!(
        "| four calls | {} | {:.1}% | {:.1}% |",
        r[1].0,
        100.0 * p4,
        100.0 * p1.powi(4)
    );
}

fn retry_options(throttle: bool) -> ChannelOptions {
    ChannelOptions {
        throttle: throttle.then_some(2.0),
        retry: RetryConfig::default(),
        ..ChannelOptions::default()
    }
}

async fn retry_storm(settings: &Settings) {
    println!(
        "\n## Retry storm: the backend fails every call (UNAVAILABLE); `Get` allows 3 attempts\n"
    );
    println!("| setup | calls made | requests at the failing backend | ratio |");
    println!("|---|---|---|---|");
    let rate = 2_000.0;
    for throttle in [false, true] {
        let backend = work::start(Work::new("backend"), AdmissionConfig::default(), 1);
        backend.fail_with(Code::UNAVAILABLE);
        let client = work::client(&[&backend.addr], retry_options(throttle));
        let t = offer(rate, settings.short, move |_| {
            let client = client.clone();
            async move { client.get(&WorkReq::default()).await }
        })
        .await;
        let at = backend.seen.served.load(Ordering::SeqCst);
        println!(
            "| one level, throttling {} | {} | {} | {:.2}x |",
            if throttle { "on" } else { "off" },
            t.total(),
            at,
            at as f64 / t.total() as f64
        );
    }
    for throttle in [false, true] {
        let leaf = work::start(Work::new("leaf"), AdmissionConfig::default(), 1);
        leaf.fail_with(Code::UNAVAILABLE);
        let middle = work::start(
            Work::calling("middle", &leaf, retry_options(throttle)),
            AdmissionConfig::default(),
            1,
        );
        let top = work::start(
            Work::calling("top", &middle, retry_options(throttle)),
            AdmissionConfig::default(),
            1,
        );
        let client = work::client(&[&top.addr], retry_options(throttle));
        let t = offer(rate, settings.short, move |_| {
            let client = client.clone();
            async move { client.get(&WorkReq::default()).await }
        })
        .await;
        let at = leaf.seen.served.load(Ordering::SeqCst);
        println!(
            "| three levels, throttling {} | {} | {} (top {}, middle {}) | {:.2}x |",
            if throttle { "on" } else { "off" },
            t.total(),
            at,
            top.seen.served.load(Ordering::SeqCst),
            middle.seen.served.load(Ordering::SeqCst),
            at as f64 / t.total() as f64
        );
    }
}

async fn weak(settings: &Settings) {
    println!(
        "\n## Weak dependency: `Lean` does its own work and calls a weak dependency (50 ms)\n"
    );
    println!("| dependency | calls | success | skipped | p99 |");
    println!("|---|---|---|---|---|");
    let rate = 1_000.0;
    for state in ["healthy", "2 s slow", "down"] {
        let dependency = work::start(Work::new("dependency"), AdmissionConfig::default(), 1);
        let front = work::start(
            Work {
                weak: Some((
                    work::client(&[&dependency.addr], ChannelOptions::default()),
                    Duration::from_millis(50),
                )),
                ..Work::new("front")
            },
            AdmissionConfig::default(),
            1,
        );
        match state {
            "2 s slow" => dependency.behaviour.delay_ms.store(2_000, Ordering::SeqCst),
            "down" => dependency.kill(),
            _ => {}
        }
        let client = work::client(&[&front.addr], ChannelOptions::default());
        let watch = trace_admission(settings, &front);
        let skipped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = skipped.clone();
        let mut t = offer(rate, settings.short, move |_| {
            let (client, skipped) = (client.clone(), s.clone());
            async move {
                let r = client
                    .lean(&WorkReq {
                        cost_us: 50,
                        ..WorkReq::default()
                    })
                    .await;
                if r.as_ref().is_ok_and(|r| r.skipped) {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
                r
            }
        })
        .await;
        if let Some(watch) = watch {
            watch.abort();
        }
        println!(
            "| {state} | {} | {:.2}% | {} | {:.1} ms |",
            t.total(),
            100.0 * t.ok as f64 / t.total().max(1) as f64,
            skipped.load(Ordering::Relaxed),
            t.p99_ms()
        );
    }
}

async fn kill(settings: &Settings) {
    println!(
        "\n## Replica killed under load: three replicas, power of two choices, `Normal` (not retried)\n"
    );
    let mut replicas: Vec<_> = (0..3)
        .map(|i| work::start(Work::new(&format!("r{i}")), AdmissionConfig::default(), 1))
        .collect();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let client = work::client(&addrs, ChannelOptions::default());
    let rate = 3_000.0;
    let c = client.clone();
    let load = tokio::spawn(offer(rate, settings.short, move |_| {
        let client = c.clone();
        async move {
            client
                .normal(&WorkReq {
                    cost_us: 50,
                    ..WorkReq::default()
                })
                .await
        }
    }));
    tokio::time::sleep(settings.short / 3).await;
    replicas.pop().expect("three").kill();
    let t = load.await.expect("the load");
    let since_start = settings.short / 3;
    let after: Vec<Duration> = t
        .failed_at
        .iter()
        .filter_map(|at| at.checked_sub(since_start))
        .collect();
    let last = after.iter().max().copied();
    println!("| calls | ok | failed | failed after the kill | last failure after the kill |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} |",
        t.total(),
        t.ok,
        t.total() - t.ok,
        after.len(),
        last.map_or("-".into(), |d| format!("{d:.0?}"))
    );
}
