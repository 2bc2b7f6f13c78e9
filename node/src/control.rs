//! The operator's controls: pause and resume, the caps (crawl capacity, bandwidth, disk), and
//! per-project subscription and priority. [`Control`] owns the saved choices
//! ([`OperatorSettings`]); the actor hands it the engine, store and crawler per call
//! ([`ControlIo`]) and carries out the engine's outputs afterwards.
//!
//! Each goes through the engine as an input where the engine decides something from it
//! (claiming, presence, which ready item comes first), or to the crawler for its caps. All of
//! them are kept in the store and applied again on the next start.
//!
//! Caps (capacity, crawl bandwidth, disk) come from four places; the first that gives one
//! wins: a flag or environment variable of this run ([`PinnedCaps`]), the choice saved from
//! the dashboard or `POST /caps`, the config file, the default. A flag is the operator's
//! word for this run (a service unit's command line, a test), so a choice saved earlier does
//! not silently undo it; the saved choice is newer than the config file, so it wins over the
//! file until `POST /caps {"reset": true}` forgets it. A change through the API applies at
//! once even over a flag, for the rest of the run. See docs/config.md ("Caps set from the
//! dashboard").

use std::num::NonZeroU32;
use std::sync::Arc;

use starling_protocol::{Engine, Input, ProjectId};

use crate::clock::now_ms;
use crate::crawl::Crawler;
use crate::hub::Hub;
use crate::settings::{OperatorSettings, SavedCaps};
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

/// Which caps a flag or environment variable gave this run: those win over the saved ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinnedCaps {
    /// `--capacity`.
    pub capacity: bool,
    /// `--bandwidth-max`.
    pub bandwidth: bool,
    /// `--disk-max`.
    pub disk: bool,
}

/// The operator's controls and the saved choices they change.
#[derive(Debug)]
pub struct Control {
    settings: OperatorSettings,
    hub: Arc<Hub>,
    /// The caps of the flags, environment and config file, as at start: what a reset goes
    /// back to.
    configured: Caps,
}

impl Control {
    /// The controls with the choices saved in `store` (none when they cannot be read).
    pub fn load(store: &Store, hub: Arc<Hub>) -> Self {
        let settings = store.settings().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the operator's saved settings");
            OperatorSettings::default()
        });
        Self { settings, hub, configured: Caps::default() }
    }

    /// Applies the caps saved through the API (at start, after [`Control::restore`]), except
    /// those a flag gave this run; remembers the configured ones for a reset.
    pub fn restore_caps(&mut self, io: &mut ControlIo<'_>, pinned: PinnedCaps) {
        self.configured = Self::caps(io.engine, io.crawler);
        let saved = self.settings.caps;
        let has_crawler = io.crawler.is_some();
        let pick = |value: Option<u64>, flag: bool, name: &str, shown: fn(u64) -> String| {
            let v = value?;
            if flag {
                tracing::info!(
                    "{name} {} saved from the dashboard is not applied: a flag or environment \
                     variable sets it for this run",
                    shown(v)
                );
                return None;
            }
            if has_crawler || name == "capacity" {
                tracing::info!("{name} {} (saved from the dashboard)", shown(v));
            }
            Some(v)
        };
        let caps = Caps {
            capacity: pick(saved.capacity.map(u64::from), pinned.capacity, "capacity", |v| {
                v.to_string()
            })
            .map(|v| v as u16),
            bandwidth_bytes_per_s: pick(
                saved.bandwidth_bytes_per_s,
                pinned.bandwidth,
                "bandwidth cap",
                cap_rate,
            )
            .filter(|_| has_crawler),
            disk_bytes_max: pick(saved.disk_bytes_max, pinned.disk, "disk cap", cap_size)
                .filter(|_| has_crawler),
            reset: false,
        };
        if let Err(e) = Self::apply_caps(io, caps) {
            tracing::warn!(error = %e, "the caps saved from the dashboard cannot be applied");
        }
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
            reset: false,
        }
    }

    /// The caps saved through the API.
    pub fn saved_caps(&self) -> SavedCaps {
        self.settings.caps
    }

    /// Sets the caps given and saves them for the next start (or, with `reset`, forgets the
    /// saved caps and goes back to the configured ones); the caps now, and whether the disk
    /// cap was set (the actor then looks at the disk fault again).
    pub fn set_caps(&mut self, io: &mut ControlIo<'_>, caps: Caps) -> Result<(Caps, bool), String> {
        if caps.reset {
            let configured = Caps {
                bandwidth_bytes_per_s: Some(self.configured.bandwidth_bytes_per_s.unwrap_or(0)),
                disk_bytes_max: Some(self.configured.disk_bytes_max.unwrap_or(0)),
                ..self.configured
            };
            let configured = if io.crawler.is_some() {
                configured
            } else {
                Caps { capacity: configured.capacity, ..Caps::default() }
            };
            let r = Self::apply_caps(io, configured)?;
            self.settings.caps = SavedCaps::default();
            if let Err(e) = self.save(io) {
                tracing::error!(error = %e, "the reset is not kept across restarts");
            }
            tracing::info!("caps saved from the dashboard forgotten");
            return Ok(r);
        }
        let r = Self::apply_caps(io, caps)?;
        let saved = &mut self.settings.caps;
        saved.capacity = caps.capacity.or(saved.capacity);
        saved.bandwidth_bytes_per_s = caps.bandwidth_bytes_per_s.or(saved.bandwidth_bytes_per_s);
        saved.disk_bytes_max = caps.disk_bytes_max.or(saved.disk_bytes_max);
        if let Err(e) = self.save(io) {
            tracing::error!(error = %e, "caps not kept across restarts");
        }
        Ok(r)
    }

    fn apply_caps(io: &mut ControlIo<'_>, caps: Caps) -> Result<(Caps, bool), String> {
        if let Some(c) = caps.capacity
            && c > CAPACITY_MAX
        {
            return Err(format!("capacity {c} is over the most allowed, {CAPACITY_MAX}"));
        }
        if let Some(b) = caps.bandwidth_bytes_per_s
            && b > u64::from(u32::MAX)
        {
            return Err(format!(
                "bandwidth {} is over the most allowed, {}",
                cap_rate(b),
                cap_rate(u32::MAX.into())
            ));
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
        tracing::info!("caps now: {}", caps_line(&now));
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

/// A size cap for people: `10 GiB`, or `none` for 0.
pub fn cap_size(bytes: u64) -> String {
    if bytes == 0 { "none".into() } else { starling_tui::units::size(bytes) }
}

/// A rate cap for people: `5 MB/s`, or `none` for 0.
pub fn cap_rate(bytes_per_s: u64) -> String {
    if bytes_per_s == 0 { "none".into() } else { starling_tui::units::rate(bytes_per_s) }
}

/// The caps on one line: `capacity 4, bandwidth 5 MB/s, disk 10 GiB` (`none` where unset).
pub fn caps_line(caps: &Caps) -> String {
    format!(
        "capacity {}, bandwidth {}, disk {}",
        caps.capacity.map_or_else(|| "-".into(), |c| c.to_string()),
        cap_rate(caps.bandwidth_bytes_per_s.unwrap_or(0)),
        cap_size(caps.disk_bytes_max.unwrap_or(0))
    )
}
