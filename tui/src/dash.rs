//! `starling dash`: the command-line arguments, the terminal's setup and restoration, and the
//! UI loop that feeds keys, ticks and the poller's news into [`App::update`] and draws when
//! something changed. The network lives in [`crate::poller`]; this loop never waits on it.

use std::io::{IsTerminal, Stdout};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use crossterm::event::{self, Event};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use crate::app::{Action, App};
use crate::client::read_token;
use crate::poller::{self, POLLER_QUEUE_CAP, Poller, PollerMsg, Target, UI_QUEUE_CAP};
use crate::ui;

/// Shortest `--tick-ms` honoured.
pub const TICK_MS_MIN: u64 = 100;
/// Longest `--tick-ms` honoured.
pub const TICK_MS_MAX: u64 = 60_000;
/// How long the UI waits for a key before looking at the poller's news.
const INPUT_WAIT: Duration = Duration::from_millis(50);
/// How often the UI ticks (message expiry).
const UI_TICK: Duration = Duration::from_millis(500);
/// Actions taken from the poller per loop turn, so keys stay responsive under an event storm.
const ACTIONS_PER_TURN_MAX: usize = 512;

/// Arguments of `starling dash`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashArgs {
    /// The node's data directory (it holds `api-port` and `api-token`); defaults to the
    /// node's platform data dir.
    #[arg(long, env = "STARLING_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The control API's base URL, to watch a node whose data dir is elsewhere.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// The API token for `--api` (visible to other local users in `ps`; prefer
    /// `--token-file`). Without either, the data dir's token is used.
    #[arg(long, value_name = "TOKEN", requires = "api", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the API token for `--api`.
    #[arg(long, value_name = "PATH", requires = "api")]
    pub token_file: Option<PathBuf>,
    /// Milliseconds between polls of the node.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub tick_ms: u64,
}

impl Default for DashArgs {
    fn default() -> Self {
        Self { data_dir: None, api: None, token: None, token_file: None, tick_ms: 1000 }
    }
}

/// The node's default data dir, as `starling up` picks it: `STARLING_DATA_DIR`, else the
/// platform data dir.
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STARLING_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "starling", "starling")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| anyhow!("no home directory to find the node's data in; pass --data-dir DIR"))
}

/// Where to find the node, from the arguments.
fn target(args: &DashArgs) -> Result<Target> {
    let data_dir = || args.data_dir.clone().map_or_else(default_data_dir, Ok);
    let Some(api) = &args.api else {
        return Ok(Target::DataDir(data_dir()?));
    };
    let base = api.trim().trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--api {api:?} is not an http:// URL; pass e.g. --api http://127.0.0.1:7411");
    }
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(file)) => read_token_file(file)?,
        (None, None) => read_token(&data_dir()?)
            .context("--api needs the node's token: pass --token-file PATH or --token TOKEN")?,
    };
    Ok(Target::Fixed { base, token })
}

fn read_token_file(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read the token file {}: {e}", path.display()))?;
    Ok(token.trim().to_owned())
}

/// Runs the dashboard until the operator quits.
pub fn run(args: DashArgs) -> Result<()> {
    let target = target(&args)?;
    if !std::io::stdout().is_terminal() {
        bail!("starling dash needs a terminal; use `starling status` in scripts");
    }
    let tick = Duration::from_millis(args.tick_ms.clamp(TICK_MS_MIN, TICK_MS_MAX));
    let (ui_tx, ui_rx) = sync_channel(UI_QUEUE_CAP);
    let (poller_tx, poller_rx) = sync_channel(POLLER_QUEUE_CAP);
    let shutdown = Arc::new(AtomicBool::new(false));
    let refresh_queued = Arc::new(AtomicBool::new(false));
    let poller = Poller::new(
        target.clone(),
        tick,
        poller_rx,
        ui_tx.clone(),
        refresh_queued.clone(),
        shutdown.clone(),
    );
    std::thread::Builder::new()
        .name("dash-poller".into())
        .spawn(move || poller.run())
        .context("cannot start the poller thread")?;
    let (events_target, events_poller, events_shutdown) =
        (target.clone(), poller_tx.clone(), shutdown.clone());
    std::thread::Builder::new()
        .name("dash-events".into())
        .spawn(move || {
            poller::read_events(
                events_target,
                ui_tx,
                events_poller,
                refresh_queued,
                events_shutdown,
            )
        })
        .context("cannot start the event reader thread")?;

    let mut screen = Screen::enter()?;
    let result = ui_loop(&mut screen.terminal, App::new(target.label()), &ui_rx, &poller_tx);
    // The threads may sit in a blocking read; they end with the process.
    shutdown.store(true, Ordering::Relaxed);
    drop(screen);
    result
}

/// The terminal in raw mode on the alternate screen; dropping it restores the terminal.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screen").finish_non_exhaustive()
    }
}

impl Screen {
    fn enter() -> Result<Self> {
        install_panic_hook();
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        if let Err(e) = execute!(std::io::stdout(), EnterAlternateScreen) {
            restore_terminal();
            return Err(e).context("cannot switch to the alternate screen");
        }
        match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e).context("cannot set up the terminal")
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Puts the terminal back before a panic message prints, so it is readable.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

fn ui_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    mut app: App,
    news: &Receiver<Action>,
    poller: &SyncSender<PollerMsg>,
) -> Result<()> {
    let start = Instant::now();
    let mut last_tick = start;
    let mut dirty = true;
    app.update(Action::Resize { height: terminal.size()?.height });
    loop {
        if dirty {
            terminal.draw(|frame| ui::draw(&app, frame))?;
            dirty = false;
        }
        if event::poll(INPUT_WAIT)? {
            match event::read()? {
                Event::Key(key) => dirty |= apply(&mut app, Action::Key(key), poller),
                Event::Resize(_, height) => {
                    dirty |= apply(&mut app, Action::Resize { height }, poller)
                }
                _ => {}
            }
        }
        for _ in 0..ACTIONS_PER_TURN_MAX {
            match news.try_recv() {
                Ok(action) => dirty |= apply(&mut app, action, poller),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("the dashboard's poller stopped"),
            }
        }
        if last_tick.elapsed() >= UI_TICK {
            last_tick = Instant::now();
            let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            dirty |= apply(&mut app, Action::Tick { now_ms }, poller);
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// Feeds one action to the app and hands its command to the poller; true if the screen
/// changed and needs drawing.
fn apply(app: &mut App, action: Action, poller: &SyncSender<PollerMsg>) -> bool {
    let update = app.update(action);
    let Some(command) = update.command else { return update.redraw };
    let Err(e) = poller.try_send(PollerMsg::Command(command)) else { return update.redraw };
    let (command, why) = match e {
        TrySendError::Full(PollerMsg::Command(c)) => {
            (c, "the node is still answering earlier commands; try again")
        }
        TrySendError::Disconnected(PollerMsg::Command(c)) => (c, "the poller stopped"),
        // Only commands are sent here.
        _ => return update.redraw,
    };
    let failed = app.update(Action::CommandDone { command, result: Err(why.to_owned()) });
    update.redraw || failed.redraw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Command;
    use crate::fixtures;

    #[test]
    fn apply_redraws_only_when_the_screen_changed() {
        let (tx, rx) = sync_channel(1);
        let mut app = fixtures::app();
        assert!(!apply(&mut app, Action::Tick { now_ms: 1 }, &tx), "nothing to expire");
        assert!(!apply(&mut app, Action::Up, &tx), "nothing to move on the overview");
        assert!(apply(&mut app, Action::NextTab, &tx));
        // A command goes to the poller, and its "pausing…" message is drawn.
        assert!(apply(&mut app, Action::TogglePause, &tx));
        assert!(matches!(rx.try_recv(), Ok(PollerMsg::Command(Command::Pause))));
    }

    #[test]
    fn a_command_the_poller_cannot_take_is_reported_on_screen() {
        let (tx, rx) = sync_channel(1);
        let mut app = fixtures::app();
        tx.try_send(PollerMsg::Refresh).expect("room for one");
        assert!(apply(&mut app, Action::TogglePause, &tx));
        let message = app.message.as_ref().expect("a message");
        assert!(message.error && message.text.contains("still answering"), "{message:?}");
        drop(rx);
        assert!(apply(&mut app, Action::CapacityUp, &tx));
        let message = app.message.as_ref().expect("a message");
        assert!(message.text.contains("poller stopped"), "{message:?}");
    }

    #[test]
    fn api_with_a_token_points_at_that_node() {
        let args = DashArgs {
            api: Some("http://127.0.0.1:9/".into()),
            token: Some(" t0k \n".into()),
            ..DashArgs::default()
        };
        let want = Target::Fixed { base: "http://127.0.0.1:9".into(), token: "t0k".into() };
        assert_eq!(target(&args).expect("target"), want);
    }

    #[test]
    fn api_must_be_http() {
        let args = DashArgs {
            api: Some("127.0.0.1:9".into()),
            token: Some("t".into()),
            ..DashArgs::default()
        };
        let err = target(&args).expect_err("not a URL");
        assert!(err.to_string().contains("not an http:// URL"), "{err}");
    }

    #[test]
    fn data_dir_flag_wins() {
        let args = DashArgs { data_dir: Some("/srv/starling".into()), ..DashArgs::default() };
        assert_eq!(target(&args).expect("target"), Target::DataDir("/srv/starling".into()));
    }

    #[test]
    fn api_without_a_token_says_how_to_pass_one() {
        let dir = std::env::temp_dir().join("starling-dash-no-token-here");
        let args = DashArgs {
            api: Some("http://127.0.0.1:9".into()),
            data_dir: Some(dir),
            ..DashArgs::default()
        };
        let err = format!("{:#}", target(&args).expect_err("no token"));
        assert!(err.contains("--token-file"), "{err}");
    }

    #[test]
    fn clap_reads_the_flags() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            dash: DashArgs,
        }
        let cli = Cli::try_parse_from([
            "dash",
            "--api",
            "http://h:1",
            "--token-file",
            "/t",
            "--tick-ms",
            "250",
        ])
        .expect("parses");
        assert_eq!(cli.dash.api.as_deref(), Some("http://h:1"));
        assert_eq!(cli.dash.token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(cli.dash.tick_ms, 250);
        assert!(Cli::try_parse_from(["dash", "--token", "x"]).is_err(), "--token needs --api");
    }
}
