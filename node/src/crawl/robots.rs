//! A small robots.txt parser and matcher (RFC 9309): `User-agent` groups, `Allow` and
//! `Disallow` with `*` wildcards and the `$` end anchor; the longest matching rule wins and
//! `Allow` wins a tie. Other lines (`Sitemap`, `Crawl-delay`, …) are ignored: the project's
//! rate policy, not the site's crawl delay, sets the pace.
//!
//! What an answer to the robots.txt request means follows RFC 9309 §2.3.1 ([`answer_for`]): a
//! 2xx is parsed, a 4xx other than 429 means "unavailable" and allows everything, and a 5xx,
//! a 429 or no answer at all means "unreachable". An unreachable robots.txt never becomes a
//! verdict on a URL: the host's URLs are deferred ([`RobotsVerdict::Unreachable`]) and asked
//! again later, here or on another node.

/// Largest robots.txt read, in bytes (RFC 9309 asks crawlers to read at least 500 KiB).
pub const ROBOTS_BYTES_MAX: usize = 512 * 1024;
/// Most rules kept from one file.
pub const RULES_MAX: usize = 4_096;
/// Longest rule path kept.
pub const RULE_PATH_MAX: usize = 2_048;

/// The rules that apply to one user agent on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Robots {
    /// `(allow, pattern)` pairs.
    rules: Vec<(bool, String)>,
}

impl Robots {
    /// Allows everything (robots.txt missing, or the project ignores it).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Parses `text` and keeps the group for `agent` (a product token such as `starling`), or
    /// the `*` group if none names it.
    pub fn parse(text: &str, agent: &str) -> Self {
        let agent = agent.to_ascii_lowercase();
        let mut mine: Vec<(bool, String)> = Vec::new();
        let mut star: Vec<(bool, String)> = Vec::new();
        let mut named_me = false;
        // State of the group being read: which agents it names, and whether rules have started.
        let (mut for_me, mut for_star, mut in_rules) = (false, false, false);
        for line in text.lines().take(RULES_MAX * 4) {
            let line = line.split('#').next().unwrap_or_default().trim();
            let Some((key, value)) = line.split_once(':') else { continue };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match key.as_str() {
                "user-agent" => {
                    if in_rules {
                        (for_me, for_star, in_rules) = (false, false, false);
                    }
                    let v = value.to_ascii_lowercase();
                    if v == "*" {
                        for_star = true;
                    } else if !v.is_empty() && agent.starts_with(&v) {
                        for_me = true;
                        named_me = true;
                    }
                }
                "allow" | "disallow" => {
                    in_rules = true;
                    if value.is_empty() || value.len() > RULE_PATH_MAX {
                        continue; // an empty Disallow allows everything: no rule needed
                    }
                    let rule = (key == "allow", value.to_owned());
                    if for_me && mine.len() < RULES_MAX {
                        mine.push(rule.clone());
                    }
                    if for_star && star.len() < RULES_MAX {
                        star.push(rule);
                    }
                }
                _ => {}
            }
        }
        Self { rules: if named_me { mine } else { star } }
    }

    /// Whether `path` (path and query of a URL) may be fetched.
    pub fn allows(&self, path: &str) -> bool {
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches(pattern, path) {
                let len = pattern.len();
                let better = match best {
                    None => true,
                    Some((l, a)) => len > l || (len == l && *allow && !a),
                };
                if better {
                    best = Some((len, *allow));
                }
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

/// Redirects of a robots.txt request followed (RFC 9309 asks for at least five).
pub const ROBOTS_REDIRECTS_MAX: u32 = 5;
/// How every "robots.txt could not be read" reason starts.
pub const UNREACHABLE: &str = "robots.txt unreachable";

/// What the status of a robots.txt answer means (RFC 9309 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotsAnswer {
    /// 2xx: the rules are in the body.
    Parse,
    /// 4xx but 429: "unavailable", everything is allowed.
    AllowAll,
    /// 3xx: follow the `Location`, up to [`ROBOTS_REDIRECTS_MAX`] hops.
    Follow,
    /// 5xx, 429 or anything odd: the server could not say; the host's URLs wait.
    Unreachable,
}

/// The meaning of a robots.txt answer with HTTP `status`.
pub fn answer_for(status: u16) -> RobotsAnswer {
    match status {
        200..=299 => RobotsAnswer::Parse,
        300..=399 => RobotsAnswer::Follow,
        // The RFC lists 429 with the 4xx codes, but it says "slow down", not "nothing here".
        429 => RobotsAnswer::Unreachable,
        400..=499 => RobotsAnswer::AllowAll,
        _ => RobotsAnswer::Unreachable,
    }
}

/// What the crawler learned about one origin's robots.txt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RobotsVerdict {
    /// It was read (or is unavailable, which allows all): these rules decide.
    Rules(Robots),
    /// It could not be read for a reason that may pass; the reason starts with
    /// [`UNREACHABLE`]. The host's URLs are transient, never disallowed.
    Unreachable(String),
    /// The SSRF guard refused where it lives: the host's URLs are refused by policy.
    Refused(String),
}

/// Whether robots `pattern` matches the start of `path` (`*` any run, `$` the end).
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = path.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last && anchored {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    !anchored || rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
User-agent: otherbot
Disallow: /

User-agent: *
Disallow: /private
Allow: /private/ok
Disallow: /*.pdf$

User-agent: Starling
User-agent: friend
Disallow: /starling-only
";

    #[test]
    fn star_group_applies_to_unnamed_agents() {
        let r = Robots::parse(TEXT, "somebot");
        assert!(r.allows("/"));
        assert!(!r.allows("/private/x"));
        assert!(r.allows("/private/ok/y"));
        assert!(!r.allows("/files/a.pdf"));
        assert!(r.allows("/files/a.pdf?x=1"));
        assert!(r.allows("/starling-only"));
    }

    #[test]
    fn a_named_group_replaces_the_star_group() {
        let r = Robots::parse(TEXT, "starling");
        assert!(!r.allows("/starling-only/page"));
        assert!(r.allows("/private/x"));
        let other = Robots::parse(TEXT, "otherbot");
        assert!(!other.allows("/anything"));
    }

    #[test]
    fn wildcards_and_ties() {
        assert!(matches("/a*b", "/a/x/b/c"));
        assert!(!matches("/a*b$", "/a/x/b/c"));
        assert!(matches("/a*b$", "/a/x/b"));
        assert!(matches("/", "/anything"));
        let r = Robots::parse("User-agent: *\nDisallow: /x\nAllow: /x\n", "bot");
        assert!(r.allows("/x"), "allow wins a tie");
        assert!(Robots::allow_all().allows("/"));
        assert!(Robots::parse("User-agent: *\nDisallow:\n", "bot").allows("/a"));
    }

    #[test]
    fn answers_are_classified_as_rfc_9309_says() {
        use RobotsAnswer::*;
        for (status, want) in [
            (200, Parse),
            (204, Parse),
            (301, Follow),
            (308, Follow),
            (400, AllowAll),
            (401, AllowAll),
            (403, AllowAll),
            (404, AllowAll),
            (410, AllowAll),
            (429, Unreachable),
            (500, Unreachable),
            (503, Unreachable),
            (599, Unreachable),
            (100, Unreachable),
        ] {
            assert_eq!(answer_for(status), want, "status {status}");
        }
    }
}
