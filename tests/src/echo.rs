//! The test service of `idl/test/rpc.xml`, and helpers to run it on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use svrkit_runtime::server::ServerBuilder;
use svrkit_runtime::{Channel, ChannelOptions, Context, Server, Status};

use crate::svrkit::test::all_types::AllTypes;
use crate::svrkit::test::rpc::{EchoReq, EchoResp, EchoSvr, EchoSvrClient, EchoSvrServer, Note};

/// What the handlers saw, for tests to inspect.
#[derive(Default)]
pub struct Observed {
    /// Calls whose handler noticed cancellation (deadline or caller) through its context.
    pub saw_cancel: AtomicUsize,
    /// Handlers that started.
    pub started: AtomicUsize,
    /// Handlers that finished normally.
    pub finished: AtomicUsize,
    /// Sequence numbers in the order handlers finished.
    pub finish_order: Mutex<Vec<u64>>,
    /// Texts of oneway notes received.
    pub notes: Mutex<Vec<String>>,
    /// Signalled whenever a counter above changes, for tests to wait on.
    pub changed: tokio::sync::Notify,
}

impl Observed {
    /// Waits (up to `limit`) until `check` holds, woken by the handlers rather than polling.
    /// Returns how long it took.
    pub async fn until(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Observed) -> bool,
    ) -> Duration {
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(limit, async {
            loop {
                let changed = self.changed.notified();
                if check(self) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "timed out after {limit:?} waiting for: {what}"
        );
        started.elapsed()
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// The echo service. `downstream` is where Relay calls go.
pub struct Echo {
    /// What the handlers saw.
    pub observed: Arc<Observed>,
    /// Where Relay forwards to.
    pub downstream: Option<EchoSvrClient>,
}

impl Echo {
    async fn answer(&self, ctx: Context, request: EchoReq) -> Result<EchoResp, Status> {
        self.observed.bump(&self.observed.started);
        if request.panic {
            panic!("asked to panic");
        }
        if request.hang {
            return std::future::pending().await;
        }
        if request.spin_ms > 0 {
            let until = std::time::Instant::now() + Duration::from_millis(request.spin_ms.into());
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        if request.fail_code != 0 {
            return Err(Status::application(request.fail_code, "asked to fail"));
        }
        let remaining_ms = ctx.remaining().map_or(0, |d| d.as_millis() as u32);
        if request.delay_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))) => {}
                _ = ctx.cancelled() => {
                    self.observed.bump(&self.observed.saw_cancel);
                    return Err(Status::cancelled("noticed"));
                }
            }
        }
        self.observed.bump(&self.observed.finished);
        self.observed.finish_order.lock().unwrap().push(request.seq);
        Ok(EchoResp {
            text: request.text,
            seq: request.seq,
            remaining_ms,
            caller: ctx.caller.clone(),
            payload: request.payload,
            priority: ctx.priority.to_wire(),
            ..Default::default()
        })
    }
}

impl EchoSvr for Echo {
    async fn echo(&self, ctx: Context, request: EchoReq) -> Result<EchoResp, Status> {
        self.answer(ctx, request).await
    }

    async fn slow(&self, ctx: Context, request: EchoReq) -> Result<EchoResp, Status> {
        self.answer(ctx, request).await
    }

    async fn notify(&self, _ctx: Context, request: Note) -> Result<(), Status> {
        self.observed
            .notes
            .lock()
            .unwrap()
            .push(request.text.to_string());
        self.observed.changed.notify_waiters();
        Ok(())
    }

    async fn hang(&self, ctx: Context, request: EchoReq) -> Result<EchoResp, Status> {
        self.answer(ctx, request).await
    }

    async fn relay(&self, _ctx: Context, request: EchoReq) -> Result<EchoResp, Status> {
        let downstream = self
            .downstream
            .as_ref()
            .ok_or_else(|| Status::unavailable("no downstream"))?;
        // A span of the handler's own, for the OTLP test to find between the hops.
        tracing::Instrument::instrument(
            downstream.echo(&request),
            tracing::info_span!("relay.downstream"),
        )
        .await
    }

    async fn all_types(&self, _ctx: Context, request: AllTypes) -> Result<AllTypes, Status> {
        Ok(request)
    }
}

/// A server hosting [`Echo`] on a loopback port.
pub struct Running {
    /// The server.
    pub server: Server,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// What its handlers saw.
    pub observed: Arc<Observed>,
    /// The accept loop.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts an echo server with default limits.
pub async fn start() -> Running {
    start_with(svrkit_runtime::Limits::default(), None).await
}

/// Starts an echo server with `limits`, relaying to `downstream`.
pub async fn start_with(
    limits: svrkit_runtime::Limits,
    downstream: Option<EchoSvrClient>,
) -> Running {
    start_built(limits, downstream, |builder| builder).await
}

/// Starts an echo server with `limits`, relaying to `downstream`, after `configure` had its
/// say on the builder (hooks, TLS).
pub async fn start_built(
    limits: svrkit_runtime::Limits,
    downstream: Option<EchoSvrClient>,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Running {
    let observed = Arc::new(Observed::default());
    let builder = Server::builder()
        .limits(limits)
        .add_service(EchoSvrServer::new(Echo {
            observed: observed.clone(),
            downstream,
        }));
    let server = configure(builder).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    Running {
        server,
        addr,
        observed,
        task,
    }
}

/// A client of `addr` with `connections` connections.
pub fn client(addr: &str, connections: usize) -> EchoSvrClient {
    let options = ChannelOptions {
        connections_per_endpoint: connections,
        caller: "tests".into(),
        ..Default::default()
    };
    EchoSvrClient::new(Channel::lazy([addr.to_owned()], options))
}

/// `n` calls of `Echo`, each on its own task, answered after `delay_ms` (their `seq` is
/// their index).
pub fn slow_calls(
    client: &EchoSvrClient,
    n: u64,
    delay_ms: u32,
) -> Vec<tokio::task::JoinHandle<Result<EchoResp, Status>>> {
    (0..n)
        .map(|seq| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .echo(&EchoReq {
                        seq,
                        delay_ms,
                        ..EchoReq::default()
                    })
                    .await
            })
        })
        .collect()
}

/// Calls `Echo` and checks it is answered within a second: the server is still serving.
pub async fn still_serving(client: &EchoSvrClient) {
    let started = std::time::Instant::now();
    let response = client
        .echo(&EchoReq {
            text: "fine".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(response.text, "fine");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

/// Starts a call with a minute's deadline to a handler that would take ten seconds, drops
/// it once the handler runs, and checks the handler sees the cancellation within 100 ms: only
/// the cancel itself (not a deadline) can cause that.
pub async fn drop_a_call_and_watch_the_handler(observed: &Observed, client: EchoSvrClient) {
    let call = tokio::spawn(async move {
        client
            .echo_with(
                &EchoReq {
                    delay_ms: 10_000,
                    ..Default::default()
                },
                &svrkit_runtime::CallOptions::timeout(Duration::from_secs(60)),
            )
            .await
    });
    observed
        .until("the handler started", Duration::from_secs(5), |o| {
            o.started.load(Ordering::SeqCst) == 1
        })
        .await;
    call.abort();
    observed
        .until(
            "the handler saw the cancel",
            Duration::from_millis(100),
            |o| o.saw_cancel.load(Ordering::SeqCst) == 1,
        )
        .await;
}
