//! The embedded store, with thresholds that move every batch into the inbox table, so that
//! reads cross the two tiers, and reopened on the same directory, as after a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Append, Appended, GroupChange, GroupStore, InboxStore, Redb, SeqStore, StoreConfig};
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
    }
}

/// Every message of `uid` after `after`, fetched `page` at a time.
async fn fetch_all(store: &Redb, uid: u64, after: u64, page: usize) -> Vec<u64> {
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

#[tokio::test]
async fn reads_see_every_message_once_in_order_across_the_log_and_the_table() {
    let dir = TempDir::new();
    let store = Redb::open(&dir.0, &eager()).unwrap();
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
                fetch_all(&store, uid, 0, page).await,
                expected,
                "user {uid} page {page}"
            );
        }
        let middle = expected[20];
        assert_eq!(
            fetch_all(&store, uid, middle, 9).await,
            expected[21..].to_vec()
        );
    }
    assert_eq!(fetch_all(&store, 4, 0, 10).await, Vec::<u64>::new());
}

#[tokio::test]
async fn an_append_is_stored_once_per_sender_and_id_in_a_batch_after_a_move_and_after_a_restart() {
    let dir = TempDir::new();
    {
        let store = Redb::open(&dir.0, &eager()).unwrap();
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
    let store = Redb::open(&dir.0, &StoreConfig::default()).unwrap();
    let again = store.append(append(5, "x", &[(1, 10)])).await.unwrap();
    let Appended::Duplicate(pairs) = again else {
        panic!("{again:?}")
    };
    assert_eq!(pairs.len(), 1);
    let seqs = fetch_all(&store, 1, 0, 100).await;
    assert_eq!(seqs.len(), 2, "one message from 5, one from 6: {seqs:?}");
    assert_eq!(
        fetch_all(&store, 2, 0, 100).await,
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn appends_not_yet_moved_are_read_back_from_the_log_after_a_restart() {
    let dir = TempDir::new();
    let never = StoreConfig {
        move_at: usize::MAX,
        move_after_ms: 3_600_000,
        ..StoreConfig::default()
    };
    {
        let store = Redb::open(&dir.0, &never).unwrap();
        for seq in 1..=20 {
            store
                .append(append(3, &format!("m{seq}"), &[(1, seq)]))
                .await
                .unwrap();
        }
    }
    let store = Redb::open(&dir.0, &eager()).unwrap();
    assert_eq!(
        fetch_all(&store, 1, 0, 6).await,
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
        fetch_all(&store, 1, 0, 5).await,
        (1..=21).collect::<Vec<_>>()
    );
    drop(store);
    let store = Redb::open(&dir.0, &never).unwrap();
    assert_eq!(
        fetch_all(&store, 1, 0, 100).await,
        (1..=21).collect::<Vec<_>>()
    );
    assert_eq!(
        fetch_all(&store, 2, 0, 100).await,
        (1..=30).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_section_bound_only_rises_and_survives_a_restart() {
    let dir = TempDir::new();
    {
        let store = Redb::open(&dir.0, &StoreConfig::default()).unwrap();
        assert_eq!(store.max_seq(0).await.unwrap(), 0);
        assert_eq!(store.raise_max_seq(0, 10_000).await.unwrap(), 10_000);
        assert_eq!(store.raise_max_seq(0, 5_000).await.unwrap(), 10_000);
        assert_eq!(store.raise_max_seq(1, 20_000).await.unwrap(), 20_000);
    }
    let store = Redb::open(&dir.0, &StoreConfig::default()).unwrap();
    assert_eq!(store.max_seq(0).await.unwrap(), 10_000);
    assert_eq!(store.max_seq(1).await.unwrap(), 20_000);
}

#[tokio::test]
async fn adds_racing_past_the_member_cap_leave_the_group_within_it() {
    let dir = TempDir::new();
    let store = Redb::open(&dir.0, &StoreConfig::default()).unwrap();
    let group = store.create_group(1, "g").await.unwrap();
    let (a, b) = tokio::join!(
        store.add_members(group.group_id, 1, vec![2, 3], 4),
        store.add_members(group.group_id, 1, vec![4, 5], 4)
    );
    let done = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(GroupChange::Done(_))))
        .count();
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(GroupChange::TooMany)))
        .count();
    assert_eq!((done, refused), (1, 1), "{a:?} {b:?}");
    assert_eq!(
        store
            .group(group.group_id)
            .await
            .unwrap()
            .unwrap()
            .members
            .len(),
        3
    );
    assert_eq!(
        store
            .add_members(group.group_id, 9, vec![6], 4)
            .await
            .unwrap(),
        GroupChange::NotMember
    );
}
