//! The cloneable handle to the node actor: a bounded command channel, each command carrying a
//! `oneshot` for its answer (the shape of rust-libp2p's `file-sharing` example). The control
//! API holds one; nothing else reaches into the actor's state.

use anyhow::{Result, anyhow};
use starling_protocol::{Envelope, PublicKey};
use tokio::sync::{mpsc, oneshot};

use crate::views::{ItemInfo, Outcome, PeerInfo, ProjectInfo, StatusView};

/// Commands queued to the actor.
pub const COMMAND_CAP: usize = 64;
/// Most items one `/items` answer lists.
pub const ITEMS_LIST_MAX: usize = 100_000;

/// Filters for [`Client::items`].
#[derive(Debug, Clone, Default)]
pub struct ItemQuery {
    /// Only this project (hex id).
    pub project: Option<String>,
    /// Only this state (`open`, `held`, `done`, `failed`).
    pub state: Option<String>,
    /// At most this many (capped at [`ITEMS_LIST_MAX`]).
    pub limit: Option<usize>,
}

/// A request to the actor.
#[derive(Debug)]
pub enum Command {
    /// Node status.
    Status(oneshot::Sender<StatusView>),
    /// Known peers.
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Known projects.
    Projects(oneshot::Sender<Vec<ProjectInfo>>),
    /// Items, filtered.
    Items(ItemQuery, oneshot::Sender<Vec<ItemInfo>>),
    /// Publish a signed file (manifest or batch) into the mesh.
    Publish(Box<Envelope>, oneshot::Sender<Result<Outcome, String>>),
    /// Trust a project owner key.
    Trust(PublicKey, oneshot::Sender<Result<Outcome, String>>),
    /// Gossip raw bytes without validation (debug builds only, for rejection tests).
    #[cfg(debug_assertions)]
    RawGossip { topic: String, bytes: Vec<u8>, reply: oneshot::Sender<Result<Outcome, String>> },
}

/// A handle to the actor.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
}

impl Client {
    /// A client and the receiving end for the actor.
    pub fn new() -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_CAP);
        (Self { tx }, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| anyhow!("node is shutting down"))?;
        rx.await.map_err(|_| anyhow!("node is shutting down"))
    }

    /// Node status.
    pub async fn status(&self) -> Result<StatusView> {
        self.ask(Command::Status).await
    }

    /// Known peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.ask(Command::Peers).await
    }

    /// Known projects.
    pub async fn projects(&self) -> Result<Vec<ProjectInfo>> {
        self.ask(Command::Projects).await
    }

    /// Items matching `query`.
    pub async fn items(&self, query: ItemQuery) -> Result<Vec<ItemInfo>> {
        self.ask(|r| Command::Items(query, r)).await
    }

    /// Publishes a signed file.
    pub async fn publish(&self, env: Envelope) -> Result<Result<Outcome, String>> {
        self.ask(|r| Command::Publish(Box::new(env), r)).await
    }

    /// Trusts a project owner key.
    pub async fn trust(&self, key: PublicKey) -> Result<Result<Outcome, String>> {
        self.ask(|r| Command::Trust(key, r)).await
    }

    /// Gossips raw bytes on `topic` without validation (debug builds only).
    #[cfg(debug_assertions)]
    pub async fn raw_gossip(
        &self,
        topic: String,
        bytes: Vec<u8>,
    ) -> Result<Result<Outcome, String>> {
        self.ask(|reply| Command::RawGossip { topic, bytes, reply }).await
    }
}
