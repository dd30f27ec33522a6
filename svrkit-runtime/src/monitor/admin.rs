//! The admin HTTP endpoint (hyper, HTTP/1.1): `/metrics`, `/stats.json`, `/alerts.json`,
//! `/healthz` and the dashboard at `/`.
//!
//! It runs beside the services on its own listener (`server.admin`), so a scrape or a page
//! view never queues behind RPC traffic, and its connections are bounded: at most
//! [`MAX_CONNECTIONS`] at once, each closed after [`CONNECTION_TIMEOUT`].

use std::convert::Infallible;
use std::sync::Arc;
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

/// The window the charts span unless the query says otherwise: three hours.
pub const DEFAULT_WINDOW: usize = 180;

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
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, title, pages));
    Ok(bound)
}

/// Serves the admin endpoint on `listener` until the task is dropped; `title` names the
/// process on its dashboard, `pages` adds pages in front of the built-in ones.
pub async fn serve(listener: TcpListener, title: String, pages: Option<Arc<dyn Pages>>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let title: Arc<str> = title.into();
    loop {
        let (stream, _) = match listener.accept().await {
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
        let (title, pages) = (title.clone(), pages.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (title, pages) = (title.clone(), pages.clone());
                let get = req.method() == Method::GET || req.method() == Method::HEAD;
                let path = req.uri().path().to_owned();
                let minutes = window(req.uri().query());
                async move {
                    if !get {
                        return Ok::<_, Infallible>(respond((
                            StatusCode::METHOD_NOT_ALLOWED,
                            "text/plain",
                            "only GET\n".into(),
                        )));
                    }
                    // Pages are rendered off the runtime's threads: a big page must not hold
                    // up the process's other tasks (its RPC service, report intake).
                    let reply = tokio::task::spawn_blocking(move || {
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
                    });
                    Ok(respond(reply))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
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
            }))
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            process_page(title, minutes),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no page {path}: try /, /metrics, /stats.json, /alerts.json or /healthz\n"),
        ),
    }
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

/// The `minutes` of the query: the chart window, 5 minutes to 24 hours.
fn window(query: Option<&str>) -> usize {
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
        .unwrap_or(DEFAULT_WINDOW)
        .clamp(5, super::rollup::HISTORY)
}

/// The window sizes the page links to.
pub fn windows(current: usize) -> Vec<(usize, bool)> {
    [30, 180, 720, 1440]
        .into_iter()
        .map(|m| (m, m == current))
        .collect()
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
    let p = super::process();
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
        alerts: board
            .firing()
            .into_iter()
            .map(|a| AlertRow::of(a, now))
            .collect(),
        rows,
        panels,
        instances: Vec::new(),
        windows: windows(minutes),
    };
    askama::Template::render(&page).unwrap_or_else(|e| format!("cannot render: {e}"))
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
        assert_eq!(window(None), DEFAULT_WINDOW);
        assert_eq!(window(Some("minutes=60")), 60);
        assert_eq!(window(Some("x=1&minutes=1")), 5);
        assert_eq!(window(Some("minutes=99999")), 1440);
        assert_eq!(window(Some("minutes=abc")), DEFAULT_WINDOW);
        assert_eq!(window(Some("minutes=99999999999999999999999")), 1440);
        assert_eq!(window(Some("minutes=-1")), DEFAULT_WINDOW);
    }
}
