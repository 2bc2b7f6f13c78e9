//! Building a project manifest for `starling project new`: the TOML file project owners
//! write (see docs/project-manifest.md), the flags that override it, and the checks that give
//! one clear line for a bad value before anything is signed.

use std::fs;

use anyhow::{Result, bail};
use serde::Deserialize;
use starling_protocol::manifest::{
    LEASE_MS_MAX, LEASE_MS_MIN, STRIKES_MAX, VOLATILE_MAX, VerifyPolicy,
};
use starling_protocol::{ProjectManifest, RatePolicy, RobotsPolicy, SizeCaps};

use super::NewArgs;

/// The manifest as project owners write it in TOML.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    name: Option<String>,
    #[serde(default)]
    description: String,
    version: Option<u64>,
    lease_secs: Option<u64>,
    replication: Option<u8>,
    #[serde(default)]
    scope: Vec<String>,
    user_agent: Option<String>,
    robots: Option<RobotsPolicy>,
    #[serde(default)]
    rate: RateToml,
    #[serde(default)]
    caps: CapsToml,
    #[serde(default)]
    verify: VerifyToml,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateToml {
    per_host: Option<String>,
    burst: Option<u32>,
    concurrency: Option<u32>,
    scope: Option<String>,
    lanes: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapsToml {
    response_bytes_max: Option<u64>,
    chunk_urls_max: Option<u32>,
    result_bytes_max: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyToml {
    sample: Option<Number>,
    volatile: Option<Vec<String>>,
    strikes: Option<i64>,
}

/// A TOML number, whole or not (`sample = 1` and `sample = 0.25` both read).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn get(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// Parses a rate such as `4/s`, `30/min`, `0.5/s` or `2` (per second) into thousandths per second.
pub fn parse_rate(s: &str) -> Result<u32> {
    let s = s.trim();
    let (num, per) = s.split_once('/').unwrap_or((s, "s"));
    let n: f64 = num.trim().parse().map_err(|_| anyhow::anyhow!("rate {s:?} is not a number"))?;
    let secs = match per.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        other => bail!("rate {s:?}: unknown unit {other:?} (use /s, /min or /h)"),
    };
    let milli = (n / secs * 1000.0).round();
    let max = f64::from(starling_protocol::manifest::RATE_PER_S_MILLI_MAX);
    if !(milli.is_finite() && milli >= 1.0 && milli <= max) {
        bail!("rate {s:?} is out of range: 0.001/s ..= 1000/s");
    }
    Ok(milli as u32)
}

pub(super) fn format_rate(per_s_milli: u32) -> String {
    format!("{}/s", f64::from(per_s_milli) / 1000.0)
}

pub(super) fn build_manifest(
    args: &NewArgs,
    owner: starling_protocol::PublicKey,
) -> Result<ProjectManifest> {
    let t: ManifestToml = match &args.manifest {
        Some(path) => {
            let text = fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read manifest {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!("manifest {} is not valid: {}", path.display(), e.message())
            })?
        }
        None => ManifestToml::default(),
    };
    let Some(name) = args.name.clone().or(t.name) else {
        bail!("the project needs a name: set `name` in the manifest or pass --name");
    };
    let defaults = RatePolicy::default();
    let per_s_milli = match args.rate_per_host.as_deref().or(t.rate.per_host.as_deref()) {
        Some(r) => parse_rate(r)?,
        None => defaults.per_s_milli,
    };
    let lease_secs = args.lease_secs.or(t.lease_secs).unwrap_or(300);
    let lease_ms = lease_secs.saturating_mul(1000);
    if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&lease_ms) {
        bail!("lease of {lease_secs} s is outside 1 s ..= 86400 s");
    }
    for (name, value, min, max) in [
        ("burst", args.burst.or(t.rate.burst), 0, starling_protocol::manifest::BURST_MAX),
        (
            "concurrency",
            args.concurrency.or(t.rate.concurrency),
            1,
            starling_protocol::manifest::CONCURRENCY_MAX,
        ),
    ] {
        if let Some(v) = value.filter(|v| !(min..=max).contains(v)) {
            bail!("{name} {v} is out of range: {min} ..= {max}");
        }
    }
    let rate_scope = match args.rate_scope.as_deref().or(t.rate.scope.as_deref()) {
        None | Some("mesh") => starling_protocol::RateScope::Mesh,
        Some("node") => starling_protocol::RateScope::Node,
        Some(other) => bail!("rate scope {other:?} is neither \"mesh\" nor \"node\""),
    };
    let lanes = args.lanes.or(t.rate.lanes).unwrap_or(1);
    let lanes_max = starling_protocol::item::LANES_MAX;
    if !(1..=lanes_max).contains(&lanes) {
        bail!("lanes {lanes} is out of range: 1 ..= {lanes_max}");
    }
    if lanes > 1 && rate_scope == starling_protocol::RateScope::Node {
        bail!("lanes share a mesh-wide rate: with rate scope \"node\" leave lanes at 1");
    }
    let caps_default = SizeCaps::default();
    let mut scope: Vec<String> = t.scope;
    scope.extend(args.scope.iter().cloned());
    let m = ProjectManifest {
        description: t.description,
        version: args.manifest_version.or(t.version).unwrap_or(1),
        owner,
        rate: RatePolicy {
            per_s_milli,
            burst: args.burst.or(t.rate.burst).unwrap_or(defaults.burst),
            concurrency: args.concurrency.or(t.rate.concurrency).unwrap_or(defaults.concurrency),
            lanes,
            scope: rate_scope,
        },
        lease_ms,
        replication: args.replication.or(t.replication).unwrap_or(2),
        scope,
        user_agent: t
            .user_agent
            .unwrap_or_else(|| format!("starling/{} ({name})", env!("CARGO_PKG_VERSION"))),
        robots: t.robots.unwrap_or_default(),
        caps: SizeCaps {
            response_bytes_max: t
                .caps
                .response_bytes_max
                .unwrap_or(caps_default.response_bytes_max),
            chunk_urls_max: t.caps.chunk_urls_max.unwrap_or(caps_default.chunk_urls_max),
            result_bytes_max: t.caps.result_bytes_max.unwrap_or(caps_default.result_bytes_max),
        },
        verify: verify_policy(args, t.verify)?,
        name,
    };
    use starling_protocol::wire::Validate;
    m.validate().map_err(|e| anyhow::anyhow!("manifest is not valid: {e}"))?;
    Ok(m)
}

/// Parses a spot-check sample given as a share, `0` ..= `1` to thousandths (`0.1` is one
/// result in ten), into thousandths.
pub fn parse_sample(s: &str) -> Result<u16> {
    let f: f64 = s.trim().parse().map_err(|_| {
        anyhow::anyhow!("verify sample {s:?} is not a number; give a share such as 0.1 (0 ..= 1)")
    })?;
    sample_milli(f, s)
}

fn sample_milli(f: f64, shown: &str) -> Result<u16> {
    if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
        bail!(
            "verify sample {shown} is out of range: 0 ..= 1 (a share of results: 0.1 is one in ten)"
        );
    }
    let milli = f * 1000.0;
    if (milli - milli.round()).abs() > 1e-6 {
        bail!("verify sample {shown} is finer than thousandths: round it to three decimals");
    }
    Ok(milli.round() as u16)
}

/// A volatile URL prefix as checks compare it: normalised as chunk URLs are (lowercase scheme
/// and host, default port dropped, characters percent-encoded), so it matches what it names.
pub fn parse_volatile(p: &str) -> Result<String> {
    let p = p.trim();
    let max = starling_protocol::manifest::VOLATILE_PATTERN_MAX;
    let url = url::Url::parse(p).map_err(|e| {
        anyhow::anyhow!(
            "verify volatile prefix {p:?} is not a URL prefix ({e}); give one such as https://example.org/live/"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("verify volatile prefix {p:?} must start with http:// or https://");
    }
    let normalised = url.to_string();
    if normalised.len() > max {
        bail!("verify volatile prefix {p:?} is longer than {max} bytes");
    }
    Ok(normalised)
}

/// The spot-check policy from the flags over the TOML's `[verify]` table over the defaults.
fn verify_policy(args: &NewArgs, t: VerifyToml) -> Result<VerifyPolicy> {
    let defaults = VerifyPolicy::default();
    let sample_milli = match (&args.verify_sample, t.sample) {
        (Some(s), _) => parse_sample(s)?,
        (None, Some(n)) => sample_milli(n.get(), &n.get().to_string())?,
        (None, None) => defaults.sample_milli,
    };
    let strikes = match args.verify_strikes.or(t.strikes) {
        Some(n) if !(1..=i64::from(STRIKES_MAX)).contains(&n) => {
            bail!("verify strikes {n} is out of range: 1 ..= {STRIKES_MAX}")
        }
        Some(n) => n as u8,
        None => defaults.strikes,
    };
    let mut volatile = t.volatile.unwrap_or_default();
    volatile.extend(args.verify_volatile.iter().cloned());
    if volatile.len() > VOLATILE_MAX {
        bail!(
            "{} verify volatile prefixes is over the {VOLATILE_MAX} a project may name",
            volatile.len()
        );
    }
    let mut volatile = volatile.iter().map(|p| parse_volatile(p)).collect::<Result<Vec<_>>>()?;
    volatile.sort();
    volatile.dedup();
    Ok(VerifyPolicy { sample_milli, volatile, strikes, ..VerifyPolicy::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("4/s").unwrap(), 4000);
        assert_eq!(parse_rate("30/min").unwrap(), 500);
        assert_eq!(parse_rate("0.5").unwrap(), 500);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("4/week").is_err());
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("4294967/s").unwrap_err().to_string().contains("1000/s"));
        assert_eq!(parse_rate("1000/s").unwrap(), 1_000_000);
    }

    #[test]
    fn samples_parse_as_shares_to_thousandths() {
        assert_eq!(parse_sample("0.1").unwrap(), 100);
        assert_eq!(parse_sample("1").unwrap(), 1000);
        assert_eq!(parse_sample("0").unwrap(), 0);
        assert_eq!(parse_sample(" 0.125 ").unwrap(), 125);
        let err = |s: &str| parse_sample(s).unwrap_err().to_string();
        assert!(err("1.5").contains("out of range: 0 ..= 1"), "{}", err("1.5"));
        assert!(err("-0.1").contains("out of range"), "{}", err("-0.1"));
        assert!(err("0.0005").contains("finer than thousandths"), "{}", err("0.0005"));
        assert!(err("10%").contains("is not a number"), "{}", err("10%"));
        assert!(err("NaN").contains("out of range"), "{}", err("NaN"));
    }

    #[test]
    fn volatile_prefixes_are_normalised_urls() {
        assert_eq!(
            parse_volatile("https://Example.ORG:443/Live/").unwrap(),
            "https://example.org/Live/"
        );
        assert_eq!(parse_volatile("http://example.org").unwrap(), "http://example.org/");
        assert_eq!(parse_volatile("http://a.org/x?q=").unwrap(), "http://a.org/x?q=");
        let err = |s: &str| parse_volatile(s).unwrap_err().to_string();
        assert!(
            err("example.org/live").contains("is not a URL prefix"),
            "{}",
            err("example.org/live")
        );
        assert!(err("ftp://example.org/").contains("http:// or https://"), "{}", err("ftp://x/"));
        let long = format!("https://example.org/{}", "a".repeat(300));
        assert!(err(&long).contains("longer than 256 bytes"), "{}", err(&long));
    }
}
