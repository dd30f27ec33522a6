//! The SET deployment (`examples/im/deploy/sets.sh`: 2 gateways, 2 message replicas, the
//! sequence allocator and store, account, spam, on etcd and PostgreSQL) under load, with
//! one gateway and one message replica SIGKILLed: sends and syncs keep succeeding, the
//! errors stop within 2 s, and no acknowledged message is lost.
//!
//! Its processes find each other through etcd, so the test needs im-server built with the
//! `etcd` feature (its build runs protoc), and etcd and PostgreSQL installed: without them
//! it says it skipped (`svrkit_tests::external`).

#[cfg(feature = "etcd")]
#[path = "sets/start_failures.rs"]
mod start_failures;
#[cfg(feature = "etcd")]
mod support;
#[cfg(feature = "etcd")]
#[path = "sets/under_kills.rs"]
mod under_kills;

#[cfg(not(feature = "etcd"))]
#[test]
fn the_set_deployment_needs_the_etcd_feature() {
    svrkit_tests::external::ETCD_FEATURE.skip();
}
