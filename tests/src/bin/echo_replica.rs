//! An echo server registered in etcd, in a process of its own, for the discovery tests to
//! SIGKILL: `echo_replica <etcd url> <lease ttl in seconds>`. Prints `READY <addr>` once
//! registered; exits when its stdin closes.

use std::io::Read;

use svrkit_runtime::discovery::DiscoveryConfig;
use svrkit_runtime::discovery::etcd::Registration;
use svrkit_tests::svrkit::test::rpc::EchoSvrClient;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, ttl] = args.as_slice() else {
        panic!("usage: echo_replica <etcd url> <lease ttl s>");
    };
    let running = svrkit_tests::echo::start().await;
    let config = DiscoveryConfig {
        etcd: vec![url.clone()],
        lease_ttl_s: ttl.parse().expect("a ttl in seconds"),
        ..DiscoveryConfig::default()
    };
    let _registration =
        Registration::register(&config, &[EchoSvrClient::DESCRIPTOR.name], &running.addr)
            .await
            .expect("register in etcd");
    println!("READY {}", running.addr);
    tokio::task::spawn_blocking(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    })
    .await
    .unwrap();
}
