//! The families as plain data, and their encoding in either format.

use std::fmt::Write as _;

use super::{Format, PREFIX};

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; its sample is named `<family>_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets.
    Histogram,
    /// A constant 1 whose labels carry the information; its sample is `<family>_info`.
    Info,
}

/// A histogram's buckets (not cumulative: one count per bound, then the overflow), sum and
/// count.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    /// Upper bounds, increasing.
    pub bounds: &'static [f64],
    /// Observations per bucket; one more than `bounds` (the last is above every bound).
    pub buckets: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
}

impl Hist {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, buckets: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.buckets[i] += 1;
        self.sum += v;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(i128),
    /// A float.
    Float(f64),
    /// A histogram.
    Hist(Hist),
}

/// One series: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

/// One metric family: name (without the prefix or a `_total`/`_info` suffix), help, kind and
/// series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The name after `starling_`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// What it measures.
    pub kind: Kind,
    /// Its series, possibly none.
    pub series: Vec<Series>,
}

/// The families of one scrape, in order.
#[derive(Debug, Default)]
pub struct Families(pub Vec<Family>);

pub(super) fn int(v: impl Into<i128>) -> Value {
    Value::Int(v.into())
}

pub(super) fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Families {
    pub(super) fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        series: Vec<Series>,
    ) {
        self.0.push(Family { name, help, kind, series });
    }

    pub(super) fn one(&mut self, name: &'static str, help: &'static str, kind: Kind, value: Value) {
        self.push(name, help, kind, vec![Series { labels: Vec::new(), value }]);
    }

    pub(super) fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.one(name, help, Kind::Counter, int(v));
    }

    pub(super) fn gauge(&mut self, name: &'static str, help: &'static str, v: impl Into<i128>) {
        self.one(name, help, Kind::Gauge, int(v));
    }

    pub(super) fn gauge_f(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.one(name, help, Kind::Gauge, Value::Float(v));
    }

    /// A family with one label.
    pub(super) fn by<'a>(
        &mut self,
        kind: Kind,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: impl IntoIterator<Item = (&'a str, Value)>,
    ) {
        let series = rows
            .into_iter()
            .map(|(k, value)| Series { labels: labels(&[(label, k)]), value })
            .collect();
        self.push(name, help, kind, series);
    }

    /// Writes the families in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let base = format!("{PREFIX}_{}", f.name);
            let (meta, ty) = match (format, f.kind) {
                (Format::Classic, Kind::Counter) => (format!("{base}_total"), "counter"),
                (Format::Classic, Kind::Info) => (format!("{base}_info"), "gauge"),
                (_, Kind::Counter) => (base.clone(), "counter"),
                (_, Kind::Gauge) => (base.clone(), "gauge"),
                (_, Kind::Histogram) => (base.clone(), "histogram"),
                (Format::OpenMetrics, Kind::Info) => (base.clone(), "info"),
            };
            let _ = writeln!(out, "# HELP {meta} {}", escape_help(f.help, format));
            let _ = writeln!(out, "# TYPE {meta} {ty}");
            for s in &f.series {
                match (&s.value, f.kind) {
                    (Value::Hist(h), _) => {
                        let mut cumulative = 0;
                        for (i, n) in h.buckets.iter().enumerate() {
                            cumulative += n;
                            let le =
                                h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| float(*b));
                            let mut l = s.labels.clone();
                            l.push(("le", le));
                            let _ = writeln!(out, "{base}_bucket{} {cumulative}", label_text(&l));
                        }
                        let l = label_text(&s.labels);
                        let _ = writeln!(out, "{base}_sum{l} {}", float(h.sum));
                        let _ = writeln!(out, "{base}_count{l} {cumulative}");
                    }
                    (v, kind) => {
                        let suffix = match kind {
                            Kind::Counter => "_total",
                            Kind::Info => "_info",
                            _ => "",
                        };
                        let v = match v {
                            Value::Int(i) => i.to_string(),
                            Value::Float(x) => float(*x),
                            Value::Hist(_) => unreachable!("matched above"),
                        };
                        let _ = writeln!(out, "{base}{suffix}{} {v}", label_text(&s.labels));
                    }
                }
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// A float as both formats want it: never `-0`, `NaN` and `±Inf` spelled out, and whole
/// numbers with a `.0` (so bucket bounds read as the floats they are).
fn float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if x == 0.0 {
        // Also turns -0.0 into 0.0.
        "0.0".into()
    } else {
        format!("{x:?}")
    }
}

fn escape_help(help: &str, format: Format) -> String {
    let s = help.replace('\\', "\\\\").replace('\n', "\\n");
    match format {
        Format::Classic => s,
        Format::OpenMetrics => s.replace('"', "\\\""),
    }
}

fn label_text(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}
