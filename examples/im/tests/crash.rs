//! SIGKILL the backend in the middle of a stream of sends, restart it on the same data:
//! every acknowledged message is there, once, and every sequence handed out afterwards is
//! above every one handed out before.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::{Engine, TempDir, client, send, sync_all, user};
use svrkit_im::im::seq::{AllocReq, SeqAllocSvrClient};
use svrkit_runtime::{Channel, ChannelOptions};
use tokio::sync::Mutex;

/// The backend as its own process; its gateway and internal addresses.
fn spawn(dir: &TempDir, engine: &Engine) -> (Child, String, String) {
    let config = dir.0.join("im.toml");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[app]\ndata = \"{}\"\ninternal_listen = \"127.0.0.1:0\"\n\n[app.account]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\n[app.store]\n{}",
            dir.0.join("data").display(),
            engine.store_keys()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_im-server"))
        .args(["all", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("im-server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let word_after = |w: &str| {
        let rest = &line[line.find(w).unwrap_or_else(|| panic!("{w} in {line:?}")) + w.len()..];
        rest.split([' ', ',']).next().unwrap().to_owned()
    };
    let (gateway, internal) = (word_after("gateway on "), word_after("internal on "));
    (child, gateway, internal)
}

on_both_engines!(after_a_sigkill_every_acknowledged_message_is_there_and_sequences_never_go_back);

/// On PostgreSQL only im-server is killed: the database stays up, as it would on its own
/// machine.
async fn after_a_sigkill_every_acknowledged_message_is_there_and_sequences_never_go_back(
    engine: Engine,
) {
    let dir = TempDir::new("crash");
    let (mut child, gateway, internal) = spawn(&dir, &engine);
    let c = client(&gateway);
    let users = [
        user(&c, "ann").await,
        user(&c, "ben").await,
        user(&c, "cat").await,
    ];
    let options = ChannelOptions {
        caller: "crash-test".into(),
        ..ChannelOptions::default()
    };
    let seq = SeqAllocSvrClient::new(Channel::lazy([internal], options.clone()));

    // Senders and an allocator caller, recording what was acknowledged, until they fail.
    let acked = Arc::new(Mutex::new(Vec::<(usize, String, u64)>::new()));
    let handed = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let (c, users, acked, count, dead) = (
            c.clone(),
            users.clone(),
            acked.clone(),
            count.clone(),
            dead.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let (from, to) = ((t + i) % 3, (t + i + 1) % 3);
                let id = format!("t{t}-{i}");
                match send(&c, &users[from], &users[to].name, "crash me", &id).await {
                    Ok(sent) => {
                        acked.lock().await.push((to, id, sent.seq));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if dead.load(Ordering::Relaxed) => return,
                    Err(e) => panic!("send failed before the kill: {e}"),
                }
            }
        }));
    }
    {
        let (seq, handed, dead, uids) = (
            seq.clone(),
            handed.clone(),
            dead.clone(),
            users.iter().map(|u| u.uid).collect::<Vec<_>>(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let uid = uids[i % 3];
                match seq
                    .alloc(&AllocReq {
                        uids: vec![uid],
                        ..AllocReq::default()
                    })
                    .await
                {
                    Ok(resp) => {
                        let mut handed = handed.lock().await;
                        let max = handed.entry(uid).or_default();
                        *max = (*max).max(resp.seqs[0]);
                    }
                    Err(_) if dead.load(Ordering::Relaxed) => return,
                    Err(e) => panic!("alloc failed before the kill: {e}"),
                }
            }
        }));
    }
    while count.load(Ordering::Relaxed) < 600 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    dead.store(true, Ordering::Relaxed);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }

    let (mut child, gateway, internal) = spawn(&dir, &engine);
    let c = client(&gateway);
    let seq = SeqAllocSvrClient::new(Channel::lazy([internal], options));
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 600);
    let mut before = handed.lock().await.clone();
    for (to, _, s) in &acked {
        let max = before.entry(users[*to].uid).or_default();
        *max = (*max).max(*s);
    }
    for (i, u) in users.iter().enumerate() {
        // Sessions are durable too: the tokens from before the crash still work.
        let inbox = sync_all(&c, u, 0).await;
        let ids: BTreeMap<&str, u64> = inbox
            .iter()
            .map(|m| (m.client_msg_id.as_str(), m.seq))
            .collect();
        assert_eq!(ids.len(), inbox.len(), "{}: a message twice", u.name);
        assert!(
            inbox.windows(2).all(|w| w[0].seq < w[1].seq),
            "{}: out of order",
            u.name
        );
        for (to, id, s) in acked.iter().filter(|(to, _, _)| *to == i) {
            assert_eq!(
                ids.get(id.as_str()),
                Some(s),
                "{}: acknowledged {id} (seq {s}) lost",
                users[*to].name
            );
        }
        // Every sequence handed out now is above every one handed out before.
        let old = before[&u.uid];
        let sent = send(
            &c,
            &users[(i + 1) % 3],
            &u.name,
            "after",
            &format!("after{i}"),
        )
        .await
        .unwrap();
        assert!(sent.seq > old, "{}: {} after {old}", u.name, sent.seq);
        let alloc = seq
            .alloc(&AllocReq {
                uids: vec![u.uid],
                ..AllocReq::default()
            })
            .await
            .unwrap();
        assert!(alloc.seqs[0] > sent.seq);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
