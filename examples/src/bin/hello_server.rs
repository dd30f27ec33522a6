//! Serves the `hello.Greeter` demo service with monitoring on: metrics, the dashboard and
//! alarms on the admin address, reports to an ossagent with `--agent`.
//!
//! ```text
//! cargo run -p svrkit-examples --bin hello-server -- --listen 127.0.0.1:7000 --admin 127.0.0.1:7001
//! ```
//!
//! Prints one line once serving: `hello-server listening on <addr>, admin http://<addr>/`.
//! The port speaks svrkit frames and gRPC (`docs/grpc.md`). On SIGTERM or Ctrl-C it prints
//! `hello-server draining`, keeps serving for `--drain-ms` while its gRPC health check says
//! `NOT_SERVING`, then stops.

use clap::Parser;
use svrkit_examples::hello::GreeterServer;
use svrkit_examples::hello_service::Hello;
use svrkit_runtime::{Channel, ChannelOptions, Config};

#[derive(Parser, Debug)]
#[command(about = "Serves the hello.Greeter demo service, with monitoring")]
struct Args {
    /// Where to serve the service (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    /// Where to serve /metrics, /stats.json, /alerts.json, /healthz and the dashboard.
    #[arg(long)]
    admin: Option<String>,
    /// An ossagent to report per-minute figures to.
    #[arg(long)]
    agent: Option<String>,
    /// How often to report to the agent, in milliseconds.
    #[arg(long)]
    report_interval_ms: Option<u64>,
    /// Where `Relay` sends its onward call (default: this server itself).
    #[arg(long)]
    downstream: Option<String>,
    /// A configuration file (see `svrkit_runtime::config`); flags override it.
    #[arg(long)]
    config: Option<String>,
    /// How long to keep serving, not ready, after SIGTERM or Ctrl-C: for load balancers and
    /// health probes to stop sending.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svrkit_examples::exit_code("hello-server", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    svrkit_examples::init_logging();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.server.listen = args.listen.clone();
    if args.admin.is_some() {
        config.server.admin = args.admin.clone();
    }
    if args.agent.is_some() {
        config.monitor.agent = args.agent.clone();
    }
    if let Some(ms) = args.report_interval_ms {
        config.monitor.report_interval_ms = ms;
    }

    let listener = svrkit_runtime::server::listen(&config.server.listen).await?;
    let addr = listener.local_addr()?;
    // Reports name this process by the address it really serves on.
    config.server.listen = addr.to_string();
    let hello = std::sync::Arc::new(Hello::default());
    let server = config
        .server_builder()
        .add_service(GreeterServer::from_arc(hello.clone()))
        .build();
    let title = format!("hello.Greeter on {addr}");
    let admin = config.start_monitoring(&title).await?;
    let downstream = args.downstream.unwrap_or_else(|| addr.to_string());
    let options = ChannelOptions {
        caller: "hello-server".into(),
        ..ChannelOptions::default()
    };
    hello.set_downstream(Channel::lazy([downstream], options));

    match admin {
        Some(admin) => println!("hello-server listening on {addr}, admin http://{admin}/"),
        None => println!("hello-server listening on {addr}"),
    }
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    tokio::select! {
        served = serving => return Ok(served??),
        () = stop_signal() => {}
    }
    println!("hello-server draining");
    server
        .drain(std::time::Duration::from_millis(args.drain_ms))
        .await;
    // The last spans, if `[monitor] otlp_endpoint` exports them.
    tokio::task::spawn_blocking(svrkit_runtime::monitor::otlp::flush).await??;
    Ok(())
}

/// SIGTERM (what orchestrators send) or Ctrl-C.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}
