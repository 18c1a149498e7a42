//! Where the engine may send a request a caller chose: the callback of a run.
//!
//! A `trigger` token must not turn the engine into a way into its own network (server-side
//! request forgery). A callback URI is therefore checked twice: when it is registered (an
//! `https` URL whose host resolves to public addresses only, else a 422 naming
//! `callBackUri`), and again when it is called, by a DNS resolver that refuses non-public
//! addresses, so that a name re-pointed at `127.0.0.1` after the check (DNS rebinding) gets
//! nowhere. Hosts an operator lists in `callback_allowed_hosts` skip both checks and may use
//! plain `http`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How long resolving a callback's host may take at registration.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The hosts a callback may reach besides public ones; made by `config`.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    /// Host names or addresses, lowercase, as they appear in a URL (`127.0.0.1`,
    /// `hooks.internal`, `[::1]`).
    pub allowed_hosts: Arc<[String]>,
}

impl CallbackPolicy {
    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
    }

    /// Checks a callback URI as a caller gave it; the parsed URL, or why it is refused.
    pub async fn check(&self, uri: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(uri).map_err(|e| format!("is not a URL: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("has no host")?
            .to_string();
        if !url.username().is_empty() || url.password().is_some() {
            return Err("may not carry a user name or password".into());
        }
        if self.allows(&host) {
            return match url.scheme() {
                "http" | "https" => Ok(url),
                s => Err(format!("must be an http or https URL, not {s}")),
            };
        }
        if url.scheme() != "https" {
            return Err(format!(
                "must be an https URL (host `{host}` is not in callback_allowed_hosts)"
            ));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(a)) => vec![SocketAddr::new(IpAddr::V4(a), port)],
            Some(url::Host::Ipv6(a)) => vec![SocketAddr::new(IpAddr::V6(a), port)],
            _ => tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| format!("host `{host}` did not resolve within {RESOLVE_TIMEOUT:?}"))?
            .map_err(|e| format!("host `{host}` does not resolve: {e}"))?
            .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("host `{host}` does not resolve"));
        }
        if let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(format!(
                "host `{host}` resolves to {}, which is not a public address; an operator may \
                 list the host in callback_allowed_hosts",
                a.ip()
            ));
        }
        Ok(url)
    }

    /// The DNS resolver for calling callbacks: the system's, keeping public addresses only
    /// (every address for an allowed host).
    pub fn resolver(&self) -> Arc<PublicOnly> {
        Arc::new(PublicOnly {
            policy: self.clone(),
        })
    }

    /// Whether a URL may be called now: an address literal must be public (reqwest does not
    /// resolve literals, so the resolver cannot see them).
    pub fn may_call(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        if self.allows(host) {
            return true;
        }
        match url.host() {
            Some(url::Host::Ipv4(a)) => is_public(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => is_public(IpAddr::V6(a)),
            _ => url.scheme() == "https",
        }
    }
}

/// A resolver that drops non-public addresses (see the module's text).
#[derive(Debug)]
pub struct PublicOnly {
    policy: CallbackPolicy,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allowed = self.policy.allows(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allowed || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("`{host}` resolves to no public address").into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// Whether an address is reachable on the public internet: not loopback, private, shared,
/// link-local (cloud metadata lives there), documentation, benchmarking, multicast or
/// reserved. Written here because the standard library's `IpAddr::is_global` is still
/// unstable (rust-lang/rust#27709); the ranges are IANA's special-purpose registries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(a),
        },
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [b0, b1, b2, _] = a.octets();
    !(b0 == 0                                   // "this network"
        || a.is_loopback()                      // 127/8
        || a.is_private()                       // 10/8, 172.16/12, 192.168/16
        || a.is_link_local()                    // 169.254/16, metadata services
        || (b0 == 100 && (b1 & 0xc0) == 64)     // 100.64/10, shared address space
        || (b0 == 192 && b1 == 0 && b2 == 0)    // 192.0.0/24, protocol assignments
        || a.is_documentation()                 // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (b0 == 198 && (b1 & 0xfe) == 18)     // 198.18/15, benchmarking
        || a.is_multicast()                     // 224/4
        || b0 >= 240) // 240/4 reserved, and the broadcast address
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00             // fc00::/7 unique local (AWS metadata: fd00:ec2::254)
        || (s[0] & 0xffc0) == 0xfe80             // fe80::/10 link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8)    // 2001:db8::/32 documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b)    // 64:ff9b::/96 NAT64 (may reach private v4)
        || (s[0] == 0x2002)                      // 2002::/16 6to4 (embeds a v4 address)
        || s[..6] == [0, 0, 0, 0, 0, 0]) // ::/96, the deprecated v4-compatible form
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(
                !is_public(private.parse().unwrap()),
                "{private} taken as public"
            );
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                is_public(public.parse().unwrap()),
                "{public} taken as private"
            );
        }
    }

    #[tokio::test]
    async fn callbacks_go_to_public_https_urls_or_to_allowed_hosts() {
        let strict = CallbackPolicy::default();
        for (uri, why) in [
            ("http://93.184.215.14/cb", "https"),
            ("https://127.0.0.1/cb", "not a public address"),
            (
                "https://169.254.169.254/latest/meta-data",
                "not a public address",
            ),
            ("https://[::1]:8443/cb", "not a public address"),
            ("https://10.0.0.7/cb", "not a public address"),
            ("https://localhost/cb", "not a public address"),
            ("https://user:pw@93.184.215.14/cb", "user name"),
            ("ftp://93.184.215.14/cb", "https"),
            ("not a url", "not a URL"),
        ] {
            let err = strict.check(uri).await.unwrap_err();
            assert!(err.contains(why), "{uri}: {err}");
        }
        assert!(strict.check("https://93.184.215.14/cb?t=1").await.is_ok());

        let local = CallbackPolicy {
            allowed_hosts: vec!["127.0.0.1".to_string()].into(),
        };
        let url = local.check("http://127.0.0.1:9/cb").await.unwrap();
        assert!(local.may_call(&url));
        assert!(!strict.may_call(&url));
        assert!(local.check("https://10.0.0.7/cb").await.is_err());
        assert!(!strict.may_call(&reqwest::Url::parse("https://10.0.0.7/").unwrap()));
    }
}
