//! Users' home SETs: each user's inbox lives in one SET's database, and every append to it or
//! fetch from it goes to that SET's message service.
//!
//! - **The mapping** is a jump consistent hash of the user id over the SETs listed in
//!   `[app.homes] sets` ([`home_of`]). It needs no lookup and no shared state, and adding a
//!   SET at the end moves only the users the new SET takes (about 1/n of them).
//! - **Routing** ([`Inboxes`]). The gateway and the group service call the message service
//!   through one channel per SET, each listing only that SET's replicas
//!   (`Config::channel_in_set`). An append is split by its recipients' homes, so a group's
//!   fan-out crosses SETs. A fetch goes to the fetching user's home.
//! - **A guard.** A message replica that knows its SET (`[discovery] set`) and the list
//!   refuses appends for users homed elsewhere ([`MsgService::with_home`]), so that a
//!   misrouted append can never land in the wrong database.
//! - **Moving a user between SETs** is not supported: it would need the user's inbox copied
//!   and a mapping that can say where each user is during the copy. With the hash, a user's
//!   home changes only when the SET list does, and a list change is a migration (`docs/
//!   scale-out.md`).
//!
//! [`MsgService::with_home`]: crate::msg::MsgService::with_home

use std::collections::BTreeMap;

use svrkit_runtime::client::CallOptions;
use svrkit_runtime::{Code, Status};

use crate::im::msg::{AppendReq, AppendResp, FetchReq, FetchResp, MsgSvrClient};

/// `[app.homes]`: the SETs users are homed in.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomesConfig {
    /// The SETs, in order (empty: one database for everyone, no routing). Every process
    /// of a deployment must list the same SETs in the same order.
    pub sets: Vec<String>,
}

/// The index of `uid`'s home among `sets` SETs (Lamping and Veach's jump consistent hash).
pub fn home_of(uid: u64, sets: usize) -> usize {
    let buckets = i64::try_from(sets.max(1)).unwrap_or(i64::MAX);
    let mut key = uid;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let next = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        j = next;
    }
    usize::try_from(b).unwrap_or(0)
}

/// How the gateway and the group service reach inboxes.
#[derive(Clone, Debug)]
pub enum Inboxes {
    /// One message service (and one database) for every user.
    One(MsgSvrClient),
    /// One message service per SET, in the order of `[app.homes] sets`.
    BySet(Vec<MsgSvrClient>),
}

impl Inboxes {
    fn home(&self, uid: u64) -> &MsgSvrClient {
        match self {
            Inboxes::One(client) => client,
            Inboxes::BySet(clients) => &clients[home_of(uid, clients.len())],
        }
    }

    /// Appends to every recipient's inbox, each through its home SET.
    ///
    /// # Errors
    /// The first SET's failure. The SETs that had stored their part keep it, and an append
    /// is idempotent, so the caller's retry completes the rest.
    pub async fn append_with(
        &self,
        request: &AppendReq,
        options: &CallOptions,
    ) -> Result<AppendResp, Status> {
        let clients = match self {
            Inboxes::One(client) => return client.append_with(request, options).await,
            Inboxes::BySet(clients) => clients,
        };
        let mut by_home: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, &uid) in request.to_uids.iter().enumerate() {
            by_home
                .entry(home_of(uid, clients.len()))
                .or_default()
                .push(i);
        }
        if by_home.len() == 1 {
            let (&home, _) = by_home.iter().next().expect("one");
            return clients[home].append_with(request, options).await;
        }
        let mut seqs = vec![0; request.to_uids.len()];
        let mut duplicate = false;
        for (home, positions) in by_home {
            let part = AppendReq {
                to_uids: positions.iter().map(|&i| request.to_uids[i]).collect(),
                ..request.clone()
            };
            let answer = clients[home].append_with(&part, options).await?;
            if answer.seqs.len() != positions.len() {
                return Err(Status::new(
                    Code::INTERNAL,
                    "the message service answered the wrong count",
                ));
            }
            duplicate |= answer.duplicate;
            for (&i, seq) in positions.iter().zip(answer.seqs) {
                seqs[i] = seq;
            }
        }
        Ok(AppendResp {
            seqs,
            duplicate,
            ..AppendResp::default()
        })
    }

    /// Fetches from the user's inbox, in its home SET.
    ///
    /// # Errors
    /// The message service's.
    pub async fn fetch_with(
        &self,
        request: &FetchReq,
        options: &CallOptions,
    ) -> Result<FetchResp, Status> {
        self.home(request.uid).fetch_with(request, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use svrkit_runtime::Server;

    use super::{Inboxes, home_of};
    use crate::im::msg::{AppendReq, FetchReq, MsgSvrClient, MsgSvrServer};
    use crate::im::seq::{
        SeqAllocSvrClient, SeqAllocSvrServer, SeqStoreSvrClient, SeqStoreSvrServer,
    };
    use crate::msg::{MsgConfig, MsgService};
    use crate::seq::route::Sequences;
    use crate::seq::{SeqAlloc, SeqStoreService, StoreBounds};
    use crate::store::{Redb, StoreConfig};

    /// The first `n` user ids homed in SET `home` of 2.
    fn homed(home: usize, n: usize) -> Vec<u64> {
        (1..).filter(|&u| home_of(u, 2) == home).take(n).collect()
    }

    #[tokio::test]
    async fn a_fan_out_is_split_by_home_and_each_part_lands_in_its_sets_store_only() {
        let dir = std::env::temp_dir().join(format!("svrkit-im-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let open =
            |name: &str| Arc::new(Redb::open(&dir.join(name), &StoreConfig::default()).unwrap());
        // One allocator for both SETs, as in a deployment.
        let seq_store = open("seq");
        let seq = Server::builder()
            .add_service(SeqStoreSvrServer::new(SeqStoreService::new(seq_store)))
            .build();
        let alloc = SeqAlloc::new(Arc::new(StoreBounds(SeqStoreSvrClient::new(
            seq.local_channel(),
        ))));
        let alloc = Server::builder()
            .add_service(SeqAllocSvrServer::new(alloc))
            .build();
        let stores = [open("set-a"), open("set-b")];
        let sets: Vec<MsgSvrClient> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let sequences = Sequences::One(SeqAllocSvrClient::new(alloc.local_channel()));
                let service = MsgService::new(store.clone(), sequences, &MsgConfig::default())
                    .with_home(i, 2);
                let server = Server::builder()
                    .add_service(MsgSvrServer::new(service))
                    .build();
                MsgSvrClient::new(server.local_channel())
            })
            .collect();
        let inboxes = Inboxes::BySet(sets.clone());
        let (a, b) = (homed(0, 2), homed(1, 2));
        let members = vec![a[0], b[0], a[1], b[1]];
        let request = AppendReq {
            from_uid: a[0],
            to_uids: members.clone(),
            group_id: 9,
            client_msg_id: "fan-out-1".into(),
            text: "to both SETs".into(),
            ..AppendReq::default()
        };
        let options = svrkit_runtime::CallOptions::default();
        let first = inboxes.append_with(&request, &options).await.unwrap();
        assert_eq!(first.seqs.len(), 4);
        assert!(!first.duplicate);
        // Repeated (a client that was not answered): the same sequences, stored once.
        let again = inboxes.append_with(&request, &options).await.unwrap();
        assert_eq!(again.seqs, first.seqs);
        assert!(again.duplicate);
        for (i, &uid) in members.iter().enumerate() {
            let fetch = FetchReq {
                uid,
                limit: 10,
                ..FetchReq::default()
            };
            let got = inboxes.fetch_with(&fetch, &options).await.unwrap();
            assert_eq!(got.msgs.len(), 1, "uid {uid}");
            assert_eq!(got.msgs[0].seq, first.seqs[i]);
            // The other SET holds nothing for this user, and refuses to be asked.
            let other = &sets[1 - home_of(uid, 2)];
            let refused = other.fetch_with(&fetch, &options).await.unwrap_err();
            assert_eq!(
                refused.code(),
                svrkit_runtime::Code::INVALID_ARGUMENT,
                "{refused}"
            );
        }
        let misrouted = AppendReq {
            to_uids: vec![b[0]],
            client_msg_id: "misrouted".into(),
            ..request.clone()
        };
        assert!(sets[0].append_with(&misrouted, &options).await.is_err());
        drop((inboxes, sets, stores, alloc, seq));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn homes_spread_evenly_and_a_new_set_takes_only_its_share() {
        let users = 100_000u64;
        let mut counts = [0u64; 3];
        let mut moved = 0u64;
        for uid in 1..=users {
            let two = home_of(uid, 2);
            let three = home_of(uid, 3);
            counts[three] += 1;
            if two != three {
                // Only to the new SET, never between the old ones.
                assert_eq!(three, 2, "uid {uid} moved from {two} to {three}");
                moved += 1;
            }
        }
        for c in counts {
            assert!(c.abs_diff(users / 3) < users / 100, "{counts:?}");
        }
        assert!(moved.abs_diff(users / 3) < users / 100, "{moved} moved");
        assert_eq!(home_of(7, 1), 0);
    }
}
