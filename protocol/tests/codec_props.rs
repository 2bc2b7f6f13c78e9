//! Property tests for the wire format and signed envelopes: round trips, single flipped bytes,
//! truncation and random input. Decoding must return an error, never panic.

use proptest::prelude::*;
use starling_protocol::engine::test_keypair;
use starling_protocol::{
    Claim, Envelope, ItemBatch, ItemId, ProjectId, ProjectManifest, RatePolicy, RobotsPolicy,
    Signed, SizeCaps, WorkItem,
};

fn arb_claim() -> impl Strategy<Value = Claim> {
    (any::<[u8; 32]>(), 1u32..1000, 0u64..1 << 40, 1u64..100_000, any::<bool>()).prop_map(
        |(item, epoch, at_ms, lease, renew)| Claim {
            since_ms: if renew { at_ms / 2 } else { at_ms },
            item: ItemId(item),
            epoch,
            at_ms,
            lease_until_ms: at_ms + lease,
            proof: None,
        },
    )
}

fn arb_manifest() -> impl Strategy<Value = ProjectManifest> {
    (
        "[a-z]{1,20}",
        ".{0,40}",
        1u64..100,
        1_000u64..100_000,
        0u8..5,
        proptest::collection::vec("[a-z]{1,10}\\.org", 0..4),
    )
        .prop_map(|(name, description, version, lease_ms, replication, scope)| {
            ProjectManifest {
                name,
                description,
                version,
                owner: test_keypair(1).public(),
                rate: RatePolicy::default(),
                lease_ms,
                replication,
                scope,
                user_agent: "ua".into(),
                robots: RobotsPolicy::Obey,
                caps: SizeCaps::default(),
                verify: Default::default(),
                shard_depth: 0,
            }
        })
}

fn arb_batch() -> impl Strategy<Value = ItemBatch> {
    (
        any::<u64>(),
        proptest::collection::vec(
            proptest::collection::vec("http://[a-z]{1,8}\\.test/[a-z0-9]{0,12}", 1..5),
            1..20,
        ),
    )
        .prop_map(|(seq, chunks)| ItemBatch {
            project: ProjectId([7; 32]),
            seq,
            items: chunks.into_iter().map(|urls| WorkItem::CrawlChunk { urls }).collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn claims_round_trip(c in arb_claim()) {
        let env = Envelope::Claim(Signed::sign(&test_keypair(3), &c));
        let back = Envelope::from_bytes(&env.to_bytes()).unwrap();
        prop_assert_eq!(&back, &env);
        let Envelope::Claim(s) = back else { unreachable!() };
        prop_assert_eq!(s.verify().unwrap(), c);
    }

    #[test]
    fn manifests_and_batches_round_trip(m in arb_manifest(), b in arb_batch()) {
        let key = test_keypair(1);
        for env in [Envelope::Manifest(Signed::sign(&key, &m)), Envelope::Batch(Signed::sign(&key, &b))] {
            let back = Envelope::from_file_bytes(&env.to_bytes()).unwrap();
            prop_assert!(back.verify().is_ok());
            prop_assert_eq!(back, env);
        }
    }

    #[test]
    fn any_flipped_byte_is_rejected(c in arb_claim(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let env = Envelope::Claim(Signed::sign(&test_keypair(3), &c));
        let mut bytes = env.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // Either the bytes no longer decode, or they decode to something that fails to verify.
        if let Ok(decoded) = Envelope::from_bytes(&bytes) {
            prop_assert!(decoded.verify().is_err(), "flipped byte {} still verifies", i);
        }
    }

    #[test]
    fn truncated_input_is_an_error(m in arb_manifest(), cut in any::<prop::sample::Index>()) {
        let bytes = Envelope::Manifest(Signed::sign(&test_keypair(1), &m)).to_bytes();
        let n = cut.index(bytes.len());
        prop_assert!(Envelope::from_file_bytes(&bytes[..n]).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(env) = Envelope::from_bytes(&bytes) {
            let _ = env.verify();
        }
        let _ = starling_protocol::SyncDigest::from_bytes(&bytes);
        let _ = starling_protocol::SyncDelta::from_bytes(&bytes);
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let bytes = vec![0u8; starling_protocol::wire::MAX_ENVELOPE_BYTES + 1];
    assert!(matches!(
        Envelope::from_bytes(&bytes),
        Err(starling_protocol::DecodeError::TooLong { .. })
    ));
}

#[test]
fn oversized_collections_are_refused() {
    let urls = vec!["http://a.test/".to_string(); starling_protocol::item::CHUNK_URLS_MAX + 1];
    let b = ItemBatch {
        project: ProjectId([7; 32]),
        seq: 1,
        items: vec![WorkItem::CrawlChunk { urls }],
    };
    let env = Envelope::Batch(Signed::sign(&test_keypair(1), &b));
    let back = Envelope::from_file_bytes(&env.to_bytes()).unwrap();
    assert!(matches!(
        back.verify(),
        Err(starling_protocol::VerifyError::Decode(starling_protocol::DecodeError::TooLarge {
            field: "urls",
            ..
        }))
    ));
}
