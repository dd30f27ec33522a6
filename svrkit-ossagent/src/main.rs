//! The ossagent: every svrkit process started with `--agent` (or `[monitor] agent`) reports
//! its per-minute figures here, and the dashboard at the admin address shows the whole
//! system.
//!
//! ```text
//! cargo run -p svrkit-ossagent -- --listen 127.0.0.1:7400 --admin 127.0.0.1:7401
//! ```
//!
//! It takes reports only from peers it trusts (loopback and the private ranges unless a
//! `--config` file's `[trust]` says otherwise; with `[server] tls_cert`, `tls_key` and
//! `tls_client_ca`, `[trust] peers = []` and `identities = [...]`, only from processes with
//! a client certificate for one of those names), and drops reports whose figures cannot be
//! true; see the `svrkit_ossagent` library.

use std::sync::Arc;

use clap::Parser;
use svrkit_ossagent::Agent;
use svrkit_runtime::monitor::ossagent::OssAgentServer;
use svrkit_runtime::{Config, monitor};

#[derive(Parser, Debug)]
#[command(about = "Aggregates the monitoring reports of svrkit processes")]
struct Args {
    /// Where processes report to.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Where the system dashboard (and the agent's own metrics) are served.
    #[arg(long, default_value = "127.0.0.1:7401")]
    admin: String,
    /// A configuration file for the rest: `[trust]`, `[limits]`, TLS
    /// (`[server] tls_cert`, `tls_key`, `tls_client_ca`), `[server] admin_token_file`.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ossagent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = svrkit_runtime::server::listen(&args.listen).await?;
    let addr = listener.local_addr()?;
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let agent = Arc::new(Agent::default());
    let mut server = config
        .server_builder()
        .add_service(OssAgentServer::from_arc(agent.clone()));
    if let Some(tls) = config.server_tls()? {
        server = server.tls(tls);
    }
    let server = server.build();
    // The agent watches itself like any other process (without reporting to itself).
    monitor::start(&Config::default().monitor, &addr.to_string())?;
    let token = match &config.server.admin_token_file {
        Some(file) => {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("server.admin_token_file: {file}: {e}"))?;
            let token = token.trim().to_owned();
            if token.is_empty() {
                return Err(format!("server.admin_token_file: {file} is empty").into());
            }
            Some(token)
        }
        None => None,
    };
    let options = monitor::admin::AdminOptions {
        title: format!("ossagent on {addr}"),
        pages: Some(agent),
        token,
    };
    let admin = monitor::admin::bind_with(&args.admin, options).await?;
    println!("ossagent listening on {addr}, admin http://{admin}/");
    server.serve(listener).await?;
    Ok(())
}
