//! Both engines under the same tests: redb with thresholds that move every batch into the
//! inbox table, so that reads cross its two tiers, and PostgreSQL on a real server (a
//! database per test); each reopened on the same data, as after a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Append, Appended, GroupChange, Store, StoreConfig, StoreKind};
use crate::im::msg::Msg;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("svrkit-im-store-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a test's store lives, to open it (again) with some settings.
enum Engine {
    Redb(TempDir),
    /// The server (kept running for the test) and the test's database.
    Postgres(
        #[allow(dead_code)] Arc<svrkit_tests::postgres::Postgres>,
        String,
    ),
}

impl Engine {
    async fn open(&self, config: &StoreConfig) -> Arc<dyn Store> {
        match self {
            Engine::Redb(dir) => super::open(&dir.0, config).await.unwrap(),
            Engine::Postgres(_, url) => {
                let config = StoreConfig {
                    kind: StoreKind::Postgres,
                    url: url.clone(),
                    ..config.clone()
                };
                super::open(std::path::Path::new("unused"), &config)
                    .await
                    .unwrap()
            }
        }
    }
}

/// A PostgreSQL server of the test's own (stopped when the engine drops), with a database;
/// `None` (the test skips, saying so) when PostgreSQL is not installed.
async fn postgres() -> Option<Engine> {
    let server = Arc::new(svrkit_tests::postgres::Postgres::start().await?);
    let url = server.database("im").await;
    Some(Engine::Postgres(server, url))
}

/// Each case, once per engine.
macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Engine::Redb(super::TempDir::new())).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(engine) = super::postgres().await {
                        super::$case(engine).await;
                    }
                }
            )*
        }
    };
}

both!(
    reads_see_every_message_once_in_order,
    an_append_is_stored_once_per_sender_and_id_in_a_batch_later_and_after_a_restart,
    appends_are_read_back_after_a_restart,
    appends_racing_past_a_senders_quota_store_what_fits_and_the_count_survives_a_restart,
    a_section_bound_only_rises_and_survives_a_restart,
    edits_racing_past_the_member_cap_leave_the_group_within_it,
    relations_change_as_pairs_one_change_at_a_time,
    groups_owned_are_capped_and_follow_their_owner,
    accounts_and_sessions_are_kept,
    sessions_are_listed_revoked_capped_and_ended_by_a_password_change,
);

/// Moves everything at every commit, two appends at a time.
fn eager() -> StoreConfig {
    StoreConfig {
        move_at: 1,
        move_after_ms: 1,
        move_chunk: 2,
        ..StoreConfig::default()
    }
}

fn append(from: u64, id: &str, to: &[(u64, u64)]) -> Append {
    Append {
        from_uid: from,
        client_msg_id: id.into(),
        msg: Msg {
            from_uid: from,
            client_msg_id: id.to_owned().into(),
            text: format!("{id} from {from}").into(),
            ..Msg::default()
        },
        to: to.to_vec(),
        quota: None,
    }
}

/// Every message of `uid` after `after`, fetched `page` at a time.
async fn fetch_all(store: &dyn Store, uid: u64, after: u64, page: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut key = after;
    loop {
        let (msgs, more) = store.fetch(uid, key, page).await.unwrap();
        assert!(msgs.len() <= page);
        seqs.extend(msgs.iter().map(|m| m.seq));
        key = msgs.last().map_or(key, |m| m.seq);
        if !more {
            return seqs;
        }
    }
}

async fn reads_see_every_message_once_in_order(engine: Engine) {
    let store = engine.open(&eager()).await;
    // Three users, appends interleaved; each batch moves part of the log.
    let mut pending = Vec::new();
    for seq in 1..=150u64 {
        let to = [(1 + seq % 3, seq / 3 + 1)];
        pending.push(store.append(append(9, &format!("m{seq}"), &to)));
    }
    for p in pending {
        assert_eq!(p.await.unwrap(), Appended::Stored);
    }
    for uid in 1..=3 {
        let expected: Vec<u64> = (1..=150u64)
            .filter(|s| 1 + s % 3 == uid)
            .map(|s| s / 3 + 1)
            .collect();
        for page in [1, 7, 100, 1000] {
            assert_eq!(
                fetch_all(&*store, uid, 0, page).await,
                expected,
                "user {uid} page {page}"
            );
        }
        let middle = expected[20];
        assert_eq!(
            fetch_all(&*store, uid, middle, 9).await,
            expected[21..].to_vec()
        );
    }
    assert_eq!(fetch_all(&*store, 4, 0, 10).await, Vec::<u64>::new());
}

async fn an_append_is_stored_once_per_sender_and_id_in_a_batch_later_and_after_a_restart(
    engine: Engine,
) {
    {
        let store = engine.open(&eager()).await;
        // Two at once: the second is in the same batch or the next.
        let (a, b) = tokio::join!(
            store.append(append(5, "x", &[(1, 1)])),
            store.append(append(5, "x", &[(1, 2)]))
        );
        let mut results = [a.unwrap(), b.unwrap()];
        results.sort_by_key(|r| matches!(r, Appended::Duplicate(_)));
        assert_eq!(results[0], Appended::Stored);
        assert!(matches!(&results[1], Appended::Duplicate(p) if p.len() == 1));
        // The same id from another sender is another message.
        assert_eq!(
            store.append(append(6, "x", &[(1, 3)])).await.unwrap(),
            Appended::Stored
        );
        // Enough others that "x" moves into the table.
        for i in 0..10 {
            store
                .append(append(7, &format!("y{i}"), &[(2, i + 1)]))
                .await
                .unwrap();
        }
        let again = store.append(append(5, "x", &[(1, 9)])).await.unwrap();
        assert!(matches!(again, Appended::Duplicate(_)), "{again:?}");
    }
    let store = engine.open(&StoreConfig::default()).await;
    let again = store.append(append(5, "x", &[(1, 10)])).await.unwrap();
    let Appended::Duplicate(pairs) = again else {
        panic!("{again:?}")
    };
    assert_eq!(pairs.len(), 1);
    let seqs = fetch_all(&*store, 1, 0, 100).await;
    assert_eq!(seqs.len(), 2, "one message from 5, one from 6: {seqs:?}");
    assert_eq!(
        fetch_all(&*store, 2, 0, 100).await,
        (1..=10).collect::<Vec<_>>()
    );
}

async fn appends_racing_past_a_senders_quota_store_what_fits_and_the_count_survives_a_restart(
    engine: Engine,
) {
    let capped = |id: &str, to: &[(u64, u64)], quota: u64| Append {
        quota: Some(quota),
        ..append(5, id, to)
    };
    let charge = capped("m0", &[(1, 1), (2, 1)], 0).charge();
    let quota = 3 * charge + charge / 2;
    {
        let store = engine.open(&eager()).await;
        // Ten at once, each for two recipients: three fit.
        let pending: Vec<_> = (0..10)
            .map(|i| {
                let to = [(1, i + 1), (2, i + 1)];
                store.append(capped(&format!("m{i}"), &to, quota))
            })
            .collect();
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await);
        }
        let stored: Vec<u64> = (0..10u64)
            .filter(|&i| results[i as usize].as_ref().unwrap() == &Appended::Stored)
            .collect();
        // In the order they were sent, whatever batches they fell into.
        assert_eq!(stored, [0, 1, 2], "{results:?}");
        for r in &results {
            match r.as_ref().unwrap() {
                Appended::Stored => {}
                Appended::OverQuota { used, .. } => assert!(*used <= quota, "{used}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.stored_bytes(5).await.unwrap(), 3 * charge);
        assert_eq!(fetch_all(&*store, 1, 0, 100).await.len(), 3);
        // A retry of a stored one is answered, not refused, and costs nothing.
        let first = stored[0];
        let to = [(1, 50), (2, 50)];
        let again = store.append(capped(&format!("m{first}"), &to, quota));
        assert!(matches!(again.await.unwrap(), Appended::Duplicate(_)));
        // Another sender has a count of its own.
        let other = Append {
            quota: Some(charge),
            ..append(6, "o", &[(1, 60)])
        };
        assert_eq!(store.append(other).await.unwrap(), Appended::Stored);
    }
    let store = engine.open(&StoreConfig::default()).await;
    assert_eq!(store.stored_bytes(5).await.unwrap(), 3 * charge);
    let late = capped("late", &[(1, 70), (2, 70)], quota);
    let needed = late.charge();
    assert_eq!(
        store.append(late).await.unwrap(),
        Appended::OverQuota {
            used: 3 * charge,
            needed
        }
    );
    assert_eq!(store.stored_bytes(7).await.unwrap(), 0, "never sent");
}

async fn appends_are_read_back_after_a_restart(engine: Engine) {
    let never = StoreConfig {
        move_at: usize::MAX,
        move_after_ms: 3_600_000,
        ..StoreConfig::default()
    };
    {
        let store = engine.open(&never).await;
        for seq in 1..=20 {
            store
                .append(append(3, &format!("m{seq}"), &[(1, seq)]))
                .await
                .unwrap();
        }
    }
    let store = engine.open(&eager()).await;
    assert_eq!(
        fetch_all(&*store, 1, 0, 6).await,
        (1..=20).collect::<Vec<_>>()
    );
    // New appends go after them, and a later move takes both.
    store.append(append(3, "m21", &[(1, 21)])).await.unwrap();
    for i in 0..30 {
        store
            .append(append(4, &format!("z{i}"), &[(2, i + 1)]))
            .await
            .unwrap();
    }
    assert_eq!(
        fetch_all(&*store, 1, 0, 5).await,
        (1..=21).collect::<Vec<_>>()
    );
    drop(store);
    let store = engine.open(&never).await;
    assert_eq!(
        fetch_all(&*store, 1, 0, 100).await,
        (1..=21).collect::<Vec<_>>()
    );
    assert_eq!(
        fetch_all(&*store, 2, 0, 100).await,
        (1..=30).collect::<Vec<_>>()
    );
}

async fn a_section_bound_only_rises_and_survives_a_restart(engine: Engine) {
    {
        let store = engine.open(&StoreConfig::default()).await;
        assert_eq!(store.max_seq(0).await.unwrap(), 0);
        assert_eq!(store.raise_max_seq(0, 10_000).await.unwrap(), 10_000);
        assert_eq!(store.raise_max_seq(0, 5_000).await.unwrap(), 10_000);
        assert_eq!(store.raise_max_seq(1, 20_000).await.unwrap(), 20_000);
    }
    let store = engine.open(&StoreConfig::default()).await;
    assert_eq!(store.max_seq(0).await.unwrap(), 10_000);
    assert_eq!(store.max_seq(1).await.unwrap(), 20_000);
}

/// Adds `uids` while the group stays within `cap` members (the group service's rule).
fn add(uids: Vec<u64>, cap: usize) -> super::GroupEdit {
    Box::new(move |group| {
        group.members.extend(uids);
        if group.members.len() > cap {
            return Err(svrkit_runtime::Status::invalid_argument("too many"));
        }
        Ok(())
    })
}

async fn edits_racing_past_the_member_cap_leave_the_group_within_it(engine: Engine) {
    let store = engine.open(&StoreConfig::default()).await;
    let group = store.create_group(1, "g", 10).await.unwrap().unwrap();
    let (a, b) = tokio::join!(
        store.update_group(group.group_id, add(vec![2, 3], 4)),
        store.update_group(group.group_id, add(vec![4, 5], 4))
    );
    let done = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(GroupChange::Done(_))))
        .count();
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(GroupChange::Refused(_))))
        .count();
    assert_eq!((done, refused), (1, 1), "{a:?} {b:?}");
    let members = store.group(group.group_id).await.unwrap().unwrap().members;
    assert_eq!(members.len(), 3, "the refused edit left nothing");
    assert_eq!(
        store.update_group(999, add(vec![6], 4)).await.unwrap(),
        GroupChange::NoGroup
    );
}

async fn groups_owned_are_capped_and_follow_their_owner(engine: Engine) {
    {
        let store = engine.open(&StoreConfig::default()).await;
        let a = store.create_group(1, "a", 2).await.unwrap().unwrap();
        store.create_group(1, "b", 2).await.unwrap().unwrap();
        assert_eq!(
            store.create_group(1, "c", 2).await.unwrap(),
            None,
            "at the cap"
        );
        assert_eq!(store.groups_owned(1).await.unwrap(), 2);
        // Passed on: the old owner has room again, the new one owns it.
        let pass: super::GroupEdit = Box::new(|g| {
            g.members.push(2);
            g.owner_uid = 2;
            Ok(())
        });
        store.update_group(a.group_id, pass).await.unwrap();
        assert_eq!(store.groups_owned(1).await.unwrap(), 1);
        assert_eq!(store.groups_owned(2).await.unwrap(), 1);
        store.create_group(1, "c", 2).await.unwrap().unwrap();
    }
    let store = engine.open(&StoreConfig::default()).await;
    assert_eq!(
        store.groups_owned(1).await.unwrap(),
        2,
        "kept across a restart"
    );
    assert_eq!(store.groups_owned(2).await.unwrap(), 1);
}

/// Both sides of a relation change together, and concurrent changes to one pair are
/// applied one after the other (the second sees the first).
async fn relations_change_as_pairs_one_change_at_a_time(engine: Engine) {
    use super::{Edge, Link};
    let store = engine.open(&StoreConfig::default()).await;
    fn edge(link: Link) -> Edge {
        Edge {
            link,
            at_ms: 1,
            note: "hi".into(),
        }
    }
    // Each side asks the other at once: whichever comes second sees the first's request.
    fn ask((mine, _): super::Pair) -> Result<super::Pair, svrkit_runtime::Status> {
        if mine.as_ref().is_some_and(|e| e.link == Link::Received) {
            return Ok((Some(edge(Link::Contact)), Some(edge(Link::Contact))));
        }
        Ok((Some(edge(Link::Sent)), Some(edge(Link::Received))))
    }
    let (a, b) = tokio::join!(
        store.relate(1, 2, Box::new(ask)),
        store.relate(2, 1, Box::new(ask))
    );
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    let (one, two) = store.pair(1, 2).await.unwrap();
    assert_eq!(one.map(|e| e.link), Some(Link::Contact));
    assert_eq!(two.map(|e| e.link), Some(Link::Contact));
    store
        .relate(3, 1, Box::new(|_| Ok((Some(edge(Link::Blocked)), None))))
        .await
        .unwrap()
        .unwrap();
    let refused = store
        .relate(
            1,
            4,
            Box::new(|_| Err(svrkit_runtime::Status::not_found("no"))),
        )
        .await
        .unwrap();
    assert!(refused.is_err());
    let edges: Vec<(u64, Link)> = store
        .edges(1)
        .await
        .unwrap()
        .into_iter()
        .map(|(other, e)| (other, e.link))
        .collect();
    assert_eq!(
        edges,
        vec![(2, Link::Contact)],
        "3's block is 3's side only"
    );
    assert_eq!(store.edges(3).await.unwrap()[0].1.note, "hi");
    // Removing both sides.
    store
        .relate(1, 2, Box::new(|_| Ok((None, None))))
        .await
        .unwrap()
        .unwrap();
    assert!(store.edges(2).await.unwrap().is_empty());
}

async fn accounts_and_sessions_are_kept(engine: Engine) {
    {
        let store = engine.open(&StoreConfig::default()).await;
        let ann = store.create_user("ann", "hash-a").await.unwrap().unwrap();
        let ben = store.create_user("ben", "hash-b").await.unwrap().unwrap();
        assert!(ben > ann, "ids are handed out in order");
        assert_eq!(store.create_user("ann", "other").await.unwrap(), None);
        let session = super::SessionRecord {
            uid: ann,
            created_at_ms: 1,
            expires_at_ms: u64::MAX / 2,
        };
        store.put_session([7; 32], session).await.unwrap();
    }
    let store = engine.open(&StoreConfig::default()).await;
    let ann = store.user_by_name("ann").await.unwrap().unwrap();
    assert_eq!(ann.password_hash, "hash-a");
    assert_eq!(store.user_by_id(ann.uid).await.unwrap(), Some(ann.clone()));
    assert_eq!(store.user_by_name("cat").await.unwrap(), None);
    assert_eq!(store.session([7; 32]).await.unwrap().unwrap().uid, ann.uid);
    assert_eq!(store.session([8; 32]).await.unwrap(), None);
    let group = store.create_group(ann.uid, "g", 10).await.unwrap().unwrap();
    assert_eq!(store.group(group.group_id).await.unwrap(), Some(group));
    assert_eq!(store.group(999).await.unwrap(), None);
}

async fn sessions_are_listed_revoked_capped_and_ended_by_a_password_change(engine: Engine) {
    use super::{MAX_SESSIONS, Revoke, SessionRecord};
    let store = engine.open(&StoreConfig::default()).await;
    let ann = store.create_user("ann", "hash-a").await.unwrap().unwrap();
    let ben = store.create_user("ben", "hash-b").await.unwrap().unwrap();
    let far = u64::MAX / 2;
    let record = |uid, created_at_ms, expires_at_ms| SessionRecord {
        uid,
        created_at_ms,
        expires_at_ms,
    };
    let id = |n: usize| {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        id
    };
    // An expired session goes with the next login.
    store.put_session(id(0), record(ann, 1, 2)).await.unwrap();
    for n in 1..=MAX_SESSIONS + 3 {
        store
            .put_session(id(n), record(ann, 10 + n as u64, far))
            .await
            .unwrap();
    }
    store
        .put_session(id(99), record(ben, 5, far))
        .await
        .unwrap();
    let listed = store.sessions_of(ann).await.unwrap();
    let ids: Vec<[u8; 32]> = listed.iter().map(|(id, _)| *id).collect();
    let newest: Vec<[u8; 32]> = (4..=MAX_SESSIONS + 3).map(id).collect();
    assert_eq!(ids, newest, "the newest {MAX_SESSIONS}, oldest first");
    assert_eq!(store.session(id(0)).await.unwrap(), None, "expired: gone");
    assert_eq!(
        store.session(id(1)).await.unwrap(),
        None,
        "past the cap: gone"
    );
    assert_eq!(listed[0].1, record(ann, 14, far));

    // Ann cannot end Ben's session by naming it.
    assert_eq!(store.revoke(ann, Revoke::One(id(99))).await.unwrap(), 0);
    assert!(store.session(id(99)).await.unwrap().is_some());
    assert_eq!(store.revoke(ann, Revoke::One(id(4))).await.unwrap(), 1);
    assert_eq!(store.session(id(4)).await.unwrap(), None);

    store
        .set_password(ann, "hash-new", Some(id(5)))
        .await
        .unwrap();
    assert_eq!(
        store.user_by_id(ann).await.unwrap().unwrap().password_hash,
        "hash-new"
    );
    let left: Vec<[u8; 32]> = store
        .sessions_of(ann)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, vec![id(5)], "only the asking session stays");
    assert!(store.session(id(6)).await.unwrap().is_none());
    assert!(
        store.session(id(99)).await.unwrap().is_some(),
        "Ben's stays"
    );

    assert_eq!(store.revoke(ann, Revoke::AllBut(None)).await.unwrap(), 1);
    assert!(store.sessions_of(ann).await.unwrap().is_empty());
    assert!(
        store.set_password(999, "h", None).await.is_err(),
        "no such user"
    );
}

/// Two processes' committers append for one sender at once, to recipients of their own
/// (so that no inbox head orders them): the sender's quota holds across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_quota_holds_across_processes() {
    let Some(engine) = postgres().await else {
        return;
    };
    let (one, two) = (
        engine.open(&StoreConfig::default()).await,
        engine.open(&StoreConfig::default()).await,
    );
    let charge = append(5, "m000", &[(1, 1)]).charge();
    let quota = 20 * charge;
    let mut pending = Vec::new();
    for i in 0..200u64 {
        let (store, uid) = if i % 2 == 0 {
            (&one, 1000)
        } else {
            (&two, 2000)
        };
        let a = Append {
            quota: Some(quota),
            ..append(5, &format!("m{i:03}"), &[(uid + i, 1)])
        };
        pending.push(tokio::spawn(store.append(a)));
    }
    let mut stored = 0;
    for p in pending {
        match p.await.unwrap().unwrap() {
            Appended::Stored => stored += 1,
            Appended::OverQuota { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 20);
    assert_eq!(one.stored_bytes(5).await.unwrap(), quota);
}

/// A plain connection to the test's database, as another process (or an operator) has.
async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Only a shared store can be appended to from two processes at once; it refuses an append
/// below what a recipient already has, rather than make it visible out of order.
#[tokio::test]
async fn postgres_refuses_a_sequence_below_a_visible_one() {
    let Some(engine) = postgres().await else {
        return;
    };
    let store = engine.open(&StoreConfig::default()).await;
    let first = store.append(append(1, "a", &[(5, 10), (6, 3)])).await;
    assert_eq!(first.unwrap(), Appended::Stored);
    // Recipient 5 has 10 already: the whole append is refused, for 6 too.
    let late = store.append(append(2, "b", &[(6, 4), (5, 9)])).await;
    assert_eq!(late.unwrap(), Appended::Stale);
    assert_eq!(fetch_all(&*store, 6, 0, 10).await, vec![3]);
    // Allocated again, above: stored.
    let again = store.append(append(2, "b", &[(6, 11), (5, 12)])).await;
    assert_eq!(again.unwrap(), Appended::Stored);
    // In one batch, the later of two appends to the same inbox must be the higher.
    let (x, y) = tokio::join!(
        store.append(append(3, "c", &[(7, 20)])),
        store.append(append(3, "d", &[(7, 19)]))
    );
    assert_eq!(
        (x.unwrap(), y.unwrap()),
        (Appended::Stored, Appended::Stale)
    );
    assert_eq!(fetch_all(&*store, 5, 0, 10).await, vec![10, 12]);
}

/// The same message appended by two processes at once (a retry through another replica,
/// to other recipients): the one that loses the race on its idempotency key is answered
/// as a duplicate, and the appends batched with it are stored all the same.
#[tokio::test]
async fn postgres_a_duplicate_racing_in_from_another_process_fails_nothing_else() {
    let Some(engine) = postgres().await else {
        return;
    };
    let Engine::Postgres(_, url) = &engine else {
        unreachable!()
    };
    let other = connect(url).await;
    let store = engine.open(&StoreConfig::default()).await;
    // The other process's append, not yet committed.
    other
        .batch_execute(
            "BEGIN; INSERT INTO sends (from_uid, client_msg_id, to_uids, seqs)
             VALUES (1, 'k', '{5}', '{10}')",
        )
        .await
        .unwrap();
    let racing = store.append(append(1, "k", &[(6, 3)]));
    let unrelated = store.append(append(2, "z", &[(7, 1)]));
    let commit_when_waited_on = async {
        // Once this one's insert waits on the other's key, let the other commit.
        let watch = connect(url).await;
        loop {
            let waiting: i64 = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        other.batch_execute("COMMIT").await.unwrap();
    };
    let (racing, unrelated, ()) = tokio::join!(racing, unrelated, commit_when_waited_on);
    assert_eq!(racing.unwrap(), Appended::Duplicate(vec![(5, 10)]));
    assert_eq!(unrelated.unwrap(), Appended::Stored);
    assert_eq!(fetch_all(&*store, 7, 0, 10).await, vec![1]);
    assert!(fetch_all(&*store, 6, 0, 10).await.is_empty());
}

/// While inserts fail (a full disk, here a trigger that refuses them), a batch whose appends
/// were all refused before writing (over quota, duplicates) commits nothing and must not
/// make the store ready again: readiness and its alarm would flap at a stranger's will.
#[tokio::test]
async fn postgres_a_batch_that_writes_nothing_leaves_failing_writes_unready() {
    let Some(engine) = postgres().await else {
        return;
    };
    let Engine::Postgres(_, url) = &engine else {
        unreachable!()
    };
    let readiness = "test.postgres.writes";
    let health = svrkit_runtime::monitor::health::check(readiness);
    let store = super::Postgres::open(&super::PostgresConfig {
        url: url.clone(),
        connections: 2,
        readiness: readiness.into(),
    })
    .await
    .unwrap();
    use super::InboxStore as _;
    assert_eq!(
        store.append(append(1, "stored", &[(9, 1)])).await.unwrap(),
        Appended::Stored
    );
    let admin = connect(url).await;
    admin
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'could not extend file (a test)'; END $$;
             CREATE TRIGGER full_disk BEFORE INSERT ON inbox
               FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    assert!(store.append(append(1, "a", &[(9, 2)])).await.is_err());
    assert!(health.is_failing(), "unready while inserts fail");
    let over = Append {
        quota: Some(1),
        ..append(2, "b", &[(9, 3)])
    };
    assert!(matches!(
        store.append(over).await.unwrap(),
        Appended::OverQuota { .. }
    ));
    let again = store.append(append(1, "stored", &[(9, 4)])).await.unwrap();
    assert!(matches!(again, Appended::Duplicate(_)), "{again:?}");
    assert!(health.is_failing(), "still unready: nothing was written");
    admin
        .batch_execute("DROP TRIGGER full_disk ON inbox")
        .await
        .unwrap();
    assert_eq!(
        store.append(append(1, "c", &[(9, 5)])).await.unwrap(),
        Appended::Stored
    );
    assert!(!health.is_failing(), "ready once a write went through");
}

/// A file that fails every write with "no space left on device" while `full` is set, as a
/// full disk does.
#[derive(Debug)]
struct Disk {
    file: ::redb::backends::FileBackend,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl Disk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl ::redb::StorageBackend for Disk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), ::redb::BackendError> {
        self.file.lock_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), ::redb::BackendError> {
        self.file.unlock_range(start, end)
    }
}

/// A full disk fails writes cleanly and makes the store unready; once space is back, the
/// store reopens by itself and writes work again, with nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_full_disk_the_store_recovers_without_a_restart() {
    use super::{AccountStore, InboxStore};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let dir = TempDir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("im.redb");
    let full = Arc::new(AtomicBool::new(false));
    let open = {
        let (path, full) = (path.clone(), full.clone());
        move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| super::StoreError::new(e.to_string()))?;
            let disk = Disk {
                file: ::redb::backends::FileBackend::new(file)
                    .map_err(|e| super::StoreError::new(e.to_string()))?,
                full: full.clone(),
            };
            ::redb::Database::builder()
                .create_with_backend(disk)
                .map_err(|e| super::StoreError::new(e.to_string()))
        }
    };
    // The room the store asks about before it lets writes through again.
    let room = {
        let full = full.clone();
        move || {
            if full.load(Ordering::Relaxed) {
                Err(super::StoreError::new("no room"))
            } else {
                Ok(())
            }
        }
    };
    let health = svrkit_runtime::monitor::health::check(super::WRITES_CHECK);
    {
        let store = super::Redb::open_with(&eager(), open.clone(), room.clone()).unwrap();
        assert_eq!(
            store.append(append(1, "a", &[(7, 1)])).await.unwrap(),
            Appended::Stored
        );

        full.store(true, Ordering::Relaxed);
        let e = store.append(append(1, "b", &[(7, 2)])).await.unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert!(health.is_failing(), "unready while writes fail");
        // While it stays full, writes keep failing cleanly. (Reads fail too until the file
        // opens again: redb repairs a file closed after an error as it opens it, which
        // needs room.)
        assert!(store.create_user("ann", "h").await.is_err());

        full.store(false, Ordering::Relaxed);
        // The store reopens after its backoff (at most 2 s): the write goes through then.
        let mut tries = 0;
        let uid = loop {
            match store.create_user("ann", "h").await {
                Ok(uid) => break uid,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 200, "still failing: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert!(uid.is_some());
        assert!(!health.is_failing(), "ready again");
        assert_eq!(
            store.append(append(1, "c", &[(7, 2)])).await.unwrap(),
            Appended::Stored
        );
        assert_eq!(fetch_all(&store, 7, 0, 10).await, vec![1, 2]);
    }
    // And all of it is on disk.
    let store = super::Redb::open_with(&eager(), open, room).unwrap();
    assert_eq!(fetch_all(&store, 7, 0, 10).await, vec![1, 2]);
    assert!(store.user_by_name("ann").await.unwrap().is_some());
}
