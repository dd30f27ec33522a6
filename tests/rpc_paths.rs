//! The in-process and network paths are one path: the same table of cases gives the same
//! status both ways. And the seams around it: server hooks that see the request (metadata,
//! peer) before its body is decoded and can refuse it, client interceptors that add
//! metadata.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use svrkit_runtime::client::{Call, Interceptor};
use svrkit_runtime::server::Hook;
use svrkit_runtime::service::{MethodDescriptor, Priority, Retry};
use svrkit_runtime::{CallOptions, Channel, ChannelOptions, Code, Context, Limits, Server, Status};
use svrkit_tests::echo::{Echo, Observed, drop_a_call_and_watch_the_handler};
use svrkit_tests::svrkit::test::rpc::{EchoReq, EchoResp, EchoSvrClient, EchoSvrServer};

/// Holds a request up (in its hook, before the expiry check) for as many milliseconds as
/// its `stall` metadata says: a request that waited in a queue past its deadline.
struct Stall;

impl Hook for Stall {
    fn on_request(&self, _method: &'static MethodDescriptor, ctx: &Context) -> Result<(), Status> {
        if let Some(ms) = ctx.metadata.get("stall").and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(())
    }
}

/// Adds metadata to every call.
struct AddMetadata(&'static str, &'static str);

impl Interceptor for AddMetadata {
    fn intercept(&self, call: &mut Call) -> Result<(), Status> {
        call.header.metadata.insert(self.0.into(), self.1.into());
        Ok(())
    }
}

/// A method the server does not have.
static MISSING: MethodDescriptor = MethodDescriptor {
    name: "Missing",
    full_name: "test.rpc.EchoSvr.Missing",
    id: 99,
    service_id: 9100,
    timeout_ms: 1_000,
    retry: Retry::None,
    priority: Priority::Normal,
    oneway: false,
    long_poll: false,
    classes: svrkit_runtime::status::Classes::DEFAULT,
};

#[derive(Clone, Copy, Debug)]
enum Path {
    Network,
    InProcess,
}

struct Setup {
    observed: std::sync::Arc<Observed>,
    channel: Channel,
    client: EchoSvrClient,
    _server: Server,
}

async fn setup(path: Path, limits: Limits, hook: impl Hook) -> Setup {
    let observed = std::sync::Arc::new(Observed::default());
    let server = Server::builder()
        .limits(limits)
        .hook(hook)
        .add_service(EchoSvrServer::new(Echo {
            observed: observed.clone(),
            downstream: None,
        }))
        .build();
    let channel = match path {
        Path::InProcess => server.local_channel(),
        Path::Network => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let serving = server.clone();
            tokio::spawn(async move { serving.serve(listener).await });
            Channel::lazy([addr], ChannelOptions::default())
        }
    };
    Setup {
        observed,
        client: EchoSvrClient::new(channel.clone()),
        channel,
        _server: server,
    }
}

async fn run_case(case: &str, path: Path) -> Code {
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let s = setup(path, limits, Stall).await;
    let code = |r: Result<EchoResp, Status>| r.map_or_else(|e| e.code(), |_| Code::OK);
    match case {
        "ok" => code(s.client.echo(&EchoReq::default()).await),
        "deadline" => code(
            s.client
                .slow(&EchoReq {
                    delay_ms: 2_000,
                    ..Default::default()
                })
                .await,
        ),
        "panic" => code(
            s.client
                .echo(&EchoReq {
                    panic: true,
                    ..Default::default()
                })
                .await,
        ),
        "application error" => code(
            s.client
                .echo(&EchoReq {
                    fail_code: 1234,
                    ..Default::default()
                })
                .await,
        ),
        "unknown method" => code(
            s.channel
                .call(&MISSING, &EchoReq::default(), &CallOptions::default())
                .await,
        ),
        "cancel" => {
            drop_a_call_and_watch_the_handler(&s.observed, s.client.clone()).await;
            Code::CANCELLED
        }
        "overload" => {
            let client = s.client.clone();
            let busy = tokio::spawn(async move {
                client
                    .echo(&EchoReq {
                        delay_ms: 500,
                        ..Default::default()
                    })
                    .await
            });
            s.observed
                .until("started", Duration::from_secs(5), |o| {
                    o.started.load(Ordering::SeqCst) == 1
                })
                .await;
            let overloaded = code(s.client.echo(&EchoReq::default()).await);
            busy.await.unwrap().unwrap();
            overloaded
        }
        "expired before pickup" => {
            let stalled = EchoSvrClient::new(
                s.channel
                    .clone()
                    .with_interceptor(AddMetadata("stall", "150")),
            );
            // `Slow` has 100 ms; the request waits 150 ms before it would be picked up.
            let result = code(stalled.slow(&EchoReq::default()).await);
            assert_eq!(
                s.observed.started.load(Ordering::SeqCst),
                0,
                "{path:?}: it ran"
            );
            result
        }
        other => unreachable!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_network_calls_end_the_same_way() {
    let table = [
        ("ok", Code::OK),
        ("deadline", Code::DEADLINE_EXCEEDED),
        ("panic", Code::INTERNAL),
        ("application error", Code(1234)),
        ("unknown method", Code::UNIMPLEMENTED),
        ("cancel", Code::CANCELLED),
        ("overload", Code::OVERLOADED),
        ("expired before pickup", Code::DEADLINE_EXCEEDED),
    ];
    for (case, expected) in table {
        for path in [Path::Network, Path::InProcess] {
            assert_eq!(run_case(case, path).await, expected, "{case} over {path:?}");
        }
    }
}

/// Refuses calls without the right token, before their body is decoded; remembers peers.
#[derive(Default)]
struct RequireToken {
    peers: Mutex<Vec<Option<std::net::SocketAddr>>>,
}

impl Hook for RequireToken {
    fn on_request(&self, _method: &'static MethodDescriptor, ctx: &Context) -> Result<(), Status> {
        self.peers.lock().unwrap().push(ctx.peer);
        match ctx.metadata.get("token").map(|t| t.as_str()) {
            None => Err(Status::unauthenticated("no token")),
            Some("secret") => Ok(()),
            Some(_) => Err(Status::permission_denied("not this token")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_refuse_what_interceptors_do_not_authorise() {
    for path in [Path::Network, Path::InProcess] {
        let hook = std::sync::Arc::new(RequireToken::default());
        let s = setup(path, Limits::default(), hook.clone()).await;
        let err = s.client.echo(&EchoReq::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::UNAUTHENTICATED, "{path:?}: {err}");
        let wrong = EchoSvrClient::new(
            s.channel
                .clone()
                .with_interceptor(AddMetadata("token", "guess")),
        );
        let err = wrong.echo(&EchoReq::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::PERMISSION_DENIED, "{path:?}: {err}");
        let right = EchoSvrClient::new(
            s.channel
                .clone()
                .with_interceptor(AddMetadata("token", "secret")),
        );
        right.echo(&EchoReq::default()).await.unwrap();
        // Refused calls never reached the handler.
        assert_eq!(s.observed.started.load(Ordering::SeqCst), 1);
        let peers = hook.peers.lock().unwrap();
        assert_eq!(peers.len(), 3);
        match path {
            Path::Network => assert!(
                peers
                    .iter()
                    .all(|p| p.is_some_and(|a| a.ip().is_loopback()))
            ),
            Path::InProcess => assert!(peers.iter().all(Option::is_none)),
        }
    }
}
