//! Where an outbound API call may go: the allowlist, and no loopback or private address unless
//! private networks are allowed (SSRF protection). Only the URL is looked at; the HTTP adapter
//! checks the addresses a host name resolves to again, with [`is_private`].

use std::net::IpAddr;

/// Where outbound API calls may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// URL prefixes (`https://api.partner.example/v1/`) or host names (`api.partner.example`)
    /// calls may go to. Empty: any host (private networks still need `allow_private_networks`).
    pub allowed: Vec<String>,
    /// Whether loopback and private addresses may be called (off: SSRF protection).
    pub allow_private_networks: bool,
}

/// Why a call may not go to a URL. The messages name the URL and the setting that decides.
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
    /// `allowed` is not empty and no entry matches.
    #[error("{url:?} is not in the allowed destinations (api.allowed)")]
    NotAllowed {
        /// The URL as rendered.
        url: String,
    },
    /// The host is loopback, private, `localhost` (or under it), or missing, and private
    /// networks are not allowed.
    #[error(
        "{url:?} points at a loopback or private address, refused (api.allow_private_networks)"
    )]
    Private {
        /// The URL as rendered.
        url: String,
    },
}

impl Destinations {
    /// Checks that a call may go to `raw_url`: it parses, it is in the allowlist when there is
    /// one (entries with `://` are URL prefixes, others host names compared without case), and
    /// its host is no loopback or private address, `localhost` or `*.localhost` (nor missing)
    /// unless `allow_private_networks`.
    pub fn check(&self, raw_url: &str) -> Result<(), DestinationError> {
        let url = url::Url::parse(raw_url).map_err(|reason| DestinationError::NotAUrl {
            url: raw_url.to_owned(),
            reason,
        })?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self.allowed.is_empty()
            && !self.allowed.iter().any(|entry| {
                if entry.contains("://") {
                    raw_url.starts_with(entry.as_str())
                } else {
                    host == entry.to_ascii_lowercase()
                }
            })
        {
            return Err(DestinationError::NotAllowed {
                url: raw_url.to_owned(),
            });
        }
        let private = match url.host() {
            Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().ends_with(".localhost")
            }
            None => true,
        };
        if private && !self.allow_private_networks {
            return Err(DestinationError::Private {
                url: raw_url.to_owned(),
            });
        }
        Ok(())
    }
}

/// Whether an address is loopback, private, link-local or otherwise not a public destination.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
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
            ("255.255.255.255", true),
            ("192.0.2.1", true),  // documentation
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
            ("fec0::1", false),
            ("::ffff:127.0.0.1", true), // v4-mapped
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("2001:4860:4860::8888", false),
        ];
        for (ip, private) in table {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(is_private(parsed), private, "{ip}");
        }
    }

    fn policy(allowed: &[&str], allow_private_networks: bool) -> Destinations {
        Destinations {
            allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
            allow_private_networks,
        }
    }

    #[test]
    fn destinations() {
        let open = policy(&[], false);
        let partner = policy(
            &["https://api.partner.example/v1/", "Hooks.Example.com"],
            false,
        );
        let private_ok = policy(&[], true);
        let table: [(&Destinations, &str, Result<(), &str>); 16] = [
            (&open, "https://example.com/x", Ok(())),
            (&open, "http://8.8.8.8/x", Ok(())),
            (&open, "http://127.0.0.1:8080/x", Err("private")),
            (&open, "http://10.0.0.5/x", Err("private")),
            (&open, "http://100.100.0.1/x", Err("private")),
            (&open, "http://[fd00::1]/x", Err("private")),
            (&open, "http://[fe80::1]/x", Err("private")),
            (&open, "http://[::ffff:192.168.0.1]/x", Err("private")),
            (&open, "http://localhost/x", Err("private")),
            (&open, "http://api.LOCALHOST/x", Err("private")),
            (&open, "not a url", Err("url")),
            (&partner, "https://api.partner.example/v1/orders", Ok(())),
            (
                &partner,
                "https://api.partner.example/v2/orders",
                Err("allowed"),
            ),
            (&partner, "https://HOOKS.example.com/anything", Ok(())),
            (&partner, "https://other.example.com/", Err("allowed")),
            (&private_ok, "http://localhost:9000/x", Ok(())),
        ];
        for (policy, url, expected) in table {
            let got = policy.check(url).map_err(|e| match e {
                DestinationError::NotAUrl { .. } => "url",
                DestinationError::NotAllowed { .. } => "allowed",
                DestinationError::Private { .. } => "private",
            });
            assert_eq!(got, expected, "{url}");
        }
    }

    #[test]
    fn the_allowlist_does_not_open_private_networks() {
        let local = policy(&["localhost", "http://10.0.0.1/"], false);
        for url in ["http://localhost/x", "http://10.0.0.1/x"] {
            assert!(
                matches!(local.check(url), Err(DestinationError::Private { .. })),
                "{url}"
            );
        }
        assert_eq!(
            policy(&["localhost"], true).check("http://localhost/x"),
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
                .check("https://b.example/")
                .unwrap_err()
                .to_string(),
            "\"https://b.example/\" is not in the allowed destinations (api.allowed)"
        );
        assert_eq!(
            open.check("http://127.0.0.1/").unwrap_err().to_string(),
            "\"http://127.0.0.1/\" points at a loopback or private address, refused \
             (api.allow_private_networks)"
        );
    }
}
