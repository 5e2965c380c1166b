//! Which pages may open the signaling socket. A browser sends `Origin` with every WebSocket
//! upgrade; a page of another site (or one reached through a DNS name rebound to this server)
//! must not join calls with its visitor's camera, nor be handed TURN credentials.
//!
//! Origins are compared as scheme, host and port, against the listen address's own names and
//! the `--allowed-origin` list; the upgrade's `Host` must name one of them too. Pure: the
//! server passes the headers in.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// `scheme://host:port`, host in lower case (IPv6 in brackets), port explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http://host[:port]` or `https://host[:port]` (no path: an origin).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("{text:?} is not an origin like https://call.example.com[:port]");
        let (https, rest) = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            _ => return Err(invalid()),
        };
        let (host, port) = parse_authority(rest).ok_or_else(invalid)?;
        Ok(Self { https, host, port: port.unwrap_or(if https { 443 } else { 80 }) })
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != self.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// `host[:port]` as in `Host` and origins: the host lower-cased, IPv6 kept in brackets.
fn parse_authority(text: &str) -> Option<(String, Option<u16>)> {
    let authority: axum::http::uri::Authority = text.parse().ok()?;
    let (host, port) = (authority.host(), authority.port_u16());
    // Exactly `host` or `host:port`: no user info, no empty or non-numeric port.
    let rebuilt = port.map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
    if host.is_empty() || !rebuilt.eq_ignore_ascii_case(text) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// The names a listen address is reached by: `localhost`, this machine's name (and its
/// `.local` mDNS form), loopback, and the address itself, or for `0.0.0.0`/`::` every
/// interface's address. IPv6 addresses without brackets.
pub(crate) fn listen_names(addr: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Some(host) = gethostname::gethostname().to_str().filter(|h| !h.is_empty() && *h != "localhost") {
        names.push(host.to_ascii_lowercase());
        if !host.contains('.') {
            names.push(format!("{}.local", host.to_ascii_lowercase()));
        }
    }
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    if addr.ip().is_unspecified() {
        ips.extend(if_addrs::get_if_addrs().unwrap_or_default().into_iter().map(|i| i.ip()));
    } else {
        ips.push(addr.ip());
    }
    for ip in ips {
        let ip = ip.to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

/// Who opened the socket, as far as the headers tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A page of an allowed origin.
    Page,
    /// No `Origin`: not a browser (a script, a load generator). It may signal, but gets no
    /// TURN credentials, which are for this site's pages.
    NotBrowser,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("more than one Origin header")]
    DuplicateOrigin,
    #[error("this origin may not open the signaling socket (see --allowed-origin)")]
    Origin,
    #[error("this Host is not a name of this server (see --allowed-origin)")]
    Host,
}

/// The origins whose pages may signal here, and so the hosts an upgrade may name.
#[derive(Clone, Debug)]
pub(crate) struct OriginPolicy {
    allowed: Vec<Origin>,
}

impl OriginPolicy {
    /// The server's own origins (`https` or not, each of `names` on `port`) and `extra`.
    pub(crate) fn new(https: bool, names: &[String], port: u16, extra: &[Origin]) -> Self {
        let own = names.iter().map(|name| {
            let host = if name.contains(':') { format!("[{name}]") } else { name.to_ascii_lowercase() };
            Origin { https, host, port }
        });
        Self { allowed: own.chain(extra.iter().cloned()).collect() }
    }

    /// Checks an upgrade's `Origin` headers (every one of them) and its `Host`.
    pub(crate) fn check<'a>(
        &self,
        origins: impl IntoIterator<Item = &'a [u8]>,
        host: Option<&[u8]>,
    ) -> Result<Caller, Refused> {
        let host = host.and_then(|h| std::str::from_utf8(h).ok()).and_then(parse_authority).ok_or(Refused::Host)?;
        let host_allowed = self
            .allowed
            .iter()
            .any(|o| o.host == host.0 && host.1.map_or(o.port == o.default_port(), |port| port == o.port));
        if !host_allowed {
            return Err(Refused::Host);
        }
        let mut origins = origins.into_iter();
        let Some(origin) = origins.next() else { return Ok(Caller::NotBrowser) };
        if origins.next().is_some() {
            return Err(Refused::DuplicateOrigin);
        }
        let origin = std::str::from_utf8(origin).ok().and_then(|o| Origin::parse(o).ok()).ok_or(Refused::Origin)?;
        if self.allowed.contains(&origin) {
            Ok(Caller::Page)
        } else {
            Err(Refused::Origin)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(https: bool, extra: &[&str]) -> OriginPolicy {
        let extra: Vec<Origin> = extra.iter().map(|o| Origin::parse(o).unwrap()).collect();
        OriginPolicy::new(https, &["localhost".into(), "127.0.0.1".into(), "::1".into()], 3000, &extra)
    }

    fn check(policy: &OriginPolicy, origins: &[&str], host: &str) -> Result<Caller, Refused> {
        policy.check(origins.iter().map(|o| o.as_bytes()), Some(host.as_bytes()))
    }

    #[test]
    fn origins_parse_to_scheme_host_and_port() {
        assert_eq!(Origin::parse("HTTPS://Call.Example.com").unwrap().to_string(), "https://call.example.com");
        assert_eq!(
            Origin::parse("https://call.example.com:443").unwrap(),
            Origin::parse("https://call.example.com").unwrap()
        );
        assert_eq!(Origin::parse("http://[::1]:3000").unwrap().to_string(), "http://[::1]:3000");
        for bad in [
            "call.example.com",
            "ftp://x",
            "https://",
            "https://a:b",
            "https://a/path",
            "https://u@a",
            "null",
            "https://a:",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sites_own_origins_pass_on_its_scheme_only() {
        let plain = policy(false, &[]);
        assert_eq!(check(&plain, &["http://127.0.0.1:3000"], "127.0.0.1:3000"), Ok(Caller::Page));
        assert_eq!(check(&plain, &["http://localhost:3000"], "localhost:3000"), Ok(Caller::Page));
        assert_eq!(check(&plain, &["http://[::1]:3000"], "[::1]:3000"), Ok(Caller::Page));
        assert_eq!(check(&plain, &["https://127.0.0.1:3000"], "127.0.0.1:3000"), Err(Refused::Origin));
        assert_eq!(check(&plain, &["http://127.0.0.1:3001"], "127.0.0.1:3000"), Err(Refused::Origin));
        assert_eq!(check(&plain, &[], "127.0.0.1:3000"), Ok(Caller::NotBrowser));
        let tls = policy(true, &[]);
        assert_eq!(check(&tls, &["https://localhost:3000"], "localhost:3000"), Ok(Caller::Page));
        assert_eq!(check(&tls, &["http://localhost:3000"], "localhost:3000"), Err(Refused::Origin));
    }

    #[test]
    fn rebinding_foreign_duplicate_and_null_origins_are_refused() {
        let plain = policy(false, &[]);
        assert_eq!(check(&plain, &["http://evil.example"], "evil.example"), Err(Refused::Host));
        assert_eq!(check(&plain, &[], "evil.example:3000"), Err(Refused::Host));
        assert_eq!(check(&plain, &["http://evil.example"], "127.0.0.1:3000"), Err(Refused::Origin));
        assert_eq!(check(&plain, &["null"], "127.0.0.1:3000"), Err(Refused::Origin));
        let twice = ["http://127.0.0.1:3000", "http://evil.example"];
        assert_eq!(check(&plain, &twice, "127.0.0.1:3000"), Err(Refused::DuplicateOrigin));
        assert_eq!(plain.check([], None), Err(Refused::Host));
    }

    #[test]
    fn a_public_origin_behind_a_proxy_is_named_with_allowed_origin() {
        let behind = policy(false, &["https://call.example.com"]);
        assert_eq!(check(&behind, &["https://call.example.com"], "call.example.com"), Ok(Caller::Page));
        assert_eq!(check(&behind, &["https://call.example.com"], "call.example.com:443"), Ok(Caller::Page));
        assert_eq!(check(&behind, &["http://call.example.com"], "call.example.com"), Err(Refused::Origin));
        assert_eq!(check(&behind, &["https://call.example.com"], "call.example.com:8443"), Err(Refused::Host));
    }

    #[test]
    fn a_listen_address_is_named_by_loopback_and_its_own_addresses() {
        let names = listen_names("192.0.2.7:3443".parse().unwrap());
        assert_eq!(names[0], "localhost");
        for ip in ["127.0.0.1", "::1", "192.0.2.7"] {
            assert!(names.iter().any(|n| n == ip), "{ip} in {names:?}");
        }
        let everywhere = listen_names("0.0.0.0:3443".parse().unwrap());
        assert!(everywhere.iter().any(|n| n == "127.0.0.1"));
        assert!(!everywhere.iter().any(|n| n == "0.0.0.0"), "{everywhere:?}");
    }
}
