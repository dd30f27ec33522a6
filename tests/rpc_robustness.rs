//! A broken or malicious client never affects other clients: garbage, truncated frames,
//! absurd lengths and clients that stop reading each cost only their own connection.

use std::time::{Duration, Instant};

use svrkit_runtime::codec::Message;
use svrkit_runtime::frame::{self, FrameKind, Header};
use svrkit_runtime::{Code, Limits};
use svrkit_tests::echo::{self, still_serving};
use svrkit_tests::raw::{self, RawConn};
use svrkit_tests::svrkit::test::rpc::EchoReq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; fails if it does not within five seconds.
async fn expect_closed(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

fn request_frame(request_id: u64, body: &EchoReq) -> Vec<u8> {
    let header = Header {
        kind: FrameKind::REQUEST,
        request_id,
        service_id: 9100,
        method_id: 1,
        deadline_ms: 10_000,
        ..Default::default()
    };
    let mut out = Vec::new();
    frame::encode_message(&header, body, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let running = echo::start().await;
    let good = echo::client(&running.addr, 1);
    still_serving(&good).await;
    let mut bad = TcpStream::connect(&running.addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut bad).await;
    still_serving(&good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_then_hang_up_is_harmless() {
    let running = echo::start().await;
    let good = echo::client(&running.addr, 1);
    let full = request_frame(
        1,
        &EchoReq {
            text: "x".repeat(100).into(),
            ..Default::default()
        },
    );
    let mut bad = TcpStream::connect(&running.addr).await.unwrap();
    bad.write_all(&full[..full.len() / 2]).await.unwrap();
    drop(bad);
    still_serving(&good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_announcing_4_gib_is_refused_before_allocating() {
    let running = echo::start().await;
    let good = echo::client(&running.addr, 1);
    let mut bad = TcpStream::connect(&running.addr).await.unwrap();
    let mut prefix = vec![b'S', b'K', 1, 0];
    prefix.extend_from_slice(&u32::MAX.to_be_bytes());
    prefix.extend_from_slice(&u32::MAX.to_be_bytes());
    bad.write_all(&prefix).await.unwrap();
    let started = Instant::now();
    expect_closed(&mut bad).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it waited for the 4 GiB"
    );
    still_serving(&good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_others_are_served() {
    let limits = Limits {
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let running = echo::start_with(limits, None).await;
    let good = echo::client(&running.addr, 1);
    let mut bad = TcpStream::connect(&running.addr).await.unwrap();
    // Ask for far more than the socket buffers hold, and never read it.
    let big = EchoReq {
        payload: vec![7u8; 256 * 1024].into(),
        ..Default::default()
    };
    let mut frames = Vec::new();
    for id in 1..=64 {
        frames.extend_from_slice(&request_frame(id, &big));
    }
    let writer = tokio::spawn(async move {
        let _ = bad.write_all(&frames).await;
        bad
    });
    // Meanwhile everyone else is served promptly.
    for _ in 0..20 {
        let started = Instant::now();
        still_serving(&good).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // The stuck connection is closed once writes stop making progress.
    let mut bad = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("writer stuck")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_closed(&mut bad).await;
}

/// Requests that arrive together and finish on their first poll take a connection's one
/// in-flight slot in turn: a call answered inline gives its slot back before the next request
/// is dispatched (the server holds back only the last one's teardown until the batch is
/// written), so none of them is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_read_together_take_one_slot_in_turn() {
    let limits = Limits {
        max_in_flight_per_connection: 1,
        ..Limits::default()
    };
    let running = echo::start_with(limits, None).await;
    let mut raw = RawConn::connect(&running.addr).await;
    let together = raw::request_frames(1..=8, 1, 10_000, &EchoReq::default());
    raw.stream.write_all(&together).await.unwrap();
    for id in 1..=8 {
        let answer = raw.read(Duration::from_secs(5)).await;
        assert_eq!(answer.header.request_id, id);
        assert_eq!(
            Code(answer.header.status_code),
            Code::OK,
            "{}",
            answer.header.status_message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limits_answer_overloaded() {
    let limits = Limits {
        max_in_flight_per_connection: 2,
        ..Limits::default()
    };
    let running = echo::start_with(limits, None).await;
    let client = echo::client(&running.addr, 1);
    let slow = EchoReq {
        delay_ms: 500,
        ..Default::default()
    };
    let (a, b, c) = tokio::join!(client.echo(&slow), client.echo(&slow), client.echo(&slow));
    let codes: Vec<Code> = [a, b, c]
        .into_iter()
        .map(|r| r.map_or_else(|e| e.code(), |_| Code::OK))
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Code::OK).count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Code::OVERLOADED).count(),
        1,
        "{codes:?}"
    );
}

/// A limit's refusal is not overload control's: its answer does not say
/// `admission_refused`, so that callers' adaptive throttles count it (they leave the
/// control's own refusals to its level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limits_refusal_is_not_marked_as_overload_controls() {
    let limits = Limits {
        max_in_flight_per_connection: 1,
        ..Limits::default()
    };
    let running = echo::start_with(limits, None).await;
    let mut raw = RawConn::connect(&running.addr).await;
    let slow = EchoReq {
        delay_ms: 500,
        ..Default::default()
    };
    let both = raw::request_frames(1..=2, 1, 10_000, &slow);
    raw.stream.write_all(&both).await.unwrap();
    let refused = raw.read(Duration::from_secs(5)).await;
    assert_eq!(refused.header.request_id, 2);
    assert_eq!(
        Code(refused.header.status_code),
        Code::OVERLOADED,
        "{}",
        refused.header.status_message
    );
    assert!(!refused.header.admission_refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let running = echo::start_with(limits, None).await;
    let first = echo::client(&running.addr, 1);
    still_serving(&first).await;
    let mut second = TcpStream::connect(&running.addr).await.unwrap();
    expect_closed(&mut second).await;
    still_serving(&first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_decode_is_invalid_argument() {
    let running = echo::start().await;
    let mut raw = RawConn::connect(&running.addr).await;
    let header = Header {
        kind: FrameKind::REQUEST,
        request_id: 5,
        service_id: 9100,
        method_id: 1,
        ..Default::default()
    };
    let mut out = Vec::new();
    // Field 1 (`text`, a string) holding invalid UTF-8.
    frame::encode(&header, &[0x0a, 0x02, 0xff, 0xfe], &mut out);
    raw.stream.write_all(&out).await.unwrap();
    let response = raw.read(Duration::from_secs(5)).await;
    assert_eq!(response.header.request_id, 5);
    assert_eq!(Code(response.header.status_code), Code::INVALID_ARGUMENT);
    assert!(
        response
            .header
            .status_message
            .contains("test.rpc.EchoReq.text"),
        "{}",
        response.header.status_message
    );
    assert!(response.header.encoded_len() > 0);
}

/// A note whose frame is exactly `len` bytes long.
fn note_frame_of(len: usize, text: &str) -> Vec<u8> {
    use svrkit_tests::svrkit::test::rpc::Note;
    let header = Header {
        kind: FrameKind::ONEWAY,
        request_id: 1,
        service_id: 9100,
        method_id: 3,
        ..Header::default()
    };
    let encode = |pad: usize| {
        let note = Note {
            text: format!("{text}{}", "x".repeat(pad)).into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        frame::encode_message(&header, &note, &mut out);
        out
    };
    // Lengths of lengths grow by a byte now and then: step down until it fits exactly.
    let mut pad = len - encode(0).len();
    loop {
        let out = encode(pad);
        if out.len() == len {
            return out;
        }
        pad -= 1;
    }
}

/// A frame that exactly fills the server's read buffer, followed at once by the end of the
/// stream: the read that finds the end must not throw away the frame before it.
#[tokio::test]
async fn a_frame_that_fills_the_buffer_before_the_end_is_served() {
    let running = echo::start().await;
    for (round, len) in [8 * 1024, 16 * 1024, 24 * 1024, 32 * 1024]
        .into_iter()
        .enumerate()
    {
        let text = format!("exact-{round}-");
        let mut stream = TcpStream::connect(&running.addr).await.unwrap();
        stream.write_all(&note_frame_of(len, &text)).await.unwrap();
        stream.shutdown().await.unwrap();
        running
            .observed
            .until(
                &format!("the {len}-byte note delivered"),
                Duration::from_secs(2),
                |o| o.notes.lock().unwrap().iter().any(|n| n.starts_with(&text)),
            )
            .await;
    }
}

/// A client that sends a burst and then ends its stream (a half-close, as `nc` does) loses
/// nothing it sent: every oneway note is delivered and every quick request answered, even
/// when the end of stream arrives with the last bytes.
#[tokio::test]
async fn what_came_before_the_end_of_stream_is_served() {
    use svrkit_tests::svrkit::test::rpc::Note;
    let running = echo::start().await;
    for round in 0..20u64 {
        let mut stream = TcpStream::connect(&running.addr).await.unwrap();
        let mut burst = Vec::new();
        let notes = 500;
        for i in 0..notes {
            let header = Header {
                kind: FrameKind::ONEWAY,
                request_id: i + 1,
                service_id: 9100,
                method_id: 3,
                ..Header::default()
            };
            let note = Note {
                text: format!("{round}-{i}-{}", "x".repeat((i % 7) as usize * 40)).into(),
                ..Default::default()
            };
            frame::encode_message(&header, &note, &mut burst);
        }
        burst.extend(request_frame(notes + 1, &EchoReq::default()));
        stream.write_all(&burst).await.unwrap();
        stream.shutdown().await.unwrap();
        // The answer to the last request comes back before the server closes.
        let mut answers = bytes::BytesMut::new();
        let decoder = frame::Decoder::new(1 << 20);
        let mut answered = false;
        while let Ok(n) = stream.read_buf(&mut answers).await {
            while let Ok(Some(frame)) = decoder.decode(&mut answers) {
                answered |= frame.header.request_id == notes + 1;
            }
            if n == 0 {
                break;
            }
        }
        assert!(
            answered,
            "round {round}: the request before the end went unanswered"
        );
        let prefix = format!("{round}-");
        running
            .observed
            .until("every note delivered", Duration::from_secs(5), |o| {
                let delivered = o.notes.lock().unwrap();
                delivered.iter().filter(|n| n.starts_with(&prefix)).count() == notes as usize
            })
            .await;
    }
}

/// What a subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A client whose every call is slow (or fails `INTERNAL`: the same kind of gate) costs the
/// log a line a second per method, saying how many it held back, not a line a call; an error
/// in the middle of the slow calls is still logged.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_slow_calls_is_logged_a_line_a_second_not_a_line_a_call() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // On this thread only: the server's tasks run here too (a current-thread runtime).
    let _guard = tracing::subscriber::set_default(subscriber);
    let running = echo::start_built(Limits::default(), None, |b| {
        b.slow_call_threshold(Duration::from_millis(1))
    })
    .await;
    let client = echo::client(&running.addr, 1);
    let slow = EchoReq {
        delay_ms: 2,
        ..EchoReq::default()
    };
    for _ in 0..200 {
        client.slow(&slow).await.unwrap();
    }
    let fails = EchoReq {
        panic: true,
        ..EchoReq::default()
    };
    // (Time enough for the panic's backtrace to print.)
    let patient = svrkit_runtime::CallOptions::timeout(Duration::from_secs(30));
    let e = client.slow_with(&fails, &patient).await.unwrap_err();
    assert_eq!(e.code(), Code::INTERNAL, "{e}");
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines = log.lines().filter(|l| l.contains("slow call")).count();
    // The first is logged; the rest within the same second are not (a stall of more
    // than a few seconds on a busy machine may let one more through per second).
    assert!((1..=5).contains(&lines), "{lines} lines:\n{log}");
    assert!(log.contains("held_back=0"), "{log}");
    let errors = log.lines().filter(|l| l.contains("status=\"internal\""));
    assert_eq!(errors.count(), 1, "the error is logged:\n{log}");
}
