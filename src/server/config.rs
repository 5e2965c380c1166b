//! Server settings, from flags and environment variables (see `duo --help`).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Parser;

use crate::server::origin::Origin;

/// `--media`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MediaMode {
    /// Browser to browser, every room.
    Mesh,
    /// Through the forwarding unit, every room.
    Sfu,
    /// Browser to browser up to [`MESH_MOVE_AT`] people; a room moves to the forwarding unit
    /// when one more joins, and stays there until it empties.
    Auto,
}

impl MediaMode {
    /// As the flag spells it (and the scripts of rooms shared over Redis read it).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MediaMode::Mesh => "mesh",
            MediaMode::Sfu => "sfu",
            MediaMode::Auto => "auto",
        }
    }
}

/// `--media-tcp-addr`: where ICE-TCP listens, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaTcp {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for MediaTcp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            _ => s.parse().map(Self::At).map_err(|_| format!("`{s}` is neither an address (IP:PORT) nor `off`")),
        }
    }
}

/// Under `--media auto`, the most people a room holds browser to browser.
pub(crate) const MESH_MOVE_AT: usize = 4;

#[derive(Debug, Clone, Parser)]
#[command(name = "duo", version, about = "Small video calls: web app and signaling server")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LEPTOS_SITE_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Serve HTTPS (and `wss://`) with this certificate: a PEM file, leaf first, the rest of
    /// the chain may follow. Read again on SIGHUP and when the file changes, so a renewed
    /// certificate needs no restart.
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Serve HTTPS with a certificate made at start for localhost, this machine's name and the
    /// listen address's IPs: the quick way to call between two machines on a LAN (each
    /// browser warns once; compare the SHA-256 fingerprint the log shows).
    #[arg(long)]
    pub(crate) tls_self_signed: bool,

    /// Where `/metrics` (Prometheus) is served: a separate address for operators, never the
    /// public one. Port 0 picks a free port (logged).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub(crate) metrics_addr: SocketAddr,

    /// Log filter, in tracing's `EnvFilter` syntax (e.g. `info` or `duo=debug,info`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// A public origin (e.g. `https://call.example.com`, as the browser's address bar shows it)
    /// whose pages may open the signaling WebSocket. Without it only the listen address's own
    /// names may: loopback, and for 0.0.0.0 or :: this machine's addresses and host name. Name
    /// the public address here when serving behind a reverse proxy. Repeatable.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub(crate) allowed_origins: Vec<Origin>,

    /// The address of a reverse proxy in front of this server (e.g. `127.0.0.1`): for its
    /// requests the client's address is taken from `X-Forwarded-For`, so per-address limits
    /// count clients, not the proxy. Repeatable.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub(crate) trusted_proxies: Vec<IpAddr>,

    /// Open connections (of any kind) the server holds at most; more are closed at once. Also
    /// raises the process's open-file limit to fit, where the hard limit allows.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub(crate) max_connections: u32,

    /// New connections (of any kind) per second one client address may open, in bursts of four
    /// times as many; past it, a connection is closed at once, before any HTTP or TLS work.
    /// Connections from a --trusted-proxy are not counted here.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) connections_per_second_per_client: u32,

    /// Connections (of any kind) one client address may hold open; past it, a new one is
    /// closed at once. Connections from a --trusted-proxy are not counted here.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) max_connections_per_client: u32,

    /// Signaling sockets one client address (an IPv4 address or an IPv6 /64) may hold open.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_sockets_per_client: u32,

    /// Signaling sockets one client address may open per minute (bursts of as many): a call
    /// opens one, a reconnect another; a loop of reconnects gets HTTP 429.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub(crate) sockets_per_minute_per_client: u32,

    /// Seconds a client has to send a request's headers (and, on a kept-alive connection, the
    /// next request's; an HTTP/2 connection with no request in progress, likewise its next
    /// request); slower connections are closed.
    #[arg(long, default_value = "10", value_parser = seconds_in(0.1, 3600.0))]
    pub(crate) header_timeout: Duration,

    /// How many people a call room holds: 2 to 50 (default 25) when media may go through the
    /// server; at most 8 (default 4) with `--media mesh`, where each sends to and receives from
    /// every other (docs/protocol.md).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=50))]
    pub(crate) max_room_size: Option<u8>,

    /// How each room's media travels: `mesh`, browser to browser; `sfu`, through this server's
    /// forwarding unit, each person sending once; `auto`, browser to browser up to four people,
    /// through the server from the fifth on. With `--redis`, every instance must say the same.
    #[arg(long, value_enum, default_value_t = MediaMode::Auto)]
    pub(crate) media: MediaMode,

    /// The UDP address the forwarding unit listens on (default: `--addr`'s address and port,
    /// over UDP: one number to open in a firewall).
    #[arg(long, value_name = "ADDR")]
    pub(crate) media_addr: Option<SocketAddr>,

    /// The address browsers reach the media socket at, where it is not the one it binds: a
    /// server behind NAT, or one that binds every interface (as coturn's `external-ip`).
    #[arg(long, value_name = "IP")]
    pub(crate) media_public_ip: Option<IpAddr>,

    /// The TCP address the forwarding unit also listens on, for browsers on networks that block
    /// UDP (ICE-TCP), or `off` (default: the media address with the next port number, 3001/tcp
    /// beside 3000/udp, or any free port when the media port is 0; if that is taken, the server
    /// starts without ICE-TCP and says so).
    #[arg(long, value_name = "ADDR|off")]
    pub(crate) media_tcp_addr: Option<MediaTcp>,

    /// Why `auto` became `mesh`, for the log.
    #[arg(skip)]
    pub(crate) media_note: Option<&'static str>,

    /// MiB of signaling frames that may wait, over all connections, for peers that read slowly.
    /// Past it, a peer with more than 64 KiB waiting is dropped as too slow (4002) rather than
    /// queue more.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(crate) max_queued_mib: u32,

    /// A STUN or TURN server URL handed to browsers (e.g. `stun:stun.example.com:3478`). Repeatable.
    #[arg(long = "ice-server", value_name = "URL")]
    pub(crate) ice_servers: Vec<String>,

    /// The secret shared with a TURN server running coturn's `use-auth-secret`; browsers get
    /// only credentials derived from it, for `turn:`/`turns:` URLs. Prefer the environment
    /// variable or `--turn-secret-file`: flags show up in process lists.
    #[arg(long, env = "DUO_TURN_SECRET", hide_env_values = true, conflicts_with = "turn_secret_file")]
    pub(crate) turn_secret: Option<String>,

    /// A file holding the TURN secret (surrounding whitespace is ignored).
    #[arg(long, value_name = "PATH")]
    pub(crate) turn_secret_file: Option<std::path::PathBuf>,

    /// Seconds a TURN credential stays valid (60 to 604800). coturn refuses to refresh an
    /// allocation with an expired credential, so this bounds a relayed call between two
    /// reconnects; a reconnect gets fresh credentials.
    #[arg(long, default_value = "3600", value_parser = seconds_in(60.0, 604_800.0))]
    pub(crate) turn_credential_lifetime: Duration,

    /// TURN credentials one client address may be given per hour (bursts of as many); past
    /// it, `WELCOME` offers no TURN server. Only pages that pass the Origin check get any.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) turn_credentials_per_client: u32,

    /// Make every browser use relayed (TURN) paths only, so neither side learns the other's
    /// address. Needs a TURN server in --ice-server.
    #[arg(long)]
    pub(crate) relay_only: bool,

    /// Sustained frames per second one signaling socket may send (of any kind; a frame costs
    /// one per KiB begun); bursts of four times this are allowed. Far above a real ICE
    /// trickle; raise it only for load tests.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000_000))]
    pub(crate) rate_limit: u32,

    /// On SIGTERM, seconds to keep serving with `/readyz` failing (so a load balancer stops
    /// sending new calls here) before closing the signaling sockets (0 to 3600).
    #[arg(long, default_value = "0", value_parser = seconds_in(0.0, 3600.0))]
    pub(crate) shutdown_grace: Duration,

    /// Share rooms with other instances through this Redis (`redis://[:password@]host[:port][/db]`),
    /// so that the people of a call may reach different instances behind a load balancer
    /// (docs/deploy.md). Every instance needs the same --max-room-size. Without it, this
    /// process alone holds its rooms.
    #[arg(long, env = "DUO_REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub(crate) redis: Option<crate::server::hub::RedisSettings>,

    /// Seconds of silence (no frame, not even a pong) after which a peer is dropped (1 to 86400).
    #[arg(long, default_value = "30", value_parser = seconds_in(1.0, 86_400.0))]
    pub(crate) idle_timeout: Duration,
}

/// The most people a mesh room holds: each browser encodes one video for each other person.
pub(crate) const MESH_ROOM_SIZE: u8 = 8;

impl Config {
    /// How many people a room holds (`--max-room-size`, or its default for the media mode).
    pub(crate) fn room_size(&self) -> u8 {
        self.max_room_size.unwrap_or(if self.media == MediaMode::Mesh { 4 } else { 25 })
    }

    /// The flags, with those that only make sense together checked (clap's error, for its exit),
    /// and `auto` resolved.
    pub fn checked(mut self) -> Result<Self, clap::Error> {
        use clap::CommandFactory;
        let wildcard = self.media_udp_addr().ip().is_unspecified() && self.media_public_ip.is_none();
        if self.media == MediaMode::Auto && wildcard {
            // On every interface, the address browsers should send media to is not known.
            self.media = MediaMode::Mesh;
            self.media_note =
                Some("rooms stay browser to browser: say with --media-public-ip which address browsers send media to");
        }
        if self.media == MediaMode::Mesh && self.room_size() > MESH_ROOM_SIZE {
            let message = format!(
                "--max-room-size {} needs media through the server (--media sfu or auto): a mesh room holds at most {MESH_ROOM_SIZE}",
                self.room_size()
            );
            return Err(Self::command().error(clap::error::ErrorKind::ArgumentConflict, message));
        }
        Ok(self)
    }

    /// Where the media socket binds: `--media-addr`, or `--addr` over UDP.
    pub(crate) fn media_udp_addr(&self) -> SocketAddr {
        self.media_addr.unwrap_or(self.addr)
    }

    /// Where ICE-TCP listens, if it does (`--media-tcp-addr`, or its default).
    pub(crate) fn media_tcp_listen(&self) -> Option<SocketAddr> {
        match self.media_tcp_addr {
            Some(MediaTcp::Off) => None,
            Some(MediaTcp::At(address)) => Some(address),
            None => {
                let udp = self.media_udp_addr();
                let port = if udp.port() == 0 { 0 } else { udp.port().checked_add(1)? };
                Some(SocketAddr::new(udp.ip(), port))
            }
        }
    }

    /// The TURN secret from the flag, the environment or the file.
    pub(crate) fn turn_secret(&self) -> std::io::Result<Option<String>> {
        match (&self.turn_secret, &self.turn_secret_file) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(path)) => Ok(Some(std::fs::read_to_string(path)?.trim().to_owned())),
            (None, None) => Ok(None),
        }
    }
}

/// A number of seconds from `min` to `max`: a clear error for anything else, never a panic.
fn seconds_in(min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s| match s.parse::<f64>() {
        Ok(seconds) if (min..=max).contains(&seconds) => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("must be a number of seconds from {min} to {max}")),
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, compared by scheme, host and port.
fn parse_origin(s: &str) -> Result<Origin, String> {
    Origin::parse(s.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("duo").chain(args.iter().copied()))?.checked()
    }

    #[test]
    fn rooms_above_eight_need_the_forwarding_unit() {
        let error = parse(&["--max-room-size", "9", "--media", "mesh"]).unwrap_err().to_string();
        assert!(error.contains("--max-room-size 9 needs media through the server"), "{error}");
        assert_eq!(parse(&["--max-room-size", "8", "--media", "mesh"]).unwrap().room_size(), 8);
        assert_eq!(parse(&["--media", "mesh"]).unwrap().room_size(), 4);
        assert_eq!(parse(&["--max-room-size", "25", "--media", "sfu"]).unwrap().room_size(), 25);
        // Shared over Redis, rooms move to the server too.
        let shared = parse(&["--redis", "redis://127.0.0.1"]).unwrap();
        assert_eq!((shared.media, shared.room_size()), (MediaMode::Auto, 25));
        assert_eq!(parse(&["--media", "sfu", "--redis", "redis://127.0.0.1"]).unwrap().media, MediaMode::Sfu);
        // One on every interface that does not say where browsers send media.
        let everywhere = parse(&["--addr", "0.0.0.0:443"]).unwrap();
        assert_eq!((everywhere.media, everywhere.room_size()), (MediaMode::Mesh, 4));
        assert!(everywhere.media_note.unwrap().contains("--media-public-ip"));
        let told = parse(&["--addr", "0.0.0.0:443", "--media-public-ip", "203.0.113.5"]).unwrap();
        assert_eq!(told.media, MediaMode::Auto);
        assert!(parse(&["--max-room-size", "51", "--media", "sfu"]).is_err());
    }

    #[test]
    fn ice_tcp_listens_on_the_next_port_unless_told() {
        let listen = |args: &[&str]| parse(args).unwrap().media_tcp_listen();
        assert_eq!(listen(&["--addr", "127.0.0.1:3000"]), Some("127.0.0.1:3001".parse().unwrap()));
        assert_eq!(
            listen(&["--addr", "127.0.0.1:3000", "--media-addr", "10.0.0.2:4000"]),
            Some("10.0.0.2:4001".parse().unwrap())
        );
        assert_eq!(listen(&["--addr", "127.0.0.1:0"]), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(listen(&["--media-tcp-addr", "10.0.0.2:443"]), Some("10.0.0.2:443".parse().unwrap()));
        assert_eq!(listen(&["--media-tcp-addr", "off"]), None);
        let error = parse(&["--media-tcp-addr", "on"]).unwrap_err().to_string();
        assert!(error.contains("`on` is neither an address (IP:PORT) nor `off`"), "{error}");
    }

    #[test]
    fn defaults_listen_on_loopback_port_3000() {
        // Only meaningful when the variable is not set in the test's environment.
        if std::env::var_os("LEPTOS_SITE_ADDR").is_none() {
            let config = parse(&[]).unwrap();
            assert_eq!(config.addr, "127.0.0.1:3000".parse().unwrap());
        }
        let config = parse(&[]).unwrap();
        assert_eq!(config.rate_limit, 50);
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        assert!(config.allowed_origins.is_empty());
        assert!(config.tls_cert.is_none() && !config.tls_self_signed);
        assert_eq!(config.metrics_addr, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(config.turn_credential_lifetime, Duration::from_secs(3600));
        assert_eq!(config.media, MediaMode::Auto);
        assert_eq!(config.room_size(), 25, "rooms of 25, through the server from the fifth person");
    }

    #[test]
    fn tls_takes_a_certificate_and_key_or_makes_its_own() {
        let config = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(config.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("k.pem")));
        assert!(parse(&["--tls-self-signed"]).unwrap().tls_self_signed);
        // A certificate needs its key, and the two sources exclude each other.
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--tls-self-signed", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_err());
    }

    #[test]
    fn flags_override_and_repeat() {
        let config = parse(&[
            "--addr",
            "0.0.0.0:8080",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
            "--ice-server",
            "stun:127.0.0.1:3478",
            "--idle-timeout",
            "1.5",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(config.addr, "0.0.0.0:8080".parse().unwrap());
        let origins: Vec<String> = config.allowed_origins.iter().map(Origin::to_string).collect();
        assert_eq!(origins, ["https://a.example", "https://b.example"]);
        assert_eq!(config.ice_servers, ["stun:127.0.0.1:3478"]);
        assert_eq!(config.idle_timeout, Duration::from_millis(1500));
        assert_eq!(config.log_level, "debug");
    }

    #[test]
    fn the_turn_secret_comes_from_the_flag_or_a_file() {
        let path = std::env::temp_dir().join(format!("duo-turn-secret-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let config = parse(&["--turn-secret-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(config.turn_secret().unwrap().as_deref(), Some("from-file"));
        std::fs::remove_file(&path).unwrap();
        let config = parse(&["--turn-secret", "from-flag", "--relay-only"]).unwrap();
        assert_eq!(config.turn_secret().unwrap().as_deref(), Some("from-flag"));
        assert!(config.relay_only);
        assert!(parse(&["--turn-secret", "a", "--turn-secret-file", "b"]).is_err());
        assert!(parse(&["--turn-secret-file", "/no/such/file"]).unwrap().turn_secret().is_err());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert!(parse(&["--addr", "nowhere"]).is_err());
        assert!(parse(&["--idle-timeout", "soon"]).is_err());
        assert!(parse(&["--rate-limit", "-1"]).is_err());
        assert!(parse(&["--allowed-origin", "call.example.com"]).is_err());
        // Out of range, or values that would overflow a timer: refused with the range.
        for (flag, value) in [
            ("--idle-timeout", "0"),
            ("--idle-timeout", "1e-10"),
            ("--idle-timeout", "1e30"),
            ("--shutdown-grace", "1e300"),
            ("--shutdown-grace", "-0.5"),
            ("--turn-credential-lifetime", "1e30"),
            ("--turn-credential-lifetime", "NaN"),
            ("--header-timeout", "inf"),
            ("--rate-limit", "0"),
            ("--max-connections", "1"),
            ("--max-queued-mib", "0"),
        ] {
            let error = parse(&[&format!("{flag}={value}")]).expect_err(value).to_string();
            assert!(error.contains(flag), "{flag} {value}: {error}");
        }
        assert!(parse(&["--idle-timeout", "86400", "--shutdown-grace", "3600"]).is_ok());
    }
}
