//! Discovery on a real etcd: replicas register under leases, clients configured with
//! `discovery = "etcd"` follow them live.
//!
//! The runtime's etcd client is behind the `etcd` feature (its build runs protoc), and the
//! cases need an etcd server: without either, they say they skipped
//! (`svrkit_tests::external`).

#[cfg(feature = "etcd")]
#[path = "rpc_discovery/on_etcd.rs"]
mod on_etcd;

#[cfg(not(feature = "etcd"))]
#[test]
fn discovery_needs_the_etcd_feature() {
    svrkit_tests::external::ETCD_FEATURE.skip();
}
