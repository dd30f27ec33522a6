//! The trust boundary and fairness by peer, from outside: a stranger's header fields do not
//! steer the server, an authenticating hook decides who a stranger's request is for, one
//! address cannot take the connection table, and callers forget an overload once it ends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svrkit_runtime::frame::{self, FrameKind, Header};
use svrkit_runtime::metrics::{Untrusted, process};
use svrkit_runtime::server::{Hook, Trust};
use svrkit_runtime::service::{MethodDescriptor, Priority};
use svrkit_runtime::{Code, Context, Limits, Status};
use svrkit_tests::echo::{self, Running};
use svrkit_tests::raw::{RawConn, closed_within, header, request_frame};
use svrkit_tests::svrkit::test::rpc::EchoReq;
use tokio::io::AsyncWriteExt;

/// What the handler's context said, as hooks see it after authentication.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    priority: Option<Priority>,
    user_key: u64,
    dye: String,
    no_retry: bool,
    trace_id: Vec<u8>,
    deadline: Duration,
    attempt: u32,
    trusted: bool,
}

/// Records each request's context; with `tokens`, authenticates: the metadata's `token`
/// `good` is user 7, any other token is refused, no token is anonymous.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    tokens: bool,
}

impl Hook for Recorder {
    fn authenticate(&self, _: &'static MethodDescriptor, ctx: &mut Context) -> Result<(), Status> {
        if !self.tokens {
            return Ok(());
        }
        match ctx.metadata.get("token").map(|t| t.as_str()) {
            None => Ok(()),
            Some("good") => {
                ctx.user_key = 7;
                Ok(())
            }
            Some(_) => Err(Status::new(Code::UNAUTHENTICATED, "bad token")),
        }
    }

    fn on_request(&self, _: &'static MethodDescriptor, ctx: &Context) -> Result<(), Status> {
        self.seen.lock().unwrap().push(Seen {
            priority: Some(ctx.priority),
            user_key: ctx.user_key,
            dye: ctx.dye.to_string(),
            no_retry: ctx.no_retry,
            trace_id: ctx.trace_id.to_vec(),
            deadline: ctx.remaining().unwrap_or_default(),
            attempt: ctx.attempt,
            trusted: ctx.trusted,
        });
        Ok(())
    }
}

async fn server(trust: Trust, recorder: Arc<Recorder>, limits: Limits) -> Running {
    echo::start_built(limits, None, move |b| b.trust(trust).hook(recorder)).await
}

/// An `Echo` request (IDL: normal priority, 2 s) that claims everything a header can.
fn claiming(id: u64) -> Header {
    let mut h = header(FrameKind::REQUEST, id, 1, 60_000);
    h.priority = Priority::Critical.to_wire();
    h.user_key = 42;
    h.dye = "gray".into();
    h.no_retry = true;
    h.trace_id = bytes::Bytes::from_static(b"trace-from-outside");
    h.attempt = 2;
    h
}

async fn call_raw(addr: &str, header: &Header) -> frame::Frame {
    let mut conn = RawConn::connect(addr).await;
    conn.stream
        .write_all(&request_frame(header, &EchoReq::default()))
        .await
        .unwrap();
    conn.read(Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_strangers_steering_fields_are_the_methods_defaults_and_counted() {
    let recorder = Arc::new(Recorder::default());
    let running = server(Trust::nobody(), recorder.clone(), Limits::default()).await;
    let before: Vec<u64> = Untrusted::ALL
        .iter()
        .map(|&f| process().untrusted(f))
        .collect();

    let reply = call_raw(&running.addr, &claiming(1)).await;
    assert_eq!(
        reply.header.status_code, 0,
        "{}",
        reply.header.status_message
    );
    let seen = recorder.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.priority, Some(Priority::Normal), "the IDL's priority");
    assert_eq!(seen.user_key, 0);
    assert_eq!(seen.dye, "");
    assert!(!seen.no_retry);
    assert_eq!(
        seen.attempt, 0,
        "a stranger's retry would be no_retry by another name"
    );
    assert!(!seen.trace_id.is_empty() && seen.trace_id != b"trace-from-outside");
    assert!(
        seen.deadline <= Duration::from_secs(2),
        "{:?}",
        seen.deadline
    );
    assert!(!seen.trusted);
    for (field, before) in Untrusted::ALL.iter().zip(before) {
        assert!(process().untrusted(*field) > before, "{field:?} counted");
    }

    // The same request from a trusted peer is taken at its word.
    let recorder = Arc::new(Recorder::default());
    let running = server(Trust::default(), recorder.clone(), Limits::default()).await;
    let reply = call_raw(&running.addr, &claiming(1)).await;
    assert_eq!(reply.header.status_code, 0);
    let seen = recorder.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.priority, Some(Priority::Critical));
    assert_eq!(
        (seen.user_key, seen.dye.as_str(), seen.no_retry),
        (42, "gray", true)
    );
    assert_eq!(seen.trace_id, b"trace-from-outside");
    assert_eq!(seen.attempt, 2);
    assert!(
        seen.deadline > Duration::from_secs(50),
        "{:?}",
        seen.deadline
    );
    assert!(seen.trusted);
}

/// Shedding the last two user levels of normal priority: a stranger's request that no hook
/// vouched for is one of them, whatever priority it claims, and is shed; one the hook
/// authenticated ranks as its user and gets in; a bad token is refused before it counts.
#[tokio::test]
async fn an_authenticating_hook_ranks_a_strangers_request_as_its_user() {
    let recorder = Arc::new(Recorder {
        tokens: true,
        ..Recorder::default()
    });
    let running = server(Trust::nobody(), recorder.clone(), Limits::default()).await;
    let anonymous_level = svrkit_runtime::policy::priority::level(Priority::Normal, 126);
    running
        .server
        .admission()
        .unwrap()
        .pin(Some(anonymous_level));

    let anonymous = call_raw(&running.addr, &claiming(1)).await;
    assert_eq!(anonymous.header.status_code, Code::OVERLOADED.0);
    assert_eq!(anonymous.header.admission_level, anonymous_level);
    assert!(
        anonymous.header.admission_refused,
        "shed by the level: overload control's refusal, for callers' throttles to leave"
    );

    let mut user = claiming(2);
    user.metadata.insert("token".into(), "good".into());
    let admitted = call_raw(&running.addr, &user).await;
    assert_eq!(
        admitted.header.status_code, 0,
        "{}",
        admitted.header.status_message
    );
    assert!(!admitted.header.admission_refused);
    let seen = recorder.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!((seen.user_key, seen.priority), (7, Some(Priority::Normal)));

    let mut forged = claiming(3);
    forged.metadata.insert("token".into(), "forged".into());
    let refused = call_raw(&running.addr, &forged).await;
    assert_eq!(refused.header.status_code, Code::UNAUTHENTICATED.0);
}

/// Sends `n` requests at once over `conn` and counts the answers: (successes, refusals as
/// overloaded).
async fn flood(conn: &mut RawConn, n: u64, token: Option<&str>) -> (usize, usize) {
    let mut frames = Vec::new();
    for id in 1..=n {
        let mut h = claiming(id);
        if let Some(token) = token {
            h.metadata.insert("token".into(), token.to_owned().into());
        }
        frames.extend(request_frame(&h, &EchoReq::default()));
    }
    conn.stream.write_all(&frames).await.unwrap();
    let (mut ok, mut shed) = (0, 0);
    for _ in 0..n {
        match conn.read(Duration::from_secs(10)).await.header.status_code {
            0 => ok += 1,
            code if code == Code::OVERLOADED.0 => shed += 1,
            code => panic!("unexpected status {code}"),
        }
    }
    (ok, shed)
}

/// Under overload (shedding only the last user level of normal priority), a stranger's
/// address or account that sends far more than the others has its share and then ranks
/// last, while another stranger's few calls, anonymous or not, rank above it and are served.
/// Without shares every anonymous stranger would rank last together and be shed with the
/// flood.
#[tokio::test]
async fn a_strangers_flood_has_its_share_and_other_strangers_are_served() {
    let recorder = Arc::new(Recorder {
        tokens: true,
        ..Recorder::default()
    });
    let running = server(Trust::nobody(), recorder, Limits::default()).await;
    let last_normal = svrkit_runtime::policy::priority::level(Priority::Normal, 127);
    running.server.admission().unwrap().pin(Some(last_normal));
    let floor = svrkit_runtime::policy::shares::FLOOR as usize;

    // Each round's other stranger has an address of its own: a principal's count lasts an
    // epoch, and both rounds may fall in one.
    for (token, other) in [(None, "127.0.0.1"), (Some("good"), "127.0.0.3")] {
        let mut flooder = RawConn::over(connect_from("127.0.0.2", &running.addr).await);
        let (ok, shed) = flood(&mut flooder, 400, token).await;
        // The floor in each epoch the flood spanned (a few, on a slow machine).
        assert!(
            (floor..=25 * floor).contains(&ok) && shed == 400 - ok,
            "{token:?}: {ok} served, {shed} shed"
        );
        let mut other = RawConn::over(connect_from(other, &running.addr).await);
        let (ok, shed) = flood(&mut other, floor as u64 - 1, None).await;
        assert_eq!((ok, shed), (floor - 1, 0), "after a flood with {token:?}");
    }
}

/// Connects from `ip` (another loopback address than the client's 127.0.0.1).
async fn connect_from(ip: &str, to: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to.parse().unwrap()).await.unwrap()
}

/// The first frame the server sends on a connection: PONG if it was accepted (to the PING a
/// client opens with), GOAWAY if refused.
async fn first_frame(stream: &mut tokio::net::TcpStream) -> frame::Frame {
    use tokio::io::AsyncReadExt;
    let mut ping = Vec::new();
    frame::encode(&header(FrameKind::PING, 0, 0, 0), &[], &mut ping);
    // A refused connection may be closed before this arrives.
    let _ = stream.write_all(&ping).await;
    let decoder = frame::Decoder::new(1 << 20);
    let mut buf = bytes::BytesMut::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                return frame;
            }
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "closed unheard"
            );
        }
    })
    .await
    .expect("a first frame")
}

/// One address opens as many connections as the whole server takes, and never has a call
/// run: it gets its share, the rest are refused, the ones it got are closed soon (one that
/// made a call is kept), and a client from another address is served throughout.
#[tokio::test]
async fn one_addresses_connection_flood_leaves_another_served() {
    let limits = Limits {
        max_connections: 32,
        max_connections_per_peer: 8,
        first_request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let running = server(Trust::nobody(), Arc::default(), limits).await;
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..32 {
        let mut stream = connect_from("127.0.0.2", &running.addr).await;
        let first = first_frame(&mut stream).await;
        if first.header.kind == FrameKind::GOAWAY {
            assert_eq!(first.header.status_code, Code::OVERLOADED.0);
            assert!(
                first
                    .header
                    .status_message
                    .contains("your address is at its limit of 8"),
                "{}",
                first.header.status_message
            );
            refused += 1;
        } else {
            assert_eq!(first.header.kind, FrameKind::PONG);
            kept.push(stream);
        }
    }
    assert_eq!((kept.len(), refused), (8, 24));
    // Another address is served.
    let client = echo::client(&running.addr, 1);
    let got = client.echo(&EchoReq::default()).await;
    assert!(got.is_ok(), "{got:?}");
    // Holding connections without a call costs the flood its connections, long before the
    // idle timeout, and so does sending requests for a method the server does not host.
    let mut unknown = header(FrameKind::REQUEST, 1, 1, 1000);
    unknown.service_id = 9999;
    for stream in &mut kept[..4] {
        stream
            .write_all(&request_frame(&unknown, &EchoReq::default()))
            .await
            .unwrap();
    }
    // A connection that made a call is kept.
    let mut caller = RawConn::over(kept.pop().unwrap());
    caller.request(1, 1, 1000, &EchoReq::default()).await;
    assert_eq!(
        caller.read(Duration::from_secs(5)).await.header.status_code,
        0
    );
    for stream in &mut kept {
        assert!(closed_within(stream, Duration::from_secs(10)).await);
    }
    assert!(!closed_within(&mut caller.stream, Duration::from_secs(1)).await);
    // Then the address may connect again.
    let mut again = connect_from("127.0.0.2", &running.addr).await;
    assert_eq!(first_frame(&mut again).await.header.kind, FrameKind::PONG);
}

/// A caller that learned an overloaded server's level drops what the server would refuse,
/// but only while the level is fresh: once the overload is over, a call goes through within
/// one probe period (50 ms), not after the 2 s it used to take.
#[tokio::test]
async fn after_an_overload_a_fresh_call_succeeds_within_a_probe_period() {
    let running = server(Trust::default(), Arc::default(), Limits::default()).await;
    let admission = running.server.admission().unwrap();
    let client = echo::client(&running.addr, 1);
    admission.pin(Some(1));
    let shed = client.echo(&EchoReq::default()).await.unwrap_err();
    assert_eq!(shed.code(), Code::OVERLOADED, "{shed}");
    let dropped = client.echo(&EchoReq::default()).await.unwrap_err();
    assert!(
        dropped.message().contains("dropped before sending"),
        "{dropped}"
    );
    // The overload ends.
    admission.pin(Some(svrkit_runtime::policy::priority::LEVELS));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let got = client.echo(&EchoReq::default()).await;
    assert!(
        got.is_ok(),
        "the first call after the probe period: {got:?}"
    );
    client.echo(&EchoReq::default()).await.unwrap();
}
