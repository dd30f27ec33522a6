//! The RPC benchmark: svrkit, tonic and tarpc side by side on the same chat service, plus a
//! bare length-prefixed TCP echo as the transport floor, and an idle-connection scale test.
//!
//! ```sh
//! cargo bench -p svrkit-tests --bench rpc                 # throughput, latency, server CPU
//! cargo bench -p svrkit-tests --bench rpc -- idle 5000     # memory per idle connection
//! cargo bench -p svrkit-tests --bench rpc -- --seconds 5 --concurrency 1,64 --systems svrkit,tonic
//! ```
//!
//! Each server runs in a child process pinned to core 0 with one tokio worker; the load
//! generator runs here, pinned to core 1. The request is the chat send request of the codec
//! bench (two short strings, a u64, an enum, 128 bytes of content, an i64, two repeated
//! strings); the response has four fields. Server CPU per request is the child's user plus
//! system time over the requests it answered.

use std::collections::HashMap;
use std::io::Write as _;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};

use svrkit_tests::child::ServerProcess;
use svrkit_tests::svrkit::bench::chat as sk;

mod tonic_chat {
    #![allow(clippy::all, missing_docs, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/tonic/bench.chat.rs"));
}

/// `svrkit-nomon` is svrkit with its built-in monitoring turned off on both sides, to show
/// what monitoring costs; `svrkit-nopolicy` is svrkit with its avalanche protection off
/// (no admission control on the server; no retries, throttling or collaborative rejection
/// on the client, which balances round robin), to show what that costs.
const SYSTEMS: [&str; 6] = [
    "svrkit",
    "svrkit-nomon",
    "svrkit-nopolicy",
    "tonic",
    "tarpc",
    "floor",
];

// ---------------------------------------------------------------- shared request/response

fn svrkit_request() -> sk::SendMsgReq {
    sk::SendMsgReq {
        from_user: "wxid_00010000".into(),
        to_user: "wxid_00020000".into(),
        client_msg_id: 0x1234_5678_9abc,
        msg_type: sk::MsgType::TEXT,
        content: Bytes::from(vec![b'x'; 128]),
        create_time: 1_763_800_000,
        at_users: vec!["wxid_alice".into(), "wxid_bob".into()],
        ..Default::default()
    }
}

fn respond(client_msg_id: u64, create_time: i64) -> (i32, u64, u64, i64) {
    (0, client_msg_id ^ 0x5555, 1, create_time + 1)
}

// ---------------------------------------------------------------- svrkit

struct SvrkitChat;
impl sk::ChatSvr for SvrkitChat {
    async fn send_msg(
        &self,
        _ctx: svrkit_runtime::Context,
        r: sk::SendMsgReq,
    ) -> Result<sk::SendMsgResp, svrkit_runtime::Status> {
        let (ret, msg_id, seq, server_time) = respond(r.client_msg_id, r.create_time);
        Ok(sk::SendMsgResp {
            ret,
            msg_id,
            seq,
            server_time,
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------- tonic

struct TonicChat;
#[tonic::async_trait]
impl tonic_chat::chat_svr_server::ChatSvr for TonicChat {
    async fn send_msg(
        &self,
        request: tonic::Request<tonic_chat::SendMsgReq>,
    ) -> Result<tonic::Response<tonic_chat::SendMsgResp>, tonic::Status> {
        let r = request.into_inner();
        let (ret, msg_id, seq, server_time) = respond(r.client_msg_id, r.create_time);
        Ok(tonic::Response::new(tonic_chat::SendMsgResp {
            ret,
            msg_id,
            seq,
            server_time,
        }))
    }
}

fn tonic_request() -> tonic_chat::SendMsgReq {
    let r = svrkit_request();
    tonic_chat::SendMsgReq {
        from_user: r.from_user.to_string(),
        to_user: r.to_user.to_string(),
        client_msg_id: r.client_msg_id,
        msg_type: r.msg_type.0,
        content: r.content.clone(),
        create_time: r.create_time,
        at_users: r.at_users.iter().map(|s| s.to_string()).collect(),
    }
}

// ---------------------------------------------------------------- tarpc

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct TarpcReq {
    from_user: String,
    to_user: String,
    client_msg_id: u64,
    msg_type: i32,
    content: Bytes,
    create_time: i64,
    at_users: Vec<String>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct TarpcResp {
    ret: i32,
    msg_id: u64,
    seq: u64,
    server_time: i64,
}

#[tarpc::service]
trait Chat {
    async fn send_msg(request: TarpcReq) -> TarpcResp;
}

#[derive(Clone)]
struct TarpcChat;
impl Chat for TarpcChat {
    async fn send_msg(self, _: tarpc::context::Context, r: TarpcReq) -> TarpcResp {
        let (ret, msg_id, seq, server_time) = respond(r.client_msg_id, r.create_time);
        TarpcResp {
            ret,
            msg_id,
            seq,
            server_time,
        }
    }
}

fn tarpc_request() -> TarpcReq {
    let t = tonic_request();
    TarpcReq {
        from_user: t.from_user,
        to_user: t.to_user,
        client_msg_id: t.client_msg_id,
        msg_type: t.msg_type,
        content: t.content,
        create_time: t.create_time,
        at_users: t.at_users,
    }
}

// ---------------------------------------------------------------- floor: length-prefixed echo

/// Frames are `u32 length, u64 id, payload`; the server answers each with a fixed response of
/// the size of svrkit's encoded response, without decoding anything.
async fn floor_serve(listener: TcpListener) {
    let response = sk::SendMsgResp {
        ret: 0,
        msg_id: 1 << 40,
        seq: 1,
        server_time: 1_763_800_001,
        ..Default::default()
    };
    let response = Bytes::from(svrkit_runtime::codec::Message::encode_to_vec(&response));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let response = response.clone();
        tokio::spawn(async move {
            let mut input = BytesMut::with_capacity(64 * 1024);
            let mut output = BytesMut::with_capacity(64 * 1024);
            loop {
                match stream.read_buf(&mut input).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while input.len() >= 4 {
                    let len = u32::from_be_bytes(input[..4].try_into().unwrap()) as usize;
                    if input.len() < 4 + len {
                        break;
                    }
                    input.advance(4);
                    let id = input.get_u64();
                    input.advance(len - 8);
                    output.put_u32(8 + response.len() as u32);
                    output.put_u64(id);
                    output.put_slice(&response);
                }
                if !output.is_empty() && stream.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
            }
        });
    }
}

/// A multiplexed client for the floor protocol, shaped like svrkit's: a writer task that
/// batches, a reader that matches responses by id.
#[derive(Clone)]
struct FloorClient {
    conns: Arc<Vec<FloorConn>>,
    next: Arc<AtomicU64>,
}

struct FloorConn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<()>>>>,
}

impl FloorClient {
    async fn connect(addr: &str, connections: usize) -> FloorClient {
        let mut conns = Vec::new();
        for _ in 0..connections {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut rd, mut wr) = stream.into_split();
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                while let Some(first) = rx.recv().await {
                    batch.clear();
                    batch.extend_from_slice(&first);
                    // Gathers like svrkit's client writer: drain, yield once so that the
                    // other ready callers can queue, drain again.
                    while let Ok(more) = rx.try_recv() {
                        batch.extend_from_slice(&more);
                    }
                    tokio::task::yield_now().await;
                    while let Ok(more) = rx.try_recv() {
                        batch.extend_from_slice(&more);
                    }
                    if wr.write_all(&batch).await.is_err() {
                        return;
                    }
                }
            });
            let pending: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
            let reader_pending = pending.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                loop {
                    match rd.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    while buf.len() >= 4 {
                        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                        if buf.len() < 4 + len {
                            break;
                        }
                        buf.advance(4);
                        let id = buf.get_u64();
                        buf.advance(len - 8);
                        if let Some(waiter) = reader_pending.lock().unwrap().remove(&id) {
                            let _ = waiter.send(());
                        }
                    }
                }
            });
            conns.push(FloorConn { tx, pending });
        }
        FloorClient {
            conns: Arc::new(conns),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn call(&self, payload: &[u8]) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = &self.conns[id as usize % self.conns.len()];
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().unwrap().insert(id, tx);
        let mut frame = Vec::with_capacity(12 + payload.len());
        frame.extend_from_slice(&(8 + payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(payload);
        conn.tx.send(frame).await.unwrap();
        rx.await.unwrap();
    }
}

/// Connections per client for svrkit and the floor: 1 (what tonic and tarpc use) unless
/// `SVRKIT_BENCH_CONNECTIONS` says otherwise.
fn connections() -> usize {
    std::env::var("SVRKIT_BENCH_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

// ---------------------------------------------------------------- processes and measurement

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the pointer is to a local.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Child mode: serve `system` on a loopback port, print it, run until stdin closes.
fn serve(system: &str) {
    pin_to_core(0);
    let rt = one_worker_runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        match system {
            "svrkit" | "svrkit-nomon" | "svrkit-nopolicy" => {
                let server = svrkit_runtime::Server::builder()
                    .add_service(sk::ChatSvrServer::new(SvrkitChat))
                    .monitoring(system != "svrkit-nomon")
                    .admission(svrkit_runtime::policy::AdmissionConfig {
                        enabled: system != "svrkit-nopolicy",
                        ..Default::default()
                    })
                    .build();
                tokio::spawn(async move { server.serve(listener).await });
            }
            "tonic" => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(tonic_chat::chat_svr_server::ChatSvrServer::new(TonicChat))
                        .serve_with_incoming(incoming),
                );
            }
            "tarpc" => {
                drop(listener);
                let mut incoming = tarpc::serde_transport::tcp::listen(
                    addr,
                    tarpc::tokio_serde::formats::Bincode::default,
                )
                .await
                .unwrap();
                tokio::spawn(async move {
                    use tarpc::server::Channel as _;
                    while let Some(Ok(transport)) = incoming.next().await {
                        tokio::spawn(
                            tarpc::server::BaseChannel::with_defaults(transport)
                                .execute(TarpcChat.serve())
                                .for_each(|f| async move {
                                    tokio::spawn(f);
                                }),
                        );
                    }
                });
            }
            "floor" => {
                tokio::spawn(floor_serve(listener));
            }
            other => panic!("unknown system {other}"),
        }
        println!("READY {addr}");
        std::io::stdout().flush().unwrap();
        // Exit when the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .unwrap();
    });
}

/// User plus system CPU time of the server process so far.
fn server_cpu(server: &ServerProcess) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// One client of any system, callable from many tasks.
#[derive(Clone)]
enum Client {
    Svrkit(sk::ChatSvrClient, Arc<sk::SendMsgReq>),
    Tonic(
        tonic_chat::chat_svr_client::ChatSvrClient<tonic::transport::Channel>,
        Arc<tonic_chat::SendMsgReq>,
    ),
    Tarpc(ChatClient, Arc<TarpcReq>),
    Floor(FloorClient, Arc<Vec<u8>>),
}

impl Client {
    async fn connect(system: &str, addr: &str) -> Client {
        match system {
            "svrkit" | "svrkit-nomon" | "svrkit-nopolicy" => {
                // One connection, as tonic and tarpc use.
                let mut options = svrkit_runtime::ChannelOptions {
                    connections_per_endpoint: connections(),
                    monitoring: system != "svrkit-nomon",
                    ..Default::default()
                };
                if system == "svrkit-nopolicy" {
                    options.retry.enabled = false;
                    options.throttle = None;
                    options.balancer = svrkit_runtime::client::BalancerKind::RoundRobin;
                }
                let channel = svrkit_runtime::Channel::lazy([addr.to_owned()], options);
                Client::Svrkit(sk::ChatSvrClient::new(channel), Arc::new(svrkit_request()))
            }
            "tonic" => {
                let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                Client::Tonic(
                    tonic_chat::chat_svr_client::ChatSvrClient::new(channel),
                    Arc::new(tonic_request()),
                )
            }
            "tarpc" => {
                let transport = tarpc::serde_transport::tcp::connect(
                    addr,
                    tarpc::tokio_serde::formats::Bincode::default,
                )
                .await
                .unwrap();
                let mut config = tarpc::client::Config::default();
                config.max_in_flight_requests = 4096;
                config.pending_request_buffer = 4096;
                Client::Tarpc(
                    ChatClient::new(config, transport).spawn(),
                    Arc::new(tarpc_request()),
                )
            }
            "floor" => {
                let payload = svrkit_runtime::codec::Message::encode_to_vec(&svrkit_request());
                Client::Floor(
                    FloorClient::connect(addr, connections()).await,
                    Arc::new(payload),
                )
            }
            other => panic!("unknown system {other}"),
        }
    }

    async fn call(&mut self) {
        match self {
            Client::Svrkit(c, r) => {
                // Cloned per call like the others' requests (which they take by value).
                let request = (**r).clone();
                c.send_msg(&request).await.unwrap();
            }
            Client::Tonic(c, r) => {
                c.send_msg(tonic::Request::new((**r).clone()))
                    .await
                    .unwrap();
            }
            Client::Tarpc(c, r) => {
                let mut ctx = tarpc::context::current();
                ctx.deadline = Instant::now() + Duration::from_secs(30);
                c.send_msg(ctx, (**r).clone()).await.unwrap();
            }
            Client::Floor(c, r) => c.call(r).await,
        }
    }
}

struct Row {
    qps: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_request: Duration,
}

/// Runs `concurrency` callers for `seconds` (after a warm-up) and measures.
async fn measure(server: &ServerProcess, client: &Client, concurrency: usize, seconds: f64) -> Row {
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (mut client, stop, recording, latencies) = (
                client.clone(),
                stop.clone(),
                recording.clone(),
                latencies.clone(),
            );
            tokio::spawn(async move {
                let mut mine = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    client.call().await;
                    if recording.load(Ordering::Relaxed) {
                        mine.push(started.elapsed().as_micros() as u32);
                    }
                }
                latencies.lock().await.extend(mine);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = server_cpu(server);
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = server_cpu(server) - cpu_before;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut l = std::mem::take(&mut *latencies.lock().await);
    l.sort_unstable();
    let n = l.len().max(1);
    Row {
        qps: l.len() as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_micros(u64::from(l[n / 2])),
        p99: Duration::from_micros(u64::from(l[(n * 99 / 100).min(n - 1)])),
        cpu_per_request: cpu / n as u32,
    }
}

fn list_arg(args: &[String], name: &str) -> Option<Vec<String>> {
    let at = args.iter().position(|a| a == name)?;
    Some(args.get(at + 1)?.split(',').map(str::to_owned).collect())
}

fn throughput(args: &[String]) {
    let systems =
        list_arg(args, "--systems").unwrap_or_else(|| SYSTEMS.map(str::to_owned).to_vec());
    let concurrency: Vec<usize> = list_arg(args, "--concurrency")
        .map(|c| c.iter().map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1, 64, 512]);
    let seconds: f64 = list_arg(args, "--seconds").map_or(3.0, |s| s[0].parse().unwrap());
    pin_to_core(1);
    let rt = one_worker_runtime();
    println!("| system | concurrency | QPS | p50 | p99 | server CPU / request |");
    println!("|---|---|---|---|---|---|");
    for system in &systems {
        let server = ServerProcess::start(&["--serve", system]);
        rt.block_on(async {
            let client = Client::connect(system, &server.addr).await;
            for &c in &concurrency {
                let row = measure(&server, &client, c, seconds).await;
                println!(
                    "| {system} | {c} | {:.0} | {} µs | {} µs | {:.1} µs |",
                    row.qps,
                    row.p50.as_micros(),
                    row.p99.as_micros(),
                    row.cpu_per_request.as_secs_f64() * 1e6
                );
            }
        });
    }
}

fn raise_fd_limit() {
    // SAFETY: plain libc calls on a local struct.
    #[allow(unsafe_code)]
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Opens `n` idle connections to an svrkit server and reports its memory per connection,
/// while serving an active client at concurrency 64.
fn idle(n: usize) {
    raise_fd_limit();
    pin_to_core(1);
    let server = ServerProcess::start(&["--serve", "svrkit"]);
    let rt = one_worker_runtime();
    rt.block_on(async {
        let client = Client::connect("svrkit", &server.addr).await;
        let _ = measure(&server, &client, 8, 0.5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = server.rss_bytes();
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(
                TcpStream::connect(&server.addr)
                    .await
                    .expect("connect (file limit?)"),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = server.rss_bytes();
        let row = measure(&server, &client, 64, 2.0).await;
        println!(
            "{n} idle connections: server RSS {:.1} MiB -> {:.1} MiB, {:.1} KiB per connection; \
             meanwhile {:.0} QPS at concurrency 64 (p99 {} µs)",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after.saturating_sub(before)) as f64 / n as f64 / 1024.0,
            row.qps,
            row.p99.as_micros()
        );
        drop(idle);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        return serve(&args[at + 1]);
    }
    // `cargo bench` passes `--bench`; ignore it.
    if let Some(at) = args.iter().position(|a| a == "idle") {
        let n = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(5000);
        return idle(n);
    }
    throughput(&args);
}
