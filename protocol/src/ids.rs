//! Identifiers: 32-byte newtypes for nodes, projects, items and result digests.
//!
//! Each id displays in a short form (the first 8 hex digits) for logs and dashboards, and has a
//! full string form (64 hex digits) that round-trips through [`std::str::FromStr`] for the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A malformed id string given on a command line or in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// Not 64 hexadecimal digits.
    #[error("expected 64 hex digits, got {0} characters")]
    Length(usize),
    /// A character outside `0-9a-f`.
    #[error("id is not hexadecimal")]
    NotHex,
}

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(#[serde(with = "serde_bytes")] pub [u8; 32]);

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                cmp_bytes32(&self.0, &other.0)
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// First 8 hex digits, for logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Full 64-hex-digit form; parses back with `FromStr`.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if f.alternate() {
                    f.write_str(&self.to_hex())
                } else {
                    f.write_str(&self.short())
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self)
            }
        }
    };
}

/// The byte-wise (lexicographic) order of two ids, compared as four big-endian words. Ids are
/// the keys of the engine's ordered maps; comparing words inline instead of calling `memcmp`
/// made those look-ups a tenth of a simulated run's time cheaper. The order is the same.
#[inline]
fn cmp_bytes32(a: &[u8; 32], b: &[u8; 32]) -> std::cmp::Ordering {
    for i in 0..4 {
        let word = |x: &[u8; 32]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&x[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        match word(a).cmp(&word(b)) {
            std::cmp::Ordering::Equal => {}
            unequal => return unequal,
        }
    }
    std::cmp::Ordering::Equal
}

fn parse_hex32(s: &str) -> Result<[u8; 32], IdParseError> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(IdParseError::Length(s.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError::NotHex)?;
    Ok(out)
}

id32!(
    /// A node: the bytes of its ed25519 public key (the same key its libp2p PeerId comes from).
    NodeId,
    "NodeId"
);
id32!(
    /// A project: `blake3("starling/v1/project-id" ‖ owner key ‖ name)`, stable across manifest versions.
    ProjectId,
    "ProjectId"
);
id32!(
    /// A work item: `blake3(project id ‖ canonical item bytes)`.
    ItemId,
    "ItemId"
);
id32!(
    /// A result's blake3 digest; results are addressed by it.
    Digest,
    "Digest"
);

impl ProjectId {
    /// Derives the id of the project `name` owned by `owner`.
    pub fn derive(owner: &crate::PublicKey, name: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("starling/v1/project-id");
        h.update(owner.as_bytes());
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        Self(*h.finalize().as_bytes())
    }
}

impl ItemId {
    /// Derives an item id from its project and canonical CBOR bytes.
    pub fn derive(project: &ProjectId, canonical: &[u8]) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(project.as_bytes());
        h.update(canonical);
        Self(*h.finalize().as_bytes())
    }
}

impl Digest {
    /// The blake3 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_round_trips_and_short_form_is_a_prefix() {
        let id = ItemId([0xab; 32]);
        let s = id.to_hex();
        assert_eq!(s.parse::<ItemId>(), Ok(id));
        assert!(s.starts_with(&id.to_string()));
        assert_eq!(format!("{id:#}"), s);
    }

    #[test]
    fn ids_order_as_their_bytes_do() {
        // Every byte position decides somewhere, including the last of each word.
        let mut ids = Vec::new();
        for pos in [0, 7, 8, 15, 16, 24, 31] {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = [0x55u8; 32];
                b[pos] = v;
                ids.push(b);
            }
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(ItemId(*a).cmp(&ItemId(*b)), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(NodeId(*a).partial_cmp(&NodeId(*b)), Some(a.cmp(b)));
            }
        }
    }

    #[test]
    fn bad_strings_are_rejected() {
        assert_eq!("abc".parse::<NodeId>(), Err(IdParseError::Length(3)));
        assert_eq!("zz".repeat(32).parse::<NodeId>(), Err(IdParseError::NotHex));
    }
}
