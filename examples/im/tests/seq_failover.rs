//! Sequence allocators under etcd leases, as processes (`[app.seq] arbiter = "etcd"`): two
//! share the shards; one is SIGKILLed in the middle of a stream of allocations, the other
//! takes its shards once the lease expires, and a restarted one takes half back. Through it
//! all, every user's sequences only grow.
//!
//! Needs etcd (`etcd-server`) and im-server built with the `etcd` feature: without them it
//! says it skipped (`svrkit_tests::external`).

#[cfg(not(feature = "etcd"))]
#[test]
fn seq_failover_needs_the_etcd_feature() {
    svrkit_tests::external::ETCD_FEATURE.skip();
}

#[cfg(feature = "etcd")]
mod support;

#[cfg(feature = "etcd")]
mod failover {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use svrkit_im::seq::etcd::EtcdArbiter;
    use svrkit_im::seq::lease::Arbiter;
    use svrkit_im::seq::route::Sequences;
    use svrkit_im::seq::{SECTION_USERS, SeqConfig, routed};
    use svrkit_runtime::Config;
    use svrkit_runtime::client::CallOptions;
    use svrkit_runtime::discovery::DiscoveryConfig;
    use svrkit_tests::etcd::Etcd;

    use super::support::TempDir;

    const SHARDS: u32 = 8;
    const TTL_S: u32 = 2;

    struct Allocator(Child);

    impl Drop for Allocator {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Allocator {
        /// An allocator process on etcd; returns once it serves.
        fn start(dir: &TempDir, name: &str, etcd: &str) -> Allocator {
            let config = dir.0.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[server]\nlisten = \"127.0.0.1:0\"\n\n[discovery]\netcd = [\"{etcd}\"]\n\
                     lease_ttl_s = {TTL_S}\n\n[app.seq]\narbiter = \"etcd\"\nshards = {SHARDS}\n\
                     lease_ttl_s = {TTL_S}\n"
                ),
            )
            .unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_im-server"))
                .args(["seq-alloc", "--config"])
                .arg(&config)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("im-server starts");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("internal on"), "{line:?}");
            Allocator(child)
        }

        fn kill(mut self) {
            self.0.kill().unwrap();
            self.0.wait().unwrap();
        }
    }

    /// Waits until the routing table has every shard, split between `owners` processes.
    async fn until_spread(seq: &Sequences, owners: usize) {
        let Sequences::Routed(routes) = seq else {
            unreachable!()
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let table = routes.owners();
            let mut distinct: Vec<&String> = table.values().collect();
            distinct.sort();
            distinct.dedup();
            if table.len() == SHARDS as usize && distinct.len() == owners {
                return;
            }
            assert!(
                Instant::now() < end,
                "shards not spread over {owners}: {table:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Allocates for every user once per round for `period`: the longest round.
    async fn drive(
        seq: &Sequences,
        users: &[u64],
        last: &mut BTreeMap<u64, u64>,
        period: Duration,
    ) -> Duration {
        let end = Instant::now() + period;
        let mut longest = Duration::ZERO;
        while Instant::now() < end {
            let started = Instant::now();
            let seqs = seq
                .alloc(users, &CallOptions::default())
                .await
                .expect("allocated within the wait");
            longest = longest.max(started.elapsed());
            for (&uid, &s) in users.iter().zip(&seqs) {
                let before = last.insert(uid, s).unwrap_or(0);
                assert!(s > before, "uid {uid}: {s} after {before}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        longest
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_allocators_shards_move_to_the_survivor_and_sequences_never_go_back() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let dir = TempDir::new("seq-failover");
        std::fs::create_dir_all(&dir.0).unwrap();
        let a = Allocator::start(&dir, "a", &etcd.url);
        let b = Allocator::start(&dir, "b", &etcd.url);

        let mut config = Config::default();
        config.discovery.etcd = vec![etcd.url.clone()];
        let seq_config = SeqConfig {
            arbiter: "etcd".into(),
            shards: SHARDS,
            ..SeqConfig::default()
        };
        let seq = routed(&config, &seq_config).await.unwrap();
        until_spread(&seq, 2).await;
        // Two users in each of 16 sections: every shard, twice.
        let users: Vec<u64> = (0..16u64)
            .flat_map(|s| [s * SECTION_USERS + 1, s * SECTION_USERS + 99])
            .collect();
        let mut last = BTreeMap::new();
        drive(&seq, &users, &mut last, Duration::from_millis(500)).await;

        a.kill();
        let outage = drive(&seq, &users, &mut last, Duration::from_secs(6)).await;
        until_spread(&seq, 1).await;
        println!("longest round across the kill: {outage:?} (lease TTL {TTL_S} s)");
        // Liveness, with room for a slow machine: the figure to quote comes from the chaos
        // run, not from here.
        assert!(
            outage < Duration::from_secs(u64::from(TTL_S) + 5),
            "{outage:?}"
        );

        // A new allocator joins: the survivor gives back half, and nothing goes back.
        let c = Allocator::start(&dir, "c", &etcd.url);
        until_spread(&seq, 2).await;
        drive(&seq, &users, &mut last, Duration::from_millis(500)).await;
        drop((b, c, etcd));
    }

    /// etcd's own fence, without the allocator in front of it: a raise is written only while
    /// the raiser's lease owns the shard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_refuses_a_raise_from_a_lease_that_does_not_own_the_shard() {
        let Some(etcd) = Etcd::start().await else {
            return;
        };
        let config = DiscoveryConfig {
            etcd: vec![etcd.url.clone()],
            ..DiscoveryConfig::default()
        };
        let arbiter = EtcdArbiter::connect(&config, SHARDS).await.unwrap();
        let ttl = Duration::from_secs(30);
        let (old, _) = arbiter.grant(ttl).await.unwrap();
        let (new, _) = arbiter.grant(ttl).await.unwrap();
        assert!(arbiter.claim(0, "old:1", old).await.unwrap());
        assert!(
            !arbiter.claim(0, "new:1", new).await.unwrap(),
            "owned already"
        );
        assert_eq!(arbiter.raise(0, old, 0, 100).await.unwrap(), Some(100));
        assert_eq!(arbiter.raise(0, new, 0, 200).await.unwrap(), None);
        // The shard changes hands: now the old lease is the stale one.
        arbiter.release(0, old).await.unwrap();
        assert!(arbiter.claim(0, "new:1", new).await.unwrap());
        assert_eq!(arbiter.raise(0, old, 0, 300).await.unwrap(), None);
        assert_eq!(arbiter.load(0).await.unwrap(), 100);
        // The owner's raise keeps the larger bound.
        assert_eq!(arbiter.raise(0, new, 0, 50).await.unwrap(), Some(100));
        assert_eq!(arbiter.raise(0, new, 0, 400).await.unwrap(), Some(400));
        // A lease that expired (revoked here) owns nothing.
        arbiter.revoke(new).await.unwrap();
        assert_eq!(arbiter.raise(0, new, 0, 500).await.unwrap(), None);
        assert_eq!(arbiter.load(0).await.unwrap(), 400);
    }
}
