//! What the machine takes and what it asks for: [`Input`]s in, [`Effect`]s out, and the
//! states and timers they speak of.

use crate::{
    call::{
        stats::{Heard, Report},
        CallCommand, CallStats, CallStatus, ChatLine, Device, MediaChoice, Remote,
    },
    protocol::{
        FromUnit, IceCandidate, IceServer, IceTransportPolicy, Layer, MediaState, Message, PassedOn, PeerId,
        PeerMessage, SessionDescription,
    },
};

/// `RTCPeerConnection.connectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// `RTCPeerConnection.signalingState`, as far as perfect negotiation needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signaling {
    Stable,
    HaveLocalOffer,
    /// Any other state (only seen when a negotiation step failed halfway).
    Other,
}

/// Which video this side shows and sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Video {
    None,
    Camera,
    Screen,
}

/// The tiles on screen, by key, and the size each one's video is drawn at, in device pixels.
pub type Shown = Vec<(u32, (u32, u32))>;

/// Timers, each tagged with the socket or peer connection it was armed for. `Withheld`: time to
/// say how many of that person's chat lines were not shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Reconnect {
        socket: u32,
    },
    IceCheck {
        peer: u32,
    },
    ConnectTimeout {
        peer: u32,
    },
    StatsTick {
        peer: u32,
    },
    /// On the connection to the server: read who speaks.
    VoicesTick {
        peer: u32,
    },
    /// On the connection to the server: read which tiles the page shows, and how large.
    ViewTick {
        peer: u32,
    },
    Withheld {
        peer: u32,
    },
}

/// The outcome of a negotiation step ([`Effect::Offer`] or [`Effect::Apply`]), read from the
/// peer connection after it, whether it succeeded or not.
#[derive(Clone, Debug, PartialEq)]
pub struct Negotiated {
    pub signaling: Signaling,
    pub has_remote_description: bool,
    /// The offer or answer the step made, to send.
    pub local: Option<SessionDescription>,
}

/// What a peer connection reports.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    NegotiationNeeded,
    Negotiated(Negotiated),
    LocalCandidate(Option<IceCandidate>),
    RemoteTrack,
    ConnectionState(ConnectionState),
    IceServerError {
        code: u16,
        url: String,
    },
    ChannelOpen,
    ChannelClosed,
    /// A message for the data channel could not be sent (it was closing).
    Undelivered(PeerMessage),
    Message(PeerMessage),
    /// From the server's data channel: another person's message, passed on.
    Relayed(PassedOn),
    /// From the server's data channel: what the forwarding unit itself says.
    Unit(FromUnit),
    /// A message over [`crate::protocol::MAX_PEER_MESSAGE_UNITS`], dropped unread.
    Oversized,
    /// `getStats()`'s reports.
    Stats(Vec<Report>),
    /// What each of the server's audio m-lines last carried.
    Voices(Vec<Heard>),
    View(Shown),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Start was pressed; `socket_ready` when the page's signaling socket was made at load.
    Start {
        socket_ready: bool,
    },
    /// The browser granted the camera and microphone (each `false` when not granted or not asked).
    MediaGranted {
        audio: bool,
        camera: bool,
    },
    /// The browser refused them: the error's `name` and a readable description.
    MediaRefused {
        name: Option<String>,
        description: String,
    },
    /// A server message, and the sender the server stamped on a relayed one (`None` from a
    /// client that named no recipient: the only other person).
    Server {
        socket: u32,
        from: Option<PeerId>,
        message: Message,
    },
    /// The socket closed, or could not be opened ([`ABNORMAL_CLOSURE`]).
    SocketClosed {
        socket: u32,
        code: u16,
    },
    Timer(Timer),
    Peer {
        peer: u32,
        event: PeerEvent,
    },
    Command(CallCommand),
    /// The outcome of [`Effect::PickScreen`]: shared, or the error's `name`.
    ScreenPicked(Result<(), Option<String>>),
    /// The browser's own "stop sharing" ended the shared screen.
    ScreenEnded,
    /// [`Effect::OpenDevice`] opened a new camera (`true`) or microphone.
    DeviceOpened {
        is_camera: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    // The page.
    Status(CallStatus),
    /// A line beside the status: why something the person asked for did not happen.
    Notice(Option<String>),
    /// This side's link is too slow for the video its tiles would show: they show less.
    SlowLink(bool),
    /// What this side sends (microphone on, video on, screen shared).
    LocalMedia(MediaState),
    /// Whether this side is heard speaking.
    Speaking(bool),
    /// The other people's tiles, in the order they came.
    Remotes(Vec<Remote>),
    /// Show this side's preview, or nothing.
    LocalStream(bool),
    Chat(ChatLine),
    /// Something that happened in the call, in a few words, for the page to show for a moment.
    Event(String),
    /// This side's chat line was not sent: it goes back in the message field.
    Unsent(String),
    Stats(Option<CallStats>),
    /// List the cameras and microphones for the page (labels are known once one is granted).
    ListDevices,
    /// A `performance.mark`: where call setup spends its time (the benchmark reads them).
    Mark(&'static str),
    Log(String),
    Warn(String),

    // This side's media.
    RequestMedia(MediaChoice),
    /// Turn the microphone track on or off (mute sends silence; nothing renegotiates).
    EnableAudio(bool),
    /// Show this video (with the microphone) in the preview.
    ShowVideo(Video),
    /// Ask the browser for a screen to share; the outcome comes back as [`Input::ScreenPicked`].
    PickScreen,
    StopScreen,
    /// Open this camera or microphone instead; [`Input::DeviceOpened`] follows if it opened.
    OpenDevice(Device),
    StopMedia,

    // Signaling.
    /// Take the place in the room on the page's socket, under this display name (for those
    /// waiting to join).
    Join {
        name: Option<String>,
    },
    /// Open a socket with this generation and join on it, under this display name; if it cannot
    /// be opened, report [`Input::SocketClosed`] with [`ABNORMAL_CLOSURE`].
    OpenSocket {
        socket: u32,
        name: Option<String>,
    },
    /// The socket is closed: let go of it.
    ForgetSocket,
    /// To one person, or (`None`) to the only other one.
    Send {
        to: Option<PeerId>,
        message: Message,
    },
    /// Everyone in the room: whom a page that closes says `BYE` to.
    Everyone(Vec<PeerId>),
    Arm {
        timer: Timer,
        after_ms: u32,
    },

    // Peer connections.
    /// A connection to another browser, or (`to_server`) to the server's forwarding unit: then
    /// it only sends on the transceivers it adds, and its data channel brings [`PeerEvent::Relayed`].
    CreatePeer {
        peer: u32,
        ice_servers: Vec<IceServer>,
        policy: IceTransportPolicy,
        to_server: bool,
    },
    DropPeer {
        peer: u32,
    },
    /// The caller's side: one send-and-receive transceiver per kind, with the microphone (if
    /// `audio`) and this video, or with no track yet.
    AddTransceivers {
        peer: u32,
        audio: bool,
        video: Video,
    },
    /// `setLocalDescription()`; [`PeerEvent::Negotiated`] follows.
    Offer {
        peer: u32,
    },
    /// `setRemoteDescription()`, and for an offer the answer, sending the microphone (if
    /// `audio`) and this video; [`PeerEvent::Negotiated`] follows.
    Apply {
        peer: u32,
        description: SessionDescription,
        audio: bool,
        video: Video,
    },
    /// `addIceCandidate()`; a candidate of an offer this side ignored may fail to apply.
    AddCandidate {
        peer: u32,
        candidate: IceCandidate,
        failure_expected: bool,
    },
    RestartIce {
        peer: u32,
    },
    /// Put the camera and microphone, granted after the connection was made, on its senders.
    StartSending {
        peer: u32,
        audio: bool,
        video: Video,
    },
    SendVideo {
        peer: u32,
        video: Video,
    },
    /// Send the (new) microphone.
    SendAudio {
        peer: u32,
    },
    /// Cap the video sent on this connection, in bits per second (`None`: no cap).
    CapVideo {
        peer: u32,
        max_bps: Option<u32>,
    },
    /// On the connection to the server: send these simulcast layers of the camera, pause the
    /// others.
    SendLayers {
        peer: u32,
        layers: Vec<Layer>,
    },
    /// Over the data channel; [`PeerEvent::Undelivered`] follows if it could not be sent.
    ToPeer {
        peer: u32,
        message: PeerMessage,
    },
    /// Show each tile (by its key) the media of these m-lines of the connection to the server.
    RouteTracks {
        peer: u32,
        tiles: Vec<(u32, Vec<String>)>,
    },
    /// `getStats()`; [`PeerEvent::Stats`] follows.
    GetStats {
        peer: u32,
    },
    /// On the connection to the server, each audio m-line's last packet and level
    /// (`getSynchronizationSources()`, cheap and synchronous); [`PeerEvent::Voices`] follows.
    ReadVoices {
        peer: u32,
    },
    /// Which tiles are on screen, and at what size (the page's layout, read synchronously);
    /// [`PeerEvent::View`] follows.
    ReadView {
        peer: u32,
    },
}
