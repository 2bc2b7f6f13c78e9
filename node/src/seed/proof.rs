//! Storage proofs, the store's side: the answer to one of the engine's challenges
//! ([`starling_protocol::proof`]), cut as a verified slice from a stored copy and its outboard
//! tree, and checked before it goes out, so this node never sends a proof its peers refuse.
//!
//! A copy that fails the check is judged whole: its outboard tree is made again from the
//! blob, and a blob that no longer hashes to its digest is deleted (as a download that does
//! not is), so it is neither served nor taken for a good copy by a later duty. Blocking: the
//! actor runs [`answer`] off its thread.

use std::fs::File;
use std::io::BufReader;

use starling_protocol::proof::{self, StorageProof};
use starling_protocol::{Digest, ItemId};

use super::slice;
use super::store::{BlobStore, OUTBOARD_SUFFIX, StoreError};

/// One challenge: what [`starling_protocol::Output::ProofDue`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The seeding duty.
    pub item: ItemId,
    /// The epoch held.
    pub epoch: u32,
    /// The proof slot.
    pub slot: u64,
    /// The copy's digest.
    pub result: Digest,
    /// The copy's size.
    pub size: u64,
    /// Where the challenged chunk starts.
    pub offset: u64,
    /// Its length (at most [`proof::PROOF_CHUNK_BYTES`]).
    pub len: u64,
}

/// What the store can show for a challenge.
#[derive(Debug)]
pub enum Answer {
    /// The proof, checked.
    Proved(StorageProof),
    /// No copy is stored.
    Missing,
    /// The stored copy does not match its digest; it was deleted.
    Damaged,
    /// The store could not be read (the copy may be fine).
    Failed(StoreError),
}

impl Answer {
    /// The proof to hand the engine, if any.
    pub fn into_proof(self) -> Option<StorageProof> {
        match self {
            Answer::Proved(p) => Some(p),
            _ => None,
        }
    }
}

/// Answers `c` from `store` (blocking: disk reads, and hashing the whole copy the first time
/// it is proved or served, or when it looks damaged).
pub fn answer(store: &BlobStore, c: &Challenge) -> Answer {
    match store.size(&c.result) {
        Ok(None) => return Answer::Missing,
        Ok(Some(size)) if size == c.size => {}
        // Named by its digest but of another size: it cannot hash to it.
        Ok(Some(_)) => return discard(store, &c.result),
        Err(e) => return Answer::Failed(e),
    }
    match cut(store, c) {
        Ok(p) if proof::verify_slice(&c.item, &c.result, c.size, &p).is_ok() => {
            return Answer::Proved(p);
        }
        Ok(_) | Err(StoreError::Corrupt) => {}
        Err(StoreError::NotFound) => return Answer::Missing,
        Err(e) => return Answer::Failed(e),
    }
    // The blob or its tree is bad: make the tree again from the blob, which checks the blob.
    let tree = store.dir().join(format!("{}{OUTBOARD_SUFFIX}", c.result.to_hex()));
    if let Err(e) = std::fs::remove_file(tree)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Answer::Failed(StoreError::io("remove outboard")(e));
    }
    match cut(store, c) {
        Ok(p) if proof::verify_slice(&c.item, &c.result, c.size, &p).is_ok() => Answer::Proved(p),
        Ok(_) => Answer::Failed(StoreError::Io {
            what: "prove a copy",
            source: std::io::Error::other("a slice of a checked blob does not verify"),
        }),
        Err(StoreError::Corrupt) => discard(store, &c.result),
        Err(StoreError::NotFound) => Answer::Missing,
        Err(e) => Answer::Failed(e),
    }
}

/// The slice for `c` from the blob and its outboard tree (made first if need be).
fn cut(store: &BlobStore, c: &Challenge) -> Result<StorageProof, StoreError> {
    let len = u32::try_from(c.len.min(proof::PROOF_CHUNK_BYTES)).unwrap_or(0);
    let tree = store.ensure_outboard(&c.result)?;
    let blob = File::open(store.blob_path(&c.result)).map_err(StoreError::io("open blob"))?;
    let tree = File::open(tree).map_err(StoreError::io("open outboard"))?;
    let slice = slice::extract(BufReader::new(blob), BufReader::new(tree), c.offset, len)
        .map_err(StoreError::io("extract slice"))?;
    Ok(StorageProof { slot: c.slot, slice })
}

fn discard(store: &BlobStore, digest: &Digest) -> Answer {
    match store.remove(digest) {
        Ok(_) => Answer::Damaged,
        Err(e) => Answer::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    fn challenge(data: &[u8], slot: u64) -> Challenge {
        let (item, result, size) = (ItemId([4; 32]), Digest::of(data), data.len() as u64);
        let (offset, len) = proof::challenge(&item, &result, size, slot);
        Challenge { item, epoch: 1, slot, result, size, offset, len }
    }

    #[test]
    fn a_stored_copy_proves_every_slot_as_the_protocol_checks_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let data = blob(300 * 1024 + 77);
        store.insert(&data).unwrap();
        for slot in 0..20 {
            let c = challenge(&data, slot);
            let Answer::Proved(p) = answer(&store, &c) else { panic!("slot {slot} unproved") };
            assert!(p.slice.len() <= proof::PROOF_BYTES_MAX, "{} bytes", p.slice.len());
            assert_eq!(p, proof::prove_from_blob(&c.item, &data, slot), "the simulator's bytes");
        }
        // An empty result proves too (its challenge is empty).
        store.insert(&[]).unwrap();
        assert!(matches!(answer(&store, &challenge(&[], 7)), Answer::Proved(_)));
    }

    #[test]
    fn a_missing_copy_answers_nothing_and_a_damaged_one_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let data = blob(8 * 1024);
        assert!(matches!(answer(&store, &challenge(&data, 3)), Answer::Missing));

        // Rotted after its tree was made: the slice fails, the whole blob is judged, deleted.
        let d = store.insert(&data).unwrap();
        store.ensure_outboard(&d).unwrap();
        let mut rotten = data.clone();
        for b in &mut rotten {
            *b ^= 0x55;
        }
        fs::write(store.blob_path(&d), &rotten).unwrap();
        assert!(matches!(answer(&store, &challenge(&data, 3)), Answer::Damaged));
        assert!(!store.has(&d), "a damaged copy is not kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nor its tree");

        // A damaged tree over a sound blob is made again, and the copy proves.
        let d = store.insert(&data).unwrap();
        let tree = store.ensure_outboard(&d).unwrap();
        let mut t = fs::read(&tree).unwrap();
        for b in t.iter_mut().skip(8) {
            *b ^= 1;
        }
        fs::write(&tree, &t).unwrap();
        assert!(matches!(answer(&store, &challenge(&data, 5)), Answer::Proved(_)));
        assert!(store.has(&d));

        // Cut short: of another size than the duty says.
        fs::write(store.blob_path(&d), &data[..1000]).unwrap();
        assert!(matches!(answer(&store, &challenge(&data, 5)), Answer::Damaged));
        assert!(!store.has(&d));
    }
}
