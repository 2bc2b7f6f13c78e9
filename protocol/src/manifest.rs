//! Project manifests: what a project owner publishes, signed by the project key.
//!
//! A manifest is versioned; a node keeps the highest version it has seen for a project. The
//! project id does not change across versions: it is derived from the owner key and the name.

use serde::{Deserialize, Serialize};

use crate::ids::ProjectId;
use crate::keys::PublicKey;
use crate::signed::Signable;
use crate::wire::{DecodeError, Validate, check_len};

/// Longest project name, in bytes.
pub const NAME_MAX: usize = 64;
/// Longest description, in bytes.
pub const DESCRIPTION_MAX: usize = 2048;
/// Most hosts in a URL scope.
pub const SCOPE_HOSTS_MAX: usize = 1024;
/// Longest host name.
pub const HOST_MAX: usize = 253;
/// Longest user agent.
pub const USER_AGENT_MAX: usize = 256;
/// Shortest lease a manifest may ask for.
pub const LEASE_MS_MIN: u64 = 1_000;
/// Longest lease a manifest may ask for (a day).
pub const LEASE_MS_MAX: u64 = 24 * 3600 * 1000;
/// Most copies of each result a project may ask for.
pub const REPLICATION_MAX: u8 = 16;
/// Fastest per-host rate a manifest may ask for, in thousandths per second (1000/s).
pub const RATE_PER_S_MILLI_MAX: u32 = 1_000_000;
/// Largest per-host burst a manifest may ask for.
pub const BURST_MAX: u32 = 100;
/// Most requests in flight to one host a manifest may ask for.
pub const CONCURRENCY_MAX: u32 = 64;

/// Per-host politeness: how fast and how wide the project may fetch from one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePolicy {
    /// Sustained requests per second, in thousandths (4000 = 4/s): for the whole mesh under
    /// [`RateScope::Mesh`], for each node under [`RateScope::Node`].
    pub per_s_milli: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
    /// Requests in flight to one host at once.
    pub concurrency: u32,
    /// Under [`RateScope::Mesh`], how many nodes may fetch from one host at once, each at
    /// `per_s_milli / lanes` (1 ..= [`crate::item::LANES_MAX`]; default 1).
    #[serde(default = "one_lane", skip_serializing_if = "is_one_lane")]
    pub lanes: u16,
    /// Whom the rate binds: the mesh as a whole (default) or each node on its own.
    #[serde(default, skip_serializing_if = "RateScope::is_mesh")]
    pub scope: RateScope,
}

fn one_lane() -> u16 {
    1
}

fn is_one_lane(lanes: &u16) -> bool {
    *lanes == 1
}

impl Default for RatePolicy {
    fn default() -> Self {
        Self { per_s_milli: 1_000, burst: 2, concurrency: 2, lanes: 1, scope: RateScope::Mesh }
    }
}

impl RatePolicy {
    /// The rate one holder of a lane may fetch at, in thousandths per second: the whole rate
    /// under node scope, its lane's share under mesh scope (never below 0.001/s).
    pub fn per_holder_milli(&self) -> u32 {
        match self.scope {
            RateScope::Node => self.per_s_milli,
            RateScope::Mesh => (self.per_s_milli / u32::from(self.lanes.max(1))).max(1),
        }
    }

    /// The burst one lane holder may use: its share of the burst under mesh scope, at least
    /// one request (so with more lanes than burst the mesh's bursts add up to `lanes`).
    pub fn burst_per_holder(&self) -> u32 {
        match self.scope {
            RateScope::Node => self.burst,
            RateScope::Mesh => (self.burst / u32::from(self.lanes.max(1))).max(1),
        }
    }
}

/// Whom a project's per-host rate binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    /// The whole mesh together: a node fetches from a host only while it holds one of the
    /// host's lanes, claimed through the engine like any item.
    #[default]
    Mesh,
    /// Each node on its own (the mesh sends up to N times the rate from N nodes).
    Node,
}

impl RateScope {
    fn is_mesh(&self) -> bool {
        *self == RateScope::Mesh
    }

    /// Lowercase name for manifests, logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            RateScope::Mesh => "mesh",
            RateScope::Node => "node",
        }
    }
}

/// Whether robots.txt is obeyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RobotsPolicy {
    /// Fetch and obey robots.txt for each host.
    #[default]
    Obey,
    /// Do not fetch robots.txt.
    Ignore,
}

/// Size limits for a project's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeCaps {
    /// Largest response body kept, in bytes.
    pub response_bytes_max: u64,
    /// Most URLs in one crawl chunk.
    pub chunk_urls_max: u32,
    /// Largest result (one WARC file), in bytes.
    pub result_bytes_max: u64,
}

impl Default for SizeCaps {
    fn default() -> Self {
        Self {
            response_bytes_max: 16 * 1024 * 1024,
            chunk_urls_max: 100,
            result_bytes_max: 512 * 1024 * 1024,
        }
    }
}

/// A project's manifest, signed by the project owner key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectManifest {
    /// Short unique name within the owner's projects.
    pub name: String,
    /// Free text shown to operators.
    pub description: String,
    /// Higher versions replace lower ones.
    pub version: u64,
    /// The project key; must be the envelope's signer.
    pub owner: PublicKey,
    /// Per-host rate policy.
    pub rate: RatePolicy,
    /// How long a claim lasts without renewal.
    pub lease_ms: u64,
    /// Copies of each result kept by seeding duties (0 = none).
    pub replication: u8,
    /// Hosts the crawl may touch (suffix match; empty = any host).
    pub scope: Vec<String>,
    /// User agent for fetches; the node appends its id.
    pub user_agent: String,
    /// robots.txt handling.
    pub robots: RobotsPolicy,
    /// Size limits.
    pub caps: SizeCaps,
    /// How crawl results are spot-checked by other nodes (see `engine/verify.rs`).
    #[serde(default, skip_serializing_if = "VerifyPolicy::is_default")]
    pub verify: VerifyPolicy,
    /// Into how many shards the project's items are split: `2^shard_depth`, each node taking
    /// in and hearing only its own (see `crate::shard`). 0 (the default, left off the wire so
    /// manifests from before shards sign the same bytes) keeps the project whole. The owner
    /// raises it with a new version as the project grows.
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub shard_depth: u8,
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

/// Most URL patterns a project may name as volatile.
pub const VOLATILE_MAX: usize = 64;
/// Longest volatile URL pattern.
pub const VOLATILE_PATTERN_MAX: usize = 256;
/// Most lost quorums a project may require before marking a node.
pub const STRIKES_MAX: u8 = 16;

/// Spot-checks of crawl results: the share of accepted results another node fetches again
/// and compares, which pages compare by status only, and how many lost quorums mark a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// Share of accepted crawl results verified, in thousandths (0 = none, 1000 = every one).
    pub sample_milli: u16,
    /// URL prefixes whose pages change between fetches: compared by status only.
    pub volatile: Vec<String>,
    /// Lost quorums (each on a different item) after which a node is marked for the project.
    pub strikes: u8,
    /// Length of a storage-proof slot: a seeding holder shows a chunk of its copy in its
    /// renewals at the start of each (see `crate::proof`); 0 = no proofs. Left off the wire at
    /// its default, so manifests from before proofs sign the same bytes.
    #[serde(default = "default_proof_every", skip_serializing_if = "is_default_proof_every")]
    pub proof_every_ms: u64,
    /// How long after its claim a seeding holder renews without proofs (to fetch its copy),
    /// before the time its size takes at [`crate::proof::GRACE_BYTES_PER_S`] is added.
    #[serde(default = "default_proof_grace", skip_serializing_if = "is_default_proof_grace")]
    pub proof_grace_ms: u64,
}

/// Default [`VerifyPolicy::proof_every_ms`]: half an hour.
pub const PROOF_EVERY_MS_DEFAULT: u64 = 1_800_000;
/// Default [`VerifyPolicy::proof_grace_ms`]: five minutes.
pub const PROOF_GRACE_MS_DEFAULT: u64 = 300_000;
/// Shortest proof slot a manifest may ask for (other than 0). A slot is never shorter than
/// [`PROOF_EVERY_LEASES_MIN`] leases whatever the manifest says.
pub const PROOF_EVERY_MS_MIN: u64 = 10_000;
/// Shortest proof slot in leases: a slot's zone is two leases long.
pub const PROOF_EVERY_LEASES_MIN: u64 = 4;
/// Longest proof slot, and longest base grace (a week).
pub const PROOF_MS_MAX: u64 = 7 * 24 * 3_600_000;

fn default_proof_every() -> u64 {
    PROOF_EVERY_MS_DEFAULT
}
fn is_default_proof_every(v: &u64) -> bool {
    *v == PROOF_EVERY_MS_DEFAULT
}
fn default_proof_grace() -> u64 {
    PROOF_GRACE_MS_DEFAULT
}
fn is_default_proof_grace(v: &u64) -> bool {
    *v == PROOF_GRACE_MS_DEFAULT
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            sample_milli: 100,
            volatile: Vec::new(),
            strikes: 3,
            proof_every_ms: PROOF_EVERY_MS_DEFAULT,
            proof_grace_ms: PROOF_GRACE_MS_DEFAULT,
        }
    }
}

impl VerifyPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `url`'s page is compared by status only.
    pub fn is_volatile(&self, url: &str) -> bool {
        self.volatile.iter().any(|p| url.starts_with(p.as_str()))
    }
}

impl ProjectManifest {
    /// The project's stable id.
    pub fn id(&self) -> ProjectId {
        ProjectId::derive(&self.owner, &self.name)
    }
}

impl Validate for ProjectManifest {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("name", self.name.len(), NAME_MAX)?;
        check_len("description", self.description.len(), DESCRIPTION_MAX)?;
        check_len("scope", self.scope.len(), SCOPE_HOSTS_MAX)?;
        for host in &self.scope {
            check_len("scope host", host.len(), HOST_MAX)?;
        }
        check_len("user_agent", self.user_agent.len(), USER_AGENT_MAX)?;
        if self.name.is_empty() {
            return Err(DecodeError::Invalid("empty project name"));
        }
        if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&self.lease_ms) {
            return Err(DecodeError::Invalid("lease_ms outside 1 s ..= 24 h"));
        }
        if self.replication > REPLICATION_MAX {
            return Err(DecodeError::Invalid("replication over 16"));
        }
        if !(1..=RATE_PER_S_MILLI_MAX).contains(&self.rate.per_s_milli) {
            return Err(DecodeError::Invalid("rate outside 0.001/s ..= 1000/s"));
        }
        if self.rate.burst > BURST_MAX {
            return Err(DecodeError::Invalid("burst outside 0 ..= 100"));
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.rate.concurrency) {
            return Err(DecodeError::Invalid("concurrency outside 1 ..= 64"));
        }
        if !(1..=crate::item::LANES_MAX).contains(&self.rate.lanes) {
            return Err(DecodeError::Invalid("lanes outside 1 ..= 64"));
        }
        if self.caps.chunk_urls_max == 0
            || self.caps.chunk_urls_max as usize > crate::item::CHUNK_URLS_MAX
        {
            return Err(DecodeError::Invalid("chunk_urls_max outside 1 ..= 1000"));
        }
        if self.verify.sample_milli > 1_000 {
            return Err(DecodeError::Invalid("verify sample outside 0 ..= 1"));
        }
        if !(1..=STRIKES_MAX).contains(&self.verify.strikes) {
            return Err(DecodeError::Invalid("verify strikes outside 1 ..= 16"));
        }
        if self.shard_depth > crate::shard::SHARD_DEPTH_MAX {
            return Err(DecodeError::Invalid("shard_depth outside 0 ..= 12"));
        }
        let every = self.verify.proof_every_ms;
        if every != 0 && !(PROOF_EVERY_MS_MIN..=PROOF_MS_MAX).contains(&every) {
            return Err(DecodeError::Invalid(
                "verify proof_every_ms neither 0 nor 10 s ..= 7 days",
            ));
        }
        if self.verify.proof_grace_ms > PROOF_MS_MAX {
            return Err(DecodeError::Invalid("verify proof_grace_ms over a week"));
        }
        check_len("verify volatile", self.verify.volatile.len(), VOLATILE_MAX)?;
        for p in &self.verify.volatile {
            check_len("volatile pattern", p.len(), VOLATILE_PATTERN_MAX)?;
            if p.is_empty() {
                return Err(DecodeError::Invalid("empty volatile pattern"));
            }
        }
        Ok(())
    }
}

impl Signable for ProjectManifest {
    const KIND: &'static str = "manifest";
    const MAX_BODY_BYTES: usize = 512 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Validate;

    fn with_rate(rate: RatePolicy) -> Result<(), DecodeError> {
        sample(rate).validate()
    }

    /// A valid manifest with `rate`.
    fn sample(rate: RatePolicy) -> ProjectManifest {
        let owner = crate::engine::test_keypair(1).public();
        ProjectManifest {
            name: "r".into(),
            description: String::new(),
            version: 1,
            owner,
            rate,
            lease_ms: 60_000,
            replication: 0,
            scope: vec![],
            user_agent: "t".into(),
            robots: RobotsPolicy::Obey,
            caps: SizeCaps::default(),
            verify: Default::default(),
            shard_depth: 0,
        }
    }

    #[test]
    fn rate_burst_and_concurrency_have_ranges() {
        let ok = RatePolicy::default();
        with_rate(ok).unwrap();
        let edges = RatePolicy {
            per_s_milli: RATE_PER_S_MILLI_MAX,
            burst: BURST_MAX,
            concurrency: 64,
            lanes: crate::item::LANES_MAX,
            scope: RateScope::Node,
        };
        with_rate(edges).unwrap();
        for bad in [
            RatePolicy { per_s_milli: 4_294_967_000, ..ok },
            RatePolicy { per_s_milli: 0, ..ok },
            RatePolicy { burst: u32::MAX, ..ok },
            RatePolicy { burst: BURST_MAX + 1, ..ok },
            RatePolicy { concurrency: 0, ..ok },
            RatePolicy { concurrency: CONCURRENCY_MAX + 1, ..ok },
            RatePolicy { lanes: 0, ..ok },
            RatePolicy { lanes: crate::item::LANES_MAX + 1, ..ok },
        ] {
            assert!(with_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shard_depth_has_a_range_and_is_left_off_the_wire_at_zero() {
        let whole = sample(RatePolicy::default());
        let split = ProjectManifest { shard_depth: crate::shard::SHARD_DEPTH_MAX, ..whole.clone() };
        split.validate().unwrap();
        let too_deep =
            ProjectManifest { shard_depth: crate::shard::SHARD_DEPTH_MAX + 1, ..whole.clone() };
        assert!(too_deep.validate().is_err());
        // A manifest from before shards (no such field) decodes as an unsplit project, and an
        // unsplit one encodes to the same bytes, so its signature still holds.
        let bytes = crate::wire::encode(&whole);
        assert!(!bytes.windows(11).any(|w| w == b"shard_depth"));
        let back: ProjectManifest = ciborium::from_reader(&bytes[..]).expect("decodes");
        assert_eq!(back.shard_depth, 0);
        let back: ProjectManifest =
            ciborium::from_reader(&crate::wire::encode(&split)[..]).expect("decodes");
        assert_eq!(back.shard_depth, crate::shard::SHARD_DEPTH_MAX);
    }
}

#[cfg(test)]
mod rate_scope_tests {
    use super::*;

    /// The manifest rate as it was written before lanes and scope existed.
    #[derive(Serialize)]
    struct OldRate {
        per_s_milli: u32,
        burst: u32,
        concurrency: u32,
    }

    #[test]
    fn a_rate_without_lanes_or_scope_is_one_mesh_lane_and_encodes_as_before() {
        let old = crate::wire::encode(&OldRate { per_s_milli: 4_000, burst: 1, concurrency: 2 });
        let rate: RatePolicy = ciborium::from_reader(&old[..]).expect("decodes");
        assert_eq!((rate.lanes, rate.scope), (1, RateScope::Mesh));
        // The defaults are left out, so a manifest that does not use them signs the same bytes.
        assert_eq!(crate::wire::encode(&rate), old);
        let node = RatePolicy { scope: RateScope::Node, lanes: 3, ..rate };
        let back: RatePolicy =
            ciborium::from_reader(&crate::wire::encode(&node)[..]).expect("decodes");
        assert_eq!(back, node);
    }

    #[test]
    fn a_lane_holder_gets_its_share_of_rate_and_burst() {
        let r = RatePolicy { per_s_milli: 4_000, burst: 1, concurrency: 1, ..Default::default() };
        assert_eq!((r.per_holder_milli(), r.burst_per_holder()), (4_000, 1));
        let r4 = RatePolicy { lanes: 4, burst: 8, ..r };
        assert_eq!((r4.per_holder_milli(), r4.burst_per_holder()), (1_000, 2));
        let node = RatePolicy { scope: RateScope::Node, ..r4 };
        assert_eq!((node.per_holder_milli(), node.burst_per_holder()), (4_000, 8));
        let tiny = RatePolicy { per_s_milli: 1, lanes: 64, ..r };
        assert_eq!(tiny.per_holder_milli(), 1);
    }
}
