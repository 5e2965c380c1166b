//! The call in the browser.
//!
//! [`CallStatus`] is shared: the page renders it on the server too. The rest runs only in the
//! browser (feature `hydrate`): [`engine`] drives one call from Start to Hang up, [`peer`] wraps
//! the `RTCPeerConnection` and perfect negotiation, [`socket`] the signaling WebSocket. None
//! of them touches the page: they report through [`engine::CallEvents`].

#[cfg(feature = "hydrate")]
pub mod engine;
#[cfg(feature = "hydrate")]
mod js;
#[cfg(feature = "hydrate")]
pub mod media;
#[cfg(feature = "hydrate")]
mod peer;
#[cfg(feature = "hydrate")]
mod socket;

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
    UseDevice(Device),
    HangUp,
}

/// One line of the chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLine {
    pub mine: bool,
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
}

/// What the status line says, and whether a call is under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallStatus {
    Idle,
    StartingMedia,
    Joining,
    WaitingForPeer,
    Connecting,
    Connected,
    ConnectionInterrupted,
    ConnectionFailed,
    PeerLeft,
    /// The signaling socket dropped; the engine reconnects, media keeps flowing meanwhile.
    SignalingReconnecting,
    /// Relay-only ICE and the TURN server refused the credentials: the call cannot connect.
    TurnRefused,
    RoomFull,
    MediaUnavailable(String),
    /// The page is not a secure context (plain `http://` to another machine), so the browser
    /// offers no camera or microphone and WebRTC cannot start. Holds the `https://` form of the
    /// page's address, when it has one.
    InsecureContext(Option<String>),
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
                | Self::Connected
                | Self::ConnectionInterrupted
                | Self::ConnectionFailed
                | Self::PeerLeft
                | Self::SignalingReconnecting
                | Self::TurnRefused
        )
    }

    pub fn text(&self) -> String {
        match self {
            Self::Idle => "Press Start to join the call.".into(),
            Self::StartingMedia => "Starting your camera and microphone…".into(),
            Self::Joining => "Joining the call…".into(),
            Self::WaitingForPeer => "Waiting for the other person to join. Send them this page's link.".into(),
            Self::Connecting => "Connecting…".into(),
            Self::Connected => "Connected.".into(),
            Self::ConnectionInterrupted => "The connection is interrupted; reconnecting…".into(),
            Self::ConnectionFailed => "Could not connect to the other person.".into(),
            Self::PeerLeft => "The other person left. Waiting for them to come back…".into(),
            Self::RoomFull => "This call already has two people, so you can't join it.".into(),
            Self::MediaUnavailable(why) => {
                format!("Camera or microphone unavailable: {why}. You can still join with audio only, or just watch and listen.")
            }
            Self::SignalingReconnecting => {
                "Lost the connection to the server; reconnecting… (the call goes on meanwhile)".into()
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
            Self::Ended => "Call ended. Press Start to call again.".into(),
        }
    }
}

/// The `https://` form of a page address that is plain `http://`.
pub fn https_form(address: &str) -> Option<String> {
    address.strip_prefix("http://").map(|rest| format!("https://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insecure_address_gets_its_https_form() {
        assert_eq!(
            https_form("http://duo-lan.test:3000/call/abc").as_deref(),
            Some("https://duo-lan.test:3000/call/abc")
        );
        assert_eq!(https_form("https://duo.example/call/abc"), None);
        let text = CallStatus::InsecureContext(https_form("http://h.test/call/x")).text();
        assert!(
            text.contains("secure (HTTPS) address") && text.contains("Open https://h.test/call/x instead"),
            "{text}"
        );
        assert!(!text.contains("audio only"), "{text}");
        assert!(!CallStatus::InsecureContext(None).is_active());
    }
}
