//! Building a project manifest for `starling project new`: the TOML file project owners
//! write (see docs/project-manifest.md), the flags that override it, and the checks that give
//! one clear line for a bad value before anything is signed.

use std::fs;

use anyhow::{Result, bail};
use serde::Deserialize;
use starling_protocol::manifest::{
    LEASE_MS_MAX, LEASE_MS_MIN, PROOF_EVERY_MS_MIN, PROOF_MS_MAX, STRIKES_MAX, VOLATILE_MAX,
    VerifyPolicy,
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
    #[serde(default)]
    shards: ShardsToml,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardsToml {
    depth: Option<u8>,
    for_nodes: Option<u64>,
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
    proof_every: Option<Duration>,
    proof_grace: Option<Duration>,
}

/// A TOML duration: a string such as `"30m"`, or whole seconds (`proof_every = 600`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Duration {
    Secs(i64),
    Text(String),
}

impl Duration {
    fn shown(&self) -> String {
        match self {
            Duration::Secs(n) => n.to_string(),
            Duration::Text(t) => t.clone(),
        }
    }
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
        shard_depth: shard_depth(args, &t.shards)?,
    };
    use starling_protocol::wire::Validate;
    m.validate().map_err(|e| anyhow::anyhow!("manifest is not valid: {e}"))?;
    Ok(m)
}

/// The shard depth: given, or chosen for an expected node count ([`depth_for`] with shards
/// of about [`SHARD_MEMBERS_DEFAULT`]); flags override the TOML, and only one of the two may
/// be set.
fn shard_depth(args: &NewArgs, t: &ShardsToml) -> Result<u8> {
    use starling_protocol::shard::{SHARD_DEPTH_MAX, SHARD_MEMBERS_DEFAULT, depth_for};
    let depth = args.shard_depth.or(if args.shard_for_nodes.is_some() { None } else { t.depth });
    let nodes =
        args.shard_for_nodes.or(if args.shard_depth.is_some() { None } else { t.for_nodes });
    match (depth, nodes) {
        (Some(_), Some(_)) => {
            bail!(
                "set the shard depth or the node count to pick it for (shards.for_nodes), not both"
            )
        }
        (Some(d), None) if d > SHARD_DEPTH_MAX => {
            bail!("shard depth {d} is out of range: 0 ..= {SHARD_DEPTH_MAX}")
        }
        (Some(d), None) => Ok(d),
        (None, Some(0)) => bail!("shard node count must be at least 1"),
        (None, Some(n)) => Ok(depth_for(n, SHARD_MEMBERS_DEFAULT)),
        (None, None) => Ok(0),
    }
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

/// Parses a duration such as `30m`, `10s`, `1.5h`, `2d`, `500ms` or `90` (seconds) into
/// milliseconds; `what` names it in the error.
pub fn parse_duration_ms(s: &str, what: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let not_one =
        || anyhow::anyhow!("{what} {s:?} is not a duration; give one such as 30m, 10s, 1h or 2d");
    let n: f64 = num.parse().map_err(|_| not_one())?;
    let unit_ms = match unit.trim() {
        "ms" => 1.0,
        "" | "s" | "sec" | "secs" => 1_000.0,
        "m" | "min" | "mins" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return Err(not_one()),
    };
    let ms = (n * unit_ms).round();
    if !(ms.is_finite() && ms >= 0.0 && ms <= u64::MAX as f64) {
        return Err(not_one());
    }
    Ok(ms as u64)
}

/// A duration in its largest whole unit (`30m`, `7d`, `1500ms`), for messages.
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= len && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// Parses how often storage proofs come (`verify.proof_every`): a duration of 10 s ..= 7
/// days, or `0`/`off` for none.
pub fn parse_proof_every(s: &str) -> Result<u64> {
    if matches!(s.trim(), "off" | "0") {
        return Ok(0);
    }
    let ms = parse_duration_ms(s, "proof every")?;
    if !(PROOF_EVERY_MS_MIN..=PROOF_MS_MAX).contains(&ms) {
        bail!(
            "proof every {s} is out of range: {} ..= {}, or 0 (off) for no storage proofs",
            format_duration_ms(PROOF_EVERY_MS_MIN),
            format_duration_ms(PROOF_MS_MAX)
        );
    }
    Ok(ms)
}

/// Parses the grace a new holder has before its first storage proof (`verify.proof_grace`):
/// a duration of 0 ..= 7 days.
pub fn parse_proof_grace(s: &str) -> Result<u64> {
    let ms = parse_duration_ms(s, "proof grace")?;
    if ms > PROOF_MS_MAX {
        bail!("proof grace {s} is out of range: 0 ..= {}", format_duration_ms(PROOF_MS_MAX));
    }
    Ok(ms)
}

/// A TOML duration through `parse` (whole seconds are checked as `<n>s`).
fn toml_duration(d: &Duration, parse: fn(&str) -> Result<u64>) -> Result<u64> {
    match d {
        Duration::Secs(n) if *n < 0 => parse(&d.shown()),
        Duration::Secs(0) => parse("0"),
        Duration::Secs(n) => parse(&format!("{n}s")),
        Duration::Text(t) => parse(t),
    }
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
    let proof_every_ms = match (&args.proof_every, &t.proof_every) {
        (Some(s), _) => parse_proof_every(s)?,
        (None, Some(d)) => toml_duration(d, parse_proof_every)?,
        (None, None) => defaults.proof_every_ms,
    };
    let proof_grace_ms = match (&args.proof_grace, &t.proof_grace) {
        (Some(s), _) => parse_proof_grace(s)?,
        (None, Some(d)) => toml_duration(d, parse_proof_grace)?,
        (None, None) => defaults.proof_grace_ms,
    };
    Ok(VerifyPolicy { sample_milli, volatile, strikes, proof_every_ms, proof_grace_ms })
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
    fn durations_parse_in_their_units_and_proof_limits_are_named() {
        assert_eq!(parse_duration_ms("30m", "x").unwrap(), 1_800_000);
        assert_eq!(parse_duration_ms(" 10s ", "x").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("90", "x").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("1.5h", "x").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("2d", "x").unwrap(), 172_800_000);
        assert_eq!(parse_duration_ms("250ms", "x").unwrap(), 250);
        for bad in ["", "soon", "10 weeks", "-5s", "1e3s", "m"] {
            let err = parse_duration_ms(bad, "proof every").unwrap_err().to_string();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
        assert_eq!(format_duration_ms(1_800_000), "30m");
        assert_eq!(format_duration_ms(PROOF_MS_MAX), "7d");
        assert_eq!(format_duration_ms(1_500), "1500ms");
        assert_eq!(format_duration_ms(0), "0ms");

        assert_eq!(parse_proof_every("off").unwrap(), 0);
        assert_eq!(parse_proof_every("0").unwrap(), 0);
        assert_eq!(parse_proof_every("10s").unwrap(), PROOF_EVERY_MS_MIN);
        assert_eq!(parse_proof_every("7d").unwrap(), PROOF_MS_MAX);
        let err = |s: &str| parse_proof_every(s).unwrap_err().to_string();
        assert!(err("9s").contains("proof every 9s is out of range: 10s ..= 7d, or 0 (off)"));
        assert!(err("8d").contains("out of range"), "{}", err("8d"));
        assert!(err("0s").contains("out of range"), "0s is not off: {}", err("0s"));
        assert_eq!(parse_proof_grace("0").unwrap(), 0);
        assert_eq!(parse_proof_grace("5m").unwrap(), 300_000);
        let err = parse_proof_grace("8d").unwrap_err().to_string();
        assert!(err.contains("proof grace 8d is out of range: 0 ..= 7d"), "{err}");

        // The TOML's whole seconds read as seconds.
        assert_eq!(toml_duration(&Duration::Secs(600), parse_proof_every).unwrap(), 600_000);
        assert_eq!(toml_duration(&Duration::Secs(0), parse_proof_every).unwrap(), 0);
        assert!(toml_duration(&Duration::Secs(-1), parse_proof_grace).is_err());
        assert_eq!(toml_duration(&Duration::Text("off".into()), parse_proof_every).unwrap(), 0);
    }

    /// `starling project new` with `flags` and, when given, a TOML manifest of `toml`.
    fn built(flags: &[&str], toml: Option<&str>) -> Result<ProjectManifest> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: NewArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let mut argv = vec!["new", "--key", "k", "--out", "o", "--name", "p"];
        if let Some(text) = toml {
            fs::write(&path, text).unwrap();
            argv.extend(["--manifest", path.to_str().unwrap()]);
        }
        argv.extend(flags);
        let cli = Cli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
        build_manifest(&cli.args, starling_protocol::engine::test_keypair(1).public())
    }

    #[test]
    fn the_shard_depth_is_given_or_picked_for_a_node_count() {
        let depth = |flags: &[&str], toml: Option<&str>| built(flags, toml).map(|m| m.shard_depth);
        assert_eq!(depth(&[], None).unwrap(), 0);
        assert_eq!(depth(&["--shard-depth", "3"], None).unwrap(), 3);
        // About 12 nodes a shard or more: 5,000 nodes make 256 shards of 19 or so.
        assert_eq!(depth(&["--shard-for-nodes", "5000"], None).unwrap(), 8);
        assert_eq!(depth(&["--shard-for-nodes", "20"], None).unwrap(), 0);
        assert_eq!(depth(&[], Some("[shards]\ndepth = 2\n")).unwrap(), 2);
        assert_eq!(depth(&[], Some("[shards]\nfor_nodes = 100\n")).unwrap(), 3);
        // A flag overrides the TOML, whichever of the two the TOML sets.
        assert_eq!(depth(&["--shard-depth", "1"], Some("[shards]\nfor_nodes = 100\n")).unwrap(), 1);
        assert_eq!(depth(&["--shard-for-nodes", "24"], Some("[shards]\ndepth = 5\n")).unwrap(), 1);
        let err = |flags: &[&str], toml| depth(flags, toml).unwrap_err().to_string();
        let e = err(&["--shard-depth", "13"], None);
        assert!(e.contains("shard depth 13 is out of range: 0 ..= 12"), "{e}");
        let e = err(&[], Some("[shards]\ndepth = 1\nfor_nodes = 100\n"));
        assert!(e.contains("not both"), "{e}");
        let e = err(&["--shard-for-nodes", "0"], None);
        assert!(e.contains("at least 1"), "{e}");
        let e = err(&["--shard-depth", "2", "--shard-for-nodes", "90"], None);
        assert!(e.contains("cannot be used with"), "{e}");
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
