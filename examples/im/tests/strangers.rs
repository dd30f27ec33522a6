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
);

use support::{
    Engine, TempDir, client, config, group_add, group_create, group_send, send, start_on, user,
};
use svrkit_im::backend::{Backend, Role};
use svrkit_im::im::account::{AccountSvrClient, CheckTokenReq, LoginReq, LogoutReq};
use svrkit_im::im::gateway::{ChangePasswordReq, Credentials, GatewaySvrClient};
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
    }
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
    let metrics = svrkit_runtime::monitor::find_method(send_method).unwrap();
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
    assert!(e.message().contains("messages a minute"), "{e}");
    let refused = metrics.server_totals().responses[Code::RESOURCE_EXHAUSTED.0 as usize];
    assert!(refused > refused_before, "counted under resource_exhausted");
    // Bob has a quota of his own.
    send(&c, &bob, "alice", "my turn", "b1").await.unwrap();
}

async fn group_messages_past_the_delivery_quota_stop_the_next_sends(engine: Engine) {
    let data = TempDir::new("fanout");
    let gateway = "\n[app.gateway]\ndeliveries_per_minute = 10\n";
    let backend = start_with(&engine, &data, &format!("{gateway}{STRANGERS}")).await;
    let c = client(backend.addr().unwrap());
    let owner = user(&c, "owner").await;
    for name in ["m1", "m2", "m3"] {
        user(&c, name).await;
    }
    let group = group_create(&c, &owner, "four").await.unwrap();
    group_add(&c, &owner, group.group_id, &["m1", "m2", "m3"])
        .await
        .unwrap();
    // Four copies each: 4, 8, then 12 (the third goes into debt) ...
    for n in 0..3 {
        let sent = group_send(&c, &owner, group.group_id, "to all", &format!("g{n}"))
            .await
            .unwrap();
        assert_eq!(sent.recipients, 4);
    }
    // ... which the next sends wait out, to the group or to one.
    let e = group_send(&c, &owner, group.group_id, "again", "g3")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
    assert!(e.message().contains("deliveries"), "{e}");
    let e = send(&c, &owner, "m1", "just you", "o1").await.unwrap_err();
    assert_eq!(e.code(), Code::RESOURCE_EXHAUSTED, "{e}");
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
