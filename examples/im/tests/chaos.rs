//! `deploy/chaos.sh --short`: the whole layout without a single point of failure (a 3-member
//! etcd, two SETs each on a 3-member Patroni cluster, two allocators, replicas in three
//! zones) under `imctl bench --check`, while a message replica, a gateway, an allocator, a
//! PostgreSQL primary, an etcd member and a whole zone are SIGKILLed in turn. Nothing
//! acknowledged may be lost, repeated or reordered.
//!
//! Needs etcd, Patroni and PostgreSQL, and the `etcd` feature: without them it says it
//! skipped.

#[cfg(not(feature = "etcd"))]
#[test]
fn chaos_needs_the_etcd_feature() {
    svrkit_tests::external::ETCD_FEATURE.skip();
}

#[cfg(feature = "etcd")]
#[test]
fn the_short_chaos_run_loses_repeats_and_reorders_nothing() {
    use std::path::Path;
    use std::process::Command;

    use svrkit_tests::external::{ETCD, PATRONI, POSTGRES, program};
    if ETCD.or_skip(program("etcd")).is_none()
        || PATRONI.or_skip(program("patroni")).is_none()
        || POSTGRES
            .or_skip(svrkit_tests::postgres::bin_dir())
            .is_none()
    {
        return;
    }
    let dir = std::env::temp_dir().join(format!("svrkit-im-chaos-{}", std::process::id()));
    // Ports below those of the SET test (20000 and up) and Linux's ephemeral range.
    let base = 10_000 + (std::process::id() % 180) as u16 * 55;
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/chaos.sh"))
        .arg("--short")
        .arg(&dir)
        .env("IM_SERVER", env!("CARGO_BIN_EXE_im-server"))
        .env("IMCTL", env!("CARGO_BIN_EXE_imctl"))
        .env("BASE_PORT", base.to_string())
        .env(
            "ACCOUNT_TOML",
            "argon2_memory_kib = 64\nargon2_iterations = 1",
        )
        .output()
        .expect("run chaos.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    let last = stdout.lines().last().unwrap_or_default();
    eprintln!("{stderr}\n{last}");
    assert!(out.status.success(), "chaos.sh failed: {last}\n{stderr}");
    let field = |key: &str| -> f64 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {last:?}"))
            .parse()
            .unwrap()
    };
    assert!(field("acked") > 1000.0, "{last}");
    for key in ["lost", "duplicated", "out_of_order", "seq_regressions"] {
        assert_eq!(field(key), 0.0, "{last}");
    }
}
