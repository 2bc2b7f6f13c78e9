//! The cloneable handle to the node actor: a bounded command channel, each command carrying a
//! `oneshot` for its answer (the shape of rust-libp2p's `file-sharing` example). The control
//! API holds one; nothing else reaches into the actor's state.

use anyhow::{Result, anyhow};
use starling_protocol::{Envelope, ProjectId, PublicKey};
use tokio::sync::{mpsc, oneshot};

use crate::views::{
    Caps, ItemInfo, Outcome, PeerInfo, ProjectInfo, RelayView, SeedingView, StatusView, WorkView,
};

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
    /// Follow a curator key.
    Follow(PublicKey, oneshot::Sender<Result<Outcome, String>>),
    /// Work held and host states.
    Work(oneshot::Sender<WorkView>),
    /// Seeding duties and copies kept.
    Seeding(oneshot::Sender<SeedingView>),
    /// Relay slots and counters.
    Relay(oneshot::Sender<RelayView>),
    /// Everything `/metrics` reads, in one turn of the actor.
    Metrics(oneshot::Sender<Box<crate::metrics::Snapshot>>),
    /// Stop (true) or resume (false) claiming new work.
    Pause(bool, oneshot::Sender<Outcome>),
    /// Change the operator's caps (`None` fields unchanged); answers the caps now.
    SetCaps(Caps, oneshot::Sender<Result<Caps, String>>),
    /// Work on a project or leave it to others.
    Subscribe(ProjectId, bool, oneshot::Sender<Result<Outcome, String>>),
    /// Set a project's local priority.
    Priority(ProjectId, i8, oneshot::Sender<Result<Outcome, String>>),
    /// What an export of a project needs: its done crawl results and who holds each.
    ExportPlan(ProjectId, oneshot::Sender<Result<Vec<crate::seed::node::ExportPlanItem>, String>>),
    /// The URL outcomes of a project's done crawl chunks (only failed ones when set).
    UrlOutcomes(ProjectId, bool, oneshot::Sender<Result<Vec<crate::urls::UrlOutcomeView>, String>>),
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

    /// Follows a curator key.
    pub async fn follow(&self, key: PublicKey) -> Result<Result<Outcome, String>> {
        self.ask(|r| Command::Follow(key, r)).await
    }

    /// Work held and host states.
    pub async fn work(&self) -> Result<WorkView> {
        self.ask(Command::Work).await
    }

    /// Seeding duties.
    pub async fn seeding(&self) -> Result<SeedingView> {
        self.ask(Command::Seeding).await
    }

    /// Relay slots.
    pub async fn relay(&self) -> Result<RelayView> {
        self.ask(Command::Relay).await
    }

    /// Everything `/metrics` reads.
    pub async fn metrics(&self) -> Result<Box<crate::metrics::Snapshot>> {
        self.ask(Command::Metrics).await
    }

    /// Pauses (true) or resumes (false) claiming.
    pub async fn pause(&self, paused: bool) -> Result<Outcome> {
        self.ask(|r| Command::Pause(paused, r)).await
    }

    /// Changes the operator's caps.
    pub async fn set_caps(&self, caps: Caps) -> Result<Result<Caps, String>> {
        self.ask(|r| Command::SetCaps(caps, r)).await
    }

    /// Subscribes to or leaves a project.
    pub async fn subscribe(
        &self,
        project: ProjectId,
        subscribed: bool,
    ) -> Result<Result<Outcome, String>> {
        self.ask(|r| Command::Subscribe(project, subscribed, r)).await
    }

    /// Sets a project's local priority.
    pub async fn priority(
        &self,
        project: ProjectId,
        priority: i8,
    ) -> Result<Result<Outcome, String>> {
        self.ask(|r| Command::Priority(project, priority, r)).await
    }

    /// The done results of a project and their holders, for an export.
    pub async fn export_plan(
        &self,
        project: ProjectId,
    ) -> Result<Result<Vec<crate::seed::node::ExportPlanItem>, String>> {
        self.ask(|r| Command::ExportPlan(project, r)).await
    }

    /// The URL outcomes of `project`'s done crawl chunks; with `failed_only`, only the URLs
    /// that were not archived.
    pub async fn url_outcomes(
        &self,
        project: ProjectId,
        failed_only: bool,
    ) -> Result<Result<Vec<crate::urls::UrlOutcomeView>, String>> {
        self.ask(|r| Command::UrlOutcomes(project, failed_only, r)).await
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
