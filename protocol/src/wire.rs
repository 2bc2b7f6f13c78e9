//! The wire format: CBOR (ciborium + serde) with hard limits checked before and after parsing.
//!
//! Every decode path goes through [`decode`]: it checks the byte length before parsing, caps
//! nesting depth, rejects trailing bytes, and then asks the value to [`Validate`] its own
//! collection and string sizes, so a peer's garbage becomes a typed [`DecodeError`], never a
//! panic or an unbounded allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The wire format version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Largest gossip envelope accepted, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Largest signed file (manifest or batch) accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deepest CBOR nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Why bytes from a peer or a file could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than the limit for this kind of message.
    #[error("message is {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    /// Nothing to decode.
    #[error("message is empty")]
    Empty,
    /// Not valid CBOR for the expected shape.
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    /// Valid CBOR followed by extra bytes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A wire version this build does not speak.
    #[error("unknown wire version {0} (this build speaks {WIRE_VERSION})")]
    UnknownVersion(u8),
    /// A collection or string over its limit.
    #[error(
        "{field} too large: {len}, over the limit of {max} (bytes for text, entries for lists)"
    )]
    TooLarge { field: &'static str, len: usize, max: usize },
    /// A value that parses but makes no sense.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Decodes, but is not the one canonical encoding of its value (CBOR allows several).
    #[error("not canonically encoded")]
    NonCanonical,
}

/// Checks the sizes of a decoded value's collections and strings.
pub trait Validate {
    /// Returns an error naming the first field over its limit.
    fn validate(&self) -> Result<(), DecodeError>;
}

/// Fails with [`DecodeError::TooLarge`] when `len > max`.
pub fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max { Err(DecodeError::TooLarge { field, len, max }) } else { Ok(()) }
}

/// Encodes a value as CBOR.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail, and our types have no serializer that errors.
    ciborium::ser::into_writer(value, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Decodes a CBOR value of at most `max_bytes`, with no trailing bytes, then validates it.
///
/// Only the canonical encoding is accepted (the value must re-encode to the same bytes), so one
/// value has exactly one byte form: a peer cannot vary a signed envelope's framing to slip past
/// content-hash deduplication, and any changed byte is an error.
pub fn decode<T: DeserializeOwned + Serialize + Validate>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLong { len: bytes.len(), max: max_bytes });
    }
    let mut rest = bytes;
    let value: T = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
        .map_err(|e| DecodeError::Cbor(short_cbor_error(&e)))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    value.validate()?;
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

fn short_cbor_error<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "truncated input".to_string(),
        ciborium::de::Error::Syntax(at) => format!("syntax error at byte {at}"),
        ciborium::de::Error::Semantic(at, msg) => match at {
            Some(at) => format!("{msg} at byte {at}"),
            None => msg.clone(),
        },
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        n: u32,
        names: Vec<String>,
    }
    impl Validate for Probe {
        fn validate(&self) -> Result<(), DecodeError> {
            check_len("names", self.names.len(), 3)
        }
    }

    #[test]
    fn round_trip_and_limits() {
        let p = Probe { n: 5, names: vec!["a".into()] };
        let bytes = encode(&p);
        assert_eq!(decode::<Probe>(&bytes, 1024), Ok(p));
        assert_eq!(
            decode::<Probe>(&bytes, 2),
            Err(DecodeError::TooLong { len: bytes.len(), max: 2 })
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode::<Probe>(&trailing, 1024), Err(DecodeError::TrailingBytes(1)));
        assert!(matches!(
            decode::<Probe>(&bytes[..bytes.len() - 1], 1024),
            Err(DecodeError::Cbor(_))
        ));
        let big = Probe { n: 1, names: vec![String::new(); 4] };
        assert!(matches!(
            decode::<Probe>(&encode(&big), 1024),
            Err(DecodeError::TooLarge { field: "names", .. })
        ));
        assert_eq!(decode::<Probe>(&[], 1024), Err(DecodeError::Empty));
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let p = Probe { n: 5, names: vec![] };
        let mut bytes = encode(&p);
        // The key "n" as a byte string instead of a text string: same value, other bytes.
        let at = bytes.windows(2).position(|w| w == [0x61, b'n']).unwrap();
        bytes[at] = 0x41;
        assert_eq!(decode::<Probe>(&bytes, 1024), Err(DecodeError::NonCanonical));
        // The integer 5 in a two-byte form.
        let mut long = encode(&p);
        let at = long.iter().position(|b| *b == 0x05).unwrap();
        long.splice(at..=at, [0x18, 0x05]);
        assert_eq!(decode::<Probe>(&long, 1024), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 100 nested one-element arrays.
        let mut bytes = vec![0x81; 100];
        bytes.push(0x00);
        assert!(decode::<Probe>(&bytes, 1024).is_err());
    }
}
