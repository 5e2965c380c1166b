//! One `RTCPeerConnection` and the perfect-negotiation pattern around it.
//!
//! Both sides run the same code; the hub's polite/impolite role settles an offer collision:
//! the impolite side ignores the incoming offer, the polite side rolls its own back (implicitly,
//! in `setRemoteDescription`) and answers. The engine hands this type one event at a time, so
//! no offer is ever half-made while another arrives, and `signalingState` alone tells a
//! collision (MDN's `makingOffer` flag covers a window that cannot happen here).

use futures_channel::mpsc::UnboundedSender;
use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, MediaStreamTrack, RtcConfiguration, RtcIceCandidateInit, RtcIceTransportPolicy,
    RtcPeerConnection, RtcPeerConnectionIceErrorEvent, RtcPeerConnectionIceEvent, RtcPeerConnectionState,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSessionDescriptionInit, RtcSignalingState,
    RtcTrackEvent,
};

use super::{
    engine::Event,
    js::{from_js, to_js},
};
use crate::protocol::{IceCandidate, IceServer, IceTransportPolicy, SdpType, SessionDescription};

pub struct Peer {
    pc: RtcPeerConnection,
    polite: bool,
    /// Whether the last incoming offer was ignored (then its candidates may fail to apply).
    ignore_offer: bool,
    /// Candidates that arrived before the remote description they belong to.
    early_candidates: Vec<IceCandidate>,
    _handlers: Handlers,
}

struct Handlers {
    _negotiation_needed: Closure<dyn FnMut()>,
    _ice_candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _track: Closure<dyn FnMut(RtcTrackEvent)>,
    _connection_state: Closure<dyn FnMut()>,
    ice_error: Closure<dyn FnMut(RtcPeerConnectionIceErrorEvent)>,
}

impl Peer {
    pub fn new(
        ice_servers: &[IceServer],
        policy: IceTransportPolicy,
        polite: bool,
        events: &UnboundedSender<Event>,
    ) -> Result<Self, JsValue> {
        let config = RtcConfiguration::new();
        config.set_ice_servers(&to_js::<_, JsValue>(&ice_servers));
        if policy == IceTransportPolicy::Relay {
            config.set_ice_transport_policy(RtcIceTransportPolicy::Relay);
        }
        let pc = RtcPeerConnection::new_with_configuration(&config)?;

        let send = |event_for: fn() -> Event| {
            let events = events.clone();
            Closure::<dyn FnMut()>::new(move || {
                let _ = events.unbounded_send(event_for());
            })
        };
        let negotiation_needed = send(|| Event::NegotiationNeeded);
        let ice_candidate = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcPeerConnectionIceEvent)>::new(move |event: RtcPeerConnectionIceEvent| {
                let candidate = match event.candidate() {
                    None => None,
                    Some(candidate) => match from_js::<IceCandidate>(&candidate.to_json()) {
                        Ok(candidate) if candidate.candidate.is_empty() => None,
                        Ok(candidate) => Some(candidate),
                        Err(error) => {
                            leptos::logging::warn!("unreadable local candidate: {error:?}");
                            return;
                        }
                    },
                };
                let _ = events.unbounded_send(Event::LocalCandidate(candidate));
            })
        };
        let track = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
                let stream = match event.streams().get(0).dyn_into::<MediaStream>() {
                    Ok(stream) => stream,
                    // A sender that named no stream: gather its tracks into one of our own.
                    Err(_) => match MediaStream::new_with_tracks(&Array::of1(&event.track())) {
                        Ok(stream) => stream,
                        Err(_) => return,
                    },
                };
                let _ = events.unbounded_send(Event::RemoteStream(stream));
            })
        };
        let connection_state = {
            let events = events.clone();
            let pc = pc.clone();
            Closure::<dyn FnMut()>::new(move || {
                let _ = events.unbounded_send(Event::ConnectionState(pc.connection_state()));
            })
        };
        let ice_error = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcPeerConnectionIceErrorEvent)>::new(move |event: RtcPeerConnectionIceErrorEvent| {
                let _ = events.unbounded_send(Event::IceServerError { code: event.error_code(), url: event.url() });
            })
        };
        // web-sys has no `onicecandidateerror` setter; the event is the same.
        pc.add_event_listener_with_callback("icecandidateerror", ice_error.as_ref().unchecked_ref())?;
        pc.set_onnegotiationneeded(Some(negotiation_needed.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(ice_candidate.as_ref().unchecked_ref()));
        pc.set_ontrack(Some(track.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(connection_state.as_ref().unchecked_ref()));
        Ok(Self {
            pc,
            polite,
            ignore_offer: false,
            early_candidates: Vec::new(),
            _handlers: Handlers {
                _negotiation_needed: negotiation_needed,
                _ice_candidate: ice_candidate,
                _track: track,
                _connection_state: connection_state,
                ice_error,
            },
        })
    }

    /// The role can change when the signaling server restarts and hands out roles anew.
    pub fn set_polite(&mut self, polite: bool) {
        self.polite = polite;
    }

    pub fn state(&self) -> RtcPeerConnectionState {
        self.pc.connection_state()
    }

    /// Starts an ICE restart; `negotiationneeded` follows, and perfect negotiation settles who
    /// offers if both sides restart at once. web-sys does not bind `restartIce()`.
    pub fn restart_ice(&self) -> Result<(), JsValue> {
        let method: Function = Reflect::get(&self.pc, &"restartIce".into())?.dyn_into()?;
        method.call0(&self.pc)?;
        Ok(())
    }

    /// The caller's side: one send-and-receive transceiver per local track.
    pub fn send_media(&self, stream: &MediaStream) {
        for track in stream.get_tracks().iter() {
            let track: MediaStreamTrack = track.unchecked_into();
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Sendrecv);
            init.set_streams(&Array::of1(stream));
            self.pc.add_transceiver_with_media_stream_track_and_init(&track, &init);
        }
    }

    /// The answerer's side, after the offer is applied: `addTrack` takes over the transceivers
    /// the offer created, so the answer sends on them without another negotiation.
    fn answer_with_media(&self, stream: &MediaStream) {
        for track in stream.get_tracks().iter() {
            let track: MediaStreamTrack = track.unchecked_into();
            self.pc.add_track_0(&track, stream);
        }
    }

    /// `negotiationneeded`: makes an offer, returned for sending.
    pub async fn make_offer(&mut self) -> Result<Option<SessionDescription>, JsValue> {
        if self.pc.signaling_state() != RtcSignalingState::Stable {
            // An exchange is under way; the event fires again when it ends if still needed.
            return Ok(None);
        }
        set_local_description(&self.pc).await?;
        self.local_description().map(Some)
    }

    /// An incoming SDP. Returns the answer to send, if it was an offer we took.
    /// `media` is attached when this side answers its first offer.
    pub async fn receive_description(
        &mut self,
        description: SessionDescription,
        media: Option<&MediaStream>,
    ) -> Result<Option<SessionDescription>, JsValue> {
        let is_offer = description.kind == SdpType::Offer;
        let collision = is_offer && self.pc.signaling_state() != RtcSignalingState::Stable;
        self.ignore_offer = !self.polite && collision;
        if self.ignore_offer {
            return Ok(None);
        }
        if description.kind == SdpType::Answer && self.pc.signaling_state() != RtcSignalingState::HaveLocalOffer {
            // A stale answer, to an offer we rolled back.
            return Ok(None);
        }
        let init: RtcSessionDescriptionInit = to_js(&description);
        JsFuture::from(self.pc.set_remote_description(&init)).await?;
        for candidate in std::mem::take(&mut self.early_candidates) {
            self.add_candidate(&candidate).await?;
        }
        if !is_offer {
            return Ok(None);
        }
        if let Some(media) = media {
            self.answer_with_media(media);
        }
        set_local_description(&self.pc).await?;
        self.local_description().map(Some)
    }

    pub async fn receive_candidate(&mut self, candidate: Option<IceCandidate>) -> Result<(), JsValue> {
        // End of candidates needs no action: ICE finishes with what it has.
        let Some(candidate) = candidate else { return Ok(()) };
        if self.pc.remote_description().is_none() {
            self.early_candidates.push(candidate);
            return Ok(());
        }
        match self.add_candidate(&candidate).await {
            Err(_) if self.ignore_offer => Ok(()),
            other => other,
        }
    }

    async fn add_candidate(&self, candidate: &IceCandidate) -> Result<(), JsValue> {
        let init: RtcIceCandidateInit = to_js(candidate);
        JsFuture::from(self.pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await?;
        Ok(())
    }

    fn local_description(&self) -> Result<SessionDescription, JsValue> {
        let description = self.pc.local_description().ok_or("no local description")?;
        from_js(&description.to_json())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.set_onnegotiationneeded(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_ontrack(None);
        self.pc.set_onconnectionstatechange(None);
        let _ = self.pc.remove_event_listener_with_callback("icecandidateerror", self._handlers.ice_error.as_ref().unchecked_ref());
        self.pc.close();
    }
}

/// `setLocalDescription()` without arguments, which web-sys does not bind: the browser creates
/// the right offer or answer for the current state itself.
async fn set_local_description(pc: &RtcPeerConnection) -> Result<(), JsValue> {
    let method: Function = Reflect::get(pc, &"setLocalDescription".into())?.dyn_into()?;
    JsFuture::from(method.call0(pc)?.dyn_into::<Promise>()?).await?;
    Ok(())
}
