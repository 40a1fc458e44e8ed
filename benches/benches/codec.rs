//! Throughput of the control-protocol codec: it must never be what limits the channel
//! (virtio-serial carries about 5 MB/s under TCG).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kchaos_model::protocol::{self, FrameDecoder, FrameEvent, GuestMessage, KmsgRecord};

fn messages() -> Vec<GuestMessage> {
    (0..1000)
        .map(|i| match i % 3 {
            0 => GuestMessage::Heartbeat {
                seq: i,
                uptime_ms: i * 1000,
            },
            1 => GuestMessage::Sample {
                metric: "nr_dying_descendants".to_owned(),
                t_ms: i,
                value: i as f64,
            },
            _ => GuestMessage::Kmsg(KmsgRecord {
                seq: i,
                level: 6,
                ts_us: i * 10,
                text: "cgroup: fork rejected by pids controller in /kchaos/churn-17".to_owned(),
            }),
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let msgs = messages();
    let stream: Vec<u8> = msgs
        .iter()
        .flat_map(|m| protocol::encode(m).unwrap_or_default())
        .collect();
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("encode 1000 messages", |b| {
        b.iter(|| {
            msgs.iter()
                .map(|m| protocol::encode(m).map(|f| f.len()).unwrap_or(0))
                .sum::<usize>()
        });
    });
    group.bench_function("decode 1000 messages in 4 KiB reads", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new();
            let mut n = 0;
            for chunk in stream.chunks(4096) {
                d.push(chunk);
                while let Some(ev) = d.next_event() {
                    if let FrameEvent::Frame(p) = ev {
                        n += usize::from(protocol::frame::decode::<GuestMessage>(&p).is_ok());
                    }
                }
            }
            n
        });
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
