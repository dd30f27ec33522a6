//! Parks long polls on a running gateway and prints what they cost the server: its RSS
//! before and after, per parked poll.
//!
//! ```text
//! cargo run --release -p svrkit-im --example park_polls -- <gateway addr> <server pid> <users> [polls per user]
//! ```
//!
//! Registers `users` accounts (names `poll-<n>-<pid>`), then has each keep `polls per user`
//! syncs waiting (60 s), 1,000 to a connection (under the server's cap of calls in flight
//! per connection), and reads the server's `VmRSS` from
//! `/proc/<pid>/status` once they are parked. More polls per user than the server's cap
//! (8) end the oldest at once: then only 8 per user stay parked. Run it against a freshly
//! started server: one that has served a lot holds freed memory that parked polls reuse.

use std::time::Duration;

use svrkit_im::im::gateway::{Credentials, GatewaySvrClient, SyncReq};
use svrkit_runtime::{CallOptions, Channel, ChannelOptions, FastStr};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, pid, users, rest @ ..] = args.as_slice() else {
        eprintln!("usage: park_polls <gateway addr> <server pid> <users> [polls per user]");
        std::process::exit(2);
    };
    let users: usize = users.parse().expect("users: a number");
    let per_user: usize = rest
        .first()
        .map_or(8, |n| n.parse().expect("polls: a number"));
    let connect =
        || GatewaySvrClient::new(Channel::lazy([addr.clone()], ChannelOptions::default()));
    let client = connect();
    let rss = || rss_kib(pid);
    // Registrations 64 at a time, under the per-connection cap.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));

    let mut tokens = Vec::with_capacity(users);
    let me = std::process::id();
    let registering = (0..users).map(|n| {
        let (client, gate) = (client.clone(), gate.clone());
        tokio::spawn(async move {
            let _turn = gate.acquire().await;
            let credentials = Credentials {
                name: FastStr::new(format!("poll-{n}-{me}")),
                password: FastStr::new(format!("poll-password-{n}")),
                ..Credentials::default()
            };
            client.register(&credentials).await.expect("register");
            client.login(&credentials).await.expect("login").token
        })
    });
    for t in registering.collect::<Vec<_>>() {
        tokens.push(t.await.unwrap());
    }
    // Let the allocator give the registrations' garbage back before the baseline (it
    // returns freed memory lazily: a baseline taken at once reads high).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before = rss();

    let options = CallOptions {
        timeout: Some(Duration::from_secs(70)),
        ..CallOptions::default()
    };
    let mut polls = Vec::new();
    let mut client = connect();
    for token in &tokens {
        for _ in 0..per_user {
            if polls.len() % 1000 == 999 {
                client = connect();
            }
            let (client, options) = (client.clone(), options.clone());
            let request = SyncReq {
                token: token.clone(),
                sync_key: 0,
                wait_ms: 60_000,
                ..SyncReq::default()
            };
            polls.push(tokio::spawn(async move {
                client.sync_with(&request, &options).await
            }));
        }
    }
    // Parked once the ones past the per-user cap have come back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let done = polls.iter().filter(|p| p.is_finished()).count();
    let parked = polls.len() - done;
    let after = rss();
    println!(
        "{} polls sent by {users} users, {done} answered at once, {parked} still waiting",
        polls.len(),
    );
    println!(
        "server RSS: {before} KiB before, {after} KiB with them parked: {:.0} bytes per parked poll",
        (after as f64 - before as f64) * 1024.0 / parked.max(1) as f64
    );
    for p in polls {
        p.abort();
    }
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's pid");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
