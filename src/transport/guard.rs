//! SSRF guard: herald delivers to URLs that customers type in, from inside a TMS's network, so
//! by default it refuses every address that is not a public unicast address.
//!
//! The check runs on the addresses a name resolves to, at connect time, inside the HTTP client's
//! resolver ([`GuardedResolver`]) — so a name that resolves to a public address when the
//! endpoint is created and to 169.254.169.254 later (DNS rebinding) is still refused. Literal IP
//! URLs never reach a resolver and are checked directly ([`check_literal`]), also when a message
//! is accepted so the producer gets a 4xx at once.
//!
//! With an egress proxy configured, names sent through it are resolved by the proxy: herald then
//! checks literal addresses only, and the proxy is where egress is enforced. Hosts on the no-proxy
//! list are connected to directly and go through the resolver as usual.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which targets are allowed.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Allow every address (tests, trusted networks): `HERALD_ALLOW_PRIVATE_TARGETS=true`.
    pub allow_private: bool,
    /// Networks allowed even though they are private (e.g. an internal TMS at 10.1.2.0/24).
    pub allow: Vec<IpNet>,
}

/// A refused target; recognised by the client to make the attempt a non-retried `refused`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("target refused: {0}")]
pub struct ForbiddenTarget(pub String);

impl TargetPolicy {
    /// `None` when `ip` may be contacted, else why not.
    pub fn refuse(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private || self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        forbidden_range(ip)
    }
}

/// Why `ip` is refused and the setting that would allow it: a refusal the operator can act on.
/// `subject` leads up to the range: `10.0.0.1 is`, `db resolves to 10.0.0.1, which is`.
fn refusal(subject: &str, ip: IpAddr, range: &str) -> String {
    let net = match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    };
    format!(
        "{subject} {range}; to allow it, set HERALD_ALLOW_PRIVATE_TARGETS=true or add {net} to \
         HERALD_ALLOW_CIDRS (allow_private_targets / allow_cidrs in herald.toml)"
    )
}

/// The special-purpose range `ip` falls in, if any.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space / CGNAT (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local, cloud metadata (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) => "documentation (192.0.2.0/24)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (198, 51, 100) => "documentation (198.51.100.0/24)",
        (203, 0, 113) => "documentation (203.0.113.0/24)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "IPv4-mapped address in a forbidden range");
    }
    let s = ip.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified (::)",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback (::1)",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (::/96, deprecated)",
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            return forbidden_v4(v4).map(|_| "NAT64 address of a forbidden IPv4 range");
        }
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)",
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            return forbidden_v4(v4).map(|_| "6to4 address of a forbidden IPv4 range");
        }
        [first, ..] if first & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [first, ..] if first & 0xffc0 == 0xfec0 => "site-local (fec0::/10, deprecated)",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

/// Checks a URL host that is a literal IP address (names are checked when resolved).
pub fn check_literal(policy: &TargetPolicy, url: &url::Url) -> Result<(), ForbiddenTarget> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    match policy.refuse(ip) {
        Some(range) => Err(ForbiddenTarget(refusal(&format!("{ip} is"), ip, range))),
        None => Ok(()),
    }
}

/// A resolver that drops forbidden addresses and fails when none is left.
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
    exempt: Option<String>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<TargetPolicy>) -> GuardedResolver {
        GuardedResolver {
            policy,
            exempt: None,
        }
    }

    /// Resolves `host` without checks: the configured egress proxy, chosen by the operator.
    pub fn exempt(mut self, host: &str) -> GuardedResolver {
        self.exempt = Some(host.to_ascii_lowercase());
        self
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        let exempt = self.exempt.as_deref() == Some(host.to_ascii_lowercase().as_str());
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if exempt {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.refuse(addr.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let why = resolved
                    .first()
                    .and_then(|a| {
                        let subject = format!("{host} resolves to {}, which is", a.ip());
                        policy.refuse(a.ip()).map(|r| refusal(&subject, a.ip(), r))
                    })
                    .unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(Box::new(ForbiddenTarget(why)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_addresses_are_refused_and_public_ones_accepted() {
        let refused = [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "2001:db8::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ];
        let accepted = [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        let policy = TargetPolicy::default();
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.refuse(ip).is_some(), "{ip} was accepted");
        }
        for ip in accepted {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.refuse(ip), None, "{ip} was refused");
        }
    }

    #[test]
    fn allow_lists_and_the_switch_open_private_ranges() {
        let internal: IpAddr = "10.1.2.3".parse().unwrap();
        let listed = TargetPolicy {
            allow_private: false,
            allow: vec!["10.1.2.0/24".parse().unwrap()],
        };
        assert_eq!(listed.refuse(internal), None);
        assert!(listed.refuse("10.1.3.1".parse().unwrap()).is_some());
        let open = TargetPolicy {
            allow_private: true,
            allow: vec![],
        };
        assert_eq!(open.refuse("169.254.169.254".parse().unwrap()), None);
    }

    #[test]
    fn literal_urls_are_checked_names_are_left_to_the_resolver() {
        let policy = TargetPolicy::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "https://169.254.169.254/latest",
        ] {
            let refused = check_literal(&policy, &url.parse().unwrap());
            let reason = refused.expect_err(url).to_string();
            assert!(
                reason.contains("HERALD_ALLOW_PRIVATE_TARGETS=true")
                    && reason.contains("HERALD_ALLOW_CIDRS"),
                "{reason}"
            );
        }
        for url in [
            "https://8.8.8.8/",
            "https://localhost/",
            "https://tms.example/",
        ] {
            assert!(
                check_literal(&policy, &url.parse().unwrap()).is_ok(),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let name = |s: &str| Name::from_str(s).unwrap();
        let guarded = GuardedResolver::new(Arc::new(TargetPolicy::default()));
        let err = guarded.resolve(name("localhost")).await.err().unwrap();
        // 127.0.0.1 or ::1, whichever the resolver lists first.
        let said = err.to_string();
        assert!(
            said.contains("localhost resolves to ") && said.contains(", which is loopback"),
            "{said}"
        );
        let open = GuardedResolver::new(Arc::new(TargetPolicy {
            allow_private: true,
            allow: vec![],
        }));
        let addrs: Vec<SocketAddr> = open.resolve(name("localhost")).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()));
    }

    use std::str::FromStr;
}
