//! One call, from Start to Hang up: camera and microphone, the signaling socket, and a peer
//! connection whenever the other person is there.
//!
//! Everything that happens (a server message, a browser callback, a timer, Hang up) becomes an
//! [`Event`] on one channel, handled in order by one task, so no two steps of a negotiation
//! interleave. The person who joins second calls; the one already there answers.
//!
//! The call outlives its signaling: when the socket drops, the engine reconnects with jittered,
//! capped backoff under the same session, and a peer connection to the same person is kept.
//! When the media path breaks, it restarts ICE.

use std::rc::Rc;

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use serde_json::json;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{MediaStream, MediaStreamConstraints, MediaStreamTrack, RtcPeerConnectionState};

use super::{
    js::{describe, to_js},
    peer::Peer,
    socket::Socket,
    CallStatus,
};
use crate::{
    protocol::{close_code, ErrorCode, IceCandidate, IceServer, IceTransportPolicy, Message, SdpType},
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

/// How the engine reports to the page.
#[derive(Clone)]
pub struct CallEvents {
    pub status: Rc<dyn Fn(CallStatus)>,
    pub local_stream: Rc<dyn Fn(Option<MediaStream>)>,
    pub remote_stream: Rc<dyn Fn(Option<MediaStream>)>,
}

pub enum Event {
    Server { generation: u32, message: Message },
    SocketClosed { generation: u32, code: u16 },
    Reconnect,
    NegotiationNeeded,
    LocalCandidate(Option<IceCandidate>),
    RemoteStream(MediaStream),
    ConnectionState(RtcPeerConnectionState),
    IceServerError { code: u16, url: String },
    /// Timers, tagged with the peer connection they were set for.
    IceCheck { peer: u32 },
    ConnectTimeout { peer: u32 },
    HangUp,
}

/// The page's hold on a running call.
#[derive(Clone)]
pub struct CallHandle {
    events: UnboundedSender<Event>,
}

impl CallHandle {
    pub fn hang_up(&self) {
        let _ = self.events.unbounded_send(Event::HangUp);
    }
}

pub fn start(room: RoomId, ui: CallEvents) -> CallHandle {
    let (events, inbox) = unbounded();
    spawn_local(run(room, ui, events.clone(), inbox));
    CallHandle { events }
}

async fn run(room: RoomId, ui: CallEvents, events: UnboundedSender<Event>, mut inbox: UnboundedReceiver<Event>) {
    (ui.status)(CallStatus::StartingMedia);
    let media = match camera_and_microphone().await {
        Ok(media) => media,
        Err(error) => {
            (ui.status)(CallStatus::MediaUnavailable(explain_media_error(&error)));
            return;
        }
    };
    (ui.local_stream)(Some(media.clone()));
    (ui.status)(CallStatus::Joining);
    let mut call = Call {
        ui: ui.clone(),
        events,
        room,
        session: RoomId::generate().to_string(),
        socket: None,
        socket_generation: 0,
        reconnect_attempts: 0,
        media,
        peer: None,
        peer_generation: 0,
        peer_session: None,
        other_present: false,
        polite: false,
        ice_servers: Vec::new(),
        ice_policy: IceTransportPolicy::All,
        turn_refused: false,
    };
    call.connect_signaling();
    let end = loop {
        let Some(event) = inbox.next().await else { break CallStatus::Ended };
        match call.handle(event).await {
            Ok(None) => {}
            Ok(Some(end)) => break end,
            Err(error) => leptos::logging::warn!("call step failed: {}", describe(&error)),
        }
    };
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
    media: MediaStream,
    peer: Option<Peer>,
    peer_generation: u32,
    /// The session of the person `peer` is connected to.
    peer_session: Option<String>,
    other_present: bool,
    polite: bool,
    ice_servers: Vec<IceServer>,
    ice_policy: IceTransportPolicy,
    turn_refused: bool,
}

/// Whether two sessions are known to be the same person (clients that name no session never are).
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
                (self.ui.status)(CallStatus::SignalingReconnecting);
                self.schedule_reconnect();
            }
            // Late events of a socket already replaced.
            Event::Server { .. } | Event::SocketClosed { .. } => {}
            Event::Reconnect => self.connect_signaling(),
            Event::NegotiationNeeded => {
                if let Some(peer) = &mut self.peer {
                    if let Some(offer) = peer.make_offer().await? {
                        self.send(&Message::Sdp(offer));
                    }
                }
            }
            Event::LocalCandidate(candidate) => self.send(&Message::Candidate(candidate)),
            Event::RemoteStream(stream) => (self.ui.remote_stream)(Some(stream)),
            Event::ConnectionState(state) => self.connection_state_changed(state)?,
            Event::IceServerError { code, url } => {
                leptos::logging::warn!("ICE server {url} answered {code}");
                // 401: TURN refused the credentials. With relay-only ICE nothing else can work.
                if code == 401 && !self.turn_refused {
                    self.turn_refused = true;
                    if self.ice_policy == IceTransportPolicy::Relay && self.peer.is_some() {
                        (self.ui.status)(CallStatus::TurnRefused);
                    }
                }
            }
            Event::IceCheck { peer } if peer == self.peer_generation => self.restart_ice_if_broken()?,
            Event::ConnectTimeout { peer } if peer == self.peer_generation => {
                if self.peer.as_ref().is_some_and(|p| p.state() != RtcPeerConnectionState::Connected) {
                    (self.ui.status)(if self.turn_refused { CallStatus::TurnRefused } else { CallStatus::ConnectionFailed });
                }
            }
            Event::IceCheck { .. } | Event::ConnectTimeout { .. } => {}
            Event::HangUp => {
                self.send(&Message::Bye(None));
                return Ok(Some(CallStatus::Ended));
            }
        }
        Ok(None)
    }

    async fn handle_server(&mut self, message: Message) -> Result<Option<CallStatus>, JsValue> {
        match message {
            Message::Welcome(welcome) => {
                self.reconnect_attempts = 0;
                self.polite = welcome.polite;
                self.ice_servers = welcome.ice_servers;
                self.ice_policy = welcome.ice_transport_policy;
                self.other_present = welcome.peer_present;
                let peer_session = welcome.peer_session;
                if let Some(peer) = &mut self.peer {
                    peer.set_polite(welcome.polite);
                    let connected = peer.state() == RtcPeerConnectionState::Connected;
                    // Back after a signaling outage: keep the call with the same person. If we
                    // are back first (the server restarted), they will follow.
                    if same_person(&self.peer_session, &peer_session) || (!self.other_present && connected) {
                        (self.ui.status)(if connected { CallStatus::Connected } else { CallStatus::Connecting });
                        self.restart_ice_if_broken()?;
                        return Ok(None);
                    }
                    self.drop_peer();
                }
                if self.other_present {
                    (self.ui.status)(CallStatus::Connecting);
                    let media = self.media.clone();
                    self.new_peer(peer_session)?.send_media(&media);
                } else {
                    (self.ui.status)(CallStatus::WaitingForPeer);
                }
            }
            Message::PeerJoined(info) => {
                self.other_present = true;
                if self.peer.is_some() && same_person(&self.peer_session, &info.session) {
                    return Ok(None); // they reconnected; the call goes on
                }
                // Someone new: the newcomer calls, we answer its offer.
                self.drop_peer();
                self.peer_session = info.session;
                (self.ui.status)(CallStatus::Connecting);
            }
            Message::PeerLeft(_) => {
                self.other_present = false;
                // Only their signaling may have dropped: a working call goes on. A BYE, or the
                // media path failing, ends it.
                if self.peer.as_ref().is_some_and(|p| p.state() == RtcPeerConnectionState::Connected) {
                    return Ok(None);
                }
                self.drop_peer();
                (self.ui.status)(CallStatus::PeerLeft);
            }
            Message::Bye(_) => {
                self.drop_peer();
                (self.ui.status)(CallStatus::PeerLeft);
            }
            Message::Sdp(description) => {
                let first_offer = self.peer.is_none();
                if first_offer && description.kind != SdpType::Offer {
                    return Ok(None);
                }
                if first_offer {
                    self.new_peer(self.peer_session.clone())?;
                }
                let media = first_offer.then(|| self.media.clone());
                let peer = self.peer.as_mut().expect("created above");
                if let Some(answer) = peer.receive_description(description, media.as_ref()).await? {
                    self.send(&Message::Sdp(answer));
                }
            }
            Message::Candidate(candidate) => {
                if let Some(peer) = &mut self.peer {
                    peer.receive_candidate(candidate).await?;
                }
            }
            Message::Error(error) if error.code == ErrorCode::RoomFull => return Ok(Some(CallStatus::RoomFull)),
            Message::Error(error) => leptos::logging::warn!("the server refused a message: {}", error.message),
        }
        Ok(None)
    }

    fn connection_state_changed(&mut self, state: RtcPeerConnectionState) -> Result<(), JsValue> {
        match state {
            RtcPeerConnectionState::Connected => (self.ui.status)(if self.socket.is_some() {
                CallStatus::Connected
            } else {
                CallStatus::SignalingReconnecting
            }),
            RtcPeerConnectionState::Disconnected => {
                (self.ui.status)(CallStatus::ConnectionInterrupted);
                self.after(DISCONNECTED_GRACE_MS, Event::IceCheck { peer: self.peer_generation });
            }
            RtcPeerConnectionState::Failed if !self.other_present && self.socket.is_some() => {
                // The other person is gone from the room and the media path is dead.
                self.drop_peer();
                (self.ui.status)(CallStatus::PeerLeft);
            }
            RtcPeerConnectionState::Failed => {
                (self.ui.status)(CallStatus::ConnectionInterrupted);
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
        match Socket::open(&self.room, &self.session, self.socket_generation, self.events.clone()) {
            Ok(socket) => self.socket = Some(socket),
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

    fn new_peer(&mut self, remote_session: Option<String>) -> Result<&mut Peer, JsValue> {
        self.drop_peer();
        self.peer_generation += 1;
        self.peer_session = remote_session;
        self.after(CONNECT_TIMEOUT_MS, Event::ConnectTimeout { peer: self.peer_generation });
        Ok(self.peer.insert(Peer::new(&self.ice_servers, self.ice_policy, self.polite, &self.events)?))
    }

    fn drop_peer(&mut self) {
        if self.peer.take().is_some() {
            (self.ui.remote_stream)(None);
        }
    }

    fn end(mut self) {
        self.drop_peer();
        stop_tracks(&self.media);
        (self.ui.local_stream)(None);
        // Dropping the socket closes it normally.
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

async fn camera_and_microphone() -> Result<MediaStream, JsValue> {
    let devices = web_sys::window().ok_or("no window")?.navigator().media_devices()?;
    let constraints = MediaStreamConstraints::new();
    constraints.set_audio(&JsValue::TRUE);
    constraints.set_video(&to_js::<_, JsValue>(&json!({"width": {"ideal": 1280}, "height": {"ideal": 720}})));
    let stream = JsFuture::from(devices.get_user_media_with_constraints(&constraints)?).await?;
    Ok(stream.unchecked_into())
}

fn explain_media_error(error: &JsValue) -> String {
    let name = js_sys::Reflect::get(error, &"name".into()).ok().and_then(|n| n.as_string());
    match name.as_deref() {
        Some("NotAllowedError") => "permission was denied".into(),
        Some("NotFoundError") => "no camera or microphone was found".into(),
        Some("NotReadableError") => "the device is in use by another program".into(),
        _ => describe(error),
    }
}

fn stop_tracks(stream: &MediaStream) {
    for track in stream.get_tracks().iter() {
        track.unchecked_into::<MediaStreamTrack>().stop();
    }
}
