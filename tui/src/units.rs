//! Byte sizes and byte rates with units, as an operator writes them (`10GiB`, `500MB`,
//! `5MB/s`, `2 MiB/s`) and as they are shown back (`10 GiB`, `5 MB/s`). The node reads every
//! byte or byte-rate setting (flags, environment, config file) through here; the dashboard
//! and `starling status` show caps with [`size`] and [`rate`].
//!
//! The rules (docs/config.md, "Sizes and rates"):
//! - a plain number is bytes (or bytes per second): `1048576`;
//! - `kB MB GB TB` are powers of 1000, `KiB MiB GiB TiB` powers of 1024; the `B` may be left
//!   out (`10Gi`, `500M`) and the prefix's case does not matter (`10GIB`, `500mB`);
//! - a lowercase `b` is bits (`5Mb`, `10gib`) and refused: every cap counts bytes;
//! - a fraction is taken with a unit (`1.5GiB`, rounded down to a whole byte); without one,
//!   bytes are whole;
//! - spaces between the number and the unit are allowed (`"5 MB/s"`, quoted in a shell);
//! - a rate may end in `/s` (`5MB/s`) or not (`5MB`); a size must not (`10GiB/s` is refused
//!   where a size is asked).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The accepted units, as listed in error messages.
pub const UNITS_ACCEPTED: &str = "a plain number of bytes, or one of kB, MB, GB, TB (powers of \
    1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 10GiB or 500MB";

/// Why a size or rate was refused; the message names the text and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError(String);

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnitError {}

/// Parses a size in bytes: `10GiB`, `500MB`, `1.5 GiB`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    parse(text, false)
}

/// Parses a rate in bytes per second: `5MB/s`, `2MiB/s`, `5MB` (the `/s` may be left out),
/// `65536`.
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    parse(text, true)
}

fn parse(text: &str, rate: bool) -> Result<u64, UnitError> {
    let what = if rate { "rate" } else { "size" };
    let accepted = if rate {
        format!("{UNITS_ACCEPTED}, with /s or without (5MB/s)")
    } else {
        UNITS_ACCEPTED.to_owned()
    };
    let bad = |why: String| UnitError(format!("{text:?} is not a {what}: {why}"));
    let t = text.trim();
    if t.is_empty() {
        return Err(bad(format!("it is empty; write {accepted}")));
    }
    if t.starts_with(['-', '+']) {
        return Err(bad("a sign is not allowed; caps are 0 or more".into()));
    }
    let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(num_end);
    let mut unit = unit.trim_start();
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad(format!("it does not start with a number; write {accepted}")));
    }
    if let Some(base) = unit.strip_suffix("/s") {
        if !rate {
            return Err(bad("a size is asked for here, not a rate: drop the /s".into()));
        }
        unit = base.trim_end();
    }
    let multiplier =
        unit_multiplier(unit).map_err(|why| bad(format!("{why}; write {accepted}")))?;
    if frac.len() > 18 {
        return Err(bad("too many decimals".into()));
    }
    let too_large = || bad(format!("it is too large (at most {} bytes)", u64::MAX));
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
    let frac_value: u128 =
        if frac.is_empty() { 0 } else { frac.parse().map_err(|_| too_large())? };
    if multiplier == 1 && frac_value != 0 {
        return Err(bad("bytes are whole; use a unit for a fraction (1.5KiB)".into()));
    }
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = whole
        .checked_mul(multiplier.into())
        .and_then(|w| w.checked_add(frac_value * u128::from(multiplier) / scale))
        .ok_or_else(too_large)?;
    u64::try_from(bytes).map_err(|_| too_large())
}

/// The bytes one `unit` stands for (`""` and `B`: 1).
fn unit_multiplier(unit: &str) -> Result<u64, String> {
    if unit.is_empty() || unit == "B" {
        return Ok(1);
    }
    let (prefix, bits) = match unit.strip_suffix('B') {
        Some(p) => (p, false),
        None => match unit.strip_suffix('b') {
            Some(p) => (p, true),
            None => (unit, false),
        },
    };
    let found = PREFIXES.iter().find(|(p, _, _)| p.eq_ignore_ascii_case(prefix));
    match (found, bits) {
        (Some((_, name, _)), true) => {
            Err(format!("{unit:?} reads as bits; caps count bytes: write {name}"))
        }
        (Some((_, _, bytes)), false) => Ok(*bytes),
        (None, _) => Err(format!("unknown unit {unit:?}")),
    }
}

/// Unit prefixes (matched whatever their case), the unit's usual spelling and its bytes.
const PREFIXES: [(&str, &str, u64); 8] = [
    ("k", "kB", 1_000),
    ("m", "MB", 1_000_000),
    ("g", "GB", 1_000_000_000),
    ("t", "TB", 1_000_000_000_000),
    ("ki", "KiB", 1 << 10),
    ("mi", "MiB", 1 << 20),
    ("gi", "GiB", 1 << 30),
    ("ti", "TiB", 1 << 40),
];

const BINARY: [(&str, u64); 4] =
    [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
const DECIMAL: [(&str, u64); 4] =
    [("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)];

/// A byte count for people: exact in the largest unit that divides it (`10 GiB`, `500 MB`,
/// `512 B`), else in binary units with one decimal (`1.5 GiB`). What it writes parses back.
pub fn size(n: u64) -> String {
    for (name, unit) in BINARY.iter().chain(DECIMAL.iter()) {
        if n >= *unit && n.is_multiple_of(*unit) {
            return format!("{} {name}", n / unit);
        }
    }
    for (name, unit) in BINARY {
        if n >= unit {
            return format!("{:.1} {name}", n as f64 / unit as f64);
        }
    }
    format!("{n} B")
}

/// A rate for people: [`size`] per second (`5 MB/s`).
pub fn rate(n: u64) -> String {
    format!("{}/s", size(n))
}

/// A size setting: written as bytes or with a unit ([`parse_size`]); in a config file either a
/// number or a string. Serialised as the number of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A rate setting in bytes per second: written as bytes or with a unit ([`parse_rate`]); in a
/// config file either a number or a string. Serialised as the number of bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRate(pub u64);

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_size(s).map(Self)
    }
}

impl FromStr for ByteRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_rate(s).map(Self)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&size(self.0))
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&rate(self.0))
    }
}

/// Reads a number of bytes or a string with a unit.
struct UnitVisitor {
    rate: bool,
}

impl serde::de::Visitor<'_> for UnitVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rate {
            f.write_str("a rate: a number of bytes per second or a string such as \"5MB/s\"")
        } else {
            f.write_str("a size: a number of bytes or a string such as \"10GiB\"")
        }
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative; caps are 0 or more")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v, self.rate).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor { rate: false }).map(Self)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor { rate: true }).map(Self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl Serialize for ByteRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// `#[serde(deserialize_with = "…")]` helpers for plain integer fields that take units.
pub mod de {
    use super::{ByteRate, ByteSize};
    use serde::{Deserialize, Deserializer};

    /// A `u64` size field.
    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        ByteSize::deserialize(d).map(|b| b.0)
    }

    /// An `Option<u32>` rate field (bytes per second, at most `u32::MAX`).
    pub fn rate_u32_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let v = Option::<ByteRate>::deserialize(d)?;
        v.map(|r| {
            u32::try_from(r.0).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{} is over the most allowed, {}",
                    super::rate(r.0),
                    super::rate(u32::MAX.into())
                ))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes_and_units_scale() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("10GiB", 10 << 30),
            ("10GIB", 10 << 30),
            ("10mB", 10_000_000),
            ("10Gi", 10 << 30),
            ("500MB", 500_000_000),
            ("500M", 500_000_000),
            ("2kB", 2_000),
            ("2KB", 2_000),
            ("2KiB", 2_048),
            ("1TiB", 1 << 40),
            ("3TB", 3_000_000_000_000),
            ("7B", 7),
            ("1.5GiB", 3 << 29),
            ("0.5kB", 500),
            (".5KiB", 512),
            ("5.0", 5),
            (" 10 GiB ", 10 << 30),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rates_take_an_optional_per_second() {
        assert_eq!(parse_rate("5MB/s"), Ok(5_000_000));
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("5 MB/s"), Ok(5_000_000));
        assert_eq!(parse_rate("5MB"), Ok(5_000_000));
        assert_eq!(parse_rate("65536"), Ok(65_536));
        assert_eq!(parse_rate("65536/s"), Ok(65_536));
    }

    #[test]
    fn refusals_say_why_and_list_the_units() {
        let err = |t: &str, rate: bool| parse(t, rate).unwrap_err().to_string();
        let e = err("5XB", false);
        assert!(e.contains("\"5XB\" is not a size: unknown unit \"XB\""), "{e}");
        assert!(e.contains("KiB, MiB, GiB, TiB") && e.contains("kB, MB, GB, TB"), "{e}");
        let e = err("5Mb", true);
        assert!(e.contains("\"Mb\" reads as bits; caps count bytes: write MB"), "{e}");
        assert!(err("10gib", false).contains("write GiB"));
        assert!(err("10GiB/s", false).contains("not a rate: drop the /s"));
        assert!(err("-5MB", false).contains("a sign is not allowed"));
        assert!(err("", true).contains("it is empty"));
        assert!(err("GiB", false).contains("does not start with a number"));
        assert!(err("1.2.3MB", false).contains("does not start with a number"));
        assert!(err("1.5", false).contains("bytes are whole"));
        assert!(err("16EiB", false).contains("unknown unit"));
        assert!(err("20000000TiB", false).contains("too large"));
        assert!(err("5 MB per second", true).contains("unknown unit"));
    }

    #[test]
    fn sizes_are_shown_exactly_when_a_unit_divides_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(10 << 30), "10 GiB");
        assert_eq!(size(500_000_000), "500 MB");
        assert_eq!(size(3 << 29), "1536 MiB");
        assert_eq!(size(1_500_000_123), "1.4 GiB");
        assert_eq!(rate(5_000_000), "5 MB/s");
        assert_eq!(rate(2 << 20), "2 MiB/s");
        // What is shown parses back.
        for n in [0, 1, 999, 1024, 1536, 5_000_000, 10 << 30, 123_456_789_000] {
            let exact = size(n);
            if !exact.contains('.') {
                assert_eq!(parse_size(&exact), Ok(n), "{exact}");
                assert_eq!(parse_rate(&rate(n)), Ok(n));
            }
        }
    }

    #[test]
    fn serde_takes_numbers_and_strings() {
        #[derive(Deserialize)]
        struct S {
            a: ByteSize,
            b: ByteRate,
            #[serde(default, deserialize_with = "de::rate_u32_opt")]
            c: Option<u32>,
        }
        let s: S = serde_json::from_str(r#"{"a": 1024, "b": "5MB/s", "c": "1MiB"}"#).unwrap();
        assert_eq!((s.a, s.b, s.c), (ByteSize(1024), ByteRate(5_000_000), Some(1 << 20)));
        let e = serde_json::from_str::<S>(r#"{"a": "5XB", "b": 1}"#).err().unwrap().to_string();
        assert!(e.contains("unknown unit \"XB\""), "{e}");
        let e = serde_json::from_str::<S>(r#"{"a": -1, "b": 1}"#).err().unwrap().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = serde_json::from_str::<S>(r#"{"a": 1, "b": 1, "c": "5GB/s"}"#).err().unwrap();
        assert!(e.to_string().contains("over the most allowed"), "{e}");
        assert_eq!(serde_json::to_string(&ByteSize(10 << 30)).unwrap(), "10737418240");
    }
}
