//! `sets.sh start` when something is in its way: it names what, and leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::support::TempDir;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sets.sh")
}

fn sets(command: &str, dir: &Path, base: u16, im_server: &Path) -> Output {
    Command::new("bash")
        .arg(script())
        .arg(command)
        .arg(dir)
        .env("IM_SERVER", im_server)
        .env("BASE_PORT", base.to_string())
        .env(
            "ACCOUNT_TOML",
            "argon2_memory_kib = 64\nargon2_iterations = 1",
        )
        .output()
        .expect("run sets.sh")
}

/// Processes whose command line names `dir` (etcd's data dir, PostgreSQL's, the services'
/// configurations), polled until there are none or 10 s have passed.
fn left_running(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<String> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle) && !c.contains("sets.sh"))
            .collect();
        if running.is_empty() || Instant::now() > end {
            return running;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn with_its_etcd_port_taken_start_names_the_port_and_starts_nothing() {
    let dir = TempDir::new("sets-taken");
    // Below the other sets test's ports (20,000 and up) and the ephemeral range.
    let base = 8_000 + (std::process::id() % 40) as u16 * 50;
    let _taken = std::net::TcpListener::bind(("127.0.0.1", base)).expect("take the etcd port");
    let out = sets(
        "start",
        &dir.0,
        base,
        Path::new(env!("CARGO_BIN_EXE_im-server")),
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("port {base} (etcd clients) on 127.0.0.1 is taken")),
        "{said}"
    );
    assert!(!said.contains("etcd on"), "nothing is started: {said}");
    assert_eq!(left_running(&dir.0), Vec::<String>::new());
}

#[test]
fn a_process_that_fails_to_start_stops_everything_started_before_it() {
    use svrkit_tests::external::{ETCD, POSTGRES, program};
    if ETCD.or_skip(program("etcd")).is_none()
        || POSTGRES
            .or_skip(svrkit_tests::postgres::bin_dir())
            .is_none()
    {
        return;
    }
    let dir = TempDir::new("sets-fails");
    std::fs::create_dir_all(&dir.0).unwrap();
    // im-server, except that a gateway fails at once: etcd, PostgreSQL and five processes
    // are up by then.
    let wrapper = dir.0.join("im-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" gateway \"*) echo 'gateway: cannot start (on purpose)' >&2; exit 1;; esac\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_im-server")
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&wrapper, permissions).unwrap();
    let base = 10_000 + (std::process::id() % 200) as u16 * 50;
    let data = dir.0.join("deployment");
    let out = sets("start", &data, base, &wrapper);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("msg-b: "), "the others came up first: {said}");
    assert!(said.contains("gateway-a exited"), "{said}");
    assert!(
        said.contains("cannot start (on purpose)"),
        "the log's end: {said}"
    );
    assert!(said.contains("stopping what it started"), "{said}");
    assert_eq!(left_running(&data), Vec::<String>::new());
    // And the next start is not blocked by what the failed one left.
    let status = sets("status", &data, base, &wrapper);
    assert!(!text(&status).contains("running"), "{}", text(&status));
}
