//! The server under attack, or under clients that break the protocol: its memory stays
//! bounded by bytes, held resources come back when clients leave, and each misuse gets its
//! stated status on the wire while everyone else is served.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use svrkit_runtime::frame::{FrameKind, Header};
use svrkit_runtime::policy::AdmissionConfig;
use svrkit_runtime::{CallOptions, Channel, ChannelOptions, Code, Limits};
use svrkit_tests::echo::{self, still_serving};
use svrkit_tests::raw::{self, RawConn};
use svrkit_tests::svrkit::test::all_types::Empty;
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoSvrClient};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1 << 20;

/// The tests here measure the process's memory, which the others would disturb: they run
/// one at a time.
/// A server with `limits` and no overload control: these tests are about the limits, which
/// must hold on their own (with overload control on, floods like theirs are also shed by
/// priority before they reach the limits, which would hide a limit that failed).
async fn start_with(limits: Limits, downstream: Option<EchoSvrClient>) -> echo::Running {
    echo::start_built(limits, downstream, |builder| {
        builder.admission(AdmissionConfig {
            enabled: false,
            ..AdmissionConfig::default()
        })
    })
    .await
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client that sends requests whose handlers wait (so they run in tasks) and never reads
/// a reply: the server stops reading it once its unsent replies pass the bound, so its
/// memory stays flat however much the client sends, and other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_bounded_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = Limits {
        max_unsent_per_connection: MIB,
        write_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let good = echo::client(&running.addr, 1);
    let before = raw::rss();
    let mut bad = RawConn::connect(&running.addr).await;
    // 1,000 requests with 64 KiB replies each: 64 MiB of replies it will never read.
    let request = EchoReq {
        delay_ms: 1,
        payload: vec![7u8; 64 << 10].into(),
        ..Default::default()
    };
    let writer = tokio::spawn(async move {
        for id in 1..=1_000 {
            bad.request(id, 1, 60_000, &request).await;
        }
        bad
    });
    // The writer blocks once the server stops reading; give it a few seconds to try.
    match tokio::time::timeout(Duration::from_secs(3), writer).await {
        Err(_) => {}
        Ok(Ok(_)) => panic!("the server read everything: nothing held it back"),
        Ok(Err(e)) => panic!("the server closed the connection: {e}"),
    }
    let grown = raw::rss().saturating_sub(before);
    assert!(grown < 64 * MIB, "the server grew by {} MiB", grown / MIB);
    assert!(
        running.observed.started.load(Ordering::SeqCst) < 1_000,
        "every request was read"
    );
    still_serving(&good).await;
}

/// 1,000 connections that each send a frame prefix announcing 1 MiB and stall: buffers grow
/// only with bytes that arrive, so they cost kilobytes each; the read timeout closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_frame_prefixes_cost_almost_nothing_and_time_out() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = Limits {
        read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let good = echo::client(&running.addr, 1);
    still_serving(&good).await;
    let before = raw::rss();
    let mut prefix = vec![b'S', b'K', 1, 0];
    prefix.extend_from_slice(&0u32.to_be_bytes());
    prefix.extend_from_slice(&(MIB as u32).to_be_bytes());
    let mut stalled = Vec::new();
    for _ in 0..1_000 {
        let mut conn = tokio::net::TcpStream::connect(&running.addr).await.unwrap();
        conn.write_all(&prefix).await.unwrap();
        stalled.push(conn);
    }
    still_serving(&good).await;
    let grown = raw::rss().saturating_sub(before);
    assert!(grown < 64 * MIB, "grew by {} MiB", grown / MIB);
    for conn in stalled.iter_mut().take(10) {
        assert!(
            raw::closed_within(conn, Duration::from_secs(5)).await,
            "a stalled connection stayed open"
        );
    }
    still_serving(&good).await;
}

/// A body of nothing but empty structs (two bytes each, far more in memory): one over the
/// frame limit is refused unread; one at the limit decodes within the codec's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_empty_structs_cannot_blow_up_the_server() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let running = echo::start().await;
    let good = echo::client(&running.addr, 1);
    let before = raw::rss();
    let mut raw = RawConn::connect(&running.addr).await;
    // 16 MiB: over the default 4 MiB frame limit. Answered TOO_LARGE, body skipped.
    let big = EchoReq {
        items: vec![Empty::default(); 8 * MIB],
        ..Default::default()
    };
    raw.request(1, 1, 10_000, &big).await;
    drop(big);
    let response = raw.read(Duration::from_secs(10)).await;
    assert_eq!(Code(response.header.status_code), Code::TOO_LARGE);
    // Just under the limit: at most `DECODE_FACTOR` times its size in elements.
    let at_limit = EchoReq {
        items: vec![Empty::default(); 2 * MIB - 1024],
        ..Default::default()
    };
    let before_second = raw::rss();
    raw.request(2, 1, 10_000, &at_limit).await;
    drop(at_limit);
    let response = raw.read(Duration::from_secs(10)).await;
    assert_eq!(response.header.request_id, 2);
    let grown = raw::rss().saturating_sub(before);
    assert!(
        grown < 64 * MIB + 16 * MIB,
        "grew by {} MiB ({} MiB for the second)",
        grown / MIB,
        raw::rss().saturating_sub(before_second) / MIB
    );
    still_serving(&good).await;
}

/// 64 connections try to fill every server-wide slot (65,536) with handlers that never
/// finish and ignore cancellation, sending no deadline. The last slots are kept for
/// connections with few calls in flight: the floods are refused before the server is full,
/// and a newcomer is served. When they hang up, their handlers are cancelled and dropped:
/// within a second the slots are back, and a connection gets all of its 1,024 calls run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_held_by_clients_that_left_come_back_at_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let running = start_with(Limits::default(), None).await;
    let mut conns = Vec::new();
    let sent = running.observed.started.load(Ordering::SeqCst) + 64 * 1_024;
    for _ in 0..64 {
        let mut conn = RawConn::connect(&running.addr).await;
        conn.stream.write_all(&hang_frames(1_024)).await.unwrap();
        conns.push(conn);
    }
    let refused = until_run_or_refused(&running, &mut conns, sent, "in flight").await;
    assert!(refused > 0, "the floods took every slot");
    let newcomer = echo::client(&running.addr, 1);
    newcomer
        .echo(&EchoReq::default())
        .await
        .expect("served beside the floods");
    drop(conns);
    let hung_up = Instant::now();
    loop {
        let mut conn = vec![RawConn::connect(&running.addr).await];
        let sent = running.observed.started.load(Ordering::SeqCst) + 1_024;
        conn[0].stream.write_all(&hang_frames(1_024)).await.unwrap();
        if until_run_or_refused(&running, &mut conn, sent, "in flight").await == 0 {
            break;
        }
        assert!(
            hung_up.elapsed() < Duration::from_secs(1),
            "slots still held"
        );
    }
}

/// Waits until the requests written on `conns` are each running or refused (OVERLOADED,
/// with a message that says `why`), `sent` being the count of handlers started had they all
/// run, and returns how many were refused.
async fn until_run_or_refused(
    running: &echo::Running,
    conns: &mut [RawConn],
    sent: usize,
    why: &str,
) -> usize {
    let mut refused = 0;
    loop {
        let expected = sent - refused;
        let reads = futures::future::select_all(
            conns
                .iter_mut()
                .map(|c| Box::pin(c.read(Duration::from_secs(30)))),
        );
        tokio::select! {
            (frame, _, _) = reads => {
                assert_eq!(Code(frame.header.status_code), Code::OVERLOADED);
                let message = &frame.header.status_message;
                assert!(message.contains(why), "{message}");
                refused += 1;
            }
            _ = running.observed.until("the rest run", Duration::from_secs(30), |o| {
                o.started.load(Ordering::SeqCst) >= expected
            }) => return refused,
        }
    }
}

/// Handlers that wait hold their state (a few KiB each here) for as long as they run: with
/// the in-flight counts out of the way, the byte budget alone bounds them. Requests past it
/// are answered OVERLOADED, the server's memory stays within the budget, and it all comes
/// back when the client hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_handlers_are_bounded_by_bytes_not_counts() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let budget = 32 * MIB;
    let running = start_with(only_the_budget(budget), None).await;
    let before = raw::rss();
    let mut conn = [RawConn::connect(&running.addr).await];
    let sent = 50_000;
    conn[0].stream.write_all(&hang_frames(sent)).await.unwrap();
    // Every request is either running (and never answers) or refused.
    let refused = until_run_or_refused(&running, &mut conn, sent as usize, "memory budget").await;
    let started = running.observed.started.load(Ordering::SeqCst);
    let grown = raw::rss().saturating_sub(before);
    assert!(
        grown < budget + 16 * MIB,
        "{} MiB for {started} running handlers under a {} MiB budget",
        grown / MIB,
        budget / MIB
    );
    assert!(
        refused > 0 && started > 1000,
        "{started} running, {refused} refused"
    );
    drop(conn);
    still_serving_soon(&running.addr).await;
}

/// Requests 1..=`n` to `Hang` (handlers that never finish), with no deadline: the method's
/// IDL timeout (a minute) applies.
fn hang_frames(n: u64) -> Vec<u8> {
    hang_frames_with(1..=n)
}

/// Hang requests with the given ids.
fn hang_frames_with(ids: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let hang = EchoReq {
        hang: true,
        ..Default::default()
    };
    raw::request_frames(ids, 6, 0, &hang)
}

/// Waits (up to a second) until a fresh client is served: what hung-up clients held is back.
async fn still_serving_soon(addr: &str) {
    let client = echo::client(addr, 1);
    let hung_up = Instant::now();
    while let Err(e) = client.echo(&EchoReq::default()).await {
        assert_eq!(e.code(), Code::OVERLOADED, "{e}");
        assert!(hung_up.elapsed() < Duration::from_secs(1), "still held");
        tokio::task::yield_now().await;
    }
}

/// A connection that sends requests that never end until the memory budget refuses it. It
/// sends a few at a time and waits for them to run or be refused, so that its read buffer
/// never holds more than a few: when the budget is spent, it is spent on running requests,
/// not on buffers given back once read.
async fn flood_the_budget(running: &echo::Running) -> [RawConn; 1] {
    let mut conn = [RawConn::connect(&running.addr).await];
    let mut id = 0;
    loop {
        let sent = running.observed.started.load(Ordering::SeqCst) + 16;
        conn[0]
            .stream
            .write_all(&hang_frames_with(id + 1..=id + 16))
            .await
            .unwrap();
        id += 16;
        if until_run_or_refused(running, &mut conn, sent, "memory budget").await > 0 {
            return conn;
        }
    }
}

/// Limits under which only a memory budget of `bytes` refuses requests.
fn only_the_budget(bytes: usize) -> Limits {
    Limits {
        max_in_flight: 1 << 20,
        max_in_flight_per_connection: 1 << 20,
        max_buffered_input: bytes,
        ..Limits::default()
    }
}

/// Clients that spend the memory budget on requests that never end leave its last part to
/// connections that hold little: a client whose request costs more than any one of theirs
/// (so no gap they leave could fit it) is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_that_spends_the_budget_leaves_room_for_other_clients() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let running = start_with(only_the_budget(16 * MIB), None).await;
    let floods = [
        flood_the_budget(&running).await,
        flood_the_budget(&running).await,
    ];
    let client = echo::client(&running.addr, 1);
    let bigger = EchoReq {
        payload: vec![7u8; 14 << 10].into(),
        ..Default::default()
    };
    let served = client.echo(&bigger).await.expect("served beside the flood");
    assert_eq!(served.payload.len(), 14 << 10);
    drop(floods);
    still_serving_soon(&running.addr).await;
}

/// In-process calls draw on the reserve as network calls do, each as a connection with one
/// call: 64 of them at once beside a flood are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_calls_share_the_reserve_as_connections_do() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let running = start_with(only_the_budget(16 * MIB), None).await;
    let flood = flood_the_budget(&running).await;
    let local = EchoSvrClient::new(running.server.local_channel());
    let waiting = EchoReq {
        delay_ms: 200,
        ..Default::default()
    };
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let (local, waiting) = (local.clone(), waiting.clone());
            tokio::spawn(async move { local.echo(&waiting).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("served beside the flood");
    }
    drop(flood);
}

/// A request over the server's frame limit fails alone with TOO_LARGE; the calls sharing
/// its connection go on. One over the client's own limit is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_fails_alone() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = Limits {
        max_frame: MIB,
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let options = ChannelOptions {
        connections_per_endpoint: 1,
        max_frame: 8 * MIB,
        ..Default::default()
    };
    let client = EchoSvrClient::new(Channel::lazy([running.addr.clone()], options));
    let big = EchoReq {
        payload: vec![1u8; 2 * MIB].into(),
        ..Default::default()
    };
    let slow = EchoReq {
        delay_ms: 200,
        ..Default::default()
    };
    let (big, a, b) = tokio::join!(client.echo(&big), client.echo(&slow), client.echo(&slow));
    let err = big.unwrap_err();
    assert_eq!(err.code(), Code::TOO_LARGE, "{err}");
    assert!(err.message().contains("frame limit"), "{err}");
    a.unwrap();
    b.unwrap();
    still_serving(&client).await;
    // The client's own limit: refused before sending.
    let small = ChannelOptions {
        max_frame: MIB,
        ..Default::default()
    };
    let client = EchoSvrClient::new(Channel::lazy([running.addr.clone()], small));
    let started = running.observed.started.load(Ordering::SeqCst);
    let err = client
        .echo(&EchoReq {
            payload: vec![1u8; 2 * MIB].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::TOO_LARGE, "{err}");
    assert_eq!(running.observed.started.load(Ordering::SeqCst), started);
}

/// A request id reused while the first is in flight is refused; the first is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_request_id_is_refused() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let running = echo::start().await;
    let mut raw = RawConn::connect(&running.addr).await;
    let slow = EchoReq {
        text: "first".into(),
        delay_ms: 300,
        ..Default::default()
    };
    raw.request(5, 1, 10_000, &slow).await;
    running
        .observed
        .until("the first started", Duration::from_secs(5), |o| {
            o.started.load(Ordering::SeqCst) == 1
        })
        .await;
    raw.request(5, 1, 10_000, &EchoReq::default()).await;
    let refused = raw.read(Duration::from_secs(2)).await;
    assert_eq!(refused.header.request_id, 5);
    assert_eq!(Code(refused.header.status_code), Code::INVALID_ARGUMENT);
    assert!(
        refused.header.status_message.contains("already in flight"),
        "{}",
        refused.header.status_message
    );
    let first = raw.read(Duration::from_secs(2)).await;
    assert_eq!(first.header.status_code, 0);
    assert_eq!(running.observed.started.load(Ordering::SeqCst), 1);
}

/// A oneway frame reusing the id of a request in flight takes nothing from it: a CANCEL
/// naming that id, sent after the oneway call ended, still reaches the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_oneway_reusing_a_request_id_leaves_the_request_cancellable() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let running = echo::start().await;
    let mut raw = RawConn::connect(&running.addr).await;
    let slow = EchoReq {
        delay_ms: 30_000,
        ..Default::default()
    };
    raw.request(7, 1, 60_000, &slow).await;
    // The same id, oneway, with a handler that waits a little (so it runs in a task).
    let oneway = raw::header(FrameKind::ONEWAY, 7, 1, 0);
    let short = EchoReq {
        delay_ms: 10,
        ..Default::default()
    };
    raw.stream
        .write_all(&raw::request_frame(&oneway, &short))
        .await
        .unwrap();
    running
        .observed
        .until("the oneway call ended", Duration::from_secs(5), |o| {
            o.started.load(Ordering::SeqCst) == 2 && o.finished.load(Ordering::SeqCst) == 1
        })
        .await;
    let cancel = Header {
        kind: FrameKind::CANCEL,
        request_id: 7,
        ..Default::default()
    };
    let mut frame = Vec::new();
    svrkit_runtime::frame::encode(&cancel, &[], &mut frame);
    raw.stream.write_all(&frame).await.unwrap();
    running
        .observed
        .until("the request saw its cancel", Duration::from_secs(5), |o| {
            o.saw_cancel.load(Ordering::SeqCst) == 1
        })
        .await;
}

/// At the connection cap a newcomer is told why, with a status, not just hung up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_gets_a_status() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let first = echo::client(&running.addr, 1);
    still_serving(&first).await;
    let mut raw = RawConn::connect(&running.addr).await;
    let goaway = raw.read(Duration::from_secs(2)).await;
    assert_eq!(goaway.header.kind, FrameKind::GOAWAY);
    assert_eq!(Code(goaway.header.status_code), Code::OVERLOADED);
    assert!(
        goaway
            .header
            .status_message
            .contains("limit of 1 connections")
    );
    // Through a client, the call fails with the server's reason.
    let second = echo::client(&running.addr, 1);
    let err = second.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::OVERLOADED, "{err}");
    assert!(err.message().contains("limit of 1 connections"), "{err}");
    still_serving(&first).await;
}

/// A CPU-bound handler (5 ms each, never awaiting) offered far more than it can do within
/// the deadline: requests whose deadline passed while they waited are answered without
/// running, so the server catches up at once when the load stops. (Overload control is off
/// here: with it, most of them are dropped earlier, for having waited too long, which
/// `rpc_policies` covers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_expire_in_the_queue_are_not_run() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let off = svrkit_runtime::policy::AdmissionConfig {
        enabled: false,
        ..Default::default()
    };
    let running = echo::start_built(Limits::default(), None, |b| b.admission(off)).await;
    let mut raw = RawConn::connect(&running.addr).await;
    let spin = EchoReq {
        spin_ms: 5,
        ..Default::default()
    };
    // 400 requests (2 s of work) with 100 ms to live, all at once.
    let frames = raw::request_frames(1..=400, 1, 100, &spin);
    raw.stream.write_all(&frames).await.unwrap();
    let mut expired = 0;
    for _ in 0..400 {
        let frame = raw.read(Duration::from_secs(5)).await;
        if Code(frame.header.status_code) == Code::DEADLINE_EXCEEDED {
            expired += 1;
        }
    }
    let ran = running.observed.started.load(Ordering::SeqCst);
    assert!(ran < 100, "{ran} of 400 ran; most had expired in the queue");
    assert!(expired >= 300, "{expired} expired");
    // The load is gone: full speed again at once.
    let client = echo::client(&running.addr, 1);
    let started = Instant::now();
    for _ in 0..10 {
        client
            .echo_with(&spin, &CallOptions::timeout(Duration::from_secs(1)))
            .await
            .unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The probe, sustained: a CPU-bound handler (2 ms, never awaiting; one connection
/// runs its inline handlers one at a time, so about 500 a second) offered twice that for
/// three seconds by callers with 200 ms deadlines, who give up when it passes. Requests
/// that waited past their deadline are answered without running, so the server keeps doing
/// useful work throughout (it used to run every request late, for nobody, and needed tens
/// of seconds to recover), and serves at full speed as soon as the load stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_its_capacity_keeps_goodput_and_recovers_at_once() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let _alone = ONE_AT_A_TIME.lock().await;
    let running = echo::start().await;
    let client = echo::client(&running.addr, 1);
    let spin = EchoReq {
        spin_ms: 2,
        ..Default::default()
    };
    let deadline = CallOptions::timeout(Duration::from_millis(200));
    let answered = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut calls = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let overload = Instant::now();
    let mut offered = 0;
    while overload.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        for _ in 0..10 {
            offered += 1;
            let (client, spin, deadline) = (client.clone(), spin.clone(), deadline.clone());
            let (answered, refused) = (answered.clone(), refused.clone());
            calls.spawn(async move {
                match client.echo_with(&spin, &deadline).await {
                    Ok(_) => answered.fetch_add(1, Ordering::SeqCst),
                    Err(_) => refused.fetch_add(1, Ordering::SeqCst),
                };
            });
        }
    }
    calls.join_all().await;
    let ended = Instant::now();
    let answered = answered.load(Ordering::SeqCst);
    let ran = running.observed.started.load(Ordering::SeqCst);
    eprintln!(
        "offered {offered}, answered {answered} in time, refused {}, handlers run {ran}",
        refused.load(Ordering::SeqCst)
    );
    // Capacity over the three seconds is about 1,500: at least a quarter of it is useful.
    assert!(
        answered >= 375,
        "goodput collapsed: {answered} of {offered} answered"
    );
    // Requests that expired in the queue were not run. (Some that start just before their
    // deadline finish just after it: under a standing queue as long as the deadline, that
    // is the price of serving in arrival order.)
    assert!(
        ran <= answered + answered / 2,
        "{ran} handlers ran for {answered} useful answers"
    );
    // The load is gone. Overload control admits everything again within a few of its
    // windows (a second each), and then every call is served at full speed; until then the
    // calls it would shed are dropped by the client, unsent.
    let mut in_a_row = 0;
    while in_a_row < 20 {
        match client.echo_with(&spin, &deadline).await {
            Ok(_) => in_a_row += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::OVERLOADED, "{e}");
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(
            ended.elapsed() < Duration::from_secs(5),
            "not all served {:?} after the overload",
            ended.elapsed()
        );
    }
}

/// Clients that stop reading while their handlers take a while: each one's replies land in
/// its outbox after the requests' budget was given back. Counted against the same budget,
/// they keep the next clients' requests waiting instead of each client adding a budget's
/// worth of unsent replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsent_replies_count_against_the_memory_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let budget = 32 * MIB;
    let limits = Limits {
        max_buffered_input: budget,
        max_unsent_per_connection: MIB,
        write_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let before = raw::rss();
    // Each client: 200 requests of 128 KiB answered after 100 ms, 25 MiB of replies.
    let per_client = 200;
    let request = EchoReq {
        delay_ms: 100,
        payload: vec![7u8; 128 << 10].into(),
        ..Default::default()
    };
    let mut clients = Vec::new();
    for round in 1..=4 {
        let mut conn = RawConn::connect(&running.addr).await;
        let request = request.clone();
        clients.push(tokio::spawn(async move {
            for id in 1..=per_client {
                conn.request(id as u64, 1, 60_000, &request).await;
            }
            conn
        }));
        // Until this client's replies are all made, or three seconds have shown they will
        // not be (the budget is spent on the replies before them).
        let _ = tokio::time::timeout(
            Duration::from_secs(3),
            running.observed.until("replies made", Duration::MAX, |o| {
                o.finished.load(Ordering::SeqCst) >= round * per_client
            }),
        )
        .await;
    }
    let finished = running.observed.finished.load(Ordering::SeqCst);
    let grown = raw::rss().saturating_sub(before);
    assert!(
        grown < budget + 24 * MIB,
        "{} MiB for {finished} replies nobody reads under a {} MiB budget",
        grown / MIB,
        budget / MIB
    );
    assert!(finished < 2 * per_client, "{finished} replies made");
    drop(clients);
}

/// Requests whose bodies decode into far more memory than they take on the wire (empty
/// structs: two bytes each, 24 in memory) and whose handlers wait: what decoding allocates is
/// taken from the budget before the handler runs, so the budget bounds it, not just the
/// bytes received. Requests it cannot take are refused unrun, and a client beside them is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_request_decodes_into_counts_against_the_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let budget = 32 * MIB;
    let limits = Limits {
        max_buffered_input: budget,
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let mut conn = [RawConn::connect(&running.addr).await];
    // 800 KB on the wire each, about 10 MB decoded: 30 of them fit the budget as bytes
    // received, and would hold 300 MB decoded.
    let request = EchoReq {
        hang: true,
        items: vec![Empty::default(); 400_000],
        ..Default::default()
    };
    let sent = 30;
    let frames = (1..=sent).fold(Vec::new(), |mut frames, id| {
        let header = raw::header(FrameKind::REQUEST, id, 6, 0);
        frames.extend_from_slice(&raw::request_frame(&header, &request));
        frames
    });
    drop(request);
    // (After the client's own 24 MB of frames.)
    let before = raw::rss();
    conn[0].stream.write_all(&frames).await.unwrap();
    drop(frames);
    let refused = until_run_or_refused(&running, &mut conn, sent as usize, "memory budget").await;
    let started = running.observed.started.load(Ordering::SeqCst);
    let grown = raw::rss().saturating_sub(before);
    assert!(
        grown < budget + 24 * MIB,
        "{} MiB for {started} decoded requests under a {} MiB budget",
        grown / MIB,
        budget / MIB
    );
    assert!(refused > 0 && started < 4, "{started} requests run");
    let beside = echo::client(&running.addr, 1);
    let small = EchoReq {
        items: vec![Empty::default(); 1_000],
        ..Default::default()
    };
    beside.echo(&small).await.expect("served beside them");
    drop(conn);
    still_serving_soon(&running.addr).await;
}

/// Requests with headers full of metadata (1,200 entries, 14 KB): the header's decoded map is
/// charged, and handed to the handler without copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_metadata_counts_against_the_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let budget = 32 * MIB;
    let running = start_with(only_the_budget(budget), None).await;
    let mut conn = RawConn::connect(&running.addr).await;
    let hang = EchoReq {
        hang: true,
        ..Default::default()
    };
    let sent = 2_000;
    let mut header = raw::header(FrameKind::REQUEST, 0, 6, 0);
    for i in 0..1_200 {
        header
            .metadata
            .insert(format!("m{i:04}").into(), "v".into());
    }
    let mut frames = Vec::new();
    for id in 1..=sent {
        header.request_id = id;
        frames.extend_from_slice(&raw::request_frame(&header, &hang));
    }
    // (After the client's own 24 MB of frames, which the allocator may keep once freed.)
    let before = raw::rss();
    conn.stream.write_all(&frames).await.unwrap();
    drop(frames);
    let mut conn = [conn];
    let refused = until_run_or_refused(&running, &mut conn, sent as usize, "memory budget").await;
    let started = running.observed.started.load(Ordering::SeqCst);
    let grown = raw::rss().saturating_sub(before);
    assert!(
        grown < budget + 24 * MIB,
        "{} MiB for {started} running handlers under a {} MiB budget",
        grown / MIB,
        budget / MIB
    );
    assert!(refused > 0, "{started} running, none refused");
    drop(conn);
    still_serving_soon(&running.addr).await;
}

/// A client that stalls while the server skips the body of its oversized frame is stalling
/// mid-frame: closed after the read timeout, not the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_inside_a_skipped_frame_times_out_as_a_read() {
    let limits = Limits {
        max_frame: 64 << 10,
        read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(300),
        ..Limits::default()
    };
    let running = start_with(limits, None).await;
    let mut conn = RawConn::connect(&running.addr).await;
    let big = EchoReq {
        payload: vec![1u8; MIB].into(),
        ..Default::default()
    };
    let header = raw::header(FrameKind::REQUEST, 1, 1, 0);
    let frame = raw::request_frame(&header, &big);
    // The header and 128 KiB of the body, then nothing.
    conn.stream.write_all(&frame[..128 << 10]).await.unwrap();
    let reply = conn.read(Duration::from_secs(5)).await;
    assert_eq!(Code(reply.header.status_code), Code::TOO_LARGE);
    assert!(
        raw::closed_within(&mut conn.stream, Duration::from_secs(5)).await,
        "a client stalled inside a skipped frame stayed connected"
    );
}
