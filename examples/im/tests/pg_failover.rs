//! The messaging backend on a replicated PostgreSQL (three members under Patroni, on etcd):
//! the primary is killed while sends are in flight, and every acknowledged message is read
//! back from the promoted standby.
//!
//! To make a loss possible at all on one machine, where a standby is a millisecond behind,
//! the standbys' WAL receivers are frozen (SIGSTOP) just before the kill, with a burst of
//! sends in flight. With synchronous replication those sends are not acknowledged until a
//! standby has them, so nothing acknowledged is lost. With asynchronous replication the
//! same run loses the burst, and the loss check says so: the second test shows the check
//! would catch the mechanism's removal.
//!
//! Needs etcd, Patroni and PostgreSQL (`etcd-server`, `patroni`, `postgresql`) and the
//! `etcd` feature (the etcd helper's client): without them it says it skipped.

#[cfg(not(feature = "etcd"))]
#[test]
fn pg_failover_needs_the_etcd_feature() {
    svrkit_tests::external::ETCD_FEATURE.skip();
}

#[cfg(feature = "etcd")]
mod support;

#[cfg(feature = "etcd")]
mod failover {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use svrkit_im::backend::{Backend, Role};
    use svrkit_tests::etcd::Etcd;
    use svrkit_tests::patroni::Cluster;
    use tokio::sync::Mutex;

    use super::support::{TempDir, befriend, client, config, send, sync_all, user};

    /// What one run saw: acknowledged sends lost, and how long no send succeeded.
    struct Outcome {
        acked: usize,
        lost: usize,
        outage: Duration,
    }

    async fn kill_the_primary_mid_burst(synchronous: bool) -> Option<Outcome> {
        let etcd = Etcd::start().await?;
        let mut cluster = Cluster::start(&etcd.url, 3, synchronous).await?;
        let url = cluster.database("im").await;
        let dir = TempDir::new("pg-failover");
        let store = format!("kind = \"postgres\"\nurl = \"{url}\"\n");
        let backend = Backend::start(&Role::ALL, &config(&dir.0, "", &store))
            .await
            .expect("backend starts");
        let c = client(backend.addr().unwrap());
        let (alice, bob) = (user(&c, "alice").await, user(&c, "bob").await);
        befriend(&c, &alice, &bob).await;

        let acked = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
        let note = {
            let acked = acked.clone();
            move |id: String, seq: u64| {
                let acked = acked.clone();
                async move {
                    acked.lock().await.insert(id, seq);
                }
            }
        };
        for i in 0..20 {
            let id = format!("before-{i}");
            let resp = send(&c, &alice, "bob", "hello", &id).await.expect("send");
            note(id, resp.seq).await;
        }

        // Standbys frozen, a burst in flight, then the primary dies.
        cluster.standbys_receive(false);
        let mut burst = Vec::new();
        for i in 0..20 {
            let (c, alice, note) = (c.clone(), alice.clone(), note.clone());
            burst.push(tokio::spawn(async move {
                let id = format!("burst-{i}");
                if let Ok(resp) = send(&c, &alice, "bob", "in flight", &id).await {
                    note(id, resp.seq).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let primary = cluster.primary().await.expect("a primary");
        cluster.kill(primary);
        let killed = Instant::now();
        cluster.standbys_receive(true);

        // Sends until one goes through on the new primary.
        let mut i = 0;
        loop {
            let id = format!("after-{i}");
            if let Ok(resp) = send(&c, &alice, "bob", "after", &id).await {
                note(id, resp.seq).await;
                break;
            }
            i += 1;
            assert!(
                killed.elapsed() < Duration::from_secs(90),
                "no send went through within 90 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let outage = killed.elapsed();
        for task in burst {
            task.await.unwrap();
        }

        let delivered: Vec<String> = sync_all(&c, &bob, 0)
            .await
            .into_iter()
            .map(|m| m.client_msg_id.to_string())
            .collect();
        let acked = acked.lock().await.clone();
        let lost = acked.keys().filter(|id| !delivered.contains(id)).count();
        let mut seen = delivered.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), delivered.len(), "a message delivered twice");
        backend.shutdown().await;
        drop((cluster, etcd));
        Some(Outcome {
            acked: acked.len(),
            lost,
            outage,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_synchronous_standby_no_acknowledged_message_is_lost_when_the_primary_dies() {
        let Some(run) = kill_the_primary_mid_burst(true).await else {
            return;
        };
        println!(
            "synchronous: {} acknowledged, {} lost, first send after the kill {:?}",
            run.acked, run.lost, run.outage
        );
        assert_eq!(run.lost, 0, "acknowledged messages lost");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_asynchronous_replication_the_same_kill_loses_acknowledged_messages() {
        let Some(run) = kill_the_primary_mid_burst(false).await else {
            return;
        };
        println!(
            "asynchronous: {} acknowledged, {} lost, first send after the kill {:?}",
            run.acked, run.lost, run.outage
        );
        assert!(
            run.lost > 0,
            "the burst survived without replication: the check is blind"
        );
    }
}
