//! `Signed<T>`: CBOR body bytes, the signer's public key and an ed25519 signature over a
//! domain-separated message (`"starling/v1/<kind>"`, a zero byte, then the body).
//!
//! The body is kept as the exact bytes that were signed, so verification never depends on
//! re-encoding. Decoding an envelope checks its length and version before anything else;
//! [`Signed::verify`] then checks the signature strictly and decodes and validates the body.

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
///
/// Cheap to clone: the envelope is immutable and shared behind an `Arc`, and it remembers the
/// outcome of its own check, so a copy that reaches many engines (every copy of one gossip
/// message in the simulator, a proof kept by the engine and handed out again in a sync delta
/// or a snapshot) is verified and decoded once.
pub struct Signed<T> {
    inner: std::sync::Arc<Inner<T>>,
}

struct Inner<T> {
    v: u8,
    body: Box<[u8]>,
    signer: PublicKey,
    sig: Box<[u8]>,
    /// Whether the signature verified, once checked.
    sig_ok: std::sync::OnceLock<bool>,
    /// The checked and decoded body, once asked for.
    checked: std::sync::OnceLock<Result<std::sync::Arc<T>, VerifyError>>,
}

/// The serialized shape of a [`Signed`], borrowed for encoding.
#[derive(Serialize)]
#[serde(rename = "Signed")]
struct WireRef<'a> {
    v: u8,
    #[serde(with = "serde_bytes")]
    body: &'a [u8],
    signer: &'a PublicKey,
    #[serde(with = "serde_bytes")]
    sig: &'a [u8],
}

/// The serialized shape of a [`Signed`], owned for decoding.
#[derive(Deserialize)]
#[serde(rename = "Signed")]
struct WireOwned {
    v: u8,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    signer: PublicKey,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

impl<T> Serialize for Signed<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let i = &self.inner;
        WireRef { v: i.v, body: &i.body, signer: &i.signer, sig: &i.sig }.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Signed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = WireOwned::deserialize(deserializer)?;
        Ok(Self::from_parts(w.v, w.body, w.signer, w.sig, None))
    }
}

impl<T> Signed<T> {
    fn from_parts(
        v: u8,
        body: Vec<u8>,
        signer: PublicKey,
        sig: Vec<u8>,
        sig_ok: Option<bool>,
    ) -> Self {
        let cell = std::sync::OnceLock::new();
        if let Some(ok) = sig_ok {
            let _ = cell.set(ok);
        }
        Self {
            inner: std::sync::Arc::new(Inner {
                v,
                body: body.into_boxed_slice(),
                signer,
                sig: sig.into_boxed_slice(),
                sig_ok: cell,
                checked: std::sync::OnceLock::new(),
            }),
        }
    }
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self { inner: std::sync::Arc::clone(&self.inner) }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.inner, &other.inner);
        std::sync::Arc::ptr_eq(a, b)
            || (a.v == b.v && a.body == b.body && a.signer == b.signer && a.sig == b.sig)
    }
}
impl<T> Eq for Signed<T> {}

impl<T: Signable> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signed<{}>({} bytes by {:?})", T::KIND, self.inner.body.len(), self.inner.signer)
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
    static BASE: std::sync::OnceLock<blake3::Hasher> = std::sync::OnceLock::new();
    let mut h =
        BASE.get_or_init(|| blake3::Hasher::new_derive_key("starling/v1/verified-cache")).clone();
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

thread_local! {
    static STRICT_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many strict ed25519 checks this thread has run: what the cache above saves shows here.
pub fn strict_checks() -> u64 {
    STRICT_CHECKS.with(std::cell::Cell::get)
}

thread_local! {
    static SIGNATURES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many signatures this thread has made ([`Signed::sign`]): the simulator reports it, as
/// signing is a floor under what a simulated second of the real engines costs.
pub fn signatures_made() -> u64 {
    SIGNATURES.with(std::cell::Cell::get)
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
        let msg = signing_message(T::KIND, &body);
        let sig = key.sign(&msg);
        SIGNATURES.with(|n| n.set(n.get() + 1));
        // A signature this process just made needs no check, and neither does a copy of it
        // decoded from bytes later on this thread: the claim embedded in this node's own
        // receipt, say, which the engine takes in as soon as it signs the receipt.
        remember_verified(verified_fingerprint(&key.public(), &sig, &msg));
        Self::from_parts(WIRE_VERSION, body, key.public(), sig.to_vec(), Some(true))
    }

    /// Whether the signature verifies strictly for the stated signer and kind; checked once
    /// per envelope (and once per thread for equal envelopes decoded separately).
    fn signature_ok(&self) -> bool {
        *self.inner.sig_ok.get_or_init(|| {
            let i = &self.inner;
            let Ok(sig) = <&[u8; 64]>::try_from(&i.sig[..]) else { return false };
            let msg = signing_message(T::KIND, &i.body);
            let fingerprint = verified_fingerprint(&i.signer, sig, &msg);
            if recently_verified(&fingerprint) {
                return true;
            }
            STRICT_CHECKS.with(|n| n.set(n.get() + 1));
            let ok = i.signer.verify_strict(&msg, sig);
            if ok {
                remember_verified(fingerprint);
            }
            ok
        })
    }

    /// Remembers again, on this thread, that this envelope verified (if it has). A copy of it
    /// decoded from bytes soon after then skips the strict check, however long ago this one was
    /// checked and however much has passed through the cache since: the claim a node embeds in
    /// its own receipt or failure, made when the work began, is such a copy.
    pub fn recall_verified(&self) {
        let i = &self.inner;
        if i.sig_ok.get() == Some(&true)
            && let Ok(sig) = <&[u8; 64]>::try_from(&i.sig[..])
        {
            let msg = signing_message(T::KIND, &i.body);
            remember_verified(verified_fingerprint(&i.signer, sig, &msg));
        }
    }

    /// Checks the signature strictly, then decodes and validates the body.
    pub fn verify(&self) -> Result<T, VerifyError> {
        if !self.signature_ok() {
            return Err(VerifyError::BadSignature);
        }
        Ok(wire::decode(&self.inner.body, T::MAX_BODY_BYTES)?)
    }

    /// [`Signed::verify`], remembered: the first call checks and decodes, later calls on this
    /// envelope or any clone of it share the result.
    pub fn verified(&self) -> Result<std::sync::Arc<T>, VerifyError> {
        self.checked().clone()
    }

    /// [`Signed::verified`], borrowed from the envelope.
    pub fn verified_ref(&self) -> Result<&T, VerifyError> {
        match self.checked() {
            Ok(value) => Ok(value),
            Err(e) => Err(e.clone()),
        }
    }

    fn checked(&self) -> &Result<std::sync::Arc<T>, VerifyError> {
        self.inner.checked.get_or_init(|| {
            if !self.signature_ok() {
                return Err(VerifyError::BadSignature);
            }
            Ok(std::sync::Arc::new(wire::decode(&self.inner.body, T::MAX_BODY_BYTES)?))
        })
    }

    /// Who signed it (not yet verified).
    pub fn signer(&self) -> PublicKey {
        self.inner.signer
    }

    /// The signed body bytes.
    pub fn body(&self) -> &[u8] {
        &self.inner.body
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
        let i = &self.inner;
        if i.v != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion(i.v));
        }
        wire::check_len("body", i.body.len(), T::MAX_BODY_BYTES)?;
        if i.sig.len() != 64 {
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
    fn a_recalled_check_spares_a_decoded_copy_the_strict_check() {
        let key = Keypair::from_secret([3; 32]);
        let s = Signed::sign(&key, &Note("hello".into()));
        let copy = || Signed::<Note>::from_bytes(&s.to_bytes()).unwrap();
        clear_verified_cache();
        let before = strict_checks();
        assert!(copy().verified().is_ok());
        assert_eq!(strict_checks(), before + 1, "a copy after the cache forgot is checked");
        clear_verified_cache();
        s.recall_verified();
        assert!(copy().verified().is_ok());
        assert_eq!(strict_checks(), before + 1, "a recalled check is not repeated");
        // Only a check that passed is recalled: a forgery decoded again is checked again.
        let forged = Signed::<Note>::from_parts(
            WIRE_VERSION,
            s.body().to_vec(),
            Keypair::from_secret([4; 32]).public(),
            vec![7; 64],
            None,
        );
        assert!(forged.verified().is_err());
        forged.recall_verified();
        let again = Signed::<Note>::from_bytes(&forged.to_bytes()).unwrap();
        assert!(again.verified().is_err());
        assert_eq!(strict_checks(), before + 3);
    }

    #[test]
    fn the_checked_body_is_shared_by_clones_and_a_forgery_stays_refused() {
        let key = Keypair::from_secret([3; 32]);
        let other = Keypair::from_secret([4; 32]);
        let s = Signed::sign(&key, &Note("hi".into()));
        let copy = s.clone();
        let a = s.verified().unwrap();
        let b = copy.verified().unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b), "clones share one decoded body");
        assert_eq!(copy.verified_ref().unwrap(), &Note("hi".into()));
        // The same body and signature under another signer: refused, every time.
        let i = &s.inner;
        let forged =
            Signed::<Note>::from_parts(i.v, i.body.to_vec(), other.public(), i.sig.to_vec(), None);
        assert_eq!(forged.verified().err(), Some(VerifyError::BadSignature));
        assert_eq!(forged.clone().verify(), Err(VerifyError::BadSignature));
        // Bytes decoded afresh start unchecked and verify on their own.
        let back = Signed::<Note>::from_bytes(&s.to_bytes()).unwrap();
        assert!(back.inner.sig_ok.get().is_none());
        assert_eq!(back.verify().unwrap(), Note("hi".into()));
    }

    #[test]
    fn a_signature_made_here_is_known_to_copies_decoded_later_and_tampering_still_fails() {
        clear_verified_cache();
        let key = Keypair::from_secret([5; 32]);
        let s = Signed::sign(&key, &Note("mine".into()));
        let i = &s.inner;
        let sig: [u8; 64] = i.sig[..].try_into().unwrap();
        let msg = signing_message(Note::KIND, &i.body);
        assert!(recently_verified(&verified_fingerprint(&key.public(), &sig, &msg)));
        let back = Signed::<Note>::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.verify().unwrap(), Note("mine".into()));
        // Another body under the same signature is not in the cache and fails the check.
        let mut body = i.body.to_vec();
        *body.last_mut().unwrap() ^= 1;
        let tampered = Signed::<Note>::from_parts(i.v, body, i.signer, i.sig.to_vec(), None);
        assert_eq!(tampered.verify().err(), Some(VerifyError::BadSignature));
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
        let s = Signed::sign(&key, &Note("hi".into()));
        let i = &s.inner;
        let s = Signed::<Note>::from_parts(9, i.body.to_vec(), i.signer, i.sig.to_vec(), None);
        assert_eq!(Signed::<Note>::from_bytes(&s.to_bytes()), Err(DecodeError::UnknownVersion(9)));
    }
}
