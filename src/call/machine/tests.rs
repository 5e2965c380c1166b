use super::{mesh::is_relay, signaling::reconnect_delay_ms, *};
use crate::{
    call::{Author, CallCommand, CallStats, ChatLine, Device, Remote},
    protocol::{
        ChatMessage, ErrorBody, ErrorCode, FromUnit, IceCandidate, Layer, MediaDescription, MediaRoute, MediaState,
        Message, PassedOn, PeerId, PeerInfo, PeerMessage, Reason, ReceivedLayer, Receiving, RouteChange, SdpType,
        SessionDescription, Track, ViewTile, Welcome, MAX_CHAT_CHARS,
    },
};

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
        media: MediaRoute::Mesh,
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
    assert!(has(&applied, |e| matches!(e, Effect::Apply { description, .. } if description.kind == SdpType::Answer)));
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
    let effects = handle(&mut machine, server(FIRST_SOCKET + 1, welcome(true, Some("bob"), IceTransportPolicy::All)));
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
    let effects = handle(&mut machine, server(FIRST_SOCKET + 3, welcome(true, Some("carol"), IceTransportPolicy::All)));
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
    assert!(
        events(&handle(&mut machine, peer(carol, PeerEvent::Message(PeerMessage::Name("Carol".into()))))).is_empty()
    );
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
    assert_eq!(events(&handle(&mut machine, from(FIRST_SOCKET, "bob", Message::Bye(None)))), ["The other person left"]);
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
    assert!(has(&effects, |e| matches!(e, Effect::Apply { description, .. } if description.kind == SdpType::Offer)));
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
    for timer in [Timer::ConnectTimeout { peer: old }, Timer::IceCheck { peer: old }, Timer::StatsTick { peer: old }] {
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
    assert_eq!(effects, [Effect::GetStats { peer: generation }, Effect::Arm { timer: tick, after_ms: STATS_EVERY_MS }]);
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
    assert_eq!(handle(&mut machine, Input::ScreenPicked(Err(Some("NotAllowedError".into())))), [Effect::Notice(None)]);
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
    assert!(has(&effects, |e| matches!(e, Effect::AddCandidate { peer, .. } if *peer == generation)), "{effects:?}");
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
    let effects = handle(&mut machine, server(FIRST_SOCKET + 1, welcome(true, Some("bob"), IceTransportPolicy::All)));
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
    assert_eq!(effects, [Effect::Chat(ChatLine { from: Author::Them("Them".into()), text: "hey".into(), sent_at: 5 })]);
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
    let chat = |text: String| peer(generation, PeerEvent::Message(PeerMessage::Chat(ChatMessage { text, sent_at: 5 })));
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
    // Each line its own (a line that comes twice is shown once: see the move to the server).
    let chat = |text: &str, sent_at| {
        peer(generation, PeerEvent::Message(PeerMessage::Chat(ChatMessage { text: text.into(), sent_at })))
    };
    for at in [0.0, 20_000.0] {
        let line = |i| chat("x", at as u64 + u64::from(i));
        let shown: usize = (0..=CHAT_BURST).map(|i| chat_lines(&handle_at(&mut machine, at, line(i))).len()).sum();
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
        effects.iter().filter_map(|e| if let Effect::Speaking(on) = e { Some(*on) } else { None }).collect::<Vec<_>>()
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
    // Renamed between that join and its WELCOME: the name goes once the WELCOME has come.
    let effects = handle(&mut machine, Input::Command(CallCommand::Name("Cy".into())));
    assert!(!has(&effects, |e| matches!(e, Effect::Send { .. })), "{effects:?}");
    let effects = handle(&mut machine, server(FIRST_SOCKET + 1, welcome(false, None, IceTransportPolicy::All)));
    assert!(effects.contains(&Effect::Send { to: None, message: Message::Name("Cy".into()) }), "{effects:?}");
    // Not again at the next WELCOME, with nothing renamed.
    handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET + 1, code: ABNORMAL_CLOSURE });
    handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET + 1 }));
    let effects = handle(&mut machine, server(FIRST_SOCKET + 2, welcome(false, None, IceTransportPolicy::All)));
    assert!(!has(&effects, |e| matches!(e, Effect::Send { message: Message::Name(_), .. })), "{effects:?}");
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

// Media through the server (`WELCOME.media` is `sfu`).

/// A WELCOME to a room on the server where Alice and Bob already are, and what it made: the
/// connection to the server, which has offered what this side sends.
fn joined_on_the_server() -> (CallMachine, u32, Vec<Effect>) {
    let mut machine = started();
    let Message::Welcome(welcome) = welcome_to(vec![info("alice"), info("bob")], IceTransportPolicy::All) else {
        unreachable!()
    };
    let welcome = Message::Welcome(Welcome { media: MediaRoute::Sfu, ..welcome });
    let effects = handle(&mut machine, server(FIRST_SOCKET, welcome));
    let made: Vec<&Effect> = effects.iter().filter(|e| matches!(e, Effect::CreatePeer { .. })).collect();
    let [Effect::CreatePeer { peer: generation, to_server: true, .. }] = made[..] else {
        panic!("one connection, to the server: {effects:?}")
    };
    let generation = *generation;
    assert!(effects.contains(&Effect::AddTransceivers { peer: generation, audio: true, video: Video::Camera }));
    assert!(effects.contains(&Effect::Offer { peer: generation }), "{effects:?}");
    let offer = sdp(SdpType::Offer);
    let sent = handle(&mut machine, peer(generation, negotiated(Signaling::HaveLocalOffer, Some(offer.clone()))));
    let to_server = MediaDescription { kind: SdpType::Offer, sdp: offer.sdp, tracks: Vec::new() };
    assert!(sent.contains(&Effect::Send { to: None, message: Message::MediaSdp(to_server) }), "{sent:?}");
    let answer = MediaDescription { kind: SdpType::Answer, sdp: "v=0 server".into(), tracks: Vec::new() };
    let applied = handle(&mut machine, server(FIRST_SOCKET, Message::MediaSdp(answer)));
    assert!(has(&applied, |e| matches!(e, Effect::Apply { peer, description, .. }
        if *peer == generation && description.kind == SdpType::Answer)));
    handle(&mut machine, peer(generation, negotiated(Signaling::Stable, None)));
    (machine, generation, effects)
}

fn remotes(effects: &[Effect]) -> Option<&Vec<Remote>> {
    effects.iter().rev().find_map(|e| if let Effect::Remotes(r) = e { Some(r) } else { None })
}

/// The server's offer of `tracks` (mid, whose), applied and answered.
fn server_offers(machine: &mut CallMachine, generation: u32, tracks: &[(&str, &str)]) -> Vec<Effect> {
    let tracks = tracks.iter().map(|(mid, who)| Track { mid: (*mid).into(), peer_id: id_of(who) }).collect();
    let offer = MediaDescription { kind: SdpType::Offer, sdp: "v=0 server offer".into(), tracks };
    let applied = handle(machine, server(FIRST_SOCKET, Message::MediaSdp(offer)));
    assert!(has(&applied, |e| matches!(e, Effect::Apply { description, .. } if description.kind == SdpType::Offer)));
    let answer = sdp(SdpType::Answer);
    let effects = handle(machine, peer(generation, negotiated(Signaling::Stable, Some(answer.clone()))));
    let back = MediaDescription { kind: SdpType::Answer, sdp: answer.sdp, tracks: Vec::new() };
    assert!(effects.contains(&Effect::Send { to: None, message: Message::MediaSdp(back) }), "{effects:?}");
    effects
}

#[test]
fn on_the_server_one_connection_carries_everyone_and_each_tile_gets_its_persons_m_lines() {
    let (mut machine, generation, effects) = joined_on_the_server();
    let tiles = remotes(&effects).expect("tiles for Alice and Bob");
    assert_eq!(tiles.len(), 2);
    assert!(tiles.iter().all(|tile| !tile.receiving && tile.peer != generation), "{tiles:?}");
    let (alice, bob) = (tiles[0].peer, tiles[1].peer);

    let effects = server_offers(&mut machine, generation, &[("2", "alice"), ("3", "alice"), ("4", "bob")]);
    let routes: Vec<_> = effects.iter().filter(|e| matches!(e, Effect::RouteTracks { .. })).collect();
    let expected = Effect::RouteTracks {
        peer: generation,
        tiles: vec![(alice, vec!["2".into(), "3".into()]), (bob, vec!["4".into()])],
    };
    assert_eq!(routes, [&expected]);
    assert!(remotes(&effects).unwrap().iter().all(|tile| tile.receiving));

    // Connected to the server: in a call with both.
    let effects = handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Connected)));
    assert_eq!(statuses(&effects), [CallStatus::ConnectedThroughServer(vec!["Guest 1".into(), "Guest 2".into()])]);
    assert_eq!(statuses(&effects)[0].text(), "Connected with Guest 1 and Guest 2. Media goes through the server.");

    // Bob's m-line goes to Carol, who came: only the tiles that changed are routed again.
    let carol = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
    assert!(!has(&carol, |e| matches!(e, Effect::CreatePeer { .. } | Effect::Offer { .. })), "{carol:?}");
    let carol_tile = remotes(&carol).unwrap()[2].peer;
    let left = handle(&mut machine, server(FIRST_SOCKET, Message::PeerLeft(info("bob"))));
    assert!(!has(&left, |e| matches!(e, Effect::DropPeer { .. })), "a tile has no connection: {left:?}");
    assert_eq!(remotes(&left).unwrap().len(), 2);
    let effects = server_offers(&mut machine, generation, &[("2", "alice"), ("3", "alice"), ("4", "carol")]);
    let expected = Effect::RouteTracks { peer: generation, tiles: vec![(carol_tile, vec!["4".into()])] };
    assert!(effects.contains(&expected), "{effects:?}");

    // Hanging up closes the one connection.
    let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
    assert!(effects.contains(&Effect::DropPeer { peer: generation }), "{effects:?}");
}

#[test]
fn on_the_server_names_states_and_chat_go_once_on_its_channel_and_come_back_from_each_person() {
    let (mut machine, generation, _) = joined_on_the_server();
    // Typed before the channel opened: sent when it opens, after the name and media state.
    handle(&mut machine, Input::Command(CallCommand::Name("Ann".into())));
    handle(&mut machine, Input::Command(CallCommand::Chat("early".into())));
    let effects = handle(&mut machine, peer(generation, PeerEvent::ChannelOpen));
    let sent: Vec<&PeerMessage> = effects
        .iter()
        .filter_map(|e| {
            if let Effect::ToPeer { peer, message } = e {
                (*peer == generation).then_some(message)
            } else {
                None
            }
        })
        .collect();
    assert!(matches!(sent[..], [PeerMessage::Name(_), PeerMessage::MediaState(_), PeerMessage::Chat(_)]), "{sent:?}");
    let effects = handle(&mut machine, Input::Command(CallCommand::Chat("later".into())));
    let to: Vec<u32> =
        effects.iter().filter_map(|e| if let Effect::ToPeer { peer, .. } = e { Some(*peer) } else { None }).collect();
    assert_eq!(to, [generation], "one copy, to the server");

    // What the server passes on lands on the sender's tile.
    let relayed = |who: &str, message| peer(generation, PeerEvent::Relayed(PassedOn { from: id_of(who), message }));
    let named = handle(&mut machine, relayed("bob", PeerMessage::Name("Bob".into())));
    let effects =
        handle(&mut machine, relayed("bob", PeerMessage::Chat(ChatMessage { text: "hi".into(), sent_at: 1 })));
    assert!(has(&effects, |e| matches!(e, Effect::Chat(ChatLine { from: Author::Them(who), .. }) if who == "Bob")));
    let tiles = remotes(&named).unwrap();
    assert_eq!((tiles[0].name.as_deref(), tiles[1].name.as_deref()), (None, Some("Bob")));
    // From someone not in the room: nothing.
    let effects = handle(&mut machine, relayed("mallory", PeerMessage::Name("Eve".into())));
    assert!(effects.is_empty(), "{effects:?}");
}

#[test]
fn a_server_restarted_with_media_browser_to_browser_gets_mesh_connections_again() {
    let (mut machine, generation, _) = joined_on_the_server();
    let effects = handle(&mut machine, Input::SocketClosed { socket: FIRST_SOCKET, code: ABNORMAL_CLOSURE });
    // The media stops with the socket: the page does not say the call goes on.
    assert_eq!(statuses(&effects), [CallStatus::ServerReconnecting]);
    handle(&mut machine, Input::Timer(Timer::Reconnect { socket: FIRST_SOCKET }));
    let effects = handle(&mut machine, server(FIRST_SOCKET + 1, welcome(true, Some("alice"), IceTransportPolicy::All)));
    assert!(effects.contains(&Effect::DropPeer { peer: generation }), "{effects:?}");
    assert!(has(&effects, |e| matches!(e, Effect::CreatePeer { to_server: false, .. })), "{effects:?}");
    assert_eq!(remotes(&effects).unwrap().len(), 1);
}

#[test]
fn on_the_server_whoever_is_heard_on_their_m_line_is_shown_speaking() {
    let (mut machine, generation, _) = joined_on_the_server();
    server_offers(&mut machine, generation, &[("2", "alice"), ("3", "bob")]);
    // Ten times a second, the page reads the levels the server passed on.
    let tick = Timer::VoicesTick { peer: generation };
    let effects = handle(&mut machine, Input::Timer(tick));
    assert_eq!(effects, [Effect::ReadVoices { peer: generation }, Effect::Arm { timer: tick, after_ms: 100 }]);
    let heard = |mid: &str, level: f64| crate::call::stats::Heard { mid: mid.into(), at: 1_000.0, level: Some(level) };
    // Bob is loud, Alice all but silent.
    let effects = handle(&mut machine, peer(generation, PeerEvent::Voices(vec![heard("2", 0.001), heard("3", 0.2)])));
    let speaking: Vec<bool> = remotes(&effects).unwrap().iter().map(|tile| tile.speaking).collect();
    assert_eq!(speaking, [false, true]);
}

#[test]
fn on_the_server_the_page_says_which_tiles_it_shows_and_how_large_when_that_changes() {
    let (mut machine, generation, effects) = joined_on_the_server();
    let tiles = remotes(&effects).unwrap();
    let (alice, bob) = (tiles[0].peer, tiles[1].peer);
    server_offers(&mut machine, generation, &[("2", "alice"), ("3", "alice"), ("4", "bob")]);
    // Four times a second the page reads its layout.
    let tick = Timer::ViewTick { peer: generation };
    let effects = handle(&mut machine, Input::Timer(tick));
    assert_eq!(effects, [Effect::ReadView { peer: generation }, Effect::Arm { timer: tick, after_ms: 250 }]);
    let view = |shown: Vec<(u32, (u32, u32))>| peer(generation, PeerEvent::View(shown));
    let sent = |effects: &[Effect]| -> Vec<Vec<ViewTile>> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::ToPeer { peer, message: PeerMessage::View(tiles) } if *peer == generation => {
                    Some(tiles.clone())
                }
                _ => None,
            })
            .collect()
    };
    // Nothing is said before the server's channel opens.
    assert!(sent(&handle(&mut machine, view(vec![(alice, (640, 360))]))).is_empty());
    handle(&mut machine, peer(generation, PeerEvent::ChannelOpen));
    let tile = |mid: &str, (width, height)| ViewTile { mid: mid.into(), width, height };
    // Alice large, Bob scrolled away: each of Alice's m-lines at her tile's size, Bob's none.
    let effects = handle(&mut machine, view(vec![(alice, (640, 360))]));
    assert_eq!(sent(&effects), [vec![tile("2", (640, 360)), tile("3", (640, 360))]]);
    // The same again: nothing to say.
    assert!(sent(&handle(&mut machine, view(vec![(alice, (640, 360))]))).is_empty());
    let effects = handle(&mut machine, view(vec![(alice, (320, 180)), (bob, (320, 180))]));
    assert_eq!(sent(&effects), [vec![tile("2", (320, 180)), tile("3", (320, 180)), tile("4", (320, 180))]]);
    // The page hidden: an empty view.
    assert_eq!(sent(&handle(&mut machine, view(Vec::new()))), [Vec::new()]);
    // The channel opened again (a new connection's): said again.
    handle(&mut machine, peer(generation, PeerEvent::ChannelOpen));
    assert_eq!(sent(&handle(&mut machine, view(Vec::new()))), [Vec::new()]);
}

#[test]
fn on_the_server_the_page_sends_the_layers_asked_for_and_says_when_its_link_is_slow() {
    let (mut machine, generation, _) = joined_on_the_server();
    let unit = |said: FromUnit| peer(generation, PeerEvent::Unit(said));
    let effects = handle(&mut machine, unit(FromUnit::SendLayers(vec![Layer::Quarter, Layer::Full])));
    assert_eq!(effects, [Effect::SendLayers { peer: generation, layers: vec![Layer::Quarter, Layer::Full] }]);
    let receiving = |reason: Reason| {
        let tile = ReceivedLayer { mid: "3".into(), layer: Some(Layer::Quarter), reason };
        unit(FromUnit::Receiving(Receiving { tiles: vec![tile], slow: reason == Reason::Bandwidth }))
    };
    assert!(handle(&mut machine, receiving(Reason::Tile)).is_empty());
    // Said once when it becomes slow, once when it no longer is.
    assert_eq!(handle(&mut machine, receiving(Reason::Bandwidth)), [Effect::SlowLink(true)]);
    assert!(handle(&mut machine, receiving(Reason::Bandwidth)).is_empty());
    assert_eq!(handle(&mut machine, receiving(Reason::Tile)), [Effect::SlowLink(false)]);
    // The statistics panel says whose camera comes in which layer, and why.
    server_offers(&mut machine, generation, &[("2", "alice"), ("3", "bob")]);
    handle(&mut machine, receiving(Reason::Bandwidth));
    let effects = handle(&mut machine, peer(generation, PeerEvent::Stats(Vec::new())));
    let Some(Effect::Stats(Some(stats))) = effects.iter().find(|e| matches!(e, Effect::Stats(_))) else {
        panic!("{effects:?}")
    };
    assert_eq!(stats.layers, [("Guest 2".to_owned(), Some(Layer::Quarter), Reason::Bandwidth)]);
    // Slow when the call ends: unsaid with it.
    handle(&mut machine, receiving(Reason::Bandwidth));
    let effects = handle(&mut machine, Input::Command(CallCommand::HangUp));
    assert!(effects.contains(&Effect::SlowLink(false)), "{effects:?}");
}

#[test]
fn a_room_that_moves_to_the_server_keeps_each_connection_until_the_server_carries_that_person() {
    let mut machine = started();
    let effects = join_alice_and_bob(&mut machine);
    let meshed: Vec<u32> = effects
        .iter()
        .filter_map(|e| if let Effect::CreatePeer { peer, to_server: false, .. } = e { Some(*peer) } else { None })
        .collect();
    let [alice, bob] = meshed[..] else { panic!("{effects:?}") };
    for generation in [alice, bob] {
        handle(&mut machine, peer(generation, PeerEvent::ConnectionState(ConnectionState::Connected)));
    }

    // The fifth person came: the server says the room's media goes through it now.
    let moved = Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: false });
    let effects = handle(&mut machine, server(FIRST_SOCKET, moved));
    let Some(Effect::CreatePeer { peer: to_server, to_server: true, .. }) =
        effects.iter().find(|e| matches!(e, Effect::CreatePeer { .. })).cloned()
    else {
        panic!("a connection to the server: {effects:?}")
    };
    assert!(!has(&effects, |e| matches!(e, Effect::DropPeer { .. })), "nothing dropped yet: {effects:?}");
    // Carol, the newcomer, is met on the server only.
    let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
    assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. })), "{effects:?}");
    let carol = remotes(&effects).unwrap()[2].peer;
    handle(&mut machine, peer(to_server, negotiated(Signaling::HaveLocalOffer, Some(sdp(SdpType::Offer)))));
    let answer = MediaDescription { kind: SdpType::Answer, sdp: "v=0 server".into(), tracks: Vec::new() };
    handle(&mut machine, server(FIRST_SOCKET, Message::MediaSdp(answer)));
    handle(&mut machine, peer(to_server, negotiated(Signaling::Stable, None)));
    let effects = server_offers(&mut machine, to_server, &[("3", "alice"), ("4", "bob"), ("5", "carol")]);
    // Carol's tile shows the server's media at once; Alice and Bob keep their own connections.
    let routes: Vec<&Effect> = effects.iter().filter(|e| matches!(e, Effect::RouteTracks { .. })).collect();
    assert_eq!(routes, [&Effect::RouteTracks { peer: to_server, tiles: vec![(carol, vec!["5".into()])] }]);
    // The server is told every tile's size, Alice's and Bob's too: their video through it must
    // come before their own connections go.
    handle(&mut machine, peer(to_server, PeerEvent::ChannelOpen));
    let shown = [alice, bob, carol].map(|tile| (tile, (320, 180))).to_vec();
    let effects = handle(&mut machine, peer(to_server, PeerEvent::View(shown)));
    let told: Vec<String> = effects
        .iter()
        .filter_map(
            |e| if let Effect::ToPeer { message: PeerMessage::View(tiles), .. } = e { Some(tiles) } else { None },
        )
        .flat_map(|tiles| tiles.iter().map(|tile| tile.mid.clone()))
        .collect();
    assert_eq!(told, ["3", "4", "5"]);
    // Alice's video plays through the server (Bob's audio arrives, but his camera is on and his
    // video does not decode yet): her tile takes it, her own connection goes.
    let received = |mid: &str, kind: &str, frames: f64, seconds: f64| crate::call::stats::Report {
        id: mid.into(),
        report_type: "inbound-rtp".into(),
        kind: Some(kind.into()),
        mid: Some(mid.into()),
        frames_decoded: frames,
        total_samples_duration: seconds,
        ..Default::default()
    };
    let reading =
        vec![received("3", "video", 12.0, 0.0), received("4", "audio", 0.0, 2.0), received("4v", "video", 0.0, 0.0)];
    let effects = handle(&mut machine, peer(to_server, PeerEvent::Stats(reading)));
    assert!(effects.contains(&Effect::DropPeer { peer: alice }), "{effects:?}");
    assert!(effects.contains(&Effect::RouteTracks { peer: to_server, tiles: vec![(alice, vec!["3".into()])] }));
    assert!(!effects.contains(&Effect::DropPeer { peer: bob }));
    // Bob's still comes on his own connection, and still counts as connected.
    let effects = handle(&mut machine, peer(bob, PeerEvent::ConnectionState(ConnectionState::Connected)));
    assert!(!has(&effects, |e| matches!(e, Effect::DropPeer { .. })));
    // A change of camera goes on both connections that send it.
    let effects = handle(&mut machine, Input::Command(CallCommand::Camera(false)));
    let sends: Vec<u32> = effects
        .iter()
        .filter_map(|e| if let Effect::SendVideo { peer, .. } = e { Some(*peer) } else { None })
        .collect();
    assert_eq!(sends, [to_server, bob]);

    // Chat goes through the server, and on Bob's own connection too: he may not be on the
    // server yet.
    handle(&mut machine, peer(to_server, PeerEvent::ChannelOpen));
    handle(&mut machine, peer(bob, PeerEvent::ChannelOpen));
    let effects = handle(&mut machine, Input::Command(CallCommand::Chat("moving".into())));
    let to: Vec<u32> =
        effects.iter().filter_map(|e| if let Effect::ToPeer { peer, .. } = e { Some(*peer) } else { None }).collect();
    assert_eq!(to, [to_server, bob]);
    // A line of Bob's that comes both ways is shown once; his next line, again.
    let line = |text: &str, sent_at| PeerMessage::Chat(ChatMessage { text: text.into(), sent_at });
    let relayed = |message| peer(to_server, PeerEvent::Relayed(PassedOn { from: id_of("bob"), message }));
    let shown = |effects: Vec<Effect>| chat_lines(&effects).len();
    assert_eq!(shown(handle(&mut machine, peer(bob, PeerEvent::Message(line("hi", 7))))), 1);
    assert_eq!(shown(handle(&mut machine, relayed(line("hi", 7)))), 0);
    assert_eq!(shown(handle(&mut machine, relayed(line("hi", 8)))), 1);
}

#[test]
fn when_the_rooms_media_moves_to_another_instance_the_page_connects_there_afresh_and_keeps_its_tiles() {
    let (mut machine, old, _) = joined_on_the_server();
    server_offers(&mut machine, old, &[("2", "alice"), ("3", "bob")]);
    handle(&mut machine, peer(old, PeerEvent::ConnectionState(ConnectionState::Connected)));
    // A line typed into a channel that died with its server waits for the next one.
    handle(&mut machine, peer(old, PeerEvent::ChannelOpen));
    let line = ChatMessage { text: "still there?".into(), sent_at: 5 };
    handle(&mut machine, peer(old, PeerEvent::Undelivered(PeerMessage::Chat(line.clone()))));
    // The same route without `reconnect` is news to no one on the server.
    let same = Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: false });
    let effects = handle(&mut machine, server(FIRST_SOCKET, same));
    assert!(!has(&effects, |e| matches!(e, Effect::CreatePeer { .. } | Effect::DropPeer { .. })), "{effects:?}");

    let moved = Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: true });
    let effects = handle(&mut machine, server(FIRST_SOCKET, moved));
    assert!(effects.contains(&Effect::DropPeer { peer: old }), "{effects:?}");
    let made: Vec<u32> = effects
        .iter()
        .filter_map(|e| if let Effect::CreatePeer { peer, to_server: true, .. } = e { Some(*peer) } else { None })
        .collect();
    let [new] = made[..] else { panic!("one new connection to the server: {effects:?}") };
    assert!(effects.contains(&Effect::Offer { peer: new }), "{effects:?}");
    // Alice and Bob keep their tiles (their media comes back on the new connection's m-lines).
    assert!(remotes(&effects).is_none_or(|tiles| tiles.len() == 2), "{effects:?}");
    assert!(!has(&effects, |e| matches!(e, Effect::DropPeer { peer } if *peer != old)), "{effects:?}");
    // Once its channel opens, the page says its name and state again, and sends what waited.
    let effects = handle(&mut machine, peer(new, PeerEvent::ChannelOpen));
    let chats: Vec<&PeerMessage> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToPeer { peer, message } if *peer == new => Some(message),
            _ => None,
        })
        .collect();
    assert!(chats.iter().any(|m| matches!(m, PeerMessage::Chat(chat) if *chat == line)), "{effects:?}");
    assert!(chats.iter().any(|m| matches!(m, PeerMessage::MediaState(_))), "{effects:?}");
}

#[test]
fn a_name_that_comes_through_the_server_before_its_person_is_theirs_once_they_join() {
    let (mut machine, generation, _) = joined_on_the_server();
    // Carol's name overtakes her PEER_JOINED (the server's channel and signaling race).
    let name = PassedOn { from: id_of("carol"), message: PeerMessage::Name("Carol".into()) };
    handle(&mut machine, peer(generation, PeerEvent::Relayed(name)));
    let effects = handle(&mut machine, server(FIRST_SOCKET, Message::PeerJoined(info("carol"))));
    let names: Vec<Option<String>> = remotes(&effects).unwrap().iter().map(|tile| tile.name.clone()).collect();
    assert_eq!(names, [None, None, Some("Carol".into())], "{effects:?}");
}
