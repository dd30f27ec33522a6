//! Calls the `hello.Greeter` demo service N times and prints what came back.
//!
//! ```text
//! cargo run -p svrkit-examples --bin hello-client -- --addr 127.0.0.1:7000 --calls 100
//! ```
//!
//! `--fail-every K` makes every K-th call ask the server to fail with `--fail-code`
//! (INTERNAL by default), so that a dashboard shows errors; `--relay` goes through `Relay`
//! (two hops, one trace id).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use svrkit_examples::hello::{GreeterClient, HelloReq, Visit};
use svrkit_runtime::{Channel, ChannelOptions, Code};

#[derive(Parser, Debug)]
#[command(about = "Calls the hello.Greeter demo service")]
struct Args {
    /// The server.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// Calls to make.
    #[arg(long, default_value_t = 100)]
    calls: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Every K-th call asks the server to fail (0: none).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// The status code those calls fail with.
    #[arg(long, default_value_t = 8)]
    fail_code: u32,
    /// Each call asks the server to wait this long.
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// Give up on each call after this long, hanging up as a user who stops waiting does
    /// (0: wait for the answer).
    #[arg(long, default_value_t = 0)]
    give_up_ms: u64,
    /// Call `Relay` instead of `SayHello`.
    #[arg(long)]
    relay: bool,
    /// Also send this many oneway `Visited` calls.
    #[arg(long, default_value_t = 0)]
    visits: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svrkit_examples::exit_code("hello-client", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let options = ChannelOptions {
        caller: "hello-client".into(),
        ..ChannelOptions::default()
    };
    let client = GreeterClient::new(Channel::lazy([args.addr.clone()], options));
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        let (calls, fail_every, fail_code, delay_ms, relay, give_up_ms) = (
            args.calls,
            args.fail_every,
            args.fail_code,
            args.delay_ms,
            args.relay,
            args.give_up_ms,
        );
        workers.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let fail = fail_every > 0 && (i + 1) % fail_every == 0;
                let request = HelloReq {
                    name: format!("caller {i}").into(),
                    fail_code: if fail { fail_code } else { 0 },
                    delay_ms,
                    ..HelloReq::default()
                };
                let t = Instant::now();
                let call = async {
                    if relay {
                        client.relay(&request).await
                    } else {
                        client.say_hello(&request).await
                    }
                };
                let result = if give_up_ms > 0 {
                    // Dropping the call hangs up: the server is told, and counts it cancelled.
                    tokio::time::timeout(Duration::from_millis(give_up_ms), call)
                        .await
                        .unwrap_or_else(|_| {
                            Err(svrkit_runtime::Status::cancelled("gave up waiting"))
                        })
                } else {
                    call.await
                };
                latencies.push(t.elapsed());
                let code = match result {
                    Ok(_) => Code::OK,
                    Err(status) => status.code(),
                };
                let name = code
                    .name()
                    .map_or_else(|| format!("code {}", code.0), str::to_owned);
                *outcomes.entry(name).or_default() += 1;
            }
            (outcomes, latencies)
        }));
    }
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        let (o, l) = w.await?;
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
        latencies.extend(l);
    }
    for i in 0..args.visits {
        let visit = Visit {
            name: format!("visitor {i}").into(),
            ..Visit::default()
        };
        client.visited(&visit).await?;
    }
    if args.visits > 0 {
        // Oneway calls return once queued: give them a moment to leave before the process
        // (and its connections) ends.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let outcomes: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "{} calls in {:.2}s: {}; p50 {:.2} ms, p99 {:.2} ms",
        args.calls,
        started.elapsed().as_secs_f64(),
        outcomes.join(", "),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
