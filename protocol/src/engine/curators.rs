//! Followed curators and their directories (see [`crate::directory`]).
//!
//! A curator this node follows ([`Input::Follow`](super::Input::Follow)) vouches for the
//! projects its newest directory lists: their manifests are taken in as if the owner key
//! were trusted (for the listed owner only), and the listed priority is the project's unless
//! the operator set one. A directory from a curator not followed is refused like a manifest
//! from an untrusted owner. Dropping a project from a later directory does not drop the
//! project: its manifest, batches and items stay, as they would after a trust was withdrawn.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::directory::Directory;
use crate::ids::ProjectId;
use crate::keys::PublicKey;
use crate::limits::FOLLOWING_MAX;
use crate::message::Envelope;
use crate::signed::Signed;

use super::apply::verified;
use super::{Engine, Output, Reject};

/// A curator's accepted directory, with its checked body.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) signed: Signed<Directory>,
    pub(super) dir: Arc<Directory>,
}

/// What this node follows: the curator keys and the newest directory of each.
#[derive(Debug, Clone, Default)]
pub(super) struct Curators {
    /// Followed curator keys, at most [`FOLLOWING_MAX`], each with its directory once one
    /// arrived.
    pub(super) followed: BTreeMap<PublicKey, Option<Held>>,
    /// Each listed project's priority: the highest any followed directory gives it.
    pub(super) priorities: BTreeMap<ProjectId, i8>,
}

impl Curators {
    /// Whether a followed directory lists `project` with `owner` as its owner.
    pub(super) fn vouches(&self, project: &ProjectId, owner: &PublicKey) -> bool {
        self.followed
            .values()
            .flatten()
            .any(|h| h.dir.entry(project).is_some_and(|e| e.owner == *owner))
    }

    /// The accepted directories, in curator order.
    pub(super) fn held(&self) -> impl Iterator<Item = &Held> {
        self.followed.values().flatten()
    }

    /// Works the listed priorities out again from the directories held.
    fn recount(&mut self) {
        let mut out: BTreeMap<ProjectId, i8> = BTreeMap::new();
        for h in self.followed.values().flatten() {
            for e in &h.dir.entries {
                let p = out.entry(e.project).or_insert(e.priority);
                *p = (*p).max(e.priority);
            }
        }
        self.priorities = out;
    }
}

impl Engine {
    /// Follows a curator key. Refused with [`Reject::Full`] past [`FOLLOWING_MAX`] keys.
    pub(super) fn follow(&mut self, curator: PublicKey) -> Result<(), Reject> {
        if self.curators.followed.contains_key(&curator) {
            return Ok(());
        }
        if self.curators.followed.len() >= FOLLOWING_MAX {
            return Err(Reject::Full);
        }
        self.curators.followed.insert(curator, None);
        Ok(())
    }

    /// Takes in a curator's directory: the newest one of a followed curator replaces the one
    /// held (by version, then by the greater body hash, as manifests are).
    pub(super) fn apply_directory(&mut self, s: Signed<Directory>, now: u64) -> Result<(), Reject> {
        let d = verified(&s)?;
        if d.curator != s.signer() {
            return Err(Reject::Malformed);
        }
        let Some(slot) = self.curators.followed.get(&d.curator) else {
            return Err(Reject::UntrustedProject);
        };
        if let Some(old) = slot {
            super::apply::replaces(old.dir.version, old.signed.body(), d.version, s.body())?;
        }
        self.outputs.push_back(Output::Persist(Envelope::Directory(s.clone())));
        self.curators.followed.insert(d.curator, Some(Held { signed: s, dir: d }));
        self.curators.recount();
        self.resort_ready();
        // Messages parked for a project this directory now vouches for may apply.
        self.replay_pending(now);
        Ok(())
    }

    /// Followed curator keys, each with its directory once one was accepted.
    pub fn following(&self) -> impl Iterator<Item = (&PublicKey, Option<&Directory>)> {
        self.curators.followed.iter().map(|(k, h)| (k, h.as_ref().map(|h| &*h.dir)))
    }

    /// The priority followed curators list for `project`, if any lists it.
    pub fn curated_priority(&self, project: &ProjectId) -> Option<i8> {
        self.curators.priorities.get(project).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{batch, manifest};
    use super::super::{Engine, EngineConfig, Input, Reject, test_keypair};
    use crate::directory::{Directory, DirectoryEntry};
    use crate::keys::Keypair;
    use crate::limits::FOLLOWING_MAX;
    use crate::manifest::ProjectManifest;
    use crate::message::Envelope;
    use crate::signed::Signed;

    /// A node that trusts no owner at all.
    fn blank() -> Engine {
        Engine::new(EngineConfig::default(), test_keypair(100), [], 1)
    }

    fn directory(curator: &Keypair, version: u64, listed: &[(&ProjectManifest, i8)]) -> Envelope {
        let entries = listed
            .iter()
            .map(|(m, priority)| DirectoryEntry {
                project: m.id(),
                owner: m.owner,
                priority: *priority,
            })
            .collect();
        let d = Directory { curator: curator.public(), name: "picks".into(), version, entries };
        Envelope::Directory(Signed::sign(curator, &d))
    }

    fn named(owner: &Keypair, name: &str) -> ProjectManifest {
        ProjectManifest { name: name.into(), ..manifest(owner, 5_000, 0) }
    }

    fn msg(e: &mut Engine, env: Envelope) -> Result<(), Reject> {
        e.handle(Input::Message(env), 1)
    }

    #[test]
    fn a_directory_from_a_curator_not_followed_is_refused() {
        let (curator, owner) = (test_keypair(1), test_keypair(2));
        let m = named(&owner, "a");
        let mut e = blank();
        assert_eq!(msg(&mut e, directory(&curator, 1, &[(&m, 3)])), Err(Reject::UntrustedProject));
        assert_eq!(e.following().count(), 0);
        // Signed by someone else than the curator it names.
        e.handle(Input::Follow(curator.public()), 0).unwrap();
        let d =
            Directory { curator: curator.public(), name: "x".into(), version: 1, entries: vec![] };
        let forged = Envelope::Directory(Signed::sign(&owner, &d));
        assert_eq!(msg(&mut e, forged), Err(Reject::Malformed));
    }

    #[test]
    fn a_followed_directory_vouches_for_listed_projects_only() {
        let (curator, owner) = (test_keypair(1), test_keypair(2));
        let (listed, unlisted) = (named(&owner, "listed"), named(&owner, "unlisted"));
        let mut e = blank();
        e.handle(Input::Follow(curator.public()), 0).unwrap();
        let sign = |m: &ProjectManifest| Envelope::Manifest(Signed::sign(&owner, m));
        assert_eq!(msg(&mut e, sign(&listed)), Err(Reject::UntrustedProject), "no directory yet");
        msg(&mut e, directory(&curator, 1, &[(&listed, 0)])).unwrap();
        msg(&mut e, sign(&listed)).unwrap();
        assert_eq!(msg(&mut e, sign(&unlisted)), Err(Reject::UntrustedProject));
        msg(&mut e, Envelope::Batch(batch(&owner, &listed, 3))).unwrap();
        assert_eq!(e.item_count(), 4, "3 chunks and their host's lane");
        // A listing vouches for the listed owner only: the same name under another key is a
        // different project, and a manifest for the listed id cannot be signed by another key.
        let other = test_keypair(3);
        let impostor = named(&other, "listed");
        assert_eq!(
            msg(&mut e, Envelope::Manifest(Signed::sign(&other, &impostor))),
            Err(Reject::UntrustedProject)
        );
    }

    #[test]
    fn a_newer_directory_replaces_the_old_and_stale_or_duplicate_ones_are_refused() {
        let (curator, owner) = (test_keypair(1), test_keypair(2));
        let m = named(&owner, "a");
        let mut e = blank();
        e.handle(Input::Follow(curator.public()), 0).unwrap();
        let v2 = directory(&curator, 2, &[(&m, 3)]);
        msg(&mut e, v2.clone()).unwrap();
        assert_eq!(e.priority(&m.id()), 3);
        assert_eq!(msg(&mut e, v2), Err(Reject::Duplicate));
        assert_eq!(msg(&mut e, directory(&curator, 1, &[(&m, 9)])), Err(Reject::Stale));
        assert_eq!(e.priority(&m.id()), 3);
        msg(&mut e, directory(&curator, 3, &[(&m, -2)])).unwrap();
        assert_eq!(e.priority(&m.id()), -2);
        let held: Vec<u64> = e.following().filter_map(|(_, d)| d.map(|d| d.version)).collect();
        assert_eq!(held, [3]);
        // Equal versions: the greater body hash wins, whichever arrives first.
        let (a, b) = (directory(&curator, 4, &[(&m, 1)]), directory(&curator, 4, &[(&m, 2)]));
        let mut f = blank();
        f.handle(Input::Follow(curator.public()), 0).unwrap();
        msg(&mut e, a.clone()).unwrap();
        let _ = msg(&mut e, b.clone());
        msg(&mut f, b).unwrap();
        let _ = msg(&mut f, a);
        assert_eq!(e.priority(&m.id()), f.priority(&m.id()));
    }

    #[test]
    fn the_operators_priority_wins_and_clearing_it_gives_the_curators_back() {
        let (curator, owner) = (test_keypair(1), test_keypair(2));
        let m = named(&owner, "a");
        let mut e = blank();
        e.handle(Input::Follow(curator.public()), 0).unwrap();
        e.handle(Input::SetPriority { project: m.id(), priority: -5 }, 0).unwrap();
        msg(&mut e, directory(&curator, 1, &[(&m, 7)])).unwrap();
        assert_eq!((e.priority(&m.id()), e.curated_priority(&m.id())), (-5, Some(7)));
        msg(&mut e, directory(&curator, 2, &[(&m, 4)])).unwrap();
        assert_eq!(e.priority(&m.id()), -5, "a new directory does not override the operator");
        e.handle(Input::SetPriority { project: m.id(), priority: 0 }, 2).unwrap();
        assert_eq!(e.priority(&m.id()), 4);
    }

    #[test]
    fn following_is_bounded() {
        let mut e = blank();
        for i in 0..FOLLOWING_MAX as u64 {
            e.handle(Input::Follow(test_keypair(500 + i).public()), 0).unwrap();
        }
        e.handle(Input::Follow(test_keypair(500).public()), 0).unwrap();
        assert_eq!(e.handle(Input::Follow(test_keypair(1).public()), 0), Err(Reject::Full));
        assert_eq!(e.following().count(), FOLLOWING_MAX);
    }

    #[test]
    fn follows_and_directories_survive_a_restart_and_reach_a_peer_by_sync() {
        let (curator, owner) = (test_keypair(1), test_keypair(2));
        let m = named(&owner, "a");
        let mut e = blank();
        e.handle(Input::Follow(curator.public()), 0).unwrap();
        msg(&mut e, directory(&curator, 2, &[(&m, 6)])).unwrap();
        msg(&mut e, Envelope::Manifest(Signed::sign(&owner, &m))).unwrap();
        msg(&mut e, Envelope::Batch(batch(&owner, &m, 2))).unwrap();
        let snap = e.snapshot();
        assert_eq!(snap.following, [curator.public()]);
        let back = Engine::restore(EngineConfig::default(), test_keypair(100), snap, 1, 10);
        assert_eq!(back.priority(&m.id()), 6);
        assert_eq!(back.projects().count(), 1, "the manifest it vouched for is restored");
        assert_eq!(back.item_count(), 3, "2 chunks and their host's lane");

        // A node that follows no one is never sent a directory (it would only refuse it).
        let stranger = Engine::new(EngineConfig::default(), test_keypair(102), [], 3);
        let delta = back.sync_delta(&stranger.sync_digest());
        assert!(!delta.envelopes.iter().any(|e| matches!(e, Envelope::Directory(_))));

        // A follower that missed the gossip gets the directory, then the manifest, by sync.
        let mut peer = Engine::new(EngineConfig::default(), test_keypair(101), [], 2);
        peer.handle(Input::Follow(curator.public()), 0).unwrap();
        let digest = peer.sync_digest();
        let digest = crate::message::SyncDigest::from_bytes(&digest.to_bytes()).unwrap();
        assert_eq!(digest.following, [(curator.public(), 0)]);
        let delta = back.sync_delta(&digest);
        for env in delta.envelopes {
            let _ = peer.handle(Input::Message(env), 20);
        }
        assert_eq!(peer.priority(&m.id()), 6);
        assert_eq!(peer.item_count(), 3, "2 chunks and their host's lane");
        let again = back.sync_delta(&peer.sync_digest());
        assert!(!again.envelopes.iter().any(|e| matches!(e, Envelope::Directory(_))), "held");
    }
}
