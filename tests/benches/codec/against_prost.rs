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
