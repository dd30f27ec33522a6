//! Runs the messaging backend: every service in one process (`all`), or some of them, as a
//! configuration file says.
//!
//! ```text
//! im-server all --data ./im-data                       # everything, on 127.0.0.1:7600
//! im-server msg seq-alloc --config msg.toml            # two services of a spread deployment
//! ```
//!
//! Prints one line once serving, then serves until interrupted (SIGINT/SIGTERM), when it
//! stops accepting, answers what it is running and exits.

/// glibc's allocator spends a fifth of this process's CPU under load (frees on other
/// threads than the allocation's); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use svrkit_im::backend::{Backend, Role};
use svrkit_runtime::Config;

/// The version, and whether this build has etcd discovery (`deploy/sets.sh` asks before it
/// starts anything).
const VERSION: &str = if cfg!(feature = "etcd") {
    concat!(env!("CARGO_PKG_VERSION"), " (etcd)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (without etcd discovery)")
};

#[derive(Parser, Debug)]
#[command(version = VERSION, about = "Runs the svrkit messaging backend's services")]
struct Args {
    /// The services to run: `all`, or any of account, seq-alloc, seq-store, msg, spam,
    /// group, gateway.
    #[arg(required = true, value_name = "SERVICE")]
    services: Vec<String>,
    /// A configuration file (`svrkit_runtime::config`, with the backend's `[app]` section);
    /// the flags below override it.
    #[arg(long)]
    config: Option<String>,
    /// The data directory of the embedded store.
    #[arg(long)]
    data: Option<String>,
    /// The gateway's address (or the internal services', without a gateway).
    #[arg(long)]
    listen: Option<String>,
    /// Where internal services are served for other processes.
    #[arg(long)]
    internal_listen: Option<String>,
    /// The admin address: metrics, dashboard, alarms.
    #[arg(long)]
    admin: Option<String>,
}

fn roles(names: &[String]) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for name in names {
        if name == "all" {
            roles.extend(Role::ALL);
            continue;
        }
        let role = <Role as clap::ValueEnum>::from_str(name, false).map_err(|_| {
            format!(
                "unknown service `{name}`: all, account, seq-alloc, seq-store, msg, spam, group, gateway"
            )
        })?;
        roles.push(role);
    }
    Ok(roles)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("im-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        // Spans the filter lets through, under their requests' spans, once `[monitor]
        // otlp_endpoint` exports them.
        .with(svrkit_runtime::monitor::otlp::tracing_layer())
        .init();
    let args = Args::parse();
    let roles = roles(&args.services)?;
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => {
            let mut c = Config::default();
            c.server.listen = "127.0.0.1:7600".into();
            c.server.admin = Some("127.0.0.1:7601".into());
            c
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin {
        config.server.admin = Some(admin);
    }
    for (key, value) in [
        ("data", args.data),
        ("internal_listen", args.internal_listen),
    ] {
        if let Some(value) = value {
            config.app.insert(key.into(), value.into());
        }
    }
    let backend = Backend::start(&roles, &config).await?;
    let served = backend.addr().or(backend.internal_addr());
    if let Some(addr) = served {
        // Reports and the dashboard name the process by the address it really serves.
        config.server.listen = addr.to_string();
    }
    let names: Vec<&str> = roles.iter().map(|r| r.service()).collect();
    let admin = config
        .start_monitoring(&format!("im-server {}", args.services.join(" ")))
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::from("im-server serving");
    if let Some(addr) = backend.addr() {
        line += &format!(" gateway on {addr}");
    }
    if let Some(addr) = backend.internal_addr() {
        line += &format!(" internal on {addr}");
    }
    if let Some(admin) = admin {
        line += &format!(", admin http://{admin}/");
    }
    println!("{line} ({})", names.join(", "));
    shutdown_signal().await;
    eprintln!("im-server: stopping");
    backend.shutdown().await;
    // The last spans, if `[monitor] otlp_endpoint` exports them.
    if let Ok(Err(e)) = tokio::task::spawn_blocking(svrkit_runtime::monitor::otlp::flush).await {
        eprintln!("im-server: the last spans were not exported: {e}");
    }
    Ok(())
}

async fn shutdown_signal() {
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
