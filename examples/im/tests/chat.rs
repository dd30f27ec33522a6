//! Users talking through the gateway of a backend running in this process: one-to-one and
//! group messages, retries, and every kind of bad input and forged access.

mod support;

on_both_engines!(
    two_and_three_users_exchange_messages_one_to_one_and_in_a_group,
    a_retried_send_with_the_same_client_message_id_stores_one_message,
    bad_input_and_forged_access_get_a_clear_error_and_store_nothing,
    an_expired_token_is_refused_by_the_gateway_and_the_account_service,
    a_reader_following_its_sync_key_while_many_write_sees_every_message_once_in_order,
    the_same_with_the_sequence_allocator_over_the_network,
);

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{
    Engine, TempDir, client, group_add, group_create, group_send, send, start_on, sync, sync_all,
    user,
};
use svrkit_im::backend::{Backend, Role};
use svrkit_im::im::account::{AccountSvrClient, CheckTokenReq};
use svrkit_im::im::gateway::SendReq;
use svrkit_im::im::msg::{FetchReq, MsgSvrClient};
use svrkit_runtime::{Channel, ChannelOptions, Code};

/// Checks that `msgs` hold each expected (sender, id) exactly once, in strictly increasing
/// sequence order with no gaps from `first`, and that each sender's messages come in the
/// order they were sent. `expected` maps a sender to its ids, in sending order.
fn check_inbox(
    who: &str,
    msgs: &[svrkit_im::im::msg::Msg],
    first: u64,
    expected: &BTreeMap<String, Vec<String>>,
) {
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    let dense: Vec<u64> = (first..first + msgs.len() as u64).collect();
    assert_eq!(seqs, dense, "{who}: sequences in order with no gaps");
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in msgs {
        got.entry(m.from_name.to_string())
            .or_default()
            .push(m.client_msg_id.to_string());
    }
    assert_eq!(
        &got, expected,
        "{who}: every message once, each sender's in order"
    );
}

async fn two_and_three_users_exchange_messages_one_to_one_and_in_a_group(engine: Engine) {
    let data = TempDir::new("chat");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;
    let carol = user(&c, "carol").await;

    // Two users, both ways at once; then a third joins in.
    let a_to_b = async {
        for i in 0..20 {
            send(&c, &alice, "bob", &format!("hi bob {i}"), &format!("ab{i}"))
                .await
                .unwrap();
        }
    };
    let b_to_a = async {
        for i in 0..20 {
            send(
                &c,
                &bob,
                "alice",
                &format!("hi alice {i}"),
                &format!("ba{i}"),
            )
            .await
            .unwrap();
        }
    };
    let c_to_a = async {
        for i in 0..10 {
            send(
                &c,
                &carol,
                "alice",
                &format!("carol here {i}"),
                &format!("ca{i}"),
            )
            .await
            .unwrap();
        }
    };
    tokio::join!(a_to_b, b_to_a, c_to_a);

    let group = group_create(&c, &alice, "three").await.unwrap();
    let group = group_add(&c, &alice, group.group_id, &["bob", "carol"])
        .await
        .unwrap();
    assert_eq!(group.members, ["alice", "bob", "carol"]);
    let talk = |who: &support::User, tag: &'static str| {
        let (c, who, gid) = (c.clone(), who.clone(), group.group_id);
        async move {
            for i in 0..8 {
                let sent = group_send(&c, &who, gid, &format!("{tag} {i}"), &format!("g{tag}{i}"))
                    .await
                    .unwrap();
                assert_eq!(sent.recipients, 3);
            }
        }
    };
    tokio::join!(talk(&alice, "a"), talk(&bob, "b"), talk(&carol, "c"));

    let ids = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    let group_ids = |tag: &str| ids(&format!("g{tag}"), 8);
    let inbox = |pairs: &[(&str, Vec<String>)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut alice_ids = ids("ba", 20);
    alice_ids.extend(group_ids("b"));
    let mut carol_to_alice = ids("ca", 10);
    carol_to_alice.extend(group_ids("c"));
    check_inbox(
        "alice",
        &sync_all(&c, &alice, 0).await,
        1,
        &inbox(&[
            ("alice", group_ids("a")),
            ("bob", alice_ids),
            ("carol", carol_to_alice),
        ]),
    );
    let mut alice_to_bob = ids("ab", 20);
    alice_to_bob.extend(group_ids("a"));
    check_inbox(
        "bob",
        &sync_all(&c, &bob, 0).await,
        1,
        &inbox(&[
            ("alice", alice_to_bob),
            ("bob", group_ids("b")),
            ("carol", group_ids("c")),
        ]),
    );
    check_inbox(
        "carol",
        &sync_all(&c, &carol, 0).await,
        1,
        &inbox(&[
            ("alice", group_ids("a")),
            ("bob", group_ids("b")),
            ("carol", group_ids("c")),
        ]),
    );

    // A sync from the middle gets exactly the rest; the key moves to the last message.
    let all = sync_all(&c, &bob, 0).await;
    let rest = sync_all(&c, &bob, all[9].seq).await;
    assert_eq!(
        rest.iter().map(|m| m.seq).collect::<Vec<_>>(),
        all[10..].iter().map(|m| m.seq).collect::<Vec<_>>()
    );
    let last = sync(&c, &bob, all.last().unwrap().seq, Duration::ZERO)
        .await
        .unwrap();
    assert!(last.msgs.is_empty() && last.sync_key == all.last().unwrap().seq);
    backend.shutdown().await;
}

async fn a_retried_send_with_the_same_client_message_id_stores_one_message(engine: Engine) {
    let data = TempDir::new("retry");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;

    let first = send(&c, &alice, "bob", "once", "m1").await.unwrap();
    let again = send(&c, &alice, "bob", "once", "m1").await.unwrap();
    assert_eq!(first.seq, again.seq);
    // Retries racing each other.
    let racing = futures_join(8, || {
        let (c, alice) = (c.clone(), alice.clone());
        async move { send(&c, &alice, "bob", "twice?", "m2").await }
    })
    .await;
    let seqs: Vec<u64> = racing.into_iter().map(|r| r.unwrap().seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1]), "{seqs:?}");
    // The same id from another sender is another message.
    send(&c, &bob, "alice", "mine", "m1").await.unwrap();
    // The same id for a message to someone else is not a retry: refused, nothing stored
    // (it used to answer sequence 0 and drop the message).
    let carol = user(&c, "carol").await;
    let reused = send(&c, &alice, "carol", "other", "m1").await.unwrap_err();
    assert_eq!(reused.code(), Code::INVALID_ARGUMENT, "{reused}");
    assert!(sync_all(&c, &carol, 0).await.is_empty());
    // And to a group: one copy per member.
    let group = group_create(&c, &alice, "pair").await.unwrap();
    group_add(&c, &alice, group.group_id, &["bob"])
        .await
        .unwrap();
    for _ in 0..3 {
        group_send(&c, &alice, group.group_id, "to the group", "g1")
            .await
            .unwrap();
    }

    let inbox = sync_all(&c, &bob, 0).await;
    let ids: Vec<&str> = inbox.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2", "g1"]);
    assert_eq!(inbox[0].seq, first.seq);
    assert_eq!(inbox[1].seq, seqs[0]);
    let inbox = sync_all(&c, &alice, 0).await;
    assert_eq!(
        inbox
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect::<Vec<_>>(),
        ["m1", "g1"]
    );
    backend.shutdown().await;
}

/// Runs `n` of `make`'s futures at the same time, each on its own task.
async fn futures_join<F, Fut, T>(n: usize, make: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(make())).collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

async fn bad_input_and_forged_access_get_a_clear_error_and_store_nothing(engine: Engine) {
    let data = TempDir::new("bad");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;
    fn code<T: std::fmt::Debug>(r: Result<T, svrkit_runtime::Status>) -> Code {
        r.unwrap_err().code()
    }

    // A page size past 32 bits is read as sent (and capped), not cut to a small one.
    let (pager, paged) = (user(&c, "pager").await, user(&c, "paged").await);
    for n in 0..9 {
        send(&c, &pager, "paged", "page", &format!("p{n}"))
            .await
            .unwrap();
    }
    let huge = svrkit_im::im::gateway::SyncReq {
        token: paged.token.clone(),
        limit: (1 << 32) + 5,
        ..svrkit_im::im::gateway::SyncReq::default()
    };
    let page = c.sync(&huge).await.unwrap();
    assert_eq!(
        page.msgs.len(),
        9,
        "not 5: the limit was not cut to 32 bits"
    );

    // Tokens: missing, malformed, forged.
    for token in ["", "not-a-token", &"ab".repeat(32)] {
        let forged = support::User {
            token: svrkit_runtime::FastStr::new(token),
            ..alice.clone()
        };
        assert_eq!(
            code(send(&c, &forged, "bob", "hi", "t").await),
            Code::UNAUTHENTICATED,
            "{token:?}"
        );
        assert_eq!(
            code(sync(&c, &forged, 0, Duration::ZERO).await),
            Code::UNAUTHENTICATED
        );
        assert_eq!(
            code(group_create(&c, &forged, "g").await),
            Code::UNAUTHENTICATED
        );
    }
    // Messages: oversized, empty, no id, id too long; recipients: none, unknown, id unknown.
    let too_big = "x".repeat(svrkit_im::msg::MAX_TEXT + 1);
    assert_eq!(
        code(send(&c, &alice, "bob", &too_big, "big").await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(send(&c, &alice, "bob", "", "empty").await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(send(&c, &alice, "bob", "hi", "").await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(send(&c, &alice, "bob", "hi", &"i".repeat(65)).await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(send(&c, &alice, "", "hi", "nobody").await),
        Code::INVALID_ARGUMENT
    );
    let unknown = send(&c, &alice, "mallory", "hi", "u1").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NOT_FOUND);
    assert!(unknown.message().contains("mallory"), "{unknown}");
    let by_id = SendReq {
        token: alice.token.clone(),
        to_uid: 999,
        client_msg_id: "u2".into(),
        text: "hi".into(),
        ..SendReq::default()
    };
    assert_eq!(c.send(&by_id).await.unwrap_err().code(), Code::NOT_FOUND);
    // Groups: unknown, not a member.
    assert_eq!(
        code(group_send(&c, &alice, 4242, "hi", "g0").await),
        Code::NOT_FOUND
    );
    assert_eq!(
        code(group_add(&c, &alice, 4242, &["bob"]).await),
        Code::NOT_FOUND
    );
    let group = group_create(&c, &alice, "private").await.unwrap();
    assert_eq!(
        code(group_send(&c, &bob, group.group_id, "let me in", "g1").await),
        Code::PERMISSION_DENIED
    );
    assert_eq!(
        code(group_add(&c, &bob, group.group_id, &["bob"]).await),
        Code::PERMISSION_DENIED
    );
    assert_eq!(
        code(group_add(&c, &alice, group.group_id, &["mallory"]).await),
        Code::NOT_FOUND
    );
    // Spam is refused (the check is up).
    let spam = send(&c, &alice, "bob", "FREE MONEY, click", "s1")
        .await
        .unwrap_err();
    assert_eq!(spam.code(), Code::PERMISSION_DENIED, "{spam}");
    // Accounts: bad names and passwords, a taken name; a wrong password and an unknown
    // name get the same answer.
    let credentials = |n: &str, p: &str| svrkit_im::im::gateway::Credentials {
        name: svrkit_runtime::FastStr::new(n),
        password: svrkit_runtime::FastStr::new(p),
        ..Default::default()
    };
    assert_eq!(
        c.register(&credentials("bad name", "password1"))
            .await
            .unwrap_err()
            .code(),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        c.register(&credentials("ok", "short"))
            .await
            .unwrap_err()
            .code(),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        c.register(&credentials("alice", "another-password"))
            .await
            .unwrap_err()
            .code(),
        Code::INVALID_ARGUMENT
    );
    let wrong = c
        .login(&credentials("alice", "wrong-password"))
        .await
        .unwrap_err();
    let nobody = c
        .login(&credentials("nobody", "wrong-password"))
        .await
        .unwrap_err();
    assert_eq!(
        (wrong.code(), wrong.message()),
        (nobody.code(), nobody.message())
    );
    assert_eq!(wrong.code(), Code::UNAUTHENTICATED);

    // Nothing of that was stored.
    assert!(sync_all(&c, &bob, 0).await.is_empty());
    assert!(sync_all(&c, &alice, 0).await.is_empty());

    // Another user's inbox: the gateway reads only the token's own; the message service
    // that could read any is not served on the gateway's address.
    send(&c, &alice, "bob", "for bob only", "p1").await.unwrap();
    assert!(sync_all(&c, &alice, 0).await.is_empty());
    let options = ChannelOptions {
        caller: "mallory".into(),
        ..ChannelOptions::default()
    };
    let msg = MsgSvrClient::new(Channel::lazy(
        [backend.addr().unwrap().to_string()],
        options,
    ));
    let fetch = FetchReq {
        uid: bob.uid,
        ..FetchReq::default()
    };
    assert_eq!(
        msg.fetch(&fetch).await.unwrap_err().code(),
        Code::UNIMPLEMENTED
    );
    assert_eq!(sync_all(&c, &bob, 0).await.len(), 1);
    backend.shutdown().await;
}

async fn an_expired_token_is_refused_by_the_gateway_and_the_account_service(engine: Engine) {
    let data = TempDir::new("expiry");
    let backend = start_on(&engine, &data, "session_ttl_ms = 300").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    user(&c, "bob").await;
    send(&c, &alice, "bob", "while it lasts", "e1")
        .await
        .unwrap();
    let check = CheckTokenReq {
        token: alice.token.clone(),
        ..CheckTokenReq::default()
    };
    let account = AccountSvrClient::new(backend.internal_channel().unwrap());
    let session = account.check_token(&check).await.unwrap();
    // Wait for the expiry the service announced, not for a guess.
    let left = session.expires_at_ms.saturating_sub(svrkit_im::now_ms()) + 5;
    tokio::time::sleep(Duration::from_millis(left)).await;
    let expired = send(&c, &alice, "bob", "too late", "e2").await.unwrap_err();
    assert_eq!(expired.code(), Code::UNAUTHENTICATED);
    assert!(expired.message().contains("expired"), "{expired}");
    assert_eq!(
        sync(&c, &alice, 0, Duration::ZERO)
            .await
            .unwrap_err()
            .code(),
        Code::UNAUTHENTICATED
    );
    assert_eq!(
        account.check_token(&check).await.unwrap_err().code(),
        Code::UNAUTHENTICATED
    );
    backend.shutdown().await;
}

async fn a_reader_following_its_sync_key_while_many_write_sees_every_message_once_in_order(
    engine: Engine,
) {
    let data = TempDir::new("stream");
    let backend = start_on(&engine, &data, "").await;
    follow_while_writing(&backend).await;
}

/// The same with the allocator in another server, reached over TCP: every allocation waits
/// for the network, so appends to one recipient finish their allocations in any order, and
/// only the message service's per-recipient lock keeps them visible in sequence order.
async fn the_same_with_the_sequence_allocator_over_the_network(engine: Engine) {
    let seq_data = TempDir::new("stream-seq");
    let seq = Backend::start(
        &[Role::SeqAlloc, Role::SeqStore],
        &support::config(&seq_data.0, "", &engine.store_keys()),
    )
    .await
    .unwrap();
    let data = TempDir::new("stream-remote");
    // On PostgreSQL both processes share the database.
    let extra = format!(
        "{}[services.\"im.seq.SeqAllocSvr\"]\nendpoints = [\"{}\"]\n",
        engine.store_keys(),
        seq.internal_addr().unwrap()
    );
    let roles: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| !matches!(r, Role::SeqAlloc | Role::SeqStore))
        .collect();
    let backend = Backend::start(&roles, &support::config(&data.0, "", &extra))
        .await
        .unwrap();
    follow_while_writing(&backend).await;
    seq.shutdown().await;
}

/// Four senders write 100 messages each to bob while bob follows his sync key with long
/// polls; bob must see every acknowledged message exactly once, in sequence order.
async fn follow_while_writing(backend: &Backend) {
    let c = client(backend.addr().unwrap());
    let bob = user(&c, "bob").await;
    let mut senders = Vec::new();
    for i in 0..4 {
        senders.push(user(&c, &format!("s{i}")).await);
    }
    // The reader long-polls with its sync key while the appends land and the store moves
    // them (every commit) from its log into the inbox table.
    // It stops at the first empty sync after the writers are done: a message it skipped
    // past is then missing for good, and the comparison below says so (rather than the
    // reader waiting for it forever).
    let writers_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (c, bob, done) = (c.clone(), bob.clone(), writers_done.clone());
        tokio::spawn(async move {
            let (mut key, mut seen) = (0, Vec::new());
            loop {
                // Read before the poll: if set, every acknowledged send is already stored.
                let finished = done.load(Ordering::SeqCst);
                let resp = sync(&c, &bob, key, Duration::from_secs(1)).await.unwrap();
                if resp.msgs.is_empty() && finished {
                    return seen;
                }
                seen.extend(
                    resp.msgs
                        .iter()
                        .map(|m| (m.seq, m.client_msg_id.to_string())),
                );
                key = resp.sync_key;
            }
        })
    };
    let writers: Vec<_> = senders
        .iter()
        .map(|s| {
            let (c, s) = (c.clone(), s.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..100 {
                    let id = format!("{}-{i}", s.name);
                    acked.push((send(&c, &s, "bob", "streamed", &id).await.unwrap().seq, id));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    writers_done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "seen twice or out of order"
    );
    acked.sort();
    assert_eq!(seen, acked, "the reader missed or invented messages");
    backend.shutdown().await;
}
