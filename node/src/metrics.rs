//! `/metrics`: the node's numbers for Prometheus, in the classic text format (`text/plain;
//! version=0.0.4`) by default and in OpenMetrics 1.0 when the scraper's `Accept` asks for it
//! ([`Format::negotiate`]). One [`Snapshot`] is taken from the actor per scrape, so the numbers
//! agree with `/status` and with each other.
//!
//! The families are built here as plain data ([`Family`]) and written by one small encoder per
//! format, rather than by `prometheus-client`, whose encoder speaks OpenMetrics only: in the
//! classic format a counter's `# TYPE` line must name the `_total` sample, an info family is a
//! gauge named `_info`, and there is no `# EOF`.
//!
//! Every family is written from the first scrape on: labelled families whose labels are a fixed
//! set (states, reasons, transports) carry a zero series for each label value, so a rate or an
//! alert works before the first event. The few families whose labels are open (HTTP statuses,
//! gossip topics, projects) carry their help and type with no series until there is one.
//! The families and what they mean are listed in docs/node.md ("Metrics").

mod families;
mod sources;
mod text;

pub use families::*;
pub use sources::*;
pub use text::*;

/// The prefix of every family.
pub const PREFIX: &str = "starling";
/// Content type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The commit the binary was built from (`build.rs`; "unknown" outside a git checkout).
pub const COMMIT: &str = env!("STARLING_COMMIT");
/// Upper bounds (seconds) of the work duration histogram's buckets.
pub const WORK_DURATION_BUCKETS: &[f64] =
    &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0];
/// Jobs whose start time is kept for the duration histogram; past it the oldest is forgotten.
pub const TIMED_JOBS_MAX: usize = 4096;
/// Transports connections and bytes are labelled with.
pub const TRANSPORTS: [&str; 4] = ["tcp", "quic", "relay", "other"];
/// Directions of connections and bytes.
pub const DIRECTIONS: [&str; 2] = ["in", "out"];

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' classic text format, 0.0.4.
    Classic,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// Chooses from an `Accept` header: OpenMetrics when it is asked for with a higher
    /// quality than the classic format (`text/plain` or `*/*`), else classic.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else { return Format::Classic };
        let (mut om, mut classic) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version = None;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else { continue };
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().trim_matches('"').to_owned()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if version.as_deref().is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
                {
                    om = om.max(q);
                }
                "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om > classic { Format::OpenMetrics } else { Format::Classic }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => CLASSIC_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The text of one scrape in `format`.
pub fn render(
    snap: &Snapshot,
    urls: Option<&crate::crawl::stats::UrlCounts>,
    format: Format,
) -> String {
    families(snap, urls).encode(format)
}

#[cfg(test)]
mod tests;
