//! The call in the browser.
//!
//! - [`CallStatus`] and the page's other types are shared: the server renders them too.
//! - `machine`: every decision of a call, as pure code that takes inputs and returns effects.
//!   The browser runs it and plain `cargo test` reaches it; `stats` is its statistics arithmetic.
//! - The rest runs only in the browser (feature `hydrate`) and decides nothing: [`engine`]
//!   carries the machine's effects out and feeds back what happens; `peer` wraps one
//!   `RTCPeerConnection`, `socket` the signaling WebSocket, `media` the camera, microphone
//!   and screen. None of them touches the page: the engine reports through
//!   [`engine::CallEvents`].

#[cfg(feature = "hydrate")]
pub mod engine;
#[cfg(feature = "hydrate")]
mod js;
// The browser runs it; the tests reach it natively. The server has no use for it.
#[cfg(any(feature = "hydrate", test))]
pub(crate) mod machine;
#[cfg(feature = "hydrate")]
mod media;
#[cfg(feature = "hydrate")]
mod peer;
#[cfg(feature = "hydrate")]
mod socket;
#[cfg(any(feature = "hydrate", test))]
mod stats;

/// What to send when joining: the camera and microphone, or less when they are unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaChoice {
    CameraAndMicrophone,
    MicrophoneOnly,
    /// Send nothing; watch and listen only.
    Nothing,
}

/// A camera or microphone the browser offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub label: String,
    pub is_camera: bool,
}

/// What the person asks of a call in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallCommand {
    Microphone(bool),
    Camera(bool),
    ShareScreen(bool),
    Chat(String),
    /// This side's display name, as typed (empty: none).
    Name(String),
    UseDevice(Device),
    HangUp,
}

/// Another person in the call, as the page shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Remote {
    /// Names the connection to them: the page keys their tile by it.
    pub peer: u32,
    /// Their number in the call, in the order people came; it stays theirs.
    pub number: u32,
    /// Whether any of their tracks has arrived.
    pub receiving: bool,
    /// What they say they send.
    pub media: Option<crate::protocol::MediaState>,
    /// The name they chose.
    pub name: Option<String>,
    /// Whether they are speaking: not muted, and their audio was above the speaking level
    /// within the last second.
    pub speaking: bool,
}

impl Remote {
    /// What the page calls them: their own name; without one, "Guest N" in a group (N is their
    /// number in the call, so that people without a name are told apart) and nothing in a call
    /// of two, where each place says "the other person" in its own words.
    pub fn called(&self, group: bool) -> Option<String> {
        self.name.clone().or_else(|| group.then(|| format!("Guest {}", self.number)))
    }

    /// What the page calls them at the start of a sentence: as [`Self::called`], or
    /// [`Self::UNNAMED`].
    pub fn named(&self, group: bool) -> String {
        self.called(group).unwrap_or_else(|| Self::UNNAMED.into())
    }

    /// Someone unnamed in a call of two.
    pub const UNNAMED: &str = "The other person";
}

/// Who a chat line is from.
// The server renders no chat: only the browser's machine writes lines.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Author {
    /// This side.
    You,
    /// Someone else, as the page calls them ([`Remote::called`]).
    Them(String),
    /// The page itself: what it did not show or send, and why.
    Page,
}

/// One line of the chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLine {
    pub from: Author,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: u64,
}

/// The statistics panel: one second's worth, from `getStats`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    pub round_trip_ms: Option<f64>,
    pub kbps_in: f64,
    pub kbps_out: f64,
    /// Of the video received.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frames_per_second: Option<f64>,
    /// Of all packets expected so far, audio and video.
    pub packet_loss_percent: f64,
    /// Whether media goes through a TURN relay rather than directly.
    pub relayed: Option<bool>,
    /// The level (RMS, 0 to 1) of the audio received since the reading before.
    pub audio_level: Option<f64>,
    /// The same of this side's microphone, where the browser reports it.
    pub sent_audio_level: Option<f64>,
    /// In a room on the server: whose camera comes in which simulcast layer, and why.
    pub layers: Vec<(String, Option<crate::protocol::Layer>, crate::protocol::Reason)>,
}

/// What the status line says, and whether a call is under way.
// The server renders pages before any call, so only the browser reaches most states.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallStatus {
    Idle,
    StartingMedia,
    Joining,
    WaitingForPeer,
    Connecting,
    /// In a call with these people (named as [`Remote::called`]; in a call of two, an
    /// unnamed other person is not listed).
    Connected(Vec<String>),
    /// The same, in a room whose media goes through the server: the page says so, since the
    /// server can then see and hear the call.
    ConnectedThroughServer(Vec<String>),
    /// A connection that worked broke; ICE restarts until it is back. Never said of one that
    /// never connected.
    ConnectionInterrupted,
    /// No connection could be made, and this server offers browsers no relay (no `turn:` or
    /// `turns:` server): the networks between the two allow no direct path (symmetric NATs, a
    /// firewall), which only a relay gets through.
    NeedsRelay,
    /// No connection could be made, not even through the relay this server offers.
    RelayFailed,
    PeerLeft,
    /// Everyone else in a group left.
    OthersLeft,
    /// The signaling socket dropped; the engine reconnects, media keeps flowing meanwhile.
    SignalingReconnecting,
    /// The same in a room whose media goes through the server: it stops until the page is
    /// back (the server lets go of a person's media with their socket).
    ServerReconnecting,
    /// Relay-only ICE and the TURN server refused the credentials: the call cannot connect.
    TurnRefused,
    RoomFull,
    MediaUnavailable(String),
    /// The page is not a secure context (plain `http://` to another machine), so the browser
    /// offers no camera or microphone and WebRTC cannot start. Holds the `https://` form of the
    /// page's address, where that may work.
    InsecureContext(Option<String>),
    /// A secure page, but the browser offers pages no camera or microphone at all.
    BrowserUnsupported,
    Ended,
}

impl CallStatus {
    /// Whether Start has been pressed and the call not ended (Hang up is what ends it now).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Self::StartingMedia
                | Self::Joining
                | Self::WaitingForPeer
                | Self::Connecting
                | Self::Connected(_)
                | Self::ConnectedThroughServer(_)
                | Self::ConnectionInterrupted
                | Self::NeedsRelay
                | Self::RelayFailed
                | Self::PeerLeft
                | Self::OthersLeft
                | Self::SignalingReconnecting
                | Self::ServerReconnecting
                | Self::TurnRefused
        )
    }

    #[cfg(any(feature = "hydrate", test))]
    /// What the page shows for this status while the camera and microphone are still
    /// starting: the call joins and connects meanwhile, but until the browser grants them
    /// (which may wait on the person answering its permission prompt), that is what the page
    /// says. What needs the person's attention shows at once.
    pub fn while_media_starts(self) -> Self {
        match self {
            Self::Joining
            | Self::WaitingForPeer
            | Self::Connecting
            | Self::Connected(_)
            | Self::ConnectedThroughServer(_)
            | Self::ConnectionInterrupted
            | Self::PeerLeft
            | Self::OthersLeft
            | Self::SignalingReconnecting
            | Self::ServerReconnecting => Self::StartingMedia,
            other => other,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Self::Idle => "Press Start to join the call.".into(),
            Self::StartingMedia => "Starting your camera and microphone…".into(),
            Self::Joining => "Joining the call…".into(),
            Self::WaitingForPeer => {
                "Waiting for someone to join. Send this page's link to the people you want in the call.".into()
            }
            Self::Connecting => "Connecting…".into(),
            Self::Connected(people) => connected_with(people),
            Self::ConnectedThroughServer(people) => {
                format!("{} Media goes through the server.", connected_with(people))
            }
            Self::ConnectionInterrupted => "The connection is interrupted; reconnecting…".into(),
            Self::NeedsRelay => {
                "Could not connect: your networks need a relay (TURN) server, and none was offered for this call. \
                 Ask whoever runs this server to set one up."
                    .into()
            }
            Self::RelayFailed => {
                "Could not connect, not even through the relay (TURN) server: one of you could not reach it. \
                 Ask whoever runs this server to check that it can be reached."
                    .into()
            }
            Self::PeerLeft => "The other person left. Waiting for them to come back…".into(),
            Self::OthersLeft => "Everyone else left. Waiting for someone to join…".into(),
            Self::RoomFull => "This call is full, so you can't join it.".into(),
            Self::MediaUnavailable(why) => {
                format!("Camera or microphone unavailable: {why}. You can still join with audio only, or just watch and listen.")
            }
            Self::SignalingReconnecting => {
                "Lost the connection to the server; reconnecting… (the call goes on meanwhile)".into()
            }
            Self::ServerReconnecting => {
                "Lost the connection to the server; reconnecting… (the call's media goes through it, so it \
                 stops meanwhile)"
                    .into()
            }
            Self::TurnRefused => "Could not connect: the relay (TURN) server refused our credentials.".into(),
            Self::InsecureContext(https) => {
                let open = match https {
                    Some(address) => format!("Open {address} instead, or ask"),
                    None => "Ask".into(),
                };
                format!(
                    "Calls need a secure (HTTPS) address: browsers allow the camera and microphone only on \
                     https:// pages (or on localhost). {open} whoever runs this server to turn on HTTPS."
                )
            }
            Self::BrowserUnsupported => "This browser offers no camera or microphone to web pages, so a call cannot \
                                         start here. Open this link in a current Firefox, Chrome, Edge or Safari."
                .into(),
            Self::Ended => "Call ended. Press Start to call again.".into(),
        }
    }
}

#[cfg(any(feature = "hydrate", test))]
/// What a page without the camera and microphone should say, from `window.isSecureContext`
/// and the page's address; `None` when a call can start.
pub fn media_blocked(secure_context: bool, has_media_devices: bool, address: &str) -> Option<CallStatus> {
    match (secure_context, has_media_devices) {
        (true, true) => None,
        (true, false) => Some(CallStatus::BrowserUnsupported),
        (false, _) => Some(CallStatus::InsecureContext(https_form(address))),
    }
}

#[cfg(any(feature = "hydrate", test))]
/// The `https://` form of a plain `http://` address on the default port: a site behind a TLS
/// proxy often answers there too. With an explicit port, that port speaks plain HTTP, so no
/// `https://` form would work.
fn https_form(address: &str) -> Option<String> {
    let rest = address.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // A port follows the last ':', unless that ':' is inside an IPv6 address's brackets.
    let has_port = authority.rfind(':').is_some_and(|at| !authority[at..].contains(']'));
    (!has_port).then(|| format!("https://{rest}"))
}

/// "Connected with Ada and Bo."
fn connected_with(people: &[String]) -> String {
    match people {
        [] => "Connected.".into(),
        [one] => format!("Connected with {one}."),
        [others @ .., last] => format!("Connected with {} and {last}.", others.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn while_the_camera_starts_the_page_says_so_unless_something_needs_the_person() {
        for progress in
            [CallStatus::Joining, CallStatus::WaitingForPeer, CallStatus::Connecting, CallStatus::Connected(Vec::new())]
        {
            assert_eq!(progress.while_media_starts(), CallStatus::StartingMedia);
        }
        for attention in [
            CallStatus::TurnRefused,
            CallStatus::NeedsRelay,
            CallStatus::RelayFailed,
            CallStatus::RoomFull,
            CallStatus::Ended,
        ] {
            assert_eq!(attention.clone().while_media_starts(), attention);
        }
    }

    #[test]
    fn an_insecure_address_gets_its_https_form_where_that_can_work() {
        assert_eq!(https_form("http://duo.example/call/abc").as_deref(), Some("https://duo.example/call/abc"));
        assert_eq!(https_form("http://[fe80::1]/call/abc").as_deref(), Some("https://[fe80::1]/call/abc"));
        // An explicit port serves plain HTTP; https:// on it cannot answer.
        for no_form in ["http://duo-lan.test:3000/call/abc", "http://[fe80::1]:3000/call/x", "https://duo.example/"] {
            assert_eq!(https_form(no_form), None, "{no_form}");
        }
    }

    #[test]
    fn a_page_that_cannot_have_media_says_why_without_blaming_the_camera() {
        assert_eq!(media_blocked(true, true, "https://duo.example/call/x"), None);
        assert_eq!(media_blocked(true, false, "https://duo.example/call/x"), Some(CallStatus::BrowserUnsupported));
        let insecure = media_blocked(false, false, "http://h.test/call/x").unwrap();
        let text = insecure.text();
        assert!(
            text.contains("secure (HTTPS) address") && text.contains("Open https://h.test/call/x instead"),
            "{text}"
        );
        let text = media_blocked(false, true, "http://h.test:3000/call/x").unwrap().text();
        assert!(text.contains("Ask whoever runs this server to turn on HTTPS") && !text.contains("Open"), "{text}");
        for status in [insecure, CallStatus::BrowserUnsupported] {
            assert!(!status.is_active());
            assert!(!status.text().contains("audio only") && !status.text().contains("unavailable"));
        }
    }
}
