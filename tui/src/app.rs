//! The dashboard's state and its one entry point, [`App::update`]: every input — a key, a
//! tick, a snapshot from the poller, an event from the node, the answer to a command — arrives
//! as an [`Action`], and the output is an [`Update`]: an optional [`Command`] for the poller to
//! send to the node, and whether the screen shows something different now. No I/O happens
//! here, so the unit tests drive it with plain values.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use starling_protocol::limits::CAPACITY_MAX;

use crate::api::{LogLine, NodeEvent, ProjectInfo};
use crate::format;

mod types;

pub(crate) use types::{Action, Applied, ByteCap, Command, Connection, LogLevel, Snapshot, Tab};

/// Fetch-rate samples kept for the sparkline (one a snapshot).
pub(crate) const RATE_SAMPLES_MAX: usize = 120;
/// Log lines kept in memory.
pub(crate) const LOG_LINES_MAX: usize = 2000;
/// How long a status message stays on screen.
pub(crate) const MESSAGE_MS: u64 = 6000;
/// Longest `/` log filter.
pub(crate) const FILTER_CHARS_MAX: usize = 64;
/// Longest text at a cap prompt (`1.5 GiB/s` and room to spare).
pub(crate) const CAP_CHARS_MAX: usize = 24;
/// How far back a live log line is compared against to drop a copy the poller already got.
const LOG_DEDUP_WINDOW: usize = 64;
/// Lines of chrome around the log list (title, tabs, borders, message, help).
const LOG_CHROME_ROWS: u16 = 6;

/// A one-line note at the bottom: a command's result or a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub text: String,
    pub error: bool,
    until_ms: u64,
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Update {
    /// The command to send to the node, if the action asks for one.
    pub command: Option<Command>,
    /// Whether the screen would be drawn differently now than before the action.
    pub redraw: bool,
}

/// The small parts of the state the screen shows, compared before and after an action. The
/// big parts (the node's data, the log, the rate samples) are not copied: the code that
/// changes them says so.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    target: String,
    connection: Connection,
    tab: Tab,
    selected: [usize; 7],
    log_scroll: usize,
    log_level: LogLevel,
    log_filter: String,
    filter_editing: bool,
    confirm_trust: Option<(String, String)>,
    capacity_target: Option<u16>,
    cap_edit: Option<(ByteCap, String)>,
    /// The message's text and colour (not when it expires, which is not drawn).
    message: Option<(String, bool)>,
    help: bool,
    /// Whole seconds since the node last answered, while it does not (the top bar counts).
    away_s: Option<u64>,
}

/// The whole dashboard state.
#[derive(Debug)]
pub(crate) struct App {
    /// Where the node is (data dir or URL until the first answer, then the URL).
    pub target: String,
    pub connection: Connection,
    /// The last snapshot, kept while the node is unreachable.
    pub data: Option<Snapshot>,
    pub tab: Tab,
    /// Selected row per tab.
    pub selected: [usize; 7],
    /// Recent fetch rates, oldest first.
    pub rate_samples: VecDeque<f64>,
    /// Log lines, oldest first.
    pub log: VecDeque<LogLine>,
    /// Lines scrolled up from the newest (0 follows the tail).
    pub log_scroll: usize,
    /// Least severe level shown.
    pub log_level: LogLevel,
    pub log_filter: String,
    /// Whether keys go into the `/` filter.
    pub filter_editing: bool,
    /// The owner key (and project name) waiting for `y` to be trusted.
    pub confirm_trust: Option<(String, String)>,
    /// Capacity asked for and not yet answered, so `+ + +` counts up from it.
    pub capacity_target: Option<u16>,
    /// The byte cap being typed at the `b`/`d` prompt, and the text so far.
    pub cap_edit: Option<(ByteCap, String)>,
    pub message: Option<Message>,
    /// Milliseconds since start, from the last tick.
    pub now_ms: u64,
    /// Terminal height, for paging.
    pub height: u16,
    /// Whether the `?` key help covers the screen.
    pub help: bool,
    /// `now_ms` when the node last answered a poll.
    pub last_answer_ms: Option<u64>,
    pub quit: bool,
}

impl App {
    /// A dashboard that has heard nothing from the node at `target` yet.
    pub(crate) fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            connection: Connection::Connecting,
            data: None,
            tab: Tab::Overview,
            selected: [0; 7],
            rate_samples: VecDeque::with_capacity(RATE_SAMPLES_MAX),
            log: VecDeque::new(),
            log_scroll: 0,
            log_level: LogLevel::Trace,
            log_filter: String::new(),
            filter_editing: false,
            confirm_trust: None,
            capacity_target: None,
            cap_edit: None,
            message: None,
            now_ms: 0,
            height: 24,
            help: false,
            last_answer_ms: None,
            quit: false,
        }
    }

    /// Maps a key to an action, given the mode (filter typing, trust prompt) and the tab.
    pub(crate) fn handle_key(&self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return Some(Action::Quit);
        }
        if self.help {
            return Some(Action::CloseHelp);
        }
        if self.filter_editing {
            return match key.code {
                KeyCode::Esc => Some(Action::FilterClear),
                KeyCode::Enter => Some(Action::FilterDone),
                KeyCode::Backspace => Some(Action::FilterBackspace),
                KeyCode::Char(c) if !ctrl => Some(Action::FilterChar(c)),
                _ => None,
            };
        }
        if self.cap_edit.is_some() {
            return match key.code {
                KeyCode::Esc => Some(Action::CapCancel),
                KeyCode::Enter => Some(Action::CapDone),
                KeyCode::Backspace => Some(Action::CapBackspace),
                KeyCode::Char(c) if !ctrl => Some(Action::CapChar(c)),
                _ => None,
            };
        }
        if self.confirm_trust.is_some() {
            return match key.code {
                KeyCode::Char('y' | 'Y') => Some(Action::Confirm),
                _ => Some(Action::CancelPrompt),
            };
        }
        let common = match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') => Some(Action::ShowHelp),
            KeyCode::Tab => Some(Action::NextTab),
            KeyCode::BackTab => Some(Action::PrevTab),
            KeyCode::Char(c @ '1'..='7') => {
                Some(Action::SelectTab(Tab::ALL[(c as u8 - b'1') as usize]))
            }
            KeyCode::Char('p') => Some(Action::TogglePause),
            KeyCode::Char('+' | '=') => Some(Action::CapacityUp),
            KeyCode::Char('-' | '_') => Some(Action::CapacityDown),
            KeyCode::Char('b') => Some(Action::StartCapEdit(ByteCap::Bandwidth)),
            KeyCode::Char('d') => Some(Action::StartCapEdit(ByteCap::Disk)),
            KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
            KeyCode::PageUp => Some(Action::PageUp),
            KeyCode::PageDown => Some(Action::PageDown),
            KeyCode::Home | KeyCode::Char('g') => Some(Action::Top),
            KeyCode::End | KeyCode::Char('G') => Some(Action::Bottom),
            _ => None,
        };
        if common.is_some() {
            return common;
        }
        match (self.tab, key.code) {
            (Tab::Projects, KeyCode::Char('s' | ' ')) => Some(Action::ToggleSubscribe),
            (Tab::Projects, KeyCode::Char(']' | '>')) => Some(Action::PriorityUp),
            (Tab::Projects, KeyCode::Char('[' | '<')) => Some(Action::PriorityDown),
            (Tab::Projects, KeyCode::Char('t')) => Some(Action::TrustSelected),
            (Tab::Log, KeyCode::Char('l')) => Some(Action::CycleLogLevel),
            (Tab::Log, KeyCode::Char('/')) => Some(Action::StartFilter),
            (Tab::Log, KeyCode::Esc) => Some(Action::FilterClear),
            _ => None,
        }
    }

    /// Applies one action: the command to send to the node, if the action asks for one, and
    /// whether the screen changed (a key bound to nothing, a tick with no message to expire or
    /// a selection already at its end change nothing, and need no redraw).
    pub(crate) fn update(&mut self, action: Action) -> Update {
        let before = self.shown();
        let (command, data_changed) = self.apply(action);
        Update { command, redraw: data_changed || self.shown() != before }
    }

    /// The small parts of the state the screen shows, as they are now.
    fn shown(&self) -> Shown {
        Shown {
            target: self.target.clone(),
            connection: self.connection.clone(),
            tab: self.tab,
            selected: self.selected,
            log_scroll: self.log_scroll,
            log_level: self.log_level,
            log_filter: self.log_filter.clone(),
            filter_editing: self.filter_editing,
            confirm_trust: self.confirm_trust.clone(),
            capacity_target: self.capacity_target,
            cap_edit: self.cap_edit.clone(),
            message: self.message.as_ref().map(|m| (m.text.clone(), m.error)),
            help: self.help,
            away_s: self.away_ms().map(|ms| ms / 1000),
        }
    }

    /// [`App::update`] without the comparison: the command, and whether the node's data, the
    /// log or the rate samples changed.
    fn apply(&mut self, action: Action) -> (Option<Command>, bool) {
        match action {
            Action::Key(key) => {
                return match self.handle_key(key) {
                    Some(next) => self.apply(next),
                    None => (None, false),
                };
            }
            Action::Tick { now_ms } => {
                self.now_ms = now_ms;
                if self.message.as_ref().is_some_and(|m| m.until_ms <= now_ms) {
                    self.message = None;
                }
            }
            Action::Resize { height } => {
                self.height = height;
                self.clamp_log_scroll();
                // The frame itself changed size: everything is drawn anew.
                return (None, true);
            }
            Action::Snapshot(snap) => {
                self.apply_snapshot(*snap);
                return (None, true);
            }
            Action::Unreachable { target, error } => {
                self.target = target;
                self.connection = Connection::Unreachable { error };
            }
            Action::Unauthorized { target, error } => {
                self.target = target;
                self.connection = Connection::Unauthorized { error };
            }
            Action::Node(event) => return (None, self.apply_event(event)),
            Action::CommandDone { command, result } => {
                return (None, self.apply_answer(command, result));
            }
            Action::Quit => self.quit = true,
            Action::ShowHelp => self.help = true,
            Action::CloseHelp => self.help = false,
            Action::NextTab => self.tab = self.tab.next(),
            Action::PrevTab => self.tab = self.tab.prev(),
            Action::SelectTab(tab) => self.tab = tab,
            Action::TogglePause => return (self.toggle_pause(), false),
            Action::CapacityUp => return (self.step_capacity(true), false),
            Action::CapacityDown => return (self.step_capacity(false), false),
            Action::StartCapEdit(cap) => self.start_cap_edit(cap),
            Action::CapChar(c) => {
                if let Some((_, text)) = &mut self.cap_edit
                    && text.chars().count() < CAP_CHARS_MAX
                    && !c.is_control()
                {
                    text.push(c);
                }
            }
            Action::CapBackspace => {
                if let Some((_, text)) = &mut self.cap_edit {
                    text.pop();
                }
            }
            Action::CapDone => return (self.finish_cap_edit(), false),
            Action::CapCancel => {
                if let Some((cap, _)) = self.cap_edit.take() {
                    self.note(format!("{} unchanged", cap.name()), false);
                }
            }
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-(self.page_rows() as isize)),
            Action::PageDown => self.move_selection(self.page_rows() as isize),
            Action::Top => self.move_selection(isize::MIN / 2),
            Action::Bottom => self.move_selection(isize::MAX / 2),
            // These change the project list shown exactly when they ask the node for something.
            Action::ToggleSubscribe => return changed_with(self.toggle_subscribe()),
            Action::PriorityUp => return changed_with(self.step_priority(1)),
            Action::PriorityDown => return changed_with(self.step_priority(-1)),
            Action::TrustSelected => self.ask_trust(),
            Action::Confirm => {
                let Some((owner, name)) = self.confirm_trust.take() else { return (None, false) };
                self.note(format!("trusting the owner of {name}…"), false);
                return (Some(Command::Trust { owner }), false);
            }
            Action::CancelPrompt => {
                self.confirm_trust = None;
                self.note("not trusted", false);
            }
            Action::CycleLogLevel => {
                self.log_level = self.log_level.cycle();
                self.log_scroll = 0;
            }
            Action::StartFilter => self.filter_editing = true,
            Action::FilterChar(c) => {
                if self.log_filter.chars().count() < FILTER_CHARS_MAX && !c.is_control() {
                    self.log_filter.push(c);
                    self.log_scroll = 0;
                }
            }
            Action::FilterBackspace => {
                self.log_filter.pop();
            }
            Action::FilterDone => self.filter_editing = false,
            Action::FilterClear => {
                self.filter_editing = false;
                self.log_filter.clear();
                self.log_scroll = 0;
            }
        }
        (None, false)
    }

    /// The log lines that pass the level and text filters, oldest first.
    pub(crate) fn visible_log(&self) -> Vec<&LogLine> {
        let needle = self.log_filter.to_lowercase();
        self.log
            .iter()
            .filter(|l| LogLevel::parse(&l.level) >= self.log_level)
            .filter(|l| {
                needle.is_empty()
                    || l.message.to_lowercase().contains(&needle)
                    || l.target.to_lowercase().contains(&needle)
            })
            .collect()
    }

    /// The capacity `+`/`-` start from: the one asked for, else the operator's cap, else the
    /// node's current one.
    pub(crate) fn capacity(&self) -> Option<u16> {
        let status = &self.data.as_ref()?.status;
        Some(self.capacity_target.or(status.caps.capacity).unwrap_or(status.capacity))
    }

    /// How long since the node last answered, while it does not answer; `None` while it
    /// does, and before its first answer.
    pub(crate) fn away_ms(&self) -> Option<u64> {
        if self.connection.is_up() {
            return None;
        }
        self.last_answer_ms.map(|at| self.now_ms.saturating_sub(at))
    }

    fn apply_snapshot(&mut self, snap: Snapshot) {
        self.connection = Connection::Up;
        self.last_answer_ms = Some(self.now_ms);
        self.target = snap.base.clone();
        if self.rate_samples.len() == RATE_SAMPLES_MAX {
            self.rate_samples.pop_front();
        }
        self.rate_samples.push_back(snap.status.fetch.rate_per_s.max(0.0));
        let skip = snap.log.len().saturating_sub(LOG_LINES_MAX);
        let log: VecDeque<LogLine> = snap.log.iter().skip(skip).cloned().collect();
        if self.log_scroll > 0 {
            // Keep the operator's place: shift by the lines that arrived after the old newest.
            let newer = self.log.back().and_then(|last| log.iter().rev().position(|l| l == last));
            self.log_scroll += newer.unwrap_or(0);
        }
        self.log = log;
        self.data = Some(snap);
        self.clamp_log_scroll();
    }

    /// Takes in an event from the node; whether it changed the node's data or the log.
    fn apply_event(&mut self, event: NodeEvent) -> bool {
        match event {
            NodeEvent::Changed { items } => {
                let Some(data) = &mut self.data else { return false };
                let changed = data.status.items != items;
                data.status.items = items;
                changed
            }
            NodeEvent::Log(line) => {
                let seen = self.log.iter().rev().take(LOG_DEDUP_WINDOW).any(|l| *l == line);
                if seen {
                    return false;
                }
                if self.log.len() == LOG_LINES_MAX {
                    self.log.pop_front();
                }
                self.log.push_back(line);
                // Keep the operator's place when they have scrolled up.
                if self.log_scroll > 0 {
                    self.log_scroll += 1;
                    self.clamp_log_scroll();
                }
                true
            }
            NodeEvent::Paused { paused } => {
                let Some(data) = &mut self.data else { return false };
                let changed = data.status.paused != paused;
                data.status.paused = paused;
                changed
            }
            NodeEvent::Lagged { .. } => false,
        }
    }

    /// Takes in the node's answer to a command; whether it changed the node's data.
    fn apply_answer(&mut self, command: Command, result: Result<Applied, String>) -> bool {
        if matches!(command, Command::SetCapacity(_) | Command::SetCap { .. }) {
            self.capacity_target = None;
        }
        let applied = match result {
            Ok(applied) => applied,
            Err(error) => {
                self.note(format!("{} failed: {error}", describe(&command)), true);
                return false;
            }
        };
        let text = match (&command, &applied) {
            (Command::Pause, _) => "paused: no new work is claimed".to_owned(),
            (Command::Resume, _) => "resumed".to_owned(),
            (Command::SetCapacity(n), Applied::Caps(caps)) => {
                let now = caps.capacity.unwrap_or(*n);
                format!("capacity set to {now}")
            }
            (Command::SetCapacity(n), Applied::Done) => format!("capacity set to {n}"),
            (Command::SetCap { cap, bytes }, applied) => {
                let now = match applied {
                    Applied::Caps(caps) => cap.of(caps),
                    Applied::Done => Some(*bytes).filter(|b| *b > 0),
                };
                match now {
                    Some(b) => {
                        format!("{} set to {}; kept across restarts", cap.name(), cap.show(b))
                    }
                    None => format!("{} removed; kept across restarts", cap.name()),
                }
            }
            (Command::Subscribe { project, subscribed }, _) => {
                let verb = if *subscribed { "subscribed to" } else { "unsubscribed from" };
                format!("{verb} {}", self.project_name(project))
            }
            (Command::SetPriority { project, priority }, _) => {
                format!("priority of {} set to {priority}", self.project_name(project))
            }
            (Command::Trust { owner }, _) => format!("trusted owner {}", format::short_hex(owner)),
        };
        let mut changed = false;
        if let Some(data) = &mut self.data {
            match (&command, applied) {
                (Command::Pause | Command::Resume, _) => {
                    let paused = matches!(command, Command::Pause);
                    changed = data.status.paused != paused;
                    data.status.paused = paused;
                }
                (Command::SetCapacity(_) | Command::SetCap { .. }, Applied::Caps(caps)) => {
                    changed = data.status.caps != caps;
                    data.status.caps = caps;
                }
                (Command::Trust { owner }, _) => {
                    for p in data.projects.iter_mut().filter(|p| p.owner == *owner) {
                        changed |= !p.trusted;
                        p.trusted = true;
                    }
                }
                _ => {}
            }
        }
        self.note(text, false);
        changed
    }

    fn toggle_pause(&mut self) -> Option<Command> {
        let Some(data) = &self.data else {
            self.note("not connected to the node yet", true);
            return None;
        };
        let paused = data.status.paused;
        self.note(if paused { "resuming…" } else { "pausing…" }, false);
        Some(if paused { Command::Resume } else { Command::Pause })
    }

    fn step_capacity(&mut self, up: bool) -> Option<Command> {
        let Some(now) = self.capacity() else {
            self.note("not connected to the node yet", true);
            return None;
        };
        let next = if up { now.saturating_add(1).min(CAPACITY_MAX) } else { now.saturating_sub(1) };
        if next == now || next == 0 {
            let why = if up {
                format!("capacity is at its maximum ({CAPACITY_MAX})")
            } else {
                "capacity is at its minimum (1); press p to pause instead".to_owned()
            };
            self.note(why, true);
            return None;
        }
        self.capacity_target = Some(next);
        self.note(format!("setting capacity to {next}…"), false);
        Some(Command::SetCapacity(next))
    }

    fn start_cap_edit(&mut self, cap: ByteCap) {
        if self.data.is_none() {
            self.note("not connected to the node yet", true);
            return;
        }
        self.cap_edit = Some((cap, String::new()));
    }

    /// Reads the prompt's text; a typo is named, and nothing is sent.
    fn finish_cap_edit(&mut self) -> Option<Command> {
        let (cap, text) = self.cap_edit.take()?;
        if text.trim().is_empty() {
            self.note(format!("{} unchanged", cap.name()), false);
            return None;
        }
        match cap.parse(&text) {
            Ok(bytes) => {
                let what = if bytes == 0 { "none".to_owned() } else { cap.show(bytes) };
                self.note(format!("setting the {} to {what}…", cap.name()), false);
                Some(Command::SetCap { cap, bytes })
            }
            Err(e) => {
                let key = if cap == ByteCap::Bandwidth { 'b' } else { 'd' };
                self.note(format!("{e} (press {key} to try again)"), true);
                None
            }
        }
    }

    /// The prompt's text, for the message line: what is being set, what is in force now.
    pub(crate) fn cap_prompt(&self) -> Option<(String, &str)> {
        let (cap, text) = self.cap_edit.as_ref()?;
        let now = self
            .data
            .as_ref()
            .and_then(|d| cap.of(&d.status.caps))
            .map_or_else(|| "none".to_owned(), |b| cap.show(b));
        let label = format!(" {} (now {now}; e.g. {}, 0 = none): ", cap.name(), cap.example());
        Some((label, text))
    }

    fn selected_project(&mut self) -> Option<&mut ProjectInfo> {
        let index = self.selected[Tab::Projects.index()];
        self.data.as_mut()?.projects.get_mut(index)
    }

    /// Flips the selected project's subscription; shown at once, confirmed by the next poll.
    fn toggle_subscribe(&mut self) -> Option<Command> {
        let Some(project) = self.selected_project() else {
            self.note("no project selected", true);
            return None;
        };
        project.subscribed = !project.subscribed;
        let command =
            Command::Subscribe { project: project.id.clone(), subscribed: project.subscribed };
        self.note("saving subscription…", false);
        Some(command)
    }

    fn step_priority(&mut self, delta: i8) -> Option<Command> {
        let Some(project) = self.selected_project() else {
            self.note("no project selected", true);
            return None;
        };
        let next = project.priority.saturating_add(delta);
        if next == project.priority {
            return None;
        }
        project.priority = next;
        let command = Command::SetPriority { project: project.id.clone(), priority: next };
        self.note("saving priority…", false);
        Some(command)
    }

    /// Trusting a key lets its projects put work on this machine, so it asks first.
    fn ask_trust(&mut self) {
        let Some(project) = self.selected_project() else {
            self.note("no project selected", true);
            return;
        };
        if project.trusted {
            let text = format!("the owner of {} is already trusted", project.name);
            self.note(text, false);
            return;
        }
        let (owner, name) = (project.owner.clone(), project.name.clone());
        let prompt = format!(
            "trust the owner of {} ({})? y yes · other keys no",
            format::clip(&name, 20),
            format::short_hex(&owner)
        );
        self.note(prompt, false);
        self.confirm_trust = Some((owner, name));
    }

    fn project_name(&self, id: &str) -> String {
        self.data
            .as_ref()
            .and_then(|d| d.projects.iter().find(|p| p.id == id))
            .map(|p| p.name.clone())
            .unwrap_or_else(|| format::short_hex(id))
    }

    fn rows_in_tab(&self) -> usize {
        let Some(data) = &self.data else { return 0 };
        match self.tab {
            Tab::Work => data.work.claims.len(),
            Tab::Peers => data.peers.len(),
            Tab::Seeding => data.seeding.as_ref().map_or(0, |s| s.duties.len()),
            Tab::Projects => data.projects.len(),
            Tab::Log => self.visible_log().len(),
            Tab::Overview | Tab::Relay => 0,
        }
    }

    fn page_rows(&self) -> usize {
        usize::from(self.height.saturating_sub(LOG_CHROME_ROWS).max(1))
    }

    /// Moves the selection (or, on the log, scrolls: up is older).
    fn move_selection(&mut self, delta: isize) {
        let rows = self.rows_in_tab();
        if self.tab == Tab::Log {
            self.log_scroll = self.log_scroll.saturating_add_signed(-delta);
            self.clamp_log_scroll();
            return;
        }
        let slot = &mut self.selected[self.tab.index()];
        let last = rows.saturating_sub(1);
        *slot = slot.saturating_add_signed(delta).min(last);
    }

    /// Scrolling stops when the oldest line reaches the top of the page.
    fn clamp_log_scroll(&mut self) {
        let rows = self.visible_log().len();
        self.log_scroll = self.log_scroll.min(rows.saturating_sub(self.page_rows()));
    }

    fn note(&mut self, text: impl Into<String>, error: bool) {
        self.message =
            Some(Message { text: text.into(), error, until_ms: self.now_ms + MESSAGE_MS });
    }
}

/// A command from an action that changes the data shown exactly when it asks for one.
fn changed_with(command: Option<Command>) -> (Option<Command>, bool) {
    let changed = command.is_some();
    (command, changed)
}

fn describe(command: &Command) -> &'static str {
    match command {
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::SetCapacity(_) => "setting capacity",
        Command::SetCap { cap: ByteCap::Bandwidth, .. } => "setting the crawl bandwidth cap",
        Command::SetCap { cap: ByteCap::Disk, .. } => "setting the disk cap",
        Command::Subscribe { .. } => "subscribing",
        Command::SetPriority { .. } => "setting priority",
        Command::Trust { .. } => "trusting",
    }
}

#[cfg(test)]
mod tests;
