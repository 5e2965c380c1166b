//! One call, from Start to Hang up: camera and microphone, the signaling socket, and a peer
//! connection whenever the other person is there.
//!
//! Everything that happens (a server message, a browser callback, Hang up) becomes an [`Event`]
//! on one channel, handled in order by one task, so no two steps of a negotiation interleave.
//! The person who joins second calls; the one already there answers.

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
    protocol::{close_code, ErrorCode, IceCandidate, IceServer, Message},
    room::RoomId,
};

/// How the engine reports to the page.
#[derive(Clone)]
pub struct CallEvents {
    pub status: Rc<dyn Fn(CallStatus)>,
    pub local_stream: Rc<dyn Fn(Option<MediaStream>)>,
    pub remote_stream: Rc<dyn Fn(Option<MediaStream>)>,
}

pub enum Event {
    Server(Message),
    SocketClosed { code: u16 },
    NegotiationNeeded,
    LocalCandidate(Option<IceCandidate>),
    RemoteStream(MediaStream),
    ConnectionState(RtcPeerConnectionState),
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
    let socket = match Socket::open(&room, events.clone()) {
        Ok(socket) => socket,
        Err(error) => {
            leptos::logging::warn!("cannot open the signaling socket: {}", describe(&error));
            stop_tracks(&media);
            (ui.local_stream)(None);
            (ui.status)(CallStatus::SignalingLost);
            return;
        }
    };
    (ui.status)(CallStatus::Joining);
    let mut call = Call { ui: ui.clone(), events, socket, media, peer: None, polite: false, ice_servers: Vec::new() };
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
    socket: Socket,
    media: MediaStream,
    peer: Option<Peer>,
    polite: bool,
    ice_servers: Vec<IceServer>,
}

impl Call {
    /// Handles one event; `Some(status)` ends the call with that status.
    async fn handle(&mut self, event: Event) -> Result<Option<CallStatus>, JsValue> {
        match event {
            Event::Server(Message::Welcome(welcome)) => {
                self.polite = welcome.polite;
                self.ice_servers = welcome.ice_servers;
                if welcome.peer_present {
                    (self.ui.status)(CallStatus::Connecting);
                    let media = self.media.clone();
                    self.new_peer()?.send_media(&media);
                } else {
                    (self.ui.status)(CallStatus::WaitingForPeer);
                }
            }
            Event::Server(Message::PeerJoined(_)) => {
                // The newcomer calls; we answer its offer.
                self.drop_peer();
                (self.ui.status)(CallStatus::Connecting);
            }
            Event::Server(Message::PeerLeft(_) | Message::Bye(_)) => {
                if self.peer.is_some() {
                    self.drop_peer();
                }
                (self.ui.status)(CallStatus::PeerLeft);
            }
            Event::Server(Message::Sdp(description)) => {
                let first_offer = self.peer.is_none();
                if first_offer && description.kind != crate::protocol::SdpType::Offer {
                    return Ok(None);
                }
                if first_offer {
                    self.new_peer()?;
                }
                let media = first_offer.then(|| self.media.clone());
                let peer = self.peer.as_mut().expect("created above");
                if let Some(answer) = peer.receive_description(description, media.as_ref()).await? {
                    self.socket.send(&Message::Sdp(answer));
                }
            }
            Event::Server(Message::Candidate(candidate)) => {
                if let Some(peer) = &mut self.peer {
                    peer.receive_candidate(candidate).await?;
                }
            }
            Event::Server(Message::Error(error)) if error.code == ErrorCode::RoomFull => {
                return Ok(Some(CallStatus::RoomFull));
            }
            Event::Server(Message::Error(error)) => {
                leptos::logging::warn!("the server refused a message: {}", error.message);
            }
            Event::SocketClosed { code } if code == close_code::ROOM_FULL => return Ok(Some(CallStatus::RoomFull)),
            Event::SocketClosed { .. } => return Ok(Some(CallStatus::SignalingLost)),
            Event::NegotiationNeeded => {
                if let Some(peer) = &mut self.peer {
                    if let Some(offer) = peer.make_offer().await? {
                        self.socket.send(&Message::Sdp(offer));
                    }
                }
            }
            Event::LocalCandidate(candidate) => self.socket.send(&Message::Candidate(candidate)),
            Event::RemoteStream(stream) => (self.ui.remote_stream)(Some(stream)),
            Event::ConnectionState(state) => {
                let status = match state {
                    RtcPeerConnectionState::Connected => CallStatus::Connected,
                    RtcPeerConnectionState::Disconnected => CallStatus::ConnectionInterrupted,
                    RtcPeerConnectionState::Failed => CallStatus::ConnectionFailed,
                    _ => return Ok(None),
                };
                (self.ui.status)(status);
            }
            Event::HangUp => {
                self.socket.send(&Message::Bye(None));
                return Ok(Some(CallStatus::Ended));
            }
        }
        Ok(None)
    }

    fn new_peer(&mut self) -> Result<&mut Peer, JsValue> {
        self.drop_peer();
        Ok(self.peer.insert(Peer::new(&self.ice_servers, self.polite, &self.events)?))
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
