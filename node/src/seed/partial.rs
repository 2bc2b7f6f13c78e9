//! [`Partial`]: a resumable download of one blob into a [`BlobStore`].
//!
//! The data file `<hex>.part` is made at the blob's final size; the sidecar
//! `<hex>.part.state` records which chunks were verified and written. A chunk's data is fsynced
//! before the sidecar names it, and the sidecar is replaced by rename, so after a kill the
//! sidecar never claims a chunk that is not on disk: a resumed download refetches only the
//! chunks it does not list. A sidecar that is torn, from another version, or for another size
//! is ignored and the download starts over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use starling_protocol::Digest;

use super::store::{
    BLOB_BYTES_MAX, BlobStore, OUTBOARD_SUFFIX, PART_STATE_SUFFIX, PART_SUFFIX, StoreError,
    chunk_count,
};
use super::{CHUNK_BYTES, slice};

/// Sidecar layout: magic, version, digest, size, chunk bytes, bitmap, then a checksum.
const STATE_MAGIC: &[u8; 8] = b"STRLPART";
const STATE_VERSION: u8 = 1;
const STATE_HEAD_BYTES: usize = 8 + 1 + 32 + 8 + 4;
const STATE_CHECK_BYTES: usize = 16;

/// A resumable download of one blob; only one per blob exists at a time in a process.
#[derive(Debug)]
pub struct Partial {
    /// Holds the blob's download slot; releases it when the partial is dropped.
    slot: Slot,
    size: u64,
    data: File,
    /// One bit per chunk: verified and on disk.
    verified: Vec<u8>,
}

impl Partial {
    /// Opens the download of `digest` (`size` bytes), resuming a sidecar that matches it, or
    /// starting afresh (after checking the disk cap) when there is none or it does not match.
    pub fn open(store: &Arc<BlobStore>, digest: Digest, size: u64) -> Result<Self, StoreError> {
        if size > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge(size));
        }
        {
            let mut live = store.partials.lock().unwrap_or_else(|e| e.into_inner());
            if !live.insert(digest) {
                return Err(StoreError::InUse);
            }
        }
        // From here on, dropping the slot (alone or in `Self`) releases the digest again.
        let slot = Slot { store: store.clone(), digest };
        let data_path = store.named(&digest, PART_SUFFIX);
        let state_path = store.named(&digest, PART_STATE_SUFFIX);
        if let Some(verified) = load_state(&state_path, &digest, size)
            && fs::metadata(&data_path).is_ok_and(|m| m.len() == size)
        {
            let data = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&data_path)
                .map_err(StoreError::io("open partial download"))?;
            return Ok(Self { slot, size, data, verified });
        }
        for stale in [&state_path, &data_path] {
            match fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove stale download")(e)),
            }
        }
        store.check_room(size.saturating_add(slice::outboard_size(size)))?;
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&data_path)
            .map_err(StoreError::io("create partial download"))?;
        data.set_len(size).map_err(StoreError::io("size partial download"))?;
        let bits = (chunk_count(size) as usize).div_ceil(8);
        let p = Self { slot, size, data, verified: vec![0; bits] };
        p.save_state()?;
        Ok(p)
    }

    /// The blob being fetched.
    pub fn digest(&self) -> Digest {
        self.slot.digest
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many chunks it has.
    pub fn chunk_count(&self) -> u32 {
        chunk_count(self.size)
    }

    /// Offset and length of chunk `i`.
    pub fn chunk_range(&self, i: u32) -> (u64, u32) {
        let offset = u64::from(i) * u64::from(CHUNK_BYTES);
        let len = self.size.saturating_sub(offset).min(u64::from(CHUNK_BYTES));
        (offset, len as u32)
    }

    /// Whether chunk `i` is verified and on disk.
    pub fn is_verified(&self, i: u32) -> bool {
        self.verified.get(i as usize / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Chunks still to fetch, in order.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.chunk_count()).filter(|i| !self.is_verified(*i)).collect()
    }

    /// Bytes verified and on disk.
    pub fn verified_bytes(&self) -> u64 {
        (0..self.chunk_count())
            .filter(|i| self.is_verified(*i))
            .map(|i| u64::from(self.chunk_range(i).1))
            .sum()
    }

    /// Writes chunk `i` (already verified by the caller), makes it durable, then records it.
    pub fn write_chunk(&mut self, i: u32, bytes: &[u8]) -> Result<(), StoreError> {
        let (offset, len) = self.chunk_range(i);
        if i >= self.chunk_count() || bytes.len() != len as usize {
            return Err(StoreError::BadRange { offset, len: bytes.len() as u64, size: self.size });
        }
        self.data.seek(SeekFrom::Start(offset)).map_err(StoreError::io("seek download"))?;
        self.data.write_all(bytes).map_err(StoreError::io("write download"))?;
        self.data.sync_data().map_err(StoreError::io("sync download"))?;
        self.verified[i as usize / 8] |= 1 << (i % 8);
        self.save_state()
    }

    /// Checks the whole file against the digest and moves it into the store (with its
    /// outboard tree). On a mismatch the download is deleted and [`StoreError::Corrupt`]
    /// returned, so the next attempt starts clean.
    pub fn finish(mut self) -> Result<PathBuf, StoreError> {
        if !self.missing().is_empty() {
            return Err(StoreError::Incomplete);
        }
        let store = self.slot.store.clone();
        let tree = match store.compute_outboard(&mut self.data, &self.slot.digest) {
            Ok(t) => t,
            Err(StoreError::Corrupt) => {
                self.remove_files()?;
                return Err(StoreError::Corrupt);
            }
            Err(e) => return Err(e),
        };
        self.data.sync_all().map_err(StoreError::io("sync download"))?;
        store.persist(tree, &store.named(&self.slot.digest, OUTBOARD_SUFFIX))?;
        let blob = store.blob_path(&self.slot.digest);
        fs::rename(store.named(&self.slot.digest, PART_SUFFIX), &blob)
            .map_err(StoreError::io("move download into store"))?;
        store.sync_dir()?;
        let _ = fs::remove_file(store.named(&self.slot.digest, PART_STATE_SUFFIX));
        Ok(blob)
    }

    /// Deletes the download and its sidecar.
    pub fn discard(self) -> Result<(), StoreError> {
        self.remove_files()
    }

    fn remove_files(&self) -> Result<(), StoreError> {
        for suffix in [PART_STATE_SUFFIX, PART_SUFFIX] {
            match fs::remove_file(self.slot.store.named(&self.slot.digest, suffix)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove download")(e)),
            }
        }
        Ok(())
    }

    fn save_state(&self) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(STATE_HEAD_BYTES + self.verified.len() + 16);
        bytes.extend_from_slice(STATE_MAGIC);
        bytes.push(STATE_VERSION);
        bytes.extend_from_slice(self.slot.digest.as_bytes());
        bytes.extend_from_slice(&self.size.to_le_bytes());
        bytes.extend_from_slice(&CHUNK_BYTES.to_le_bytes());
        bytes.extend_from_slice(&self.verified);
        let check = blake3::hash(&bytes);
        bytes.extend_from_slice(&check.as_bytes()[..STATE_CHECK_BYTES]);
        let mut tmp = self.slot.store.temp_file()?;
        tmp.write_all(&bytes).map_err(StoreError::io("write download state"))?;
        tmp.as_file().sync_data().map_err(StoreError::io("sync download state"))?;
        // No directory fsync: a lost rename only costs refetching the chunks it named.
        tmp.persist(self.slot.store.named(&self.slot.digest, PART_STATE_SUFFIX))
            .map_err(|e| StoreError::io("rename download state")(e.error))?;
        Ok(())
    }
}

/// A digest's download slot in its store, released on drop.
#[derive(Debug)]
struct Slot {
    store: Arc<BlobStore>,
    digest: Digest,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.store.partials.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.digest);
    }
}

/// The verified-chunk bitmap of a sidecar, if it is whole and describes this download.
fn load_state(path: &Path, digest: &Digest, size: u64) -> Option<Vec<u8>> {
    let bytes = fs::read(path).ok()?;
    let bits = (chunk_count(size) as usize).div_ceil(8);
    if bytes.len() != STATE_HEAD_BYTES + bits + STATE_CHECK_BYTES {
        return None;
    }
    let (body, check) = bytes.split_at(bytes.len() - STATE_CHECK_BYTES);
    if &blake3::hash(body).as_bytes()[..STATE_CHECK_BYTES] != check {
        return None;
    }
    let mut expected = Vec::with_capacity(STATE_HEAD_BYTES);
    expected.extend_from_slice(STATE_MAGIC);
    expected.push(STATE_VERSION);
    expected.extend_from_slice(digest.as_bytes());
    expected.extend_from_slice(&size.to_le_bytes());
    expected.extend_from_slice(&CHUNK_BYTES.to_le_bytes());
    (body[..STATE_HEAD_BYTES] == expected[..]).then(|| body[STATE_HEAD_BYTES..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3)).collect()
    }

    #[test]
    fn a_partial_resumes_from_its_sidecar_and_finishes_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), None).unwrap());
        let data = blob(2 * CHUNK_BYTES as usize + 10, 5);
        let d = Digest::of(&data);
        let chunk = |i: u32| {
            let at = (i * CHUNK_BYTES) as usize;
            &data[at..(at + CHUNK_BYTES as usize).min(data.len())]
        };
        let mut p = Partial::open(&store, d, data.len() as u64).unwrap();
        assert_eq!(p.chunk_count(), 3);
        assert_eq!(p.chunk_range(2), (2 * u64::from(CHUNK_BYTES), 10));
        assert!(matches!(Partial::open(&store, d, data.len() as u64), Err(StoreError::InUse)));
        p.write_chunk(2, chunk(2)).unwrap();
        assert!(p.write_chunk(1, &[0; 3]).is_err());
        drop(p); // killed

        let mut p = Partial::open(&store, d, data.len() as u64).unwrap();
        assert_eq!(p.missing(), vec![0, 1]);
        assert_eq!(p.verified_bytes(), 10);
        p.write_chunk(0, chunk(0)).unwrap();
        assert!(matches!(p.finish(), Err(StoreError::Incomplete)));

        let mut p = Partial::open(&store, d, data.len() as u64).unwrap();
        assert_eq!(p.missing(), vec![1]);
        p.write_chunk(1, chunk(1)).unwrap();
        let path = p.finish().unwrap();
        assert_eq!(fs::read(path).unwrap(), data);
        assert!(store.has(&d));
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "blob and outboard only: {left:?}");
    }

    #[test]
    fn a_mismatched_or_torn_sidecar_starts_over_and_a_wrong_blob_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), None).unwrap());
        let d = Digest([9; 32]);
        let mut p = Partial::open(&store, d, 100).unwrap();
        p.write_chunk(0, &[1; 100]).unwrap();
        drop(p);
        // Another size for the same digest: nothing carried over.
        let p = Partial::open(&store, d, 200).unwrap();
        assert_eq!(p.missing(), vec![0]);
        drop(p);
        let state = store.named(&d, PART_STATE_SUFFIX);
        let mut bytes = fs::read(&state).unwrap();
        bytes[STATE_HEAD_BYTES] ^= 1; // the bitmap, without fixing the checksum
        fs::write(&state, bytes).unwrap();
        let mut p = Partial::open(&store, d, 200).unwrap();
        assert_eq!(p.missing(), vec![0]);
        p.write_chunk(0, &[1; 200]).unwrap();
        assert!(matches!(p.finish(), Err(StoreError::Corrupt)));
        assert!(!store.named(&d, PART_SUFFIX).exists());
        assert!(!store.has(&d));
    }
}
