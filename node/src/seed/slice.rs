//! BLAKE3 verified streaming for one chunk: a holder cuts a slice (the chunk's bytes with the
//! hash-tree nodes that prove them) out of a blob and its outboard tree; a receiver checks the
//! slice against the blob's digest alone, before it writes a byte.
//!
//! The format is `bao`'s: the root of the tree is the plain blake3 hash of the blob, so the
//! digest in a receipt is all a receiver needs. The outboard tree (about 1/16 of the blob) is
//! computed once per blob by [`super::store::BlobStore`] and kept beside it.

use std::io::{self, Read, Seek};

use starling_protocol::Digest;

use super::CHUNK_BYTES;

/// Largest slice a holder sends or a receiver accepts: a chunk's content plus the proof
/// (the parent nodes under and above it, two partial 1 KiB leaves at unaligned edges, the
/// 8-byte length header) with room to spare.
pub const SLICE_BYTES_MAX: usize = CHUNK_BYTES as usize + CHUNK_BYTES as usize / 8 + 16 * 1024;

/// Why a received slice was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SliceError {
    /// The proof or the content does not hash to the digest.
    #[error("slice does not verify against the digest")]
    Invalid,
    /// Over [`SLICE_BYTES_MAX`].
    #[error("slice is {0} bytes, over the limit")]
    TooLarge(usize),
    /// Verified, but holds another number of content bytes than asked for.
    #[error("slice holds {got} content bytes, expected {want}")]
    WrongLength {
        /// Content bytes in the slice.
        got: usize,
        /// Content bytes asked for.
        want: usize,
    },
    /// Bytes left over after the proof and content.
    #[error("{0} stray bytes after the slice")]
    Trailing(usize),
}

/// Size in bytes of the outboard tree of a blob of `size` bytes.
pub fn outboard_size(size: u64) -> u64 {
    // At most size/16 + 8 for any u64 size, so the narrowing cannot fail.
    u64::try_from(bao::encode::outboard_size(size)).unwrap_or(u64::MAX)
}

/// Cuts the slice for `len` bytes at `offset` out of a blob and its outboard tree.
pub fn extract(
    blob: impl Read + Seek,
    outboard: impl Read + Seek,
    offset: u64,
    len: u32,
) -> io::Result<Vec<u8>> {
    let extractor =
        bao::encode::SliceExtractor::new_outboard(blob, outboard, offset, u64::from(len));
    let mut out = Vec::with_capacity(len as usize + 4096);
    extractor.take(SLICE_BYTES_MAX as u64 + 1).read_to_end(&mut out)?;
    if out.len() > SLICE_BYTES_MAX {
        return Err(io::Error::other("slice over its size limit"));
    }
    Ok(out)
}

/// Checks a slice for `len` bytes at `offset` of the blob named `digest`; returns the content.
pub fn verify(digest: &Digest, offset: u64, len: u32, slice: &[u8]) -> Result<Vec<u8>, SliceError> {
    if slice.len() > SLICE_BYTES_MAX {
        return Err(SliceError::TooLarge(slice.len()));
    }
    let hash = bao::Hash::from(digest.0);
    let mut decoder = bao::decode::SliceDecoder::new(slice, &hash, offset, u64::from(len));
    let mut out = Vec::with_capacity(len as usize);
    (&mut decoder)
        .take(u64::from(len) + 1)
        .read_to_end(&mut out)
        .map_err(|_| SliceError::Invalid)?;
    if out.len() != len as usize {
        return Err(SliceError::WrongLength { got: out.len(), want: len as usize });
    }
    let rest = decoder.into_inner();
    if !rest.is_empty() {
        return Err(SliceError::Trailing(rest.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn slices_verify_and_any_changed_byte_is_refused() {
        let data = blob(3 * CHUNK_BYTES as usize + 1000);
        let (outboard, hash) = bao::encode::outboard(&data);
        let digest = Digest(*hash.as_bytes());
        assert_eq!(digest, Digest::of(&data), "bao root is the blake3 hash");
        assert_eq!(outboard.len() as u64, outboard_size(data.len() as u64));
        let (offset, len) = (u64::from(CHUNK_BYTES), CHUNK_BYTES);
        let slice = extract(Cursor::new(&data), Cursor::new(&outboard), offset, len).unwrap();
        let got = verify(&digest, offset, len, &slice).unwrap();
        assert_eq!(got, &data[CHUNK_BYTES as usize..2 * CHUNK_BYTES as usize]);

        for at in [8, 100, slice.len() / 2, slice.len() - 1] {
            let mut bad = slice.clone();
            bad[at] ^= 1;
            assert!(verify(&digest, offset, len, &bad).is_err(), "flip at {at} accepted");
        }
        // The 8-byte length header is only authenticated where it changes the tree's shape
        // (bao checks it fully with the last chunk); a change that slips through cannot
        // change the content, and the whole-blob check catches a wrong length anyway.
        for at in 0..8 {
            let mut bad = slice.clone();
            bad[at] ^= 1;
            if let Ok(content) = verify(&digest, offset, len, &bad) {
                assert_eq!(content, got, "flip at {at} changed the content");
            }
        }
        assert!(verify(&digest, 0, len, &slice).is_err(), "slice accepted at another offset");
        assert!(verify(&Digest([0; 32]), offset, len, &slice).is_err());
        let mut long = slice.clone();
        long.push(0);
        assert_eq!(verify(&digest, offset, len, &long), Err(SliceError::Trailing(1)));
        assert!(verify(&digest, offset, len, &slice[..slice.len() - 1]).is_err());
    }

    #[test]
    fn the_last_short_chunk_and_unaligned_slices_fit_the_limit() {
        let data = blob(5 * CHUNK_BYTES as usize + 777);
        let (outboard, hash) = bao::encode::outboard(&data);
        let digest = Digest(*hash.as_bytes());
        let last = 5 * u64::from(CHUNK_BYTES);
        let slice = extract(Cursor::new(&data), Cursor::new(&outboard), last, 777).unwrap();
        assert_eq!(verify(&digest, last, 777, &slice).unwrap(), &data[last as usize..]);
        // The worst case for the proof's size: a full chunk that straddles 1 KiB leaves.
        let slice = extract(Cursor::new(&data), Cursor::new(&outboard), 1023, CHUNK_BYTES).unwrap();
        assert!(slice.len() <= SLICE_BYTES_MAX, "{} bytes", slice.len());
        assert_eq!(verify(&digest, 1023, CHUNK_BYTES, &slice).unwrap().len(), CHUNK_BYTES as usize);
    }
}
