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
    MediaStream, MediaStreamTrack, MessageEvent, RtcBundlePolicy, RtcConfiguration, RtcDataChannel, RtcDataChannelInit,
    RtcDataChannelState, RtcIceCandidateInit, RtcIceTransportPolicy, RtcPeerConnection, RtcPeerConnectionIceErrorEvent,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpEncodingParameters, RtcRtpSender, RtcRtpTransceiver,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSessionDescriptionInit, RtcSignalingState, RtcTrackEvent,
};

use super::{
    engine::Event,
    js::{from_js, to_js},
};
use crate::protocol::{IceCandidate, IceServer, IceTransportPolicy, PeerMessage, SdpType, SessionDescription};

/// What this side sends on a new connection.
pub struct Outgoing<'a> {
    pub audio: Option<&'a MediaStreamTrack>,
    pub video: Option<&'a MediaStreamTrack>,
    /// The stream the tracks belong to, named to the other side (its `track` events carry it).
    pub stream: &'a MediaStream,
}

pub struct Peer {
    pc: RtcPeerConnection,
    polite: bool,
    /// Whether the last incoming offer was ignored (then its candidates may fail to apply).
    ignore_offer: bool,
    /// Made ahead of the other side's first offer: until it comes, `negotiationneeded` (the
    /// data channel raises it) must not make an offer of our own.
    awaits_offer: bool,
    /// Candidates that arrived before the remote description they belong to.
    early_candidates: Vec<IceCandidate>,
    audio_sender: Option<RtcRtpSender>,
    video_sender: Option<RtcRtpSender>,
    /// The browser-to-browser channel for media state and chat.
    channel: RtcDataChannel,
    _handlers: Handlers,
}

struct Handlers {
    _negotiation_needed: Closure<dyn FnMut()>,
    _ice_candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _track: Closure<dyn FnMut(RtcTrackEvent)>,
    _connection_state: Closure<dyn FnMut()>,
    ice_error: Closure<dyn FnMut(RtcPeerConnectionIceErrorEvent)>,
    _channel_open: Closure<dyn FnMut()>,
    _channel_message: Closure<dyn FnMut(MessageEvent)>,
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
        // Every browser bundles: one transport to gather for and connect, not one per kind.
        config.set_bundle_policy(RtcBundlePolicy::MaxBundle);
        // Gather candidates now, not when the offer or answer is made: the standby connection
        // has them ready before the other side's offer comes. web-sys has no setter.
        Reflect::set(&config, &"iceCandidatePoolSize".into(), &1.into())?;
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
        // One stream for everything the other side sends, whatever streams it names (tracks
        // put on a sender with replaceTrack name none).
        let remote = MediaStream::new()?;
        let track = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
                remote.add_track(&event.track());
                let _ = events.unbounded_send(Event::RemoteStream(remote.clone()));
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
        // Negotiated with a fixed id, so both sides just create it: no `datachannel` event.
        let channel_init = RtcDataChannelInit::new();
        channel_init.set_negotiated(true);
        channel_init.set_id(0);
        let channel = pc.create_data_channel_with_data_channel_dict("duo", &channel_init);
        let channel_open = send(|| Event::ChannelOpen);
        let channel_message = {
            let events = events.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let Some(text) = event.data().as_string() else { return };
                match serde_json::from_str::<PeerMessage>(&text) {
                    Ok(message) => {
                        let _ = events.unbounded_send(Event::FromPeer(message));
                    }
                    Err(error) => leptos::logging::warn!("ignoring peer message {text}: {error}"),
                }
            })
        };
        channel.set_onopen(Some(channel_open.as_ref().unchecked_ref()));
        channel.set_onmessage(Some(channel_message.as_ref().unchecked_ref()));
        pc.set_onnegotiationneeded(Some(negotiation_needed.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(ice_candidate.as_ref().unchecked_ref()));
        pc.set_ontrack(Some(track.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(connection_state.as_ref().unchecked_ref()));
        Ok(Self {
            pc,
            polite,
            ignore_offer: false,
            awaits_offer: false,
            early_candidates: Vec::new(),
            audio_sender: None,
            video_sender: None,
            channel,
            _handlers: Handlers {
                _negotiation_needed: negotiation_needed,
                _ice_candidate: ice_candidate,
                _track: track,
                _connection_state: connection_state,
                ice_error,
                _channel_open: channel_open,
                _channel_message: channel_message,
            },
        })
    }

    /// This side answers: the other side's offer is on its way.
    pub fn await_offer(&mut self) {
        self.awaits_offer = true;
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

    /// The caller's side: one send-and-receive transceiver per kind, with or without a track
    /// yet, so that a track can be put on it later without renegotiating.
    pub fn send_media(&mut self, outgoing: &Outgoing) {
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendrecv);
        init.set_streams(&Array::of1(outgoing.stream));
        let add = |kind: &str, track: Option<&MediaStreamTrack>| match track {
            Some(track) => self.pc.add_transceiver_with_media_stream_track_and_init(track, &init),
            None => self.pc.add_transceiver_with_str_and_init(kind, &init),
        };
        self.audio_sender = Some(add("audio", outgoing.audio).sender());
        self.video_sender = Some(add("video", outgoing.video).sender());
    }

    /// The answerer's side, after the offer is applied: this side sends on the transceivers the
    /// offer created, one per kind, so the answer needs no second negotiation. Kinds that
    /// already have a sender (a later offer) are left as they are.
    fn answer_with_media(&mut self, outgoing: &Outgoing) {
        for transceiver in self.pc.get_transceivers().iter() {
            let transceiver: RtcRtpTransceiver = transceiver.unchecked_into();
            let (slot, track) = match transceiver.receiver().track().kind().as_str() {
                "audio" if self.audio_sender.is_none() => (&mut self.audio_sender, outgoing.audio),
                "video" if self.video_sender.is_none() => (&mut self.video_sender, outgoing.video),
                _ => continue,
            };
            *slot = Some(match track {
                // addTrack takes this transceiver over and names the stream.
                Some(track) => self.pc.add_track_0(track, outgoing.stream),
                None => {
                    transceiver.set_direction(RtcRtpTransceiverDirection::Sendrecv);
                    transceiver.sender()
                }
            });
        }
    }

    /// Puts the camera and microphone, granted after the connection was made, on its senders
    /// (their encodings are as made: the engine changes nothing else before the media starts).
    /// Not awaited: the browser queues each `replaceTrack` behind a negotiation in progress,
    /// which the call need not wait for, and later `replaceTrack`s behind these.
    pub fn start_sending(&self, audio: Option<&MediaStreamTrack>, video: Option<&MediaStreamTrack>) {
        for (sender, track) in [(&self.audio_sender, audio), (&self.video_sender, video)] {
            let (Some(sender), Some(track)) = (sender, track) else { continue };
            let replaced = JsFuture::from(sender.replace_track(Some(track)));
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(error) = replaced.await {
                    leptos::logging::warn!("cannot send the new track: {}", super::js::describe(&error));
                }
            });
        }
    }

    /// Sends `track` (or nothing) as this side's audio or video, without renegotiating.
    pub async fn replace_track(&self, video: bool, track: Option<&MediaStreamTrack>) -> Result<(), JsValue> {
        let sender = if video { &self.video_sender } else { &self.audio_sender };
        if let Some(sender) = sender {
            JsFuture::from(sender.replace_track(track)).await?;
            if let Err(error) = set_sending(sender, track.is_some()).await {
                // Before the first negotiation there are no encodings to change yet.
                leptos::logging::warn!("cannot switch the sender's encoding: {}", super::js::describe(&error));
            }
        }
        Ok(())
    }

    /// Sends a message to the other browser; false if the channel is not open (yet).
    pub fn send_to_peer(&self, message: &PeerMessage) -> bool {
        self.channel.ready_state() == RtcDataChannelState::Open
            && self.channel.send_with_str(&serde_json::to_string(message).expect("serializes")).is_ok()
    }

    /// `getStats()`, as an array of report objects.
    pub async fn stats(&self) -> Result<JsValue, JsValue> {
        let report = JsFuture::from(self.pc.get_stats()).await?;
        let values: Function = Reflect::get(&report, &"values".into())?.dyn_into()?;
        Ok(Array::from(&values.call0(&report)?).into())
    }

    /// `negotiationneeded`: makes an offer, returned for sending.
    pub async fn make_offer(&mut self) -> Result<Option<SessionDescription>, JsValue> {
        let waiting = self.awaits_offer && self.pc.remote_description().is_none();
        if waiting || self.pc.signaling_state() != RtcSignalingState::Stable {
            // The other side offers first, or an exchange is under way (the event fires again
            // when it ends if still needed).
            return Ok(None);
        }
        set_local_description(&self.pc).await?;
        self.local_description().map(Some)
    }

    /// An incoming SDP. Returns the answer to send, if it was an offer we took. `media` is
    /// what this side sends, attached when it answers its first offer.
    pub async fn receive_description(
        &mut self,
        description: SessionDescription,
        media: &Outgoing<'_>,
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
            self.add_candidate(&candidate);
        }
        if !is_offer {
            return Ok(None);
        }
        self.answer_with_media(media);
        set_local_description(&self.pc).await?;
        self.local_description().map(Some)
    }

    pub fn receive_candidate(&mut self, candidate: Option<IceCandidate>) {
        // End of candidates needs no action: ICE finishes with what it has.
        let Some(candidate) = candidate else { return };
        if self.pc.remote_description().is_none() {
            self.early_candidates.push(candidate);
            return;
        }
        self.add_candidate(&candidate);
    }

    /// Not awaited: the browser applies candidates in order, after any description being set,
    /// and the engine need not wait for each before the next (they come in bursts, while an
    /// offer or answer is being applied).
    fn add_candidate(&self, candidate: &IceCandidate) {
        let init: RtcIceCandidateInit = to_js(candidate);
        let added = JsFuture::from(self.pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)));
        // Candidates of an offer we ignored may fail to apply; that is expected.
        let expected_to_fail = self.ignore_offer;
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(error) = added.await {
                if !expected_to_fail {
                    leptos::logging::warn!("cannot add a remote candidate: {}", super::js::describe(&error));
                }
            }
        });
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
        self.channel.set_onopen(None);
        self.channel.set_onmessage(None);
        self.channel.close();
        let _ = self.pc.remove_event_listener_with_callback(
            "icecandidateerror",
            self._handlers.ice_error.as_ref().unchecked_ref(),
        );
        self.pc.close();
    }
}

/// Turns a sender's encodings on or off. A sender without a track sends nothing in Chromium,
/// but Firefox goes on encoding about a frame a second; an inactive encoding sends no RTP in
/// either engine, so camera off means no frames at all.
async fn set_sending(sender: &RtcRtpSender, active: bool) -> Result<(), JsValue> {
    let parameters = sender.get_parameters();
    let encodings = parameters.get_encodings().unwrap_or_default();
    let mut changed = false;
    for encoding in encodings.iter() {
        let encoding: RtcRtpEncodingParameters = encoding.unchecked_into();
        if encoding.get_active() != Some(active) {
            encoding.set_active(active);
            changed = true;
        }
    }
    if changed {
        JsFuture::from(sender.set_parameters_with_parameters(&parameters)).await?;
    }
    Ok(())
}

/// `setLocalDescription()` without arguments, which web-sys does not bind: the browser creates
/// the right offer or answer for the current state itself.
async fn set_local_description(pc: &RtcPeerConnection) -> Result<(), JsValue> {
    let method: Function = Reflect::get(pc, &"setLocalDescription".into())?.dyn_into()?;
    JsFuture::from(method.call0(pc)?.dyn_into::<Promise>()?).await?;
    Ok(())
}
