//! The operator's controls, carried out by the actor: pause and resume, the caps (crawl
//! capacity, bandwidth, disk), and per-project subscription and priority.
//!
//! Each goes through the engine as an input where the engine decides something from it
//! (claiming, presence, which ready item comes first), or to the crawler for its caps. Pause,
//! subscriptions and priorities are kept in the store and applied again on the next start;
//! caps changed here last until the node stops (the config file is where caps are kept).

use std::num::NonZeroU32;

use starling_protocol::{Input, ProjectId};

use crate::actor::Actor;
use crate::views::{Caps, NodeEvent, Outcome};

/// Largest crawl capacity an operator may set.
pub const CAPACITY_MAX: u16 = 256;

impl Actor {
    fn known_project(&self, project: &ProjectId) -> Result<(), String> {
        if self.engine.projects().any(|(id, _)| id == *project) {
            Ok(())
        } else {
            Err(format!("no project {} is known here", project.to_hex()))
        }
    }

    fn save_settings(&mut self) -> Result<(), String> {
        self.store.save_settings(&self.settings).map_err(|e| {
            self.store_error = Some(e.to_string());
            format!("cannot save the setting: {e}")
        })
    }

    pub(crate) fn pause(&mut self, paused: bool) -> Outcome {
        let _ = self.handle(Input::Pause(paused));
        self.settings.paused = paused;
        if let Err(e) = self.save_settings() {
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
    pub(crate) fn caps(&self) -> Caps {
        let crawler = self.runners.crawler();
        Caps {
            capacity: Some(self.engine.config().capacity),
            bandwidth_bytes_per_s: crawler.and_then(|c| c.bandwidth_bytes_per_s()),
            disk_bytes_max: crawler.and_then(|c| c.disk_bytes_max()),
        }
    }

    pub(crate) fn set_caps(&mut self, caps: Caps) -> Result<Caps, String> {
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
        let crawler = self.runners.crawler().cloned();
        if crawler.is_none()
            && (caps.bandwidth_bytes_per_s.is_some() || caps.disk_bytes_max.is_some())
        {
            return Err(
                "this node runs no crawler: there is no bandwidth or disk cap to set".into()
            );
        }
        if let Some(c) = caps.capacity {
            let _ = self.handle(Input::SetCapacity(c));
        }
        if let Some(crawler) = &crawler {
            if let Some(b) = caps.bandwidth_bytes_per_s {
                crawler.set_bandwidth(NonZeroU32::new(b as u32));
            }
            if let Some(d) = caps.disk_bytes_max {
                crawler.set_disk_bytes_max(Some(d).filter(|d| *d > 0));
                self.check_disk_cap();
            }
        }
        let now = self.caps();
        tracing::info!(?now, "caps changed");
        Ok(now)
    }

    pub(crate) fn subscribe(
        &mut self,
        project: ProjectId,
        subscribed: bool,
    ) -> Result<Outcome, String> {
        self.known_project(&project)?;
        let key = project.to_hex();
        let s = &self.settings;
        s.room_for(s.subscriptions.len(), s.subscriptions.contains_key(&key))?;
        let _ = self.handle(Input::Subscribe { project, subscribed });
        if subscribed {
            self.settings.subscriptions.remove(&key);
        } else {
            self.settings.subscriptions.insert(key.clone(), false);
        }
        self.save_settings()?;
        tracing::info!(project = %project.short(), subscribed, "subscription changed");
        let outcome = if subscribed { "subscribed" } else { "unsubscribed" };
        Ok(Outcome { outcome: outcome.into(), what: key })
    }

    pub(crate) fn set_priority(
        &mut self,
        project: ProjectId,
        priority: i8,
    ) -> Result<Outcome, String> {
        self.known_project(&project)?;
        let key = project.to_hex();
        let s = &self.settings;
        s.room_for(s.priorities.len(), s.priorities.contains_key(&key))?;
        let _ = self.handle(Input::SetPriority { project, priority });
        if priority == 0 {
            self.settings.priorities.remove(&key);
        } else {
            self.settings.priorities.insert(key.clone(), priority);
        }
        self.save_settings()?;
        tracing::info!(project = %project.short(), priority, "priority changed");
        Ok(Outcome { outcome: "applied".into(), what: key })
    }
}
