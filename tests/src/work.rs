//! The service of `idl/test/overload.xml`: handlers that burn CPU, fail, stall or call
//! onwards as the server is set up, and servers of it on their own runtimes (so that one can
//! be killed, and so that a benchmark's servers and clients do not share a scheduler).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use svrkit_runtime::policy::AdmissionConfig;
use svrkit_runtime::{Channel, ChannelOptions, Code, Context, FastStr, Server, Status, Trust};

use crate::svrkit::test::overload::{WorkReq, WorkResp, WorkSvr, WorkSvrClient, WorkSvrServer};

/// How a [`Work`] server behaves; changed while it runs.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Answer every call with this status code (0: answer normally).
    pub fail: AtomicU32,
    /// Wait this long (milliseconds) before answering, noticing cancellation.
    pub delay_ms: AtomicU64,
}

/// What a [`Work`] server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Handlers started.
    pub served: AtomicU64,
    /// Handlers started for requests that forbade retries of their downstream calls.
    pub no_retry: AtomicU64,
    /// Handlers started for retried requests (attempt above 0).
    pub retries: AtomicU64,
}

/// The work service.
pub struct Work {
    /// Its name, in every response.
    pub name: FastStr,
    /// Where `Get` and `Fan` call.
    pub downstream: Option<WorkSvrClient>,
    /// What `Lean` calls as a weak dependency, and with what timeout.
    pub weak: Option<(WorkSvrClient, Duration)>,
    /// Set while it runs.
    pub behaviour: Arc<Behaviour>,
    /// What it saw.
    pub seen: Arc<Seen>,
}

impl Work {
    /// A leaf server called `name`.
    pub fn new(name: &str) -> Work {
        Work {
            name: FastStr::new(name),
            downstream: None,
            weak: None,
            behaviour: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// A server called `name` whose `Get` and `Fan` call `downstream` through a channel
    /// with `options`.
    pub fn calling(name: &str, downstream: &Running, options: ChannelOptions) -> Work {
        Work {
            downstream: Some(client(&[&downstream.addr], options)),
            ..Work::new(name)
        }
    }

    async fn work(&self, ctx: &Context, request: &WorkReq) -> Result<WorkResp, Status> {
        self.seen.served.fetch_add(1, Ordering::Relaxed);
        if ctx.no_retry {
            self.seen.no_retry.fetch_add(1, Ordering::Relaxed);
        }
        if ctx.attempt > 0 {
            self.seen.retries.fetch_add(1, Ordering::Relaxed);
        }
        let delay = self.behaviour.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                _ = ctx.cancelled() => return Err(Status::cancelled("gave up")),
            }
        }
        let fail = self.behaviour.fail.load(Ordering::Relaxed);
        if fail != 0 {
            return Err(Status::new(Code(fail), "asked to fail"));
        }
        spin(Duration::from_micros(u64::from(request.cost_us)));
        Ok(WorkResp {
            server: self.name.clone(),
            tag: request.tag,
            ..WorkResp::default()
        })
    }
}

/// Computes for `cost` without awaiting: a handler's CPU work.
pub fn spin(cost: Duration) {
    let until = Instant::now() + cost;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

impl WorkSvr for Work {
    async fn critical(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        self.work(&ctx, &request).await
    }
    async fn high(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        self.work(&ctx, &request).await
    }
    async fn normal(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        self.work(&ctx, &request).await
    }
    async fn low(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        self.work(&ctx, &request).await
    }
    async fn get(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        match &self.downstream {
            Some(next) => {
                self.work(&ctx, &WorkReq::default()).await?;
                next.get(&request).await
            }
            None => self.work(&ctx, &request).await,
        }
    }
    async fn fan(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        let next = self
            .downstream
            .as_ref()
            .ok_or_else(|| Status::internal("Fan needs a downstream"))?;
        self.work(&ctx, &WorkReq::default()).await?;
        let mut last = WorkResp::default();
        for _ in 0..request.calls {
            last = next.normal(&request).await?;
        }
        Ok(last)
    }
    async fn lean(&self, ctx: Context, request: WorkReq) -> Result<WorkResp, Status> {
        let mut resp = self.work(&ctx, &request).await?;
        if let Some((weak, timeout)) = &self.weak {
            resp.skipped = weak.normal_weak(&request, *timeout).await.is_none();
        }
        Ok(resp)
    }
}

/// A server of [`Work`] on a runtime of its own.
pub struct Running {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// The server.
    pub server: Server,
    /// How it behaves.
    pub behaviour: Arc<Behaviour>,
    /// What it saw.
    pub seen: Arc<Seen>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Running {
    /// Answers every call with `code` from now on (`Code::OK`: normally again).
    pub fn fail_with(&self, code: Code) {
        self.behaviour.fail.store(code.0, Ordering::SeqCst);
    }

    /// Kills the server, as a crash would: its runtime is dropped with its tasks, and its
    /// connections close with calls in flight. Returns once that is done (the runtime's
    /// threads are joined on a thread of their own, so that this may be called from a task).
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ =
                std::thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(5))).join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts `work` on its own runtime with `workers` threads, with overload control as
/// `admission` says.
pub fn start(work: Work, admission: AdmissionConfig, workers: usize) -> Running {
    start_trusting(work, admission, workers, Trust::default())
}

/// [`start`], trusting the header fields of the peers `trust` names.
pub fn start_trusting(
    work: Work,
    admission: AdmissionConfig,
    workers: usize,
    trust: Trust,
) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(format!("server-{}", work.name))
        .enable_all()
        .build()
        .expect("a runtime");
    let behaviour = work.behaviour.clone();
    let seen = work.seen.clone();
    let server = Server::builder()
        .admission(admission)
        .trust(trust)
        .add_service(WorkSvrServer::new(work))
        .build();
    // Bound here, so that this works from inside another runtime too.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let addr = listener.local_addr().expect("an address").to_string();
    runtime.spawn({
        let server = server.clone();
        async move {
            server
                .serve(tokio::net::TcpListener::from_std(listener)?)
                .await
        }
    });
    Running {
        addr,
        server,
        behaviour,
        seen,
        runtime: Some(runtime),
    }
}

/// A client of the servers at `addrs` with `options`.
pub fn client(addrs: &[&str], options: ChannelOptions) -> WorkSvrClient {
    WorkSvrClient::new(Channel::lazy(addrs.iter().map(|a| a.to_string()), options))
}
