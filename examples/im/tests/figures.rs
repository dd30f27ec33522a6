//! The backend's own figures (business metrics) count exactly what a scripted run did, on
//! `/metrics` as a scraper reads it. One test in its own binary: the figures are the
//! process's.

mod support;

use std::time::Duration;

use support::{TempDir, client, group_add, group_create, group_send, send, start, sync, user};

/// The value of the sample `name` (with its labels, as written) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_metrics_count_what_the_backend_did() {
    let data = TempDir::new("figures");
    let backend = start(&data, "").await;
    let c = client(backend.addr().unwrap());
    let alice = user(&c, "alice").await;
    let bob = user(&c, "bob").await;
    let carol = user(&c, "carol").await;

    for i in 0..5 {
        send(&c, &alice, "bob", "hi", &format!("d{i}"))
            .await
            .unwrap();
    }
    // A repeat of a message stored already is not a new one.
    send(&c, &alice, "bob", "hi", "d0").await.unwrap();

    let group = group_create(&c, &alice, "three").await.unwrap();
    group_add(&c, &alice, group.group_id, &["bob", "carol"])
        .await
        .unwrap();
    for i in 0..2 {
        group_send(&c, &bob, group.group_id, "all", &format!("g{i}"))
            .await
            .unwrap();
    }

    // A long poll parks until a message comes.
    let key = support::sync_all(&c, &carol, 0)
        .await
        .last()
        .map_or(0, |m| m.seq);
    let poll = tokio::spawn({
        let (c, carol) = (c.clone(), carol.clone());
        async move { sync(&c, &carol, key, Duration::from_secs(20)).await }
    });
    let parked = || svrkit_runtime::monitor::exposition::encode();
    tokio::time::timeout(Duration::from_secs(10), async {
        while sample(&parked(), "im_long_polls_parked") != 1.0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the long poll is counted as parked");
    send(&c, &alice, "carol", "wake up", "w").await.unwrap();
    let woken = poll.await.unwrap().unwrap();
    assert_eq!(woken.msgs.len(), 1);

    let text = svrkit_runtime::monitor::exposition::encode();
    assert_eq!(sample(&text, "im_appends_total{kind=\"direct\"}"), 6.0);
    assert_eq!(sample(&text, "im_appends_total{kind=\"group\"}"), 2.0);
    assert_eq!(sample(&text, "im_recipients_per_append_count"), 8.0);
    assert_eq!(sample(&text, "im_recipients_per_append_sum"), 12.0);
    assert_eq!(sample(&text, "im_group_fan_out_count"), 2.0);
    assert_eq!(sample(&text, "im_group_fan_out_sum"), 6.0);
    assert_eq!(sample(&text, "im_long_polls_parked"), 0.0);
    // Help text and type, as a scraper reads them.
    assert!(text.contains("# TYPE im_group_fan_out histogram"), "{text}");
    assert!(
        text.contains("# HELP im_long_polls_parked Fetches waiting"),
        "{text}"
    );
}
