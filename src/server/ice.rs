//! The ICE servers each browser is given in `WELCOME`, with short-lived TURN credentials.
//!
//! TURN credentials follow the TURN REST scheme that coturn implements with `use-auth-secret`:
//! username `expiry:peer_id` (expiry in Unix seconds), password
//! base64(HMAC-SHA1(secret, username)). The shared secret never leaves the server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::protocol::{IceServer, IceTransportPolicy, PeerId};

#[derive(Clone)]
pub(crate) struct IceConfig {
    /// STUN and TURN URLs, as given with `--ice-server`.
    pub(crate) urls: Vec<String>,
    /// The secret shared with the TURN server; without it TURN URLs get no credentials.
    pub(crate) turn_secret: Option<String>,
    pub(crate) credential_lifetime: Duration,
    pub(crate) transport_policy: IceTransportPolicy,
}

impl std::fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("urls", &self.urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<hidden>"))
            .field("credential_lifetime", &self.credential_lifetime)
            .field("transport_policy", &self.transport_policy)
            .finish()
    }
}

impl IceConfig {
    /// The `iceServers` for one peer: STUN URLs as they are, and with `turn`, TURN URLs with
    /// credentials that expire after the configured lifetime. Without credentials a TURN URL
    /// is left out (a browser refuses an `RTCIceServer` that names TURN without them).
    pub(crate) fn servers_for(&self, peer: PeerId, now: SystemTime, turn: bool) -> Vec<IceServer> {
        let (turn_urls, stun): (Vec<&String>, Vec<&String>) = self.urls.iter().partition(|url| is_turn(url));
        let mut servers = Vec::new();
        if !stun.is_empty() {
            servers.push(IceServer { urls: stun.into_iter().cloned().collect(), username: None, credential: None });
        }
        if let (true, Some(secret)) = (turn && !turn_urls.is_empty(), &self.turn_secret) {
            let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + self.credential_lifetime;
            let username = format!("{}:{}", expiry.as_secs(), peer.0);
            let credential = turn_password(secret, &username);
            let urls = turn_urls.into_iter().cloned().collect();
            servers.push(IceServer { urls, username: Some(username), credential: Some(credential) });
        }
        servers
    }

    /// Whether there is a TURN server to give credentials for.
    pub(crate) fn issues_turn_credentials(&self) -> bool {
        self.turn_secret.is_some() && self.urls.iter().any(|url| is_turn(url))
    }
}

fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

/// base64(HMAC-SHA1(secret, username)): the password a `use-auth-secret` TURN server expects.
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_known_vectors() {
        // Computed independently: printf USERNAME | openssl dgst -sha1 -hmac SECRET -binary | base64
        assert_eq!(turn_password("north", "1700000000:42"), "DWX3FI7DiPIpadEYQAZsnZBAagI=");
        assert_eq!(turn_password("correct horse battery staple", "1700003600:7"), "0VDRWRuScIDGRikIpEaF76Bct/c=");
    }

    fn config(secret: Option<&str>) -> IceConfig {
        IceConfig {
            urls: vec![
                "stun:127.0.0.1:3478".into(),
                "turn:127.0.0.1:3478?transport=udp".into(),
                "turns:t.example:5349".into(),
            ],
            turn_secret: secret.map(str::to_owned),
            credential_lifetime: Duration::from_secs(3600),
            transport_policy: IceTransportPolicy::All,
        }
    }

    #[test]
    fn turn_urls_get_expiring_per_peer_credentials_and_stun_urls_none() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let servers = config(Some("north")).servers_for(PeerId(42), now, true);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:127.0.0.1:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].urls, ["turn:127.0.0.1:3478?transport=udp", "turns:t.example:5349"]);
        assert_eq!(servers[1].username.as_deref(), Some("1700003600:42"));
        assert_eq!(servers[1].credential.as_deref(), Some(turn_password("north", "1700003600:42").as_str()));
        // Refused TURN, or no secret to make credentials with: STUN only.
        for (secret, turn) in [(Some("north"), false), (None, true)] {
            let servers = config(secret).servers_for(PeerId(42), now, turn);
            assert_eq!(servers.len(), 1);
            assert_eq!(servers[0].urls, ["stun:127.0.0.1:3478"]);
        }
        assert!(config(Some("north")).issues_turn_credentials() && !config(None).issues_turn_credentials());
    }

    #[test]
    fn the_secret_is_never_shown() {
        let config = config(Some("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        let servers = config.servers_for(PeerId(1), SystemTime::now(), true);
        assert!(!serde_json::to_string(&servers).unwrap().contains("hunter2"));
    }
}
