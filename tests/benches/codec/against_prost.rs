//! The benchmark itself, compiled when svrkit-tests was built with protoc.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use prost::Message as _;
use svrkit_runtime::codec::Message as _;
use svrkit_tests::prost::bench::chat as pb;
use svrkit_tests::prost_default::bench::chat as pd;
use svrkit_tests::svrkit::bench::chat as sk;

fn small(content_len: usize, i: u64) -> sk::SendMsgReq {
    sk::SendMsgReq {
        from_user: format!("wxid_{:08}", 10_000 + i).into(),
        to_user: format!("wxid_{:08}", 20_000 + i).into(),
        client_msg_id: 0x1234_5678_9abc + i,
        msg_type: sk::MsgType::TEXT,
        content: Bytes::from(vec![b'x'; content_len]),
        create_time: 1_763_800_000 + i as i64,
        at_users: vec!["wxid_alice".into(), "wxid_bob".into()],
        ..Default::default()
    }
}

struct Workload {
    name: &'static str,
    encoded: Bytes,
    svrkit: WorkloadValue<sk::SendMsgReq, sk::MsgList>,
    prost: WorkloadValue<pb::SendMsgReq, pb::MsgList>,
    prost_default: WorkloadValue<pd::SendMsgReq, pd::MsgList>,
}

enum WorkloadValue<One, List> {
    One(One),
    List(List),
}

fn workloads() -> Vec<Workload> {
    let make_one = |name, len| {
        let v = small(len, 0);
        let encoded = v.encode_to_bytes();
        Workload {
            name,
            svrkit: WorkloadValue::One(v),
            prost: WorkloadValue::One(pb::SendMsgReq::decode(encoded.clone()).unwrap()),
            prost_default: WorkloadValue::One(pd::SendMsgReq::decode(encoded.clone()).unwrap()),
            encoded,
        }
    };
    let list = sk::MsgList {
        msgs: (0..1000).map(|i| small(128, i)).collect(),
        ..Default::default()
    };
    let encoded = list.encode_to_bytes();
    vec![
        make_one("small", 128),
        make_one("1k", 1024),
        Workload {
            name: "list",
            svrkit: WorkloadValue::List(list),
            prost: WorkloadValue::List(pb::MsgList::decode(encoded.clone()).unwrap()),
            prost_default: WorkloadValue::List(pd::MsgList::decode(encoded.clone()).unwrap()),
            encoded,
        },
    ]
}

fn bench(c: &mut Criterion) {
    for w in workloads() {
        // The same bytes from all three: the schemas agree on the wire.
        let mut check = Vec::new();
        match &w.prost {
            WorkloadValue::One(v) => v.encode(&mut check).unwrap(),
            WorkloadValue::List(v) => v.encode(&mut check).unwrap(),
        }
        assert_eq!(check, w.encoded, "prost and svrkit disagree on {}", w.name);

        let mut group = c.benchmark_group(format!("encode/{}", w.name));
        group.throughput(Throughput::Bytes(w.encoded.len() as u64));
        let mut buf = Vec::with_capacity(w.encoded.len() * 2);
        match &w.svrkit {
            WorkloadValue::One(v) => group.bench_function("svrkit", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(v).encode(&mut buf);
                    black_box(buf.len())
                })
            }),
            WorkloadValue::List(v) => group.bench_function("svrkit", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(v).encode(&mut buf);
                    black_box(buf.len())
                })
            }),
        };
        match &w.prost {
            WorkloadValue::One(v) => group.bench_function("prost", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(v).encode(&mut buf).unwrap();
                    black_box(buf.len())
                })
            }),
            WorkloadValue::List(v) => group.bench_function("prost", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(v).encode(&mut buf).unwrap();
                    black_box(buf.len())
                })
            }),
        };
        match &w.prost_default {
            WorkloadValue::One(v) => group.bench_function("prost_default", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(v).encode(&mut buf).unwrap();
                    black_box(buf.len())
                })
            }),
            WorkloadValue::List(v) => group.bench_function("prost_default", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(v).encode(&mut buf).unwrap();
                    black_box(buf.len())
                })
            }),
        };
        group.finish();

        // What a call does with its request: the length (to check it and size the buffer),
        // then the bytes, into a new exactly sized buffer. Nested messages are where a
        // codec can compute lengths twice.
        let mut group = c.benchmark_group(format!("encode_to_vec/{}", w.name));
        group.throughput(Throughput::Bytes(w.encoded.len() as u64));
        match &w.svrkit {
            WorkloadValue::One(v) => {
                group.bench_function("svrkit", |b| b.iter(|| black_box(v).encode_to_vec()))
            }
            WorkloadValue::List(v) => {
                group.bench_function("svrkit", |b| b.iter(|| black_box(v).encode_to_vec()))
            }
        };
        match &w.prost {
            WorkloadValue::One(v) => {
                group.bench_function("prost", |b| b.iter(|| black_box(v).encode_to_vec()))
            }
            WorkloadValue::List(v) => {
                group.bench_function("prost", |b| b.iter(|| black_box(v).encode_to_vec()))
            }
        };
        match &w.prost_default {
            WorkloadValue::One(v) => {
                group.bench_function("prost_default", |b| b.iter(|| black_box(v).encode_to_vec()))
            }
            WorkloadValue::List(v) => {
                group.bench_function("prost_default", |b| b.iter(|| black_box(v).encode_to_vec()))
            }
        };
        group.finish();

        let mut group = c.benchmark_group(format!("decode/{}", w.name));
        group.throughput(Throughput::Bytes(w.encoded.len() as u64));
        let input = w.encoded.clone();
        match &w.svrkit {
            WorkloadValue::One(_) => group.bench_function("svrkit", |b| {
                b.iter(|| sk::SendMsgReq::decode_bytes(black_box(&input)).unwrap())
            }),
            WorkloadValue::List(_) => group.bench_function("svrkit", |b| {
                b.iter(|| sk::MsgList::decode_bytes(black_box(&input)).unwrap())
            }),
        };
        match &w.prost {
            WorkloadValue::One(_) => group.bench_function("prost", |b| {
                b.iter(|| pb::SendMsgReq::decode(black_box(input.clone())).unwrap())
            }),
            WorkloadValue::List(_) => group.bench_function("prost", |b| {
                b.iter(|| pb::MsgList::decode(black_box(input.clone())).unwrap())
            }),
        };
        match &w.prost_default {
            WorkloadValue::One(_) => group.bench_function("prost_default", |b| {
                b.iter(|| pd::SendMsgReq::decode(black_box(&input[..])).unwrap())
            }),
            WorkloadValue::List(_) => group.bench_function("prost_default", |b| {
                b.iter(|| pd::MsgList::decode(black_box(&input[..])).unwrap())
            }),
        };
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}

/// One contender of the side-by-side run: a name and one operation to time.
type Contender<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

/// svrkit's, prost's (`Bytes` fields) and prost's default build's encoders of one message,
/// timed on `operation` (`encode` into a reused buffer, `encoded_len`, `encode_to_vec`).
fn encoders<'a>(
    operation: &str,
    s: &'a impl svrkit_runtime::codec::Message,
    p: &'a impl prost::Message,
    d: &'a impl prost::Message,
    capacity: usize,
) -> Vec<Contender<'a>> {
    match operation {
        "encode" => {
            // Each contender encodes into its own reused buffer.
            let buf = || Vec::with_capacity(capacity);
            let (mut b1, mut b2, mut b3) = (buf(), buf(), buf());
            vec![
                (
                    "svrkit",
                    Box::new(move || {
                        b1.clear();
                        black_box(s).encode(&mut b1);
                        b1.len()
                    }),
                ),
                (
                    "prost",
                    Box::new(move || {
                        b2.clear();
                        black_box(p).encode(&mut b2).unwrap();
                        b2.len()
                    }),
                ),
                (
                    "prost_default",
                    Box::new(move || {
                        b3.clear();
                        black_box(d).encode(&mut b3).unwrap();
                        b3.len()
                    }),
                ),
            ]
        }
        "encoded_len" => vec![
            ("svrkit", Box::new(move || black_box(s).encoded_len())),
            ("prost", Box::new(move || black_box(p).encoded_len())),
            (
                "prost_default",
                Box::new(move || black_box(d).encoded_len()),
            ),
        ],
        "encode_to_vec" => vec![
            (
                "svrkit",
                Box::new(move || black_box(s).encode_to_vec().len()),
            ),
            (
                "prost",
                Box::new(move || black_box(p).encode_to_vec().len()),
            ),
            (
                "prost_default",
                Box::new(move || black_box(d).encode_to_vec().len()),
            ),
        ],
        _ => unreachable!("{operation}"),
    }
}

/// The side-by-side run (`-- --side-by-side`): for each operation and shape, the contenders
/// take turns, a few milliseconds each, for `rounds` rounds, and each one's median time per
/// operation is reported with its ratio to svrkit's. Turns spread a slow spell of a shared
/// machine over all of them, where criterion's runs one after another let it fall on one.
pub fn side_by_side(rounds: usize) {
    println!(
        "| operation | shape | svrkit | prost (Bytes) | prost (default) | vs prost | vs prost default |"
    );
    println!("|---|---|---|---|---|---|---|");
    for w in workloads() {
        let capacity = w.encoded.len() * 2;
        let input = w.encoded.clone();
        for operation in ["encoded_len", "encode", "encode_to_vec", "decode"] {
            let contenders: Vec<Contender<'_>> =
                match (operation, &w.svrkit, &w.prost, &w.prost_default) {
                    (_, WorkloadValue::One(s), WorkloadValue::One(p), WorkloadValue::One(d))
                        if operation != "decode" =>
                    {
                        encoders(operation, s, p, d, capacity)
                    }
                    (_, WorkloadValue::List(s), WorkloadValue::List(p), WorkloadValue::List(d))
                        if operation != "decode" =>
                    {
                        encoders(operation, s, p, d, capacity)
                    }
                    ("decode", WorkloadValue::One(_), _, _) => vec![
                        (
                            "svrkit",
                            Box::new(|| {
                                sk::SendMsgReq::decode_bytes(black_box(&input))
                                    .unwrap()
                                    .at_users
                                    .len()
                            }),
                        ),
                        (
                            "prost",
                            Box::new(|| {
                                pb::SendMsgReq::decode(black_box(input.clone()))
                                    .unwrap()
                                    .at_users
                                    .len()
                            }),
                        ),
                        (
                            "prost_default",
                            Box::new(|| {
                                pd::SendMsgReq::decode(black_box(&input[..]))
                                    .unwrap()
                                    .at_users
                                    .len()
                            }),
                        ),
                    ],
                    ("decode", WorkloadValue::List(_), _, _) => vec![
                        (
                            "svrkit",
                            Box::new(|| {
                                sk::MsgList::decode_bytes(black_box(&input))
                                    .unwrap()
                                    .msgs
                                    .len()
                            }),
                        ),
                        (
                            "prost",
                            Box::new(|| {
                                pb::MsgList::decode(black_box(input.clone()))
                                    .unwrap()
                                    .msgs
                                    .len()
                            }),
                        ),
                        (
                            "prost_default",
                            Box::new(|| {
                                pd::MsgList::decode(black_box(&input[..]))
                                    .unwrap()
                                    .msgs
                                    .len()
                            }),
                        ),
                    ],
                    _ => unreachable!(),
                };
            let medians = take_turns(contenders, rounds);
            let ns = |i: usize| medians[i] * 1e9;
            let show = |t: f64| {
                if t >= 10_000.0 {
                    format!("{:.1} µs", t / 1000.0)
                } else {
                    format!("{t:.0} ns")
                }
            };
            println!(
                "| {operation} | {} | {} | {} | {} | {:.2}x | {:.2}x |",
                w.name,
                show(ns(0)),
                show(ns(1)),
                show(ns(2)),
                ns(1) / ns(0),
                ns(2) / ns(0),
            );
        }
    }
}

/// Each contender's median seconds per operation over `rounds` turns of about 5 ms.
fn take_turns(mut contenders: Vec<Contender<'_>>, rounds: usize) -> Vec<f64> {
    // Iterations per turn, from a first calibrating turn.
    let per_turn: Vec<u64> = contenders
        .iter_mut()
        .map(|(_, op)| {
            let started = std::time::Instant::now();
            let mut n = 0u64;
            while started.elapsed() < std::time::Duration::from_millis(5) {
                black_box(op());
                n += 1;
            }
            n.max(1)
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds {
        for (i, (_, op)) in contenders.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            for _ in 0..per_turn[i] {
                black_box(op());
            }
            samples[i].push(started.elapsed().as_secs_f64() / per_turn[i] as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}
