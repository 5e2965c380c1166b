//! Runs one call in the browser: carries out the [`CallMachine`]'s effects with web-sys and
//! feeds back what the browser reports. It decides nothing itself.
//!
//! Everything that happens (a server message, a browser callback, a timer, a command) becomes
//! an input on one channel, handled in order by one task; the effects of each input are carried
//! out, one at a time, before the next, so no two steps of a negotiation interleave.

use std::rc::Rc;

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::StreamExt;
use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{MediaStream, MediaStreamTrack};

use super::{
    js::{describe, mark, string_field},
    machine::{CallMachine, Effect, Input, PeerEvent, Shown, Video, ABNORMAL_CLOSURE, FIRST_SOCKET},
    media::{self, Level, LocalMedia},
    peer::Peer,
    socket::{Everyone, Socket},
    CallCommand, CallStats, CallStatus, ChatLine, Device, MediaChoice, Remote,
};
use crate::{
    protocol::{display_name, MediaState, Message},
    room::RoomId,
};

pub use super::media::{devices, open_device, EarlyMedia};

/// How the engine reports to the page.
#[derive(Clone)]
pub struct CallEvents {
    pub status: Rc<dyn Fn(CallStatus)>,
    pub local_stream: Rc<dyn Fn(Option<MediaStream>)>,
    /// What this side sends (microphone on, video on, screen shared).
    pub local_media: Rc<dyn Fn(MediaState)>,
    /// Whether this side is heard speaking.
    pub speaking: Rc<dyn Fn(bool)>,
    /// The other people, in the order they came.
    pub remotes: Rc<dyn Fn(Vec<Remote>)>,
    /// What arrives from one of them (by [`Remote::peer`]), once it does.
    pub remote_stream: Rc<dyn Fn(u32, MediaStream)>,
    pub chat: Rc<dyn Fn(ChatLine)>,
    /// Something that happened ("Bob joined"), to show for a moment.
    pub event: Rc<dyn Fn(String)>,
    /// This side's chat line was not sent: it goes back in the message field.
    pub unsent: Rc<dyn Fn(String)>,
    /// The cameras and microphones, once the browser has granted one (labels need that).
    pub devices: Rc<dyn Fn(Vec<Device>)>,
    pub stats: Rc<dyn Fn(Option<CallStats>)>,
    /// A line beside the status: why something the person asked for did not happen.
    pub notice: Rc<dyn Fn(Option<String>)>,
    /// This side's link is too slow for the video its tiles would show: they show less.
    pub slow_link: Rc<dyn Fn(bool)>,
    /// What the engine reads of the page: the tiles on screen (by [`Remote::peer`]) and the size
    /// their video is drawn at, in device pixels; none while the page is hidden.
    pub shown: Rc<dyn Fn() -> Shown>,
}

enum Event {
    Input(Input),
    /// The browser granted the camera and microphone (or `None`: nothing was asked for), or
    /// refused. The tracks stay here; the machine learns which there are.
    Media(Result<Option<MediaStream>, JsValue>),
}

/// The page's hold on a running call.
#[derive(Clone)]
pub struct CallHandle {
    events: UnboundedSender<Event>,
}

impl CallHandle {
    pub fn command(&self, command: CallCommand) {
        let _ = self.events.unbounded_send(Event::Input(Input::Command(command)));
    }
}

/// A call's signaling socket, opened when the page loads: it holds no place in the room until
/// Start (it connects with `join=later`), so that Start costs one message instead of a
/// connection; and the camera, if it was turned on early. Dropping it closes the socket.
pub struct Prepared {
    events: UnboundedSender<Event>,
    inbox: UnboundedReceiver<Event>,
    session: String,
    everyone: Everyone,
    socket: Option<Socket>,
    early_media: Option<EarlyMedia>,
    /// The stream the early camera and microphone came in: the call takes its tracks, so a
    /// device chosen before Start goes in it.
    granted: Option<MediaStream>,
    /// The join screen's microphone meter, once read.
    level: Option<Level>,
    /// The call's media from before Start: its view is what the page shows of this side, one
    /// stream throughout, so the view does not start over at Start.
    media: Option<LocalMedia>,
    /// Whether the call starts with the microphone and the camera on (see [`Self::turn`]).
    microphone_on: bool,
    camera_on: bool,
}

impl Prepared {
    /// The call will send this camera and microphone, if it sends both.
    pub fn use_early_media(&mut self, media: EarlyMedia) {
        self.early_media = Some(media);
    }

    pub fn has_early_media(&self) -> bool {
        self.early_media.is_some()
    }

    /// The view of the camera turned on early, to show before Start.
    pub fn early_view(&mut self, granted: &MediaStream) -> Option<MediaStream> {
        let media = self.media.as_mut()?;
        media.adopt(Some(granted));
        // `Clone::clone`: `MediaStream::clone` would be the browser's, a new stream.
        self.granted = Some(Clone::clone(granted));
        self.turn(self.microphone_on, self.camera_on);
        self.media.as_ref().map(LocalMedia::preview)
    }

    /// Before Start: the call will start with the microphone muted or not, and the camera off
    /// or not; the view shows the camera only while it is on. (The camera stays open, as Camera
    /// off leaves it during a call, so that turning it back on is instant.)
    pub fn turn(&mut self, microphone_on: bool, camera_on: bool) {
        self.microphone_on = microphone_on;
        self.camera_on = camera_on;
        if let Some(media) = &self.media {
            media.show(if camera_on { Video::Camera } else { Video::None });
        }
    }

    /// Before Start: the call will use `track` as its camera or microphone, instead of the one
    /// turned on early (which goes off).
    pub fn use_track(&mut self, track: MediaStreamTrack, is_camera: bool) {
        let (Some(media), Some(granted)) = (self.media.as_mut(), &self.granted) else {
            return track.stop();
        };
        if let Some(old) = media.replace(Clone::clone(&track), is_camera) {
            granted.remove_track(&old);
        }
        granted.add_track(&track);
        self.turn(self.microphone_on, self.camera_on);
    }

    /// Before Start: how loud the microphone is, from 0 to 1 (0 while muted); `None` where the
    /// browser gives no reading.
    pub fn microphone_level(&mut self) -> Option<f64> {
        let microphone = self.media.as_ref().and_then(|media| media.audio.clone())?;
        if !self.microphone_on {
            return Some(0.0);
        }
        if !self.level.as_ref().is_some_and(|level| level.hears(&microphone)) {
            self.level = Level::of(&microphone)
                .map_err(|error| leptos::logging::warn!("cannot read the microphone's level: {}", describe(&error)))
                .ok();
        }
        self.level.as_mut()?.read()
    }

    /// Turns off the camera turned on early: no call will use it.
    pub fn discard_early_media(&mut self) {
        if let Some(media) = self.early_media.take() {
            media.discard();
        }
    }
}

/// Opens the next call's socket. Until Start, it tells `present` who is in the call: their
/// display names by place (the order they came, unless one took a place someone left), `None`
/// for someone without one; once when it connects, then after every change.
pub fn prepare(room: &RoomId, present: Rc<dyn Fn(Vec<Option<String>>)>) -> Prepared {
    let (events, inbox) = unbounded();
    let session = RoomId::generate().to_string();
    let everyone = Everyone::default();
    let to_call = report(&events);
    // The call itself has no use for who was there before it joined.
    let report: Rc<dyn Fn(Input)> = Rc::new(move |input| match input {
        Input::Server { message: Message::Present(who), .. } => {
            // Cleaned as a name from the data channel is: the server's word is not taken for it.
            present(who.people.iter().map(|person| person.name.as_deref().and_then(display_name)).collect())
        }
        input => to_call(input),
    });
    let socket = Socket::open(room, &session, FIRST_SOCKET, everyone.clone(), report)
        .map_err(|error| leptos::logging::warn!("cannot open the signaling socket yet: {}", describe(&error)))
        .ok();
    Prepared {
        events,
        inbox,
        session,
        everyone,
        socket,
        early_media: None,
        granted: None,
        level: None,
        media: LocalMedia::new().ok(),
        microphone_on: true,
        camera_on: true,
    }
}

/// Starts a call sending `choice`, under the display name `name` (as typed).
pub fn start(room: RoomId, choice: MediaChoice, name: String, ui: CallEvents, prepared: Prepared) -> CallHandle {
    let events = prepared.events.clone();
    spawn_local(run(room, choice, name, ui, prepared));
    CallHandle { events }
}

/// What a socket, peer connection or timer reports goes on the channel.
fn report(events: &UnboundedSender<Event>) -> Rc<dyn Fn(Input)> {
    let events = events.clone();
    Rc::new(move |input| {
        let _ = events.unbounded_send(Event::Input(input));
    })
}

async fn run(room: RoomId, choice: MediaChoice, name: String, ui: CallEvents, prepared: Prepared) {
    let Prepared {
        events,
        mut inbox,
        session,
        everyone,
        socket,
        early_media,
        media,
        microphone_on,
        camera_on,
        level,
        ..
    } = prepared;
    // The join screen's meter goes off: the call shows who speaks by other means.
    drop(level);
    let media = match media.map(Ok).unwrap_or_else(LocalMedia::new) {
        Ok(media) => media,
        Err(error) => return (ui.status)(CallStatus::MediaUnavailable(describe(&error))),
    };
    let mut machine =
        CallMachine::new(choice, &name, Box::new(js_sys::Math::random)).starting_with(microphone_on, camera_on);
    let socket_ready = socket.is_some();
    let mut driver = Driver {
        ui,
        events,
        room,
        session,
        everyone,
        socket,
        media,
        peers: Peers::default(),
        streaming: Vec::new(),
        screen_ended: None,
        early_media,
    };
    let mut next = Some(Input::Start { socket_ready });
    while let Some(input) = next.take() {
        machine.handle(js_sys::Date::now(), input);
        while let Some(effect) = machine.poll() {
            if let Some(outcome) = driver.carry_out(effect).await {
                machine.handle(js_sys::Date::now(), outcome);
            }
        }
        if machine.is_over() {
            break;
        }
        next = match inbox.next().await {
            Some(Event::Input(input)) => Some(input),
            Some(Event::Media(Ok(stream))) => {
                driver.media.adopt(stream.as_ref());
                Some(Input::MediaGranted { audio: driver.media.audio.is_some(), camera: driver.media.camera.is_some() })
            }
            Some(Event::Media(Err(error))) => {
                Some(Input::MediaRefused { name: string_field(&error, "name"), description: describe(&error) })
            }
            None => None,
        };
    }
    if let Some(unused) = driver.early_media.take() {
        unused.discard();
    }
    // A camera granted while the last input was being handled is still in the queue.
    inbox.close();
    while let Ok(event) = inbox.try_recv() {
        if let Event::Media(Ok(Some(stream))) = event {
            media::stop_all(&stream);
        }
    }
    // Dropping the driver closes the socket and any peer connection.
}

/// What carries the effects out: the browser objects of one call.
struct Driver {
    ui: CallEvents,
    events: UnboundedSender<Event>,
    room: RoomId,
    /// Names this call to the server, so a reconnect is known for the same person.
    session: String,
    everyone: Everyone,
    socket: Option<Socket>,
    media: LocalMedia,
    peers: Peers,
    /// The connections whose media the page has been given.
    streaming: Vec<u32>,
    screen_ended: Option<Closure<dyn FnMut()>>,
    /// The camera and microphone turned on before Start, until the call asks for media.
    early_media: Option<EarlyMedia>,
}

impl Driver {
    /// Carries out one effect; returns what a step that reports back learned.
    async fn carry_out(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Status(status) => (self.ui.status)(status),
            Effect::Notice(notice) => (self.ui.notice)(notice),
            Effect::SlowLink(slow) => (self.ui.slow_link)(slow),
            Effect::LocalMedia(state) => (self.ui.local_media)(state),
            Effect::Speaking(on) => (self.ui.speaking)(on),
            Effect::LocalStream(show) => (self.ui.local_stream)(show.then(|| self.media.preview())),
            Effect::Remotes(remotes) => {
                let arrived: Vec<u32> = remotes
                    .iter()
                    .filter(|remote| remote.receiving && !self.streaming.contains(&remote.peer))
                    .map(|remote| remote.peer)
                    .collect();
                self.streaming = remotes.iter().filter(|remote| remote.receiving).map(|remote| remote.peer).collect();
                (self.ui.remotes)(remotes);
                for peer in arrived {
                    if let Some(connection) = self.peers.get(peer) {
                        (self.ui.remote_stream)(peer, connection.remote_stream());
                    }
                }
            }
            Effect::Chat(line) => (self.ui.chat)(line),
            Effect::Event(text) => (self.ui.event)(text),
            Effect::Unsent(text) => (self.ui.unsent)(text),
            Effect::Stats(stats) => (self.ui.stats)(stats),
            Effect::ListDevices => {
                let devices = self.ui.devices.clone();
                spawn_local(async move {
                    match media::devices().await {
                        Ok(list) => devices(list),
                        Err(error) => leptos::logging::warn!("cannot list devices: {}", describe(&error)),
                    }
                });
            }
            Effect::Mark(step) => mark(step),
            Effect::Log(text) => leptos::logging::log!("{text}"),
            Effect::Warn(text) => leptos::logging::warn!("{text}"),
            Effect::RequestMedia(choice) => {
                let events = self.events.clone();
                let early = self.early_media.take();
                spawn_local(async move {
                    let granted = match early {
                        Some(early) if choice == MediaChoice::CameraAndMicrophone => match early.live_stream().await {
                            Some(stream) => Ok(Some(stream)),
                            // Refused or busy when the page opened, or ended since: ask now.
                            None => LocalMedia::request(choice).await,
                        },
                        early => {
                            if let Some(unused) = early {
                                unused.discard();
                            }
                            LocalMedia::request(choice).await
                        }
                    };
                    if let Err(late) = events.unbounded_send(Event::Media(granted)) {
                        // The call ended first (hung up, room full): the camera must not stay on.
                        if let Event::Media(Ok(Some(stream))) = late.into_inner() {
                            media::stop_all(&stream);
                        }
                    }
                });
            }
            Effect::EnableAudio(on) => self.media.enable_audio(on),
            Effect::ShowVideo(video) => self.media.show(video),
            Effect::PickScreen => {
                return Some(Input::ScreenPicked(match media::screen_track().await {
                    Ok(track) => {
                        // The browser's own "stop sharing" ends the track.
                        let report = report(&self.events);
                        let ended = Closure::<dyn FnMut()>::new(move || report(Input::ScreenEnded));
                        track.set_onended(Some(ended.as_ref().unchecked_ref()));
                        self.screen_ended = Some(ended);
                        self.media.start_screen(track);
                        Ok(())
                    }
                    Err(error) => {
                        leptos::logging::warn!("no screen to share: {}", describe(&error));
                        Err(string_field(&error, "name"))
                    }
                }));
            }
            Effect::StopScreen => {
                if let Some(screen) = &self.media.screen {
                    screen.set_onended(None);
                }
                self.screen_ended = None;
                self.media.stop_screen();
            }
            Effect::OpenDevice(device) => match self.media.use_device(&device).await {
                Ok(()) => return Some(Input::DeviceOpened { is_camera: device.is_camera }),
                Err(error) => leptos::logging::warn!("cannot use {}: {}", device.label, describe(&error)),
            },
            Effect::StopMedia => self.media.stop(),
            Effect::Join { name } => {
                if let Some(socket) = &self.socket {
                    socket.join(name);
                }
            }
            Effect::OpenSocket { socket, name } => {
                match Socket::open(&self.room, &self.session, socket, self.everyone.clone(), report(&self.events)) {
                    Ok(opened) => {
                        opened.join(name);
                        self.socket = Some(opened);
                    }
                    Err(error) => {
                        leptos::logging::warn!("cannot open the signaling socket: {}", describe(&error));
                        return Some(Input::SocketClosed { socket, code: ABNORMAL_CLOSURE });
                    }
                }
            }
            Effect::ForgetSocket => self.socket = None,
            Effect::Send { to, message } => {
                if let Some(socket) = &self.socket {
                    socket.send(&message, to);
                }
            }
            Effect::Everyone(everyone) => *self.everyone.borrow_mut() = everyone,
            Effect::Arm { timer, after_ms } => {
                let report = report(&self.events);
                spawn_local(async move {
                    sleep(after_ms).await;
                    report(Input::Timer(timer));
                });
            }
            Effect::CreatePeer { peer, ice_servers, policy, to_server } => {
                let report = report(&self.events);
                let report = Rc::new(move |event: PeerEvent| report(Input::Peer { peer, event }));
                match Peer::new(&ice_servers, policy, to_server, report) {
                    Ok(created) => self.peers.0.push((peer, created)),
                    Err(error) => leptos::logging::warn!("cannot make a peer connection: {}", describe(&error)),
                }
            }
            Effect::DropPeer { peer } => self.peers.0.retain(|(generation, _)| *generation != peer),
            Effect::AddTransceivers { peer, audio, video } => {
                if let Some(connection) = self.peers.get_mut(peer) {
                    connection.send_media(&self.media.outgoing(audio, video));
                }
            }
            Effect::Offer { peer } => {
                let connection = self.peers.get(peer)?;
                return Some(Input::Peer { peer, event: PeerEvent::Negotiated(connection.offer().await) });
            }
            Effect::Apply { peer, description, audio, video } => {
                let connection = self.peers.get_mut(peer)?;
                let outcome = connection.apply(description, &self.media.outgoing(audio, video)).await;
                return Some(Input::Peer { peer, event: PeerEvent::Negotiated(outcome) });
            }
            Effect::AddCandidate { peer, candidate, failure_expected } => {
                if let Some(connection) = self.peers.get(peer) {
                    connection.add_candidate(&candidate, failure_expected);
                }
            }
            Effect::RestartIce { peer } => {
                if let Some(Err(error)) = self.peers.get(peer).map(Peer::restart_ice) {
                    leptos::logging::warn!("cannot restart ICE: {}", describe(&error));
                }
            }
            Effect::StartSending { peer, audio, video } => {
                if let Some(connection) = self.peers.get(peer) {
                    let audio = self.media.audio.as_ref().filter(|_| audio);
                    connection.start_sending(audio, self.media.track(video));
                }
            }
            Effect::SendVideo { peer, video } => {
                if let Some(connection) = self.peers.get(peer) {
                    if let Err(error) = connection.replace_video(self.media.track(video), video == Video::Screen).await
                    {
                        leptos::logging::warn!("cannot send the video: {}", describe(&error));
                    }
                }
            }
            Effect::SendAudio { peer } => {
                if let Some(connection) = self.peers.get(peer) {
                    if let Err(error) = connection.replace_audio(self.media.audio.as_ref()).await {
                        leptos::logging::warn!("cannot send the microphone: {}", describe(&error));
                    }
                }
            }
            Effect::SendLayers { peer, layers } => self.peers.get(peer)?.send_layers(layers).await,
            Effect::CapVideo { peer, max_bps } => {
                if let Err(error) = self.peers.get(peer)?.cap_video(max_bps).await {
                    // Before its first negotiation a sender has no encodings to cap; the machine
                    // caps it again once the negotiation is done.
                    leptos::logging::warn!("cannot cap the video: {}", describe(&error));
                }
            }
            Effect::ToPeer { peer, message } => {
                if !self.peers.get(peer)?.send_to_peer(&message) {
                    return Some(Input::Peer { peer, event: PeerEvent::Undelivered(message) });
                }
            }
            Effect::RouteTracks { peer, tiles } => {
                let connection = self.peers.get(peer)?;
                for (tile, mids) in tiles {
                    match connection.tracks(&mids) {
                        Ok(stream) => (self.ui.remote_stream)(tile, stream),
                        Err(error) => leptos::logging::warn!("cannot show the media: {}", describe(&error)),
                    }
                }
            }
            Effect::ReadVoices { peer } => {
                return Some(Input::Peer { peer, event: PeerEvent::Voices(self.peers.get(peer)?.voices()) });
            }
            Effect::ReadView { peer } => return Some(Input::Peer { peer, event: PeerEvent::View((self.ui.shown)()) }),
            // Not awaited: reading every connection's statistics twice a second must not hold
            // up signaling. The reading comes back as an input like any other.
            Effect::GetStats { peer } => {
                let reading = self.peers.get(peer)?.stats();
                let report = report(&self.events);
                spawn_local(async move {
                    match reading.await {
                        Ok(reports) => report(Input::Peer { peer, event: PeerEvent::Stats(reports) }),
                        Err(error) => leptos::logging::warn!("cannot read the statistics: {}", describe(&error)),
                    }
                });
            }
        }
        None
    }
}

/// The peer connections by generation: the one in use, and the standby one.
#[derive(Default)]
struct Peers(Vec<(u32, Peer)>);

impl Peers {
    fn get(&self, generation: u32) -> Option<&Peer> {
        self.0.iter().find(|(g, _)| *g == generation).map(|(_, peer)| peer)
    }

    fn get_mut(&mut self, generation: u32) -> Option<&mut Peer> {
        self.0.iter_mut().find(|(g, _)| *g == generation).map(|(_, peer)| peer)
    }
}

async fn sleep(millis: u32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, millis as i32);
        }
    });
    let _ = JsFuture::from(promise).await;
}
