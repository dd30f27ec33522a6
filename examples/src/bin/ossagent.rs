//! The ossagent: every svrkit process started with `--agent` (or `[monitor] agent`) reports
//! its per-minute figures here, and the dashboard at the admin address shows the whole
//! system.
//!
//! ```text
//! cargo run -p svrkit-examples --bin ossagent -- --listen 127.0.0.1:7400 --admin 127.0.0.1:7401
//! ```

use std::sync::Arc;

use clap::Parser;
use svrkit_runtime::monitor::agent::Agent;
use svrkit_runtime::monitor::ossagent::OssAgentServer;
use svrkit_runtime::{Config, Server, monitor};

#[derive(Parser, Debug)]
#[command(about = "Aggregates the monitoring reports of svrkit processes")]
struct Args {
    /// Where processes report to.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Where the system dashboard (and the agent's own metrics) are served.
    #[arg(long, default_value = "127.0.0.1:7401")]
    admin: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svrkit_examples::exit_code("ossagent", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    svrkit_examples::init_logging();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let agent = Arc::new(Agent::default());
    let server = Server::builder()
        .add_service(OssAgentServer::from_arc(agent.clone()))
        .build();
    // The agent watches itself like any other process (without reporting to itself).
    monitor::start(&Config::default().monitor, &addr.to_string())?;
    let admin =
        monitor::admin::bind(&args.admin, format!("ossagent on {addr}"), Some(agent)).await?;
    println!("ossagent listening on {addr}, admin http://{admin}/");
    server.serve(listener).await?;
    Ok(())
}
