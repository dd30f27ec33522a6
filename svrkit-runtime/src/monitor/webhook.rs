//! Alarm changes POSTed as JSON to a configured URL (`[monitor.alarms] webhook`).
//!
//! Changes queue in a small bounded channel and go out one at a time from a task of their
//! own, each with a timeout: a slow or dead receiver loses changes (counted), never holds up
//! the board or anything else.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::board::Event;

/// Changes waiting to be sent; more are dropped.
const QUEUE: usize = 64;
/// Time allowed for one POST, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to POST: `http://host:port/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `host:port`.
    pub authority: String,
    /// `/path?query`.
    pub path: String,
}

impl Url {
    /// Parses a plain-HTTP URL (the receivers are internal: an alert manager, a chat bot).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(url: &str) -> Result<Url, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        if authority.starts_with(':') {
            return Err(format!("`{url}` has no host"));
        }
        Ok(Url {
            authority,
            path: path.to_owned(),
        })
    }
}

/// Starts the sender; the returned function queues changes for it.
pub(crate) fn start(url: Url) -> impl Fn(Vec<Event>) + Send + Sync + 'static {
    let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let sent = tokio::time::timeout(TIMEOUT, post(&url, body)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!(url = %url.authority, "the alarm webhook did not take an alarm");
            }
        }
    });
    move |events: Vec<Event>| {
        super::log_changes(&events);
        for e in events {
            let _ = tx.try_send(e);
        }
    }
}

async fn post(url: &Url, body: Vec<u8>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(&url.authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::post(&url.path)
        .header(hyper::header::HOST, &url.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(format!("the webhook answered {}", response.status()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read() {
        assert_eq!(
            Url::parse("http://alerts.local:9093/hook?x=1").unwrap(),
            Url {
                authority: "alerts.local:9093".into(),
                path: "/hook?x=1".into()
            }
        );
        assert_eq!(Url::parse("http://a").unwrap().authority, "a:80");
        assert!(Url::parse("https://a/").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[tokio::test]
    async fn changes_are_posted_as_json() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
        let send = start(url);
        let alarm = super::super::alarm::Alarm {
            service: "s.S",
            method: "M",
            figure: super::super::alarm::Figure::ErrorRate,
            value: 0.3,
            value_minute: 7,
            baseline: 0.01,
            since_minute: 7,
            cleared_minute: None,
        };
        send(vec![Event {
            state: "firing",
            alarm,
            reason: None,
        }]);
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the JSON body is complete.
        while !request.ends_with(b"}}") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&request));
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST /hook HTTP/1.1\r\n"), "{text}");
        assert!(
            text.to_lowercase()
                .contains("content-type: application/json"),
            "{text}"
        );
        let body: serde_json::Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["state"], "firing");
        assert_eq!(body["alarm"]["figure"], "error_rate");
        assert_eq!(body["alarm"]["method"], "M");
    }
}
