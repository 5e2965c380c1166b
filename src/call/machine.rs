//! Every decision of a call, without I/O: [`CallMachine`] takes [`Input`]s (a server message, a
//! peer-connection event, a timer, a command from the page) and queues [`Effect`]s (send this,
//! create or drop a peer connection, restart ICE, set the status, arm a timer) for
//! [`super::engine`] to carry out in order. It compiles for both targets, so plain `cargo test`
//! reaches it.
//!
//! Everything a peer connection, socket or timer reports carries the generation of what
//! produced it, and the machine drops what comes from one that is gone: a late event never
//! changes the next call.
//!
//! One peer connection per other person in the room (a full mesh). A newcomer calls everyone
//! already there; those already there answer. Messages to the server name their recipient
//! (`to`), and the server names the sender of each (`from`). Start joins at once and the camera
//! starts meanwhile: an offer needs no tracks (they go on the senders when the browser grants
//! them), and the person waiting alone has a standby connection ready before the first offer
//! arrives. The call outlives its signaling: when the socket drops, the machine reconnects with
//! jittered, capped backoff and keeps its connections to the same people (known by their
//! public ids). When a media path that worked breaks, it restarts ICE on that connection. One
//! that never connected is not restarted when the browser gives up on it (every candidate pair
//! was tried; the same ones would fail the same way): the status line says what would help
//! instead, once, and a new attempt waits for something new (signaling back, the person back).
//!
//! Perfect negotiation, per connection: the hub gives each pair one polite and one impolite
//! side. The impolite side ignores an incoming offer that collides with its own; the polite
//! side rolls its own back (implicitly, in `setRemoteDescription`) and answers. Effects run one
//! at a time and the engine reports each negotiation step's outcome ([`Negotiated`]) before the
//! next input, so `signalingState` alone tells a collision.
//!
//! The status line is worked out from the state after every input, not set step by step, so
//! it says the same thing for the same situation however it was reached.

use std::collections::VecDeque;

use super::{
    stats::{summarize, Report, Traffic},
    Author, CallCommand, CallStats, CallStatus, ChatLine, Device, MediaChoice, Remote,
};
use crate::protocol::{
    close_code, display_name, ChatMessage, ErrorCode, IceCandidate, IceServer, IceTransportPolicy, MediaState, Message,
    PeerId, PeerInfo, PeerMessage, SdpType, SessionDescription, Welcome, CHAT_BURST, CHAT_EVERY_MS, MAX_CHAT_CHARS,
};

/// Reconnect delays: doubling from the first, capped, each scaled by a random 50–100 %.
pub const RECONNECT_FIRST_MS: f64 = 250.0;
pub const RECONNECT_CAP_MS: f64 = 5_000.0;
/// How long `disconnected` may last before ICE is restarted.
pub const DISCONNECTED_GRACE_MS: u32 = 3_000;
/// While the media path stays broken, ICE is restarted again this often (a restart made while
/// the network or the relay was still down cannot succeed by itself later).
pub const ICE_RETRY_MS: u32 = 5_000;
/// How long a new peer connection may take to connect before the page says it failed, if the
/// browser has not said so first (Chromium gives up on ICE after about 15 s).
pub const CONNECT_TIMEOUT_MS: u32 = 20_000;
/// How often each connection's statistics are read: the panel's numbers, and who is speaking.
pub const STATS_EVERY_MS: u32 = 500;
/// The received audio level (RMS, 0 to 1) above which a person counts as speaking: about
/// -34 dBFS, well above a quiet room after the browser's noise suppression (a muted
/// microphone sends a level of 0).
pub const SPEAKING_LEVEL: f64 = 0.02;
/// How long the highlight stays after the last reading above it: the pauses between words
/// do not make it flicker.
pub const SPEAKING_HOLD_MS: f64 = 1_000.0;
/// The video a person uploads in all, shared out among the others in a group: about what a
/// browser sends to one other person (Chromium's own ceiling for 720p camera video is 2.5
/// Mbit/s). One other person gets no cap at all, so a call of two is as it always was.
pub const GROUP_VIDEO_BPS: u32 = 2_500_000;
/// The close code a browser reports for a socket that dropped, or never opened.
pub const ABNORMAL_CLOSURE: u16 = 1006;
/// How many of its own chat lines a page sends at once (then one every [`CHAT_EVERY_MS`]): one
/// fewer than the others show, so that a line the network delays more than the one before it
/// still finds room.
pub const SEND_BURST: u32 = CHAT_BURST - 1;
/// How long after the first of someone's lines that were not shown the page says how many there
/// were: a flood makes one note a second, not one a line.
pub const WITHHELD_NOTE_MS: u32 = 1_000;

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

/// Timers, each tagged with the socket or peer connection it was armed for. `Withheld`: time to
/// say how many of that person's chat lines were not shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Reconnect { socket: u32 },
    IceCheck { peer: u32 },
    ConnectTimeout { peer: u32 },
    StatsTick { peer: u32 },
    Withheld { peer: u32 },
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
    /// A message over [`crate::protocol::MAX_PEER_MESSAGE_UNITS`], dropped unread.
    Oversized,
    /// `getStats()`'s reports.
    Stats(Vec<Report>),
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
    CreatePeer {
        peer: u32,
        ice_servers: Vec<IceServer>,
        policy: IceTransportPolicy,
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
    /// Over the data channel; [`PeerEvent::Undelivered`] follows if it could not be sent.
    ToPeer {
        peer: u32,
        message: PeerMessage,
    },
    /// `getStats()`; [`PeerEvent::Stats`] follows.
    GetStats {
        peer: u32,
    },
}

/// This side's camera, microphone and screen, as far as decisions need them.
#[derive(Clone, Copy, Debug, Default)]
struct Media {
    /// Until the browser grants (or refuses) the camera and microphone.
    starting: bool,
    audio: bool,
    camera: bool,
    screen: bool,
    audio_on: bool,
    camera_on: bool,
}

impl Media {
    /// The video to send: the shared screen, else the camera unless it is off.
    fn video(&self) -> Video {
        if self.screen {
            Video::Screen
        } else if self.camera && self.camera_on {
            Video::Camera
        } else {
            Video::None
        }
    }

    fn state(&self) -> MediaState {
        MediaState { audio: self.audio && self.audio_on, video: self.video() != Video::None, screen: self.screen }
    }
}

/// The peer connection to one other person.
#[derive(Debug)]
struct Peer {
    generation: u32,
    /// Their connection's id on the server: what `to` names, and `from` says. It changes when
    /// they reconnect; `public_id` does not.
    peer_id: PeerId,
    public_id: Option<String>,
    /// This side's role in the pair.
    polite: bool,
    connection: ConnectionState,
    /// It has been connected: a call that can outlive its signaling. One that never connected
    /// is started afresh when its person comes back, the same way by both sides.
    ever_connected: bool,
    /// The connection took longer than [`CONNECT_TIMEOUT_MS`] and has not connected since.
    timed_out: bool,
    signaling: Signaling,
    has_remote_description: bool,
    /// Made to answer: until their offer comes, `negotiationneeded` (the data channel raises
    /// it) must not make an offer of our own.
    awaits_offer: bool,
    /// Whether the last incoming offer was ignored (then its candidates may fail to apply).
    ignore_offer: bool,
    /// Candidates that arrived before the remote description they belong to.
    early_candidates: Vec<IceCandidate>,
    channel_open: bool,
    /// Chat for them typed before their channel was open; sent when it opens.
    unsent_chat: Vec<ChatMessage>,
    receiving: bool,
    media: Option<MediaState>,
    /// They came after this side: the page says they joined, once their name is known.
    newcomer: bool,
    traffic: Option<Traffic>,
    /// Their number in this call: people are numbered as they come, and keep their number.
    number: u32,
    name: Option<String>,
    voice: Voice,
    /// How many of their chat lines may be shown now.
    chat_rate: ChatRate,
    /// Their messages not shown since the last note of them.
    withheld: Option<Withheld>,
}

/// Chat lines allowed: a burst at once, then one every [`CHAT_EVERY_MS`] (a token bucket,
/// counted as the lines used, which drain away with time).
#[derive(Clone, Copy, Debug, Default)]
struct ChatRate {
    used: f64,
    at_ms: f64,
}

impl ChatRate {
    /// Whether one more line fits in `burst` at `now_ms`; if so, it is counted.
    fn take(&mut self, now_ms: f64, burst: u32) -> bool {
        // A clock set back refills nothing.
        let drained = (now_ms - self.at_ms).max(0.0) / CHAT_EVERY_MS;
        self.used = (self.used - drained).max(0.0);
        self.at_ms = now_ms;
        let fits = self.used + 1.0 <= f64::from(burst);
        if fits {
            self.used += 1.0;
        }
        fits
    }
}

/// Someone's messages the page did not show (too long, too many at once, or too big to read).
#[derive(Clone, Copy, Debug)]
struct Withheld {
    count: u32,
    /// When the first of them came: the note's time.
    since_ms: f64,
}

/// Whether someone is speaking, from successive audio levels: above [`SPEAKING_LEVEL`] within
/// the last [`SPEAKING_HOLD_MS`].
#[derive(Clone, Copy, Debug, Default)]
struct Voice {
    loud_at: Option<f64>,
    speaking: bool,
}

impl Voice {
    /// A reading at `now_ms`; no level (nothing played out or captured since the last) is
    /// silence.
    fn hear(&mut self, level: Option<f64>, now_ms: f64) {
        if level.is_some_and(|level| level > SPEAKING_LEVEL) {
            self.loud_at = Some(now_ms);
        }
        self.speaking = self.loud_at.is_some_and(|loud| now_ms - loud < SPEAKING_HOLD_MS);
    }
}

impl Peer {
    /// It never connected, and the browser gave up on it (or took too long): nothing left to try.
    fn could_not_connect(&self) -> bool {
        !self.ever_connected && (self.connection == ConnectionState::Failed || self.timed_out)
    }

    fn remote(&self) -> Remote {
        Remote {
            peer: self.generation,
            number: self.number,
            receiving: self.receiving,
            media: self.media,
            name: self.name.clone(),
            // Muted is silent, whatever the last reading said.
            speaking: self.voice.speaking && self.media.is_none_or(|media| media.audio),
        }
    }
}

/// One call, from Start to its end.
pub struct CallMachine {
    effects: VecDeque<Effect>,
    choice: MediaChoice,
    /// This side's display name.
    name: Option<String>,
    /// A number in [0, 1) for each reconnect delay's jitter.
    random: Box<dyn FnMut() -> f64>,
    socket: u32,
    /// Whether a socket of generation `socket` is open or opening.
    socket_up: bool,
    /// The signaling socket dropped, and no `WELCOME` has come on a new one yet.
    signaling_lost: bool,
    /// A `WELCOME` has come (on any socket).
    welcomed: bool,
    reconnect_attempts: u32,
    media: Media,
    /// In the order they came.
    peers: Vec<Peer>,
    /// Made while waiting alone, for whoever comes next (they offer, we answer), so that the
    /// browser's work of making a connection is done before their offer arrives.
    standby: Option<u32>,
    last_peer_generation: u32,
    /// How many people this call has had a connection with.
    people: u32,
    /// Everyone else in the room, as the server last said, each with this side's role.
    room: Vec<PeerInfo>,
    /// This side's role toward whoever comes next, where the server does not say.
    polite: bool,
    ice_servers: Vec<IceServer>,
    ice_policy: IceTransportPolicy,
    turn_refused: bool,
    /// Someone this side was calling left, and no one has come since.
    someone_left: bool,
    /// The most people in the call at once since it was last only this side: whether those
    /// who left were one person or a group.
    company: usize,
    /// Chat typed while no one was there; it goes to whoever comes.
    unsent_chat: Vec<ChatMessage>,
    /// How many chat lines this side may send now.
    chat_rate: ChatRate,
    /// What the page was last told: the status line, the tiles, who is in the room, whether
    /// this side is speaking.
    shown: (Option<CallStatus>, Vec<Remote>, Vec<PeerId>, bool),
    /// This side's microphone, as its connections send it.
    voice: Voice,
    /// The cap on each connection's video, as last set.
    video_cap: Option<u32>,
    /// Whether the microphone and the camera go on when granted: a person may turn either off
    /// before Start.
    start_on: (bool, bool),
    over: bool,
}

/// The generation of the socket the page opens when it loads.
pub const FIRST_SOCKET: u32 = 1;

/// Whether an ICE server URL is a relay's (TURN), rather than STUN's.
fn is_relay(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

/// Whether two public ids are known to be the same person (clients that name no session have
/// none, and never are).
fn same_person(a: &Option<String>, b: &Option<String>) -> bool {
    a.is_some() && a == b
}

/// The delay before reconnect attempt `attempt` (from 0), `random` in [0, 1).
pub fn reconnect_delay_ms(attempt: u32, random: f64) -> u32 {
    let exponential = RECONNECT_FIRST_MS * 2f64.powi(attempt.min(10) as i32);
    (exponential.min(RECONNECT_CAP_MS) * (0.5 + random / 2.0)) as u32
}

/// What the page says when the camera or microphone is refused, from the error's `name`.
pub fn explain_media_error(name: Option<&str>, description: &str) -> String {
    match name {
        Some("NotAllowedError") => "permission was denied".into(),
        Some("NotFoundError") => "no camera or microphone was found".into(),
        Some("NotReadableError") => "the device is in use by another program".into(),
        _ => description.into(),
    }
}

/// What to tell a person whose screen could not be shared, from the error's `name`; nothing
/// when they cancelled the browser's picker or said no (`NotAllowedError`).
fn screen_share_failure(error_name: Option<&str>) -> Option<String> {
    let why = match error_name {
        Some("NotAllowedError") => return None,
        Some("NotFoundError") => "the browser found no screen or window to share",
        Some("NotReadableError") => "the system would not let the browser capture the screen",
        // Mobile browsers have no `getDisplayMedia`: calling it throws a TypeError.
        _ => "this browser cannot share a screen",
    };
    Some(format!("Screen sharing did not start: {why}. The call goes on with your camera."))
}

impl CallMachine {
    /// A call sending `choice`, under the display name `name` (as typed).
    pub fn new(choice: MediaChoice, name: &str, random: Box<dyn FnMut() -> f64>) -> Self {
        Self {
            effects: VecDeque::new(),
            choice,
            name: display_name(name),
            random,
            socket: FIRST_SOCKET,
            socket_up: false,
            signaling_lost: false,
            welcomed: false,
            reconnect_attempts: 0,
            media: Media::default(),
            peers: Vec::new(),
            standby: None,
            last_peer_generation: 0,
            people: 0,
            room: Vec::new(),
            polite: false,
            ice_servers: Vec::new(),
            ice_policy: IceTransportPolicy::All,
            turn_refused: false,
            someone_left: false,
            company: 0,
            unsent_chat: Vec::new(),
            chat_rate: ChatRate::default(),
            shown: (None, Vec::new(), Vec::new(), false),
            voice: Voice::default(),
            video_cap: None,
            start_on: (true, true),
            over: false,
        }
    }

    /// A call whose microphone and camera start muted or off, as the person chose before Start.
    pub fn starting_with(mut self, microphone_on: bool, camera_on: bool) -> Self {
        self.start_on = (microphone_on, camera_on);
        self
    }

    /// The next effect to carry out, in order.
    pub fn poll(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Whether the call has ended (its last effects may still be queued).
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Handles one input at `now_ms` (milliseconds since the Unix epoch). Its effects come
    /// before any still queued: an outcome reported halfway through a batch (an offer made, say)
    /// is acted on before the batch goes on.
    pub fn handle(&mut self, now_ms: f64, input: Input) {
        if self.over {
            return;
        }
        let queued = std::mem::take(&mut self.effects);
        self.decide(now_ms, input);
        if !self.over {
            self.show_changes();
        }
        self.effects.extend(queued);
    }

    fn decide(&mut self, now_ms: f64, input: Input) {
        match input {
            Input::Start { socket_ready } => self.start(socket_ready),
            Input::Server { socket, from, message } if socket == self.socket && self.socket_up => {
                self.server(from, message)
            }
            Input::SocketClosed { socket, code } if socket == self.socket && self.socket_up => {
                if code == close_code::ROOM_FULL {
                    return self.end(CallStatus::RoomFull);
                }
                self.socket_up = false;
                self.signaling_lost = true;
                self.push(Effect::ForgetSocket);
                self.schedule_reconnect();
            }
            // Late events of a socket already replaced.
            Input::Server { .. } | Input::SocketClosed { .. } => {}
            Input::Timer(timer) => self.timer(timer),
            Input::MediaGranted { audio, camera } => self.media_started(audio, camera),
            Input::MediaRefused { name, description } => {
                // Whoever may already be connecting to us learns at once that we are gone.
                if !self.peers.is_empty() {
                    self.bye_to_everyone();
                }
                self.end(CallStatus::MediaUnavailable(explain_media_error(name.as_deref(), &description)));
            }
            Input::Peer { peer, event } => self.peer_event(peer, event, now_ms),
            Input::Command(command) => self.command(command, now_ms),
            Input::ScreenPicked(Ok(())) => {
                self.media.screen = true;
                self.push(Effect::Notice(None));
                self.push(Effect::ShowVideo(self.media.video()));
                self.send_current_video();
            }
            Input::ScreenPicked(Err(name)) => self.push(Effect::Notice(screen_share_failure(name.as_deref()))),
            Input::ScreenEnded => self.stop_screen(),
            Input::DeviceOpened { is_camera: true } => {
                self.media.camera = true;
                self.push(Effect::ShowVideo(self.media.video()));
                self.send_current_video();
            }
            Input::DeviceOpened { is_camera: false } => {
                self.media.audio = true;
                self.push(Effect::EnableAudio(self.media.audio_on));
                self.push(Effect::ShowVideo(self.media.video()));
                for peer in self.generations() {
                    self.push(Effect::SendAudio { peer });
                }
            }
        }
    }

    fn start(&mut self, socket_ready: bool) {
        self.push(Effect::Mark("start"));
        self.media.starting = true;
        self.push(Effect::LocalMedia(self.media.state()));
        // The camera starts while the call joins and negotiates: neither waits for the other.
        self.push(Effect::RequestMedia(self.choice));
        if socket_ready {
            self.socket_up = true;
            self.push(Effect::Join { name: self.name.clone() });
        } else {
            self.connect_signaling();
        }
    }

    fn server(&mut self, from: Option<PeerId>, message: Message) {
        match message {
            Message::Welcome(welcome) => self.welcome(welcome),
            Message::PeerJoined(info) => self.joined(info),
            Message::PeerLeft(info) => {
                self.room.retain(|member| member.peer_id != info.peer_id);
                // Only their signaling may have dropped: a working call goes on. A BYE, or the
                // media path failing, ends it.
                if let Some(index) = self.peers.iter().position(|peer| peer.peer_id == info.peer_id) {
                    if self.peers[index].connection != ConnectionState::Connected {
                        self.drop_peer(index);
                    }
                }
                self.after_someone_left();
            }
            Message::Bye(_) => {
                if let Some(index) = self.sender(from) {
                    let peer = &self.peers[index];
                    if peer.ever_connected {
                        let who = peer.remote().named(self.peers.len() > 1);
                        self.push(Effect::Event(format!("{who} left")));
                    }
                    self.drop_peer(index);
                }
                self.after_someone_left();
            }
            Message::Sdp(description) => self.description(from, description),
            Message::Candidate(candidate) => {
                // End of candidates needs no action: ICE finishes with what it has.
                let (Some(index), Some(candidate)) = (self.sender(from), candidate) else { return };
                let peer = &mut self.peers[index];
                if !peer.has_remote_description {
                    peer.early_candidates.push(candidate);
                    return;
                }
                let effect =
                    Effect::AddCandidate { peer: peer.generation, candidate, failure_expected: peer.ignore_offer };
                self.push(effect);
            }
            Message::Error(error) if error.code == ErrorCode::RoomFull => self.end(CallStatus::RoomFull),
            Message::Error(error) => {
                self.push(Effect::Warn(format!("the server refused a message: {}", error.message)))
            }
            // Only clients send JOIN and NAME; only a socket waiting to join gets PRESENT.
            Message::Join(_) | Message::Name(_) | Message::Present(_) => {}
        }
    }

    fn welcome(&mut self, welcome: Welcome) {
        self.push(Effect::Mark("welcome"));
        self.reconnect_attempts = 0;
        self.signaling_lost = false;
        self.welcomed = true;
        self.polite = welcome.polite;
        self.ice_servers = welcome.ice_servers;
        self.ice_policy = welcome.ice_transport_policy;
        self.room = welcome.peers;
        // Made with the ICE servers (and TURN credentials) of an earlier welcome.
        if let Some(standby) = self.standby.take() {
            self.push(Effect::DropPeer { peer: standby });
        }
        self.turn_refused = false;
        // Back after a signaling outage: the calls with the same people go on (they have new
        // peer ids). If this side is back first (the server restarted), the others will follow,
        // so a working connection is kept while the room is empty. One that never connected is
        // called afresh, as they will answer afresh.
        for index in (0..self.peers.len()).rev() {
            let peer = &mut self.peers[index];
            let same = self.room.iter().find(|member| same_person(&peer.public_id, &member.public_id));
            match same.filter(|_| peer.ever_connected) {
                Some(member) => {
                    peer.peer_id = member.peer_id;
                    peer.polite = member.polite.unwrap_or(self.polite);
                    let generation = peer.generation;
                    self.restart_ice_if_broken(generation);
                }
                None if self.room.is_empty() && peer.connection == ConnectionState::Connected => {}
                None => self.drop_peer(index),
            }
        }
        // The newcomer calls everyone else. Offers go now rather than on `negotiationneeded`,
        // a task later.
        let callees: Vec<PeerInfo> = self
            .room
            .iter()
            .filter(|member| !self.peers.iter().any(|peer| peer.peer_id == member.peer_id))
            .cloned()
            .collect();
        for member in callees {
            let peer = self.new_peer(&member, false);
            let (audio, video) = (self.media.audio, self.media.video());
            self.push(Effect::AddTransceivers { peer, audio, video });
            self.offer(peer);
        }
        if self.peers.is_empty() {
            self.stand_by();
        }
    }

    fn joined(&mut self, info: PeerInfo) {
        // Their earlier connection, if they are coming back, is gone.
        self.room.retain(|member| member.peer_id != info.peer_id && !same_person(&member.public_id, &info.public_id));
        let polite = info.polite.unwrap_or(self.polite);
        self.room.push(PeerInfo { polite: Some(polite), ..info.clone() });
        if let Some(index) = self.peers.iter().position(|peer| same_person(&peer.public_id, &info.public_id)) {
            let peer = &mut self.peers[index];
            if peer.ever_connected {
                // They reconnected; the call goes on.
                peer.peer_id = info.peer_id;
                peer.polite = polite;
                return;
            }
            // It never connected: they will call afresh, as a newcomer does.
            self.drop_peer(index);
        }
        // Someone new: they call, we answer. The connection is made now, while their offer is
        // on its way.
        self.new_peer(&PeerInfo { polite: Some(polite), ..info }, true);
    }

    /// After a BYE or a `PEER_LEFT`: with no one left to call, wait for whoever comes next.
    fn after_someone_left(&mut self) {
        if self.peers.is_empty() {
            self.someone_left = true;
            if self.standby.is_none() {
                self.stand_by();
            }
        }
    }

    /// Who sent a relayed message: its `from`, or without one (a client that names no one, in a
    /// room of two) the room's only other person.
    fn sender_id(&self, from: Option<PeerId>) -> Option<PeerId> {
        from.or(match self.room.as_slice() {
            [only] => Some(only.peer_id),
            _ => None,
        })
    }

    /// The connection a relayed message is for: its sender's, or without a known sender the
    /// only connection (kept to someone who left the room).
    fn sender(&self, from: Option<PeerId>) -> Option<usize> {
        match self.sender_id(from) {
            Some(id) => self.peers.iter().position(|peer| peer.peer_id == id),
            None if self.peers.len() == 1 => Some(0),
            None => None,
        }
    }

    fn description(&mut self, from: Option<PeerId>, description: SessionDescription) {
        let is_offer = description.kind == SdpType::Offer;
        self.push(Effect::Mark(if is_offer { "offer-received" } else { "answer-received" }));
        let index = match self.sender(from) {
            Some(index) => index,
            None if is_offer => {
                let sender = self.sender_id(from);
                let Some(member) = self.room.iter().find(|member| Some(member.peer_id) == sender).cloned() else {
                    return;
                };
                self.new_peer(&member, true);
                self.peers.len() - 1
            }
            None => return,
        };
        let peer = &mut self.peers[index];
        let collision = is_offer && peer.signaling != Signaling::Stable;
        peer.ignore_offer = !peer.polite && collision;
        if peer.ignore_offer {
            return;
        }
        if description.kind == SdpType::Answer && peer.signaling != Signaling::HaveLocalOffer {
            // A stale answer, to an offer we rolled back.
            return;
        }
        let effect =
            Effect::Apply { peer: peer.generation, description, audio: self.media.audio, video: self.media.video() };
        self.push(effect);
    }

    fn negotiated(&mut self, index: usize, outcome: Negotiated) {
        let peer = &mut self.peers[index];
        peer.signaling = outcome.signaling;
        peer.has_remote_description = outcome.has_remote_description;
        let (generation, to) = (peer.generation, peer.peer_id);
        let stable = peer.signaling == Signaling::Stable && peer.has_remote_description;
        if peer.has_remote_description {
            let failure_expected = peer.ignore_offer;
            for candidate in std::mem::take(&mut peer.early_candidates) {
                self.push(Effect::AddCandidate { peer: generation, candidate, failure_expected });
            }
        }
        if let Some(local) = outcome.local {
            self.push(Effect::Mark(if local.kind == SdpType::Offer { "offer-sent" } else { "answer-sent" }));
            self.send(Some(to), Message::Sdp(local));
        }
        // A sender's encodings exist once a negotiation is done: that is when a cap can go on.
        if stable && self.video_cap.is_some() {
            self.push(Effect::CapVideo { peer: generation, max_bps: self.video_cap });
        }
    }

    fn timer(&mut self, timer: Timer) {
        match timer {
            Timer::Reconnect { socket } if socket == self.socket && !self.socket_up => self.connect_signaling(),
            Timer::Reconnect { .. } => {}
            Timer::IceCheck { peer } => self.restart_ice_if_broken(peer),
            Timer::ConnectTimeout { peer } => {
                if let Some(peer) = self.peers.iter_mut().find(|p| p.generation == peer) {
                    peer.timed_out = peer.connection != ConnectionState::Connected;
                }
            }
            Timer::StatsTick { peer } => {
                if self.peers.iter().any(|p| p.generation == peer) {
                    self.push(Effect::GetStats { peer });
                    self.push(Effect::Arm { timer, after_ms: STATS_EVERY_MS });
                }
            }
            Timer::Withheld { peer } => {
                if let Some(index) = self.peers.iter().position(|p| p.generation == peer) {
                    self.note_withheld(index);
                }
            }
        }
    }

    fn peer_event(&mut self, generation: u32, event: PeerEvent, now_ms: f64) {
        // The standby connection gathers candidates while waiting: a TURN refusal then is news.
        if let PeerEvent::IceServerError { code, url } = &event {
            if self.standby == Some(generation) || self.peers.iter().any(|p| p.generation == generation) {
                self.push(Effect::Warn(format!("ICE server {url} answered {code}")));
                // 401: TURN refused the credentials. With relay-only ICE nothing else can work.
                self.turn_refused |= *code == 401;
            }
            return;
        }
        // Anything else only from a connection in use.
        let Some(index) = self.peers.iter().position(|peer| peer.generation == generation) else { return };
        let peer = &mut self.peers[index];
        let to = peer.peer_id;
        match event {
            PeerEvent::NegotiationNeeded => self.offer(generation),
            PeerEvent::Negotiated(outcome) => self.negotiated(index, outcome),
            PeerEvent::LocalCandidate(candidate) => {
                self.push(Effect::Mark("candidate-sent"));
                self.send(Some(to), Message::Candidate(candidate));
            }
            PeerEvent::RemoteTrack => {
                peer.receiving = true;
                self.push(Effect::Mark("remote-track"));
            }
            PeerEvent::ConnectionState(state) => {
                peer.connection = state;
                self.connection_state_changed(index, state);
            }
            PeerEvent::ChannelOpen => {
                peer.channel_open = true;
                let unsent = std::mem::take(&mut peer.unsent_chat);
                // The name first: what the page says of them ("… is muted") names them.
                if let Some(name) = self.name.clone() {
                    self.push(Effect::ToPeer { peer: generation, message: PeerMessage::Name(name) });
                }
                let state = self.media.state();
                self.push(Effect::ToPeer { peer: generation, message: PeerMessage::MediaState(state) });
                for message in unsent {
                    self.push(Effect::ToPeer { peer: generation, message: PeerMessage::Chat(message) });
                }
            }
            PeerEvent::ChannelClosed => peer.channel_open = false,
            PeerEvent::Undelivered(message) => {
                peer.channel_open = false;
                // Chat waits for the channel; the media state is announced again when it opens.
                if let PeerMessage::Chat(chat) = message {
                    peer.unsent_chat.push(chat);
                }
            }
            PeerEvent::Message(PeerMessage::MediaState(state)) => {
                // Their first media state follows their name on the channel: now the page can
                // say who joined.
                let arrived = peer.media.is_none() && std::mem::take(&mut peer.newcomer);
                // A microphone going off or on is worth a word: a tile's icon is easily missed,
                // and a screen reader hears no icon at all.
                let muted = peer.media.filter(|before| before.audio != state.audio).map(|_| !state.audio);
                peer.media = Some(state);
                let who = || self.peers[index].remote().named(self.peers.len() > 1);
                let event = match (arrived, muted) {
                    (true, _) => Some(format!("{} joined", who())),
                    (false, Some(true)) => Some(format!("{} muted", who())),
                    (false, Some(false)) => Some(format!("{} unmuted", who())),
                    (false, None) => None,
                };
                if let Some(text) = event {
                    self.push(Effect::Event(text));
                }
            }
            PeerEvent::Message(PeerMessage::Name(name)) => peer.name = display_name(&name),
            // A line longer than any page sends is dropped whole: a part of it would be a line
            // they never wrote. It takes nothing from their allowance.
            PeerEvent::Message(PeerMessage::Chat(message)) if message.text.chars().count() > MAX_CHAT_CHARS => {
                self.withhold(index, now_ms)
            }
            PeerEvent::Message(PeerMessage::Chat(_)) if !peer.chat_rate.take(now_ms, CHAT_BURST) => {
                self.withhold(index, now_ms)
            }
            PeerEvent::Message(PeerMessage::Chat(message)) => {
                // Named as the page names them now (their name comes first on the channel).
                let from = peer.remote().called(self.peers.len() > 1).unwrap_or_else(|| "Them".into());
                let line = ChatLine { from: Author::Them(from), text: message.text, sent_at: message.sent_at };
                self.push(Effect::Chat(line));
            }
            PeerEvent::Oversized => self.withhold(index, now_ms),
            PeerEvent::Stats(reports) => {
                let (stats, traffic) = summarize(&reports, peer.traffic, now_ms);
                peer.traffic = Some(traffic);
                peer.voice.hear(stats.audio_level, now_ms);
                // The panel shows the first connection's statistics; this side's microphone is
                // the same on every connection.
                if index == 0 {
                    self.voice.hear(stats.sent_audio_level, now_ms);
                    self.push(Effect::Stats(Some(stats)));
                }
            }
            PeerEvent::IceServerError { .. } => unreachable!("handled above"),
        }
    }

    fn connection_state_changed(&mut self, index: usize, state: ConnectionState) {
        let peer = &mut self.peers[index];
        let generation = peer.generation;
        let here = self.room.iter().any(|member| member.peer_id == peer.peer_id);
        let ever_connected = peer.ever_connected;
        match state {
            ConnectionState::Connected => {
                peer.timed_out = false;
                peer.ever_connected = true;
                self.push(Effect::Mark("connected"));
            }
            ConnectionState::Disconnected if ever_connected => {
                self.push(Effect::Arm { timer: Timer::IceCheck { peer: generation }, after_ms: DISCONNECTED_GRACE_MS });
            }
            // They are gone from the room and the media path is dead.
            ConnectionState::Failed if !here && self.socket_up => {
                self.drop_peer(index);
                self.after_someone_left();
            }
            ConnectionState::Failed if ever_connected => self.restart_ice_if_broken(generation),
            // The browser tried every pair of candidates; the status line says what would help.
            ConnectionState::Failed => {
                self.push(Effect::Warn("no network path to the other person: ICE failed".into()))
            }
            ConnectionState::Disconnected
            | ConnectionState::New
            | ConnectionState::Connecting
            | ConnectionState::Closed => {}
        }
    }

    fn command(&mut self, command: CallCommand, now_ms: f64) {
        match command {
            // Nothing to mute, turn off, share instead or switch yet: the page offers these once
            // the camera and microphone are on.
            CallCommand::Microphone(_)
            | CallCommand::Camera(_)
            | CallCommand::ShareScreen(_)
            | CallCommand::UseDevice(_)
                if self.media.starting => {}
            CallCommand::Microphone(on) => {
                if self.media.audio {
                    self.media.audio_on = on;
                    self.push(Effect::EnableAudio(on));
                }
                self.announce_media();
            }
            CallCommand::Camera(on) => {
                if self.media.camera {
                    self.media.camera_on = on;
                    self.push(Effect::ShowVideo(self.media.video()));
                }
                self.send_current_video();
            }
            CallCommand::ShareScreen(true) => self.push(Effect::PickScreen),
            CallCommand::ShareScreen(false) => self.stop_screen(),
            CallCommand::Chat(text) if !self.chat_rate.take(now_ms, SEND_BURST) => {
                let note = "Your message was not sent: that is more messages at once than the others' pages \
                            show. It is back in the message field; send it again in a moment."
                    .to_owned();
                self.push(Effect::Chat(ChatLine { from: Author::Page, text: note, sent_at: now_ms as u64 }));
                self.push(Effect::Unsent(text));
            }
            CallCommand::Chat(text) => {
                // The page's field takes no more, and the others would drop a longer line.
                let text = text.chars().take(MAX_CHAT_CHARS).collect();
                let message = ChatMessage { text, sent_at: now_ms as u64 };
                let line = ChatLine { from: Author::You, text: message.text.clone(), sent_at: message.sent_at };
                self.push(Effect::Chat(line));
                self.send_chat(message);
            }
            CallCommand::Name(name) => {
                self.name = display_name(&name);
                let message = PeerMessage::Name(self.name.clone().unwrap_or_default());
                for peer in self.open_channels() {
                    self.push(Effect::ToPeer { peer, message: message.clone() });
                }
                // For those waiting to join. Until a WELCOME, the next join carries it.
                if self.welcomed && !self.signaling_lost {
                    self.send(None, Message::Name(self.name.clone().unwrap_or_default()));
                }
            }
            CallCommand::UseDevice(device) => self.push(Effect::OpenDevice(device)),
            CallCommand::HangUp => {
                self.bye_to_everyone();
                self.end(CallStatus::Ended);
            }
        }
    }

    /// The camera and microphone are granted: they go on the senders of connections that may
    /// already be under way.
    fn media_started(&mut self, audio: bool, camera: bool) {
        self.push(Effect::Mark("media"));
        let (microphone_on, camera_on) = self.start_on;
        self.media = Media {
            starting: false,
            audio,
            camera,
            screen: false,
            audio_on: audio && microphone_on,
            camera_on: camera && camera_on,
        };
        if audio && !microphone_on {
            self.push(Effect::EnableAudio(false));
        }
        self.push(Effect::ShowVideo(self.media.video()));
        self.push(Effect::LocalStream(true));
        self.push(Effect::ListDevices);
        let video = self.media.video();
        for peer in self.generations() {
            self.push(Effect::StartSending { peer, audio, video });
        }
        self.announce_media();
    }

    fn stop_screen(&mut self) {
        self.push(Effect::StopScreen);
        self.media.screen = false;
        self.push(Effect::ShowVideo(self.media.video()));
        self.send_current_video();
    }

    /// The status line, from the state: what needs the person's attention first, then how
    /// the connections are doing (one that works is enough to be in a call).
    fn status(&self) -> CallStatus {
        let status = if self.signaling_lost {
            CallStatus::SignalingReconnecting
        } else if !self.welcomed {
            CallStatus::Joining
        } else if self.peers.is_empty() {
            match (self.someone_left, self.room.is_empty()) {
                (true, _) if self.company > 1 => CallStatus::OthersLeft,
                (true, _) => CallStatus::PeerLeft,
                (false, true) => CallStatus::WaitingForPeer,
                (false, false) => CallStatus::Connecting,
            }
        } else if self.peers.iter().any(|peer| peer.connection == ConnectionState::Connected) {
            let group = self.peers.len() > 1;
            let connected = self.peers.iter().filter(|peer| peer.connection == ConnectionState::Connected);
            CallStatus::Connected(connected.filter_map(|peer| peer.remote().called(group)).collect())
        } else if self.turn_refused
            && (self.ice_policy == IceTransportPolicy::Relay || self.peers.iter().any(Peer::could_not_connect))
        {
            CallStatus::TurnRefused
        } else if self.peers.iter().any(|peer| peer.ever_connected) {
            // Not connected now (that is above), whether `disconnected`, `failed` or
            // `connecting` again after an ICE restart: one text until it is back.
            CallStatus::ConnectionInterrupted
        } else if self.peers.iter().any(Peer::could_not_connect) {
            if self.ice_servers.iter().flat_map(|server| &server.urls).any(|url| is_relay(url)) {
                CallStatus::RelayFailed
            } else {
                CallStatus::NeedsRelay
            }
        } else {
            CallStatus::Connecting
        };
        if self.media.starting {
            status.while_media_starts()
        } else {
            status
        }
    }

    /// Tells the page (and the socket) what changed: the status line, the tiles, who is here.
    fn show_changes(&mut self) {
        if !self.peers.is_empty() {
            self.unsent_chat.clear();
        }
        let status = self.status();
        if self.shown.0.as_ref() != Some(&status) {
            self.shown.0 = Some(status.clone());
            self.push(Effect::Status(status));
        }
        let remotes: Vec<Remote> = self.peers.iter().map(Peer::remote).collect();
        if self.shown.1 != remotes {
            self.shown.1 = remotes.clone();
            self.push(Effect::Remotes(remotes));
        }
        let everyone: Vec<PeerId> = self.room.iter().map(|member| member.peer_id).collect();
        if self.shown.2 != everyone {
            self.shown.2 = everyone.clone();
            self.push(Effect::Everyone(everyone));
        }
        // Muted is silent at once, whatever the last reading said.
        let speaking = self.voice.speaking && self.media.state().audio;
        if self.shown.3 != speaking {
            self.shown.3 = speaking;
            self.push(Effect::Speaking(speaking));
        }
        // With more people, each gets a share of one call's upload.
        let cap = (self.peers.len() > 1).then(|| GROUP_VIDEO_BPS / self.peers.len() as u32);
        if cap != self.video_cap {
            self.video_cap = cap;
            for peer in self.generations() {
                self.push(Effect::CapVideo { peer, max_bps: cap });
            }
        }
    }

    /// Makes and sends an offer on connection `generation`, unless the other side offers first
    /// or an exchange is under way (then `negotiationneeded` fires again when it ends, if
    /// still needed).
    fn offer(&mut self, generation: u32) {
        let Some(peer) = self.peers.iter().find(|peer| peer.generation == generation) else { return };
        let waiting = peer.awaits_offer && !peer.has_remote_description;
        if !waiting && peer.signaling == Signaling::Stable {
            self.push(Effect::Offer { peer: generation });
        }
    }

    /// Restarts ICE on connection `generation` (one that has worked) while its media path is
    /// down and both sides are reachable by signaling, and looks again later.
    fn restart_ice_if_broken(&mut self, generation: u32) {
        let Some(peer) = self.peers.iter().find(|peer| peer.generation == generation) else { return };
        if !matches!(peer.connection, ConnectionState::Disconnected | ConnectionState::Failed) {
            return;
        }
        if self.socket_up && self.room.iter().any(|member| member.peer_id == peer.peer_id) {
            self.push(Effect::Log("restarting ICE".into()));
            self.push(Effect::RestartIce { peer: generation });
        }
        self.push(Effect::Arm { timer: Timer::IceCheck { peer: generation }, after_ms: ICE_RETRY_MS });
    }

    fn connect_signaling(&mut self) {
        self.socket += 1;
        self.socket_up = true;
        self.push(Effect::Mark("socket"));
        self.push(Effect::OpenSocket { socket: self.socket, name: self.name.clone() });
    }

    fn schedule_reconnect(&mut self) {
        let after_ms = reconnect_delay_ms(self.reconnect_attempts, (self.random)());
        self.reconnect_attempts += 1;
        self.push(Effect::Arm { timer: Timer::Reconnect { socket: self.socket }, after_ms });
    }

    fn send(&mut self, to: Option<PeerId>, message: Message) {
        if self.socket_up {
            self.push(Effect::Send { to, message });
        } else {
            self.push(Effect::Warn(format!("signaling is down; dropped {message:?}")));
        }
    }

    fn bye_to_everyone(&mut self) {
        let everyone: Vec<PeerId> = self.room.iter().map(|member| member.peer_id).collect();
        for to in everyone {
            self.send(Some(to), Message::Bye(None));
        }
    }

    /// The connections by generation, in the order the people came.
    fn generations(&self) -> Vec<u32> {
        self.peers.iter().map(|peer| peer.generation).collect()
    }

    /// A connection to `member`: the standby one, or a new one. Returns its generation.
    fn new_peer(&mut self, member: &PeerInfo, answers: bool) -> u32 {
        let generation = match self.standby.take() {
            Some(standby) => standby,
            None => self.create_peer(),
        };
        self.push(Effect::Arm { timer: Timer::ConnectTimeout { peer: generation }, after_ms: CONNECT_TIMEOUT_MS });
        self.push(Effect::Arm { timer: Timer::StatsTick { peer: generation }, after_ms: STATS_EVERY_MS });
        self.someone_left = false;
        if self.peers.is_empty() {
            self.company = 0;
        }
        self.company = self.company.max(self.peers.len() + 1);
        self.people += 1;
        self.peers.push(Peer {
            generation,
            peer_id: member.peer_id,
            public_id: member.public_id.clone(),
            polite: member.polite.unwrap_or(self.polite),
            connection: ConnectionState::New,
            ever_connected: false,
            timed_out: false,
            signaling: Signaling::Stable,
            has_remote_description: false,
            awaits_offer: answers,
            ignore_offer: false,
            early_candidates: Vec::new(),
            channel_open: false,
            // Everyone called at once gets what was typed while alone.
            unsent_chat: self.unsent_chat.clone(),
            receiving: false,
            media: None,
            newcomer: answers,
            traffic: None,
            number: self.people,
            name: None,
            voice: Voice::default(),
            chat_rate: ChatRate::default(),
            withheld: None,
        });
        generation
    }

    fn create_peer(&mut self) -> u32 {
        self.last_peer_generation += 1;
        let peer = self.last_peer_generation;
        self.push(Effect::CreatePeer { peer, ice_servers: self.ice_servers.clone(), policy: self.ice_policy });
        peer
    }

    /// Alone in the room: makes the connection whoever comes next will be answered on.
    fn stand_by(&mut self) {
        if let Some(old) = self.standby.take() {
            self.push(Effect::DropPeer { peer: old });
        }
        self.standby = Some(self.create_peer());
    }

    fn drop_peer(&mut self, index: usize) {
        // What was not shown of theirs is said before they go.
        self.note_withheld(index);
        let peer = self.peers.remove(index);
        self.push(Effect::DropPeer { peer: peer.generation });
        if index == 0 {
            self.push(Effect::Stats(None));
        }
    }

    /// Puts the video that should be sent now on every sender, and tells both the page and the
    /// others.
    fn send_current_video(&mut self) {
        let video = self.media.video();
        for peer in self.generations() {
            self.push(Effect::SendVideo { peer, video });
        }
        self.announce_media();
    }

    fn announce_media(&mut self) {
        let state = self.media.state();
        self.push(Effect::LocalMedia(state));
        // A channel not open yet announces the state when it opens.
        for peer in self.open_channels() {
            self.push(Effect::ToPeer { peer, message: PeerMessage::MediaState(state) });
        }
    }

    /// The connections whose data channel is open, by generation.
    fn open_channels(&self) -> Vec<u32> {
        self.peers.iter().filter(|peer| peer.channel_open).map(|peer| peer.generation).collect()
    }

    /// Counts a message of theirs that is not shown; the first since the last note arms the next.
    fn withhold(&mut self, index: usize, now_ms: f64) {
        let peer = &mut self.peers[index];
        match &mut peer.withheld {
            Some(withheld) => withheld.count += 1,
            None => {
                peer.withheld = Some(Withheld { count: 1, since_ms: now_ms });
                let timer = Timer::Withheld { peer: peer.generation };
                self.push(Effect::Arm { timer, after_ms: WITHHELD_NOTE_MS });
            }
        }
    }

    /// Says in the chat how many of their messages were not shown since the last note, if any.
    fn note_withheld(&mut self, index: usize) {
        let group = self.peers.len() > 1;
        let peer = &mut self.peers[index];
        let Some(Withheld { count, since_ms }) = peer.withheld.take() else { return };
        let who = peer.remote().called(group).unwrap_or_else(|| "the other person".into());
        let text = match count {
            1 => format!("1 message from {who} was not shown: too long, or too many at once."),
            _ => format!("{count} messages from {who} were not shown: too long, or too many at once."),
        };
        self.push(Effect::Chat(ChatLine { from: Author::Page, text, sent_at: since_ms as u64 }));
    }

    fn send_chat(&mut self, message: ChatMessage) {
        if self.peers.is_empty() {
            self.unsent_chat.push(message);
            return;
        }
        let mut sends = Vec::new();
        for peer in &mut self.peers {
            if peer.channel_open {
                sends.push(Effect::ToPeer { peer: peer.generation, message: PeerMessage::Chat(message.clone()) });
            } else {
                peer.unsent_chat.push(message.clone());
            }
        }
        self.effects.extend(sends);
    }

    fn end(&mut self, status: CallStatus) {
        self.over = true;
        self.push(Effect::Notice(None));
        for index in (0..self.peers.len()).rev() {
            self.drop_peer(index);
        }
        if let Some(standby) = self.standby.take() {
            self.push(Effect::DropPeer { peer: standby });
        }
        self.push(Effect::Remotes(Vec::new()));
        self.push(Effect::Speaking(false));
        self.push(Effect::StopMedia);
        self.push(Effect::LocalStream(false));
        self.push(Effect::Status(status));
    }

    fn push(&mut self, effect: Effect) {
        self.effects.push_back(effect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorBody, PeerId, PeerInfo};

    const NOW: f64 = 1_700_000_000_000.0;

    /// The effects of one input, but the performance marks.
    fn handle(machine: &mut CallMachine, input: Input) -> Vec<Effect> {
        machine.handle(NOW, input);
        std::iter::from_fn(|| machine.poll()).filter(|e| !matches!(e, Effect::Mark(_))).collect()
    }

    /// A message from the server itself, or relayed from a client that named no one.
    fn server(socket: u32, message: Message) -> Input {
        Input::Server { socket, from: None, message }
    }

    /// A message relayed from `name`, with the server's `from` stamp.
    fn from(socket: u32, name: &str, message: Message) -> Input {
        Input::Server { socket, from: Some(id_of(name)), message }
    }

    /// Each test person's peer id.
    fn id_of(name: &str) -> PeerId {
        PeerId(name.bytes().map(u64::from).sum())
    }

    /// A WELCOME to a room where `present` (if any) already is; this side is impolite toward
    /// them.
    fn welcome(present: bool, name: Option<&str>, policy: IceTransportPolicy) -> Message {
        let peers = if present { vec![info(name.unwrap_or("anonymous"))] } else { Vec::new() };
        welcome_to(peers, policy)
    }

    fn welcome_to(peers: Vec<PeerInfo>, policy: IceTransportPolicy) -> Message {
        Message::Welcome(Welcome {
            peer_id: PeerId(7),
            peer_present: !peers.is_empty(),
            polite: peers.first().is_some_and(|peer| peer.polite == Some(true)),
            peer_public_id: peers.first().and_then(|peer| peer.public_id.clone()),
            ice_servers: Vec::new(),
            ice_transport_policy: policy,
            peers,
        })
    }

    /// A WELCOME to a room where Alice and Bob already are: this side calls them both.
    fn join_alice_and_bob(machine: &mut CallMachine) -> Vec<Effect> {
        handle(machine, server(FIRST_SOCKET, welcome_to(vec![info("alice"), info("bob")], IceTransportPolicy::All)))
    }

    /// `name`, toward whom this side is impolite.
    fn info(name: &str) -> PeerInfo {
        PeerInfo { peer_id: id_of(name), polite: Some(false), public_id: Some(name.into()) }
    }

    fn peer(peer: u32, event: PeerEvent) -> Input {
        Input::Peer { peer, event }
    }

    fn sdp(kind: SdpType) -> SessionDescription {
        SessionDescription { kind, sdp: format!("v=0 {kind:?}") }
    }

    /// A first exchange's outcome: with an offer out there is no remote description yet.
    fn negotiated(signaling: Signaling, local: Option<SessionDescription>) -> PeerEvent {
        let has_remote_description = signaling != Signaling::HaveLocalOffer;
        PeerEvent::Negotiated(Negotiated { signaling, has_remote_description, local })
    }

    fn candidate(text: &str) -> IceCandidate {
        IceCandidate {
            candidate: text.into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }
    }

    fn statuses(effects: &[Effect]) -> Vec<CallStatus> {
        effects.iter().filter_map(|e| if let Effect::Status(s) = e { Some(s.clone()) } else { None }).collect()
    }

    fn has(effects: &[Effect], wanted: impl Fn(&Effect) -> bool) -> bool {
        effects.iter().any(wanted)
    }

    /// Start pressed, with the page's socket ready, and the camera and microphone granted.
    fn started() -> CallMachine {
        let mut machine = CallMachine::new(MediaChoice::CameraAndMicrophone, "", Box::new(|| 0.5));
        handle(&mut machine, Input::Start { socket_ready: true });
        handle(&mut machine, Input::MediaGranted { audio: true, camera: true });
        machine
    }

    /// A call this side made to "bob", connected; returns the connection's generation.
    fn connected_call() -> (CallMachine, u32) {
        let mut machine = started();
        let effects = handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let Some(Effect::CreatePeer { peer: generation, .. }) =
            effects.iter().find(|e| matches!(e, Effect::CreatePeer { .. })).cloned()
        else {
            panic!("no connection made: {effects:?}")
        };
        assert!(effects.contains(&Effect::Offer { peer: generation }), "{effects:?}");
        let offer = sdp(SdpType::Offer);
        let sent = handle(&mut machine, peer(generation, negotiated(Signaling::HaveLocalOffer, Some(offer.clone()))));
        assert!(sent.contains(&Effect::Send { to: Some(id_of("bob")), message: Message::Sdp(offer) }), "{sent:?}");
        let applied = handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Answer))));
        assert!(has(
            &applied,
            |e| matches!(e, Effect::Apply { description, .. } if description.kind == SdpType::Answer)
        ));
        handle(&mut machine, peer(generation, negotiated(Signaling::Stable, None)));
        let effects = handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Connected)));
        assert_eq!(statuses(&effects), [CallStatus::Connected(Vec::new())]);
        (machine, generation)
    }

    #[test]
    fn a_failed_screen_share_says_why_unless_the_person_cancelled() {
        assert_eq!(screen_share_failure(Some("NotAllowedError")), None);
        let found = screen_share_failure(Some("NotFoundError")).unwrap();
        assert!(found.contains("no screen or window") && found.contains("goes on with your camera"), "{found}");
        for other in [None, Some("TypeError"), Some("NotReadableError")] {
            let text = screen_share_failure(other).unwrap();
            assert!(text.starts_with("Screen sharing did not start: "), "{text}");
        }
    }

    #[test]
    fn start_joins_at_once_and_says_the_camera_is_starting_until_it_is_granted() {
        let mut machine = CallMachine::new(MediaChoice::CameraAndMicrophone, "", Box::new(|| 0.5));
        let effects = handle(&mut machine, Input::Start { socket_ready: true });
        assert!(
            effects.contains(&Effect::Join { name: None })
                && effects.contains(&Effect::RequestMedia(MediaChoice::CameraAndMicrophone))
        );
        assert_eq!(statuses(&effects), [CallStatus::StartingMedia]);
        // The call goes on meanwhile: the offer is made before the camera is on.
        let effects = handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        assert!(statuses(&effects).is_empty(), "still says the camera is starting: {effects:?}");
        assert!(effects.contains(&Effect::AddTransceivers { peer: 1, audio: false, video: Video::None }));
        assert!(effects.contains(&Effect::Offer { peer: 1 }));
        // Nothing to mute yet.
        assert!(handle(&mut machine, Input::Command(CallCommand::Microphone(false))).is_empty());
        let effects = handle(&mut machine, Input::MediaGranted { audio: true, camera: true });
        assert!(effects.contains(&Effect::StartSending { peer: 1, audio: true, video: Video::Camera }));
        assert_eq!(statuses(&effects), [CallStatus::Connecting]);
        let effects = handle(&mut machine, Input::Command(CallCommand::Microphone(false)));
        assert!(effects.contains(&Effect::EnableAudio(false)));
        assert!(effects.contains(&Effect::LocalMedia(MediaState { audio: false, video: true, screen: false })));
    }

    #[test]
    fn a_person_who_muted_or_turned_the_camera_off_before_start_joins_so() {
        let mut machine =
            CallMachine::new(MediaChoice::CameraAndMicrophone, "", Box::new(|| 0.5)).starting_with(false, false);
        handle(&mut machine, Input::Start { socket_ready: true });
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let effects = handle(&mut machine, Input::MediaGranted { audio: true, camera: true });
        // The microphone goes on its sender silent; the camera stays off the connection.
        assert!(effects.contains(&Effect::EnableAudio(false)), "{effects:?}");
        assert!(effects.contains(&Effect::ShowVideo(Video::None)));
        assert!(effects.contains(&Effect::StartSending { peer: 1, audio: true, video: Video::None }));
        assert!(effects.contains(&Effect::LocalMedia(MediaState { audio: false, video: false, screen: false })));
        // And both turn on as they do during a call.
        let effects = handle(&mut machine, Input::Command(CallCommand::Camera(true)));
        assert!(effects.contains(&Effect::ShowVideo(Video::Camera)), "{effects:?}");
        assert!(effects.contains(&Effect::SendVideo { peer: 1, video: Video::Camera }));
        let effects = handle(&mut machine, Input::Command(CallCommand::Microphone(true)));
        assert!(effects.contains(&Effect::EnableAudio(true)));
        assert!(effects.contains(&Effect::LocalMedia(MediaState { audio: true, video: true, screen: false })));
    }

    #[test]
    fn a_camera_refused_after_joining_tells_the_other_side_and_ends_the_call() {
        let mut machine = CallMachine::new(MediaChoice::CameraAndMicrophone, "", Box::new(|| 0.5));
        handle(&mut machine, Input::Start { socket_ready: true });
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let refused = Input::MediaRefused { name: Some("NotAllowedError".into()), description: "x".into() };
        let effects = handle(&mut machine, refused);
        assert!(effects.contains(&Effect::Send { to: Some(id_of("bob")), message: Message::Bye(None) }));
        assert!(effects.contains(&Effect::DropPeer { peer: 1 }) && effects.contains(&Effect::StopMedia));
        assert_eq!(statuses(&effects), [CallStatus::MediaUnavailable("permission was denied".into())]);
        assert!(machine.is_over());
    }

    #[test]
    fn a_welcome_after_a_signaling_outage_keeps_the_call_with_the_same_person() {
        let (mut machine, generation) = connected_call();
        let effects = handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        assert_eq!(statuses(&effects), [CallStatus::SignalingReconnecting]);
        assert!(!has(&effects, |e| matches!(e, Effect::DropPeer { .. })));
        let reconnect = Timer::Reconnect { socket: FIRST_SOCKET };
        assert!(has(&effects, |e| matches!(e, Effect::Arm { timer, .. } if *timer == reconnect)));
        let effects = handle(&mut machine, Input::Timer(reconnect));
        assert!(effects.contains(&Effect::OpenSocket { socket: FIRST_SOCKET + 1, name: None }));
        let effects =
            handle(&mut machine, server(FIRST_SOCKET + 1, welcome(true, Some("bob"), IceTransportPolicy::All)));
        assert_eq!(statuses(&effects), [CallStatus::Connected(Vec::new())]);
        assert!(!has(&effects, |e| matches!(e, Effect::DropPeer { peer } if *peer == generation)), "{effects:?}");
        assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. } | Effect::Offer { .. })), "{effects:?}");
        // Back first after a server restart: the other person is not there yet, but the media
        // still flows, so the call goes on and they will follow.
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET + 1, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET + 1 }));
        let effects = handle(&mut machine, server(FIRST_SOCKET + 2, welcome(false, None, IceTransportPolicy::All)));
        assert_eq!(statuses(&effects), [CallStatus::Connected(Vec::new())]);
        assert!(!has(&effects, |e| matches!(e, Effect::DropPeer { peer } if *peer == generation)), "{effects:?}");
        // Someone else in the room after the outage: a new call with them.
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET + 2, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET + 2 }));
        let effects =
            handle(&mut machine, server(FIRST_SOCKET + 3, welcome(true, Some("carol"), IceTransportPolicy::All)));
        assert!(effects.contains(&Effect::DropPeer { peer: generation }), "{effects:?}");
        assert!(has(&effects, |e| matches!(e, Effect::Offer { peer } if *peer != generation)), "{effects:?}");
    }

    #[test]
    fn peer_left_while_media_flows_keeps_the_call_but_not_a_connection_that_never_worked() {
        let (mut machine, _) = connected_call();
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerLeft(info("bob"))));
        assert_eq!(effects, [Effect::Everyone(Vec::new())], "only the room changed");
        // Their connection coming back is the same person: nothing to do but know their new id.
        let back = PeerInfo { peer_id: PeerId(99), ..info("bob") };
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(back)));
        assert_eq!(effects, [Effect::Everyone(vec![PeerId(99)])]);
        let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
        assert!(effects.contains(&Effect::Send { to: Some(PeerId(99)), message: Message::Bye(None) }));

        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerLeft(info("bob"))));
        assert!(effects.contains(&Effect::DropPeer { peer: 1 }) && effects.contains(&Effect::Remotes(Vec::new())));
        assert_eq!(statuses(&effects), [CallStatus::PeerLeft]);
        assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { peer: 2, .. })), "a standby: {effects:?}");
    }

    #[test]
    fn bye_ends_the_connection_and_the_next_person_is_answered_on_the_standby() {
        let (mut machine, generation) = connected_call();
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::Bye(None)));
        assert!(effects.contains(&Effect::DropPeer { peer: generation }));
        assert!(effects.contains(&Effect::Remotes(Vec::new())) && effects.contains(&Effect::Stats(None)));
        assert_eq!(statuses(&effects), [CallStatus::PeerLeft]);
        let standby = generation + 1;
        assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { peer, .. } if *peer == standby)));
        assert!(!machine.is_over());

        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
        assert_eq!(statuses(&effects), [CallStatus::Connecting]);
        assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. })), "the standby is used: {effects:?}");
        // The newcomer offers; this side does not, though the data channel asks to negotiate.
        assert!(handle(&mut machine, peer(standby, PeerEvent::NegotiationNeeded)).is_empty());
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer))));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::Apply { peer, audio: true, video: Video::Camera, .. } if *peer == standby)
        ));
    }

    fn events(effects: &[Effect]) -> Vec<&str> {
        effects.iter().filter_map(|e| if let Effect::Event(text) = e { Some(text.as_str()) } else { None }).collect()
    }

    #[test]
    fn the_page_is_told_who_joined_once_their_name_is_known_who_muted_and_who_left() {
        // Bob was there first: his arrival is no event.
        let (mut machine, bob) = connected_call();
        let open = handle(&mut machine, peer(bob, PeerEvent::ChannelOpen));
        let media = MediaState { audio: true, video: true, screen: false };
        let told = handle(&mut machine, peer(bob, PeerEvent::Message(PeerMessage::MediaState(media))));
        assert!(events(&open).is_empty() && events(&told).is_empty(), "{told:?}");

        // Carol comes after: she is named once her name (sent before her media state) is here,
        // and only once.
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
        let Some(Effect::CreatePeer { peer: carol, .. }) =
            effects.iter().find(|e| matches!(e, Effect::CreatePeer { .. })).cloned()
        else {
            panic!("no connection to carol: {effects:?}")
        };
        assert!(events(&effects).is_empty());
        handle(&mut machine, peer(carol, PeerEvent::ConnectionState(ConnectionState::Connected)));
        assert!(events(&handle(&mut machine, peer(carol, PeerEvent::Message(PeerMessage::Name("Carol".into())))))
            .is_empty());
        let effects = handle(&mut machine, peer(carol, PeerEvent::Message(PeerMessage::MediaState(media))));
        assert_eq!(events(&effects), ["Carol joined"]);
        // Her microphone going off and on is told; her camera is not.
        let muted = MediaState { audio: false, ..media };
        let said = |machine: &mut CallMachine, media| {
            events(&handle(machine, peer(carol, PeerEvent::Message(PeerMessage::MediaState(media))))).join("")
        };
        assert_eq!(said(&mut machine, muted), "Carol muted");
        assert_eq!(said(&mut machine, MediaState { video: false, ..muted }), "");
        assert_eq!(said(&mut machine, media), "Carol unmuted");

        // Her hang-up is an event; a newcomer who never connected leaving is not.
        let effects = handle(&mut machine, from(FIRST_SOCKET, "carol", Message::Bye(None)));
        assert_eq!(events(&effects), ["Carol left"]);
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("dave"))));
        assert!(events(&handle(&mut machine, from(FIRST_SOCKET, "dave", Message::Bye(None)))).is_empty());
        // Unnamed, in a call of two: the other person.
        assert_eq!(
            events(&handle(&mut machine, from(FIRST_SOCKET, "bob", Message::Bye(None)))),
            ["The other person left"]
        );
    }

    #[test]
    fn an_early_candidate_waits_for_its_description() {
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(false, None, IceTransportPolicy::All)));
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("bob"))));
        let early = candidate("candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host");
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::Candidate(Some(early.clone()))));
        assert!(effects.is_empty(), "{effects:?}");
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer))));
        assert!(!has(&effects, |e| matches!(e, Effect::AddCandidate { .. })), "{effects:?}");
        let answer = sdp(SdpType::Answer);
        let effects = handle(&mut machine, peer(1, negotiated(Signaling::Stable, Some(answer.clone()))));
        let added = effects
            .iter()
            .position(|e| *e == Effect::AddCandidate { peer: 1, candidate: early.clone(), failure_expected: false });
        let sent = effects
            .iter()
            .position(|e| *e == Effect::Send { to: Some(id_of("bob")), message: Message::Sdp(answer.clone()) });
        assert!(added.is_some() && sent.is_some(), "{effects:?}");
        // Once the description is there, a candidate applies at once; end of candidates needs nothing.
        let later = candidate("candidate:2 1 udp 1686052607 198.51.100.1 50001 typ srflx");
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::Candidate(Some(later.clone()))));
        assert_eq!(effects, [Effect::AddCandidate { peer: 1, candidate: later, failure_expected: false }]);
        assert!(handle(&mut machine, server(FIRST_SOCKET, Message::Candidate(None))).is_empty());
    }

    #[test]
    fn an_offer_collision_is_settled_by_the_role() {
        // This side (impolite, from `welcome`) has an offer out: the other side's is ignored,
        // and its candidates may fail to apply.
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let outcome = Negotiated { signaling: Signaling::HaveLocalOffer, has_remote_description: false, local: None };
        handle(&mut machine, peer(1, PeerEvent::Negotiated(outcome)));
        assert!(handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer)))).is_empty());
        let mut polite = started();
        let bob = PeerInfo { polite: Some(true), ..info("bob") };
        handle(&mut polite, server(FIRST_SOCKET, welcome_to(vec![bob], IceTransportPolicy::All)));
        let outcome = Negotiated { signaling: Signaling::HaveLocalOffer, has_remote_description: false, local: None };
        handle(&mut polite, peer(1, PeerEvent::Negotiated(outcome)));
        // The polite side takes the other side's offer (rolling its own back).
        let effects = handle(&mut polite, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer))));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::Apply { description, .. } if description.kind == SdpType::Offer)
        ));
        handle(&mut polite, peer(1, negotiated(Signaling::Stable, Some(sdp(SdpType::Answer)))));
        // The answer to the offer it rolled back is stale now: dropped.
        assert!(handle(&mut polite, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Answer)))).is_empty());
    }

    #[test]
    fn ice_restarts_after_a_grace_period_and_again_while_the_path_stays_broken() {
        let (mut machine, generation) = connected_call();
        let check = Timer::IceCheck { peer: generation };
        let effects = handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Disconnected)));
        assert_eq!(statuses(&effects), [CallStatus::ConnectionInterrupted]);
        assert!(effects.contains(&Effect::Arm { timer: check, after_ms: DISCONNECTED_GRACE_MS }));
        assert!(!has(&effects, |e| matches!(e, Effect::RestartIce { .. })), "not yet: {effects:?}");
        let effects = handle(&mut machine, Input::Timer(check));
        assert!(effects.contains(&Effect::RestartIce { peer: generation }));
        assert!(effects.contains(&Effect::Arm { timer: check, after_ms: ICE_RETRY_MS }));
        // Still broken at the next look: again.
        assert!(handle(&mut machine, Input::Timer(check)).contains(&Effect::RestartIce { peer: generation }));
        // Back: the pending look finds nothing to do.
        handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Connected)));
        assert!(handle(&mut machine, Input::Timer(check)).is_empty());
        // `failed` restarts at once.
        let effects = handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Failed)));
        assert!(effects.contains(&Effect::RestartIce { peer: generation }), "{effects:?}");
        // With signaling down, a restart could not reach the other side: look again later.
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        let effects = handle(&mut machine, Input::Timer(check));
        assert_eq!(effects, [Effect::Arm { timer: check, after_ms: ICE_RETRY_MS }]);
    }

    #[test]
    fn a_dead_connection_to_someone_who_left_is_followed_by_a_standby() {
        let (mut machine, generation) = connected_call();
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerLeft(info("bob"))));
        let effects = handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Failed)));
        assert!(effects.contains(&Effect::DropPeer { peer: generation }));
        assert!(!has(&effects, |e| matches!(e, Effect::RestartIce { .. })));
        assert_eq!(statuses(&effects), [CallStatus::PeerLeft]);
        assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { .. })));
    }

    #[test]
    fn reconnect_delays_double_from_a_quarter_second_up_to_five_seconds_with_jitter() {
        assert_eq!(reconnect_delay_ms(0, 0.0), 125);
        assert_eq!(reconnect_delay_ms(0, 1.0), 250);
        assert_eq!(reconnect_delay_ms(1, 1.0), 500);
        assert_eq!(reconnect_delay_ms(4, 1.0), 4_000);
        for attempt in [5, 10, 11, 1_000, u32::MAX] {
            assert_eq!(reconnect_delay_ms(attempt, 1.0), 5_000);
            assert_eq!(reconnect_delay_ms(attempt, 0.0), 2_500);
        }
        // The machine counts attempts until a WELCOME, which starts them over.
        let (mut machine, _) = connected_call();
        let mut delays = Vec::new();
        for socket in FIRST_SOCKET..FIRST_SOCKET + 6 {
            let effects = handle(&mut machine, Input::SocketClosed { socket, code: ABNORMAL_CLOSURE });
            let Some(Effect::Arm { after_ms, .. }) = effects.iter().find(|e| matches!(e, Effect::Arm { .. })) else {
                panic!("no reconnect: {effects:?}")
            };
            delays.push(*after_ms);
            assert_eq!(
                handle(&mut machine, Input::Timer(Timer::Reconnect { socket })).last(),
                Some(&Effect::OpenSocket { socket: socket + 1, name: None })
            );
        }
        assert_eq!(delays, [187, 375, 750, 1_500, 3_000, 3_750]);
        handle(&mut machine, server(FIRST_SOCKET + 6, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let effects = handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET + 6, code: ABNORMAL_CLOSURE });
        assert!(has(&effects, |e| matches!(e, Effect::Arm { after_ms: 187, .. })), "{effects:?}");
    }

    #[test]
    fn a_turn_refusal_says_so_when_only_the_relay_may_be_used() {
        // The standby connection learns it while this side waits alone.
        let mut machine = started();
        let effects = handle(&mut machine, server(FIRST_SOCKET, welcome(false, None, IceTransportPolicy::Relay)));
        assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { peer: 1, policy: IceTransportPolicy::Relay, .. })));
        let refused = PeerEvent::IceServerError { code: 401, url: "turn:192.0.2.1:3478".into() };
        let effects = handle(&mut machine, peer(1, refused.clone()));
        assert!(statuses(&effects).is_empty(), "no one to connect to yet: {effects:?}");
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("bob"))));
        assert_eq!(statuses(&effects), [CallStatus::TurnRefused]);
        assert!(CallStatus::TurnRefused.text().contains("refused our credentials"));

        // Where direct paths are allowed too, the call tries them, and only their failure says why.
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        assert!(statuses(&handle(&mut machine, peer(1, refused))).is_empty());
        let effects = handle(&mut machine, Input::Timer(Timer::ConnectTimeout { peer: 1 }));
        assert_eq!(statuses(&effects), [CallStatus::TurnRefused]);

        // A new WELCOME brings new credentials: the refusal is forgotten.
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::Relay)));
        let effects = handle(&mut machine, peer(1, PeerEvent::IceServerError { code: 401, url: "turn:x".into() }));
        assert_eq!(statuses(&effects), [CallStatus::TurnRefused]);
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        let carol = offering(welcome(true, Some("carol"), IceTransportPolicy::Relay), &["turn:192.0.2.1:3478"]);
        let effects = handle(&mut machine, server(FIRST_SOCKET + 1, carol));
        assert_eq!(statuses(&effects), [CallStatus::Connecting]);
        let effects = handle(&mut machine, Input::Timer(Timer::ConnectTimeout { peer: 2 }));
        assert_eq!(statuses(&effects), [CallStatus::RelayFailed]);
    }

    /// `welcome` offering these ICE servers, TURN ones with credentials as the server gives them.
    fn offering(welcome: Message, urls: &[&str]) -> Message {
        let Message::Welcome(welcome) = welcome else { panic!("not a WELCOME: {welcome:?}") };
        let ice_servers = urls
            .iter()
            .map(|url| {
                let credentials = is_relay(url).then(|| "1700000000:7".to_owned());
                IceServer { urls: vec![url.to_string()], username: credentials.clone(), credential: credentials }
            })
            .collect();
        Message::Welcome(Welcome { ice_servers, ..welcome })
    }

    /// This side called Bob with these ICE servers, and the offer and answer are exchanged;
    /// the browser is checking candidate pairs. Returns the statuses said so far.
    fn calling_bob(machine: &mut CallMachine, urls: &[&str]) -> Vec<CallStatus> {
        let effects =
            handle(machine, server(FIRST_SOCKET, offering(welcome(true, Some("bob"), IceTransportPolicy::All), urls)));
        let mut said = statuses(&effects);
        handle(machine, peer(1, negotiated(Signaling::HaveLocalOffer, Some(sdp(SdpType::Offer)))));
        handle(machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Answer))));
        handle(machine, peer(1, negotiated(Signaling::Stable, None)));
        said.extend(statuses(&handle(machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Connecting)))));
        said
    }

    fn restarts_or_looks_again(effects: &[Effect]) -> bool {
        has(effects, |e| matches!(e, Effect::RestartIce { .. } | Effect::Arm { timer: Timer::IceCheck { .. }, .. }))
    }

    #[test]
    fn a_call_that_never_connects_and_has_no_relay_says_once_that_one_is_needed_and_retries_nothing() {
        // STUN only: each browser learns its public address, but NATs that map every destination
        // to a new port (symmetric) let no pair of candidates through.
        let mut machine = started();
        assert_eq!(calling_bob(&mut machine, &["stun:192.0.2.1:3478"]), [CallStatus::Connecting]);
        // A never-connected connection that the browser calls `disconnected` is not "interrupted".
        let effects = handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Disconnected)));
        assert!(statuses(&effects).is_empty() && !restarts_or_looks_again(&effects), "{effects:?}");
        // The browser gives up (before the page's own timeout): said at once, and nothing restarts.
        let effects = handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Failed)));
        assert_eq!(statuses(&effects), [CallStatus::NeedsRelay]);
        assert!(!restarts_or_looks_again(&effects), "{effects:?}");
        let text = CallStatus::NeedsRelay.text();
        assert_eq!(
            text,
            "Could not connect: your networks need a relay (TURN) server, and none was offered for this call. \
             Ask whoever runs this server to set one up."
        );
        // Then nothing more by itself: the page's timeout, the statistics ticks and the browser
        // saying it again change nothing, so screen readers hear it once.
        for (at_ms, input) in [
            (5_000.0, Input::Timer(Timer::ConnectTimeout { peer: 1 })),
            (5_500.0, Input::Timer(Timer::StatsTick { peer: 1 })),
            (6_000.0, peer(1, PeerEvent::Stats(Vec::new()))),
            (7_000.0, peer(1, PeerEvent::ConnectionState(ConnectionState::Failed))),
            (60_000.0, Input::Timer(Timer::StatsTick { peer: 1 })),
        ] {
            let effects = handle_at(&mut machine, at_ms, input);
            assert!(statuses(&effects).is_empty() && !restarts_or_looks_again(&effects), "{effects:?}");
        }
        // Something new to try: signaling comes back, and Bob is called afresh.
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        let back = offering(welcome(true, Some("bob"), IceTransportPolicy::All), &["stun:192.0.2.1:3478"]);
        let effects = handle(&mut machine, server(FIRST_SOCKET + 1, back));
        assert!(effects.contains(&Effect::DropPeer { peer: 1 }) && effects.contains(&Effect::Offer { peer: 2 }));
        assert_eq!(statuses(&effects), [CallStatus::Connecting]);

        // Waiting for the browser is not all: a browser that never gives up is given up on after
        // the page's timeout, with the same words. No ICE server at all is no relay either.
        let mut machine = started();
        calling_bob(&mut machine, &[]);
        let effects = handle(&mut machine, Input::Timer(Timer::ConnectTimeout { peer: 1 }));
        assert_eq!(statuses(&effects), [CallStatus::NeedsRelay]);
        // And if it connects after all, it is a call.
        let effects = handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Connected)));
        assert_eq!(statuses(&effects), [CallStatus::Connected(Vec::new())]);
    }

    #[test]
    fn a_call_that_cannot_connect_even_through_the_relay_says_so_in_other_words() {
        for relay in ["turn:192.0.2.1:3478?transport=tcp", "turns:relay.example:443"] {
            let mut machine = started();
            calling_bob(&mut machine, &["stun:192.0.2.1:3478", relay]);
            let effects = handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Failed)));
            assert_eq!(statuses(&effects), [CallStatus::RelayFailed], "{relay}");
            assert!(!restarts_or_looks_again(&effects), "{effects:?}");
        }
        let text = CallStatus::RelayFailed.text();
        assert!(text.starts_with("Could not connect, not even through the relay (TURN) server"), "{text}");
        assert!(text.contains("Ask whoever runs this server") && !text.contains("none was offered"), "{text}");
        // The answering side fails the same way, and says the same.
        let mut machine = started();
        let welcome = offering(welcome(false, None, IceTransportPolicy::All), &["turn:192.0.2.1:3478"]);
        handle(&mut machine, server(FIRST_SOCKET, welcome));
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("bob"))));
        handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer))));
        handle(&mut machine, peer(1, negotiated(Signaling::Stable, Some(sdp(SdpType::Answer)))));
        let effects = handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Failed)));
        assert_eq!(statuses(&effects), [CallStatus::RelayFailed]);
    }

    #[test]
    fn a_call_that_worked_and_broke_says_interrupted_once_however_often_ice_restarts() {
        let (mut machine, generation) = connected_call();
        let state = |state| peer(generation, PeerEvent::ConnectionState(state));
        let check = Input::Timer(Timer::IceCheck { peer: generation });
        let mut said = Vec::new();
        let mut restarts = 0;
        // Broken for a while: each restart makes the browser check again (`connecting`) and,
        // while the path stays down, give up again (`failed`).
        for input in [
            state(ConnectionState::Disconnected),
            check.clone(),
            state(ConnectionState::Failed),
            state(ConnectionState::Connecting),
            check.clone(),
            state(ConnectionState::Failed),
            Input::Timer(Timer::ConnectTimeout { peer: generation }),
            state(ConnectionState::Connecting),
            check.clone(),
            state(ConnectionState::Connected),
            // A look armed while it was broken finds it back.
            check,
        ] {
            let effects = handle(&mut machine, input);
            said.extend(statuses(&effects));
            restarts += effects.iter().filter(|e| matches!(e, Effect::RestartIce { .. })).count();
        }
        assert_eq!(said, [CallStatus::ConnectionInterrupted, CallStatus::Connected(Vec::new())]);
        // At the grace period's end and at each `failed`; a look while the browser checks again
        // leaves that restart to finish.
        assert_eq!(restarts, 3);
    }

    #[test]
    fn a_stale_event_after_hang_up_changes_nothing() {
        let (mut machine, generation) = connected_call();
        let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
        assert_eq!(effects.first(), Some(&Effect::Send { to: Some(id_of("bob")), message: Message::Bye(None) }));
        assert!(effects.contains(&Effect::DropPeer { peer: generation }) && effects.contains(&Effect::StopMedia));
        assert_eq!(effects.last(), Some(&Effect::Status(CallStatus::Ended)));
        assert!(machine.is_over());
        for late in [
            peer(generation, PeerEvent::RemoteTrack),
            peer(generation, PeerEvent::ConnectionState(ConnectionState::Failed)),
            server(FIRST_SOCKET, Message::Bye(None)),
            Input::Timer(Timer::StatsTick { peer: generation }),
            Input::MediaGranted { audio: true, camera: true },
        ] {
            assert!(handle(&mut machine, late).is_empty());
        }
    }

    #[test]
    fn events_of_a_connection_or_socket_already_replaced_change_nothing() {
        let (mut machine, old) = connected_call();
        handle(&mut machine, server(FIRST_SOCKET, Message::Bye(None)));
        // Someone new is answered on the standby: the old connection's events are not theirs.
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
        for late in [
            PeerEvent::RemoteTrack,
            PeerEvent::ConnectionState(ConnectionState::Connected),
            PeerEvent::LocalCandidate(None),
            PeerEvent::Message(PeerMessage::MediaState(MediaState { audio: true, video: true, screen: false })),
            PeerEvent::NegotiationNeeded,
        ] {
            assert!(handle(&mut machine, peer(old, late)).is_empty());
        }
        for timer in
            [Timer::ConnectTimeout { peer: old }, Timer::IceCheck { peer: old }, Timer::StatsTick { peer: old }]
        {
            assert!(handle(&mut machine, Input::Timer(timer)).is_empty());
        }
        // The same events from the connection in use do count.
        let current = old + 1;
        assert!(!handle(&mut machine, peer(current, PeerEvent::RemoteTrack)).is_empty());
        assert!(!handle(&mut machine, Input::Timer(Timer::StatsTick { peer: current })).is_empty());
        // A socket's messages and close after a newer socket replaced it.
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        assert!(handle(&mut machine, server(FIRST_SOCKET, Message::Bye(None))).is_empty());
        assert!(handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: 1000 }).is_empty());
        // Only one reconnect per drop, even if an old timer fires again.
        assert!(handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET })).is_empty());
        // The new socket's do count.
        handle(&mut machine, server(FIRST_SOCKET + 1, welcome(true, Some("carol"), IceTransportPolicy::All)));
        let effects = handle(&mut machine, from(FIRST_SOCKET + 1, "carol", Message::Bye(None)));
        assert_eq!(statuses(&effects), [CallStatus::PeerLeft]);
    }

    #[test]
    fn no_second_offer_while_one_is_out_and_candidates_of_an_ignored_offer_may_fail() {
        let (mut machine, generation) = connected_call();
        // An ICE restart: this side offers again, and asks no more while the offer is out.
        assert_eq!(
            handle(&mut machine, peer(generation, PeerEvent::NegotiationNeeded)),
            [Effect::Offer { peer: generation }]
        );
        let out = Negotiated { signaling: Signaling::HaveLocalOffer, has_remote_description: true, local: None };
        handle(&mut machine, peer(generation, PeerEvent::Negotiated(out)));
        assert!(handle(&mut machine, peer(generation, PeerEvent::NegotiationNeeded)).is_empty());
        // Their offer collides with ours; this side is impolite, so it is ignored, and the
        // candidates that come with it may fail to apply.
        assert!(handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer)))).is_empty());
        let theirs = candidate("candidate:9 1 udp 1 192.0.2.9 9 typ host");
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::Candidate(Some(theirs.clone()))));
        assert_eq!(effects, [Effect::AddCandidate { peer: generation, candidate: theirs, failure_expected: true }]);
        // Our answer comes; stable again, the next negotiation may be offered.
        handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Answer))));
        handle(&mut machine, peer(generation, negotiated(Signaling::Stable, None)));
        assert_eq!(
            handle(&mut machine, peer(generation, PeerEvent::NegotiationNeeded)),
            [Effect::Offer { peer: generation }]
        );
    }

    #[test]
    fn an_outcome_is_acted_on_before_the_rest_of_its_batch() {
        let mut machine = started();
        machine.handle(NOW, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        while machine.poll().is_some_and(|effect| !matches!(effect, Effect::CreatePeer { .. })) {}
        // What a step reports while the rest of its batch waits is acted on at once.
        machine.handle(NOW, peer(1, PeerEvent::Stats(Vec::new())));
        assert_eq!(machine.poll(), Some(Effect::Stats(Some(CallStats::default()))));
        assert!(matches!(machine.poll(), Some(Effect::Arm { timer: Timer::ConnectTimeout { .. }, .. })));
    }

    #[test]
    fn a_full_room_ends_the_call_and_other_refusals_do_not() {
        let mut machine = started();
        let refusal = Message::Error(ErrorBody { code: ErrorCode::RateLimited, message: "slow down".into() });
        let effects = handle(&mut machine, server(FIRST_SOCKET, refusal));
        assert!(matches!(effects.as_slice(), [Effect::Warn(text)] if text.contains("slow down")));
        let effects = handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: close_code::ROOM_FULL });
        assert_eq!(effects.last(), Some(&Effect::Status(CallStatus::RoomFull)));
        assert!(machine.is_over());
    }

    #[test]
    fn chat_typed_before_the_channel_opens_is_sent_when_it_opens() {
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        let effects = handle(&mut machine, Input::Command(CallCommand::Chat("hello".into())));
        let message = ChatMessage { text: "hello".into(), sent_at: NOW as u64 };
        assert_eq!(effects, [Effect::Chat(ChatLine { from: Author::You, text: "hello".into(), sent_at: NOW as u64 })]);
        let effects = handle(&mut machine, peer(1, PeerEvent::ChannelOpen));
        let media = PeerMessage::MediaState(MediaState { audio: true, video: true, screen: false });
        assert!(effects.contains(&Effect::ToPeer { peer: 1, message: media }));
        assert!(effects.contains(&Effect::ToPeer { peer: 1, message: PeerMessage::Chat(message.clone()) }));
        // A message the closing channel would not take waits for it to open again.
        let effects = handle(&mut machine, peer(1, PeerEvent::Undelivered(PeerMessage::Chat(message.clone()))));
        assert!(effects.is_empty());
        let effects = handle(&mut machine, peer(1, PeerEvent::ChannelOpen));
        assert!(effects.contains(&Effect::ToPeer { peer: 1, message: PeerMessage::Chat(message) }));
        // Closed again: chat waits once more.
        handle(&mut machine, peer(1, PeerEvent::ChannelClosed));
        assert!(!has(&handle(&mut machine, Input::Command(CallCommand::Chat("again".into()))), |e| matches!(
            e,
            Effect::ToPeer { .. }
        )));
    }

    #[test]
    fn statistics_are_read_regularly_for_the_connection_in_use() {
        let (mut machine, generation) = connected_call();
        let tick = Timer::StatsTick { peer: generation };
        let effects = handle(&mut machine, Input::Timer(tick));
        assert_eq!(
            effects,
            [Effect::GetStats { peer: generation }, Effect::Arm { timer: tick, after_ms: STATS_EVERY_MS }]
        );
        let reports = crate::call::stats::tests::parse(vec![
            serde_json::json!({"id": "i", "type": "inbound-rtp", "kind": "audio", "packetsLost": 1, "packetsReceived": 3}),
        ]);
        let effects = handle(&mut machine, peer(generation, PeerEvent::Stats(reports)));
        let [Effect::Stats(Some(stats))] = effects.as_slice() else { panic!("{effects:?}") };
        assert_eq!(stats.packet_loss_percent, 25.0);
    }

    #[test]
    fn screen_sharing_sends_the_screen_and_a_refusal_explains_itself() {
        let (mut machine, generation) = connected_call();
        assert_eq!(handle(&mut machine, Input::Command(CallCommand::ShareScreen(true))), [Effect::PickScreen]);
        let effects = handle(&mut machine, Input::ScreenPicked(Ok(())));
        assert!(effects.contains(&Effect::SendVideo { peer: generation, video: Video::Screen }));
        assert!(effects.contains(&Effect::LocalMedia(MediaState { audio: true, video: true, screen: true })));
        // Camera off while sharing: the screen is still what goes out.
        let effects = handle(&mut machine, Input::Command(CallCommand::Camera(false)));
        assert!(effects.contains(&Effect::SendVideo { peer: generation, video: Video::Screen }));
        let effects = handle(&mut machine, Input::ScreenEnded);
        assert!(effects.contains(&Effect::StopScreen));
        assert!(effects.contains(&Effect::SendVideo { peer: generation, video: Video::None }));
        let effects = handle(&mut machine, Input::ScreenPicked(Err(Some("NotFoundError".into()))));
        assert!(matches!(effects.as_slice(), [Effect::Notice(Some(text))] if text.contains("no screen or window")));
        assert_eq!(
            handle(&mut machine, Input::ScreenPicked(Err(Some("NotAllowedError".into())))),
            [Effect::Notice(None)]
        );
    }

    #[test]
    fn a_new_camera_or_microphone_goes_on_the_sender_as_the_person_left_it() {
        let (mut machine, generation) = connected_call();
        handle(&mut machine, Input::Command(CallCommand::Microphone(false)));
        let camera = Device { id: "cam-2".into(), label: "Second camera".into(), is_camera: true };
        let effects = handle(&mut machine, Input::Command(CallCommand::UseDevice(camera.clone())));
        assert_eq!(effects, [Effect::OpenDevice(camera)]);
        let effects = handle(&mut machine, Input::DeviceOpened { is_camera: true });
        assert!(effects.contains(&Effect::ShowVideo(Video::Camera)));
        assert!(effects.contains(&Effect::SendVideo { peer: generation, video: Video::Camera }));
        // A new microphone stays muted.
        let effects = handle(&mut machine, Input::DeviceOpened { is_camera: false });
        assert!(effects.contains(&Effect::EnableAudio(false)));
        assert!(effects.contains(&Effect::SendAudio { peer: generation }));
    }

    #[test]
    fn a_negotiation_step_that_failed_sends_nothing_and_offers_nothing_until_stable() {
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(false, None, IceTransportPolicy::All)));
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("bob"))));
        handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Offer))));
        let early = candidate("candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host");
        handle(&mut machine, server(FIRST_SOCKET, Message::Candidate(Some(early))));
        // Neither description took: the browser is not stable and has no remote description.
        let failed = Negotiated { signaling: Signaling::Other, has_remote_description: false, local: None };
        assert!(handle(&mut machine, peer(1, PeerEvent::Negotiated(failed))).is_empty());
        assert!(handle(&mut machine, peer(1, PeerEvent::NegotiationNeeded)).is_empty());
        // Connecting, or a connection closed under it, changes nothing by itself either.
        for state in [ConnectionState::Connecting, ConnectionState::Closed] {
            assert!(handle(&mut machine, peer(1, PeerEvent::ConnectionState(state))).is_empty());
        }
    }

    /// Everyone's effects of kind `Send`, as (recipient, message type).
    fn sends(effects: &[Effect]) -> Vec<(Option<PeerId>, &'static str)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, message } => Some((
                    *to,
                    match message {
                        Message::Sdp(_) => "SDP",
                        Message::Bye(_) => "BYE",
                        Message::Candidate(_) => "CANDIDATE",
                        _ => "other",
                    },
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_newcomer_calls_everyone_already_there_and_each_pair_settles_collisions_by_its_role() {
        let mut machine = started();
        let alice = info("alice");
        let bob = PeerInfo { polite: Some(true), ..info("bob") };
        let effects = handle(&mut machine, server(FIRST_SOCKET, welcome_to(vec![alice, bob], IceTransportPolicy::All)));
        for peer in [1, 2] {
            assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { peer: p, .. } if *p == peer)), "{effects:?}");
            assert!(effects.contains(&Effect::Offer { peer }), "{effects:?}");
        }
        let offer = Some(sdp(SdpType::Offer));
        let sent = handle(&mut machine, peer(1, negotiated(Signaling::HaveLocalOffer, offer.clone())));
        assert_eq!(sends(&sent), [(Some(id_of("alice")), "SDP")]);
        let sent = handle(&mut machine, peer(2, negotiated(Signaling::HaveLocalOffer, offer)));
        assert_eq!(sends(&sent), [(Some(id_of("bob")), "SDP")]);
        // Both offer back at the same moment: toward Alice this side is impolite and ignores
        // hers; toward Bob it is polite and takes his.
        assert!(handle(&mut machine, from(FIRST_SOCKET, "alice", Message::Sdp(sdp(SdpType::Offer)))).is_empty());
        let effects = handle(&mut machine, from(FIRST_SOCKET, "bob", Message::Sdp(sdp(SdpType::Offer))));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::Apply { peer: 2, description, .. } if description.kind == SdpType::Offer)
        ));
        // A message with no sender among several is no one's.
        assert!(handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Answer)))).is_empty());
    }

    #[test]
    fn those_already_there_answer_each_newcomer_and_the_call_goes_on_when_one_leaves() {
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(false, None, IceTransportPolicy::All)));
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("bob"))));
        assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. })), "Bob is answered on the standby");
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
        assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { peer: 2, .. })), "{effects:?}");
        assert!(effects.contains(&Effect::Everyone(vec![id_of("bob"), id_of("carol")])));
        // Each offer is answered on its sender's connection, each answer goes back to its sender.
        for (name, generation) in [("carol", 2), ("bob", 1)] {
            let effects = handle(&mut machine, from(FIRST_SOCKET, name, Message::Sdp(sdp(SdpType::Offer))));
            assert!(has(&effects, |e| matches!(e, Effect::Apply { peer, .. } if *peer == generation)), "{effects:?}");
            let answered =
                handle(&mut machine, peer(generation, negotiated(Signaling::Stable, Some(sdp(SdpType::Answer)))));
            assert_eq!(sends(&answered), [(Some(id_of(name)), "SDP")]);
        }
        let effects = handle(&mut machine, peer(2, PeerEvent::ConnectionState(ConnectionState::Connected)));
        assert_eq!(statuses(&effects), [CallStatus::Connected(vec!["Guest 2".into()])]);
        handle(&mut machine, peer(2, PeerEvent::RemoteTrack));
        handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Connected)));
        let effects = handle(&mut machine, peer(1, PeerEvent::RemoteTrack));
        let tiles = [
            Remote { peer: 1, number: 1, receiving: true, media: None, name: None, speaking: false },
            Remote { peer: 2, number: 2, receiving: true, media: None, name: None, speaking: false },
        ];
        assert_eq!(effects, [Effect::Remotes(tiles.to_vec())], "in the order they came");
        // One connection failing while another works: still in the call, with the other one.
        let effects = handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Failed)));
        assert!(effects.contains(&Effect::RestartIce { peer: 1 }));
        assert_eq!(statuses(&effects), [CallStatus::Connected(vec!["Guest 2".into()])]);
        handle(&mut machine, peer(1, PeerEvent::ConnectionState(ConnectionState::Connected)));
        // Carol hangs up: her tile goes, Bob's stays, and so does the call (of two now).
        let effects = handle(&mut machine, from(FIRST_SOCKET, "carol", Message::Bye(None)));
        assert!(effects.contains(&Effect::DropPeer { peer: 2 }));
        assert!(effects.contains(&Effect::Remotes(vec![tiles[0].clone()])));
        assert_eq!(statuses(&effects), [CallStatus::Connected(Vec::new())]);
        assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. })));
        // What she sent late changes nothing.
        assert!(handle(&mut machine, from(FIRST_SOCKET, "carol", Message::Candidate(Some(candidate("c"))))).is_empty());
    }

    #[test]
    fn chat_media_state_and_the_hang_up_go_to_everyone() {
        let mut machine = started();
        join_alice_and_bob(&mut machine);
        handle(&mut machine, peer(1, PeerEvent::ChannelOpen));
        // Bob's channel is not open yet: his copy waits for it.
        let effects = handle(&mut machine, Input::Command(CallCommand::Chat("hi all".into())));
        let chat = PeerMessage::Chat(ChatMessage { text: "hi all".into(), sent_at: NOW as u64 });
        assert!(effects.contains(&Effect::ToPeer { peer: 1, message: chat.clone() }));
        assert!(!has(&effects, |e| matches!(e, Effect::ToPeer { peer: 2, .. })));
        let effects = handle(&mut machine, peer(2, PeerEvent::ChannelOpen));
        assert!(effects.contains(&Effect::ToPeer { peer: 2, message: chat }));
        let effects = handle(&mut machine, Input::Command(CallCommand::Microphone(false)));
        let muted = PeerMessage::MediaState(MediaState { audio: false, video: true, screen: false });
        for generation in [1, 2] {
            assert!(effects.contains(&Effect::ToPeer { peer: generation, message: muted.clone() }));
        }
        let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
        assert_eq!(sends(&effects), [(Some(id_of("alice")), "BYE"), (Some(id_of("bob")), "BYE")]);
        assert!(effects.contains(&Effect::DropPeer { peer: 1 }) && effects.contains(&Effect::DropPeer { peer: 2 }));
    }

    /// The caps set, as (connection, cap).
    fn caps(effects: &[Effect]) -> Vec<(u32, Option<u32>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::CapVideo { peer, max_bps } => Some((*peer, *max_bps)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_a_group_each_connection_gets_a_share_of_one_calls_video_and_a_call_of_two_no_cap() {
        let mut machine = started();
        let effects = handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        assert!(caps(&effects).is_empty(), "a call of two is not capped: {effects:?}");
        handle(&mut machine, peer(1, negotiated(Signaling::HaveLocalOffer, Some(sdp(SdpType::Offer)))));
        handle(&mut machine, server(FIRST_SOCKET, Message::Sdp(sdp(SdpType::Answer))));
        assert!(caps(&handle(&mut machine, peer(1, negotiated(Signaling::Stable, None)))).is_empty());

        let mut machine = started();
        let effects = join_alice_and_bob(&mut machine);
        assert_eq!(caps(&effects), [(1, Some(1_250_000)), (2, Some(1_250_000))]);
        // Once a negotiation is done the sender has encodings: capped again, in case it had none.
        handle(&mut machine, peer(1, negotiated(Signaling::HaveLocalOffer, Some(sdp(SdpType::Offer)))));
        handle(&mut machine, from(FIRST_SOCKET, "alice", Message::Sdp(sdp(SdpType::Answer))));
        let effects = handle(&mut machine, peer(1, negotiated(Signaling::Stable, None)));
        assert_eq!(caps(&effects), [(1, Some(1_250_000))]);
        // A third other person: everyone's share shrinks.
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
        assert_eq!(caps(&effects), [(1, Some(833_333)), (2, Some(833_333)), (3, Some(833_333))]);
        // Back to one other person: no cap.
        handle(&mut machine, from(FIRST_SOCKET, "carol", Message::Bye(None)));
        let effects = handle(&mut machine, from(FIRST_SOCKET, "bob", Message::Bye(None)));
        assert_eq!(caps(&effects), [(1, None)]);
        // The last one goes too: the page says the group, not one person, left.
        let effects = handle(&mut machine, from(FIRST_SOCKET, "alice", Message::Bye(None)));
        assert_eq!(statuses(&effects), [CallStatus::OthersLeft]);
        assert_eq!(CallStatus::OthersLeft.text(), "Everyone else left. Waiting for someone to join…");
    }

    #[test]
    fn after_an_outage_a_known_person_keeps_their_call_under_their_new_peer_id() {
        let (mut machine, generation) = connected_call();
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        let bob = PeerInfo { peer_id: PeerId(99), ..info("bob") };
        let effects = handle(&mut machine, server(FIRST_SOCKET + 1, welcome_to(vec![bob], IceTransportPolicy::All)));
        assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. } | Effect::Offer { .. })), "{effects:?}");
        // What Bob sends now comes from his new id, and goes to the same connection.
        let message = Input::Server {
            socket: FIRST_SOCKET + 1,
            from: Some(PeerId(99)),
            message: Message::Candidate(Some(candidate("c"))),
        };
        let effects = handle(&mut machine, message);
        assert!(
            has(&effects, |e| matches!(e, Effect::AddCandidate { peer, .. } if *peer == generation)),
            "{effects:?}"
        );
        let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
        assert_eq!(sends(&effects), [(Some(PeerId(99)), "BYE")]);
    }

    #[test]
    fn a_connection_that_never_connected_is_started_afresh_on_both_sides_after_an_outage() {
        // The caller's side: the WELCOME after the outage calls them again on a new connection.
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(true, Some("bob"), IceTransportPolicy::All)));
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        let effects =
            handle(&mut machine, server(FIRST_SOCKET + 1, welcome(true, Some("bob"), IceTransportPolicy::All)));
        assert!(effects.contains(&Effect::DropPeer { peer: 1 }), "{effects:?}");
        assert!(effects.contains(&Effect::Offer { peer: 2 }), "{effects:?}");
        // The answering side: their coming back makes a new connection to answer on.
        let mut machine = started();
        handle(&mut machine, server(FIRST_SOCKET, welcome(false, None, IceTransportPolicy::All)));
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("bob"))));
        handle(&mut machine, server(FIRST_SOCKET, Message::PeerLeft(info("bob"))));
        let back = PeerInfo { peer_id: PeerId(99), ..info("bob") };
        let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(back)));
        assert!(!has(&effects, |e| matches!(e, Effect::Offer { .. })), "they call: {effects:?}");
        let effects = handle(&mut machine, from(FIRST_SOCKET, "bob", Message::Sdp(sdp(SdpType::Offer))));
        assert!(effects.is_empty(), "an offer from the old id is no one's: {effects:?}");
        let offer =
            Input::Server { socket: FIRST_SOCKET, from: Some(PeerId(99)), message: Message::Sdp(sdp(SdpType::Offer)) };
        assert!(has(&handle(&mut machine, offer), |e| matches!(e, Effect::Apply { .. })));
    }

    /// What the last `Remotes` effect among `effects` showed.
    fn shown(effects: &[Effect]) -> Option<Vec<Remote>> {
        effects.iter().rev().find_map(|e| if let Effect::Remotes(r) = e { Some(r.clone()) } else { None })
    }

    /// Connects connection `generation`, which this side called.
    fn connect(machine: &mut CallMachine, generation: u32, name: &str) -> Vec<Effect> {
        handle(machine, peer(generation, negotiated(Signaling::HaveLocalOffer, Some(sdp(SdpType::Offer)))));
        handle(machine, from(FIRST_SOCKET, name, Message::Sdp(sdp(SdpType::Answer))));
        handle(machine, peer(generation, negotiated(Signaling::Stable, None)));
        handle(machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Connected)))
    }

    #[test]
    fn names_go_over_each_channel_and_name_people_in_tiles_status_and_chat() {
        let mut machine = CallMachine::new(MediaChoice::CameraAndMicrophone, "  Ada\n", Box::new(|| 0.5));
        handle(&mut machine, Input::Start { socket_ready: true });
        handle(&mut machine, Input::MediaGranted { audio: true, camera: true });
        join_alice_and_bob(&mut machine);
        let effects = handle(&mut machine, peer(1, PeerEvent::ChannelOpen));
        assert!(effects.contains(&Effect::ToPeer { peer: 1, message: PeerMessage::Name("Ada".into()) }), "{effects:?}");
        // Alice names herself; Bob does not, so in a group he is a guest with his number.
        let effects = handle(&mut machine, peer(1, PeerEvent::Message(PeerMessage::Name(" Alice\u{7}".into()))));
        let called: Vec<Option<String>> = shown(&effects).unwrap().iter().map(|r| r.called(true)).collect();
        assert_eq!(called, [Some("Alice".into()), Some("Guest 2".into())]);
        connect(&mut machine, 1, "alice");
        let effects = connect(&mut machine, 2, "bob");
        let [status] = statuses(&effects).try_into().unwrap();
        assert_eq!(status.text(), "Connected with Alice and Guest 2.");
        let chat = |text: &str| PeerMessage::Chat(ChatMessage { text: text.into(), sent_at: 5 });
        let effects = handle(&mut machine, peer(2, PeerEvent::Message(chat("hi"))));
        assert_eq!(
            effects,
            [Effect::Chat(ChatLine { from: Author::Them("Guest 2".into()), text: "hi".into(), sent_at: 5 })]
        );
        // A new name goes to everyone whose channel is open; an empty one clears it.
        let effects = handle(&mut machine, Input::Command(CallCommand::Name("   ".into())));
        let to_server = Effect::Send { to: None, message: Message::Name(String::new()) };
        assert_eq!(effects, [Effect::ToPeer { peer: 1, message: PeerMessage::Name(String::new()) }, to_server]);

        // In a call of two, someone without a name is not listed; with one, they are.
        let (mut machine, generation) = connected_call();
        let effects = handle(&mut machine, peer(generation, PeerEvent::Message(chat("hey"))));
        assert_eq!(
            effects,
            [Effect::Chat(ChatLine { from: Author::Them("Them".into()), text: "hey".into(), sent_at: 5 })]
        );
        let effects = handle(&mut machine, peer(generation, PeerEvent::Message(PeerMessage::Name("Bob".into()))));
        assert_eq!(statuses(&effects), [CallStatus::Connected(vec!["Bob".into()])]);
        assert_eq!(statuses(&effects)[0].text(), "Connected with Bob.");
        // No name of our own: the channel opens with the media state alone.
        let effects = handle(&mut machine, peer(generation, PeerEvent::ChannelOpen));
        assert!(!has(&effects, |e| matches!(e, Effect::ToPeer { message: PeerMessage::Name(_), .. })), "{effects:?}");
    }

    /// The effects of one input at `at_ms` after [`NOW`], but the performance marks.
    fn handle_at(machine: &mut CallMachine, at_ms: f64, input: Input) -> Vec<Effect> {
        machine.handle(NOW + at_ms, input);
        std::iter::from_fn(|| machine.poll()).filter(|e| !matches!(e, Effect::Mark(_))).collect()
    }

    /// The chat lines among `effects`.
    fn chat_lines(effects: &[Effect]) -> Vec<ChatLine> {
        effects.iter().filter_map(|e| if let Effect::Chat(line) = e { Some(line.clone()) } else { None }).collect()
    }

    #[test]
    fn a_peers_chat_is_shown_within_the_limits_a_page_sends_by_and_the_rest_is_counted_in_plain_words() {
        let (mut machine, generation) = connected_call();
        handle(&mut machine, peer(generation, PeerEvent::Message(PeerMessage::Name("Ada".into()))));
        let chat =
            |text: String| peer(generation, PeerEvent::Message(PeerMessage::Chat(ChatMessage { text, sent_at: 5 })));
        let withheld_timer = || Effect::Arm { timer: Timer::Withheld { peer: generation }, after_ms: WITHHELD_NOTE_MS };

        // The longest line a page sends is shown; one character more is dropped whole, and so is a
        // message too big to read. The first of them arms the note.
        let longest = "é".repeat(MAX_CHAT_CHARS);
        assert_eq!(chat_lines(&handle_at(&mut machine, 0.0, chat(longest.clone())))[0].text, longest);
        assert_eq!(handle_at(&mut machine, 0.0, chat("é".repeat(MAX_CHAT_CHARS + 1))), [withheld_timer()]);
        assert_eq!(handle_at(&mut machine, 1.0, peer(generation, PeerEvent::Oversized)), []);

        // A flood: what is left of the burst is shown, the rest counted.
        let shown: usize = (0..20).map(|i| chat_lines(&handle_at(&mut machine, 2.0, chat(format!("{i}")))).len()).sum();
        assert_eq!(shown, CHAT_BURST as usize - 1);
        let effects = handle_at(&mut machine, 1_000.0, Input::Timer(Timer::Withheld { peer: generation }));
        let note = ChatLine {
            from: Author::Page,
            text: "13 messages from Ada were not shown: too long, or too many at once.".into(),
            sent_at: NOW as u64,
        };
        assert_eq!(effects, [Effect::Chat(note)]);
        // Said once: the timer again finds nothing new.
        assert_eq!(handle_at(&mut machine, 1_000.0, Input::Timer(Timer::Withheld { peer: generation })), []);

        // One line a second comes back; another within that second is too many.
        assert_eq!(chat_lines(&handle_at(&mut machine, 1_002.0, chat("a".into()))).len(), 1);
        assert_eq!(handle_at(&mut machine, 1_500.0, chat("b".into())), [withheld_timer()]);
        // Whoever leaves with lines not yet noted has them noted as they go.
        let effects = handle_at(&mut machine, 1_600.0, from(FIRST_SOCKET, "bob", Message::Bye(None)));
        let [note] = chat_lines(&effects).try_into().unwrap();
        assert_eq!(note.text, "1 message from Ada was not shown: too long, or too many at once.");

        // After a quiet while the whole burst is back; unnamed, they are "the other person".
        let (mut machine, generation) = connected_call();
        let chat = |text: &str| {
            peer(generation, PeerEvent::Message(PeerMessage::Chat(ChatMessage { text: text.into(), sent_at: 5 })))
        };
        for at in [0.0, 20_000.0] {
            let shown: usize =
                (0..=CHAT_BURST).map(|_| chat_lines(&handle_at(&mut machine, at, chat("x"))).len()).sum();
            assert_eq!(shown, CHAT_BURST as usize, "at {at}");
        }
        let effects = handle_at(&mut machine, 21_000.0, Input::Timer(Timer::Withheld { peer: generation }));
        assert_eq!(
            chat_lines(&effects)[0].text,
            "2 messages from the other person were not shown: too long, or too many at once."
        );
    }

    #[test]
    fn this_side_sends_within_the_allowance_and_no_more_than_the_longest_line() {
        let (mut machine, generation) = connected_call();
        handle(&mut machine, peer(generation, PeerEvent::ChannelOpen));
        let sent = |effects: &[Effect]| {
            effects
                .iter()
                .filter_map(|e| match e {
                    Effect::ToPeer { message: PeerMessage::Chat(chat), .. } => Some(chat.text.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let say = |text: String| Input::Command(CallCommand::Chat(text));
        // A line longer than the field takes is cut to it, here and there.
        let effects = handle_at(&mut machine, 0.0, say("ß".repeat(MAX_CHAT_CHARS + 5)));
        assert_eq!(sent(&effects), ["ß".repeat(MAX_CHAT_CHARS)]);
        assert_eq!(chat_lines(&effects)[0].text, "ß".repeat(MAX_CHAT_CHARS));
        for i in 1..SEND_BURST {
            assert_eq!(sent(&handle_at(&mut machine, 0.0, say(format!("{i}")))).len(), 1, "line {i}");
        }
        // One more at once is not sent: the page says so and gives the text back.
        let effects = handle_at(&mut machine, 0.0, say("one too many".into()));
        assert!(sent(&effects).is_empty(), "{effects:?}");
        let [note] = chat_lines(&effects).try_into().unwrap();
        assert_eq!(note.from, Author::Page);
        assert!(note.text.starts_with("Your message was not sent"), "{}", note.text);
        assert!(effects.contains(&Effect::Unsent("one too many".into())), "{effects:?}");
        // A second later it goes.
        assert_eq!(sent(&handle_at(&mut machine, 1_000.0, say("one too many".into()))), ["one too many"]);
    }

    #[test]
    fn whoever_sends_audio_above_the_speaking_level_is_shown_speaking_for_a_moment() {
        let (mut machine, generation) = connected_call();
        // Readings half a second apart: `at` is in ms after the first.
        let mut reading = |at: f64, energy: f64, seconds: f64| {
            let reports = crate::call::stats::tests::parse(vec![serde_json::json!(
                {"id": "a", "type": "inbound-rtp", "kind": "audio", "totalAudioEnergy": energy, "totalSamplesDuration": seconds}
            )]);
            machine.handle(NOW + at, peer(generation, PeerEvent::Stats(reports)));
            let effects: Vec<Effect> = std::iter::from_fn(|| machine.poll()).collect();
            shown(&effects).map(|remotes| remotes[0].speaking)
        };
        // The first reading has nothing to compare with.
        assert_eq!(reading(0.0, 1.0, 10.0), None);
        // A level of 0.1 over half a second.
        assert_eq!(reading(500.0, 1.005, 10.5), Some(true));
        // Quiet (just below the level), then no audio played out at all: the highlight stays
        // through a pause between words, and goes a second after the last loud reading.
        let quiet = SPEAKING_LEVEL * 0.9;
        assert_eq!(reading(1_000.0, 1.005 + quiet * quiet / 2.0, 11.0), None);
        assert_eq!(reading(1_500.0, 1.005 + quiet * quiet / 2.0, 11.0), Some(false));
        assert_eq!(reading(2_000.0, 1.03, 11.5), Some(true));
        // Muting shows them silent at once.
        let muted = PeerMessage::MediaState(MediaState { audio: false, video: true, screen: false });
        let effects = handle(&mut machine, peer(generation, PeerEvent::Message(muted)));
        assert_eq!(shown(&effects).map(|remotes| remotes[0].speaking), Some(false));
    }

    #[test]
    fn this_side_is_shown_speaking_from_its_microphone_and_not_once_muted() {
        let (mut machine, generation) = connected_call();
        let microphone = |energy: f64, seconds: f64| {
            PeerEvent::Stats(crate::call::stats::tests::parse(vec![serde_json::json!(
                {"id": "m", "type": "media-source", "kind": "audio", "totalAudioEnergy": energy, "totalSamplesDuration": seconds}
            )]))
        };
        let speaking = |effects: &[Effect]| {
            effects
                .iter()
                .filter_map(|e| if let Effect::Speaking(on) = e { Some(*on) } else { None })
                .collect::<Vec<_>>()
        };
        assert_eq!(speaking(&handle(&mut machine, peer(generation, microphone(1.0, 10.0)))), [false; 0]);
        assert_eq!(speaking(&handle(&mut machine, peer(generation, microphone(1.01, 11.0)))), [true]);
        assert_eq!(speaking(&handle(&mut machine, Input::Command(CallCommand::Microphone(false)))), [false]);
        assert_eq!(speaking(&handle(&mut machine, Input::Command(CallCommand::Microphone(true)))), [true]);
        let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
        assert_eq!(speaking(&effects), [false]);
    }

    #[test]
    fn the_server_hears_the_name_with_each_join_and_each_rename_while_in_the_room() {
        let mut machine = CallMachine::new(MediaChoice::CameraAndMicrophone, " Ada\u{202e}", Box::new(|| 0.5));
        let effects = handle(&mut machine, Input::Start { socket_ready: true });
        assert!(effects.contains(&Effect::Join { name: Some("Ada".into()) }), "{effects:?}");
        handle(&mut machine, server(FIRST_SOCKET, welcome(false, None, IceTransportPolicy::All)));
        let effects = handle(&mut machine, Input::Command(CallCommand::Name("Ada L".into())));
        assert_eq!(effects, [Effect::Send { to: None, message: Message::Name("Ada L".into()) }]);
        // Signaling lost: the new name goes with the next join.
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        let effects = handle(&mut machine, Input::Command(CallCommand::Name("Bea".into())));
        assert!(!has(&effects, |e| matches!(e, Effect::Send { .. })), "{effects:?}");
        let effects = handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        let reopened = Effect::OpenSocket { socket: FIRST_SOCKET + 1, name: Some("Bea".into()) };
        assert!(effects.contains(&reopened), "{effects:?}");
    }

    #[test]
    fn a_name_outlives_an_outage_and_a_new_one_waits_for_a_closed_channel() {
        let (mut machine, generation) = connected_call();
        handle(&mut machine, peer(generation, PeerEvent::Message(PeerMessage::Name("Bob".into()))));
        handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
        handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
        let bob = PeerInfo { peer_id: PeerId(99), ..info("bob") };
        let effects = handle(&mut machine, server(FIRST_SOCKET + 1, welcome_to(vec![bob], IceTransportPolicy::All)));
        assert_eq!(statuses(&effects), [CallStatus::Connected(vec!["Bob".into()])], "{effects:?}");
        // Renamed while the channel is closed: the new name goes when it opens, before the
        // media state.
        handle(&mut machine, peer(generation, PeerEvent::ChannelClosed));
        let effects = handle(&mut machine, Input::Command(CallCommand::Name("Ada".into())));
        assert_eq!(effects, [Effect::Send { to: None, message: Message::Name("Ada".into()) }], "the server alone");
        let effects = handle(&mut machine, peer(generation, PeerEvent::ChannelOpen));
        assert!(
            matches!(effects.as_slice(), [Effect::ToPeer { message: PeerMessage::Name(name), .. }, Effect::ToPeer { message: PeerMessage::MediaState(_), .. }] if name == "Ada"),
            "{effects:?}"
        );
    }

    #[test]
    fn every_connection_is_read_for_who_speaks_and_the_panel_shows_the_first() {
        let mut machine = started();
        join_alice_and_bob(&mut machine);
        let tick = Timer::StatsTick { peer: 2 };
        assert_eq!(
            handle(&mut machine, Input::Timer(tick)),
            [Effect::GetStats { peer: 2 }, Effect::Arm { timer: tick, after_ms: STATS_EVERY_MS }]
        );
        assert!(!has(&handle(&mut machine, peer(2, PeerEvent::Stats(Vec::new()))), |e| matches!(e, Effect::Stats(_))));
        assert!(has(&handle(&mut machine, peer(1, PeerEvent::Stats(Vec::new()))), |e| matches!(e, Effect::Stats(_))));
    }
    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Every line a page lets itself send is shown by the others, however unevenly the
            /// network delays each (in order, as the data channel is, by up to a second).
            #[test]
            fn what_a_page_sends_the_others_show(
                // Pauses mostly near what the allowance lets through, where it matters.
                lines in prop::collection::vec((prop_oneof![0.0..20.0, 980.0..1_020.0, 0.0..3_000.0f64], 0.0..999.0f64), 1..200),
            ) {
                let (mut sender, mut receiver) = (ChatRate::default(), ChatRate::default());
                let (mut sent_at, mut arrived_at) = (0.0, 0.0f64);
                for (pause, delay) in lines {
                    sent_at += pause;
                    if sender.take(sent_at, SEND_BURST) {
                        // Ordered delivery: never before the line sent earlier.
                        arrived_at = arrived_at.max(sent_at + delay);
                        prop_assert!(receiver.take(arrived_at, CHAT_BURST), "dropped a line sent at {sent_at}");
                    }
                }
            }
        }
    }
}
