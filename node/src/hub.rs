//! What the node tells its operator as it happens: the recent log lines (a bounded ring the
//! control API serves at `/log`) and a broadcast of [`NodeEvent`]s (served at `/events`).
//!
//! [`LogCapture`] is a `tracing` layer that copies every event the node's log filter lets
//! through into the ring and the broadcast, so the dashboard shows the same lines the terminal
//! does. A slow reader of the broadcast loses events (and is told how many), never slows the
//! node.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::clock::now_ms;
use crate::views::{LogLine, NodeEvent};

/// Log lines kept for `/log`.
pub const LOG_LINES_MAX: usize = 1_000;
/// Longest log message kept, in bytes.
pub const LOG_MESSAGE_BYTES_MAX: usize = 2_048;
/// Events buffered per reader of `/events` before the slowest loses some.
pub const EVENTS_CAP: usize = 256;

/// The log ring and event broadcast of one node.
#[derive(Debug)]
pub struct Hub {
    log: Mutex<VecDeque<LogLine>>,
    events: broadcast::Sender<NodeEvent>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENTS_CAP);
        let (closing, _) = tokio::sync::watch::channel(false);
        Arc::new(Self { log: Mutex::new(VecDeque::with_capacity(LOG_LINES_MAX)), events, closing })
    }

    /// Ends every event stream: the node is stopping.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Hub::close`] has been called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Sends an event to every reader (none is fine).
    pub fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    /// Whether anyone reads the events.
    pub fn has_readers(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// A new reader of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Keeps a log line and sends it to the readers.
    pub fn log(&self, line: LogLine) {
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() == LOG_LINES_MAX {
                log.pop_front();
            }
            log.push_back(line.clone());
        }
        self.emit(NodeEvent::Log(line));
    }

    /// The newest `limit` lines at `min_level` or more severe, oldest first.
    pub fn log_lines(&self, limit: usize, min_level: Option<tracing::Level>) -> Vec<LogLine> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LogLine> = log
            .iter()
            .rev()
            .filter(|l| {
                min_level
                    .is_none_or(|min| l.level.parse::<tracing::Level>().is_ok_and(|lv| lv <= min))
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// The `tracing` layer that feeds a [`Hub`].
#[derive(Debug, Clone)]
pub struct LogCapture(pub Arc<Hub>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        self.0.log(LogLine {
            at_ms: now_ms(),
            level: meta.level().to_string(),
            target: meta.target().to_owned(),
            message: text.0,
        });
    }
}

/// The message first, then `field=value` pairs, cut at [`LOG_MESSAGE_BYTES_MAX`].
#[derive(Default)]
struct Text(String);

impl Text {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if self.0.len() >= LOG_MESSAGE_BYTES_MAX {
            return;
        }
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value}", field.name());
        }
        if self.0.len() > LOG_MESSAGE_BYTES_MAX {
            let mut cut = LOG_MESSAGE_BYTES_MAX;
            while !self.0.is_char_boundary(cut) {
                cut -= 1;
            }
            self.0.truncate(cut);
        }
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn captures_lines_with_fields_bounded_and_filtered() {
        let hub = Hub::new();
        let mut rx = hub.subscribe();
        let subscriber = tracing_subscriber::registry().with(LogCapture(hub.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(peer = "abc", n = 3, "connected");
            let first = rx.try_recv().unwrap();
            let NodeEvent::Log(line) = first else { panic!("{first:?}") };
            assert_eq!(line.level, "INFO");
            assert_eq!(line.message, "connected peer=abc n=3");
            tracing::warn!("disk nearly full");
            for i in 0..(LOG_LINES_MAX + 10) {
                tracing::debug!(i, "noise");
            }
            tracing::error!(big = %"x".repeat(10 * LOG_MESSAGE_BYTES_MAX), "huge");
        });
        // The reader fell behind the bounded broadcast: it is told how far, never blocks it.
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) if n > 0
        ));

        let all = hub.log_lines(usize::MAX, None);
        assert_eq!(all.len(), LOG_LINES_MAX, "the ring is bounded");
        let huge = all.last().unwrap();
        assert!(huge.message.starts_with("huge big=xxx"));
        assert!(huge.message.len() <= LOG_MESSAGE_BYTES_MAX);

        let warn = hub.log_lines(10, Some(tracing::Level::WARN));
        assert_eq!(warn.len(), 1, "the warn line fell out of the ring; only the error is left");
        assert_eq!(warn[0].level, "ERROR");
        assert_eq!(hub.log_lines(3, None).len(), 3);
    }
}
