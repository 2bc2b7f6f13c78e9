//! The blob protocol `/starling/blob/1.0.0`: one request (a range of a blob) and one response
//! (the range as a verifiable slice, or why not) per stream, as canonical CBOR through
//! [`starling_protocol::wire`], with both sizes capped before parsing.
//!
//! [`BlobCodec`] plugs the messages into libp2p's request-response behaviour; build it with
//! [`behaviour`].

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::{StreamProtocol, request_response};
use serde::{Deserialize, Serialize};
use starling_protocol::Digest;
use starling_protocol::wire::{self, DecodeError, Validate, check_len};

use super::CHUNK_BYTES;
use super::slice::SLICE_BYTES_MAX;
use crate::net::{read_capped, write_all};

/// The protocol name.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/starling/blob/1.0.0");
/// Largest encoded request.
pub const REQUEST_BYTES_MAX: usize = 128;
/// Largest encoded response: a slice and its framing.
pub const RESPONSE_BYTES_MAX: usize = SLICE_BYTES_MAX + 64;
/// How long one request may take, end to end.
pub const BLOB_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent blob streams per connection.
pub const BLOB_STREAMS_MAX: usize = 16;

/// A request for part of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobRequest {
    /// `len` bytes (1 to [`CHUNK_BYTES`]) of `digest` from `offset`.
    Get {
        /// The blob.
        digest: Digest,
        /// First byte.
        offset: u64,
        /// Bytes wanted.
        len: u32,
    },
    /// The port of this peer's BitTorrent listener (for torrent seeding duties).
    TorrentAddr,
}

/// The answer to a [`BlobRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobResponse {
    /// The range as a `bao` slice (content and proof), checkable against the digest alone.
    Slice {
        /// The whole blob's size.
        total_size: u64,
        /// The slice.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// This peer does not hold the blob.
    NotFound,
    /// This peer is serving as much as it will; ask again later or elsewhere.
    Busy,
    /// The range is not inside the blob.
    BadRange {
        /// The whole blob's size.
        total_size: u64,
    },
    /// The port this peer's BitTorrent listener takes peers on (0: it runs none), on the IP
    /// the asker reached it at.
    TorrentAddr {
        /// The port.
        port: u16,
    },
}

impl Validate for BlobRequest {
    fn validate(&self) -> Result<(), DecodeError> {
        let BlobRequest::Get { offset, len, .. } = self else { return Ok(()) };
        if *len == 0 {
            return Err(DecodeError::Invalid("empty range"));
        }
        check_len("len", *len as usize, CHUNK_BYTES as usize)?;
        if offset.checked_add(u64::from(*len)).is_none() {
            return Err(DecodeError::Invalid("range overflows"));
        }
        Ok(())
    }
}

impl Validate for BlobResponse {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            BlobResponse::Slice { bytes, .. } => check_len("slice", bytes.len(), SLICE_BYTES_MAX),
            BlobResponse::NotFound
            | BlobResponse::Busy
            | BlobResponse::BadRange { .. }
            | BlobResponse::TorrentAddr { .. } => Ok(()),
        }
    }
}

impl BlobRequest {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and checks a request from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, REQUEST_BYTES_MAX)
    }
}

impl BlobResponse {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and checks a response from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, RESPONSE_BYTES_MAX)
    }
}

/// The request-response behaviour for the blob protocol, with Starling's limits.
pub fn behaviour() -> request_response::Behaviour<BlobCodec> {
    request_response::Behaviour::with_codec(
        BlobCodec,
        [(BLOB_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(BLOB_TIMEOUT)
            .with_max_concurrent_streams(BLOB_STREAMS_MAX),
    )
}

/// [`BlobRequest`] out, [`BlobResponse`] back, one message per stream, each capped.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlobCodec;

fn invalid(e: DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        BlobRequest::decode(&read_capped(io, REQUEST_BYTES_MAX).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        BlobResponse::decode(&read_capped(io, RESPONSE_BYTES_MAX).await?).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlobRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, req.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: BlobResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all(io, res.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn get(offset: u64, len: u32) -> BlobRequest {
        BlobRequest::Get { digest: Digest([7; 32]), offset, len }
    }

    #[test]
    fn messages_round_trip() {
        let req = get(u64::from(CHUNK_BYTES) * 3, CHUNK_BYTES);
        assert_eq!(BlobRequest::decode(&req.encode()), Ok(req.clone()));
        assert!(req.encode().len() <= REQUEST_BYTES_MAX);
        let full = BlobResponse::Slice { total_size: u64::MAX, bytes: vec![1; SLICE_BYTES_MAX] };
        assert!(full.encode().len() <= RESPONSE_BYTES_MAX);
        for res in [
            full,
            BlobResponse::NotFound,
            BlobResponse::Busy,
            BlobResponse::BadRange { total_size: 5 },
        ] {
            assert_eq!(BlobResponse::decode(&res.encode()), Ok(res));
        }
    }

    #[test]
    fn out_of_bounds_requests_and_responses_are_refused() {
        assert!(BlobRequest::decode(&get(0, 0).encode()).is_err());
        assert!(matches!(
            BlobRequest::decode(&get(0, CHUNK_BYTES + 1).encode()),
            Err(DecodeError::TooLarge { field: "len", .. })
        ));
        assert!(BlobRequest::decode(&get(u64::MAX, 1).encode()).is_err());
        let big = BlobResponse::Slice { total_size: 1, bytes: vec![0; SLICE_BYTES_MAX + 1] };
        assert!(matches!(BlobResponse::decode(&big.encode()), Err(DecodeError::TooLarge { .. })));
        let huge = BlobResponse::Slice { total_size: 1, bytes: vec![0; RESPONSE_BYTES_MAX] };
        assert!(matches!(BlobResponse::decode(&huge.encode()), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn the_codec_caps_what_it_reads() {
        let mut codec = BlobCodec;
        let run = |bytes: Vec<u8>| {
            let mut io = futures::io::Cursor::new(bytes);
            futures::executor::block_on(request_response::Codec::read_request(
                &mut BlobCodec,
                &BLOB_PROTOCOL,
                &mut io,
            ))
        };
        assert_eq!(run(get(1, 2).encode()).unwrap(), get(1, 2));
        assert!(run(vec![0xff; REQUEST_BYTES_MAX + 1]).is_err());
        assert!(run(Vec::new()).is_err());
        let mut out = futures::io::Cursor::new(Vec::new());
        futures::executor::block_on(request_response::Codec::write_response(
            &mut codec,
            &BLOB_PROTOCOL,
            &mut out,
            BlobResponse::Busy,
        ))
        .unwrap();
        assert_eq!(BlobResponse::decode(out.get_ref()), Ok(BlobResponse::Busy));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = BlobRequest::decode(&bytes);
            let _ = BlobResponse::decode(&bytes);
        }

        #[test]
        fn a_flipped_byte_is_an_error_or_another_valid_message(
            offset in any::<u64>(), len in 1..=CHUNK_BYTES, at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let req = BlobRequest::Get { digest: Digest([3; 32]), offset, len };
            let mut bytes = req.encode();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(other) = BlobRequest::decode(&bytes) {
                prop_assert_ne!(other.clone(), req);
                prop_assert_eq!(other.encode(), bytes, "decoded bytes are canonical");
            }
        }

        #[test]
        fn truncated_responses_are_errors(len in 0usize..2048, cut in any::<prop::sample::Index>()) {
            let res = BlobResponse::Slice { total_size: len as u64, bytes: vec![0xab; len] };
            let bytes = res.encode();
            let n = cut.index(bytes.len());
            prop_assert!(BlobResponse::decode(&bytes[..n]).is_err());
        }
    }
}
