//! The backend attacked as a stranger would: guessing passwords, probing names, stealing the
//! data files, holding on to a token after logout or a password change, sending and fanning
//! out without end.

mod support;

on_both_engines!(
    guessing_a_password_locks_the_name_even_for_the_right_password,
    guessing_across_names_from_one_address_locks_the_address_and_no_other,
    registrations_from_one_address_are_capped_whether_the_name_is_taken_or_not,
    logout_ends_a_session_at_once_and_everywhere_ends_them_all,
    a_password_change_ends_the_other_sessions_and_the_old_password,
    a_spam_message_to_an_unknown_name_says_spam_not_unknown,
    a_strangers_sends_are_held_to_the_quota_and_counted,
    group_messages_past_the_delivery_quota_stop_the_next_sends,
    a_senders_stored_bytes_are_capped_and_bystanders_still_send,
    a_strangers_first_message_is_a_request_the_other_accepts_or_declines,
    a_block_is_silent_and_stops_requests_and_messages,
    groups_take_only_contacts_members_leave_and_owners_remove_and_pass_on,
);

use support::{
    Engine, TempDir, befriend, client, config, group_add, group_create, group_send, send, start_on,
    sync_all, user,
};
use svrkit_im::backend::{Backend, Role};
use svrkit_im::im::account::Link;
use svrkit_im::im::account::{AccountSvrClient, CheckTokenReq, LoginReq, LogoutReq};
use svrkit_im::im::gateway::{ChangePasswordReq, Credentials, GatewaySvrClient};
use svrkit_im::im::gateway::{ContactReq, GroupMemberReq};
use svrkit_runtime::{Code, FastStr, Status};

/// The gateway trusts nobody: the test's calls come from a stranger at 127.0.0.1.
const STRANGERS: &str = "\n[trust]\npeers = []\n";

fn credentials(name: &str, password: &str) -> Credentials {
    Credentials {
        name: FastStr::new(name),
        password: FastStr::new(password),
        ..Credentials::default()
    }
}

fn code<T>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::OK,
        Err(e) => e.code(),
    }
}

async fn login(c: &GatewaySvrClient, name: &str, password: &str) -> Result<FastStr, Status> {
    c.login(&credentials(name, password)).await.map(|l| l.token)
}

async fn guessing_a_password_locks_the_name_even_for_the_right_password(engine: Engine) {
    let data = TempDir::new("guess");
    let account = "login_free_failures = 5\nlogin_lock_ms = 600000";
    let backend = start_on(&engine, &data, account).await;
    let c = client(backend.addr().unwrap());
    user(&c, "alice").await;
    user(&c, "bob").await;
    let mut refused_as_wrong = 0;
    let mut locked = None;
    for guess in 0..20 {
        match login(&c, "alice", &format!("guess-{guess}")).await {
            Err(e) if e.code() == Code::UNAUTHENTICATED => refused_as_wrong += 1,
            Err(e) if e.code() == Code::RESOURCE_EXHAUSTED => {
                locked = Some(e);
                break;
            }
            other => panic!("guess {guess}: {other:?}"),
        }
    }
    assert_eq!(refused_as_wrong, 5, "five guesses, then the lock");
    let locked = locked.expect("the name is locked");
    assert!(locked.message().contains("try again in 600 s"), "{locked}");
    // The right password waits for the lock too: a guesser cannot tell it from a wrong one.
    let right = login(&c, "alice", "alice-password").await.unwrap_err();
    assert_eq!(right.code(), Code::RESOURCE_EXHAUSTED, "{right}");
    // An unknown name is locked the same way (locks do not tell which names exist).
    for guess in 0..5 {
        let e = login(&c, "nobody", &format!("guess-{guess}")).await;
        assert_eq!(code(e), Code::UNAUTHENTICATED);
    }
    assert_eq!(
        code(login(&c, "nobody", "x-password").await),
        Code::RESOURCE_EXHAUSTED
    );
    // Another name from the same address is not touched.
    login(&c, "bob", "bob-password").await.expect("bob logs in");
}

async fn guessing_across_names_from_one_address_locks_the_address_and_no_other(engine: Engine) {
    let data = TempDir::new("spray");
    let account = "login_free_failures = 100\nlogin_free_failures_per_address = 3\n\
                   login_lock_ms = 600000";
    let backend = start_on(&engine, &data, &format!("{account}{STRANGERS}")).await;
    let c = client(backend.addr().unwrap());
    for name in ["ann", "ben", "cat", "dan"] {
        user(&c, name).await;
    }
    // A password sprayed over names: one guess each.
    for name in ["ann", "ben", "cat"] {
        assert_eq!(
            code(login(&c, name, "password1").await),
            Code::UNAUTHENTICATED
        );
    }
    let e = login(&c, "dan", "dan-password").await.unwrap_err();
    assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
    assert!(e.message().contains("address"), "{e}");
    // A gateway elsewhere, trusted, names another client's address: that one is let in.
    let account = AccountSvrClient::new(backend.internal_channel().unwrap());
    let elsewhere = LoginReq {
        name: "dan".into(),
        password: "dan-password".into(),
        client: "192.0.2.44".into(),
        ..LoginReq::default()
    };
    account.login(&elsewhere).await.expect("another address");
}

async fn registrations_from_one_address_are_capped_whether_the_name_is_taken_or_not(
    engine: Engine,
) {
    let data = TempDir::new("register");
    let account = "registrations_per_address_per_hour = 3";
    let backend = start_on(&engine, &data, &format!("{account}{STRANGERS}")).await;
    let c = client(backend.addr().unwrap());
    c.register(&credentials("eve1", "eve-password"))
        .await
        .unwrap();
    let taken = c.register(&credentials("eve1", "eve-password")).await;
    assert_eq!(code(taken), Code::INVALID_ARGUMENT);
    c.register(&credentials("eve2", "eve-password"))
        .await
        .unwrap();
    // Probing whether a name exists costs the same budget as creating one.
    for name in ["eve3", "eve1"] {
        let e = c
            .register(&credentials(name, "eve-password"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{name}: {e}");
        assert!(e.message().contains("registrations"), "{e}");
    }
}

async fn logout_ends_a_session_at_once_and_everywhere_ends_them_all(engine: Engine) {
    let data = TempDir::new("logout");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    user(&c, "bob").await;
    let second = login(&c, "alice", "alice-password").await.unwrap();
    let third = login(&c, "alice", "alice-password").await.unwrap();
    // Both work, and this gateway has them checked (cached).
    send(&c, &alice, "bob", "one", "m1").await.unwrap();
    let as_second = support::User {
        token: second.clone(),
        ..alice.clone()
    };
    let as_third = support::User {
        token: third.clone(),
        ..alice.clone()
    };
    send(&c, &as_second, "bob", "two", "m2").await.unwrap();
    send(&c, &as_third, "bob", "three", "m3").await.unwrap();

    let listed = c
        .sessions(&CheckTokenReq {
            token: second.clone(),
            ..CheckTokenReq::default()
        })
        .await
        .unwrap()
        .sessions;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().filter(|s| s.current).count(), 1);
    assert!(
        listed.iter().all(|s| s.token.is_empty()),
        "no tokens listed"
    );

    let logout = |token: &FastStr, id: &str, everywhere: bool| LogoutReq {
        token: token.clone(),
        id: FastStr::new(id),
        everywhere,
        ..LogoutReq::default()
    };
    assert_eq!(
        c.logout(&logout(&alice.token, "", false))
            .await
            .unwrap()
            .ended,
        1
    );
    let e = send(&c, &alice, "bob", "after", "m4").await.unwrap_err();
    assert_eq!(e.code(), Code::UNAUTHENTICATED, "{e}");
    // Ending another session by its id, from the list.
    let current = listed.iter().find(|s| s.current).unwrap();
    let other = listed
        .iter()
        .find(|s| !s.current && s.created_at_ms >= current.created_at_ms)
        .expect("the third session");
    assert_eq!(
        c.logout(&logout(&second, &other.id, false))
            .await
            .unwrap()
            .ended,
        1
    );
    assert_eq!(
        code(send(&c, &as_third, "bob", "after", "m5").await),
        Code::UNAUTHENTICATED
    );
    send(&c, &as_second, "bob", "still", "m6").await.unwrap();
    // Everywhere: the last one too.
    assert_eq!(c.logout(&logout(&second, "", true)).await.unwrap().ended, 1);
    assert_eq!(
        code(send(&c, &as_second, "bob", "after", "m7").await),
        Code::UNAUTHENTICATED
    );
    // The account service agrees (no gateway cache in between).
    let account = AccountSvrClient::new(backend.internal_channel().unwrap());
    for token in [&alice.token, &second, &third] {
        let check = CheckTokenReq {
            token: token.clone(),
            ..CheckTokenReq::default()
        };
        assert_eq!(
            code(account.check_token(&check).await),
            Code::UNAUTHENTICATED
        );
    }
}

async fn a_password_change_ends_the_other_sessions_and_the_old_password(engine: Engine) {
    let data = TempDir::new("password");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    user(&c, "bob").await;
    let thief = support::User {
        token: login(&c, "alice", "alice-password").await.unwrap(),
        ..alice.clone()
    };
    send(&c, &thief, "bob", "stolen", "t1").await.unwrap();
    let change = |old: &str, new: &str| ChangePasswordReq {
        token: alice.token.clone(),
        old_password: FastStr::new(old),
        new_password: FastStr::new(new),
        ..ChangePasswordReq::default()
    };
    let e = c
        .change_password(&change("wrong-password", "new-password"))
        .await;
    assert_eq!(code(e), Code::UNAUTHENTICATED);
    let short = c.change_password(&change("alice-password", "short")).await;
    assert_eq!(code(short), Code::INVALID_ARGUMENT);
    c.change_password(&change("alice-password", "new-password"))
        .await
        .unwrap();
    assert_eq!(
        code(send(&c, &thief, "bob", "again", "t2").await),
        Code::UNAUTHENTICATED,
        "the other session ended"
    );
    send(&c, &alice, "bob", "mine", "a1").await.unwrap();
    assert_eq!(
        code(login(&c, "alice", "alice-password").await),
        Code::UNAUTHENTICATED
    );
    login(&c, "alice", "new-password").await.unwrap();
}

async fn a_spam_message_to_an_unknown_name_says_spam_not_unknown(engine: Engine) {
    let data = TempDir::new("probe");
    let backend = start_on(&engine, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    user(&c, "bob").await;
    for to in ["bob", "no-such-user"] {
        let e = send(&c, &alice, to, "FREE MONEY, click", "s1")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PERMISSION_DENIED, "{to}: {e}");
        assert!(
            e.message().contains("\"free money\""),
            "the phrase as configured: {e}"
        );
    }
    // A contact request's note is checked as a message is.
    let note = ContactReq {
        token: alice.token.clone(),
        name: "bob".into(),
        note: "free-money here".into(),
        ..ContactReq::default()
    };
    assert_eq!(
        code(c.contact_request(&note).await),
        Code::PERMISSION_DENIED
    );
}

async fn start_with(engine: &Engine, data: &TempDir, extra: &str) -> Backend {
    let extra = format!("{}{extra}", engine.store_keys());
    Backend::start(&Role::ALL, &config(&data.0, "", &extra))
        .await
        .expect("backend starts")
}

async fn a_strangers_sends_are_held_to_the_quota_and_counted(engine: Engine) {
    let data = TempDir::new("quota");
    let gateway = "\n[app.gateway]\nsends_per_minute = 5\n";
    let backend = start_with(&engine, &data, &format!("{gateway}{STRANGERS}")).await;
    let c = client(backend.addr().unwrap());
    let (alice, bob) = (user(&c, "alice").await, user(&c, "bob").await);
    let send_method = &svrkit_im::im::gateway::GatewaySvrClient::DESCRIPTOR.methods[2];
    let metrics = svrkit_runtime::metrics::find_method(send_method).unwrap();
    let refused_before = metrics.server_totals().responses[Code::RESOURCE_EXHAUSTED.0 as usize];
    for n in 0..5 {
        send(&c, &alice, "bob", "hi", &format!("q{n}"))
            .await
            .unwrap();
    }
    let e = send(&c, &alice, "bob", "one too many", "q5")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
    assert!(e.message().contains("messages and contact"), "{e}");
    let refused = metrics.server_totals().responses[Code::RESOURCE_EXHAUSTED.0 as usize];
    assert!(refused > refused_before, "counted under resource_exhausted");
    // Bob has a quota of his own, which asking about names spends as sending does.
    send(&c, &bob, "alice", "my turn", "b1").await.unwrap();
    for n in 0..4 {
        let probe = contact_req(&bob, &format!("nobody{n}"), false);
        assert_eq!(code(c.contact_request(&probe).await), Code::NOT_FOUND);
    }
    let e = c
        .contact_request(&contact_req(&bob, "nobody9", false))
        .await;
    assert_eq!(code(e), Code::RESOURCE_EXHAUSTED);
}

async fn group_messages_past_the_delivery_quota_stop_the_next_sends(engine: Engine) {
    let data = TempDir::new("fanout");
    let gateway = "\n[app.gateway]\ndeliveries_per_minute = 11\n";
    let backend = start_with(&engine, &data, &format!("{gateway}{STRANGERS}")).await;
    let c = client(backend.addr().unwrap());
    let owner = user(&c, "owner").await;
    for name in ["m1", "m2", "m3"] {
        user(&c, name).await;
    }
    for name in ["m1", "m2", "m3"] {
        let member = support::User {
            name: name.into(),
            token: login(&c, name, &format!("{name}-password")).await.unwrap(),
            uid: 0,
        };
        befriend(&c, &owner, &member).await;
    }
    let id = group_create(&c, &owner, "four").await.unwrap().group_id;
    group_add(&c, &owner, id, &["m1", "m2", "m3"])
        .await
        .unwrap();
    // The three contact requests were a copy each: 8 of the 11 are left, two sends to
    // the four members, however many are sent at once.
    let sends = (0..5).map(|n| {
        let (c, owner) = (c.clone(), owner.clone());
        async move { group_send(&c, &owner, id, "to all", &format!("g{n}")).await }
    });
    let results = futures_join(sends).await;
    let sent = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(sent, 2, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
        assert!(e.message().contains("deliveries"), "{e}");
    }
    let e = send(&c, &owner, "m1", "just you", "o1").await.unwrap_err();
    assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
}

async fn a_senders_stored_bytes_are_capped_and_bystanders_still_send(engine: Engine) {
    let data = TempDir::new("storage");
    // Four copies of a 4,000-byte message, and a little room left.
    let msg = "\n[app.msg]\nstorage_bytes_per_user = 20000\n";
    let backend = start_with(&engine, &data, msg).await;
    let c = client(backend.addr().unwrap());
    let (alice, bob) = (user(&c, "alice").await, user(&c, "bob").await);
    let send_method = &svrkit_im::im::gateway::GatewaySvrClient::DESCRIPTOR.methods[2];
    let metrics = svrkit_runtime::metrics::find_method(send_method).unwrap();
    let refused_before = metrics.server_totals().responses[Code::RESOURCE_EXHAUSTED.0 as usize];
    let big = "x".repeat(4000);
    for n in 0..4 {
        send(&c, &alice, "bob", &big, &format!("s{n}"))
            .await
            .unwrap();
    }
    let e = send(&c, &alice, "bob", &big, "s4").await.unwrap_err();
    assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
    assert!(e.message().contains("storage quota"), "{e}");
    let refused = metrics.server_totals().responses[Code::RESOURCE_EXHAUSTED.0 as usize];
    assert!(refused > refused_before, "counted under resource_exhausted");
    // Bytes, not messages: a short one still fits. A retry of a stored one costs nothing.
    send(&c, &alice, "bob", "short", "s5").await.unwrap();
    send(&c, &alice, "bob", &big, "s0").await.unwrap();
    // The quota is the sender's: bob, whose inbox holds all of it, sends as before.
    send(&c, &bob, "alice", &big, "b0").await.unwrap();
    // (The count surviving a restart is the store tests' to show.)
    let inbox = sync_all(&c, &bob, 0).await;
    let ids: Vec<&str> = inbox.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids, ["s0", "s1", "s2", "s3", "s5"]);
    backend.shutdown().await;
}

/// Runs the futures at once; their results in order.
async fn futures_join<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn contact_req(user: &support::User, name: &str, yes: bool) -> ContactReq {
    ContactReq {
        token: user.token.clone(),
        name: FastStr::new(name),
        yes,
        ..ContactReq::default()
    }
}

/// `user`'s side of each relation, by the other's name.
async fn links(c: &GatewaySvrClient, user: &support::User) -> Vec<(String, Link, String)> {
    let list = c
        .contacts(&CheckTokenReq {
            token: user.token.clone(),
            ..CheckTokenReq::default()
        })
        .await
        .unwrap();
    list.contacts
        .into_iter()
        .map(|e| (e.name.to_string(), e.link, e.note.to_string()))
        .collect()
}

async fn a_strangers_first_message_is_a_request_the_other_accepts_or_declines(engine: Engine) {
    let data = TempDir::new("consent");
    let backend = start_with(&engine, &data, STRANGERS).await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;
    let carol = user(&c, "carol").await;
    let first = send(&c, &alice, "bob", "hi, I'm alice", "a1")
        .await
        .unwrap();
    assert!(first.request && first.seq == 0, "{first:?}");
    assert!(sync_all(&c, &bob, 0).await.is_empty(), "nothing delivered");
    assert_eq!(
        links(&c, &bob).await,
        [("alice".into(), Link::RECEIVED, "hi, I'm alice".into())]
    );
    // Asking again only updates the note.
    assert!(
        send(&c, &alice, "bob", "please?", "a2")
            .await
            .unwrap()
            .request
    );
    assert_eq!(links(&c, &bob).await[0].2, "please?");
    assert_eq!(links(&c, &alice).await[0].1, Link::SENT);
    // Bob accepts: messages flow both ways.
    c.contact_answer(&contact_req(&bob, "alice", true))
        .await
        .unwrap();
    let sent = send(&c, &alice, "bob", "thanks", "a3").await.unwrap();
    assert!(!sent.request && sent.seq > 0);
    assert!(
        !send(&c, &bob, "alice", "welcome", "b1")
            .await
            .unwrap()
            .request
    );
    assert_eq!(sync_all(&c, &bob, 0).await.len(), 1);
    // Carol declines: the request is gone from both sides.
    send(&c, &alice, "carol", "hello?", "a4").await.unwrap();
    c.contact_answer(&contact_req(&carol, "alice", false))
        .await
        .unwrap();
    assert!(links(&c, &carol).await.is_empty());
    assert!(links(&c, &alice).await.iter().all(|(n, _, _)| n != "carol"));
    // Answering a request that is not there.
    let none = c.contact_answer(&contact_req(&carol, "bob", true)).await;
    assert_eq!(code(none), Code::NOT_FOUND);
    // Two who ask each other become contacts.
    c.contact_request(&contact_req(&bob, "carol", false))
        .await
        .unwrap();
    let both = c
        .contact_request(&contact_req(&carol, "bob", false))
        .await
        .unwrap();
    assert_eq!(both.link, Link::CONTACT);
    // Removing ends it for both.
    c.contact_remove(&contact_req(&bob, "alice", false))
        .await
        .unwrap();
    assert!(
        send(&c, &alice, "bob", "still there?", "a5")
            .await
            .unwrap()
            .request
    );
}

async fn a_block_is_silent_and_stops_requests_and_messages(engine: Engine) {
    let data = TempDir::new("block");
    let backend = start_with(&engine, &data, STRANGERS).await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;
    let mallory = user(&c, "mallory").await;
    c.contact_block(&contact_req(&alice, "mallory", true))
        .await
        .unwrap();
    // Mallory is not told: the request looks sent, and never arrives.
    let sent = send(&c, &mallory, "alice", "it's me", "m1").await.unwrap();
    assert!(sent.request);
    assert_eq!(
        links(&c, &alice).await,
        [("mallory".into(), Link::BLOCKED, String::new())]
    );
    assert_eq!(links(&c, &mallory).await[0].1, Link::SENT);
    // A contact who is blocked can no longer message.
    befriend(&c, &alice, &bob).await;
    send(&c, &bob, "alice", "hi", "b1").await.unwrap();
    c.contact_block(&contact_req(&alice, "bob", true))
        .await
        .unwrap();
    assert!(
        send(&c, &bob, "alice", "hello?", "b2")
            .await
            .unwrap()
            .request
    );
    assert_eq!(sync_all(&c, &alice, 0).await.len(), 1, "only the first");
    // The blocker cannot ask while blocking.
    let e = c.contact_request(&contact_req(&alice, "bob", false)).await;
    assert_eq!(code(e), Code::PERMISSION_DENIED);
    c.contact_block(&contact_req(&alice, "bob", false))
        .await
        .unwrap();
    assert!(links(&c, &alice).await.iter().all(|(n, _, _)| n != "bob"));
}

async fn groups_take_only_contacts_members_leave_and_owners_remove_and_pass_on(engine: Engine) {
    let data = TempDir::new("groups");
    let backend = start_with(&engine, &data, STRANGERS).await;
    let c = client(backend.addr().unwrap());
    let owner = user(&c, "owner").await;
    let ann = user(&c, "ann").await;
    let ben = user(&c, "ben").await;
    user(&c, "eve").await;
    let id = group_create(&c, &owner, "club").await.unwrap().group_id;
    let e = group_add(&c, &owner, id, &["eve"]).await.unwrap_err();
    assert_eq!(e.code(), Code::PERMISSION_DENIED, "{e}");
    assert!(e.message().contains("not your contact"), "{e}");
    befriend(&c, &owner, &ann).await;
    befriend(&c, &owner, &ben).await;
    let group = group_add(&c, &owner, id, &["ann", "ben"]).await.unwrap();
    assert_eq!(group.members, ["owner", "ann", "ben"]);
    let member = |who: &support::User, name: &str| GroupMemberReq {
        token: who.token.clone(),
        group_id: id,
        name: FastStr::new(name),
        ..GroupMemberReq::default()
    };
    // Only the owner removes and passes on.
    let e = c.group_remove(&member(&ann, "ben")).await;
    assert_eq!(code(e), Code::PERMISSION_DENIED);
    let after = c.group_remove(&member(&owner, "ben")).await.unwrap();
    assert_eq!(after.members, ["owner", "ann"]);
    assert!(group_send(&c, &ben, id, "still in?", "b1").await.is_err());
    let after = c.group_transfer(&member(&owner, "ann")).await.unwrap();
    assert_eq!(after.owner, "ann");
    let e = c.group_remove(&member(&owner, "ann")).await;
    assert_eq!(code(e), Code::PERMISSION_DENIED);
    // Members leave; an owner who leaves passes the group on.
    let after = c.group_leave(&member(&ann, "")).await.unwrap();
    assert_eq!(after.members, ["owner"]);
    assert_eq!(after.owner, "owner");
    let after = c.group_leave(&member(&owner, "")).await.unwrap();
    assert!(after.members.is_empty() && after.owner.is_empty());
    assert_eq!(
        code(c.group_leave(&member(&owner, "")).await),
        Code::NOT_FOUND
    );
}

/// A copy of the data files logs nobody in: the store keeps no token, raw or in hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_files_hold_no_usable_token() {
    let data = TempDir::new("tokens");
    let backend = start_on(&Engine::Redb, &data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let tokens = [
        alice.token.clone(),
        login(&c, "alice", "alice-password").await.unwrap(),
    ];
    drop(c);
    drop(backend);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&data.0).unwrap() {
        files.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!files.is_empty());
    for token in &tokens {
        let raw = svrkit_im::account::parse_token(token).unwrap();
        for file in &files {
            assert!(!contains(file, &raw), "the raw token is in the store");
            assert!(
                !contains(file, token.as_bytes()),
                "the hex token is in the store"
            );
        }
    }
    // What the store does keep, the token's SHA-256, is found: the search looks in the
    // right place.
    let id = svrkit_im::account::session_id(&svrkit_im::account::parse_token(&tokens[0]).unwrap());
    assert!(files.iter().any(|f| contains(f, &id)));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
