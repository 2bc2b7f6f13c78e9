//! [`BlobStore`]: result blobs on disk, named by their blake3 digest, in the node's results
//! directory (`<hex>.warc.gz`, the names the crawler gives its WARC files, so a producer holds
//! its own results without a copy).
//!
//! Beside a blob lives its outboard hash tree (`<hex>.obao`), computed once, the first time
//! the blob is served or when a download completes. A download in progress is a
//! [`Partial`](super::partial::Partial):
//! the data file `<hex>.part` and a sidecar `<hex>.part.state`. Every write goes to a temp
//! file, is fsynced and renamed; temp files a crash leaves are removed on open.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use starling_protocol::Digest;
use tempfile::NamedTempFile;

use super::{CHUNK_BYTES, slice};
use crate::crawl::warc::WARC_SUFFIX;

/// Suffix of a download in progress.
pub const PART_SUFFIX: &str = ".part";
/// Suffix of a download's sidecar.
pub const PART_STATE_SUFFIX: &str = ".part.state";
/// Suffix of a blob's outboard hash tree.
pub const OUTBOARD_SUFFIX: &str = ".obao";
/// Largest blob the store takes (bounds a sidecar's bitmap to 32 KiB).
pub const BLOB_BYTES_MAX: u64 = 64 << 30;
/// Prefix and suffix of the store's temp files.
const TEMP_PREFIX: &str = ".seed-";
const TEMP_SUFFIX: &str = ".tmp";
/// Read buffer for hashing.
const READ_BUF_BYTES: usize = 256 * 1024;

/// What went wrong with the blob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the results directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Storing would pass the operator's disk cap.
    #[error("results would pass the disk cap ({used} of {max} bytes used, {need} more needed)")]
    DiskCap {
        /// Bytes stored now.
        used: u64,
        /// Bytes needed.
        need: u64,
        /// The cap.
        max: u64,
    },
    /// Over [`BLOB_BYTES_MAX`].
    #[error("blob of {0} bytes is over the store's limit of {BLOB_BYTES_MAX}")]
    TooLarge(u64),
    /// The bytes do not hash to the digest they are stored under.
    #[error("blob does not match its digest")]
    Corrupt,
    /// Another download of the same blob is running in this process.
    #[error("blob is already being fetched")]
    InUse,
    /// Not in the store.
    #[error("no such blob")]
    NotFound,
    /// A range outside the blob, or a chunk of the wrong length.
    #[error("range {offset}+{len} does not fit a blob of {size} bytes")]
    BadRange {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// The blob's size.
        size: u64,
    },
    /// A download finished before every chunk was written.
    #[error("download is not complete")]
    Incomplete,
}

impl StoreError {
    pub(super) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// Content-addressed blobs in one directory.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    disk_bytes_max: Option<u64>,
    /// Digests with a live `Partial`: one download per blob at a time.
    pub(super) partials: Mutex<HashSet<Digest>>,
}

impl BlobStore {
    /// Opens (creating) the store in `dir` with an optional cap on stored bytes, and removes
    /// temp files an earlier run left behind.
    pub fn open(dir: impl Into<PathBuf>, disk_bytes_max: Option<u64>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(StoreError::io("create results dir"))?;
        for entry in fs::read_dir(&dir).map_err(StoreError::io("list results dir"))? {
            let entry = entry.map_err(StoreError::io("list results dir"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(entry.path()).map_err(StoreError::io("remove temp file"))?;
            }
        }
        Ok(Self { dir, disk_bytes_max, partials: Mutex::new(HashSet::new()) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob is (or would be).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}{WARC_SUFFIX}", digest.to_hex()))
    }

    pub(super) fn named(&self, digest: &Digest, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", digest.to_hex()))
    }

    /// Whether the blob is stored whole.
    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The blob's size, if stored.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("stat blob")(e)),
        }
    }

    /// `len` bytes of a stored blob from `offset` (unverified: what is on disk).
    pub fn read_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let size = self.size(digest)?.ok_or(StoreError::NotFound)?;
        check_range(offset, u64::from(len), size)?;
        let mut f = File::open(self.blob_path(digest)).map_err(StoreError::io("open blob"))?;
        f.seek(SeekFrom::Start(offset)).map_err(StoreError::io("seek blob"))?;
        let mut out = vec![0; len as usize];
        f.read_exact(&mut out).map_err(StoreError::io("read blob"))?;
        Ok(out)
    }

    /// Bytes the seeding store takes on disk: blobs, outboard trees and downloads in progress.
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for entry in fs::read_dir(&self.dir).map_err(StoreError::io("list results dir"))? {
            let entry = entry.map_err(StoreError::io("list results dir"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let counted = [WARC_SUFFIX, OUTBOARD_SUFFIX, PART_SUFFIX, PART_STATE_SUFFIX]
                .iter()
                .any(|s| name.ends_with(s));
            if counted {
                let len = entry.metadata().map_err(StoreError::io("stat results file"))?.len();
                total = total.saturating_add(len);
            }
        }
        Ok(total)
    }

    /// Fails with [`StoreError::DiskCap`] unless `need` more bytes fit under the cap.
    pub fn check_room(&self, need: u64) -> Result<(), StoreError> {
        let Some(max) = self.disk_bytes_max else { return Ok(()) };
        let used = self.stored_bytes()?;
        if used.saturating_add(need) > max {
            return Err(StoreError::DiskCap { used, need, max });
        }
        Ok(())
    }

    /// Whether the store is at or over its cap (an unreadable directory counts as full).
    pub fn over_disk_cap(&self) -> bool {
        self.check_room(1).is_err()
    }

    /// Stores `bytes` under their digest (temp file, fsync, rename).
    pub fn insert(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if self.has(&digest) {
            return Ok(digest);
        }
        self.check_room(bytes.len() as u64)?;
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes).map_err(StoreError::io("write blob"))?;
        self.persist(tmp, &self.blob_path(&digest))?;
        Ok(digest)
    }

    /// The path of the blob's outboard tree, computing it (and checking the blob against its
    /// digest on the way) the first time.
    pub fn ensure_outboard(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        let size = self.size(digest)?.ok_or(StoreError::NotFound)?;
        let path = self.named(digest, OUTBOARD_SUFFIX);
        if fs::metadata(&path).is_ok_and(|m| m.len() == slice::outboard_size(size)) {
            return Ok(path);
        }
        let mut blob = File::open(self.blob_path(digest)).map_err(StoreError::io("open blob"))?;
        let tree = self.compute_outboard(&mut blob, digest)?;
        self.persist(tree, &path)?;
        Ok(path)
    }

    /// The verifiable slice for `len` bytes at `offset`, and the blob's size.
    pub fn read_slice(
        &self,
        digest: &Digest,
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let size = self.size(digest)?.ok_or(StoreError::NotFound)?;
        check_range(offset, u64::from(len), size)?;
        if len == 0 {
            return Err(StoreError::BadRange { offset, len: 0, size });
        }
        let tree = self.ensure_outboard(digest)?;
        let blob = File::open(self.blob_path(digest)).map_err(StoreError::io("open blob"))?;
        let tree = File::open(tree).map_err(StoreError::io("open outboard"))?;
        let bytes = slice::extract(BufReader::new(blob), BufReader::new(tree), offset, len)
            .map_err(StoreError::io("extract slice"))?;
        Ok((size, bytes))
    }

    /// Deletes a blob and its outboard tree (a copy found damaged, or one a test drops);
    /// whether there was a blob. A download in progress of the same digest is left alone.
    pub fn remove(&self, digest: &Digest) -> Result<bool, StoreError> {
        let gone = |r: io::Result<()>| match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove blob")(e)),
        };
        let had = gone(fs::remove_file(self.blob_path(digest)))?;
        gone(fs::remove_file(self.named(digest, OUTBOARD_SUFFIX)))?;
        self.sync_dir()?;
        Ok(had)
    }

    /// Hashes `src` from its start into a new outboard tree; fails with
    /// [`StoreError::Corrupt`] when its root is not `digest`.
    pub(super) fn compute_outboard(
        &self,
        src: &mut File,
        digest: &Digest,
    ) -> Result<NamedTempFile, StoreError> {
        src.seek(SeekFrom::Start(0)).map_err(StoreError::io("seek blob"))?;
        let mut tree = self.temp_file()?;
        let mut encoder = bao::encode::Encoder::new_outboard(tree.as_file_mut());
        let mut reader = BufReader::with_capacity(READ_BUF_BYTES, src);
        io::copy(&mut reader, &mut encoder).map_err(StoreError::io("hash blob"))?;
        let root = encoder.finalize().map_err(StoreError::io("write outboard"))?;
        if root.as_bytes() != digest.as_bytes() {
            return Err(StoreError::Corrupt);
        }
        Ok(tree)
    }

    pub(super) fn temp_file(&self) -> Result<NamedTempFile, StoreError> {
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(TEMP_SUFFIX)
            .tempfile_in(&self.dir)
            .map_err(StoreError::io("create temp file"))
    }

    /// Fsyncs a temp file and renames it to `path`, then fsyncs the directory.
    pub(super) fn persist(&self, tmp: NamedTempFile, path: &Path) -> Result<(), StoreError> {
        tmp.as_file().sync_all().map_err(StoreError::io("sync file"))?;
        tmp.persist(path).map_err(|e| StoreError::io("rename file")(e.error))?;
        self.sync_dir()
    }

    pub(super) fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(StoreError::io("sync results dir"))
    }
}

fn check_range(offset: u64, len: u64, size: u64) -> Result<(), StoreError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(StoreError::BadRange { offset, len, size }),
    }
}

/// Chunks in a blob of `size` bytes.
pub fn chunk_count(size: u64) -> u32 {
    // size is capped at BLOB_BYTES_MAX, so the count fits a u32.
    u32::try_from(size.div_ceil(u64::from(CHUNK_BYTES))).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::seed::partial::Partial;

    fn blob(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(i as u8 >> 3)).collect()
    }

    #[test]
    fn blobs_are_named_by_digest_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let data = blob(1000, 7);
        let d = store.insert(&data).unwrap();
        assert_eq!(d, Digest::of(&data));
        assert!(store.has(&d));
        assert_eq!(store.size(&d).unwrap(), Some(1000));
        assert_eq!(store.read_range(&d, 10, 20).unwrap(), &data[10..30]);
        assert!(matches!(store.read_range(&d, 990, 20), Err(StoreError::BadRange { .. })));
        assert_eq!(store.stored_bytes().unwrap(), 1000);
        assert!(!store.has(&Digest([1; 32])));
        assert!(matches!(store.read_slice(&Digest([1; 32]), 0, 1), Err(StoreError::NotFound)));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(names.len(), 1, "no temp files left");
    }

    #[test]
    fn the_outboard_is_made_once_and_a_corrupt_blob_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let data = blob(3 * CHUNK_BYTES as usize, 3);
        let d = store.insert(&data).unwrap();
        let (size, s) = store.read_slice(&d, u64::from(CHUNK_BYTES), CHUNK_BYTES).unwrap();
        assert_eq!(size, data.len() as u64);
        assert!(slice::verify(&d, u64::from(CHUNK_BYTES), CHUNK_BYTES, &s).is_ok());
        let tree = store.ensure_outboard(&d).unwrap();
        assert_eq!(fs::metadata(&tree).unwrap().len(), slice::outboard_size(size));

        // A blob whose bytes rotted on disk never gets an outboard (so is never served).
        let mut bad = blob(5000, 9);
        let bad_digest = Digest::of(&bad);
        bad[100] ^= 1;
        fs::write(store.blob_path(&bad_digest), &bad).unwrap();
        assert!(matches!(store.ensure_outboard(&bad_digest), Err(StoreError::Corrupt)));
    }

    #[test]
    fn a_removed_blob_takes_its_outboard_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let d = store.insert(&blob(5000, 5)).unwrap();
        store.ensure_outboard(&d).unwrap();
        assert!(store.remove(&d).unwrap());
        assert!(!store.has(&d));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left");
        assert!(!store.remove(&d).unwrap(), "removing it again is no error");
    }

    #[test]
    fn the_disk_cap_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), Some(1500)).unwrap());
        store.insert(&blob(1000, 1)).unwrap();
        assert!(!store.over_disk_cap());
        assert!(matches!(store.insert(&blob(1000, 2)), Err(StoreError::DiskCap { .. })));
        let err = Partial::open(&store, Digest([2; 32]), 1000).unwrap_err();
        assert!(matches!(err, StoreError::DiskCap { used: 1000, .. }), "{err}");
        assert!(!store.dir().join(format!("{}{PART_SUFFIX}", Digest([2; 32]).to_hex())).exists());
        // The slot was released: the same digest can be tried again.
        assert!(matches!(
            Partial::open(&store, Digest([2; 32]), 1000),
            Err(StoreError::DiskCap { .. })
        ));
    }
}
