//! Attacks a running svrkit server from another process, as a broken or malicious client
//! would, and reports the server's memory and whether a well-behaved client is still served.
//!
//! `cargo bench -p svrkit-tests --bench attack` (all probes) or `-- stalled-prefixes ...`.
//!
//! Each probe gets a fresh server process (the echo service of `idl/test/rpc.xml`, default
//! limits), so that its memory figure is its own. The well-behaved client calls Echo every
//! 10 ms throughout; the report gives its slowest call and its failures.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use svrkit_runtime::Code;
use svrkit_runtime::frame::{self, FrameKind};
use svrkit_tests::child::{ServerProcess, rss_of};
use svrkit_tests::echo;
use svrkit_tests::raw::{header, request_frame};
use svrkit_tests::svrkit::test::all_types::Empty;
use svrkit_tests::svrkit::test::rpc::EchoReq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

/// RSS of process `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    rss_of(pid) as f64 / MIB as f64
}

/// A well-behaved client calling Echo every 10 ms until stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, usize, std::collections::BTreeMap<String, usize>)>,
}

impl Bystander {
    fn start(addr: &str) -> Bystander {
        let client = echo::client(addr, 1);
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut slowest, mut ok) = (Duration::ZERO, 0);
                let mut failed = std::collections::BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match client.echo(&EchoReq::default()).await {
                        Ok(_) => ok += 1,
                        Err(e) => *failed.entry(format!("{:?}", e.code())).or_insert(0) += 1,
                    }
                    slowest = slowest.max(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (slowest, ok, failed)
            }
        });
        Bystander { stop, task }
    }

    async fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (slowest, ok, failed) = self.task.await.unwrap();
        let why = failed
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect::<Vec<_>>();
        let failed: usize = failed.values().sum();
        if failed == 0 {
            format!("{ok} ok, 0 failed, slowest {slowest:.1?}")
        } else {
            format!(
                "{ok} ok, {failed} failed ({}), slowest {slowest:.1?}",
                why.join(", ")
            )
        }
    }
}

/// Writes `bytes` in the background (the server may stop reading).
fn write_in_background(
    mut stream: TcpStream,
    bytes: Vec<u8>,
) -> tokio::task::JoinHandle<TcpStream> {
    tokio::spawn(async move {
        let _ = stream.write_all(&bytes).await;
        stream
    })
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Runs one probe against a fresh server and prints its row.
async fn probe<F, Fut>(name: &str, attack: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut target = ServerProcess::start(&["--serve"]);
    let pid = target.child.id();
    let before = rss_mib(pid);
    let bystander = Bystander::start(&target.addr);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let peak = Arc::new(std::sync::Mutex::new(before));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = std::thread::spawn({
        let (peak, watching) = (peak.clone(), watching.clone());
        move || {
            while watching.load(Ordering::Relaxed) {
                let rss = rss_mib(pid);
                let mut p = peak.lock().unwrap();
                *p = p.max(rss);
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let outcome = attack(target.addr.clone()).await;
    let served = bystander.finish().await;
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    let after = rss_mib(pid);
    let alive = if matches!(target.child.try_wait(), Ok(None)) {
        "alive"
    } else {
        "DEAD"
    };
    println!(
        "| {name} | {before:.1} | {:.1} | {after:.1} | {alive} | {served} | {outcome} |",
        *peak.lock().unwrap()
    );
}

/// Sends requests with waiting handlers and 1 KiB payloads for 3 s and never reads a reply.
async fn stopped_reader(addr: String) -> String {
    let request = EchoReq {
        delay_ms: 50,
        payload: vec![7u8; 1024].into(),
        ..Default::default()
    };
    let mut bytes = Vec::new();
    for id in 1..=200_000 {
        bytes.extend(request_frame(
            &header(FrameKind::REQUEST, id, 1, 10_000),
            &request,
        ));
    }
    let sent = bytes.len();
    let writer = write_in_background(connect(&addr).await, bytes);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let done = writer.is_finished();
    writer.abort();
    format!(
        "offered {} MiB of requests; {}",
        sent / MIB,
        if done {
            "all were read"
        } else {
            "the server stopped reading"
        }
    )
}

/// 1,000 connections each send a prefix announcing a 4 MiB frame, then stall.
async fn stalled_prefixes(addr: String) -> String {
    let mut prefix = Vec::new();
    prefix.extend_from_slice(b"SK\x01\x00");
    prefix.extend_from_slice(&8u32.to_be_bytes());
    prefix.extend_from_slice(&(4 * MIB as u32 - 64).to_be_bytes());
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut c = connect(&addr).await;
        c.write_all(&prefix).await.unwrap();
        conns.push(c);
    }
    // The read timeout (10 s) closes them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut closed = 0;
    for mut c in conns {
        let mut b = [0u8; 64];
        if matches!(
            tokio::time::timeout(Duration::from_millis(50), c.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    format!("{closed} of 1000 closed by the server after 12 s")
}

/// A 16 MiB body of empty structs (over the frame limit) and one just under 4 MiB.
async fn empty_structs(addr: String) -> String {
    let mut c = connect(&addr).await;
    let mut out = Vec::new();
    for (id, n) in [(1u64, 8 * MIB), (2, 2 * MIB - 1024)] {
        let body = EchoReq {
            items: vec![Empty::default(); n],
            ..Default::default()
        };
        out.extend(request_frame(
            &header(FrameKind::REQUEST, id, 1, 10_000),
            &body,
        ));
    }
    c.write_all(&out).await.unwrap();
    let statuses = read_statuses(&mut c, 2, Duration::from_secs(20)).await;
    format!("statuses {statuses:?}")
}

/// One connection sends 5 bodies of 2,000,000 empty structs (4 MB each, up to 64 MB decoded)
/// whose handlers wait 30 s.
async fn decoded_lists(addr: String) -> String {
    let body = EchoReq {
        delay_ms: 30_000,
        items: vec![Empty::default(); 2_000_000],
        ..Default::default()
    };
    let mut out = Vec::new();
    for id in 1..=5 {
        out.extend(request_frame(
            &header(FrameKind::REQUEST, id, 1, 60_000),
            &body,
        ));
    }
    let mut c = connect(&addr).await;
    c.write_all(&out).await.unwrap();
    // Refusals come at once; the admitted calls answer after 30 s.
    let early = read_statuses(&mut c, 5, Duration::from_secs(5)).await;
    format!("statuses within 5 s {early:?}")
}

/// 64 connections x 1,024 Hang requests with no deadline, then all hang up.
async fn hung_handlers(addr: String) -> String {
    let hang = EchoReq {
        hang: true,
        ..Default::default()
    };
    let mut conns = Vec::new();
    for _ in 0..64 {
        let mut c = connect(&addr).await;
        let mut out = Vec::new();
        for id in 1..=1024 {
            out.extend(request_frame(&header(FrameKind::REQUEST, id, 6, 0), &hang));
        }
        c.write_all(&out).await.unwrap();
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fresh = echo::client(&addr, 1);
    let while_held = fresh.echo(&EchoReq::default()).await.map(|_| ()).err();
    drop(conns);
    let started = Instant::now();
    let mut served = None;
    while started.elapsed() < Duration::from_secs(5) {
        if fresh.echo(&EchoReq::default()).await.is_ok() {
            served = Some(started.elapsed());
            break;
        }
    }
    format!(
        "while held: {}; after hang-up served in {served:.1?}",
        while_held.map_or("served".to_owned(), |s| s.to_string())
    )
}

/// One connection floods PING frames and reads no PONG; another floods CANCELs for ids
/// that were never sent and zero-length requests.
async fn tiny_frames(addr: String) -> String {
    let mut pings = Vec::new();
    let mut cancels = Vec::new();
    for id in 0..1_000_000u64 {
        frame::encode(&header(FrameKind::PING, id, 0, 0), &[], &mut pings);
        frame::encode(&header(FrameKind::CANCEL, id, 0, 0), &[], &mut cancels);
        frame::encode(
            &header(FrameKind::REQUEST, id + 1, 1, 1000),
            &[],
            &mut cancels,
        );
    }
    let sent = (pings.len() + cancels.len()) / MIB;
    let a = write_in_background(connect(&addr).await, pings);
    let (mut reader, mut writer) = connect(&addr).await.into_split();
    let b = tokio::spawn(async move {
        let _ = writer.write_all(&cancels).await;
        writer
    });
    // Drain the answers to the zero-length requests of the second connection (a client
    // that does not read them is a stopped reader: the server stops reading it).
    let mut sink = vec![0u8; 1 << 16];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while reader.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let all_written = b.is_finished();
    a.abort();
    b.abort();
    format!("{sent} MiB of PING, CANCEL and empty REQUEST frames; all read: {all_written}")
}

/// 1,000 slow calls in flight, then the client hangs up; then a valid frame and garbage.
async fn hangup_and_garbage(addr: String) -> String {
    let slow = EchoReq {
        delay_ms: 5000,
        ..Default::default()
    };
    let mut c = connect(&addr).await;
    let mut out = Vec::new();
    for id in 1..=1000 {
        out.extend(request_frame(
            &header(FrameKind::REQUEST, id, 1, 10_000),
            &slow,
        ));
    }
    c.write_all(&out).await.unwrap();
    drop(c);
    let mut c = connect(&addr).await;
    let mut out = request_frame(
        &header(FrameKind::REQUEST, 1, 1, 1000),
        &EchoReq {
            text: "before the garbage".into(),
            ..Default::default()
        },
    );
    out.extend_from_slice(b"GARBAGE GARBAGE GARBAGE");
    c.write_all(&out).await.unwrap();
    let statuses = read_statuses(&mut c, 1, Duration::from_secs(20)).await;
    let mut b = [0u8; 16];
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    );
    format!("the frame before the garbage: {statuses:?}; then closed: {closed}")
}

/// 8 connections each send 1,024 requests whose handlers wait 2 s and echo 245 KB back, with
/// a 4 KiB receive buffer and no reads: 2 GB of replies that cannot be sent.
async fn stopped_readers(addr: String) -> String {
    let request = EchoReq {
        delay_ms: 2000,
        payload: vec![7u8; 245 << 10].into(),
        ..Default::default()
    };
    let request = Arc::new(request);
    let mut writers = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket
            .connect(addr.parse().unwrap())
            .await
            .expect("connect");
        let request = request.clone();
        writers.push(tokio::spawn(async move {
            for id in 1..=1024 {
                let frame = request_frame(&header(FrameKind::REQUEST, id, 1, 10_000), &request);
                if stream.write_all(&frame).await.is_err() {
                    break;
                }
            }
            stream
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let done = writers.iter().filter(|w| w.is_finished()).count();
    for w in &writers {
        w.abort();
    }
    format!("{done} of 8 writers finished (the server stops reading each connection)")
}

/// 8 connections x 1,024 requests whose headers carry 2,666 metadata entries (16 KB), with
/// handlers that wait 30 s.
async fn metadata_flood(addr: String) -> String {
    let body = EchoReq {
        delay_ms: 30_000,
        ..Default::default()
    };
    let mut h = header(FrameKind::REQUEST, 0, 1, 60_000);
    for i in 0..2_666u32 {
        let key = [b'!' + (i / 94) as u8, b'!' + (i % 94) as u8];
        h.metadata
            .insert(String::from_utf8(key.to_vec()).unwrap().into(), "".into());
    }
    let overloaded = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..8 {
        let (mut read, mut write) = connect(&addr).await.into_split();
        let (mut h, body) = (h.clone(), body.clone());
        let writer = tokio::spawn(async move {
            for id in 1..=1024 {
                h.request_id = id;
                if write.write_all(&request_frame(&h, &body)).await.is_err() {
                    break;
                }
            }
            write
        });
        let overloaded = overloaded.clone();
        let reader = tokio::spawn(async move {
            let decoder = frame::Decoder::new(64 << 20);
            let mut buf = bytes::BytesMut::new();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(f)) => {
                        if Code(f.header.status_code) == Code::OVERLOADED {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(None) => {
                        if read.read_buf(&mut buf).await.map_or(true, |n| n == 0) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        conns.push((writer, reader));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (writer, reader) in conns {
        writer.abort();
        reader.abort();
    }
    let overloaded = overloaded.load(Ordering::Relaxed);
    format!("8,192 requests offered; {overloaded} answered OVERLOADED within 6 s")
}

/// 50 connections announce a 4 MiB frame and send it one byte at a time for 10 s.
async fn trickle(addr: String) -> String {
    let mut prefix = Vec::new();
    prefix.extend_from_slice(b"SK\x01\x00");
    prefix.extend_from_slice(&8u32.to_be_bytes());
    prefix.extend_from_slice(&(4 * MIB as u32 - 64).to_be_bytes());
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut c = connect(&addr).await;
        c.set_nodelay(true).unwrap();
        c.write_all(&prefix).await.unwrap();
        conns.push(c);
    }
    let started = Instant::now();
    let mut sends = 0u64;
    while started.elapsed() < Duration::from_secs(10) {
        for c in &mut conns {
            c.write_all(&[0]).await.unwrap();
        }
        sends += 50;
    }
    format!("{sends} one-byte sends in 10 s")
}

/// 100 connections send a header announcing a 1 GiB frame (over the limit), then stall.
async fn oversized_stall(addr: String) -> String {
    let mut h = Vec::new();
    let head = header(FrameKind::REQUEST, 1, 1, 1000);
    frame::encode(&head, &[], &mut h);
    // The frame's own header, behind a prefix that announces 1 GiB of body.
    let header_len = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let mut out = Vec::new();
    out.extend_from_slice(b"SK\x01\x00");
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&(1u32 << 30).to_be_bytes());
    out.extend_from_slice(&h[12..12 + header_len as usize]);
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut c = connect(&addr).await;
        c.write_all(&out).await.unwrap();
        conns.push(c);
    }
    let mut last = Duration::ZERO;
    let mut closed = 0;
    for c in &mut conns {
        let mut sink = [0u8; 256];
        let end = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match c.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if end.is_ok() {
            closed += 1;
            last = last.max(started.elapsed());
        }
    }
    format!("{closed} of 100 closed by the server, the last after {last:.1?}")
}

/// The status codes of the next `n` responses, or of those that came within `limit`.
async fn read_statuses(c: &mut TcpStream, n: usize, limit: Duration) -> Vec<u32> {
    let decoder = frame::Decoder::new(64 << 20);
    let mut buf = bytes::BytesMut::new();
    let mut codes = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while codes.len() < n {
            match decoder.decode(&mut buf) {
                // Responses only: the server opens with a PONG listing its methods.
                Ok(Some(frame)) if frame.header.kind == FrameKind::RESPONSE => {
                    codes.push(frame.header.status_code)
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if c.read_buf(&mut buf).await.map_or(true, |n| n == 0) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
    .await;
    codes
}

fn serve() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let running = echo::start().await;
        println!("READY {}", running.addr);
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await
        .unwrap();
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--serve") {
        return serve();
    }
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| chosen.is_empty() || chosen.contains(&name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "| probe | server RSS before (MiB) | peak | after | server | bystander (Echo every 10 ms) | outcome |"
    );
    println!("|---|---|---|---|---|---|---|");
    rt.block_on(async {
        if wanted("stopped-reader") {
            probe("stopped-reader", stopped_reader).await;
        }
        if wanted("stalled-prefixes") {
            probe("stalled-prefixes", stalled_prefixes).await;
        }
        if wanted("empty-structs") {
            probe("empty-structs", empty_structs).await;
        }
        if wanted("decoded-lists") {
            probe("decoded-lists", decoded_lists).await;
        }
        if wanted("hung-handlers") {
            probe("hung-handlers", hung_handlers).await;
        }
        if wanted("hung-handlers-3x") {
            probe("hung-handlers-3x", |addr: String| async move {
                hung_handlers(addr.clone()).await;
                hung_handlers(addr.clone()).await;
                hung_handlers(addr).await
            })
            .await;
        }
        if wanted("tiny-frames") {
            probe("tiny-frames", tiny_frames).await;
        }
        if wanted("hangup-and-garbage") {
            probe("hangup-and-garbage", hangup_and_garbage).await;
        }
        if wanted("stopped-readers") {
            probe("stopped-readers", stopped_readers).await;
        }
        if wanted("metadata") {
            probe("metadata", metadata_flood).await;
        }
        if wanted("trickle") {
            probe("trickle", trickle).await;
        }
        if wanted("oversized-stall") {
            probe("oversized-stall", oversized_stall).await;
        }
    });
}
