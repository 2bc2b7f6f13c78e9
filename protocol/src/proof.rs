//! Storage proofs for result copies: a seeding holder shows, from time to time, that it still
//! has the copy it holds a duty for, and every node checks that from the renewal alone.
//!
//! The rule (docs/protocol.md, "Storage proofs"):
//!
//! - Time is cut into *slots* of the project's `verify.proof_every_ms`. For each slot and each
//!   seeding duty, a hash of (duty, result, slot) picks one 1 KiB chunk of the result: the
//!   *challenge*. Nobody can answer it without the chunk, and its place is known to everyone.
//! - A renewal of a seeding duty signed in the first `2 × lease` of a slot (its *zone*), once
//!   the holder has had [`grace_ms`] since its claim to fetch the copy, must carry a
//!   [`StorageProof`]: the challenged chunk as a BLAKE3 verified-streaming slice (the `bao`
//!   format), checked against the result's digest and size. A holder keeps its lease only by
//!   renewing, so it renews inside every zone or loses the item: a renewal without a valid
//!   proof there is refused as [`crate::Reject::Unproven`] (which costs peer score), the lease
//!   runs out and the duty goes to another node.
//! - A zone is twice the lease: a holder that skips it by letting its lease lapse leaves the
//!   item open for at least a lease's length, in which the nodes ranked for it take it.
//!
//! Everything here is pure: the challenge comes from the slot, not from anyone's dice, so every
//! node judges a renewal alike and a restart replays it. The price is that a holder can see
//! challenges coming: it could keep the answers to future slots and drop the copy, but each
//! costs about as much as the chunk it answers (1 KiB plus the path), so storing a day of
//! answers at 30-minute slots saves nothing on a result of 50 KiB or more.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::ids::{Digest, ItemId};
use crate::item::WorkItem;
use crate::manifest::{PROOF_EVERY_LEASES_MIN, VerifyPolicy};
use crate::message::Claim;

/// Bytes of the result one challenge asks for: one BLAKE3 chunk.
pub const PROOF_CHUNK_BYTES: u64 = 1024;
/// Largest proof on the wire: the chunk, the 8-byte length and up to 47 levels of parent
/// nodes (a result of up to 2^57 bytes).
pub const PROOF_BYTES_MAX: usize = 4096;
/// The fetch rate a holder is granted on top of the base grace: the slowest link a volunteer
/// is expected to copy a result over, in bytes per second.
pub const GRACE_BYTES_PER_S: u64 = 256 * 1024;
/// Longest grace, whatever the result's size (a week).
pub const GRACE_MS_MAX: u64 = 7 * 24 * 3_600_000;

/// Domain of the challenge hash.
const CHALLENGE_DOMAIN: &[u8] = b"starling/v1/storage-challenge";

/// A storage proof carried by a renewal of a seeding duty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageProof {
    /// The slot answered (the renewal's `at_ms / proof_every_ms`).
    pub slot: u64,
    /// The challenged chunk as a `bao` slice: the 8-byte length, the parent nodes on its path
    /// and the chunk's bytes.
    #[serde(with = "serde_bytes")]
    pub slice: Vec<u8>,
}

/// The slot a time falls in, for a project whose proofs come every `every_ms`.
pub fn slot_of(at_ms: u64, every_ms: u64) -> u64 {
    at_ms / every_ms.max(1)
}

/// The length of a proof slot for a project with this policy and lease: its
/// `proof_every_ms`, but never under [`PROOF_EVERY_LEASES_MIN`] leases; 0 when it asks for no
/// proofs.
pub fn every_ms(policy: &VerifyPolicy, lease_ms: u64) -> u64 {
    match policy.proof_every_ms {
        0 => 0,
        every => every.max(lease_ms.saturating_mul(PROOF_EVERY_LEASES_MIN)),
    }
}

/// The chunk a holder of duty `item` (a copy of `result`, `size` bytes) must show for `slot`:
/// its offset and length in the result. An empty result has an empty challenge.
pub fn challenge(item: &ItemId, result: &Digest, size: u64, slot: u64) -> (u64, u64) {
    let chunks = size.div_ceil(PROOF_CHUNK_BYTES);
    if chunks == 0 {
        return (0, 0);
    }
    let mut h = blake3::Hasher::new();
    h.update(CHALLENGE_DOMAIN);
    h.update(item.as_bytes());
    h.update(result.as_bytes());
    h.update(&slot.to_le_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    let offset = (x % chunks) * PROOF_CHUNK_BYTES;
    (offset, PROOF_CHUNK_BYTES.min(size - offset))
}

/// How long after its claim the holder of a copy of `size` bytes may renew without proofs:
/// the project's `proof_grace_ms`, plus the time to fetch the copy at [`GRACE_BYTES_PER_S`].
pub fn grace_ms(policy: &VerifyPolicy, size: u64) -> u64 {
    let fetch = size / GRACE_BYTES_PER_S * 1_000;
    policy.proof_grace_ms.saturating_add(fetch).min(GRACE_MS_MAX)
}

/// The slot claim `c` of item `work` must prove, if any: `Some` for a renewal of a seeding duty
/// past its grace and inside the zone of its slot, when the project asks for proofs.
pub fn slot_due(policy: &VerifyPolicy, lease_ms: u64, work: &WorkItem, c: &Claim) -> Option<u64> {
    let WorkItem::SeedDuty { size, .. } = work else { return None };
    let every = every_ms(policy, lease_ms);
    if every == 0 || !c.is_renewal() {
        return None;
    }
    if c.at_ms < c.since_ms.saturating_add(grace_ms(policy, *size)) {
        return None;
    }
    (c.at_ms % every < lease_ms.saturating_mul(2)).then(|| slot_of(c.at_ms, every))
}

/// Why a storage proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A renewal that must carry a proof carries none.
    #[error("no storage proof where one is due")]
    Missing,
    /// The proof answers another slot than the renewal's.
    #[error("storage proof for slot {got}, due for slot {want}")]
    WrongSlot {
        /// The slot the proof says it answers.
        got: u64,
        /// The renewal's slot.
        want: u64,
    },
    /// Over [`PROOF_BYTES_MAX`].
    #[error("storage proof over {PROOF_BYTES_MAX} bytes")]
    TooLarge,
    /// The slice does not verify against the result's digest and size.
    #[error("storage proof does not verify")]
    Invalid,
    /// A proof on a claim of something that is not a seeding duty.
    #[error("storage proof on an item that is not a copy")]
    NotACopy,
}

/// Checks the proof `claim` carries (or lacks) for duty `item` of `work`, under `policy` and
/// the project's lease: what every node runs on every claim of a seeding duty.
pub fn check(
    policy: &VerifyPolicy,
    lease_ms: u64,
    item: &ItemId,
    work: &WorkItem,
    claim: &Claim,
) -> Result<(), ProofError> {
    let due = slot_due(policy, lease_ms, work, claim);
    let Some(p) = &claim.proof else {
        return if due.is_some() { Err(ProofError::Missing) } else { Ok(()) };
    };
    let WorkItem::SeedDuty { result, size, .. } = work else { return Err(ProofError::NotACopy) };
    let every = every_ms(policy, lease_ms);
    let want = slot_of(claim.at_ms, every);
    if every == 0 || p.slot != want {
        return Err(ProofError::WrongSlot { got: p.slot, want });
    }
    verify_slice(item, result, *size, p)
}

/// Checks that `p` answers the challenge of its slot for duty `item`, a copy of `result`.
pub fn verify_slice(
    item: &ItemId,
    result: &Digest,
    size: u64,
    p: &StorageProof,
) -> Result<(), ProofError> {
    if p.slice.len() > PROOF_BYTES_MAX {
        return Err(ProofError::TooLarge);
    }
    // The length header is checked outright: with the size fixed, the tree's shape is, and
    // every byte of the chunk and its path is then checked by the hashes.
    if p.slice.len() < 8 || p.slice[..8] != size.to_le_bytes() {
        return Err(ProofError::Invalid);
    }
    let (offset, len) = challenge(item, result, size, p.slot);
    let hash = bao::Hash::from(result.0);
    let mut decoder = bao::decode::SliceDecoder::new(p.slice.as_slice(), &hash, offset, len);
    let mut out = Vec::with_capacity(len as usize);
    (&mut decoder).take(len + 1).read_to_end(&mut out).map_err(|_| ProofError::Invalid)?;
    if out.len() as u64 != len || !decoder.into_inner().is_empty() {
        return Err(ProofError::Invalid);
    }
    Ok(())
}

/// Answers the challenge of `slot` for duty `item` from the whole copy `blob` in memory (the
/// simulator's holders and tests; the node cuts the slice from its stored hash tree instead).
pub fn prove_from_blob(item: &ItemId, blob: &[u8], slot: u64) -> StorageProof {
    let result = Digest::of(blob);
    let (offset, len) = challenge(item, &result, blob.len() as u64, slot);
    let (outboard, _) = bao::encode::outboard(blob);
    let mut slice = Vec::new();
    bao::encode::SliceExtractor::new_outboard(
        std::io::Cursor::new(blob),
        std::io::Cursor::new(&outboard),
        offset,
        len,
    )
    .read_to_end(&mut slice)
    .expect("reading from memory");
    StorageProof { slot, slice }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 % 251) as u8).collect()
    }

    fn duty(blob: &[u8]) -> WorkItem {
        WorkItem::SeedDuty {
            source: ItemId([7; 32]),
            result: Digest::of(blob),
            size: blob.len() as u64,
            replica: 0,
        }
    }

    fn policy() -> VerifyPolicy {
        VerifyPolicy { proof_every_ms: 600_000, proof_grace_ms: 60_000, ..Default::default() }
    }

    fn renewal(at_ms: u64, proof: Option<StorageProof>) -> Claim {
        Claim {
            item: ItemId([3; 32]),
            epoch: 1,
            at_ms,
            lease_until_ms: at_ms + 60_000,
            since_ms: 1_000,
            proof,
        }
    }

    #[test]
    fn challenges_spread_over_the_chunks_and_stay_inside_the_result() {
        let (item, result) = (ItemId([1; 32]), Digest([2; 32]));
        let size = 10 * PROOF_CHUNK_BYTES + 17;
        let mut seen = std::collections::BTreeSet::new();
        for slot in 0..400 {
            let (off, len) = challenge(&item, &result, size, slot);
            assert_eq!(off % PROOF_CHUNK_BYTES, 0);
            assert!(off + len <= size && len > 0);
            seen.insert(off);
        }
        assert_eq!(seen.len(), 11, "every chunk is challenged sometime, the short last one too");
        assert_eq!(challenge(&item, &result, 0, 5), (0, 0));
    }

    #[test]
    fn a_holder_with_the_copy_proves_every_slot_and_nothing_else_passes() {
        let data = blob(37 * 1024 + 5);
        let work = duty(&data);
        let item = ItemId([3; 32]);
        let (p, lease) = (policy(), 60_000);
        for slot in [2u64, 3, 9, 1_000] {
            let at = slot * p.proof_every_ms + 10_000;
            let proof = prove_from_blob(&item, &data, slot);
            assert!(proof.slice.len() <= PROOF_BYTES_MAX);
            assert_eq!(check(&p, lease, &item, &work, &renewal(at, Some(proof.clone()))), Ok(()));
            // Another slot's answer, another item's, a flipped byte, a wrong length: refused.
            let other = prove_from_blob(&item, &data, slot + 1);
            let got = check(&p, lease, &item, &work, &renewal(at, Some(other)));
            assert!(matches!(got, Err(ProofError::WrongSlot { .. })), "{got:?}");
            let mut moved = prove_from_blob(&item, &data, slot + 1);
            moved.slot = slot;
            if challenge(&item, &Digest::of(&data), data.len() as u64, slot)
                != challenge(&item, &Digest::of(&data), data.len() as u64, slot + 1)
            {
                assert_eq!(
                    check(&p, lease, &item, &work, &renewal(at, Some(moved))),
                    Err(ProofError::Invalid),
                    "the answer to another chunk"
                );
            }
            for at_byte in [0, 8, 100, proof.slice.len() - 1] {
                let mut bad = proof.clone();
                bad.slice[at_byte] ^= 1;
                assert!(check(&p, lease, &item, &work, &renewal(at, Some(bad))).is_err());
            }
            let mut long = proof.clone();
            long.slice.push(0);
            assert!(check(&p, lease, &item, &work, &renewal(at, Some(long))).is_err());
            let forged = StorageProof { slot, slice: vec![0; 1024 + 8] };
            assert!(check(&p, lease, &item, &work, &renewal(at, Some(forged))).is_err());
            assert_eq!(
                check(&p, lease, &item, &work, &renewal(at, None)),
                Err(ProofError::Missing)
            );
        }
        // A copy of other bytes of the same size answers nothing.
        let mut other = data.clone();
        other[5] ^= 1;
        let at = 4 * p.proof_every_ms;
        let fake = prove_from_blob(&item, &other, 4);
        assert_eq!(
            check(&p, lease, &item, &work, &renewal(at, Some(fake))),
            Err(ProofError::Invalid)
        );
    }

    #[test]
    fn proofs_are_due_in_the_zone_after_the_grace_only() {
        let data = blob(4096);
        let work = duty(&data);
        let (p, lease) = (policy(), 60_000);
        let due = |at: u64, since: u64| {
            let mut c = renewal(at, None);
            c.since_ms = since;
            slot_due(&p, lease, &work, &c)
        };
        assert_eq!(due(600_000 + 5, 1_000), Some(1));
        assert_eq!(due(600_000 + 119_999, 1_000), Some(1));
        assert_eq!(due(600_000 + 120_000, 1_000), None, "past the zone");
        assert_eq!(due(1_200_000 + 1, 1_190_000), None, "inside the grace");
        assert_eq!(due(1_200_000 + 61_000, 1_190_000), Some(2));
        assert_eq!(due(5, 5), None, "a fresh claim");
        let crawl = WorkItem::CrawlChunk { urls: vec!["http://a/".into()] };
        assert_eq!(slot_due(&p, lease, &crawl, &renewal(600_000, None)), None);
        let off = VerifyPolicy { proof_every_ms: 0, ..policy() };
        assert_eq!(slot_due(&off, lease, &work, &renewal(600_000, None)), None);
        // The grace grows with the copy's size.
        assert_eq!(grace_ms(&p, 10 * GRACE_BYTES_PER_S), 70_000);
        assert_eq!(grace_ms(&p, u64::MAX), GRACE_MS_MAX);
    }
}
