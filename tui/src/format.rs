//! Short human forms for the dashboard: byte counts, durations, ids. Pure functions, so the
//! tables and the snapshot tests agree on every character.

/// Bytes with a binary unit and one decimal (`512 B`, `1.5 KiB`, `3.0 GiB`).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in milliseconds as its two largest units (`45s`, `4m05s`, `1h02m`, `3d04h`).
pub(crate) fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Time left until `until_ms` seen from `now_ms`, or `expired`.
pub(crate) fn countdown(until_ms: u64, now_ms: u64) -> String {
    if until_ms <= now_ms { "expired".to_owned() } else { duration_ms(until_ms - now_ms) }
}

/// The first 8 characters of a hex id, enough to tell ids apart on one screen.
pub(crate) fn short_hex(id: &str) -> String {
    shorten(id, 8, false)
}

/// The last 8 characters of a libp2p peer id: they all start with the same `12D3KooW`.
pub(crate) fn short_peer(id: &str) -> String {
    shorten(id, 8, true)
}

fn shorten(id: &str, keep: usize, tail: bool) -> String {
    let n = id.chars().count();
    if n <= keep + 1 {
        return id.to_owned();
    }
    if tail {
        let rest: String = id.chars().skip(n - keep).collect();
        format!("…{rest}")
    } else {
        let head: String = id.chars().take(keep).collect();
        format!("{head}…")
    }
}

/// A rate per second with one decimal.
pub(crate) fn rate(per_s: f64) -> String {
    if per_s.is_finite() { format!("{per_s:.1}/s") } else { "-".to_owned() }
}

/// Cuts `text` to at most `width` characters, marking the cut with `…`.
pub(crate) fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pick_the_largest_unit_below_1024() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(bytes(734 * 1024 * 1024), "734 MiB");
    }

    #[test]
    fn durations_show_two_units() {
        assert_eq!(duration_ms(999), "0s");
        assert_eq!(duration_ms(45_000), "45s");
        assert_eq!(duration_ms(245_000), "4m05s");
        assert_eq!(duration_ms(3_720_000), "1h02m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(countdown(10, 20), "expired");
        assert_eq!(countdown(20_000, 10_000), "10s");
    }

    #[test]
    fn ids_shorten_from_the_informative_end() {
        assert_eq!(short_hex("0123456789abcdef"), "01234567…");
        assert_eq!(short_hex("abc"), "abc");
        assert_eq!(short_peer("12D3KooWAbCdEfGh12345678"), "…12345678");
        assert_eq!(clip("hello world", 5), "hell…");
        assert_eq!(clip("hi", 5), "hi");
    }
}
