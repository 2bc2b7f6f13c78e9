//! The node's durable state in one redb database: the engine's records, the trusted project
//! keys, the followed curator keys and the addresses of peers met before.
//!
//! The engine hands out [`Output::Persist`](starling_protocol::Output::Persist) records; each
//! is stored under a key chosen so that the newest record for the same thing replaces the
//! older one (an item keeps only its latest proof, a project its newest manifest). On start,
//! [`Store::snapshot`] gives the records back for
//! [`Engine::restore`](starling_protocol::Engine::restore), which re-validates each of them.
//! All tables are defined here, as typed constants.

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use starling_protocol::wire;
use starling_protocol::{
    Claim, Envelope, ItemId, ProjectManifest, PublicKey, Receipt, Signable, Signed, Snapshot,
};

/// Manifests by project id.
const MANIFESTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("manifests");
/// Item batches by content id.
const BATCHES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("batches");
/// The latest proof of each item's state (claim, receipt, failure or release) by item id.
const ITEM_PROOFS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("item_proofs");
/// The holder's ready receipt of ongoing work (a seeding duty), by item id, while the item's
/// proof is a later renewal of the same claim: a renewal replaces the receipt in
/// `ITEM_PROOFS`, and without this a restarted node would forget that the copy was ready.
const ITEM_READY: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("item_ready");
/// Every failure kept for an item, by item id, signer and epoch: an item's fate is read from
/// all of them (see the engine's `fails.rs`), so none replaces another or the item's proof.
const FAILURE_LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("failure_log");
/// Relay requests by requester node id.
const RELAY_REQUESTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("relay_requests");
/// Trusted project owner keys.
const TRUSTED: TableDefinition<&[u8; 32], ()> = TableDefinition::new("trusted");
/// Followed curator keys.
const FOLLOWING: TableDefinition<&[u8; 32], ()> = TableDefinition::new("following");
/// The newest directory of each followed curator, by curator key.
const DIRECTORIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("directories");
/// Known peers: peer id (text) to multiaddrs (newline-separated text).
const PEERS: TableDefinition<&str, &str> = TableDefinition::new("peers");
/// Operator settings (JSON) by name.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Small values by name.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// What the node contributed over all its runs, by figure (`items.crawl`, `urls_archived`,
/// `uptime_ms`, …; see [`Store::lifetime`]).
const LIFETIME: TableDefinition<&str, u64> = TableDefinition::new("lifetime");

/// `SETTINGS` key of the operator's choices.
const SETTINGS_OPERATOR: &str = "operator";
/// `META` key of the last presence sequence number used.
const META_PRESENCE_SEQ: &str = "presence_seq";
/// Most peers remembered.
pub const KNOWN_PEERS_MAX: usize = 256;

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the database.
    #[error(
        "database {0} is in use by another process (is a node already running with this data dir?)"
    )]
    Locked(String),
    /// The file exists but is not a redb database: empty, or something else entirely.
    #[error(
        "{path} is {what}, not a Starling store; move it away to start fresh, or restore it from a backup"
    )]
    Foreign {
        /// The file.
        path: String,
        /// "empty" or what its first bytes are.
        what: &'static str,
    },
    /// The file is a redb database that fails its integrity check or cannot be read.
    #[error(
        "{path} is damaged ({reason}); move it away to start fresh, or restore it from a backup"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What redb said.
        reason: String,
    },
    /// A read or write failed.
    #[error("database error: {0}")]
    Io(String),
}

/// The first bytes of every redb file (redb's `MAGICNUMBER`, file format 3 onwards).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Refuses an existing file that redb would silently initialise (an empty one) or cannot
/// hold (one without redb's header). A missing file is fine: the store is created.
fn check_file(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io(format!("cannot read {shown}: {e}"))),
    };
    let mut head = [0u8; REDB_MAGIC.len()];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(StoreError::Io(format!("cannot read {shown}: {e}"))),
        }
    }
    match got {
        0 => Err(StoreError::Foreign { path: shown, what: "empty" }),
        n if n < head.len() || head != REDB_MAGIC => {
            Err(StoreError::Foreign { path: shown, what: "not a redb database" })
        }
        _ => Ok(()),
    }
}

/// Runs `f`, turning a panic (redb may panic on a file altered behind its back, and debug
/// builds of redb assert on it) into `Corrupt`, without the panic message on stderr.
fn no_panic<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "redb panicked while reading it".into());
        Err(StoreError::Corrupt { path: path.display().to_string(), reason })
    })
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: std::path::PathBuf,
    /// Debug builds only, for the fault tests: while this file exists every write fails, as
    /// on a full disk (`STARLING_TEST_STORE_FAULT`).
    fault_file: Option<std::path::PathBuf>,
}

impl Store {
    /// Opens the database at `path`, creating it only when no file is there, and makes sure
    /// every table exists. An existing file must be a redb database that passes redb's
    /// integrity check (which also repairs what a crash left); anything else is refused with
    /// an error naming the file, never taken as a new database or allowed to panic.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        check_file(path)?;
        no_panic(path, || Self::open_checked(path))
    }

    fn open_checked(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let db = Database::builder().set_check_integrity_on_open(true).create(path).map_err(
            |e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(shown.clone()),
                other => corrupt(&other),
            },
        )?;
        let store = Self { db, path: path.to_owned(), fault_file: test_fault_file() };
        let txn = store.db.begin_write().map_err(|e| corrupt(&e))?;
        {
            for def in [MANIFESTS, BATCHES, ITEM_PROOFS, ITEM_READY, RELAY_REQUESTS, DIRECTORIES] {
                txn.open_table(def).map_err(|e| corrupt(&e))?;
            }
            txn.open_table(FOLLOWING).map_err(|e| corrupt(&e))?;
            txn.open_table(SETTINGS).map_err(|e| corrupt(&e))?;
            txn.open_table(FAILURE_LOG).map_err(|e| corrupt(&e))?;
            txn.open_table(TRUSTED).map_err(|e| corrupt(&e))?;
            txn.open_table(PEERS).map_err(|e| corrupt(&e))?;
            txn.open_table(META).map_err(|e| corrupt(&e))?;
            txn.open_table(LIFETIME).map_err(|e| corrupt(&e))?;
        }
        txn.commit().map_err(|e| corrupt(&e))?;
        Ok(store)
    }

    /// [`Store::snapshot`] for start-up: a failure or a panic while reading is reported as a
    /// damaged file, so the node stops with one line before it announces itself.
    pub fn startup_snapshot(&self) -> Result<Snapshot, StoreError> {
        no_panic(&self.path, || {
            self.snapshot().map_err(|e| StoreError::Corrupt {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })
        })
    }

    /// Stores engine records in one transaction. With `durable`, the commit (and every
    /// non-durable one before it) is on disk when this returns.
    pub fn persist(&self, records: &[Envelope], durable: bool) -> Result<(), StoreError> {
        self.check_fault()?;
        let mut txn = self.db.begin_write().map_err(io)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(io)?;
        }
        {
            let mut manifests = txn.open_table(MANIFESTS).map_err(io)?;
            let mut batches = txn.open_table(BATCHES).map_err(io)?;
            let mut proofs = txn.open_table(ITEM_PROOFS).map_err(io)?;
            let mut ready = txn.open_table(ITEM_READY).map_err(io)?;
            let mut failures = txn.open_table(FAILURE_LOG).map_err(io)?;
            let mut relays = txn.open_table(RELAY_REQUESTS).map_err(io)?;
            let mut directories = txn.open_table(DIRECTORIES).map_err(io)?;
            for env in records {
                let bytes = env.to_bytes();
                match env {
                    Envelope::Manifest(s) => {
                        if let Ok(m) = wire::decode::<ProjectManifest>(s.body(), usize::MAX) {
                            manifests.insert(m.id().as_bytes(), bytes.as_slice()).map_err(io)?;
                        }
                    }
                    Envelope::Batch(_) => {
                        batches.insert(&env.content_id(), bytes.as_slice()).map_err(io)?;
                    }
                    Envelope::RelayRequest(s) => {
                        relays.insert(s.signer().as_bytes(), bytes.as_slice()).map_err(io)?;
                    }
                    // The engine checked that the signer is the curator.
                    Envelope::Directory(s) => {
                        directories.insert(s.signer().as_bytes(), bytes.as_slice()).map_err(io)?;
                    }
                    // Heartbeats and shard counts are soon stale: heard again, not kept.
                    Envelope::Presence(_) | Envelope::Progress(_) => {}
                    Envelope::Failure(f) => {
                        let Some(item) = proof_item(env) else { continue };
                        let mut key = item.as_bytes().to_vec();
                        key.extend_from_slice(f.signer().as_bytes());
                        key.extend_from_slice(&failure_epoch(f).to_be_bytes());
                        failures.insert(key.as_slice(), bytes.as_slice()).map_err(io)?;
                    }
                    Envelope::Claim(_) | Envelope::Release(_) | Envelope::Receipt(_) => {
                        let Some(item) = proof_item(env) else { continue };
                        let key = item.as_bytes();
                        // Only a claim can renew the one before it: anything else ends the
                        // ready receipt's standing without reading what was stored.
                        let before = match env {
                            Envelope::Claim(_) => proofs
                                .get(key)
                                .map_err(io)?
                                .and_then(|v| Envelope::from_file_bytes(v.value()).ok()),
                            _ => None,
                        };
                        let renews = before
                            .as_ref()
                            .is_some_and(|old| holder_epoch(old) == holder_epoch(env));
                        match &before {
                            // A renewal of the claim the stored receipt reported ready under:
                            // the receipt is kept beside it.
                            Some(old @ Envelope::Receipt(_)) if renews => {
                                ready.insert(key, old.to_bytes().as_slice()).map_err(io)?;
                            }
                            // A further renewal: the ready receipt still stands.
                            Some(Envelope::Claim(_)) if renews => {}
                            _ => {
                                ready.remove(key).map_err(io)?;
                            }
                        }
                        proofs.insert(key, bytes.as_slice()).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }

    /// Makes every earlier non-durable commit durable, recording the presence sequence if given.
    pub fn flush(&self, presence_seq: Option<u64>) -> Result<(), StoreError> {
        self.check_fault()?;
        let txn = self.db.begin_write().map_err(io)?;
        if let Some(seq) = presence_seq {
            let mut meta = txn.open_table(META).map_err(io)?;
            meta.insert(META_PRESENCE_SEQ, seq).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// After a failed write: makes a durable write to learn whether the store works again,
    /// and if not, opens the database afresh (redb refuses every write after an I/O error
    /// until it is reopened) and tries once more.
    pub fn recover(&mut self) -> Result<(), StoreError> {
        if self.flush(None).is_ok() {
            return Ok(());
        }
        self.check_fault()?;
        // The old handle must be closed before the file can be opened again.
        let placeholder = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(io)?;
        drop(std::mem::replace(&mut self.db, placeholder));
        let path = self.path.clone();
        match Self::open(&path) {
            Ok(fresh) => {
                self.db = fresh.db;
                self.flush(None)
            }
            Err(e) => Err(e),
        }
    }

    fn check_fault(&self) -> Result<(), StoreError> {
        match &self.fault_file {
            Some(f) if f.exists() => Err(StoreError::Io(
                "injected fault (STARLING_TEST_STORE_FAULT): no space left".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Size of the database file in bytes (0 if it cannot be read).
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The operator's saved settings; unreadable ones are reported and replaced by defaults.
    pub fn settings(&self) -> Result<crate::settings::OperatorSettings, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(SETTINGS).map_err(io)?;
        let Some(v) = t.get(SETTINGS_OPERATOR).map_err(io)? else { return Ok(Default::default()) };
        Ok(serde_json::from_slice(v.value()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "saved operator settings do not parse; using defaults");
            Default::default()
        }))
    }

    /// Saves the operator's settings durably.
    pub fn save_settings(&self, s: &crate::settings::OperatorSettings) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(s).map_err(io)?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut t = txn.open_table(SETTINGS).map_err(io)?;
            t.insert(SETTINGS_OPERATOR, bytes.as_slice()).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// The lifetime figures saved last (all 0 in a new database). Figures this version does
    /// not know are ignored.
    pub fn lifetime(&self) -> Result<crate::views::LifetimeView, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(LIFETIME).map_err(io)?;
        let mut view = crate::views::LifetimeView::default();
        for row in t.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let (name, value) = (k.value(), v.value());
            if let Some(kind) = name.strip_prefix("items.") {
                view.items.insert(kind.to_owned(), value);
                continue;
            }
            match name {
                "urls_archived" => view.urls_archived = value,
                "bytes_archived" => view.bytes_archived = value,
                "bytes_seeded" => view.bytes_seeded = value,
                "relay_circuits" => view.relay_circuits = value,
                "uptime_ms" => view.uptime_ms = value,
                "since_ms" => view.since_ms = value,
                "saved_ms" => view.saved_ms = value,
                _ => {}
            }
        }
        Ok(view)
    }

    /// Writes the lifetime figures durably, in one transaction.
    pub fn save_lifetime(&self, view: &crate::views::LifetimeView) -> Result<(), StoreError> {
        self.check_fault()?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut t = txn.open_table(LIFETIME).map_err(io)?;
            for (kind, v) in &view.items {
                t.insert(format!("items.{kind}").as_str(), *v).map_err(io)?;
            }
            for (name, v) in [
                ("urls_archived", view.urls_archived),
                ("bytes_archived", view.bytes_archived),
                ("bytes_seeded", view.bytes_seeded),
                ("relay_circuits", view.relay_circuits),
                ("uptime_ms", view.uptime_ms),
                ("since_ms", view.since_ms),
                ("saved_ms", view.saved_ms),
            ] {
                t.insert(name, v).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// Adds a trusted project key.
    pub fn trust(&self, key: &PublicKey) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut t = txn.open_table(TRUSTED).map_err(io)?;
            t.insert(key.as_bytes(), ()).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// Follows a curator key, durably.
    pub fn follow(&self, key: &PublicKey) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut t = txn.open_table(FOLLOWING).map_err(io)?;
            t.insert(key.as_bytes(), ()).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// Remembers a peer's addresses (bounded by [`KNOWN_PEERS_MAX`]), not durably.
    pub fn remember_peer(&self, peer: &str, addrs: &[String]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(Durability::None).map_err(io)?;
        {
            let mut t = txn.open_table(PEERS).map_err(io)?;
            let known = t.get(peer).map_err(io)?.is_some();
            if known || (t.len().map_err(io)? as usize) < KNOWN_PEERS_MAX {
                t.insert(peer, addrs.join("\n").as_str()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// Peers remembered from earlier runs, with their addresses.
    pub fn known_peers(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(PEERS).map_err(io)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let addrs = v.value().lines().map(str::to_owned).collect();
            out.push((k.value().to_owned(), addrs));
        }
        Ok(out)
    }

    /// The stored proof of `item`'s state (claim, receipt, failure or release), if any.
    pub fn proof(&self, item: &ItemId) -> Result<Option<Envelope>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(ITEM_PROOFS).map_err(io)?;
        let Some(v) = table.get(item.as_bytes()).map_err(io)? else { return Ok(None) };
        Envelope::from_file_bytes(v.value()).map(Some).map_err(io)
    }

    /// Everything needed to restore the engine; records that no longer decode are skipped.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let mut snap = Snapshot::default();
        for key in txn.open_table(TRUSTED).map_err(io)?.iter().map_err(io)? {
            snap.trusted.push(PublicKey(*key.map_err(io)?.0.value()));
        }
        for key in txn.open_table(FOLLOWING).map_err(io)?.iter().map_err(io)? {
            snap.following.push(PublicKey(*key.map_err(io)?.0.value()));
        }
        // Directories first (they vouch for manifests), then manifests, then batches, then
        // item state: the order the engine needs.
        let mut take = |bytes: &[u8]| match Envelope::from_file_bytes(bytes) {
            Ok(env) => snap.records.push(env),
            Err(e) => tracing::warn!(error = %e, "skipping a stored record that does not decode"),
        };
        // A ready receipt after the renewal it stands beside, as the engine hands them out.
        for def in [DIRECTORIES, MANIFESTS, BATCHES, RELAY_REQUESTS, ITEM_PROOFS, ITEM_READY] {
            for row in txn.open_table(def).map_err(io)?.iter().map_err(io)? {
                take(row.map_err(io)?.1.value());
            }
        }
        // Failures after the item's proof, which they may end (see `FAILURE_LOG`).
        for row in txn.open_table(FAILURE_LOG).map_err(io)?.iter().map_err(io)? {
            take(row.map_err(io)?.1.value());
        }
        let meta = txn.open_table(META).map_err(io)?;
        snap.presence_seq = meta.get(META_PRESENCE_SEQ).map_err(io)?.map_or(0, |v| v.value());
        Ok(snap)
    }
}

/// Debug builds only: the file named by `STARLING_TEST_STORE_FAULT`, whose existence fails
/// every write.
fn test_fault_file() -> Option<std::path::PathBuf> {
    #[cfg(debug_assertions)]
    {
        std::env::var_os("STARLING_TEST_STORE_FAULT").map(std::path::PathBuf::from)
    }
    #[cfg(not(debug_assertions))]
    {
        None
    }
}

/// The epoch of a stored failure, read from its body as [`proof_item`] reads the item.
fn failure_epoch(f: &Signed<starling_protocol::Failure>) -> u32 {
    wire::decode::<starling_protocol::Failure>(f.body(), starling_protocol::Failure::MAX_BODY_BYTES)
        .ok()
        .and_then(|f| f.claim.verified_ref().ok().map(|c| c.epoch))
        .unwrap_or(0)
}

/// The item an item-state record is about, read from its body without checking the
/// signature again (the engine accepted the record before handing it out).
pub(crate) fn proof_item(env: &Envelope) -> Option<ItemId> {
    fn body<T: Signable>(s: &Signed<T>) -> Option<T> {
        wire::decode(s.body(), T::MAX_BODY_BYTES).ok()
    }
    match env {
        Envelope::Claim(s) => body(s).map(|c| c.item),
        Envelope::Release(s) => body(s).map(|r| r.item),
        Envelope::Receipt(s) => body(s).and_then(|r| body(&r.claim)).map(|c| c.item),
        Envelope::Failure(s) => body(s).and_then(|f| body(&f.claim)).map(|c| c.item),
        _ => None,
    }
}

/// The signer and epoch of a stored claim or receipt (the claim's, for a receipt).
fn holder_epoch(env: &Envelope) -> Option<(PublicKey, u32)> {
    let epoch_of = |body: &[u8]| wire::decode::<Claim>(body, Claim::MAX_BODY_BYTES).ok();
    match env {
        Envelope::Claim(c) => Some((c.signer(), epoch_of(c.body())?.epoch)),
        Envelope::Receipt(r) => {
            let body = wire::decode::<Receipt>(r.body(), Receipt::MAX_BODY_BYTES).ok()?;
            Some((r.signer(), epoch_of(body.claim.body())?.epoch))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::Signed;
    use starling_protocol::engine::test_keypair;

    #[test]
    fn follows_and_the_newest_directory_survive_reopen_and_come_before_manifests() {
        use starling_protocol::Directory;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let curator = test_keypair(3);
        let d = |version| {
            let d =
                Directory { curator: curator.public(), name: "c".into(), version, entries: vec![] };
            Envelope::Directory(Signed::sign(&curator, &d))
        };
        {
            let store = Store::open(&path).unwrap();
            store.follow(&curator.public()).unwrap();
            store.persist(&[d(1)], false).unwrap();
            store.persist(&[d(2)], true).unwrap();
        }
        let snap = Store::open(&path).unwrap().snapshot().unwrap();
        assert_eq!(snap.following, vec![curator.public()]);
        assert_eq!(snap.records, vec![d(2)], "one directory per curator, the newest");
    }

    #[test]
    fn a_ready_receipt_outlives_the_renewals_after_it_and_goes_with_the_epoch() {
        // A seeding duty: claimed, reported ready, then renewed. A restart must find the
        // renewal and the ready receipt (in that order, as the engine takes them in); a new
        // epoch or a release ends the receipt's standing.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let key = test_keypair(1);
        let item = ItemId([9; 32]);
        let claim = |epoch, at_ms| {
            let c = Claim {
                item,
                epoch,
                at_ms,
                lease_until_ms: at_ms + 100,
                since_ms: 10,
                proof: None,
            };
            Envelope::Claim(Signed::sign(&key, &c))
        };
        let Envelope::Claim(first) = claim(1, 10) else { unreachable!() };
        let receipt = Envelope::Receipt(Signed::sign(
            &key,
            &Receipt {
                claim: first.clone(),
                result: starling_protocol::Digest([4; 32]),
                size: 3,
                ok: 1,
                failed: 0,
                at_ms: 20,
                parts: vec![],
            },
        ));
        {
            let store = Store::open(&path).unwrap();
            store.persist(&[Envelope::Claim(first), receipt.clone()], false).unwrap();
            store.persist(&[claim(1, 50)], false).unwrap();
            store.persist(&[claim(1, 90)], true).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.snapshot().unwrap().records, vec![claim(1, 90), receipt.clone()]);
        // Another node's claim of the next epoch: the old holder's receipt no longer stands.
        let other = test_keypair(2);
        let c2 =
            Claim { item, epoch: 2, at_ms: 200, lease_until_ms: 300, since_ms: 200, proof: None };
        let next = Envelope::Claim(Signed::sign(&other, &c2));
        store.persist(std::slice::from_ref(&next), true).unwrap();
        assert_eq!(store.snapshot().unwrap().records, vec![next]);
        // Ready again, then given back: only the release is left.
        store.persist(&[receipt.clone(), claim(1, 90)], true).unwrap();
        assert_eq!(store.snapshot().unwrap().records, vec![claim(1, 90), receipt.clone()]);
        let release = Envelope::Release(Signed::sign(
            &key,
            &starling_protocol::Release {
                item,
                epoch: 1,
                at_ms: 500,
                cooldown_until_ms: None,
                drain_ms: None,
            },
        ));
        store.persist(std::slice::from_ref(&release), true).unwrap();
        assert_eq!(store.snapshot().unwrap().records, vec![release]);
    }

    #[test]
    fn latest_proof_per_item_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let key = test_keypair(1);
        let item = ItemId([7; 32]);
        let c1 =
            Claim { item, epoch: 1, at_ms: 10, lease_until_ms: 100, since_ms: 10, proof: None };
        let c2 =
            Claim { item, epoch: 1, at_ms: 50, lease_until_ms: 150, since_ms: 10, proof: None };
        {
            let store = Store::open(&path).unwrap();
            store.persist(&[Envelope::Claim(Signed::sign(&key, &c1))], false).unwrap();
            store.persist(&[Envelope::Claim(Signed::sign(&key, &c2))], true).unwrap();
            store.trust(&key.public()).unwrap();
            store.flush(Some(42)).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.records, vec![Envelope::Claim(Signed::sign(&key, &c2))]);
        assert_eq!(snap.trusted, vec![key.public()]);
        assert_eq!(snap.presence_seq, 42);
    }

    #[test]
    fn lifetime_figures_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let mut view = crate::views::LifetimeView {
            urls_archived: 12,
            bytes_archived: 3 << 20,
            bytes_seeded: 9,
            relay_circuits: 2,
            uptime_ms: 61_000,
            since_ms: 1_700_000_000_000,
            saved_ms: 1_700_000_061_000,
            ..Default::default()
        };
        view.items.insert("crawl".into(), 4);
        view.items.insert("seed".into(), 1);
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.lifetime().unwrap(), Default::default());
            store.save_lifetime(&view).unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().lifetime().unwrap(), view);
    }

    #[test]
    fn second_open_is_locked_and_empty_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let _first = Store::open(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Locked(_))));
        let bad = dir.path().join("bad.redb");
        std::fs::write(&bad, vec![0xAB; 8192]).unwrap();
        assert!(matches!(Store::open(&bad), Err(StoreError::Foreign { .. })));
        let short = dir.path().join("short.redb");
        std::fs::write(&short, b"redb").unwrap();
        assert!(matches!(Store::open(&short), Err(StoreError::Foreign { .. })));
        let empty = dir.path().join("empty.redb");
        std::fs::write(&empty, b"").unwrap();
        let err = Store::open(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.redb is empty, not a Starling store"), "{err}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "the empty file was written");
    }

    #[test]
    fn flipped_bytes_are_reported_as_damage_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let store = Store::open(&path).unwrap();
            store.trust(&test_keypair(1).public()).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for page in (4096..len).step_by(4096) {
            for b in &mut bytes[page + 64..(page + 96).min(len)] {
                *b ^= 0x5a;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
