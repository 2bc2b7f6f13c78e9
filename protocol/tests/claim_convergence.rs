//! The claim rule converges: random sets of claims, delivered in random orders and with
//! duplicates to several engines, leave every engine with the same holder for every item.

use proptest::prelude::*;
use starling_protocol::engine::test_keypair;
use starling_protocol::{
    Claim, Engine, EngineConfig, Envelope, Input, ItemBatch, ItemState, ProjectManifest,
    RatePolicy, RobotsPolicy, Signed, SizeCaps, WorkItem,
};

const ITEMS: usize = 6;
const NODES: u64 = 5;
const LEASE_MS: u64 = 1_000;

fn setup() -> (Envelope, Envelope, Vec<starling_protocol::ItemId>, starling_protocol::PublicKey) {
    let owner = test_keypair(1);
    let m = ProjectManifest {
        name: "conv".into(),
        description: String::new(),
        version: 1,
        owner: owner.public(),
        rate: RatePolicy::default(),
        lease_ms: LEASE_MS,
        replication: 0,
        scope: vec![],
        user_agent: "ua".into(),
        robots: RobotsPolicy::Obey,
        caps: SizeCaps::default(),
        verify: Default::default(),
        shard_depth: 0,
    };
    let items: Vec<WorkItem> = (0..ITEMS)
        .map(|i| WorkItem::CrawlChunk { urls: vec![format!("http://x.test/{i}")] })
        .collect();
    let ids = items.iter().map(|w| w.id(&m.id())).collect();
    let b = ItemBatch { project: m.id(), seq: 1, items };
    (
        Envelope::Manifest(Signed::sign(&owner, &m)),
        Envelope::Batch(Signed::sign(&owner, &b)),
        ids,
        owner.public(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Claims at epoch 1 from several nodes on several items, plus epoch-2 claims made after
    /// the epoch-1 lease ran out, delivered to 4 observers each in its own shuffled order with
    /// duplicates, all at a time when every lease has expired.
    #[test]
    fn every_engine_ends_with_the_same_holder(
        picks in proptest::collection::vec((0..ITEMS, 0..NODES, 1u32..=2), 1..40),
        orders in proptest::collection::vec(Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()), 4),
    ) {
        let (manifest, batch, ids, owner) = setup();
        let claims: Vec<Envelope> = picks.iter().map(|&(i, n, epoch)| {
            let at_ms = if epoch == 1 { 100 } else { 100 + LEASE_MS + 50 };
            let c = Claim { item: ids[i], epoch, at_ms, lease_until_ms: at_ms + LEASE_MS, since_ms: at_ms, proof: None };
            Envelope::Claim(Signed::sign(&test_keypair(100 + n), &c))
        }).collect();
        let mut finals = Vec::new();
        for (o, seed) in orders.iter().enumerate() {
            let mut e = Engine::new(EngineConfig::default(), test_keypair(900 + o as u64), [owner], 0);
            e.handle(Input::Message(manifest.clone()), 0).unwrap();
            e.handle(Input::Message(batch.clone()), 0).unwrap();
            // A deterministic shuffle with duplicates, from this observer's seed.
            let mut order: Vec<usize> = (0..claims.len()).chain(0..claims.len() / 2).collect();
            let mut s = *seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            // Deliver after every lease has run out, so only the claim order matters.
            let now = 100 + 3 * LEASE_MS;
            for i in order {
                let _ = e.handle(Input::Message(claims[i].clone()), now);
            }
            let state: Vec<Option<ItemState>> = ids.iter().map(|id| e.item_state(id)).collect();
            finals.push(state);
        }
        for f in &finals[1..] {
            prop_assert_eq!(f, &finals[0]);
        }
    }
}
