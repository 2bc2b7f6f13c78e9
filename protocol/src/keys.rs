//! Ed25519 keys for nodes and project owners.
//!
//! The protocol never generates randomness itself: a [`Keypair`] is made from 32 secret bytes
//! that the caller supplies (the node reads them from the OS, the simulator from its seeded RNG).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{IdParseError, NodeId};

/// Slots in the per-thread cache of decompressed verifying keys.
const VK_CACHE_SLOTS: usize = 1024;

type VkSlots = std::cell::RefCell<Vec<Option<([u8; 32], VerifyingKey)>>>;

thread_local! {
    /// Decompressing a key costs a field square root on every verification; peers sign many
    /// messages each, so a small direct-mapped cache saves it. Bounded, and deterministic.
    static VK_CACHE: VkSlots =
        std::cell::RefCell::new(vec![None; VK_CACHE_SLOTS]);
}

fn decompressed(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    // Key bytes are uniformly distributed, so a few of them make a fine slot index.
    let slot = (usize::from(bytes[0]) | usize::from(bytes[1]) << 8) % VK_CACHE_SLOTS;
    VK_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((k, vk)) = &cache[slot]
            && k == bytes
        {
            return Some(*vk);
        }
        let vk = VerifyingKey::from_bytes(bytes).ok()?;
        cache[slot] = Some((*bytes, vk));
        Some(vk)
    })
}

/// An ed25519 public key as it travels on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicKey(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl PublicKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full 64-hex-digit form; parses back with `FromStr`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The node id that this key signs as.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.0)
    }

    /// Strict verification (`verify_strict`): rejects small-order keys and malleable signatures.
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Some(vk) = decompressed(&self.0) else {
            return false;
        };
        vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
    }
}

impl From<NodeId> for PublicKey {
    fn from(id: NodeId) -> Self {
        Self(id.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.0[..4]))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<NodeId>().map(|n| Self(n.0))
    }
}

/// A signing key with its public half.
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// Builds a keypair from 32 secret bytes (an ed25519 seed).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self { signing: SigningKey::from_bytes(&secret) }
    }

    /// Derives a keypair from a seeded RNG; used by the simulator and tests.
    pub fn from_rng(rng: &mut impl rand::RngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    /// The 32 secret bytes, for storing in a 0600 key file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// This key's node id.
    pub fn node_id(&self) -> NodeId {
        self.public().node_id()
    }

    /// Signs `msg` (already domain-separated by the caller).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Self::from_secret(self.secret_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_strict() {
        let k = Keypair::from_secret([7; 32]);
        let sig = k.sign(b"hello");
        assert!(k.public().verify_strict(b"hello", &sig));
        assert!(!k.public().verify_strict(b"hellp", &sig));
        let other = Keypair::from_secret([8; 32]);
        assert!(!other.public().verify_strict(b"hello", &sig));
    }

    #[test]
    fn public_key_string_round_trips() {
        let k = Keypair::from_secret([1; 32]).public();
        assert_eq!(k.to_hex().parse::<PublicKey>(), Ok(k));
    }
}
