//! `im.group.GroupSvr`: groups, and sending to one: a message to a group is appended to
//! every member's inbox (the sender's too), each under the member's own sequence, by one
//! idempotent `im.msg.MsgSvr.Append`.

use std::sync::Arc;

use svrkit_runtime::{CallOptions, Code, Context, Status};

use crate::home::Inboxes;
use crate::im::group::{AddReq, CreateReq, GetReq, Group, GroupSvr, MemberReq, SendReq, SendResp};
use crate::im::msg::AppendReq;
use crate::store::{GroupChange, GroupStore};

/// Members a group may have.
pub const MAX_MEMBERS: usize = crate::msg::MAX_RECIPIENTS;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;
/// Groups one user may own: past it, a user leaves or passes one on before creating more.
pub const MAX_GROUPS_OWNED: usize = 100;

/// The group service.
pub struct GroupService {
    store: Arc<dyn GroupStore>,
    msg: Inboxes,
}

impl std::fmt::Debug for GroupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupService").finish_non_exhaustive()
    }
}

impl GroupService {
    /// A group service over `store`, delivering through `msg`.
    pub fn new(store: Arc<dyn GroupStore>, msg: Inboxes) -> GroupService {
        GroupService { store, msg }
    }

    /// Applies `edit` to the group atomically; the group after, or the refusal.
    async fn edit(
        &self,
        group_id: u64,
        edit: impl FnOnce(&mut Group) -> Result<(), Status> + Send + 'static,
    ) -> Result<Group, Status> {
        match self.store.update_group(group_id, Box::new(edit)).await? {
            GroupChange::Done(group) => Ok(group),
            GroupChange::NoGroup => {
                Err(Status::new(Code::NOT_FOUND, format!("no group {group_id}")))
            }
            GroupChange::Refused(refusal) => Err(refusal),
        }
    }

    async fn get(&self, group_id: u64) -> Result<Group, Status> {
        self.store
            .group(group_id)
            .await?
            .ok_or_else(|| Status::new(Code::NOT_FOUND, format!("no group {group_id}")))
    }
}

/// Refuses anyone but the group's owner.
fn owner_only(group: &Group, by: u64) -> Result<(), Status> {
    if group.owner_uid == by {
        Ok(())
    } else {
        Err(Status::new(
            Code::PERMISSION_DENIED,
            "only the group's owner does that",
        ))
    }
}

impl GroupSvr for GroupService {
    async fn create(&self, _ctx: Context, request: CreateReq) -> Result<Group, Status> {
        if request.name.is_empty() || request.name.len() > MAX_GROUP_NAME {
            return Err(Status::new(
                Code::INVALID_ARGUMENT,
                format!("a group name is 1 to {MAX_GROUP_NAME} bytes"),
            ));
        }
        if request.owner_uid == 0 {
            return Err(Status::new(Code::INVALID_ARGUMENT, "no owner"));
        }
        self.store
            .create_group(request.owner_uid, &request.name, MAX_GROUPS_OWNED)
            .await?
            .ok_or_else(|| {
                Status::new(
                    Code::RESOURCE_EXHAUSTED,
                    format!(
                        "you own {MAX_GROUPS_OWNED} groups, the most one user may: leave one or \
                         pass it on first"
                    ),
                )
            })
    }

    async fn add(&self, _ctx: Context, request: AddReq) -> Result<Group, Status> {
        if request.uids.contains(&0) {
            return Err(Status::new(Code::INVALID_ARGUMENT, "user id 0"));
        }
        let (by, uids) = (request.by_uid, request.uids);
        self.edit(request.group_id, move |group| {
            if !group.members.contains(&by) {
                return Err(Status::new(
                    Code::PERMISSION_DENIED,
                    "only a member adds members",
                ));
            }
            for uid in uids {
                if !group.members.contains(&uid) {
                    group.members.push(uid);
                }
            }
            if group.members.len() > MAX_MEMBERS {
                return Err(Status::new(
                    Code::INVALID_ARGUMENT,
                    format!("a group has at most {MAX_MEMBERS} members"),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn leave(&self, _ctx: Context, request: MemberReq) -> Result<Group, Status> {
        let by = request.by_uid;
        self.edit(request.group_id, move |group| {
            let before = group.members.len();
            group.members.retain(|&m| m != by);
            if group.members.len() == before {
                return Err(Status::new(Code::NOT_FOUND, "not a member"));
            }
            if group.owner_uid == by {
                // The member who joined first after them; nobody, when none is left.
                group.owner_uid = group.members.first().copied().unwrap_or(0);
            }
            Ok(())
        })
        .await
    }

    async fn remove(&self, _ctx: Context, request: MemberReq) -> Result<Group, Status> {
        let (by, uid) = (request.by_uid, request.uid);
        self.edit(request.group_id, move |group| {
            owner_only(group, by)?;
            if uid == by {
                return Err(Status::new(
                    Code::INVALID_ARGUMENT,
                    "the owner leaves, or passes the group on first",
                ));
            }
            let before = group.members.len();
            group.members.retain(|&m| m != uid);
            if group.members.len() == before {
                return Err(Status::new(Code::NOT_FOUND, "not a member"));
            }
            Ok(())
        })
        .await
    }

    async fn transfer(&self, _ctx: Context, request: MemberReq) -> Result<Group, Status> {
        let (by, uid) = (request.by_uid, request.uid);
        self.edit(request.group_id, move |group| {
            owner_only(group, by)?;
            if !group.members.contains(&uid) {
                return Err(Status::new(
                    Code::NOT_FOUND,
                    "the new owner must be a member",
                ));
            }
            group.owner_uid = uid;
            Ok(())
        })
        .await
    }

    async fn get(&self, _ctx: Context, request: GetReq) -> Result<Group, Status> {
        self.get(request.group_id).await
    }

    async fn send(&self, _ctx: Context, request: SendReq) -> Result<SendResp, Status> {
        crate::msg::check_message(&request.client_msg_id, &request.text)?;
        let group = self.get(request.group_id).await?;
        if !group.members.contains(&request.from_uid) {
            return Err(Status::new(
                Code::PERMISSION_DENIED,
                "only a member sends to a group",
            ));
        }
        let append = AppendReq {
            from_uid: request.from_uid,
            from_name: request.from_name,
            to_uids: group.members.clone(),
            group_id: group.group_id,
            client_msg_id: request.client_msg_id,
            text: request.text,
            ..AppendReq::default()
        };
        let options = CallOptions {
            user_key: Some(request.from_uid),
            ..CallOptions::default()
        };
        let seqs = self.msg.append_with(&append, &options).await?.seqs;
        crate::figures::GROUP_FAN_OUT.record(group.members.len() as u64);
        let own = group
            .members
            .iter()
            .zip(&seqs)
            .find(|(uid, _)| **uid == request.from_uid)
            .map_or(0, |(_, &seq)| seq);
        Ok(SendResp {
            recipients: u32::try_from(group.members.len()).unwrap_or(u32::MAX),
            seq: own,
            ..SendResp::default()
        })
    }
}
