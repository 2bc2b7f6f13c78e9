//! The dashboard's network side, kept off the UI thread so a slow or dead node never freezes
//! the screen. Two threads:
//!
//! - the **poller** owns the [`ApiClient`]: every tick, and soon after the event stream says
//!   something changed, it reads every view and sends one [`Action::Snapshot`] (or
//!   [`Action::Unreachable`]) to the UI; between polls it runs the operator's commands in order
//!   and answers each with [`Action::CommandDone`];
//! - the **event reader** follows `GET /events`, forwards each event to the UI, nudges the
//!   poller, and reconnects with backoff when the stream breaks.
//!
//! Every channel is bounded. When the node is down the poller keeps trying; with a data dir
//! target it re-reads the port file each time, so a node restarted on a new port is found.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::de::DeserializeOwned;

use crate::api::{Caps, NodeEvent, Priority, Subscription};
use crate::app::{Action, Applied, Command, Snapshot};
use crate::client::{ApiClient, Refused, decode};

/// Actions queued for the UI at most.
pub(crate) const UI_QUEUE_CAP: usize = 256;
/// Commands (and the refresh nudge) queued for the poller at most.
pub(crate) const POLLER_QUEUE_CAP: usize = 16;
/// Log lines read each poll.
pub(crate) const LOG_FETCH_LINES: usize = 500;
/// Polls never come closer together than this, however busy the event stream is.
const POLL_GAP_MIN: Duration = Duration::from_millis(200);
/// First wait before reconnecting the event stream.
const EVENTS_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait before reconnecting the event stream.
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Sleeps are cut into slices this long so shutdown is noticed quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(100);

/// Where the node's API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Read `api-port` and `api-token` from this data dir on every (re)connect.
    DataDir(PathBuf),
    /// A fixed base URL and token.
    Fixed { base: String, token: String },
}

impl Target {
    /// What to call the node before it has answered.
    pub(crate) fn label(&self) -> String {
        match self {
            Target::DataDir(dir) => dir.display().to_string(),
            Target::Fixed { base, .. } => base.clone(),
        }
    }

    pub(crate) fn connect(&self) -> Result<ApiClient> {
        match self {
            Target::DataDir(dir) => ApiClient::from_data_dir(dir),
            Target::Fixed { base, token } => Ok(ApiClient::with_base(base.clone(), token.clone())),
        }
    }
}

/// What the UI and the event reader send the poller.
#[derive(Debug)]
pub(crate) enum PollerMsg {
    Command(Command),
    /// Something changed; poll soon.
    Refresh,
}

/// The poller thread's state.
#[derive(Debug)]
pub(crate) struct Poller {
    target: Target,
    tick: Duration,
    inbox: Receiver<PollerMsg>,
    ui: SyncSender<Action>,
    /// Set while a `Refresh` sits in the inbox, so a chatty event stream queues only one.
    refresh_queued: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    client: Option<ApiClient>,
}

impl Poller {
    pub(crate) fn new(
        target: Target,
        tick: Duration,
        inbox: Receiver<PollerMsg>,
        ui: SyncSender<Action>,
        refresh_queued: Arc<AtomicBool>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Self { target, tick, inbox, ui, refresh_queued, shutdown, client: None }
    }

    /// Runs until the UI goes away or shutdown is set.
    pub(crate) fn run(mut self) {
        let mut next_poll = Instant::now();
        let mut last_poll: Option<Instant> = None;
        while !self.shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_poll {
                if !self.poll() {
                    return;
                }
                last_poll = Some(Instant::now());
                next_poll = Instant::now() + self.tick;
                continue;
            }
            match self.inbox.recv_timeout((next_poll - now).min(SLEEP_SLICE)) {
                Ok(PollerMsg::Refresh) => {
                    self.refresh_queued.store(false, Ordering::Relaxed);
                    let soonest = last_poll.map_or(now, |t| t + POLL_GAP_MIN);
                    next_poll = next_poll.min(soonest);
                }
                Ok(PollerMsg::Command(command)) => {
                    let result = self.execute(&command).map_err(|e| format!("{e:#}"));
                    if self.ui.send(Action::CommandDone { command, result }).is_err() {
                        return;
                    }
                    next_poll = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// One poll; false when the UI has gone.
    fn poll(&mut self) -> bool {
        let action = match self.fetch() {
            Ok(snap) => Action::Snapshot(Box::new(snap)),
            Err(e) => {
                let target =
                    self.client.take().map_or_else(|| self.target.label(), |c| c.base().to_owned());
                let error = format!("{e:#}");
                if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 401) {
                    Action::Unauthorized { target, error }
                } else {
                    Action::Unreachable { target, error }
                }
            }
        };
        self.ui.send(action).is_ok()
    }

    fn client(&mut self) -> Result<&ApiClient> {
        if self.client.is_none() {
            self.client = Some(self.target.connect()?);
        }
        match &self.client {
            Some(c) => Ok(c),
            None => bail!("no client"),
        }
    }

    fn fetch(&mut self) -> Result<Snapshot> {
        let c = self.client()?;
        Ok(Snapshot {
            base: c.base().to_owned(),
            status: c.get_json("/status")?,
            peers: c.get_json("/peers")?,
            projects: c.get_json("/projects")?,
            work: c.get_json("/work")?,
            seeding: get_optional(c, "/seeding")?,
            relay: get_optional(c, "/relay")?,
            log: get_optional(c, &format!("/log?limit={LOG_FETCH_LINES}"))?.unwrap_or_default(),
        })
    }

    fn execute(&mut self, command: &Command) -> Result<Applied> {
        let c = self.client()?;
        match command {
            Command::Pause => post_ok(c, "/pause", b""),
            Command::Resume => post_ok(c, "/resume", b""),
            Command::SetCapacity(n) => {
                let body = serde_json::to_vec(&Caps { capacity: Some(*n), ..Caps::default() })?;
                Ok(Applied::Caps(c.post_json("/caps", &body)?))
            }
            Command::SetCap { cap, bytes } => {
                let body = serde_json::to_vec(&cap.body(*bytes))?;
                Ok(Applied::Caps(c.post_json("/caps", &body)?))
            }
            Command::Subscribe { project, subscribed } => {
                let body = serde_json::to_vec(&Subscription { subscribed: *subscribed })?;
                post_ok(c, &format!("/projects/{}/subscribe", path_id(project)?), &body)
            }
            Command::SetPriority { project, priority } => {
                let body = serde_json::to_vec(&Priority { priority: *priority })?;
                post_ok(c, &format!("/projects/{}/priority", path_id(project)?), &body)
            }
            Command::Trust { owner } => post_ok(c, "/trust", owner.as_bytes()),
        }
    }
}

/// An id that is safe to put in a URL path as it is.
fn path_id(id: &str) -> Result<&str> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("project id {id:?} is not hex");
    }
    Ok(id)
}

/// GET a view the node may not serve yet: 404 reads as `None`.
fn get_optional<T: DeserializeOwned>(c: &ApiClient, path: &str) -> Result<Option<T>> {
    let answer = c.request("GET", path, &[], None)?;
    if answer.status == 404 {
        return Ok(None);
    }
    decode(answer).map(Some)
}

/// POST and accept any 2xx answer, whatever its body.
fn post_ok(c: &ApiClient, path: &str, body: &[u8]) -> Result<Applied> {
    let answer = c.request("POST", path, body, None)?;
    if (200..300).contains(&answer.status) {
        return Ok(Applied::Done);
    }
    decode::<serde_json::Value>(answer).map(|_| Applied::Done)
}

/// Follows the node's event stream until the UI goes away or shutdown is set.
pub(crate) fn read_events(
    target: Target,
    ui: SyncSender<Action>,
    poller: SyncSender<PollerMsg>,
    refresh_queued: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
) {
    let nudge = || {
        if !refresh_queued.swap(true, Ordering::Relaxed) {
            match poller.try_send(PollerMsg::Refresh) {
                Ok(()) => {}
                // The poller is busy with commands; it polls after them anyway.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    refresh_queued.store(false, Ordering::Relaxed);
                }
            }
        }
    };
    let mut backoff = EVENTS_BACKOFF_MIN;
    while !shutdown.load(Ordering::Relaxed) {
        if let Ok(events) = target.connect().and_then(|c| c.events()) {
            backoff = EVENTS_BACKOFF_MIN;
            nudge();
            for event in events {
                if shutdown.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(event) = event else { break };
                if matches!(
                    event,
                    NodeEvent::Changed { .. } | NodeEvent::Paused { .. } | NodeEvent::Lagged { .. }
                ) {
                    nudge();
                }
                if ui.send(Action::Node(event)).is_err() {
                    return;
                }
            }
        }
        sleep_unless(&shutdown, backoff);
        backoff = (backoff * 2).min(EVENTS_BACKOFF_MAX);
    }
}

fn sleep_unless(shutdown: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(SLEEP_SLICE));
    }
}

#[cfg(test)]
mod tests;
