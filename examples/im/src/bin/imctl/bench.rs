//! `imctl bench`: registers users, then drives sends (closed loop, `-c` at a time) while
//! every user long-polls its inbox, and probes the sequence allocator at a fixed rate.
//! Prints a progress line each second, then throughput, latency percentiles, and whether
//! every acknowledged message was delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use svrkit_im::im::gateway::{Credentials, GatewaySvrClient, SendReq, SyncReq};
use svrkit_im::im::seq::{AllocReq, SeqAllocSvrClient};
use svrkit_runtime::{CallOptions, Channel, ChannelOptions, Code};

/// `imctl bench` options.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Users to register and send between.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Sends in flight at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// How long to send for (`10s`, `500ms`, `2m`).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Connections to the gateway.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    /// The address of the sequence allocator (`im-server --internal-listen`), to probe its
    /// latency over the network while the load runs.
    #[arg(long)]
    seq_addr: Option<String>,
    /// Allocations a second the probe asks for, at fixed times.
    #[arg(long, default_value_t = 1000)]
    seq_rate: u32,
    /// The backend's admin address: reads, from its metrics, the latency of the sequence
    /// allocations the message service made during the run (through the RPC stubs).
    #[arg(long)]
    admin: Option<String>,
    /// Keeps every acknowledged send and every delivery, and ends with one line of
    /// `key=value` counts: acknowledged, lost, delivered twice, delivered out of order
    /// within a conversation, sequence regressions, and the longest time a user could not
    /// send (`deploy/chaos.sh` reads it).
    #[arg(long)]
    check: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: the unit is ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

struct User {
    uid: u64,
    token: svrkit_runtime::FastStr,
    /// Messages acknowledged to this user, and received by its sync.
    acked: AtomicU64,
    received: AtomicU64,
    /// With `--check`: what its sync received, in order, and since when its sends fail.
    ledger: crate::ledger::UserLedger,
}

/// A small fast generator (xorshift64*), seeded from the OS.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap_or_default();
        Rng(u64::from_le_bytes(seed) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        usize::try_from((u128::from(x) * n as u128) >> 64).unwrap_or(0)
    }
}

/// Percentiles of microsecond samples, as a line.
fn percentiles(samples: &mut [u32]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[i]) / 1000.0
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

pub(crate) async fn run(at: &crate::Gateways<'_>, args: BenchArgs) -> Result<(), String> {
    if args.users < 2 {
        return Err("--users: at least 2".into());
    }
    let client = crate::gateway(at, args.connections)?;
    let users = register(&client, args.users).await?;
    let text: svrkit_runtime::FastStr = "x".repeat(args.text_bytes.max(1)).into();

    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop_syncing = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));

    let syncers: Vec<_> = users
        .iter()
        .map(|user| {
            let (client, user, stop) = (client.clone(), user.clone(), stop_syncing.clone());
            tokio::spawn(async move { sync_loop(&client, &user, &stop).await })
        })
        .collect();

    let probe = args.seq_addr.as_ref().map(|seq_addr| {
        let options = ChannelOptions {
            caller: "imctl-bench".into(),
            ..ChannelOptions::default()
        };
        let seq = SeqAllocSvrClient::new(Channel::lazy([seq_addr.clone()], options));
        let (users, stop, rate) = (users.clone(), stop_sending.clone(), args.seq_rate.max(1));
        tokio::spawn(async move { seq_probe(&seq, &users, &stop, rate).await })
    });

    let before = match &args.admin {
        Some(admin) => Some(alloc_buckets(admin).await?),
        None => None,
    };
    let started = Instant::now();
    let senders: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, users, text) = (client.clone(), users.clone(), text.clone());
            let (stop, sent, failed) = (stop_sending.clone(), sent.clone(), failed.clone());
            let check = args.check;
            tokio::spawn(async move {
                send_loop(&client, &users, &text, &stop, &sent, &failed, check).await
            })
        })
        .collect();

    let mut last = 0;
    while started.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_secs(1).min(args.duration - started.elapsed())).await;
        let now = sent.load(Ordering::Relaxed);
        eprint!(
            "\r[{:>5.1} s] sends {:>8}/s, {} acknowledged, {} failed   ",
            started.elapsed().as_secs_f64(),
            now - last,
            now,
            failed.load(Ordering::Relaxed)
        );
        last = now;
    }
    stop_sending.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = std::collections::BTreeMap::<Code, u64>::new();
    let mut ledger = Vec::new();
    for sender in senders {
        let (samples, errs, sends) = sender.await.map_err(|e| e.to_string())?;
        latencies.extend(samples);
        ledger.extend(sends);
        for (code, n) in errs {
            *errors.entry(code).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    eprintln!();

    // Every acknowledged message must reach its recipient's sync.
    let wait_from = Instant::now();
    let all_delivered = || {
        users
            .iter()
            .all(|u| u.received.load(Ordering::Relaxed) >= u.acked.load(Ordering::Relaxed))
    };
    // A checked run may end in the middle of a failover: it waits longer before it calls
    // an undelivered message lost.
    let patience = Duration::from_secs(if args.check { 45 } else { 10 });
    while !all_delivered() && wait_from.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_syncing.store(true, Ordering::Relaxed);
    let mut delivery = Vec::new();
    for syncer in syncers {
        delivery.extend(syncer.await.map_err(|e| e.to_string())?);
    }
    let checked = args.check.then(|| {
        let received = users.iter().map(|u| (u.uid, u.ledger.received())).collect();
        let longest = users
            .iter()
            .map(|u| u.ledger.longest_outage(Instant::now()))
            .max()
            .unwrap_or_default();
        crate::ledger::Report::of(&ledger, &received, longest)
    });
    let acked: u64 = users.iter().map(|u| u.acked.load(Ordering::Relaxed)).sum();
    let received: u64 = users
        .iter()
        .map(|u| u.received.load(Ordering::Relaxed))
        .sum();
    // Per user: fewer received than acknowledged is a loss; more is a send that failed
    // at the client after the backend stored it (at-least-once, as it should be).
    let (mut missing, mut unacked) = (0u64, 0u64);
    for u in users.iter() {
        let (a, r) = (
            u.acked.load(Ordering::Relaxed),
            u.received.load(Ordering::Relaxed),
        );
        missing += a.saturating_sub(r);
        unacked += r.saturating_sub(a);
    }

    let n = latencies.len();
    println!(
        "sends: {n} acknowledged in {:.1} s = {:.0}/s with {} at once over {} connection(s), {} users",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        args.concurrency,
        args.connections,
        args.users
    );
    println!("send latency: {}", percentiles(&mut latencies));
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|(c, n)| format!("{n} {c:?}")).collect();
        println!("send failures: {}", list.join(", "));
    }
    println!(
        "delivered: {} of {acked} acknowledged messages by long-polling syncs ({})",
        received - unacked,
        if missing == 0 {
            "all".to_owned()
        } else {
            format!("{missing} MISSING")
        }
    );
    if unacked > 0 {
        println!(
            "also delivered: {unacked} messages whose sends failed at this client after the backend stored them"
        );
    }
    println!(
        "delivery (store to sync) latency, ms resolution: {}",
        percentiles(&mut delivery)
    );
    if let (Some(admin), Some(before)) = (&args.admin, before) {
        let after = alloc_buckets(admin).await?;
        println!(
            "seq alloc as the message service called it: {}",
            bucket_line(&before, &after)
        );
    }
    if let Some(probe) = probe {
        let mut samples = probe.await.map_err(|e| e.to_string())?;
        println!(
            "seq alloc over the network, {} probes at {}/s: {}",
            samples.len(),
            args.seq_rate,
            percentiles(&mut samples)
        );
    }
    if args.check {
        let windows = users
            .iter()
            .flat_map(|u| u.ledger.windows(Instant::now()))
            .collect();
        let list: Vec<String> = crate::ledger::outages(windows, started)
            .iter()
            .take(8)
            .map(|(at, length)| {
                format!("{:.1} s at {:.1} s", length.as_secs_f64(), at.as_secs_f64())
            })
            .collect();
        println!(
            "outages (some user's sends failing; length at time into the run): {}",
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(", ")
            }
        );
    }
    if let Some(report) = checked {
        println!("{report}");
        if !report.clean() {
            return Err("the check found acknowledged messages lost, repeated or reordered".into());
        }
    }
    if missing != 0 {
        return Err("some acknowledged messages were not delivered".into());
    }
    Ok(())
}

async fn register(client: &GatewaySvrClient, n: usize) -> Result<Arc<[Arc<User>]>, String> {
    let run = crate::message_id();
    let password: svrkit_runtime::FastStr = "bench-password".into();
    let done = Arc::new(AtomicU64::new(0));
    // Registration and login hash passwords (argon2): a few at a time keeps the server's
    // cores busy without queueing past deadlines.
    let batches = n.div_ceil(4);
    let mut users = Vec::with_capacity(n);
    for batch in 0..batches {
        let mut tasks = Vec::new();
        for i in batch * 4..((batch + 1) * 4).min(n) {
            let (client, password, done) = (client.clone(), password.clone(), done.clone());
            let name: svrkit_runtime::FastStr = format!("b{}-{i}", &run[..8]).into();
            tasks.push(tokio::spawn(async move {
                let credentials = Credentials {
                    name,
                    password,
                    ..Credentials::default()
                };
                client.register(&credentials).await?;
                let login = client.login(&credentials).await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, svrkit_runtime::Status>(Arc::new(User {
                    uid: login.uid,
                    token: login.token,
                    acked: AtomicU64::new(0),
                    received: AtomicU64::new(0),
                    ledger: crate::ledger::UserLedger::default(),
                }))
            }));
        }
        for task in tasks {
            let user = task
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("registering users: {e}"))?;
            users.push(user);
        }
        eprint!(
            "\rregistered and logged in {}/{n} users",
            done.load(Ordering::Relaxed)
        );
    }
    eprintln!();
    Ok(users.into())
}

async fn send_loop(
    client: &GatewaySvrClient,
    users: &[Arc<User>],
    text: &svrkit_runtime::FastStr,
    stop: &AtomicBool,
    sent: &AtomicU64,
    failed: &AtomicU64,
    check: bool,
) -> (
    Vec<u32>,
    std::collections::BTreeMap<Code, u64>,
    Vec<crate::ledger::Sent>,
) {
    let mut rng = Rng::new();
    let mut sends = Vec::new();
    let mut samples = Vec::with_capacity(1 << 16);
    let mut errors = std::collections::BTreeMap::new();
    let prefix = crate::message_id();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let from = &users[rng.below(users.len())];
        let mut to = &users[rng.below(users.len() - 1)];
        if to.uid == from.uid {
            to = &users[users.len() - 1];
        }
        n += 1;
        let request = SendReq {
            token: from.token.clone(),
            to_uid: to.uid,
            client_msg_id: format!("{prefix}-{n}").into(),
            text: text.clone(),
            ..SendReq::default()
        };
        let options = CallOptions {
            user_key: Some(from.uid),
            ..CallOptions::default()
        };
        let start = Instant::now();
        match client.send_with(&request, &options).await {
            Ok(resp) => {
                let acked = Instant::now();
                samples.push(micros(acked - start));
                to.acked.fetch_add(1, Ordering::Relaxed);
                sent.fetch_add(1, Ordering::Relaxed);
                if check {
                    from.ledger.sent_ok(acked);
                    sends.push(crate::ledger::Sent {
                        from: from.uid,
                        to: to.uid,
                        id: request.client_msg_id.to_string(),
                        seq: resp.seq,
                        started: start,
                        acked,
                    });
                }
            }
            Err(e) => {
                *errors.entry(e.code()).or_default() += 1;
                failed.fetch_add(1, Ordering::Relaxed);
                if check {
                    from.ledger.send_failed(start);
                }
            }
        }
    }
    (samples, errors, sends)
}

/// Long-polls `user`'s inbox until told to stop; the delivery latencies (store to receipt,
/// in whole milliseconds, as microseconds).
async fn sync_loop(client: &GatewaySvrClient, user: &User, stop: &AtomicBool) -> Vec<u32> {
    let mut key = 0;
    let mut delivery = Vec::new();
    let options = CallOptions {
        user_key: Some(user.uid),
        timeout: Some(Duration::from_secs(3)),
        ..CallOptions::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let request = SyncReq {
            token: user.token.clone(),
            sync_key: key,
            limit: 1000,
            wait_ms: 1000,
            ..SyncReq::default()
        };
        let Ok(resp) = client.sync_with(&request, &options).await else {
            // Not a spin through an outage: it would take the CPU the recovery needs.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let now = svrkit_im::now_ms();
        user.ledger.deliver(&resp.msgs);
        for msg in &resp.msgs {
            let ms = now.saturating_sub(msg.sent_at_ms);
            delivery.push(u32::try_from(ms.saturating_mul(1000)).unwrap_or(u32::MAX));
        }
        user.received
            .fetch_add(resp.msgs.len() as u64, Ordering::Relaxed);
        key = resp.sync_key;
    }
    delivery
}

/// Allocates sequences at `rate` a second, at fixed times, each call on its own task (so
/// a slow answer does not hold back the next calls: no coordinated omission); latency from
/// each call's start. (Not from its tick: the timer's millisecond grain would count.)
async fn seq_probe(
    seq: &SeqAllocSvrClient,
    users: &[Arc<User>],
    stop: &AtomicBool,
    rate: u32,
) -> Vec<u32> {
    let mut rng = Rng::new();
    let mut calls = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let uid = users[rng.below(users.len())].uid;
        let seq = seq.clone();
        calls.push(tokio::spawn(async move {
            let request = AllocReq {
                uids: vec![uid],
                ..AllocReq::default()
            };
            let start = Instant::now();
            seq.alloc(&request)
                .await
                .ok()
                .map(|_| micros(start.elapsed()))
        }));
    }
    let mut samples = Vec::with_capacity(calls.len());
    for call in calls {
        if let Ok(Some(sample)) = call.await {
            samples.push(sample);
        }
    }
    samples
}

/// The cumulative buckets (upper bound in seconds, count) of the client-side latency of
/// `im.seq.SeqAllocSvr.Alloc` in the backend's `/metrics`.
async fn alloc_buckets(admin: &str) -> Result<Vec<(f64, u64)>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| format!("--admin {admin}: {e}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    let buckets: Vec<(f64, u64)> = body
        .lines()
        .filter(|line| {
            line.starts_with("svrkit_client_latency_seconds_bucket{")
                && line.contains("service=\"im.seq.SeqAllocSvr\"")
                && line.contains("method=\"Alloc\"")
        })
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = line.rsplit("} ").next()?.trim().parse().ok()?;
            Some((le, count))
        })
        .collect();
    if buckets.is_empty() {
        return Err(format!(
            "--admin {admin}: no seq allocation latency in /metrics"
        ));
    }
    Ok(buckets)
}

/// The run's allocations (the difference of two snapshots): how many, and the bucket bound
/// that p99 and p99.9 fall under.
fn bucket_line(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    let run: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| (le, n - before.iter().find(|b| b.0 == le).map_or(0, |b| b.1)))
        .collect();
    let total = run.last().map_or(0, |b| b.1);
    let under = |q: f64| {
        run.iter()
            .find(|&&(_, n)| n as f64 >= q * total as f64)
            .map_or(f64::INFINITY, |b| b.0 * 1000.0)
    };
    format!(
        "{total} calls, p99 under {} ms, p99.9 under {} ms (histogram bucket bounds)",
        under(0.99),
        under(0.999)
    )
}
