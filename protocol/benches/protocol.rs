//! Criterion benchmarks for the protocol core: signing and encoding envelopes, decoding and
//! verifying them (target: at least 20k verified envelopes/s on one core), and the engine's
//! intake of claims (messages/s).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use starling_protocol::engine::test_keypair;
use starling_protocol::{
    Claim, Engine, EngineConfig, Envelope, Input, ItemBatch, ItemId, ProjectManifest, RatePolicy,
    RobotsPolicy, Signed, SizeCaps, WorkItem,
};

fn claim(i: u32) -> Claim {
    let mut item = [0u8; 32];
    item[..4].copy_from_slice(&i.to_le_bytes());
    Claim {
        item: ItemId(item),
        epoch: 1,
        at_ms: 1_000,
        lease_until_ms: 61_000,
        since_ms: 1_000,
        proof: None,
    }
}

fn envelopes(c: &mut Criterion) {
    let key = test_keypair(1);
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign+encode claim", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(Envelope::Claim(Signed::sign(&key, &claim(i))).to_bytes())
        })
    });
    let bytes = Envelope::Claim(Signed::sign(&key, &claim(7))).to_bytes();
    g.bench_function("decode+verify claim, first sight", |b| {
        b.iter_batched(
            starling_protocol::signed::clear_verified_cache,
            |()| {
                let env = Envelope::from_bytes(black_box(&bytes)).expect("decodes");
                env.verify().expect("verifies");
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.bench_function("decode+verify claim, seen before", |b| {
        b.iter(|| {
            let env = Envelope::from_bytes(black_box(&bytes)).expect("decodes");
            env.verify().expect("verifies");
        })
    });
    g.finish();
}

fn engine_intake(c: &mut Criterion) {
    const N: u32 = 10_000;
    let owner = test_keypair(1);
    let m = ProjectManifest {
        name: "bench".into(),
        description: String::new(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy::default(),
        lease_ms: 60_000,
        replication: 0,
        scope: vec![],
        user_agent: "ua".into(),
        robots: RobotsPolicy::Obey,
        caps: SizeCaps::default(),
        verify: Default::default(),
        shard_depth: 0,
    };
    let items: Vec<WorkItem> =
        (0..N).map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://b.test/{i}")] }).collect();
    let ids: Vec<ItemId> = items.iter().map(|w| w.id(&m.id())).collect();
    let manifest = Envelope::Manifest(Signed::sign(&owner, &m));
    let batch =
        Envelope::Batch(Signed::sign(&owner, &ItemBatch { project: m.id(), seq: 1, items }));
    let claimants: Vec<_> = (0..8).map(|i| test_keypair(100 + i)).collect();
    // Kept as bytes and decoded afresh for each round, outside the timing: an envelope
    // remembers that it verified, so reusing the same values would skip the signature checks
    // that a node pays for every new message.
    let claims: Vec<Vec<u8>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let c = Claim {
                item: *id,
                epoch: 1,
                at_ms: 1_000,
                lease_until_ms: 61_000,
                since_ms: 1_000,
                proof: None,
            };
            Envelope::Claim(Signed::sign(&claimants[i % 8], &c)).to_bytes()
        })
        .collect();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.sample_size(10);
    g.bench_function("intake of 10k claims", |b| {
        b.iter_batched(
            || {
                starling_protocol::signed::clear_verified_cache();
                let mut e =
                    Engine::new(EngineConfig::default(), test_keypair(9), [owner.public()], 0);
                e.handle(Input::Message(manifest.clone()), 0).expect("manifest");
                e.handle(Input::Message(batch.clone()), 0).expect("batch");
                while e.poll_output().is_some() {}
                let fresh: Vec<Envelope> =
                    claims.iter().map(|b| Envelope::from_bytes(b).expect("decodes")).collect();
                (e, fresh)
            },
            |(mut e, fresh)| {
                for c in fresh {
                    let _ = e.handle(Input::Message(c), 2_000);
                }
                while e.poll_output().is_some() {}
                e
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, envelopes, engine_intake);
criterion_main!(benches);
