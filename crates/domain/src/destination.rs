//! Where an outbound API call may go (SSRF protection): the allowlist of parsed destinations
//! (`https://api.partner.example/v1/`, `https://*.partner.example`, compared after the URL is
//! normalised: scheme, host, port and path segments, never as a string prefix), and no
//! address outside the public internet unless private networks are allowed. Only the URL is
//! looked at here; the HTTP adapter checks the addresses a host name resolves to again, with
//! [`is_private`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::request::redact_url;

/// Where outbound API calls may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// The destinations calls may go to. Empty: any host (addresses outside the public
    /// internet still need `allow_private_networks`).
    pub allowed: Vec<AllowedDestination>,
    /// Whether loopback, private and other non-public addresses may be called (off: SSRF
    /// protection).
    pub allow_private_networks: bool,
}

/// One allowlist entry, parsed: a scheme (`http` or `https`), an exact host or every name under
/// a suffix (`*.partner.example`), a port (the scheme's default when the entry names none) and
/// a path prefix matched segment by segment (`/v1` allows `/v1` and `/v1/...`, not `/v10`).
/// An entry without a scheme (`api.partner.example`) means `https://api.partner.example`.
///
/// It reads and writes itself as the entry's text, so a bad entry is refused where the
/// configuration is read, naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedDestination {
    /// The entry as written.
    entry: String,
    scheme: String,
    host: HostRule,
    port: u16,
    /// The path prefix without its trailing `/` (empty: every path).
    path: String,
}

/// The host part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// This host only (lowercase, no trailing dot; `[..]` around an IPv6 address).
    Exact(String),
    /// Any name ending in this suffix (which starts with `.`), not the suffix itself.
    Under(String),
}

impl AllowedDestination {
    /// Parses an entry: `[scheme://](host | *.suffix)[:port][/path]`. Refused, with the reason:
    /// a scheme other than http or https, no host, a wildcard anywhere but as the whole first
    /// label or over a single label (`*.com`), credentials (`user@`), a query or a fragment.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = |reason: &str| format!("{entry:?} is not a valid destination: {reason}");
        let text = entry.trim();
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_owned(), text),
        };
        if !matches!(scheme.as_str(), "http" | "https") {
            return Err(bad(&format!(
                "the scheme must be http or https, found {scheme:?}"
            )));
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if rest.contains('*') {
            return Err(bad(
                "a wildcard may only be the whole first label of a host name (*.partner.example)",
            ));
        }
        let url = url::Url::parse(&format!("{scheme}://{rest}"))
            .map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{:?} is not a valid destination: credentials (user@) are not allowed in a \
                 destination",
                without_userinfo(entry)
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a destination has no query or fragment"));
        }
        let host = match url.host() {
            None => return Err(bad("no host")),
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(_) if wildcard => {
                return Err(bad("a wildcard needs a host name, not an address"));
            }
            Some(_) => url.host_str().unwrap_or_default().to_owned(),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = if wildcard {
            if !host.contains('.') {
                return Err(bad(&format!(
                    "*.{host} is too broad: name at least two labels after *."
                )));
            }
            HostRule::Under(format!(".{host}"))
        } else {
            HostRule::Exact(host)
        };
        Ok(Self {
            entry: entry.to_owned(),
            port: url.port_or_known_default().unwrap_or_default(),
            path: url.path().trim_end_matches('/').to_owned(),
            scheme,
            host,
        })
    }

    /// Whether a parsed (so normalised: `..` segments resolved, host lowercased) URL is under
    /// this entry. A path with an encoded `/`, `\` or `.` never matches an entry with a path
    /// prefix, since a server may decode it into another path.
    pub fn matches(&self, url: &url::Url) -> bool {
        if url.scheme() != self.scheme || url.port_or_known_default() != Some(self.port) {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match &self.host {
            HostRule::Exact(exact) => host == *exact,
            HostRule::Under(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        };
        if !host_ok {
            return false;
        }
        if self.path.is_empty() {
            return true;
        }
        let path = url.path();
        let lower = path.to_ascii_lowercase();
        if ["%2f", "%5c", "%2e"].iter().any(|e| lower.contains(e)) {
            return false;
        }
        path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// `entry` as written, but for the credentials before its host (`https://…@a.example/v1`).
fn without_userinfo(entry: &str) -> String {
    let start = entry.find("://").map_or(0, |i| i + 3);
    let end = entry[start..]
        .find(['/', '?', '#'])
        .map_or(entry.len(), |i| start + i);
    match entry[start..end].rfind('@') {
        Some(at) => format!("{}…{}", &entry[..start], &entry[start + at..]),
        None => entry.to_owned(),
    }
}

impl TryFrom<String> for AllowedDestination {
    type Error = String;

    fn try_from(entry: String) -> Result<Self, String> {
        Self::parse(&entry)
    }
}

impl From<AllowedDestination> for String {
    fn from(d: AllowedDestination) -> String {
        d.entry
    }
}

impl std::str::FromStr for AllowedDestination {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        Self::parse(entry)
    }
}

impl fmt::Display for AllowedDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entry)
    }
}

/// Why a call may not go to a URL. The messages name the URL (without credentials or query)
/// and the setting that decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The rendered URL does not parse.
    #[error("{url:?} is not a URL after templating: {reason}")]
    NotAUrl {
        /// The URL as rendered.
        url: String,
        /// Why it does not parse.
        reason: url::ParseError,
    },
    /// The rendered URL parses but cannot be called: not http(s), no host, or credentials in
    /// it.
    #[error("{url} is refused: {reason}")]
    Refused {
        /// The URL, redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// `allowed` is not empty and no entry matches.
    #[error("{url} is not in the allowed destinations (api.allowed)")]
    NotAllowed {
        /// The URL, redacted.
        url: String,
    },
    /// The host is an address outside the public internet (`range` names which), or
    /// `localhost` (or a name under it), and private networks are not allowed.
    #[error(
        "{url} points at a loopback or private address ({range}), refused (api.allow_private_networks)"
    )]
    Private {
        /// The URL, redacted.
        url: String,
        /// The range the address is in.
        range: String,
    },
}

impl Destinations {
    /// Checks that a call may go to `raw_url`, after normalisation: it parses as an http(s)
    /// URL with a host and no credentials, it is under an allowlist entry when there is an
    /// allowlist ([`AllowedDestination::matches`]), and its host is no address outside the
    /// public internet ([`non_public_range`]), nor `localhost` or `*.localhost`, unless
    /// `allow_private_networks`.
    pub fn check(&self, raw_url: &str) -> Result<(), DestinationError> {
        let url = url::Url::parse(raw_url).map_err(|reason| DestinationError::NotAUrl {
            url: raw_url.to_owned(),
            reason,
        })?;
        let refused = |reason: &str| DestinationError::Refused {
            url: redact_url(raw_url),
            reason: reason.to_owned(),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(refused("it has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused(
                "credentials in the URL (user:password@) would be stored and logged; send them \
                 in a header that references a secret",
            ));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|entry| entry.matches(&url)) {
            return Err(DestinationError::NotAllowed {
                url: redact_url(raw_url),
            });
        }
        if self.allow_private_networks {
            return Ok(());
        }
        let range = match url.host() {
            Some(url::Host::Ipv4(ip)) => non_public_range(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => non_public_range(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                (d == "localhost" || d.ends_with(".localhost")).then_some("localhost")
            }
            None => Some("no host"),
        };
        match range {
            Some(range) => Err(DestinationError::Private {
                url: redact_url(raw_url),
                range: range.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// Whether an address is outside the public internet: see [`non_public_range`].
pub fn is_private(ip: IpAddr) -> bool {
    non_public_range(ip).is_some()
}

/// The IPv4 ranges no call may reach (without `allow_private_networks`), with their names.
const V4_RANGES: [(Ipv4Addr, u8, &str); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" 0.0.0.0/8"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private 10.0.0.0/8"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "carrier-grade NAT 100.64.0.0/10",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback 127.0.0.0/8"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local 169.254.0.0/16",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private 172.16.0.0/12"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments 192.0.0.0/24",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation 192.0.2.0/24",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast 192.88.99.0/24",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private 192.168.0.0/16"),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking 198.18.0.0/15",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation 198.51.100.0/24",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation 203.0.113.0/24",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast 224.0.0.0/4"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved 240.0.0.0/4 (with broadcast)",
    ),
];

/// The IPv6 ranges no call may reach, with their names. The forms that embed an IPv4 address
/// (mapped, compatible, translated) are judged by that address instead, in
/// [`non_public_range`].
const V6_RANGES: [(Ipv6Addr, u8, &str); 12] = [
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified ::"),
    (Ipv6Addr::LOCALHOST, 128, "loopback ::1"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        "NAT64 64:ff9b::/96",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local NAT64 64:ff9b:1::/48",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only 100::/64",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        "Teredo 2001::/32",
    ),
    (
        Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0),
        48,
        "benchmarking 2001:2::/48",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation 2001:db8::/32",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "6to4 2002::/16",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation 3fff::/20",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique-local fc00::/7",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        9,
        "link-local or site-local fe80::/9",
    ),
];

/// The address ranges refused besides [`V6_RANGES`]: multicast is checked by its first byte.
const V6_MULTICAST: &str = "multicast ff00::/8";

/// The non-public range an address is in, named (`"loopback 127.0.0.0/8"`), or `None` for a
/// public address. Refused: IPv4 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
/// 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24,
/// multicast 224/4, 240/4 (with broadcast); IPv6 `::`, `::1`, NAT64 (64:ff9b::/96,
/// 64:ff9b:1::/48), 100::/64, Teredo (2001::/32), 2001:2::/48, documentation (2001:db8::/32,
/// 3fff::/20), 6to4 (2002::/16), unique-local (fc00::/7), link- and site-local (fe80::/9),
/// multicast (ff00::/8); and the IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) and IPv4-translated (`::ffff:0:a.b.c.d`) forms whose embedded IPv4 address
/// is refused.
pub fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            V4_RANGES
                .iter()
                .find(|(base, len, _)| prefix_matches(n.into(), u32::from(*base).into(), *len, 32))
                .map(|(_, _, name)| *name)
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            if let Some((_, _, name)) = V6_RANGES
                .iter()
                .find(|(base, len, _)| prefix_matches(n, u128::from(*base), *len, 128))
            {
                return Some(name);
            }
            if v6.segments()[0] & 0xff00 == 0xff00 {
                return Some(V6_MULTICAST);
            }
            // ::a.b.c.d (compatible), ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated).
            let high = n >> 32;
            if high == 0 || high == 0xffff || high == 0xffff_0000 {
                let v4 = Ipv4Addr::from((n & 0xffff_ffff) as u32);
                return non_public_range(IpAddr::V4(v4));
            }
            None
        }
    }
}

/// Whether the first `len` of `bits` bits of `n` and `base` agree.
fn prefix_matches(n: u128, base: u128, len: u8, bits: u32) -> bool {
    let shift = bits - u32::from(len);
    shift >= bits || (n >> shift) == (base >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        let table = [
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true), // link-local: cloud metadata
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("255.255.255.255", true), // broadcast
            ("240.0.0.1", true),
            ("239.255.255.250", true), // multicast
            ("224.0.0.1", true),
            ("223.255.255.255", false),
            ("192.0.2.1", true), // documentation
            ("198.51.100.7", true),
            ("203.0.113.9", true),
            ("192.0.0.8", true), // IETF protocol assignments
            ("192.0.1.1", false),
            ("192.88.99.1", true),
            ("198.18.0.1", true), // benchmarking
            ("198.19.255.255", true),
            ("198.20.0.0", false),
            ("198.17.255.255", false),
            ("100.64.0.1", true), // carrier-grade NAT
            ("100.127.255.255", true),
            ("100.63.255.255", false),
            ("100.128.0.0", false),
            ("8.8.8.8", false),
            ("93.184.216.34", false),
            ("::1", true),
            ("::", true),
            ("fc00::1", true), // unique local
            ("fd12:3456::1", true),
            ("fe80::1", true), // link-local
            ("febf::1", true),
            ("fec0::1", true), // site-local (deprecated)
            ("ff02::1", true), // multicast
            ("ff0e::1", true),
            ("::ffff:127.0.0.1", true), // v4-mapped
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("::127.0.0.1", true), // v4-compatible
            ("::10.0.0.1", true),
            ("::8.8.8.8", false),
            ("::ffff:0:127.0.0.1", true), // v4-translated
            ("64:ff9b::7f00:1", true),    // NAT64
            ("64:ff9b::808:808", true),   // NAT64, even to a public v4
            ("64:ff9b:1::1", true),
            ("2002:7f00:1::", true), // 6to4
            ("2002:808:808::1", true),
            ("2001::1", true), // Teredo
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", true),
            ("2001:db8::1", true), // documentation
            ("3fff::1", true),
            ("100::1", true),
            ("2001:2::1", true),
            ("2001:4860:4860::8888", false),
            ("2606:4700::1111", false),
        ];
        for (ip, refused) in table {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(is_private(parsed), refused, "{ip}");
        }
        assert_eq!(
            non_public_range("::ffff:169.254.169.254".parse().unwrap()),
            Some("link-local 169.254.0.0/16")
        );
    }

    fn policy(allowed: &[&str], allow_private_networks: bool) -> Destinations {
        Destinations {
            allowed: allowed
                .iter()
                .map(|s| AllowedDestination::parse(s).unwrap())
                .collect(),
            allow_private_networks,
        }
    }

    fn verdict(policy: &Destinations, url: &str) -> Result<(), &'static str> {
        policy.check(url).map_err(|e| match e {
            DestinationError::NotAUrl { .. } => "url",
            DestinationError::Refused { .. } => "refused",
            DestinationError::NotAllowed { .. } => "allowed",
            DestinationError::Private { .. } => "private",
        })
    }

    #[test]
    fn destinations() {
        let open = policy(&[], false);
        let partner = policy(
            &["https://api.partner.example/v1/", "Hooks.Example.com"],
            false,
        );
        let private_ok = policy(&[], true);
        let table: &[(&Destinations, &str, Result<(), &str>)] = &[
            (&open, "https://example.com/x", Ok(())),
            (&open, "http://8.8.8.8/x", Ok(())),
            (&open, "http://127.0.0.1:8080/x", Err("private")),
            (&open, "http://0x7f.1/x", Err("private")), // 127.0.0.1 written in hex
            (&open, "http://2130706433/x", Err("private")), // 127.0.0.1 as a number
            (&open, "http://0.0.0.0:80/x", Err("private")),
            (&open, "http://10.0.0.5/x", Err("private")),
            (&open, "http://100.100.0.1/x", Err("private")),
            (&open, "http://198.18.0.1/x", Err("private")),
            (&open, "http://192.0.0.1/x", Err("private")),
            (&open, "http://240.1.2.3/x", Err("private")),
            (&open, "http://255.255.255.255/x", Err("private")),
            (&open, "http://224.0.0.251/x", Err("private")),
            (&open, "http://[fd00::1]/x", Err("private")),
            (&open, "http://[fe80::1]/x", Err("private")),
            (&open, "http://[ff02::1]/x", Err("private")),
            (&open, "http://[::ffff:192.168.0.1]/x", Err("private")),
            (&open, "http://[::127.0.0.1]/x", Err("private")),
            (&open, "http://[64:ff9b::a9fe:a9fe]/x", Err("private")),
            (&open, "http://[2002:a9fe:a9fe::]/x", Err("private")),
            (&open, "http://[2001:0:1:2::3]/x", Err("private")),
            (&open, "http://localhost/x", Err("private")),
            (&open, "http://localhost./x", Err("private")),
            (&open, "http://api.LOCALHOST/x", Err("private")),
            (&open, "not a url", Err("url")),
            (&open, "ftp://example.com/x", Err("refused")),
            (&open, "https://user:pw@example.com/x", Err("refused")),
            (&partner, "https://api.partner.example/v1/orders", Ok(())),
            (&partner, "https://api.partner.example/v1", Ok(())),
            (&partner, "https://API.Partner.Example./v1/x", Ok(())),
            (&partner, "https://api.partner.example:443/v1/x", Ok(())),
            (
                &partner,
                "https://api.partner.example/v1/orders?x=1",
                Ok(()),
            ),
            (
                &partner,
                "https://api.partner.example/v2/orders",
                Err("allowed"),
            ),
            (&partner, "https://api.partner.example/v10", Err("allowed")),
            // Path traversal is resolved before the comparison.
            (
                &partner,
                "https://api.partner.example/v1/../admin",
                Err("allowed"),
            ),
            (
                &partner,
                "https://api.partner.example/v1/%2e%2e/admin",
                Err("allowed"),
            ),
            (
                &partner,
                "https://api.partner.example/v1/..%2fadmin",
                Err("allowed"),
            ),
            (
                &partner,
                "https://api.partner.example/v1\\..\\admin",
                Err("allowed"),
            ),
            // The host is compared whole, not as a prefix of the URL.
            (
                &partner,
                "https://api.partner.example.evil.test/v1/x",
                Err("allowed"),
            ),
            (
                &partner,
                "https://api.partner.example@evil.test/v1/x",
                Err("refused"),
            ),
            (
                &partner,
                "https://api.partner.example:pw@evil.test/v1/x",
                Err("refused"),
            ),
            // Scheme and port count.
            (
                &partner,
                "http://api.partner.example/v1/orders",
                Err("allowed"),
            ),
            (
                &partner,
                "https://api.partner.example:8443/v1/orders",
                Err("allowed"),
            ),
            (&partner, "https://HOOKS.example.com/anything", Ok(())),
            (
                &partner,
                "http://hooks.example.com/anything",
                Err("allowed"),
            ),
            (
                &partner,
                "https://hooks.example.com:444/anything",
                Err("allowed"),
            ),
            (&partner, "https://other.example.com/", Err("allowed")),
            (&private_ok, "http://localhost:9000/x", Ok(())),
        ];
        for (policy, url, expected) in table {
            assert_eq!(verdict(policy, url), *expected, "{url}");
        }
    }

    #[test]
    fn wildcards_cover_names_under_a_suffix_only() {
        let under = policy(&["https://*.partner.example:8443/hooks"], false);
        for (url, expected) in [
            ("https://a.partner.example:8443/hooks/1", Ok(())),
            ("https://a.b.partner.example:8443/hooks", Ok(())),
            ("https://partner.example:8443/hooks", Err("allowed")),
            ("https://apartner.example:8443/hooks", Err("allowed")),
            (
                "https://a.partner.example.evil.test:8443/hooks",
                Err("allowed"),
            ),
            ("https://a.partner.example/hooks", Err("allowed")),
            ("https://a.partner.example:8443/other", Err("allowed")),
        ] {
            assert_eq!(verdict(&under, url), expected, "{url}");
        }
    }

    #[test]
    fn entries_are_parsed_and_bad_ones_named() {
        let parsed = |s: &str| AllowedDestination::parse(s).unwrap();
        let bare = parsed("api.partner.example");
        assert_eq!(
            (bare.scheme.as_str(), bare.port, bare.path.as_str()),
            ("https", 443, "")
        );
        assert_eq!(bare.host, HostRule::Exact("api.partner.example".into()));
        let full = parsed("HTTP://API.Partner.Example.:8080/v1/./x/../y/");
        assert_eq!(
            (full.scheme.as_str(), full.port, full.path.as_str()),
            ("http", 8080, "/v1/y")
        );
        assert_eq!(full.host, HostRule::Exact("api.partner.example".into()));
        assert_eq!(
            parsed("*.partner.example").host,
            HostRule::Under(".partner.example".into())
        );
        assert_eq!(
            parsed("http://[::1]:9/").host,
            HostRule::Exact("[::1]".into())
        );
        assert_eq!(
            full.to_string(),
            "HTTP://API.Partner.Example.:8080/v1/./x/../y/"
        );
        for (entry, reason) in [
            ("", "empty"),
            ("ftp://files.example", "the scheme must be http or https"),
            ("https://", "not a URL"),
            ("https://a.*.example", "wildcard"),
            ("https://*example.com", "wildcard"),
            ("*.com", "too broad"),
            ("https://*.10.0.0.1", "needs a host name"),
            ("https://user@a.example", "credentials"),
            ("https://user:pw@a.example/v1", "credentials"),
            ("https://a.example/?x=1", "query"),
            ("https://a.example/#top", "fragment"),
            ("https://a example", "not a URL"),
        ] {
            let err = AllowedDestination::parse(entry).unwrap_err();
            let shown = without_userinfo(entry);
            assert!(
                err.starts_with(&format!("{shown:?} is not a valid destination: "))
                    && err.contains(reason),
                "{entry:?}: {err}"
            );
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[test]
    fn entries_read_and_write_as_their_text() {
        let entries: Vec<AllowedDestination> =
            serde_json::from_str(r#"["https://a.example/v1", "*.b.example"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&entries).unwrap(),
            r#"["https://a.example/v1","*.b.example"]"#
        );
        let err = serde_json::from_str::<Vec<AllowedDestination>>(r#"["gopher://x"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"gopher://x\" is not a valid destination"),
            "{err}"
        );
    }

    #[test]
    fn the_allowlist_does_not_open_private_networks() {
        let local = policy(&["http://localhost", "http://10.0.0.1/"], false);
        for url in ["http://localhost/x", "http://10.0.0.1/x"] {
            assert!(
                matches!(local.check(url), Err(DestinationError::Private { .. })),
                "{url}"
            );
        }
        assert_eq!(
            policy(&["http://localhost"], true).check("http://localhost/x"),
            Ok(())
        );
    }

    #[test]
    fn messages_are_the_reasons_the_service_reports() {
        let open = Destinations::default();
        assert_eq!(
            open.check("nope").unwrap_err().to_string(),
            "\"nope\" is not a URL after templating: relative URL without a base"
        );
        assert_eq!(
            policy(&["a.example"], false)
                .check("https://b.example/x?token=secret")
                .unwrap_err()
                .to_string(),
            "https://b.example/x is not in the allowed destinations (api.allowed)"
        );
        assert_eq!(
            open.check("http://127.0.0.1/").unwrap_err().to_string(),
            "http://127.0.0.1/ points at a loopback or private address (loopback 127.0.0.0/8), \
             refused (api.allow_private_networks)"
        );
        let creds = open
            .check("https://me:hunter2@example.com/")
            .unwrap_err()
            .to_string();
        assert!(!creds.contains("hunter2"), "{creds}");
    }
}
