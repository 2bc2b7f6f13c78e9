//! Curated directories: a list of projects and their priorities, signed by a curator key.
//!
//! An operator who follows a curator (`starling project follow KEY`) lets that curator choose
//! work for the node, as the Archive Team Warrior's "ArchiveTeam's choice" does: a project
//! listed in a followed curator's directory is taken in as if its owner key were trusted, and
//! its listed priority applies unless the operator set one. A directory is versioned like a
//! manifest (the higher version replaces the lower; at equal versions the greater body hash
//! wins, on every node alike), gossiped, synced and stored.

use serde::{Deserialize, Serialize};

use crate::ids::ProjectId;
use crate::keys::PublicKey;
use crate::signed::Signable;
use crate::wire::{DecodeError, Validate, check_len};

/// Longest directory name, in bytes.
pub const DIRECTORY_NAME_MAX: usize = 64;
/// Most projects one directory lists.
pub const DIRECTORY_ENTRIES_MAX: usize = 256;

/// One project a curator lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The project.
    pub project: ProjectId,
    /// Its owner key: only manifests signed by this key are taken in for the project, so a
    /// listing cannot be used to vouch for another key's project of the same id.
    pub owner: PublicKey,
    /// How eagerly a follower takes the project's items (higher first; as
    /// [`crate::Input::SetPriority`]).
    pub priority: i8,
}

/// A curator's signed list of projects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// The curator key; must be the envelope's signer.
    pub curator: PublicKey,
    /// A short name shown to operators.
    pub name: String,
    /// Higher versions replace lower ones.
    pub version: u64,
    /// The projects listed, each once, at most [`DIRECTORY_ENTRIES_MAX`].
    pub entries: Vec<DirectoryEntry>,
}

impl Directory {
    /// The entry for `project`, if listed.
    pub fn entry(&self, project: &ProjectId) -> Option<&DirectoryEntry> {
        self.entries.iter().find(|e| e.project == *project)
    }
}

impl Validate for Directory {
    fn validate(&self) -> Result<(), DecodeError> {
        check_len("name", self.name.len(), DIRECTORY_NAME_MAX)?;
        check_len("entries", self.entries.len(), DIRECTORY_ENTRIES_MAX)?;
        if self.name.is_empty() {
            return Err(DecodeError::Invalid("empty directory name"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if !self.entries.iter().all(|e| seen.insert(e.project)) {
            return Err(DecodeError::Invalid("project listed twice in a directory"));
        }
        Ok(())
    }
}

impl Signable for Directory {
    const KIND: &'static str = "directory";
    // Per entry: two 32-byte keys with their CBOR headers and map keys, and a priority.
    const MAX_BODY_BYTES: usize = 256 + DIRECTORY_NAME_MAX + DIRECTORY_ENTRIES_MAX * 128;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::Signed;

    fn dir(entries: usize) -> Directory {
        let curator = crate::engine::test_keypair(1).public();
        let owner = crate::engine::test_keypair(2).public();
        let entries = (0..entries)
            .map(|i| DirectoryEntry {
                project: ProjectId::derive(&owner, &format!("p{i}")),
                owner,
                priority: i8::MIN,
            })
            .collect();
        Directory { curator, name: "c".repeat(DIRECTORY_NAME_MAX), version: u64::MAX, entries }
    }

    #[test]
    fn a_full_directory_signs_and_verifies() {
        let key = crate::engine::test_keypair(1);
        let d = dir(DIRECTORY_ENTRIES_MAX);
        let back = Signed::sign(&key, &d).verify().expect("the largest directory verifies");
        assert_eq!(back, d);
    }

    #[test]
    fn limits_and_duplicates_are_refused() {
        assert!(dir(DIRECTORY_ENTRIES_MAX + 1).validate().is_err());
        let mut d = dir(2);
        d.entries[1].project = d.entries[0].project;
        assert!(d.validate().is_err(), "a project listed twice");
        let mut d = dir(1);
        d.name.clear();
        assert!(d.validate().is_err(), "an empty name");
        d.name = "x".repeat(DIRECTORY_NAME_MAX + 1);
        assert!(d.validate().is_err(), "a long name");
    }
}
