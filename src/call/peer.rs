//! One `RTCPeerConnection`: the negotiation steps, senders and data channel the
//! [`super::machine`] asks for, and its callbacks reported as [`PeerEvent`]s. Perfect
//! negotiation's decisions (who offers, which offer to ignore, when candidates apply) are the
//! machine's.

use std::{cell::RefCell, rc::Rc};

use js_sys::{Array, Function, JsString, Promise, Reflect};
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, MediaStreamTrack, MessageEvent, RtcBundlePolicy, RtcConfiguration, RtcDataChannel, RtcDataChannelInit,
    RtcIceCandidateInit, RtcIceTransportPolicy, RtcPeerConnection, RtcPeerConnectionIceErrorEvent,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpEncodingParameters, RtcRtpSender,
    RtcRtpSynchronizationSource, RtcRtpTransceiver, RtcRtpTransceiverDirection, RtcRtpTransceiverInit,
    RtcSessionDescriptionInit, RtcSignalingState, RtcTrackEvent,
};

use super::{
    js::{describe, from_js, to_js},
    machine::{ConnectionState, Negotiated, PeerEvent, Signaling},
    stats::{Heard, Report},
};
use crate::protocol::{
    FromUnit, IceCandidate, IceServer, IceTransportPolicy, Layer, PassedOn, PeerMessage, SdpType, SessionDescription,
    MAX_PEER_MESSAGE_UNITS,
};

/// What this side sends on a new connection.
pub struct Outgoing<'a> {
    pub audio: Option<&'a MediaStreamTrack>,
    pub video: Option<&'a MediaStreamTrack>,
    /// The stream the tracks belong to, named to the other side (its `track` events carry it).
    pub stream: &'a MediaStream,
}

pub struct Peer {
    pc: RtcPeerConnection,
    /// Everything the other side sends, whatever streams it names (tracks put on a sender with
    /// `replaceTrack` name none).
    remote: MediaStream,
    audio_sender: Option<RtcRtpSender>,
    video_sender: Option<RtcRtpSender>,
    /// The browser-to-browser channel for media state and chat (or the server's, which passes
    /// them on).
    channel: RtcDataChannel,
    /// To the server's forwarding unit: this side only sends on its own transceivers.
    to_server: bool,
    /// The simulcast layers the server asked for (all until it does), and whether the video is
    /// a shared screen (sent as the full layer alone).
    layers: RefCell<(Option<Vec<Layer>>, bool)>,
    _handlers: Handlers,
}

struct Handlers {
    _negotiation_needed: Closure<dyn FnMut()>,
    _ice_candidate: Closure<dyn FnMut(RtcPeerConnectionIceEvent)>,
    _track: Closure<dyn FnMut(RtcTrackEvent)>,
    _connection_state: Closure<dyn FnMut()>,
    ice_error: Closure<dyn FnMut(RtcPeerConnectionIceErrorEvent)>,
    _channel_open: Closure<dyn FnMut()>,
    _channel_close: Closure<dyn FnMut()>,
    _channel_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Peer {
    /// A new connection, to another browser or (`to_server`) the server's forwarding unit; what it
    /// reports goes to `report`.
    pub fn new(
        ice_servers: &[IceServer],
        policy: IceTransportPolicy,
        to_server: bool,
        report: Rc<dyn Fn(PeerEvent)>,
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

        let send = |event_for: fn() -> PeerEvent| {
            let report = report.clone();
            Closure::<dyn FnMut()>::new(move || report(event_for()))
        };
        let negotiation_needed = send(|| PeerEvent::NegotiationNeeded);
        let ice_candidate = {
            let report = report.clone();
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
                report(PeerEvent::LocalCandidate(candidate));
            })
        };
        let remote = MediaStream::new()?;
        let track = {
            let (report, remote) = (report.clone(), Clone::clone(&remote));
            Closure::<dyn FnMut(RtcTrackEvent)>::new(move |event: RtcTrackEvent| {
                remote.add_track(&event.track());
                report(PeerEvent::RemoteTrack);
            })
        };
        let connection_state = {
            let (report, pc) = (report.clone(), pc.clone());
            Closure::<dyn FnMut()>::new(move || report(PeerEvent::ConnectionState(connection_state(&pc))))
        };
        let ice_error = {
            let report = report.clone();
            Closure::<dyn FnMut(RtcPeerConnectionIceErrorEvent)>::new(move |event: RtcPeerConnectionIceErrorEvent| {
                report(PeerEvent::IceServerError { code: event.error_code(), url: event.url() });
            })
        };
        // web-sys has no `onicecandidateerror` setter; the event is the same.
        pc.add_event_listener_with_callback("icecandidateerror", ice_error.as_ref().unchecked_ref())?;
        // Negotiated with a fixed id, so both sides just create it: no `datachannel` event.
        let channel_init = RtcDataChannelInit::new();
        channel_init.set_negotiated(true);
        channel_init.set_id(0);
        let channel = pc.create_data_channel_with_data_channel_dict("duo", &channel_init);
        let channel_open = send(|| PeerEvent::ChannelOpen);
        let channel_close = send(|| PeerEvent::ChannelClosed);
        let channel_message = {
            let report = report.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let Some(text) = event.data().dyn_into::<JsString>().ok() else { return };
                // Measured before it is copied out of JavaScript, let alone parsed.
                if text.length() > MAX_PEER_MESSAGE_UNITS {
                    return report(PeerEvent::Oversized);
                }
                let text = String::from(text);
                let event = match to_server {
                    // Another person's message passed on, or (with no `from`) the server's own.
                    true => serde_json::from_str::<PassedOn>(&text)
                        .map(PeerEvent::Relayed)
                        .or_else(|_| serde_json::from_str::<FromUnit>(&text).map(PeerEvent::Unit)),
                    false => serde_json::from_str::<PeerMessage>(&text).map(PeerEvent::Message),
                };
                match event {
                    Ok(event) => report(event),
                    Err(error) => leptos::logging::warn!("ignoring peer message {text}: {error}"),
                }
            })
        };
        channel.set_onopen(Some(channel_open.as_ref().unchecked_ref()));
        channel.set_onclose(Some(channel_close.as_ref().unchecked_ref()));
        channel.set_onmessage(Some(channel_message.as_ref().unchecked_ref()));
        pc.set_onnegotiationneeded(Some(negotiation_needed.as_ref().unchecked_ref()));
        pc.set_onicecandidate(Some(ice_candidate.as_ref().unchecked_ref()));
        pc.set_ontrack(Some(track.as_ref().unchecked_ref()));
        pc.set_onconnectionstatechange(Some(connection_state.as_ref().unchecked_ref()));
        Ok(Self {
            pc,
            remote,
            audio_sender: None,
            video_sender: None,
            channel,
            to_server,
            layers: RefCell::new((None, false)),
            _handlers: Handlers {
                _negotiation_needed: negotiation_needed,
                _ice_candidate: ice_candidate,
                _track: track,
                _connection_state: connection_state,
                ice_error,
                _channel_open: channel_open,
                _channel_close: channel_close,
                _channel_message: channel_message,
            },
        })
    }

    /// The stream itself, not `MediaStream.clone()` (which `.clone()` would call: web-sys's
    /// method shadows `Clone`), whose copies of the tracks would outlive the call.
    pub fn remote_stream(&self) -> MediaStream {
        Clone::clone(&self.remote)
    }

    /// A stream of what the transceivers `mids` receive (on the connection to the server, one
    /// person's media). A transceiver's receiving track stays the same while it lives.
    pub fn tracks(&self, mids: &[String]) -> Result<MediaStream, JsValue> {
        let stream = MediaStream::new()?;
        for transceiver in self.pc.get_transceivers().iter() {
            let transceiver: RtcRtpTransceiver = transceiver.unchecked_into();
            if transceiver.mid().is_some_and(|mid| mids.contains(&mid)) {
                stream.add_track(&transceiver.receiver().track());
            }
        }
        Ok(stream)
    }

    /// What each receiving audio transceiver last played out: its source's last packet's time
    /// and the level its RFC 6464 header extension carried (none without one).
    pub fn voices(&self) -> Vec<Heard> {
        let mut heard = Vec::new();
        for transceiver in self.pc.get_transceivers().iter() {
            let transceiver: RtcRtpTransceiver = transceiver.unchecked_into();
            let receiver = transceiver.receiver();
            let (Some(mid), "audio") = (transceiver.mid(), receiver.track().kind().as_str()) else { continue };
            // On the server's m-lines, one source each: the person it carries.
            if let Some(source) = receiver.get_synchronization_sources().iter().next() {
                let source: RtcRtpSynchronizationSource = source.unchecked_into();
                heard.push(Heard { mid, at: source.get_timestamp(), level: source.get_audio_level() });
            }
        }
        heard
    }

    /// Starts an ICE restart; `negotiationneeded` follows. web-sys does not bind `restartIce()`.
    pub fn restart_ice(&self) -> Result<(), JsValue> {
        let method: Function = Reflect::get(&self.pc, &"restartIce".into())?.dyn_into()?;
        method.call0(&self.pc)?;
        Ok(())
    }

    /// The caller's side: one send-and-receive transceiver per kind, with or without a track
    /// yet, so that a track can be put on it later without renegotiating. To the server, the
    /// video goes in simulcast layers, for it to send each receiver the one that fits.
    pub fn send_media(&mut self, outgoing: &Outgoing) {
        let init = || {
            let init = RtcRtpTransceiverInit::new();
            // The server sends others' media on m-lines of its own.
            init.set_direction(match self.to_server {
                true => RtcRtpTransceiverDirection::Sendonly,
                false => RtcRtpTransceiverDirection::Sendrecv,
            });
            init.set_streams(&Array::of1(outgoing.stream));
            init
        };
        let add = |kind: &str, track: Option<&MediaStreamTrack>, init: &RtcRtpTransceiverInit| match track {
            Some(track) => self.pc.add_transceiver_with_media_stream_track_and_init(track, init),
            None => self.pc.add_transceiver_with_str_and_init(kind, init),
        };
        self.audio_sender = Some(add("audio", outgoing.audio, &init()).sender());
        let video = init();
        if self.to_server {
            video.set_send_encodings(&simulcast(outgoing.video));
        }
        self.video_sender = Some(add("video", outgoing.video, &video).sender());
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
    /// (their encodings are as made: nothing else changes before the media starts).
    /// Not awaited: the browser queues each `replaceTrack` behind a negotiation in progress,
    /// which the call need not wait for, and later `replaceTrack`s behind these.
    pub fn start_sending(&self, audio: Option<&MediaStreamTrack>, video: Option<&MediaStreamTrack>) {
        for (sender, track) in [(&self.audio_sender, audio), (&self.video_sender, video)] {
            let (Some(sender), Some(track)) = (sender, track) else { continue };
            let replaced = JsFuture::from(sender.replace_track(Some(track)));
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(error) = replaced.await {
                    leptos::logging::warn!("cannot send the new track: {}", describe(&error));
                }
            });
        }
    }

    /// Sends `track` (or nothing) as this side's audio, without renegotiating.
    pub async fn replace_audio(&self, track: Option<&MediaStreamTrack>) -> Result<(), JsValue> {
        let Some(sender) = &self.audio_sender else { return Ok(()) };
        JsFuture::from(sender.replace_track(track)).await?;
        self.encode(sender, track.is_some(), &(None, false)).await;
        Ok(())
    }

    /// Sends `track` (or nothing) as this side's video, a shared screen if `screen`, without
    /// renegotiating.
    pub async fn replace_video(&self, track: Option<&MediaStreamTrack>, screen: bool) -> Result<(), JsValue> {
        let Some(sender) = &self.video_sender else { return Ok(()) };
        JsFuture::from(sender.replace_track(track)).await?;
        self.layers.borrow_mut().1 = screen;
        let layers = self.layers.borrow().clone();
        self.encode(sender, track.is_some(), &layers).await;
        Ok(())
    }

    /// Sends the simulcast `layers` of the video the server asked for, and pauses the others.
    pub async fn send_layers(&self, layers: Vec<Layer>) {
        let Some(sender) = &self.video_sender else { return };
        self.layers.borrow_mut().0 = Some(layers);
        let layers = self.layers.borrow().clone();
        self.encode(sender, sender.track().is_some(), &layers).await;
    }

    async fn encode(&self, sender: &RtcRtpSender, sending: bool, layers: &(Option<Vec<Layer>>, bool)) {
        if let Err(error) = set_sending(sender, sending, layers).await {
            // Before the first negotiation there are no encodings to change yet.
            leptos::logging::warn!("cannot switch the sender's encoding: {}", describe(&error));
        }
    }

    /// Caps the video this connection sends, in bits per second, or lifts the cap (`None`). Not
    /// to the server: its simulcast layers keep their own caps.
    pub async fn cap_video(&self, max_bps: Option<u32>) -> Result<(), JsValue> {
        let Some(sender) = self.video_sender.as_ref().filter(|_| !self.to_server) else { return Ok(()) };
        let parameters = sender.get_parameters();
        for encoding in parameters.get_encodings().unwrap_or_default().iter() {
            let encoding: RtcRtpEncodingParameters = encoding.unchecked_into();
            match max_bps {
                Some(max) => encoding.set_max_bitrate(max),
                None => {
                    Reflect::delete_property(&encoding, &"maxBitrate".into())?;
                }
            }
        }
        JsFuture::from(sender.set_parameters_with_parameters(&parameters)).await?;
        Ok(())
    }

    /// Sends a message to the other browser over the data channel; false if it could not
    /// (the channel was closing).
    pub fn send_to_peer(&self, message: &PeerMessage) -> bool {
        let text = serde_json::to_string(message).expect("serializes");
        self.channel.send_with_str(&text).is_ok()
    }

    /// `getStats()`'s reports, as a future that does not hold the connection: the engine goes
    /// on while the browser gathers them.
    pub fn stats(&self) -> impl std::future::Future<Output = Result<Vec<Report>, JsValue>> {
        let reading = JsFuture::from(self.pc.get_stats());
        async move {
            let report = reading.await?;
            let values: Function = Reflect::get(&report, &"values".into())?.dyn_into()?;
            Ok(Array::from(&values.call0(&report)?).iter().map(|report| read_report(&report)).collect())
        }
    }

    /// Makes an offer (`setLocalDescription()` in a stable state).
    pub async fn offer(&self) -> Negotiated {
        let made = set_local_description(&self.pc).await;
        self.outcome(made.map(|()| true))
    }

    /// Applies an incoming offer or answer; to an offer, answers with `media`, attached to the
    /// first offer's transceivers.
    pub async fn apply(&mut self, description: SessionDescription, media: &Outgoing<'_>) -> Negotiated {
        let is_offer = description.kind == SdpType::Offer;
        let init: RtcSessionDescriptionInit = to_js(&description);
        let mut applied = JsFuture::from(self.pc.set_remote_description(&init)).await.map(|_| is_offer);
        if matches!(applied, Ok(true)) {
            self.answer_with_media(media);
            applied = set_local_description(&self.pc).await.map(|()| true);
        }
        self.outcome(applied)
    }

    /// Where a negotiation step left the connection, with the offer or answer it made.
    fn outcome(&self, made: Result<bool, JsValue>) -> Negotiated {
        let local = match made {
            Ok(true) => match self.pc.local_description().map(|d| from_js(&d.to_json())) {
                Some(Ok(description)) => Some(description),
                _ => {
                    leptos::logging::warn!("no readable local description");
                    None
                }
            },
            Ok(false) => None,
            Err(error) => {
                leptos::logging::warn!("negotiation step failed: {}", describe(&error));
                None
            }
        };
        let signaling = match self.pc.signaling_state() {
            RtcSignalingState::Stable => Signaling::Stable,
            RtcSignalingState::HaveLocalOffer => Signaling::HaveLocalOffer,
            _ => Signaling::Other,
        };
        Negotiated { signaling, has_remote_description: self.pc.remote_description().is_some(), local }
    }

    /// Not awaited: the browser applies candidates in order, after any description being set,
    /// and the engine need not wait for each before the next (they come in bursts, while an
    /// offer or answer is being applied).
    pub fn add_candidate(&self, candidate: &IceCandidate, failure_expected: bool) {
        let init: RtcIceCandidateInit = to_js(candidate);
        let added = JsFuture::from(self.pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init)));
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(error) = added.await {
                if !failure_expected {
                    leptos::logging::warn!("cannot add a remote candidate: {}", describe(&error));
                }
            }
        });
    }
}

/// The fields of one `RTCStats` report that the statistics panel and the speaking ring read.
fn read_report(report: &JsValue) -> Report {
    let field = |name: &str| Reflect::get(report, &name.into()).unwrap_or_default();
    let text = |name: &str| field(name).as_string();
    let number = |name: &str| field(name).as_f64();
    Report {
        id: text("id").unwrap_or_default(),
        report_type: text("type").unwrap_or_default(),
        kind: text("kind"),
        mid: text("mid"),
        bytes_received: number("bytesReceived").unwrap_or_default(),
        bytes_sent: number("bytesSent").unwrap_or_default(),
        packets_lost: number("packetsLost").unwrap_or_default(),
        packets_received: number("packetsReceived").unwrap_or_default(),
        frames_decoded: number("framesDecoded").unwrap_or_default(),
        frame_width: number("frameWidth").map(|width| width as u32),
        frame_height: number("frameHeight").map(|height| height as u32),
        frames_per_second: number("framesPerSecond"),
        selected_candidate_pair_id: text("selectedCandidatePairId"),
        selected: field("selected").is_truthy(),
        total_audio_energy: number("totalAudioEnergy").unwrap_or_default(),
        total_samples_duration: number("totalSamplesDuration").unwrap_or_default(),
        local_candidate_id: text("localCandidateId"),
        remote_candidate_id: text("remoteCandidateId"),
        current_round_trip_time: number("currentRoundTripTime"),
        candidate_type: text("candidateType"),
    }
}

fn connection_state(pc: &RtcPeerConnection) -> ConnectionState {
    match pc.connection_state() {
        RtcPeerConnectionState::Connecting => ConnectionState::Connecting,
        RtcPeerConnectionState::Connected => ConnectionState::Connected,
        RtcPeerConnectionState::Disconnected => ConnectionState::Disconnected,
        RtcPeerConnectionState::Failed => ConnectionState::Failed,
        RtcPeerConnectionState::Closed => ConnectionState::Closed,
        _ => ConnectionState::New,
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.pc.set_onnegotiationneeded(None);
        self.pc.set_onicecandidate(None);
        self.pc.set_ontrack(None);
        self.pc.set_onconnectionstatechange(None);
        self.channel.set_onopen(None);
        self.channel.set_onclose(None);
        self.channel.set_onmessage(None);
        self.channel.close();
        let _ = self.pc.remove_event_listener_with_callback(
            "icecandidateerror",
            self._handlers.ice_error.as_ref().unchecked_ref(),
        );
        self.pc.close();
    }
}

/// The encodings of the video sent to the server: each [`Layer`] a camera of this height sends
/// (three from [`Layer::THREE_FROM_HEIGHT`], else two), smallest first. A camera not granted yet
/// is taken to be a common one, with three.
fn simulcast(camera: Option<&MediaStreamTrack>) -> Array {
    let height = camera
        .and_then(|track| Reflect::get(&track.get_settings(), &"height".into()).ok())
        .and_then(|height| height.as_f64())
        .map_or(Layer::THREE_FROM_HEIGHT, |height| height as u32);
    Layer::sent_for(height)
        .iter()
        .map(|layer| {
            let encoding = RtcRtpEncodingParameters::new();
            encoding.set_rid(layer.rid());
            encoding.set_scale_resolution_down_by(layer.scale_down() as f32);
            encoding.set_max_bitrate(layer.max_bitrate());
            JsValue::from(encoding)
        })
        .collect()
}

/// Turns a sender's encodings on or off: all off when it has no track, else each simulcast
/// layer as `layers` says (those the server asked for; the full one alone for a shared screen).
/// A sender without a track sends nothing in Chromium, but Firefox goes on encoding about a
/// frame a second; an inactive encoding sends no RTP in either engine, so camera off means no
/// frames at all.
async fn set_sending(
    sender: &RtcRtpSender,
    sending: bool,
    (asked, screen): &(Option<Vec<Layer>>, bool),
) -> Result<(), JsValue> {
    let parameters = sender.get_parameters();
    let encodings = parameters.get_encodings().unwrap_or_default();
    let mut changed = false;
    for encoding in encodings.iter() {
        let encoding: RtcRtpEncodingParameters = encoding.unchecked_into();
        let active = match encoding.get_rid().as_deref().and_then(Layer::from_rid) {
            None => sending,
            Some(layer) if *screen => sending && layer == Layer::Full,
            Some(layer) => sending && asked.as_ref().is_none_or(|asked| asked.contains(&layer)),
        };
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
