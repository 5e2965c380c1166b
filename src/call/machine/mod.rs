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
//! One peer connection per other person in the room (a full mesh), or, in a room whose media
//! goes through the server (`WELCOME.media`, `MEDIA_ROUTE`), one to the server. A newcomer calls everyone
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
//!
//! By concern, each file an `impl CallMachine` of its own: `io` the inputs, effects, states and
//! timers; this file the machine itself and the dispatch of inputs; `signaling` the socket and
//! the server's messages; `mesh` the peer connections and their negotiation; `sfu` the one
//! connection to the server's forwarding unit, in a room whose media goes through it (and the
//! move there from a mesh); `people` what is known of each other person; `local_media` this side's camera, microphone, screen and the
//! person's commands; `chat` the chat and its allowances; `status` what the page is told.
//! `tests` drives the whole machine, as the engine does.

use std::collections::VecDeque;

use super::{CallCommand, CallStatus, MediaChoice, Remote};
use crate::protocol::{
    close_code, display_name, ChatMessage, IceServer, IceTransportPolicy, PeerId, PeerInfo, CHAT_BURST,
};

mod chat;
mod io;
mod local_media;
mod mesh;
mod people;
mod sfu;
mod signaling;
mod status;
#[cfg(test)]
mod tests;

pub use io::*;

use chat::ChatRate;
use local_media::{explain_media_error, screen_share_failure, Media};
use people::{Peer, Voice};
use sfu::Sfu;

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
/// How often each connection's statistics are read: the panel's numbers, and (in a mesh) who is
/// speaking.
pub const STATS_EVERY_MS: u32 = 500;
/// How often, on the server, the level each audio m-line's last packet carried is read. One
/// packet's level says only its 20 ms of audio: every fifth packet is read, which no word (a
/// syllable lasts 100 ms and more) slips between; a click may.
pub const VOICES_EVERY_MS: u32 = 100;

/// How often a page in a room on the server reads its tiles' sizes, and tells the server when
/// they changed: the server hears of a resize, or of the page shown again, within a quarter of
/// a second, and has the rest of the second to get a keyframe of the layer it chooses.
pub const VIEW_EVERY_MS: u32 = 250;

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
    /// The name the last `JOIN` carried: one changed before its `WELCOME` is sent after it.
    joined_as: Option<String>,
    reconnect_attempts: u32,
    media: Media,
    /// In the order they came: in a mesh, each with the connection to them; on the server, tiles.
    peers: Vec<Peer>,
    /// The connection to the server's forwarding unit, in a room whose media goes through it.
    sfu: Option<Sfu>,
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
            joined_as: None,
            reconnect_attempts: 0,
            media: Media::default(),
            peers: Vec::new(),
            sfu: None,
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
                if self.generations().contains(&peer) {
                    self.push(Effect::GetStats { peer });
                    self.push(Effect::Arm { timer, after_ms: STATS_EVERY_MS });
                }
            }
            Timer::VoicesTick { peer } => {
                if self.sfu.as_ref().is_some_and(|sfu| sfu.generation == peer) {
                    self.push(Effect::ReadVoices { peer });
                    self.push(Effect::Arm { timer, after_ms: VOICES_EVERY_MS });
                }
            }
            Timer::ViewTick { peer } => {
                if self.sfu.as_ref().is_some_and(|sfu| sfu.generation == peer) {
                    self.push(Effect::ReadView { peer });
                    self.push(Effect::Arm { timer, after_ms: VIEW_EVERY_MS });
                }
            }
            Timer::Withheld { peer } => {
                if let Some(index) = self.peers.iter().position(|p| p.generation == peer) {
                    self.note_withheld(index);
                }
            }
        }
    }

    /// A command from the page: the person's media, chat, name, or Hang up.
    fn command(&mut self, command: CallCommand, now_ms: f64) {
        match command {
            // Nothing to mute, turn off, share instead or switch yet: the page offers these once
            // the camera and microphone are on.
            CallCommand::Microphone(_)
            | CallCommand::Camera(_)
            | CallCommand::ShareScreen(_)
            | CallCommand::UseDevice(_)
                if self.media.starting => {}
            CallCommand::Microphone(on) => self.turn_microphone(on),
            CallCommand::Camera(on) => self.turn_camera(on),
            CallCommand::ShareScreen(true) => self.push(Effect::PickScreen),
            CallCommand::ShareScreen(false) => self.stop_screen(),
            CallCommand::UseDevice(device) => self.push(Effect::OpenDevice(device)),
            CallCommand::Chat(text) => self.say(text, now_ms),
            CallCommand::Name(name) => self.rename(&name),
            CallCommand::HangUp => {
                self.bye_to_everyone();
                self.end(CallStatus::Ended);
            }
        }
    }

    fn end(&mut self, status: CallStatus) {
        self.over = true;
        self.push(Effect::Notice(None));
        self.forget_slow_link();
        for index in (0..self.peers.len()).rev() {
            self.drop_peer(index);
        }
        for connection in [self.standby.take(), self.sfu.take().map(|sfu| sfu.generation)].into_iter().flatten() {
            self.push(Effect::DropPeer { peer: connection });
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
