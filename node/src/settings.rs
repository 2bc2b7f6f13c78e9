//! The operator's saved choices: pause, per-project subscription and priority, and the caps
//! set through the control API. The store
//! keeps them ([`crate::store::Store::settings`]); [`crate::control::Control`] changes them and
//! the actor applies them to the engine at start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use starling_protocol::{Input, ProjectId};

/// Most per-project settings kept: the engine's default `projects_max` (the node does not
/// change it), the most projects the engine tracks and the bound it puts on its own
/// unsubscribed and priority sets. (Sync digests name at most `SYNC_PROJECTS_MAX`, 256, of
/// them per message; that bounds a message, not what is tracked.)
pub const PROJECT_SETTINGS_MAX: usize = 1_024;

/// What the operator chose, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatorSettings {
    /// Claiming is paused.
    pub paused: bool,
    /// Projects (hex ids) and whether this node works on them; absent means yes.
    pub subscriptions: BTreeMap<String, bool>,
    /// Projects (hex ids) and their priority; absent means 0.
    pub priorities: BTreeMap<String, i8>,
    /// Caps set through the control API (`POST /caps`, the dashboard).
    pub caps: SavedCaps,
}

/// Caps the operator set through the control API, applied again at the next start unless a
/// flag or environment variable gives the same cap (see `crate::control`). `None`: not set
/// there; `Some(0)` for bandwidth or disk: set to "no cap".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedCaps {
    /// Crawl chunks worked at once.
    pub capacity: Option<u16>,
    /// Crawl download cap, bytes per second.
    pub bandwidth_bytes_per_s: Option<u64>,
    /// Cap on stored results, bytes.
    pub disk_bytes_max: Option<u64>,
}

impl SavedCaps {
    /// Whether no cap is saved.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl OperatorSettings {
    /// The engine inputs that restore these settings.
    pub fn inputs(&self) -> Vec<Input> {
        let mut out = Vec::new();
        if self.paused {
            out.push(Input::Pause(true));
        }
        for (id, subscribed) in &self.subscriptions {
            if let Ok(project) = id.parse::<ProjectId>() {
                out.push(Input::Subscribe { project, subscribed: *subscribed });
            }
        }
        for (id, priority) in &self.priorities {
            if let Ok(project) = id.parse::<ProjectId>() {
                out.push(Input::SetPriority { project, priority: *priority });
            }
        }
        out
    }

    pub(crate) fn room_for(&self, map_len: usize, has: bool) -> Result<(), String> {
        if has || map_len < PROJECT_SETTINGS_MAX {
            Ok(())
        } else {
            Err(format!("settings are kept for at most {PROJECT_SETTINGS_MAX} projects"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_bounded_like_the_engines_projects() {
        let engine = starling_protocol::EngineConfig::default();
        assert_eq!(PROJECT_SETTINGS_MAX, engine.projects_max);
    }

    #[test]
    fn settings_saved_before_caps_were_kept_still_read() {
        let old: OperatorSettings =
            serde_json::from_str(r#"{"paused":true,"subscriptions":{},"priorities":{}}"#).unwrap();
        assert!(old.paused && old.caps.is_empty());
    }
}
