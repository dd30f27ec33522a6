//! The spam check is a weak dependency: stopped or slow, messages still go through and the
//! framework counts the skip. (Alone in its test binary: it reads a process-wide counter.)

mod support;

use std::time::{Duration, Instant};

use support::{TempDir, client, config, send, user};
use svrkit_im::backend::{Backend, Role};
use svrkit_im::im::spam::{CheckReq, CheckResp, SpamSvr, SpamSvrClient, SpamSvrServer};
use svrkit_runtime::{Code, Context, Server, Status};

fn skips() -> u64 {
    let check = &SpamSvrClient::DESCRIPTOR.methods[0];
    svrkit_runtime::metrics::find_method(check).map_or(0, |m| m.client_totals().weak_skips)
}

/// Everything but spam here; spam where `spam` says.
async fn backend_with_spam_at(data: &TempDir, spam: &str) -> Backend {
    let extra = format!(
        "[services.\"im.spam.SpamSvr\"]\nendpoints = [\"{spam}\"]\n\n[app.gateway]\nspam_timeout_ms = 100\n"
    );
    let roles: Vec<Role> = Role::ALL.into_iter().filter(|r| *r != Role::Spam).collect();
    Backend::start(&roles, &config(&data.0, "", &extra))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_spam_service_stopped_sends_succeed_and_the_skip_is_counted() {
    let spam_data = TempDir::new("spam-svc");
    let spam = Backend::start(&[Role::Spam], &config(&spam_data.0, "", ""))
        .await
        .unwrap();
    let spam_addr = spam.internal_addr().unwrap();
    let data = TempDir::new("spam-down");
    let backend = backend_with_spam_at(&data, &spam_addr.to_string()).await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    user(&c, "bob").await;

    // Up: checked, and spam refused.
    assert!(
        send(&c, &alice, "bob", "hello", "m1")
            .await
            .unwrap()
            .spam_checked
    );
    let refused = send(&c, &alice, "bob", "free money", "m2")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PERMISSION_DENIED);
    let before = skips();

    spam.shutdown().await;
    drop(spam);
    for i in 0..5 {
        let sent = send(&c, &alice, "bob", "still here", &format!("d{i}"))
            .await
            .unwrap();
        assert!(!sent.spam_checked);
    }
    assert!(skips() >= before + 5, "{} skips after {before}", skips());
    let inbox = support::sync_all(&c, &alice, 0).await;
    assert!(inbox.is_empty());
    backend.shutdown().await;
}

/// A spam check that takes a second.
struct Slow;

impl SpamSvr for Slow {
    async fn check(&self, _ctx: Context, _request: CheckReq) -> Result<CheckResp, Status> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(CheckResp::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_spam_check_is_skipped_after_its_timeout() {
    let slow = Server::builder()
        .add_service(SpamSvrServer::new(Slow))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let slow = slow.clone();
        async move { slow.serve(listener).await }
    });
    let data = TempDir::new("spam-slow");
    let backend = backend_with_spam_at(&data, &addr.to_string()).await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    user(&c, "bob").await;
    let started = Instant::now();
    let sent = send(&c, &alice, "bob", "no time to check", "s1")
        .await
        .unwrap();
    assert!(!sent.spam_checked);
    // Skipped at its 100 ms timeout, not after the check's second.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    backend.shutdown().await;
}
