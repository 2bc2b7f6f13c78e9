//! The SSRF guard: a crawl item is a stranger's list of URLs, and it must never turn the node
//! against its own network.
//!
//! Every address is checked after DNS resolution, by [`refusal`]. Names are resolved by
//! [`GuardedResolver`], which reqwest uses for every connection, so the client connects only to
//! addresses that passed the check (no second lookup an attacker's DNS could answer
//! differently). URLs whose host is an IP literal never reach a resolver; [`check_url`] checks
//! them before each request and each redirect hop. The operator setting
//! `allow_private_targets` lifts the check, for tests and the local demo only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Most addresses taken from one DNS answer.
pub const RESOLVED_ADDRS_MAX: usize = 16;

/// A target the guard refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused {target}: {why} address")]
pub struct Refused {
    /// The host or address that was refused.
    pub target: String,
    /// Which kind of forbidden address it is.
    pub why: &'static str,
}

/// Why `ip` must not be fetched from, or `None` if it is a public address.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let why = if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (b & 0xc0) == 64 {
        "carrier-grade NAT"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_documentation() {
        "documentation"
    } else if a == 198 && (b & 0xfe) == 18 {
        "benchmarking"
    } else if a == 192 && b == 0 && c == 0 {
        "protocol-assignment"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    };
    Some(why)
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Addresses that embed an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refusal_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        return refusal_v4(embedded_v4(seg[6], seg[7])); // IPv4-compatible (deprecated)
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return refusal_v4(embedded_v4(seg[6], seg[7])); // NAT64
    }
    if seg[0] == 0x2002 {
        return refusal_v4(embedded_v4(seg[1], seg[2])); // 6to4
    }
    let why = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        "unique-local"
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (seg[0] & 0xffc0) == 0xfec0 {
        "site-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation"
    } else {
        return None;
    };
    Some(why)
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// What the guard lets through: public addresses only, unless the operator opted in.
#[derive(Debug, Clone, Default)]
pub struct GuardPolicy {
    /// Lifts the check entirely (tests and the local demo only).
    pub allow_private: bool,
    /// Single addresses allowed even though they are not public (e.g. a demo site on the LAN).
    pub exceptions: Arc<[IpAddr]>,
}

impl GuardPolicy {
    /// Why `ip` is refused under this policy, or `None` if it may be fetched from.
    pub fn check(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private || self.exceptions.contains(&ip) { None } else { refusal(ip) }
    }
}

/// Checks a URL's host if it is an IP literal (names are checked by [`GuardedResolver`]).
pub fn check_url(url: &Url, policy: &GuardPolicy) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(Host::Domain(_)) | None => return Ok(()),
    };
    match policy.check(ip) {
        Some(why) => Err(Refused { target: ip.to_string(), why }),
        None => Ok(()),
    }
}

/// The DNS resolver handed to reqwest: resolves with the system resolver and refuses a name
/// outright if any of its addresses is forbidden (a mixed answer is a rebinding trick).
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    /// What may be connected to.
    pub policy: GuardPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .take(RESOLVED_ADDRS_MAX)
                .collect();
            let addrs = checked(&host, found, &policy)?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// The addresses of `host` that may be used, or the first refusal.
pub fn checked(
    host: &str,
    addrs: Vec<SocketAddr>,
    policy: &GuardPolicy,
) -> Result<Vec<SocketAddr>, Refused> {
    if addrs.is_empty() {
        return Err(Refused { target: host.to_owned(), why: "unresolvable" });
    }
    for addr in &addrs {
        if let Some(why) = policy.check(addr.ip()) {
            return Err(Refused { target: format!("{host} ({})", addr.ip()), why });
        }
    }
    Ok(addrs)
}

/// Finds a [`Refused`] anywhere in an error's source chain.
pub fn find_refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().expect("test address")).is_some()
    }

    #[test]
    fn forbidden_ranges_are_refused() {
        for s in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.9",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "2001:db8::1",
        ] {
            assert!(refused(s), "{s} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!refused(s), "{s} should pass");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_unless_allowed() {
        let private = Url::parse("http://10.0.0.1/x").expect("url");
        let v6 = Url::parse("http://[::1]:8080/").expect("url");
        let name = Url::parse("http://example.org/").expect("url");
        let strict = GuardPolicy::default();
        let open = GuardPolicy { allow_private: true, ..GuardPolicy::default() };
        let one = GuardPolicy {
            exceptions: Arc::from(vec!["10.0.0.1".parse().expect("ip")]),
            ..strict.clone()
        };
        assert!(check_url(&private, &strict).is_err());
        assert!(check_url(&v6, &strict).is_err());
        assert!(check_url(&name, &strict).is_ok());
        assert!(check_url(&private, &open).is_ok());
        assert!(check_url(&private, &one).is_ok());
        assert!(check_url(&v6, &one).is_err());
    }

    #[test]
    fn a_mixed_answer_is_refused_whole() {
        let good: SocketAddr = "1.1.1.1:0".parse().expect("addr");
        let bad: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let strict = GuardPolicy::default();
        let open = GuardPolicy { allow_private: true, ..GuardPolicy::default() };
        assert!(checked("x", vec![good, bad], &strict).is_err());
        assert_eq!(checked("x", vec![good], &strict).expect("public"), vec![good]);
        assert!(checked("x", vec![bad], &open).is_ok());
        assert!(checked("x", vec![], &open).is_err());
    }
}
