//! One call, from Start to Hang up: camera and microphone, the signaling socket, and a peer
//! connection whenever the other person is there.
//!
//! Everything that happens (a server message, a browser callback, a timer, Hang up) becomes an
//! [`Event`] on one channel, handled in order by one task, so no two steps of a negotiation
//! interleave. The person who joins second calls; the one already there answers.
//!
//! Start joins at once and the camera starts meanwhile: the offer needs no tracks (they go on
//! the senders when the browser grants them), and the person waiting alone has a connection
//! ready, its candidates gathered, before the offer arrives. Until the camera is on, the page
//! says it is starting.
//!
//! The call outlives its signaling: when the socket drops, the engine reconnects with jittered,
//! capped backoff under the same session, and a peer connection to the same person is kept.
//! When the media path breaks, it restarts ICE.

use std::rc::Rc;

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use serde_json::Value;
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{MediaStream, RtcPeerConnectionState};

use super::{
    js::{describe, string_field},
    media::{self, LocalMedia},
    peer::Peer,
    socket::Socket,
    CallCommand, CallStats, CallStatus, ChatLine, Device, MediaChoice,
};
use crate::{
    protocol::{
        close_code, ChatMessage, ErrorCode, IceCandidate, IceServer, IceTransportPolicy, MediaState, Message,
        PeerMessage, SdpType,
    },
    room::RoomId,
};

/// Reconnect delays: doubling from the first, capped, each scaled by a random 50–100 %.
const RECONNECT_FIRST_MS: f64 = 250.0;
const RECONNECT_CAP_MS: f64 = 5_000.0;
/// How long `disconnected` may last before ICE is restarted.
const DISCONNECTED_GRACE_MS: i32 = 3_000;
/// While the media path stays broken, ICE is restarted again this often (a restart made while
/// the network or the relay was still down cannot succeed by itself later).
const ICE_RETRY_MS: i32 = 5_000;
/// How long a new peer connection may take to connect before the page says it failed.
const CONNECT_TIMEOUT_MS: i32 = 20_000;
const STATS_EVERY_MS: i32 = 1_000;

/// How the engine reports to the page.
#[derive(Clone)]
pub struct CallEvents {
    pub status: Rc<dyn Fn(CallStatus)>,
    pub local_stream: Rc<dyn Fn(Option<MediaStream>)>,
    pub remote_stream: Rc<dyn Fn(Option<MediaStream>)>,
    /// What this side sends (microphone on, video on, screen shared).
    pub local_media: Rc<dyn Fn(MediaState)>,
    /// What the other side says it sends; `None` when no one is connected.
    pub remote_media: Rc<dyn Fn(Option<MediaState>)>,
    pub chat: Rc<dyn Fn(ChatLine)>,
    /// The cameras and microphones, once the browser has granted one (labels need that).
    pub devices: Rc<dyn Fn(Vec<Device>)>,
    pub stats: Rc<dyn Fn(Option<CallStats>)>,
    /// A line beside the status: why something the person asked for did not happen.
    pub notice: Rc<dyn Fn(Option<String>)>,
}

pub enum Event {
    /// The browser granted the camera and microphone (or `None`: nothing was asked for), or
    /// refused.
    Media(Result<Option<MediaStream>, JsValue>),
    Server {
        generation: u32,
        message: Message,
    },
    SocketClosed {
        generation: u32,
        code: u16,
    },
    Reconnect,
    NegotiationNeeded,
    LocalCandidate(Option<IceCandidate>),
    RemoteStream(MediaStream),
    ConnectionState(RtcPeerConnectionState),
    IceServerError {
        code: u16,
        url: String,
    },
    /// Timers, tagged with the peer connection they were set for.
    IceCheck {
        peer: u32,
    },
    ConnectTimeout {
        peer: u32,
    },
    StatsTick {
        peer: u32,
    },
    ChannelOpen,
    FromPeer(PeerMessage),
    ScreenEnded,
    Command(CallCommand),
}

/// The page's hold on a running call.
#[derive(Clone)]
pub struct CallHandle {
    events: UnboundedSender<Event>,
}

impl CallHandle {
    pub fn command(&self, command: CallCommand) {
        let _ = self.events.unbounded_send(Event::Command(command));
    }
}

/// A call's signaling socket, opened when the page loads: it holds no place in the room until
/// Start (it connects with `join=later`), so that Start costs one message instead of a
/// connection. Dropping it closes the socket.
pub struct Prepared {
    events: UnboundedSender<Event>,
    inbox: UnboundedReceiver<Event>,
    session: String,
    socket: Option<Socket>,
}

pub fn prepare(room: &RoomId) -> Prepared {
    let (events, inbox) = unbounded();
    let session = RoomId::generate().to_string();
    let socket = Socket::open(room, &session, FIRST_SOCKET, events.clone())
        .map_err(|error| leptos::logging::warn!("cannot open the signaling socket yet: {}", describe(&error)))
        .ok();
    Prepared { events, inbox, session, socket }
}

/// The generation of a prepared call's socket.
const FIRST_SOCKET: u32 = 1;

pub fn start(room: RoomId, choice: MediaChoice, ui: CallEvents, prepared: Prepared) -> CallHandle {
    let events = prepared.events.clone();
    spawn_local(run(room, choice, ui, prepared));
    CallHandle { events }
}

async fn run(room: RoomId, choice: MediaChoice, ui: CallEvents, prepared: Prepared) {
    let Prepared { events, mut inbox, session, socket } = prepared;
    mark("start");
    (ui.status)(CallStatus::StartingMedia);
    let media = match LocalMedia::new() {
        Ok(media) => media,
        Err(error) => {
            (ui.status)(CallStatus::MediaUnavailable(explain_media_error(&error)));
            return;
        }
    };
    (ui.local_media)(media.state());
    // The camera starts while the call joins and negotiates: the offer needs no tracks yet
    // (they go on the senders when they come), so neither waits for the other.
    {
        let events = events.clone();
        spawn_local(async move {
            let granted = LocalMedia::request(choice).await;
            if let Err(late) = events.unbounded_send(Event::Media(granted)) {
                // The call ended first (hung up, room full): the camera must not stay on.
                if let Event::Media(Ok(Some(stream))) = late.into_inner() {
                    media::stop_all(&stream);
                }
            }
        });
    }
    let mut call = Call {
        ui: ui.clone(),
        events,
        room,
        session,
        socket,
        socket_generation: FIRST_SOCKET,
        reconnect_attempts: 0,
        media,
        media_starting: true,
        status: CallStatus::Joining,
        peer: None,
        standby: None,
        peer_generation: 0,
        peer_public_id: None,
        other_present: false,
        polite: false,
        ice_servers: Vec::new(),
        ice_policy: IceTransportPolicy::All,
        turn_refused: false,
        unsent_chat: Vec::new(),
        screen_ended: None,
        last_traffic: None,
    };
    match &call.socket {
        Some(socket) => socket.join(),
        None => call.connect_signaling(),
    }
    let end = loop {
        let Some(event) = inbox.next().await else { break CallStatus::Ended };
        match call.handle(event).await {
            Ok(None) => {}
            Ok(Some(end)) => break end,
            Err(error) => leptos::logging::warn!("call step failed: {}", describe(&error)),
        }
    };
    // A camera granted while the last event was being handled is still in the queue.
    inbox.close();
    while let Ok(event) = inbox.try_recv() {
        if let Event::Media(Ok(Some(stream))) = event {
            media::stop_all(&stream);
        }
    }
    call.end();
    (ui.status)(end);
}

struct Call {
    ui: CallEvents,
    events: UnboundedSender<Event>,
    room: RoomId,
    /// Names this call to the server, so a reconnect is known for the same person.
    session: String,
    socket: Option<Socket>,
    socket_generation: u32,
    reconnect_attempts: u32,
    media: LocalMedia,
    /// Until the browser grants (or refuses) the camera and microphone.
    media_starting: bool,
    /// The call's own state; the page shows it once the media has started.
    status: CallStatus,
    peer: Option<Peer>,
    /// Made while waiting alone, for whoever comes next (they offer, we answer), so that the
    /// browser's work of making a connection is done before their offer arrives.
    standby: Option<Peer>,
    peer_generation: u32,
    /// The public id of the person `peer` is connected to.
    peer_public_id: Option<String>,
    other_present: bool,
    polite: bool,
    ice_servers: Vec<IceServer>,
    ice_policy: IceTransportPolicy,
    turn_refused: bool,
    /// Chat typed before the channel to the other side was open; sent when it opens.
    unsent_chat: Vec<ChatMessage>,
    screen_ended: Option<Closure<dyn FnMut()>>,
    /// Bytes in and out, and when, at the last statistics tick.
    last_traffic: Option<(f64, f64, f64)>,
}

/// Whether two public ids are known to be the same person (clients that name no session have
/// none, and never are).
fn same_person(a: &Option<String>, b: &Option<String>) -> bool {
    a.is_some() && a == b
}

impl Call {
    /// Handles one event; `Some(status)` ends the call with that status.
    async fn handle(&mut self, event: Event) -> Result<Option<CallStatus>, JsValue> {
        match event {
            Event::Server { generation, message } if generation == self.socket_generation => {
                return self.handle_server(message).await;
            }
            Event::SocketClosed { generation, code } if generation == self.socket_generation => {
                if code == close_code::ROOM_FULL {
                    return Ok(Some(CallStatus::RoomFull));
                }
                self.socket = None;
                self.show(CallStatus::SignalingReconnecting);
                self.schedule_reconnect();
            }
            // Late events of a socket already replaced.
            Event::Server { .. } | Event::SocketClosed { .. } => {}
            Event::Reconnect => self.connect_signaling(),
            Event::Media(Ok(stream)) => self.media_started(stream.as_ref()),
            Event::Media(Err(error)) => {
                // Whoever may already be connecting to us learns at once that we are gone.
                if self.peer.is_some() {
                    self.send(&Message::Bye(None));
                }
                return Ok(Some(CallStatus::MediaUnavailable(explain_media_error(&error))));
            }
            Event::NegotiationNeeded => self.offer().await?,
            Event::LocalCandidate(candidate) => {
                mark("candidate-sent");
                self.send(&Message::Candidate(candidate));
            }
            Event::RemoteStream(stream) => {
                mark("remote-track");
                (self.ui.remote_stream)(Some(stream));
            }
            Event::ConnectionState(state) => self.connection_state_changed(state)?,
            Event::IceServerError { code, url } => {
                leptos::logging::warn!("ICE server {url} answered {code}");
                // 401: TURN refused the credentials. With relay-only ICE nothing else can work.
                if code == 401 && !self.turn_refused {
                    self.turn_refused = true;
                    if self.ice_policy == IceTransportPolicy::Relay && self.peer.is_some() {
                        self.show(CallStatus::TurnRefused);
                    }
                }
            }
            Event::IceCheck { peer } if peer == self.peer_generation => self.restart_ice_if_broken()?,
            Event::ConnectTimeout { peer } if peer == self.peer_generation => {
                if self.peer.as_ref().is_some_and(|p| p.state() != RtcPeerConnectionState::Connected) {
                    self.show(if self.turn_refused { CallStatus::TurnRefused } else { CallStatus::ConnectionFailed });
                }
            }
            Event::StatsTick { peer } if peer == self.peer_generation => {
                if let Some(peer) = &self.peer {
                    let stats = self.summarize(peer.stats().await?);
                    (self.ui.stats)(Some(stats));
                }
                self.after(STATS_EVERY_MS, Event::StatsTick { peer });
            }
            Event::IceCheck { .. } | Event::ConnectTimeout { .. } | Event::StatsTick { .. } => {}
            Event::ChannelOpen => {
                self.announce_media();
                for message in std::mem::take(&mut self.unsent_chat) {
                    self.send_chat(message);
                }
            }
            Event::FromPeer(PeerMessage::MediaState(state)) => (self.ui.remote_media)(Some(state)),
            Event::FromPeer(PeerMessage::Chat(message)) => {
                (self.ui.chat)(ChatLine { mine: false, text: message.text, sent_at: message.sent_at });
            }
            // Nothing to mute, turn off, share instead or switch yet: the page offers these once
            // the camera and microphone are on.
            Event::Command(
                CallCommand::Microphone(_)
                | CallCommand::Camera(_)
                | CallCommand::ShareScreen(_)
                | CallCommand::UseDevice(_),
            ) if self.media_starting => {}
            Event::Command(CallCommand::Microphone(on)) => {
                self.media.set_audio_on(on);
                self.announce_media();
            }
            Event::Command(CallCommand::Camera(on)) => {
                self.media.set_camera_on(on);
                self.send_current_video().await?;
            }
            Event::Command(CallCommand::ShareScreen(true)) => match media::screen_track().await {
                Ok(track) => {
                    // The browser's own "stop sharing" ends the track.
                    let events = self.events.clone();
                    let ended = Closure::<dyn FnMut()>::new(move || {
                        let _ = events.unbounded_send(Event::ScreenEnded);
                    });
                    track.set_onended(Some(ended.as_ref().unchecked_ref()));
                    self.screen_ended = Some(ended);
                    self.media.start_screen(track);
                    (self.ui.notice)(None);
                    self.send_current_video().await?;
                }
                Err(error) => {
                    leptos::logging::warn!("no screen to share: {}", describe(&error));
                    (self.ui.notice)(super::screen_share_failure(string_field(&error, "name").as_deref()));
                }
            },
            Event::Command(CallCommand::ShareScreen(false)) | Event::ScreenEnded => {
                if let Some(screen) = &self.media.screen {
                    screen.set_onended(None);
                }
                self.screen_ended = None;
                self.media.stop_screen();
                self.send_current_video().await?;
            }
            Event::Command(CallCommand::Chat(text)) => {
                let message = ChatMessage { text, sent_at: js_sys::Date::now() as u64 };
                (self.ui.chat)(ChatLine { mine: true, text: message.text.clone(), sent_at: message.sent_at });
                self.send_chat(message);
            }
            Event::Command(CallCommand::UseDevice(device)) => {
                let track = self.media.use_device(&device).await?;
                if let Some(peer) = &self.peer {
                    if !device.is_camera {
                        peer.replace_track(false, Some(&track)).await?;
                    }
                }
                if device.is_camera {
                    self.send_current_video().await?;
                }
            }
            Event::Command(CallCommand::HangUp) => {
                self.send(&Message::Bye(None));
                return Ok(Some(CallStatus::Ended));
            }
        }
        Ok(None)
    }

    async fn handle_server(&mut self, message: Message) -> Result<Option<CallStatus>, JsValue> {
        match message {
            Message::Welcome(welcome) => {
                mark("welcome");
                self.reconnect_attempts = 0;
                self.polite = welcome.polite;
                self.ice_servers = welcome.ice_servers;
                self.ice_policy = welcome.ice_transport_policy;
                self.other_present = welcome.peer_present;
                // Made with the ICE servers (and TURN credentials) of an earlier welcome.
                self.standby = None;
                self.turn_refused = false;
                let peer_public_id = welcome.peer_public_id;
                if let Some(peer) = &mut self.peer {
                    peer.set_polite(welcome.polite);
                    let connected = peer.state() == RtcPeerConnectionState::Connected;
                    // Back after a signaling outage: keep the call with the same person. If we
                    // are back first (the server restarted), they will follow.
                    if same_person(&self.peer_public_id, &peer_public_id) || (!self.other_present && connected) {
                        self.show(if connected { CallStatus::Connected } else { CallStatus::Connecting });
                        self.restart_ice_if_broken()?;
                        return Ok(None);
                    }
                    self.drop_peer();
                }
                if self.other_present {
                    self.new_peer(peer_public_id)?;
                    self.show(self.connecting());
                    self.peer.as_mut().expect("created above").send_media(&self.media.outgoing());
                    // Offer now rather than on `negotiationneeded`, a task later.
                    self.offer().await?;
                } else {
                    self.show(CallStatus::WaitingForPeer);
                    self.stand_by()?;
                }
            }
            Message::PeerJoined(info) => {
                self.other_present = true;
                if self.peer.is_some() && same_person(&self.peer_public_id, &info.public_id) {
                    return Ok(None); // they reconnected; the call goes on
                }
                // Someone new: the newcomer calls, we answer its offer. The connection is made
                // now, while the offer is on its way.
                self.new_peer(info.public_id)?.await_offer();
                self.show(self.connecting());
            }
            Message::PeerLeft(_) => {
                self.other_present = false;
                // Only their signaling may have dropped: a working call goes on. A BYE, or the
                // media path failing, ends it.
                if self.peer.as_ref().is_some_and(|p| p.state() == RtcPeerConnectionState::Connected) {
                    return Ok(None);
                }
                self.drop_peer();
                self.show(CallStatus::PeerLeft);
                self.stand_by()?;
            }
            Message::Bye(_) => {
                self.drop_peer();
                self.show(CallStatus::PeerLeft);
                self.stand_by()?;
            }
            Message::Sdp(description) => {
                mark(if description.kind == SdpType::Offer { "offer-received" } else { "answer-received" });
                if self.peer.is_none() {
                    if description.kind != SdpType::Offer {
                        return Ok(None);
                    }
                    self.new_peer(self.peer_public_id.clone())?;
                }
                let outgoing = self.media.outgoing();
                let peer = self.peer.as_mut().expect("created above");
                if let Some(answer) = peer.receive_description(description, &outgoing).await? {
                    mark("answer-sent");
                    self.send(&Message::Sdp(answer));
                }
            }
            Message::Candidate(candidate) => {
                if let Some(peer) = &mut self.peer {
                    peer.receive_candidate(candidate);
                }
            }
            Message::Error(error) if error.code == ErrorCode::RoomFull => return Ok(Some(CallStatus::RoomFull)),
            Message::Error(error) => leptos::logging::warn!("the server refused a message: {}", error.message),
            // Only clients send JOIN.
            Message::Join(_) => {}
        }
        Ok(None)
    }

    /// A new connection's status: connecting, unless the TURN server already refused us (the
    /// standby connection gathers candidates while waiting) and nothing but TURN may be used.
    fn connecting(&self) -> CallStatus {
        if self.turn_refused && self.ice_policy == IceTransportPolicy::Relay {
            CallStatus::TurnRefused
        } else {
            CallStatus::Connecting
        }
    }

    /// The status line: the call's own state, or that the camera is still starting.
    fn show(&mut self, status: CallStatus) {
        self.status = status.clone();
        (self.ui.status)(if self.media_starting { status.while_media_starts() } else { status });
    }

    /// The camera and microphone are granted: they go on the senders of a connection that may
    /// already be under way, and the page shows the call's state.
    fn media_started(&mut self, stream: Option<&MediaStream>) {
        mark("media");
        self.media_starting = false;
        self.media.adopt(stream);
        (self.ui.local_stream)(Some(self.media.preview.clone()));
        let devices = self.ui.devices.clone();
        spawn_local(async move {
            match media::devices().await {
                Ok(list) => devices(list),
                Err(error) => leptos::logging::warn!("cannot list devices: {}", describe(&error)),
            }
        });
        if let Some(peer) = &self.peer {
            peer.start_sending(self.media.audio_to_send(), self.media.video_to_send());
        }
        self.announce_media();
        self.show(self.status.clone());
    }

    /// Makes and sends an offer, unless an exchange is already under way.
    async fn offer(&mut self) -> Result<(), JsValue> {
        if let Some(peer) = &mut self.peer {
            if let Some(offer) = peer.make_offer().await? {
                mark("offer-sent");
                self.send(&Message::Sdp(offer));
            }
        }
        Ok(())
    }

    fn connection_state_changed(&mut self, state: RtcPeerConnectionState) -> Result<(), JsValue> {
        match state {
            RtcPeerConnectionState::Connected => {
                mark("connected");
                self.show(if self.socket.is_some() { CallStatus::Connected } else { CallStatus::SignalingReconnecting })
            }
            RtcPeerConnectionState::Disconnected => {
                self.show(CallStatus::ConnectionInterrupted);
                self.after(DISCONNECTED_GRACE_MS, Event::IceCheck { peer: self.peer_generation });
            }
            RtcPeerConnectionState::Failed if !self.other_present && self.socket.is_some() => {
                // The other person is gone from the room and the media path is dead.
                self.drop_peer();
                self.show(CallStatus::PeerLeft);
                self.stand_by()?;
            }
            RtcPeerConnectionState::Failed => {
                self.show(CallStatus::ConnectionInterrupted);
                self.restart_ice_if_broken()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Restarts ICE while the media path is down and both people are reachable by signaling,
    /// and looks again later.
    fn restart_ice_if_broken(&self) -> Result<(), JsValue> {
        let Some(peer) = &self.peer else { return Ok(()) };
        if !matches!(peer.state(), RtcPeerConnectionState::Disconnected | RtcPeerConnectionState::Failed) {
            return Ok(());
        }
        if self.socket.is_some() && self.other_present {
            leptos::logging::log!("restarting ICE");
            peer.restart_ice()?;
        }
        self.after(ICE_RETRY_MS, Event::IceCheck { peer: self.peer_generation });
        Ok(())
    }

    fn connect_signaling(&mut self) {
        self.socket_generation += 1;
        mark("socket");
        match Socket::open(&self.room, &self.session, self.socket_generation, self.events.clone()) {
            Ok(socket) => {
                socket.join();
                self.socket = Some(socket);
            }
            Err(error) => {
                leptos::logging::warn!("cannot open the signaling socket: {}", describe(&error));
                self.schedule_reconnect();
            }
        }
    }

    fn schedule_reconnect(&mut self) {
        let exponential = RECONNECT_FIRST_MS * 2f64.powi(self.reconnect_attempts.min(10) as i32);
        let delay = exponential.min(RECONNECT_CAP_MS) * (0.5 + js_sys::Math::random() / 2.0);
        self.reconnect_attempts += 1;
        self.after(delay as i32, Event::Reconnect);
    }

    fn after(&self, millis: i32, event: Event) {
        let events = self.events.clone();
        spawn_local(async move {
            sleep(millis).await;
            let _ = events.unbounded_send(event);
        });
    }

    fn send(&self, message: &Message) {
        match &self.socket {
            Some(socket) => socket.send(message),
            None => leptos::logging::warn!("signaling is down; dropped {message:?}"),
        }
    }

    fn new_peer(&mut self, remote_public_id: Option<String>) -> Result<&mut Peer, JsValue> {
        self.drop_peer();
        self.peer_generation += 1;
        self.peer_public_id = remote_public_id;
        self.after(CONNECT_TIMEOUT_MS, Event::ConnectTimeout { peer: self.peer_generation });
        self.after(STATS_EVERY_MS, Event::StatsTick { peer: self.peer_generation });
        self.last_traffic = None;
        let peer = match self.standby.take() {
            Some(standby) => standby,
            None => Peer::new(&self.ice_servers, self.ice_policy, self.polite, &self.events)?,
        };
        Ok(self.peer.insert(peer))
    }

    /// Alone in the room: makes the connection whoever comes next will be answered on.
    fn stand_by(&mut self) -> Result<(), JsValue> {
        let mut standby = Peer::new(&self.ice_servers, self.ice_policy, self.polite, &self.events)?;
        standby.await_offer();
        self.standby = Some(standby);
        Ok(())
    }

    fn drop_peer(&mut self) {
        if self.peer.take().is_some() {
            (self.ui.remote_stream)(None);
            (self.ui.remote_media)(None);
            (self.ui.stats)(None);
        }
    }

    /// Puts the video that should be sent now on the sender, and tells both the page and the
    /// other side.
    async fn send_current_video(&mut self) -> Result<(), JsValue> {
        if let Some(peer) = &self.peer {
            peer.replace_track(true, self.media.video_to_send()).await?;
        }
        self.announce_media();
        Ok(())
    }

    fn announce_media(&self) {
        let state = self.media.state();
        (self.ui.local_media)(state);
        if let Some(peer) = &self.peer {
            // If the channel is not open yet, its opening announces the state.
            peer.send_to_peer(&PeerMessage::MediaState(state));
        }
    }

    fn send_chat(&mut self, message: ChatMessage) {
        let sent = self.peer.as_ref().is_some_and(|peer| peer.send_to_peer(&PeerMessage::Chat(message.clone())));
        if !sent {
            self.unsent_chat.push(message);
        }
    }

    /// One statistics-panel reading from a `getStats()` array.
    fn summarize(&mut self, reports: JsValue) -> CallStats {
        let reports: Vec<Value> = super::js::from_js(&reports).unwrap_or_default();
        let by_id = |id: &Value| reports.iter().find(|r| r["id"] == *id);
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        let mut stats = CallStats::default();
        let (mut bytes_in, mut bytes_out, mut lost, mut received) = (0.0, 0.0, 0.0, 0.0);
        for report in &reports {
            match report["type"].as_str() {
                Some("inbound-rtp") => {
                    bytes_in += number(&report["bytesReceived"]);
                    lost += number(&report["packetsLost"]).max(0.0);
                    received += number(&report["packetsReceived"]);
                    if report["kind"] == "video" {
                        stats.width = report["frameWidth"].as_u64().map(|w| w as u32);
                        stats.height = report["frameHeight"].as_u64().map(|h| h as u32);
                        stats.frames_per_second = report["framesPerSecond"].as_f64();
                    }
                }
                Some("outbound-rtp") => bytes_out += number(&report["bytesSent"]),
                _ => {}
            }
        }
        // Chromium names the pair in use on its `transport` report; Firefox has no such report
        // and marks the pair itself `selected`.
        let selected = reports
            .iter()
            .find(|r| r["type"] == "transport" && !r["selectedCandidatePairId"].is_null())
            .and_then(|transport| by_id(&transport["selectedCandidatePairId"]))
            .or_else(|| reports.iter().find(|r| r["type"] == "candidate-pair" && r["selected"] == true));
        if let Some(pair) = selected {
            stats.round_trip_ms = pair["currentRoundTripTime"].as_f64().map(|s| s * 1000.0);
            stats.relayed = by_id(&pair["localCandidateId"]).map(|local| {
                local["candidateType"] == "relay"
                    || by_id(&pair["remoteCandidateId"]).is_some_and(|r| r["candidateType"] == "relay")
            });
        }
        if lost + received > 0.0 {
            stats.packet_loss_percent = 100.0 * lost / (lost + received);
        }
        let now = js_sys::Date::now();
        if let Some((last_in, last_out, then)) = self.last_traffic {
            let seconds = ((now - then) / 1000.0).max(0.001);
            stats.kbps_in = (bytes_in - last_in).max(0.0) * 8.0 / 1000.0 / seconds;
            stats.kbps_out = (bytes_out - last_out).max(0.0) * 8.0 / 1000.0 / seconds;
        }
        self.last_traffic = Some((bytes_in, bytes_out, now));
        stats
    }

    fn end(mut self) {
        (self.ui.notice)(None);
        self.drop_peer();
        self.media.stop();
        (self.ui.local_stream)(None);
        // Dropping the socket closes it normally.
    }
}

/// A `performance.mark("duo:{step}")`: where call setup spends its time shows in the browser's
/// performance tools, and `end2end/bench/call-setup.mjs` reads them.
pub(super) fn mark(step: &str) {
    if let Some(performance) = web_sys::window().and_then(|window| window.performance()) {
        let _ = performance.mark(&format!("duo:{step}"));
    }
}

async fn sleep(millis: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, millis);
        }
    });
    let _ = JsFuture::from(promise).await;
}

fn explain_media_error(error: &JsValue) -> String {
    match string_field(error, "name").as_deref() {
        Some("NotAllowedError") => "permission was denied".into(),
        Some("NotFoundError") => "no camera or microphone was found".into(),
        Some("NotReadableError") => "the device is in use by another program".into(),
        _ => describe(error),
    }
}
