//! The admin HTTP endpoint (hyper, HTTP/1.1): `/metrics`, `/stats.json`, `/alerts.json`,
//! `/livez`, `/readyz` (and `/healthz`, the same) and the dashboard at `/`.
//!
//! It runs beside the services on its own listener (`server.admin`), so a scrape or a page
//! view never queues behind RPC traffic, and it keeps to its own small bounds, so that what
//! arrives on it cannot hurt the process:
//!
//! - **Connections**: at most [`MAX_CONNECTIONS`] at once and [`MAX_CONNECTIONS_PER_PEER`]
//!   from one address (one client's slowloris cannot take them all), each closed after
//!   [`CONNECTION_TIMEOUT`], its headers due within [`HEADER_TIMEOUT`].
//! - **Work**: pages are rendered on a blocking thread, one at a time ([`MAX_RENDERS`]); a
//!   request that waits longer than [`RENDER_WAIT`] for its turn is answered 503. So a
//!   flood of `/stats.json` holds one thread and one page's memory, not hundreds.
//! - **Probes**: `/livez`, `/readyz` and `/healthz` are answered at once, on the
//!   connection's task, never behind a page.
//! - **Access**: with a token ([`AdminOptions::token`], `server.admin_token_file`), every
//!   page but the probes and `/metrics` needs `Authorization: Bearer <token>`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::board::{self, this_minute};
use super::dashboard::{AlertRow, Page, Window};

/// Admin connections served at once; more are closed as soon as they are accepted, so that
/// a probe is refused at once rather than left waiting behind them.
pub const MAX_CONNECTIONS: usize = 256;
/// Admin connections from one address at once.
pub const MAX_CONNECTIONS_PER_PEER: usize = 16;
/// Pages rendered at once.
pub const MAX_RENDERS: usize = 1;
/// How long a request waits for its turn to be rendered before it is answered 503.
pub const RENDER_WAIT: Duration = Duration::from_secs(2);
/// The longest an admin connection stays open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a request's headers (and for an idle connection's next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// A response: status, content type, body.
pub type Reply = (StatusCode, &'static str, String);

/// Pages an admin endpoint serves besides (or instead of) the process's own: the ossagent's
/// system dashboard, for one.
pub trait Pages: Send + Sync + 'static {
    /// The reply for `path` with the query's `minutes` (the chart window), or `None` to
    /// fall through to the built-in pages.
    fn page(&self, path: &str, minutes: usize) -> Option<Reply>;
}

/// The windows pages offer, in minutes; the default is the first that covers the process's
/// age, so that a process minutes old is not squeezed into a sliver of a three-hour chart.
pub const WINDOWS: [usize; 4] = [30, 180, 720, 1440];

/// The window that fits a process `age` old: the shortest of [`WINDOWS`] that covers it.
pub fn fitting_window(age: std::time::Duration) -> usize {
    let minutes = age.as_secs().div_ceil(60) as usize;
    WINDOWS
        .into_iter()
        .find(|&w| w >= minutes)
        .unwrap_or(super::rollup::HISTORY)
}

/// How an admin endpoint serves.
#[derive(Clone, Default)]
pub struct AdminOptions {
    /// Names the process on its dashboard.
    pub title: String,
    /// Pages served in front of the built-in ones (the ossagent's dashboard).
    pub pages: Option<Arc<dyn Pages>>,
    /// When set, every page but `/livez`, `/readyz`, `/healthz` and `/metrics` needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Binds `addr` and serves the admin endpoint on it from a task of its own; the address
/// bound (useful with port 0).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(
    addr: &str,
    title: String,
    pages: Option<Arc<dyn Pages>>,
) -> std::io::Result<std::net::SocketAddr> {
    bind_with(
        addr,
        AdminOptions {
            title,
            pages,
            token: None,
        },
    )
    .await
}

/// [`bind`], with all the options.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind_with(addr: &str, options: AdminOptions) -> std::io::Result<std::net::SocketAddr> {
    let listener = crate::server::listen(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve_with(listener, options));
    Ok(bound)
}

/// Serves the admin endpoint on `listener` until the task is dropped; `title` names the
/// process on its dashboard, `pages` adds pages in front of the built-in ones.
pub async fn serve(listener: TcpListener, title: String, pages: Option<Arc<dyn Pages>>) {
    serve_with(
        listener,
        AdminOptions {
            title,
            pages,
            token: None,
        },
    )
    .await;
}

/// Connections open per address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// A connection's place in [`Peers`], given back when dropped.
struct PeerSlot(Arc<Peers>, IpAddr);

impl Peers {
    fn enter(self: &Arc<Peers>, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot(self.clone(), ip))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// What every connection's requests share.
struct Shared {
    options: AdminOptions,
    title: Arc<str>,
    renders: Semaphore,
}

/// [`serve`], with all the options.
pub async fn serve_with(listener: TcpListener, options: AdminOptions) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Peers::default());
    let shared = Arc::new(Shared {
        title: options.title.clone().into(),
        options,
        renders: Semaphore::new(MAX_RENDERS),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let Some(slot) = peers.enter(peer.ip()) else {
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(answer(&shared, &req).await)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop((permit, slot));
        });
    }
}

/// The reply to one request.
async fn answer(shared: &Shared, req: &Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let path = req.uri().path().to_owned();
    match path.as_str() {
        // Probes: at once, never behind a page, never behind the token.
        "/livez" | "/healthz" | "/readyz" => return builtin(&path, 0, ""),
        "/metrics" => {}
        _ => {
            if let Some(token) = &shared.options.token
                && !bearer_is(req, token)
            {
                return (
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "this page needs `Authorization: Bearer <the admin token>`\n".into(),
                );
            }
        }
    }
    let Ok(Ok(_turn)) = tokio::time::timeout(RENDER_WAIT, shared.renders.acquire()).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "busy rendering other pages: try again\n".into(),
        );
    };
    let minutes = window(req.uri().query())
        .unwrap_or_else(|| fitting_window(crate::metrics::process().started.0.elapsed()));
    let (pages, title) = (shared.options.pages.clone(), shared.title.clone());
    // Pages are rendered off the runtime's threads: a big page must not hold up the
    // process's other tasks (its RPC service, report intake).
    tokio::task::spawn_blocking(move || {
        pages
            .and_then(|p| p.page(&path, minutes))
            .unwrap_or_else(|| builtin(&path, minutes, &title))
    })
    .await
    .unwrap_or_else(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "the page failed\n".into(),
        )
    })
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn bearer_is(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let want = token.as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The built-in pages of a process.
pub fn builtin(path: &str, minutes: usize, title: &str) -> Reply {
    match path {
        "/metrics" => (
            StatusCode::OK,
            super::exposition::CONTENT_TYPE,
            super::exposition::encode(),
        ),
        "/stats.json" => json(&board::board().stats(minutes)),
        "/alerts.json" => {
            let board = board::board();
            json(&serde_json::json!({
                "firing": board.firing(),
                "events": board.events,
                "unready": super::health::failing(),
            }))
        }
        "/livez" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/healthz" | "/readyz" => readiness(),
        "/" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            process_page(title, minutes),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            format!(
                "no page {path}: try /, /metrics, /stats.json, /alerts.json, /livez, /readyz \
                 or /healthz\n"
            ),
        ),
    }
}

/// `/readyz`: 200 `ok`, or 503 with a line per failing check ([`super::health`]), and one
/// when a server of the process drains or shuts down.
pub fn readiness() -> Reply {
    let failing = super::health::failing();
    let stopping = super::health::is_stopping();
    if failing.is_empty() && !stopping {
        return (StatusCode::OK, "text/plain", "ok\n".into());
    }
    let mut body = String::from("not ready\n");
    if stopping {
        body.push_str("stopping: a server of this process is draining or shutting down\n");
    }
    for f in failing {
        body.push_str(&format!(
            "{}: {} (for {:.0} s, {} failures)\n",
            f.name, f.reason, f.for_seconds, f.failures
        ));
    }
    (StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
}

/// `value` as a JSON reply.
pub fn json(value: &impl serde::Serialize) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(body) => (StatusCode::OK, "application/json", body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// The `minutes` of the query, if it says: the chart window, 5 minutes to 24 hours.
fn window(query: Option<&str>) -> Option<usize> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("minutes="))
        .and_then(|v| {
            // A number too big for the type is still a big number.
            v.parse().ok().or_else(|| {
                (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).then_some(usize::MAX)
            })
        })
        .map(|m: usize| m.clamp(5, super::rollup::HISTORY))
}

/// The window sizes the page links to.
pub fn windows(current: usize) -> Vec<(usize, bool)> {
    WINDOWS.into_iter().map(|m| (m, m == current)).collect()
}

fn process_page(title: &str, minutes: usize) -> String {
    let board = board::board();
    let now = this_minute();
    let mut rows = Vec::new();
    let mut panels = Vec::new();
    for (i, t) in board.methods.iter().enumerate() {
        let current = t.rollup.current(now);
        let name = t.rollup.metrics.descriptor.full_name.to_owned();
        let sides = [
            (
                t.service.is_served(),
                "server",
                &t.rollup.server,
                current.server,
            ),
            (
                t.service.is_called(),
                "client",
                &t.rollup.client,
                current.client,
            ),
        ];
        for (used, side, ring, current) in sides {
            if !used {
                continue;
            }
            let w = Window::new(now, minutes, ring.iter().chain([&current]));
            let id = format!("m{i}-{side}");
            let row = w.row(id.clone(), name.clone(), side);
            // Idle sides are listed, not charted: a page of empty charts hides the busy ones.
            if row.calls > 0 {
                panels.push(w.panel(id, name.clone(), side));
            }
            rows.push(row);
        }
    }
    let p = crate::metrics::process();
    let page = Page {
        title: title.to_owned(),
        subtitle: format!(
            "pid {} · up {} · svrkit {} · {} connections open",
            std::process::id(),
            super::dashboard::age(p.started.0.elapsed().as_secs()),
            env!("CARGO_PKG_VERSION"),
            p.accepted().saturating_sub(p.closed()),
        ),
        refresh_secs: 10,
        window: minutes,
        alerts: super::health::failing()
            .iter()
            .map(AlertRow::unready)
            .chain(board.firing().into_iter().map(|a| AlertRow::of(a, now)))
            .collect(),
        rows,
        panels,
        instances: Vec::new(),
        windows: windows(minutes),
        business: super::dashboard::BusinessRow::all(&board),
        map: None,
    };
    page.render()
}

fn respond((status, content_type, body): Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_read_and_bounded() {
        assert_eq!(window(None), None);
        assert_eq!(window(Some("minutes=60")), Some(60));
        assert_eq!(window(Some("x=1&minutes=1")), Some(5));
        assert_eq!(window(Some("minutes=99999")), Some(1440));
        assert_eq!(window(Some("minutes=abc")), None);
        assert_eq!(window(Some("minutes=99999999999999999999999")), Some(1440));
        assert_eq!(window(Some("minutes=-1")), None);
    }

    #[test]
    fn the_default_window_fits_the_processs_age() {
        let min = |m: u64| fitting_window(Duration::from_secs(m * 60));
        assert_eq!(fitting_window(Duration::from_secs(5)), 30);
        assert_eq!(min(30), 30);
        assert_eq!(fitting_window(Duration::from_secs(30 * 60 + 1)), 180);
        assert_eq!(min(600), 720);
        assert_eq!(min(5000), 1440);
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    async fn connect(addr: std::net::SocketAddr, from: &str) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// The status and body of `GET path` from address `from` (status 0: closed unanswered).
    async fn get(
        addr: std::net::SocketAddr,
        from: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut stream = connect(addr, from).await;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return (0, String::new());
        }
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply).await;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    async fn start(options: AdminOptions) -> std::net::SocketAddr {
        bind_with("127.0.0.1:0", options).await.unwrap()
    }

    #[tokio::test]
    async fn a_slowloris_from_one_address_leaves_probes_from_others_answered() {
        let addr = start(AdminOptions::default()).await;
        // More stalled connections than the endpoint takes in all, from one address, each
        // stopped in the middle of its headers.
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 20 {
            let mut s = connect(addr, "127.0.0.1").await;
            let _ = s.write_all(b"GET /stats.json HTTP/1.1\r\nHo").await;
            stalled.push(s);
        }
        let (status, body) = get(addr, "127.0.0.2", "/livez", None).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        // The attacker's own address is at its cap.
        assert_eq!(get(addr, "127.0.0.1", "/livez", None).await.0, 0);
        drop(stalled);
    }

    /// Pages that wait to be let go, counting how many are rendered at once.
    struct Slow {
        rendering: AtomicUsize,
        most: AtomicUsize,
        go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Pages for Slow {
        fn page(&self, path: &str, _minutes: usize) -> Option<Reply> {
            if path != "/slow" {
                return None;
            }
            let now = self.rendering.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let _ = self.go.lock().unwrap().recv();
            self.rendering.fetch_sub(1, Ordering::SeqCst);
            Some((StatusCode::OK, "text/plain", "slow\n".into()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_pages_renders_one_at_a_time_and_probes_do_not_wait() {
        let (go, wait) = std::sync::mpsc::channel();
        let slow = Arc::new(Slow {
            rendering: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            go: std::sync::Mutex::new(wait),
        });
        let addr = start(AdminOptions {
            pages: Some(slow.clone()),
            ..AdminOptions::default()
        })
        .await;
        let flood: Vec<_> = (0..8)
            .map(|_| tokio::spawn(get(addr, "127.0.0.3", "/slow", None)))
            .collect();
        // One page is being rendered, the others wait their turn ...
        while slow.rendering.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // ... and a probe does not wait behind them.
        assert_eq!(get(addr, "127.0.0.4", "/livez", None).await.0, 200);
        for _ in 0..8 {
            go.send(()).unwrap();
        }
        for request in flood {
            let (status, _) = request.await.unwrap();
            assert!(status == 200 || status == 503, "{status}");
        }
        assert_eq!(slow.most.load(Ordering::SeqCst), 1, "one page at a time");
    }

    #[tokio::test]
    async fn a_token_guards_every_page_but_the_probes_and_metrics() {
        let addr = start(AdminOptions {
            token: Some("s3cret".into()),
            ..AdminOptions::default()
        })
        .await;
        for path in ["/", "/stats.json", "/alerts.json"] {
            assert_eq!(get(addr, "127.0.0.5", path, None).await.0, 401, "{path}");
            assert_eq!(get(addr, "127.0.0.5", path, Some("wrong!")).await.0, 401);
            assert_eq!(get(addr, "127.0.0.5", path, Some("s3cret")).await.0, 200);
        }
        for path in ["/livez", "/readyz", "/healthz", "/metrics"] {
            assert_ne!(get(addr, "127.0.0.5", path, None).await.0, 401, "{path}");
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_checks_and_liveness_does_not() {
        let addr = start(AdminOptions::default()).await;
        let check = super::super::health::check("test.admin.disk");
        check.fail("no space left on device");
        let (status, body) = get(addr, "127.0.0.6", "/readyz", None).await;
        assert_eq!(status, 503);
        assert!(
            body.contains("test.admin.disk: no space left on device"),
            "{body}"
        );
        assert_eq!(get(addr, "127.0.0.6", "/healthz", None).await.0, 503);
        assert_eq!(get(addr, "127.0.0.6", "/livez", None).await.0, 200);
        let (_, alerts) = get(addr, "127.0.0.6", "/alerts.json", None).await;
        assert!(alerts.contains("test.admin.disk"), "{alerts}");
        check.pass();
        let (_, body) = get(addr, "127.0.0.6", "/readyz", None).await;
        assert!(!body.contains("test.admin.disk"), "{body}");
    }
}
