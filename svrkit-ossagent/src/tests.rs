//! The agent's intake and pages, driven in process.
use super::*;
use svrkit_runtime::metrics::histogram::bucket;
use svrkit_runtime::monitor::admin::Pages;
use svrkit_runtime::monitor::ossagent::{MethodMinute, Minute};

/// A report of `calls` calls of `s.S.M`, each taking `latency_us`.
fn report(instance: &str, minute: u64, calls: u64, latency_us: u64) -> Report {
    let latency_buckets = vec![bucket(latency_us * 1000) as u64, calls];
    Report {
        instance: instance.to_owned().into(),
        minutes: vec![Minute {
            minute,
            methods: vec![MethodMinute {
                service: "s.S".into(),
                method: "M".into(),
                calls,
                errors: 1,
                latency_buckets,
                ..MethodMinute::default()
            }],
            ..Minute::default()
        }],
        ..Report::default()
    }
}

#[test]
fn instances_merge_and_later_reports_replace_earlier() {
    let now = this_minute();
    let agent = Agent::default();
    agent.take(report("a", now - 1, 5, 15));
    agent.take(report("a", now - 1, 50, 15)); // the same minute, later: replaces
    agent.take(report("b", now - 1, 50, 1500)); // another instance, slower
    agent.take(report("b", now, 4, 1500));
    let s = agent.series("s.S", "M", false);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].minute, s[0].calls, s[0].errors), (now - 1, 100, 2));
    // Half the calls in (10, 20] µs, half in (1, 2] ms: p99 in the slow instance's bucket.
    assert!(s[0].p50_ms <= 0.02 && s[0].p99_ms > 1.0, "{:?}", s[0]);
    assert_eq!(agent.instances(), ["a", "b"]);
    let html = agent.page(30);
    assert!(html.contains(r#"data-instance="b (pid 0)""#), "{html}");
}

/// One source for every figure: an alarm fired from a process's minutes reads the same
/// on the process's page, on the agent's page and in the agent's `/alerts.json`.
#[test]
fn the_agent_shows_and_serves_reported_alarms_with_the_processs_figures() {
    use svrkit_runtime::monitor::alarm::{AlarmConfig, Change, Detector, Figure};
    use svrkit_runtime::monitor::dashboard::{AlertRow, Window};
    use svrkit_runtime::monitor::rollup::History;
    let now = this_minute();
    let mut ring = History::default();
    let mut detector = Detector::default();
    let mut fired = None;
    for minute in now - 40..now {
        let errors = if minute == now - 1 { 129 } else { 1 };
        ring.push(Figures {
            minute,
            calls: 1000,
            errors,
            ..Figures::default()
        });
        let change = detector.step(
            Figure::ErrorRate,
            &ring,
            &AlarmConfig::default(),
            ("s.S", "M"),
        );
        if let Some(Change::Fired(a)) = change {
            fired = Some(a);
        }
    }
    let alarm = fired.expect("the error rate rose from 0.1% to 12.9%");
    // The process's own page: the alarm row and the chart's label.
    let row = AlertRow::of(&alarm, now);
    let chart = Window::new(now, 30, ring.iter()).panel("p".into(), "s.S.M".into(), "server");
    assert_eq!(chart.charts[1].latest, row.value);
    assert!(row.value.starts_with("12.9% at "), "{}", row.value);

    // A minute back in band does not clear it yet (two are needed), but the alarm's
    // value follows the minute, as the chart does: never "12.9% now" beside a chart at
    // 0.1%.
    let mut later = ring.clone();
    later.push(Figures {
        minute: now,
        calls: 1000,
        errors: 1,
        ..Figures::default()
    });
    let mut still = detector.clone();
    let config = AlarmConfig::default();
    assert_eq!(
        still.step(Figure::ErrorRate, &later, &config, ("s.S", "M")),
        None
    );
    let firing = still.firing().expect("still firing");
    let chart = Window::new(now + 1, 30, later.iter()).panel("p".into(), "s".into(), "server");
    assert_eq!(chart.charts[1].latest, AlertRow::of(firing, now + 1).value);
    assert!(
        chart.charts[1].latest.starts_with("0.1% at "),
        "{}",
        chart.charts[1].latest
    );

    let agent = Agent::default();
    let mut r = report("a", now - 1, 1000, 2);
    r.alarms = vec![svrkit_runtime::monitor::report::alarm(&alarm)];
    r.firing = vec!["s.S.M error_rate".into()];
    agent.take(r);
    let html = agent.page(30);
    assert!(html.contains(&format!("<td>{}</td>", row.value)), "{html}");
    let Some((_, _, json)) = Pages::page(&agent, "/alerts.json", 30) else {
        panic!("no /alerts.json");
    };
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let firing = &json["firing"][0];
    assert_eq!(firing["value"], alarm.value);
    assert_eq!(firing["value_minute"], alarm.value_minute);
    assert_eq!(firing["figure"], "error_rate");
    assert_eq!(firing["instance"], "a");

    // A process older than the alarm figures names its alarms only: listed, no figures.
    let mut old = report("old", now - 1, 10, 2);
    old.firing = vec!["s.S.M p99_latency".into()];
    agent.take(old);
    let json = Pages::page(&agent, "/alerts.json", 30).unwrap().2;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let old = json["firing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["instance"] == "old")
        .unwrap();
    assert_eq!(
        (&old["method"], &old["value"]),
        (&"M".into(), &serde_json::Value::Null)
    );
}

/// A process from before the log-linear buckets reports the 1-2-5 ones: its latencies
/// merge with a newer process's, as roughly as they were measured.
#[test]
fn reports_in_the_old_buckets_merge_with_the_new() {
    let now = this_minute();
    let agent = Agent::default();
    let mut old = report("old", now, 10, 0);
    let m = &mut old.minutes[0].methods[0];
    m.latency_buckets = Vec::new();
    m.latency = vec![0, 0, 0, 0, 0, 10]; // (100, 200] µs
    agent.take(old);
    agent.take(report("new", now, 10, 150));
    let s = agent.series("s.S", "M", false);
    assert_eq!(s[0].calls, 20);
    assert!((s[0].p50_ms / 0.150 - 1.0).abs() < 0.07, "{:?}", s[0]);
    assert!((s[0].p99_ms / 0.150 - 1.0).abs() < 0.07, "{:?}", s[0]);
}

/// Held reports of a series that went silent are let go once no report can reach their
/// minute, so they do not hold the caps for ever; the minutes' figures stay.
#[test]
fn reports_of_minutes_no_report_can_reach_are_let_go() {
    let now = this_minute();
    let agent = Agent::default();
    agent.take(report("a", now, 10, 15));
    agent.take(report("b", now, 10, 1500));
    {
        let mut state = agent.state.lock().unwrap();
        assert_eq!(state.open, 2);
        assert_eq!(state.open_bytes, 2 * 2 * 8);
        state.sweep(now); // still open
        assert_eq!(state.open, 2);
        state.sweep(now + 1);
        assert_eq!((state.open, state.open_bytes), (0, 0));
    }
    assert_eq!(agent.series("s.S", "M", false)[0].calls, 20);
}

#[test]
fn processes_that_give_one_name_stay_apart() {
    let now = this_minute();
    let agent = Agent::default();
    for (pid, calls) in [(1, 100), (2, 300), (3, 500)] {
        let mut r = report("0.0.0.0:7000", now, calls, 2);
        r.pid = pid;
        agent.take(r);
    }
    assert_eq!(agent.instances().len(), 3);
    assert_eq!(agent.series("s.S", "M", false)[0].calls, 900);
}

#[test]
fn minutes_far_from_the_agents_clock_are_not_kept() {
    let now = this_minute();
    let agent = Agent::default();
    // A clock ten minutes ahead, or a forged minute, must not hide the others'.
    agent.take(report("ahead", now + 10, 10, 0));
    agent.take(report("ahead", u64::MAX, 10, 0));
    agent.take(report("ok", now, 7, 0));
    let s = agent.series("s.S", "M", false);
    assert_eq!(
        s.iter().map(|f| (f.minute, f.calls)).collect::<Vec<_>>(),
        [(now, 7)]
    );
    agent.take(report("late", now - 60, 7, 0));
    assert_eq!(agent.series("s.S", "M", false).len(), 1);
}

#[test]
fn what_cannot_be_kept_is_dropped_and_nothing_overflows() {
    let now = this_minute();
    let agent = Agent::default();
    for i in 0..MAX_INSTANCES + 10 {
        agent.take(report(&format!("i{i}"), now, 1, 0));
    }
    assert_eq!(agent.instances().len(), MAX_INSTANCES);
    let agent = Agent::default();
    agent.take(report(&"x".repeat(MAX_NAME + 1), now, 1, 0));
    assert!(agent.instances().is_empty());
    let mut r = report("big", now, 10, 0);
    r.minutes[0].methods[0].latency = vec![1; 100_000];
    r.minutes[0].methods[0].method = "y".repeat(MAX_NAME + 1).into();
    agent.take(r.clone());
    assert!(agent.series("s.S", "M", false).is_empty());
    r.minutes[0].methods[0].method = "M".into();
    r.minutes[0].methods[0].latency = vec![1; 10];
    agent.take(r.clone());
    r.instance = "big2".into();
    agent.take(r);
    assert_eq!(agent.series("s.S", "M", false)[0].calls, 20);
    assert!(agent.page(30).contains("data-calls"));
}

#[test]
fn figures_that_cannot_be_true_are_refused_and_counted() {
    let now = this_minute();
    let agent = Agent::default();
    let forged = [
        |m: &mut MethodMinute| m.calls = u64::MAX,
        |m: &mut MethodMinute| m.errors = m.calls + 1, // a 10,000% error rate
        |m: &mut MethodMinute| m.rejected = m.calls + 1,
        |m: &mut MethodMinute| m.latency_buckets = vec![0, MAX_CALLS_PER_MINUTE + 1],
        |m: &mut MethodMinute| m.queue_wait = vec![u64::MAX, 2],
        |m: &mut MethodMinute| m.caller_errors = m.calls, // with the one error: one too many
        |m: &mut MethodMinute| m.queue_wait_buckets = vec![9_999, 1], // no such bucket
        |m: &mut MethodMinute| m.latency_buckets = vec![3], // a pair cut short
    ];
    for (i, forge) in forged.iter().enumerate() {
        let mut r = report(&format!("f{i}"), now, 10, 0);
        forge(&mut r.minutes[0].methods[0]);
        agent.take(r);
    }
    assert!(agent.instances().is_empty());
    assert!(agent.series("s.S", "M", false).is_empty());
    let dropped = agent.dropped();
    assert_eq!(
        dropped[Dropped::Implausible as usize],
        (Dropped::Implausible, 8)
    );
    // A true report still goes in, one with more queue waits than answers too: long
    // polls still waiting were started in the minute (honest reports of a live
    // im-server were refused for it).
    agent.take(report("real", now, 10, 0));
    assert_eq!(agent.series("s.S", "M", false)[0].calls, 10);
    let mut waiting = report("polls", now, 3, 0);
    waiting.minutes[0].methods[0].queue_wait_buckets = vec![bucket(20_000) as u64, 11];
    agent.take(waiting);
    assert_eq!(agent.series("s.S", "M", false)[0].calls, 13);
}

#[tokio::test]
async fn reports_from_untrusted_peers_are_refused_and_counted() {
    let agent = Agent::default();
    let mut ctx = Context::default();
    ctx.trusted = false;
    ctx.peer = Some("203.0.113.9:5000".parse().unwrap());
    let forged = report("forged", this_minute(), 10, 0);
    let e = agent.report(ctx, forged.clone()).await.unwrap_err();
    assert_eq!(e.code(), svrkit_runtime::Code::PERMISSION_DENIED);
    assert!(agent.instances().is_empty());
    assert_eq!(agent.dropped()[0], (Dropped::Untrusted, 1));
    let mut ctx = Context::default();
    ctx.peer = Some("10.0.0.7:5000".parse().unwrap());
    agent.report(ctx, forged).await.unwrap();
    assert_eq!(agent.instances(), ["forged"]);
}

#[test]
fn one_address_cannot_take_every_slot_and_a_restarted_process_appears() {
    let now = this_minute();
    let agent = Agent::default();
    let attacker: IpAddr = "10.0.0.66".parse().unwrap();
    for i in 0..MAX_INSTANCES_PER_PEER + 5 {
        let _ = agent.take_from(Some(attacker), report(&format!("x{i}"), now, 1, 0));
    }
    assert_eq!(agent.instances().len(), MAX_INSTANCES_PER_PEER);
    assert_eq!(agent.dropped()[Dropped::PeerFull as usize].1, 5);
    let real: IpAddr = "10.0.0.1".parse().unwrap();
    agent
        .take_from(Some(real), report("real", now, 1, 0))
        .unwrap();

    // Full: a new instance waits until one has been silent long enough to give way.
    let agent = Agent::default();
    for i in 0..MAX_INSTANCES {
        agent.take(report(&format!("i{i}"), now, 1, 0));
    }
    let mut restarted = report("i0", now, 1, 0);
    restarted.pid = 2;
    assert_eq!(
        agent.take_from(Some(real), restarted.clone()),
        Err(Dropped::Full)
    );
    {
        let mut state = agent.state.lock().unwrap();
        let old = state.instances.get_mut(&("i0".to_owned(), 0)).unwrap();
        old.last_seen = Instant::now() - LIVE;
    }
    agent.take_from(Some(real), restarted).unwrap();
    let instances = agent.instances();
    assert_eq!(instances.len(), MAX_INSTANCES);
    assert_eq!(
        instances.iter().filter(|i| *i == "i0").count(),
        1,
        "the new i0"
    );
}

/// Counts since start turn into rates between an instance's reports: the service map's
/// pairs and the business counters and histograms, a minute, summed over the instances
/// that reported twice; gauges and first reports have none.
#[test]
fn counts_since_start_become_rates_between_reports() {
    use svrkit_runtime::monitor::ossagent::{BusinessSeries, CallerCalls};
    let now = this_minute();
    let at = |instance: &str, pid: u32, calls: u64, sends: f64, parked: f64, fan_out: f64| {
        let mut r = report(instance, now, 1, 0);
        r.pid = pid;
        // Methods of one service: the pair's rate is their gains' sum; only M's moves, and
        // O's series (a caller that lost its slot in O's breakdown) is gone from the second
        // report of `a`, which must not read as a loss of 400.
        let methods: &[&str] = if calls == 160 {
            &["M", "N"]
        } else {
            &["M", "N", "O"]
        };
        r.callers = methods
            .iter()
            .map(|&method| CallerCalls {
                caller: "web".into(),
                service: "s.S".into(),
                method: method.into(),
                calls: match method {
                    "M" => calls,
                    "N" => 50,
                    _ => 400,
                },
                ..CallerCalls::default()
            })
            .collect();
        let series = |name: &str, kind: &str, value: f64| BusinessSeries {
            name: name.to_owned().into(),
            kind: kind.to_owned().into(),
            value,
            ..BusinessSeries::default()
        };
        r.business = vec![
            series("sends", "counter", sends),
            series("parked", "gauge", parked),
            series("fan_out", "histogram", fan_out),
        ];
        r
    };
    let agent = Agent::default();
    let t0 = Instant::now();
    agent.take_at(at("a", 1, 100, 10.0, 3.0, 5.0), t0).unwrap();
    agent.take_at(at("b", 2, 7, 1.0, 1.0, 1.0), t0).unwrap();
    let rate = |agent: &Agent, name: &str| {
        agent
            .business()
            .into_iter()
            .find(|b| b.name == name)
            .unwrap()
            .per_minute
    };
    assert_eq!(
        agent.service_map()[0].per_minute,
        None,
        "one report each: no rate yet"
    );
    assert_eq!(rate(&agent, "sends"), None);

    // Ten seconds later, `a` again: 60 more calls, 30 more sends, 20 more values.
    let t1 = t0 + Duration::from_secs(10);
    agent.take_at(at("a", 1, 160, 40.0, 9.0, 25.0), t1).unwrap();
    let map = agent.service_map();
    // The count is the reports' latest: `a`'s without O, `b`'s with it.
    assert_eq!(
        (map[0].calls, map[0].per_minute),
        (160 + 50 + 7 + 50 + 400, Some(360.0))
    );
    assert_eq!(rate(&agent, "sends"), Some(180.0));
    assert_eq!(rate(&agent, "fan_out"), Some(120.0));
    assert_eq!(
        rate(&agent, "parked"),
        None,
        "a gauge is a value, not a count"
    );
    let parked = agent
        .business()
        .into_iter()
        .find(|b| b.name == "parked")
        .unwrap();
    assert_eq!(parked.value, 10.0);

    // A count that went down (a reset the pid does not show) gives no rate.
    agent.take_at(at("b", 2, 7, 0.5, 1.0, 1.0), t1).unwrap();
    assert_eq!(
        rate(&agent, "sends"),
        Some(180.0),
        "b's count went down: no rate from it"
    );
    let page = agent.page(30);
    assert!(page.contains("360/min"), "the map's rate on the page");
    assert!(page.contains("180/min"), "the counter's rate on the page");
}
