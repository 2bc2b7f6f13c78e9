//! The operator's controls: pause and resume, the caps (crawl capacity, bandwidth, disk), and
//! per-project subscription and priority. [`Control`] owns the saved choices
//! ([`OperatorSettings`]); the actor hands it the engine, store and crawler per call
//! ([`ControlIo`]) and carries out the engine's outputs afterwards.
//!
//! Each goes through the engine as an input where the engine decides something from it
//! (claiming, presence, which ready item comes first), or to the crawler for its caps. Pause,
//! subscriptions and priorities are kept in the store and applied again on the next start;
//! caps changed here last until the node stops (the config file is where caps are kept).

use std::num::NonZeroU32;
use std::sync::Arc;

use starling_protocol::{Engine, Input, ProjectId};

use crate::clock::now_ms;
use crate::crawl::Crawler;
use crate::hub::Hub;
use crate::settings::OperatorSettings;
use crate::store::Store;
use crate::views::{Caps, NodeEvent, Outcome};

pub use starling_protocol::limits::CAPACITY_MAX;

/// What a control call is handed: the engine (inputs are fed to it here; the actor carries
/// out its outputs after the call), the store the settings are kept in, the slot where the
/// actor keeps the store's last error, and the crawler whose caps are set.
#[derive(Debug)]
pub struct ControlIo<'a> {
    /// The claim engine.
    pub engine: &'a mut Engine,
    /// The node's database.
    pub store: &'a Store,
    /// The store's last error, set when a setting cannot be saved.
    pub store_error: &'a mut Option<String>,
    /// The crawler, when this node runs one.
    pub crawler: Option<&'a Arc<Crawler>>,
}

/// The operator's controls and the saved choices they change.
#[derive(Debug)]
pub struct Control {
    settings: OperatorSettings,
    hub: Arc<Hub>,
}

impl Control {
    /// The controls with the choices saved in `store` (none when they cannot be read).
    pub fn load(store: &Store, hub: Arc<Hub>) -> Self {
        let settings = store.settings().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the operator's saved settings");
            OperatorSettings::default()
        });
        Self { settings, hub }
    }

    /// Applies the saved choices to the engine (at start).
    pub fn restore(&self, engine: &mut Engine) {
        for input in self.settings.inputs() {
            let _ = engine.handle(input, now_ms());
        }
        if self.settings.paused {
            tracing::info!("claiming is paused (resume with the dashboard or POST /resume)");
        }
    }

    fn save(&self, io: &mut ControlIo<'_>) -> Result<(), String> {
        io.store.save_settings(&self.settings).map_err(|e| {
            *io.store_error = Some(e.to_string());
            format!("cannot save the setting: {e}")
        })
    }

    /// Pauses or resumes claiming.
    pub fn pause(&mut self, io: &mut ControlIo<'_>, paused: bool) -> Outcome {
        let _ = io.engine.handle(Input::Pause(paused), now_ms());
        self.settings.paused = paused;
        if let Err(e) = self.save(io) {
            tracing::error!(error = %e, "pause not kept across restarts");
        }
        tracing::info!(paused, "{}", if paused { "claiming paused" } else { "claiming resumed" });
        self.hub.emit(NodeEvent::Paused { paused });
        Outcome {
            outcome: "applied".into(),
            what: if paused { "paused" } else { "resumed" }.into(),
        }
    }

    /// The caps in force now.
    pub fn caps(engine: &Engine, crawler: Option<&Arc<Crawler>>) -> Caps {
        Caps {
            capacity: Some(engine.config().capacity),
            bandwidth_bytes_per_s: crawler.and_then(|c| c.bandwidth_bytes_per_s()),
            disk_bytes_max: crawler.and_then(|c| c.disk_bytes_max()),
        }
    }

    /// Sets the caps given; the caps now, and whether the disk cap was set (the actor then
    /// looks at the disk fault again).
    pub fn set_caps(io: &mut ControlIo<'_>, caps: Caps) -> Result<(Caps, bool), String> {
        if let Some(c) = caps.capacity
            && c > CAPACITY_MAX
        {
            return Err(format!("capacity {c} is over the most allowed, {CAPACITY_MAX}"));
        }
        if let Some(b) = caps.bandwidth_bytes_per_s
            && b > u64::from(u32::MAX)
        {
            return Err(format!("bandwidth {b} B/s is over the most allowed, {} B/s", u32::MAX));
        }
        if io.crawler.is_none()
            && (caps.bandwidth_bytes_per_s.is_some() || caps.disk_bytes_max.is_some())
        {
            return Err(
                "this node runs no crawler: there is no bandwidth or disk cap to set".into()
            );
        }
        if let Some(c) = caps.capacity {
            let _ = io.engine.handle(Input::SetCapacity(c), now_ms());
        }
        let mut disk_set = false;
        if let Some(crawler) = io.crawler {
            if let Some(b) = caps.bandwidth_bytes_per_s {
                crawler.set_bandwidth(NonZeroU32::new(b as u32));
            }
            if let Some(d) = caps.disk_bytes_max {
                crawler.set_disk_bytes_max(Some(d).filter(|d| *d > 0));
                disk_set = true;
            }
        }
        let now = Self::caps(io.engine, io.crawler);
        tracing::info!(?now, "caps changed");
        Ok((now, disk_set))
    }

    /// Whether this node works on `project`.
    pub fn subscribe(
        &mut self,
        io: &mut ControlIo<'_>,
        project: ProjectId,
        subscribed: bool,
    ) -> Result<Outcome, String> {
        known_project(io.engine, &project)?;
        let key = project.to_hex();
        let s = &self.settings;
        s.room_for(s.subscriptions.len(), s.subscriptions.contains_key(&key))?;
        let _ = io.engine.handle(Input::Subscribe { project, subscribed }, now_ms());
        if subscribed {
            self.settings.subscriptions.remove(&key);
        } else {
            self.settings.subscriptions.insert(key.clone(), false);
        }
        self.save(io)?;
        tracing::info!(project = %project.short(), subscribed, "subscription changed");
        let outcome = if subscribed { "subscribed" } else { "unsubscribed" };
        Ok(Outcome { outcome: outcome.into(), what: key })
    }

    /// `project`'s priority among ready items.
    pub fn set_priority(
        &mut self,
        io: &mut ControlIo<'_>,
        project: ProjectId,
        priority: i8,
    ) -> Result<Outcome, String> {
        known_project(io.engine, &project)?;
        let key = project.to_hex();
        let s = &self.settings;
        s.room_for(s.priorities.len(), s.priorities.contains_key(&key))?;
        let _ = io.engine.handle(Input::SetPriority { project, priority }, now_ms());
        if priority == 0 {
            self.settings.priorities.remove(&key);
        } else {
            self.settings.priorities.insert(key.clone(), priority);
        }
        self.save(io)?;
        tracing::info!(project = %project.short(), priority, "priority changed");
        Ok(Outcome { outcome: "applied".into(), what: key })
    }
}

fn known_project(engine: &Engine, project: &ProjectId) -> Result<(), String> {
    if engine.projects().any(|(id, _)| id == *project) {
        Ok(())
    } else {
        Err(format!("no project {} is known here", project.to_hex()))
    }
}
