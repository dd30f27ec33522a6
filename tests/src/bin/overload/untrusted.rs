//! A flood from an untrusted address that claims critical priority, beside a trusted user,
//! and then beside other strangers.
//!
//! The flood is raw frames from 127.0.0.2 (4 connections, pipelined, 3x capacity), each
//! claiming `critical` with no credentials; the user calls from 127.0.0.1 at half the
//! capacity, normal priority, users drawn from 10,000. The server trusts 127.0.0.1 only, then
//! (for comparison) everyone. What matters is the user's success rate against the same load
//! without the flood.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use svrkit_runtime::frame::{self, FrameKind, Header};
use svrkit_runtime::policy::AdmissionConfig;
use svrkit_runtime::service::Priority;
use svrkit_runtime::{CallOptions, ChannelOptions, Trust};
use svrkit_tests::svrkit::test::overload::{WorkReq, WorkSvrClient};
use svrkit_tests::work::{self, Work};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{COST_US, Settings, capacity, offer, random_user};

/// What the flood's frames came to.
#[derive(Default)]
struct Flood {
    sent: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    /// Refusals by message.
    why: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Sends `rate` requests a second claiming `priority` from `from` to `addr` for `duration`
/// over `connections` connections, reading (and counting) the answers.
async fn flood(
    addr: &str,
    from: &str,
    (rate, priority, connections): (f64, Priority, u64),
    duration: Duration,
    seen: Arc<Flood>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(format!("{from}:0").parse().expect("an address"))
            .expect("bind a loopback address");
        let stream = socket
            .connect(addr.parse().expect("an address"))
            .await
            .expect("connect");
        let (mut read, mut write) = stream.into_split();
        let counts = seen.clone();
        tasks.spawn(async move {
            let decoder = frame::Decoder::new(1 << 20);
            let mut buf = BytesMut::new();
            loop {
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while let Ok(Some(f)) = decoder.decode(&mut buf) {
                    match (f.header.kind, f.header.status_code) {
                        (FrameKind::RESPONSE, 0) => counts.ok.fetch_add(1, Ordering::Relaxed),
                        (FrameKind::RESPONSE, _) => {
                            *counts
                                .why
                                .lock()
                                .unwrap()
                                .entry(f.header.status_message.to_string())
                                .or_default() += 1;
                            counts.refused.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => 0,
                    };
                }
            }
        });
        let counts = seen.clone();
        tasks.spawn(async move {
            let body = WorkReq {
                cost_us: COST_US,
                ..WorkReq::default()
            };
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut sent = 0u64;
            let mut out = Vec::new();
            while start.elapsed() < duration {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate / connections as f64) as u64;
                out.clear();
                counts
                    .sent
                    .fetch_add(due.saturating_sub(sent), Ordering::Relaxed);
                while sent < due {
                    let header = Header {
                        kind: FrameKind::REQUEST,
                        request_id: c << 40 | sent,
                        service_id: 9300,
                        method_id: 3,
                        deadline_ms: 2_000,
                        priority: priority.to_wire(),
                        ..Header::default()
                    };
                    frame::encode_message(&header, &body, &mut out);
                    sent += 1;
                }
                if write.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
    // The writers end with the phase; the readers when the server closes, or here.
    let _ = tokio::time::timeout(duration + Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// The user's success rate at half the capacity for `phase`.
async fn user(client: &WorkSvrClient, cap: f64, phase: Duration) -> f64 {
    let client = client.clone();
    let t = offer(cap * 0.5, phase, move |_| {
        let client = client.clone();
        async move {
            let req = WorkReq {
                cost_us: COST_US,
                ..WorkReq::default()
            };
            let options = CallOptions {
                user_key: Some(random_user()),
                timeout: Some(Duration::from_secs(2)),
                ..CallOptions::default()
            };
            client.normal_with(&req, &options).await
        }
    })
    .await;
    100.0 * t.ok as f64 / t.total().max(1) as f64
}

pub(crate) async fn untrusted(settings: &Settings) {
    println!("\n## An untrusted flood claiming critical priority beside a trusted user\n");
    println!("| server trusts | flood | user's success | flood served |");
    println!("|---|---|---|---|");
    let cases = [
        (
            "127.0.0.1 only",
            Trust::parse(["127.0.0.1"]).expect("a range"),
        ),
        ("everyone", Trust::everyone()),
    ];
    for (label, trust) in cases {
        let backend =
            work::start_trusting(Work::new("backend"), AdmissionConfig::default(), 1, trust);
        let client = work::client(&[&backend.addr], ChannelOptions::default());
        let cap = capacity(&client, settings.capacity).await;
        let alone = user(&client, cap, settings.phase / 2).await;
        let (flooding, seen) = critical_flood(&backend.addr, cap, settings.phase);
        let beside = user(&client, cap, settings.phase).await;
        let _ = flooding.await;
        print_rows(label, cap, (alone, beside), &seen);
    }
    strangers(settings).await;
}

impl Flood {
    /// The share of the answered requests that succeeded, in percent.
    fn served(&self) -> f64 {
        let ok = self.ok.load(Ordering::Relaxed);
        100.0 * ok as f64 / self.answered().max(1) as f64
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed)
    }
}

/// The flood of every case: 3x `cap` from 127.0.0.2 over 4 connections, claiming critical,
/// for `phase`; its task and what it came to.
fn critical_flood(
    addr: &str,
    cap: f64,
    phase: Duration,
) -> (tokio::task::JoinHandle<()>, Arc<Flood>) {
    let seen = Arc::new(Flood::default());
    let task = tokio::spawn({
        let (addr, seen) = (addr.to_owned(), seen.clone());
        async move {
            let load = (cap * 3.0, Priority::Critical, 4);
            flood(&addr, "127.0.0.2", load, phase, seen).await;
        }
    });
    (task, seen)
}

/// A case's two rows: the success rate without the flood, and beside it.
fn print_rows(trusts: &str, cap: f64, (alone, beside): (f64, f64), flood: &Flood) {
    println!(
        "| {trusts} | none | {alone:.1}% | - |\n| {trusts} | 3x ({:.0}/s), critical | {beside:.1}% ({:+.1} points) | {:.1}% of {} |",
        cap * 3.0,
        beside - alone,
        flood.served(),
        flood.answered(),
    );
}

/// Strangers only: ten addresses (127.0.1.1-10) sending 3% of the capacity each, anonymous,
/// alone and then beside one address's flood at 3x; the server trusts nobody, so every
/// request ranks by its address's share of admitted work (`policy/shares.rs`).
async fn strangers(settings: &Settings) {
    println!("\n| server trusts | flood | ten strangers' success | flood served |");
    println!("|---|---|---|---|");
    let backend = work::start_trusting(
        Work::new("backend"),
        AdmissionConfig::default(),
        1,
        Trust::nobody(),
    );
    let client = work::client(&[&backend.addr], ChannelOptions::default());
    let cap = capacity(&client, settings.capacity).await;
    let run = |phase: Duration| {
        let addr = backend.addr.clone();
        async move {
            let seen = Arc::new(Flood::default());
            let mut tasks = tokio::task::JoinSet::new();
            for i in 1..=10 {
                let (addr, seen) = (addr.clone(), seen.clone());
                tasks.spawn(async move {
                    let load = (cap * 0.03, Priority::Normal, 1);
                    flood(&addr, &format!("127.0.1.{i}"), load, phase, seen).await;
                });
            }
            while tasks.join_next().await.is_some() {}
            for (why, n) in seen.why.lock().unwrap().iter() {
                eprintln!("  strangers refused {n}: {why}");
            }
            seen.served()
        }
    };
    let alone = run(settings.phase / 2).await;
    let (flooding, seen) = critical_flood(&backend.addr, cap, settings.phase);
    let watch = crate::trace_admission(settings, &backend);
    let beside = run(settings.phase).await;
    let _ = flooding.await;
    if let Some(watch) = watch {
        watch.abort();
    }
    print_rows("nobody", cap, (alone, beside), &seen);
}
