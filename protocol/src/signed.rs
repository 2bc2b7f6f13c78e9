//! `Signed<T>`: CBOR body bytes, the signer's public key and an ed25519 signature over a
//! domain-separated message (`"starling/v1/<kind>"`, a zero byte, then the body).
//!
//! The body is kept as the exact bytes that were signed, so verification never depends on
//! re-encoding. Decoding an envelope checks its length and version before anything else;
//! [`Signed::verify`] then checks the signature strictly and decodes and validates the body.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{Keypair, PublicKey};
use crate::wire::{self, DecodeError, Validate, WIRE_VERSION};

/// A type that travels signed, with its own signature domain and size cap.
pub trait Signable: Serialize + DeserializeOwned + Validate {
    /// The domain-separation label, e.g. `"claim"`; signs as `"starling/v1/claim"`.
    const KIND: &'static str;
    /// The largest body accepted, in bytes.
    const MAX_BODY_BYTES: usize;
}

/// Why a signed envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The envelope or its body did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The signature does not verify for the stated signer and kind.
    #[error("signature does not verify")]
    BadSignature,
}

/// A value of type `T` signed by `signer`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    v: u8,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    signer: PublicKey,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
    #[serde(skip)]
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            v: self.v,
            body: self.body.clone(),
            signer: self.signer,
            sig: self.sig.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
            && self.body == other.body
            && self.signer == other.signer
            && self.sig == other.sig
    }
}
impl<T> Eq for Signed<T> {}

impl<T: Signable> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signed<{}>({} bytes by {:?})", T::KIND, self.body.len(), self.signer)
    }
}

fn signing_message(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16 + kind.len() + body.len());
    msg.extend_from_slice(b"starling/v1/");
    msg.extend_from_slice(kind.as_bytes());
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

/// Slots in the per-thread cache of signatures already verified.
const VERIFIED_SLOTS: usize = 1 << 16;

type VerifiedSlots = std::cell::RefCell<Vec<[u8; 16]>>;

thread_local! {
    /// The same envelope often arrives more than once (gossip duplicates, sync deltas, a
    /// receipt embedding a known claim, and in the simulator every node of one process), and a
    /// strict ed25519 check costs far more than a hash. A direct-mapped cache of 128-bit
    /// fingerprints of (signer, signature, domain-separated message) that verified skips the
    /// repeat. Bounded (1 MiB a thread), and it changes no result, only the time taken.
    static VERIFIED: VerifiedSlots = std::cell::RefCell::new(vec![[0u8; 16]; VERIFIED_SLOTS]);
}

fn verified_fingerprint(signer: &PublicKey, sig: &[u8; 64], msg: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("starling/v1/verified-cache");
    h.update(signer.as_bytes());
    h.update(sig);
    h.update(msg);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    // An all-zero fingerprint marks an empty slot; never produce one.
    out[15] |= 1;
    out
}

fn slot_of(fingerprint: &[u8; 16]) -> usize {
    (usize::from(fingerprint[0]) | usize::from(fingerprint[1]) << 8) % VERIFIED_SLOTS
}

fn recently_verified(fingerprint: &[u8; 16]) -> bool {
    VERIFIED.with(|c| c.borrow()[slot_of(fingerprint)] == *fingerprint)
}

/// Forgets every signature verified on this thread, so a benchmark measures first sight.
pub fn clear_verified_cache() {
    VERIFIED.with(|c| c.borrow_mut().iter_mut().for_each(|f| *f = [0u8; 16]));
}

fn remember_verified(fingerprint: [u8; 16]) {
    VERIFIED.with(|c| c.borrow_mut()[slot_of(&fingerprint)] = fingerprint);
}

/// Bytes an envelope adds around its body (version, key, signature, CBOR framing).
const ENVELOPE_OVERHEAD: usize = 160;

impl<T: Signable> Signed<T> {
    /// Encodes and signs `value` with `key`.
    pub fn sign(key: &Keypair, value: &T) -> Self {
        let body = wire::encode(value);
        let sig = key.sign(&signing_message(T::KIND, &body)).to_vec();
        Self { v: WIRE_VERSION, body, signer: key.public(), sig, _kind: PhantomData }
    }

    /// Checks the signature strictly, then decodes and validates the body.
    pub fn verify(&self) -> Result<T, VerifyError> {
        let sig: &[u8; 64] =
            self.sig.as_slice().try_into().map_err(|_| VerifyError::BadSignature)?;
        let msg = signing_message(T::KIND, &self.body);
        let fingerprint = verified_fingerprint(&self.signer, sig, &msg);
        if !recently_verified(&fingerprint) {
            if !self.signer.verify_strict(&msg, sig) {
                return Err(VerifyError::BadSignature);
            }
            remember_verified(fingerprint);
        }
        Ok(wire::decode(&self.body, T::MAX_BODY_BYTES)?)
    }

    /// Who signed it (not yet verified).
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    /// The signed body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The whole envelope as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes an envelope (checking length, version and shape; not the signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode(bytes, T::MAX_BODY_BYTES + ENVELOPE_OVERHEAD)
    }
}

impl<T: Signable> Validate for Signed<T> {
    fn validate(&self) -> Result<(), DecodeError> {
        if self.v != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion(self.v));
        }
        wire::check_len("body", self.body.len(), T::MAX_BODY_BYTES)?;
        if self.sig.len() != 64 {
            return Err(DecodeError::Invalid("signature length"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note(String);
    impl Validate for Note {
        fn validate(&self) -> Result<(), DecodeError> {
            wire::check_len("note", self.0.len(), 64)
        }
    }
    impl Signable for Note {
        const KIND: &'static str = "note";
        const MAX_BODY_BYTES: usize = 128;
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Other(String);
    impl Validate for Other {
        fn validate(&self) -> Result<(), DecodeError> {
            Ok(())
        }
    }
    impl Signable for Other {
        const KIND: &'static str = "other";
        const MAX_BODY_BYTES: usize = 128;
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = Keypair::from_secret([3; 32]);
        let s = Signed::sign(&key, &Note("hi".into()));
        let back = Signed::<Note>::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.verify().unwrap(), Note("hi".into()));
        assert_eq!(back.signer(), key.public());
    }

    #[test]
    fn signature_is_domain_separated() {
        let key = Keypair::from_secret([3; 32]);
        let s = Signed::sign(&key, &Note("hi".into()));
        // Same bytes, read as another kind: the domain differs, so the signature fails.
        let as_other = Signed::<Other>::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(as_other.verify(), Err(VerifyError::BadSignature));
    }

    #[test]
    fn unknown_version_is_rejected() {
        let key = Keypair::from_secret([3; 32]);
        let mut s = Signed::sign(&key, &Note("hi".into()));
        s.v = 9;
        assert_eq!(Signed::<Note>::from_bytes(&s.to_bytes()), Err(DecodeError::UnknownVersion(9)));
    }
}
