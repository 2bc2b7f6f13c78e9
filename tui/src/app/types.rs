//! The dashboard's vocabulary: its tabs, what one poll reads, the commands it sends the node,
//! and the [`Action`]s that drive [`super::App::update`].

use crossterm::event::KeyEvent;

use crate::api::{
    Caps, LogLine, NodeEvent, PeerInfo, ProjectInfo, RelayView, SeedingView, StatusView, WorkView,
};

/// The dashboard's tabs, in key order (`1`–`7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Overview,
    Work,
    Peers,
    Seeding,
    Relay,
    Projects,
    Log,
}

impl Tab {
    pub(crate) const ALL: [Tab; 7] =
        [Tab::Overview, Tab::Work, Tab::Peers, Tab::Seeding, Tab::Relay, Tab::Projects, Tab::Log];

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Work => "Work",
            Tab::Peers => "Peers",
            Tab::Seeding => "Seeding",
            Tab::Relay => "Relay",
            Tab::Projects => "Projects",
            Tab::Log => "Log",
        }
    }

    pub(super) fn next(self) -> Tab {
        Self::ALL[(self.index() + 1) % Self::ALL.len()]
    }

    pub(super) fn prev(self) -> Tab {
        Self::ALL[(self.index() + Self::ALL.len() - 1) % Self::ALL.len()]
    }
}

/// Everything one poll read from the node.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// The API's base URL the answers came from.
    pub base: String,
    pub status: StatusView,
    pub peers: Vec<PeerInfo>,
    pub projects: Vec<ProjectInfo>,
    pub work: WorkView,
    /// `None` when the node does not serve `/seeding` (404).
    pub seeding: Option<SeedingView>,
    /// `None` when the node does not serve `/relay` (404).
    pub relay: Option<RelayView>,
    pub log: Vec<LogLine>,
}

/// A change the operator asked the node for; the poller sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Pause,
    Resume,
    SetCapacity(u16),
    /// A byte cap typed at the `b` or `d` prompt; 0 removes it.
    SetCap {
        cap: ByteCap,
        bytes: u64,
    },
    Subscribe {
        project: String,
        subscribed: bool,
    },
    SetPriority {
        project: String,
        priority: i8,
    },
    Trust {
        owner: String,
    },
}

/// The byte caps the dashboard sets (`POST /caps`), each typed with units at a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteCap {
    /// `b`: the crawl download bandwidth, a rate (`5MB/s`).
    Bandwidth,
    /// `d`: the disk for stored results, a size (`10GiB`).
    Disk,
}

impl ByteCap {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ByteCap::Bandwidth => "crawl bandwidth cap",
            ByteCap::Disk => "disk cap",
        }
    }

    /// An example of what the prompt takes.
    pub(crate) fn example(self) -> &'static str {
        match self {
            ByteCap::Bandwidth => "5MB/s",
            ByteCap::Disk => "10GiB",
        }
    }

    /// Reads what the operator typed, with the units every cap takes.
    pub(crate) fn parse(self, text: &str) -> Result<u64, crate::units::UnitError> {
        match self {
            ByteCap::Bandwidth => crate::units::parse_rate(text),
            ByteCap::Disk => crate::units::parse_size(text),
        }
    }

    /// A value for people, in the units it was asked in.
    pub(crate) fn show(self, bytes: u64) -> String {
        match self {
            ByteCap::Bandwidth => crate::units::rate(bytes),
            ByteCap::Disk => crate::units::size(bytes),
        }
    }

    /// The cap in force, from `/status` (`None` or 0: none).
    pub(crate) fn of(self, caps: &Caps) -> Option<u64> {
        match self {
            ByteCap::Bandwidth => caps.bandwidth_bytes_per_s,
            ByteCap::Disk => caps.disk_bytes_max,
        }
        .filter(|b| *b > 0)
    }

    /// The `POST /caps` body that sets only this cap.
    pub(crate) fn body(self, bytes: u64) -> Caps {
        match self {
            ByteCap::Bandwidth => Caps { bandwidth_bytes_per_s: Some(bytes), ..Caps::default() },
            ByteCap::Disk => Caps { disk_bytes_max: Some(bytes), ..Caps::default() },
        }
    }
}

/// What the node answered to a command that worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Accepted; nothing to read from the answer.
    Done,
    /// The caps in force after `POST /caps`.
    Caps(Caps),
}

/// Every input of the dashboard.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// A key press, mapped by [`App::handle_key`].
    Key(KeyEvent),
    /// Time passed; `now_ms` counts from the dashboard's start.
    Tick {
        now_ms: u64,
    },
    /// The terminal changed size.
    Resize {
        height: u16,
    },
    /// The poller read the node.
    Snapshot(Box<Snapshot>),
    /// The poller could not read the node.
    Unreachable {
        target: String,
        error: String,
    },
    /// The node answered 401: the token the dashboard sends is not the node's.
    Unauthorized {
        target: String,
        error: String,
    },
    /// The node's event stream said something.
    Node(NodeEvent),
    /// The node answered a command.
    CommandDone {
        command: Command,
        result: Result<Applied, String>,
    },
    Quit,
    /// `?`: the key help over the screen.
    ShowHelp,
    /// Any key while the help shows.
    CloseHelp,
    NextTab,
    PrevTab,
    SelectTab(Tab),
    TogglePause,
    CapacityUp,
    CapacityDown,
    /// `b` or `d`: open the prompt for a byte cap.
    StartCapEdit(ByteCap),
    CapChar(char),
    CapBackspace,
    /// `Enter` at the cap prompt: read the text and ask the node.
    CapDone,
    /// `Esc` at the cap prompt.
    CapCancel,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    ToggleSubscribe,
    PriorityUp,
    PriorityDown,
    TrustSelected,
    Confirm,
    CancelPrompt,
    CycleLogLevel,
    StartFilter,
    FilterChar(char),
    FilterBackspace,
    FilterDone,
    FilterClear,
}

/// Whether the node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connection {
    /// No answer yet, and no failure yet.
    Connecting,
    Up,
    /// The last poll failed; the last data stays on screen.
    Unreachable {
        error: String,
    },
    /// The node refused the token (401); the last data, if any, stays on screen.
    Unauthorized {
        error: String,
    },
}

impl Connection {
    /// Whether the last poll answered.
    pub(crate) fn is_up(&self) -> bool {
        matches!(self, Connection::Up)
    }
}

/// Log severities, least severe first, so `>=` means "at least as severe".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub(crate) fn parse(s: &str) -> LogLevel {
        match s.trim().to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "WARN" | "WARNING" => LogLevel::Warn,
            "ERROR" => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }

    /// The next filter level; after `ERROR` it wraps to everything.
    pub(super) fn cycle(self) -> LogLevel {
        match self {
            LogLevel::Trace => LogLevel::Debug,
            LogLevel::Debug => LogLevel::Info,
            LogLevel::Info => LogLevel::Warn,
            LogLevel::Warn => LogLevel::Error,
            LogLevel::Error => LogLevel::Trace,
        }
    }
}
