//! The call page, in parts that each render a piece of [`CallState`]: the videos, the status
//! line, this side's name, the controls (and their keyboard shortcuts), the device picker, the
//! chat and the statistics. One module, [`link`], joins the page to the call engine: it has a
//! browser body and a server body, and the parts never touch the browser themselves.

use leptos::{either::Either, ev, html::Video, prelude::*, wasm_bindgen::JsCast};
use leptos_meta::Title;

use super::{clock, use_hydrated};
use crate::{
    call::{Author, CallCommand, CallStats, CallStatus, ChatLine, Device, MediaChoice, Remote},
    protocol::{MediaState, MAX_CHAT_CHARS, MAX_NAME_CHARS},
    room::RoomId,
};
use link::Actions;

/// Everything the page shows of a call: signals the engine sets, and this side's own video
/// element it plays the preview in.
#[derive(Clone, Copy)]
struct CallState {
    status: RwSignal<CallStatus>,
    /// What this side sends.
    local: RwSignal<MediaState>,
    /// Whether this side is heard speaking.
    speaking: RwSignal<bool>,
    /// The other people, in the order they came.
    remotes: RwSignal<Vec<Remote>>,
    chat: RwSignal<Vec<ChatLine>>,
    /// The chat message being written.
    draft: RwSignal<String>,
    stats: RwSignal<Option<CallStats>>,
    devices: RwSignal<Vec<Device>>,
    /// Why something the person asked for did not happen.
    notice: RwSignal<Option<String>>,
    /// Before Start, this side's camera shows to this side alone; Mute and Camera off choose
    /// how the call starts.
    previewing: RwSignal<bool>,
    /// This side's display name, as typed; the browser keeps it for the next visit.
    name: RwSignal<String>,
    local_video: NodeRef<Video>,
}

impl CallState {
    fn new() -> Self {
        Self {
            status: RwSignal::new(CallStatus::Idle),
            local: RwSignal::new(MediaState::default()),
            speaking: RwSignal::new(false),
            remotes: RwSignal::new(Vec::new()),
            chat: RwSignal::new(Vec::new()),
            draft: RwSignal::new(String::new()),
            stats: RwSignal::new(None),
            devices: RwSignal::new(Vec::new()),
            notice: RwSignal::new(None),
            previewing: RwSignal::new(false),
            name: RwSignal::new(String::new()),
            local_video: NodeRef::new(),
        }
    }

    /// Start has been pressed and the call has not ended.
    fn active(&self) -> bool {
        self.status.with(CallStatus::is_active)
    }

    /// This page cannot make calls at all (not a secure context, or no media devices).
    fn blocked(&self) -> bool {
        self.status.with(|s| matches!(s, CallStatus::InsecureContext(_) | CallStatus::BrowserUnsupported))
    }
}

impl Actions {
    fn toggle_microphone(self, state: CallState) {
        let local = state.local.get_untracked();
        if state.previewing.get_untracked() {
            self.before_start(MediaState { audio: !local.audio, ..local });
        } else {
            self.command(CallCommand::Microphone(!local.audio));
        }
    }

    fn toggle_camera(self, state: CallState) {
        let local = state.local.get_untracked();
        let camera_on = local.video && !local.screen;
        if state.previewing.get_untracked() {
            self.before_start(MediaState { video: !camera_on, ..local });
        } else {
            self.command(CallCommand::Camera(!camera_on));
        }
    }

    /// Keeps the name for the next visit and tells the call in progress.
    fn rename(self, name: String) {
        self.keep_name(&name);
        self.command(CallCommand::Name(name));
    }
}

/// What joins the page to the call engine: a browser body, and a server body where nothing
/// runs (the page renders, and its controls do nothing until hydrated).
#[cfg(feature = "hydrate")]
mod link {
    use std::rc::Rc;

    use leptos::prelude::*;

    use web_sys::{HtmlVideoElement, MediaStream, Storage};

    use super::CallState;
    use crate::{
        call::{
            engine::{self, CallEvents, CallHandle, EarlyMedia, Prepared},
            CallCommand, MediaChoice, Remote,
        },
        protocol::MediaState,
        room::RoomId,
    };

    /// What the controls ask of the call: start one, or tell the one in progress.
    #[derive(Clone, Copy)]
    pub(crate) struct Actions {
        state: CallState,
        room: StoredValue<RoomId>,
        call: StoredValue<Option<CallHandle>, LocalStorage>,
        /// The next call's signaling socket, opened while the page waits for Start (and again
        /// after each call), so that Start does not wait for a connection.
        prepared: StoredValue<Option<Prepared>, LocalStorage>,
        /// Each other person's media and their tile's video element.
        media: StoredValue<Vec<Playing>, LocalStorage>,
    }

    /// What arrives from one other person and where it plays: whichever of the two comes
    /// first waits for the other.
    struct Playing {
        peer: u32,
        stream: Option<MediaStream>,
        video: Option<HtmlVideoElement>,
    }

    /// What the person is told before Start, once their camera shows to them alone.
    fn preview_notice(camera_on: bool) -> String {
        let camera = if camera_on { "Your camera is on so you can see yourself." } else { "Your camera is off." };
        format!("{camera} No one else sees or hears you until you press Start.")
    }

    /// Where the browser keeps the display name between visits.
    const NAME_KEY: &str = "duo.name";

    fn storage() -> Option<Storage> {
        // Refused in some private modes: the name is then kept for this page only.
        window().local_storage().ok().flatten()
    }

    /// Says at once when this page cannot make calls, keeps the next call's socket open while
    /// the page waits for Start, and hangs up when the page goes.
    pub(super) fn connect(room: RoomId, state: CallState) -> Actions {
        if let Some(name) = storage().and_then(|storage| storage.get_item(NAME_KEY).ok().flatten()) {
            state.name.set(name);
        }
        // Browsers give the camera, the microphone and WebRTC only to secure contexts: say so
        // before anyone presses Start.
        Effect::new(move |_| {
            use leptos::web_sys::js_sys::Reflect;
            let window = window();
            let navigator = Reflect::get(&window, &"navigator".into()).unwrap_or_default();
            let media = Reflect::get(&navigator, &"mediaDevices".into()).unwrap_or_default();
            let address = window.location().href().unwrap_or_default();
            if let Some(why) = crate::call::media_blocked(window.is_secure_context(), !media.is_undefined(), &address) {
                state.status.set(why);
            }
        });
        let link = Actions {
            state,
            room: StoredValue::new(room),
            call: StoredValue::new_local(None),
            prepared: StoredValue::new_local(None),
            media: StoredValue::new_local(Vec::new()),
        };
        Effect::new(move |first: Option<()>| {
            if !state.active() && !state.blocked() && link.prepared.with_value(Option::is_none) {
                link.prepared.set_value(Some(engine::prepare(&link.room.get_value())));
                if first.is_none() {
                    leptos::task::spawn_local(link.preview());
                }
            }
        });
        on_cleanup(move || {
            if let Some(call) = link.call.try_get_value().flatten() {
                call.command(CallCommand::HangUp);
            }
            link.prepared.try_update_value(|prepared| prepared.as_mut().map(Prepared::discard_early_media));
        });
        link
    }

    impl Actions {
        /// Where the browser already lets this site use the camera and microphone, turns them
        /// on before Start and shows them in this side's view.
        async fn preview(self) {
            if !EarlyMedia::allowed().await || self.started() {
                return;
            }
            let media = EarlyMedia::request();
            self.prepared.update_value(|prepared| {
                if let Some(prepared) = prepared {
                    prepared.use_early_media(media.clone());
                }
            });
            let Some(granted) = media.shown().await else { return };
            // Start may have been pressed meanwhile: the call shows the view itself.
            // (`try_`: the page may have gone while the browser was asked.)
            let view = self
                .prepared
                .try_update_value(|prepared| {
                    prepared
                        .as_mut()
                        .filter(|prepared| prepared.has_early_media())
                        .and_then(|prepared| prepared.early_view(&granted))
                })
                .flatten();
            if let (Some(view), Some(video)) = (view, self.state.local_video.get_untracked()) {
                play(&video, Some(&view));
                self.state.previewing.set(true);
                self.before_start(MediaState { audio: true, video: true, screen: false });
            }
        }

        /// Before Start, while the camera shows: the microphone and camera the call starts with.
        pub(super) fn before_start(self, local: MediaState) {
            self.prepared.update_value(|prepared| {
                if let Some(prepared) = prepared {
                    prepared.turn(local.audio, local.video);
                }
            });
            self.state.local.set(local);
            self.state.notice.set(Some(preview_notice(local.video)));
        }

        /// Whether a call was started (or the page has gone).
        fn started(self) -> bool {
            self.call.try_with_value(Option::is_some).unwrap_or(true)
        }

        pub(super) fn start(self, choice: MediaChoice) {
            let state = self.state;
            state.chat.set(Vec::new());
            state.notice.set(None);
            state.previewing.set(false);
            let events = CallEvents {
                status: Rc::new(move |next| state.status.set(next)),
                local_stream: Rc::new(move |stream: Option<MediaStream>| {
                    // The view shown before Start goes on: setting it again would start it over.
                    if let Some(video) = state.local_video.get_untracked().filter(|v| v.src_object() != stream) {
                        play(&video, stream.as_ref());
                    }
                }),
                local_media: Rc::new(move |media| state.local.set(media)),
                speaking: Rc::new(move |on| state.speaking.set(on)),
                remotes: Rc::new(move |remotes: Vec<Remote>| {
                    self.media.update_value(|media| {
                        media.retain(|m| {
                            let here = remotes.iter().any(|r| r.peer == m.peer);
                            if let (false, Some(video)) = (here, &m.video) {
                                play(video, None);
                            }
                            here
                        })
                    });
                    state.remotes.set(remotes);
                }),
                remote_stream: Rc::new(move |peer, stream| self.attach(peer, Some(stream), None)),
                chat: Rc::new(move |line| state.chat.update(|lines| lines.push(line))),
                // Unless something new was typed meanwhile.
                unsent: Rc::new(move |text| {
                    if state.draft.with_untracked(String::is_empty) {
                        state.draft.set(text);
                    }
                }),
                devices: Rc::new(move |list| state.devices.set(list)),
                stats: Rc::new(move |reading| state.stats.set(reading)),
                notice: Rc::new(move |text| state.notice.set(text)),
            };
            let room = self.room.get_value();
            let next = self.prepared.try_update_value(Option::take).flatten();
            let next = next.unwrap_or_else(|| engine::prepare(&room));
            let name = state.name.get_untracked();
            self.call.set_value(Some(engine::start(room, choice, name, events, next)));
        }

        /// Keeps the name for the next visit.
        pub(super) fn keep_name(self, name: &str) {
            if let Some(storage) = storage() {
                let _ = storage.set_item(NAME_KEY, name);
            }
        }

        pub(super) fn command(self, command: CallCommand) {
            if let Some(call) = self.call.get_value() {
                call.command(command);
            }
        }

        /// The tile showing `peer` is on the page.
        pub(super) fn show_remote(self, peer: u32, video: HtmlVideoElement) {
            self.attach(peer, None, Some(video));
        }

        fn attach(self, peer: u32, stream: Option<MediaStream>, video: Option<HtmlVideoElement>) {
            self.media.update_value(|media| {
                let index = media.iter().position(|m| m.peer == peer).unwrap_or_else(|| {
                    media.push(Playing { peer, stream: None, video: None });
                    media.len() - 1
                });
                let entry = &mut media[index];
                entry.stream = stream.or(entry.stream.take());
                entry.video = video.or(entry.video.take());
                if let (Some(stream), Some(video)) = (&entry.stream, &entry.video) {
                    play(video, Some(stream));
                }
            });
        }
    }

    /// Shows `stream` in `video`, or nothing.
    fn play(video: &HtmlVideoElement, stream: Option<&MediaStream>) {
        video.set_src_object(stream);
        if stream.is_some() {
            // Autoplay may be refused; the element still shows frames once allowed.
            let _ = video.play();
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod link {
    use super::CallState;
    use crate::{
        call::{CallCommand, MediaChoice},
        room::RoomId,
    };

    #[derive(Clone, Copy)]
    pub(crate) struct Actions;

    pub(super) fn connect(_room: RoomId, _state: CallState) -> Actions {
        Actions
    }

    impl Actions {
        pub(super) fn start(self, _choice: MediaChoice) {}

        pub(super) fn command(self, _command: CallCommand) {}

        pub(super) fn keep_name(self, _name: &str) {}

        pub(super) fn before_start(self, _local: crate::protocol::MediaState) {}

        pub(super) fn show_remote<V>(self, _peer: u32, _video: V) {}
    }
}

#[component]
pub(super) fn CallPage(room: RoomId) -> impl IntoView {
    let title = format!("Call {room} · Duo");
    let state = CallState::new();
    let actions = link::connect(room, state);
    use_shortcuts(state, actions);
    view! {
        <Title text=title/>
        <section class="call">
            // Screen readers navigate by headings; the page shows the call itself instead.
            <h1 class="visually-hidden">"Video call"</h1>
            {videos(state, actions)}
            {status_line(state, actions)}
            {name_field(state, actions)}
            {controls(state, actions)}
            {device_picker(state, actions)}
            {chat(state, actions)}
            {statistics(state)}
        </section>
    }
}

/// The others' videos, a tile each with what they send, and this side's own video over them
/// (ringed, as a tile is, while this side is heard speaking). Before anyone is there, one empty
/// tile keeps the place.
fn videos(state: CallState, actions: Actions) -> impl IntoView {
    let others = Memo::new(move |_| state.remotes.with(Vec::len));
    let peers = move || state.remotes.with(|remotes| remotes.iter().map(|remote| remote.peer).collect::<Vec<_>>());
    // (In braces: a bare `>` would end the tag.)
    view! {
        <div class="videos" class:group=move || { others.get() > 1 } class:pair=move || others.get() == 2>
            {move || (others.get() == 0).then(|| view! {
                <video class="remote" aria-label="The other person's video" autoplay playsinline></video>
            })}
            <For each=peers key=|peer| *peer let:peer>
                {tile(state, actions, peer)}
            </For>
            <video class="local" class:screen=move || state.local.get().screen class:speaking=state.speaking
                node_ref=state.local_video
                aria-label="Your video" autoplay playsinline muted prop:muted=true></video>
        </div>
    }
}

/// One other person: their video and name, whether they are speaking, and whether their camera
/// is off, they are muted or they share their screen.
fn tile(state: CallState, actions: Actions, peer: u32) -> impl IntoView {
    let called = Memo::new(move |_| {
        state.remotes.with(|remotes| {
            let group = remotes.len() > 1;
            remotes.iter().find(|r| r.peer == peer).and_then(|remote| remote.called(group))
        })
    });
    let who = move || called.get().unwrap_or_else(|| "The other person".into());
    let media = move || state.remotes.with(|remotes| remotes.iter().find(|r| r.peer == peer).and_then(|r| r.media));
    let muted = Memo::new(move |_| media().is_some_and(|m| !m.audio));
    let sharing = Memo::new(move |_| media().is_some_and(|m| m.screen));
    let speaking =
        Memo::new(move |_| state.remotes.with(|remotes| remotes.iter().any(|r| r.peer == peer && r.speaking)));
    let video = NodeRef::<Video>::new();
    video.on_load(move |video| actions.show_remote(peer, video));
    view! {
        <div class="tile" class:speaking=speaking>
            <video class="remote" node_ref=video aria-label=move || format!("{}'s video", who()) autoplay playsinline></video>
            // The video's accessible name says it already.
            <p class="name" aria-hidden="true" hidden=move || called.get().is_none()>{move || called.get()}</p>
            // Always in the page, so screen readers announce what appears in it.
            <div aria-live="polite">
                <p class="camera-off" hidden=move || media().is_none_or(|m| m.video)>
                    {move || format!("{}'s camera is off", who())}
                </p>
                <ul class="remote-state">
                    {move || muted.get().then(|| view! { <li>{move || format!("{} is muted", who())}</li> })}
                    {move || sharing.get().then(|| view! {
                        <li>{move || format!("{} is sharing their screen", who())}</li>
                    })}
                </ul>
            </div>
        </div>
    }
}

/// The name this side goes by: kept by the browser, sent to the others when it changes.
fn name_field(state: CallState, actions: Actions) -> impl IntoView {
    // Until hydrated, what is typed would be lost: hydration sets the field to the kept name.
    let hydrated = use_hydrated();
    view! {
        <label class="name-field">
            "Your name "
            <input placeholder="Guest" autocomplete="nickname" maxlength=MAX_NAME_CHARS.to_string()
                disabled=move || !hydrated.get()
                prop:value=state.name on:input=move |event| state.name.set(event_target_value(&event))
                on:change=move |event| actions.rename(event_target_value(&event))/>
        </label>
    }
}

/// Where the call stands, in words; and when the camera is unavailable, the other ways in.
fn status_line(state: CallState, actions: Actions) -> impl IntoView {
    let unavailable = Memo::new(move |_| state.status.with(|s| matches!(s, CallStatus::MediaUnavailable(_))));
    view! {
        <p class="status" role="status">{move || state.status.with(CallStatus::text)}</p>
        <p class="notice" aria-live="polite">{move || state.notice.get()}</p>
        {move || unavailable.get().then(|| view! {
            <div class="controls">
                <button on:click=move |_| actions.start(MediaChoice::MicrophoneOnly)>"Join with audio only"</button>
                <button on:click=move |_| actions.start(MediaChoice::Nothing)>"Watch and listen only"</button>
            </div>
        })}
    }
}

fn controls(state: CallState, actions: Actions) -> impl IntoView {
    let hydrated = use_hydrated();
    let local = state.local;
    let inactive = move || !state.active();
    // Nothing to mute, turn off or share instead until the camera and microphone are on; before
    // Start, while the camera shows, Mute and Camera off choose how the call starts.
    let unready = move || inactive() || state.status.with(|s| *s == CallStatus::StartingMedia);
    let untoggleable = move || unready() && !state.previewing.get();
    view! {
        <div class="controls">
            <button class="primary" on:click=move |_| actions.start(MediaChoice::CameraAndMicrophone)
                disabled=move || state.active() || !hydrated.get() || state.blocked()>"Start"</button>
            <button title="Mute the microphone (M)" aria-pressed=move || (!local.get().audio).to_string()
                on:click=move |_| actions.toggle_microphone(state) disabled=untoggleable>"Mute"</button>
            <button title="Turn the camera off (V)" aria-pressed=move || (!local.get().video).to_string()
                on:click=move |_| actions.toggle_camera(state) disabled=move || untoggleable() || local.get().screen>"Camera off"</button>
            <button title="Share your screen instead of the camera" aria-pressed=move || local.get().screen.to_string()
                on:click=move |_| actions.command(CallCommand::ShareScreen(!local.get_untracked().screen))
                disabled=unready>"Share screen"</button>
            <button class="danger" on:click=move |_| actions.command(CallCommand::HangUp) disabled=inactive>"Hang up"</button>
        </div>
    }
}

/// M and V toggle the microphone and the camera anywhere on the page but in the chat box and
/// the device lists.
fn use_shortcuts(state: CallState, actions: Actions) {
    let keys = window_event_listener(ev::keydown, move |event| {
        let typing = event
            .target()
            .and_then(|target| target.dyn_into::<leptos::web_sys::Element>().ok())
            .is_some_and(|element| matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if typing
            || event.ctrl_key()
            || event.meta_key()
            || event.alt_key()
            || !(state.previewing.get_untracked()
                || state.status.with_untracked(|s| s.is_active() && *s != CallStatus::StartingMedia))
        {
            return;
        }
        match event.key().as_str() {
            "m" | "M" => actions.toggle_microphone(state),
            "v" | "V" => actions.toggle_camera(state),
            _ => {}
        }
    });
    on_cleanup(move || keys.remove());
}

/// The cameras and microphones to choose from, once the browser has named them.
fn device_picker(state: CallState, actions: Actions) -> impl IntoView {
    let devices = state.devices;
    let use_device = move |event: ev::Event| {
        let id = event_target_value(&event);
        if let Some(device) = devices.get_untracked().into_iter().find(|d| d.id == id) {
            actions.command(CallCommand::UseDevice(device));
        }
    };
    let options = move |cameras: bool| {
        devices
            .get()
            .into_iter()
            .filter(|d| d.is_camera == cameras)
            .map(|d| view! { <option value=d.id.clone()>{d.label.clone()}</option> })
            .collect_view()
    };
    let shown = Memo::new(move |_| state.active() && !devices.with(Vec::is_empty));
    move || {
        shown.get().then(|| {
            view! {
                <div class="devices">
                    <label>"Camera " <select on:change=use_device>{move || options(true)}</select></label>
                    <label>"Microphone " <select on:change=use_device>{move || options(false)}</select></label>
                </div>
            }
        })
    }
}

fn chat(state: CallState, actions: Actions) -> impl IntoView {
    let draft = state.draft;
    let send = move |event: ev::SubmitEvent| {
        event.prevent_default();
        let text = draft.get_untracked().trim().to_owned();
        if !text.is_empty() {
            actions.command(CallCommand::Chat(text));
            draft.set(String::new());
        }
    };
    view! {
        <section class="chat" aria-label="Chat">
            <ol class="messages" aria-live="polite">
                <For each=move || state.chat.get().into_iter().enumerate() key=|(index, _)| *index let:((_, line))>
                    {chat_line(line)}
                </For>
            </ol>
            <form on:submit=send>
                <input aria-label="Message" placeholder="Write a message" prop:value=draft
                    on:input=move |event| draft.set(event_target_value(&event)) maxlength=MAX_CHAT_CHARS.to_string()/>
                <button type="submit" disabled=move || !state.active()>"Send"</button>
            </form>
        </section>
    }
}

/// Who wrote it (the page's own notes name no one), when, and what.
fn chat_line(line: ChatLine) -> impl IntoView {
    let mine = line.from == Author::You;
    let who = match line.from {
        Author::You => Some("You".to_owned()),
        Author::Them(name) => Some(name),
        Author::Page => None,
    };
    view! {
        <li class:mine=mine>
            {who.map(|who| view! { <span class="who">{who}</span> " " })}
            <time>{clock(line.sent_at)}</time> " "
            <span class="text">{line.text}</span>
        </li>
    }
}

fn statistics(state: CallState) -> impl IntoView {
    view! {
        <details class="stats">
            <summary>"Statistics"</summary>
            {move || match state.stats.get() {
                None => Either::Left(view! { <p>"No connection yet."</p> }),
                Some(stats) => Either::Right(view! { <StatsTable stats/> }),
            }}
        </details>
    }
}

#[component]
fn StatsTable(stats: CallStats) -> impl IntoView {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "–".into());
    let rows = [
        ("Round trip", or_dash(stats.round_trip_ms.map(|ms| format!("{ms:.0} ms")))),
        ("Received", format!("{:.0} kbit/s", stats.kbps_in)),
        ("Sent", format!("{:.0} kbit/s", stats.kbps_out)),
        ("Video", or_dash(stats.width.zip(stats.height).map(|(w, h)| format!("{w}×{h}")))),
        ("Frame rate", or_dash(stats.frames_per_second.map(|fps| format!("{fps:.0} fps")))),
        ("Packet loss", format!("{:.1} %", stats.packet_loss_percent)),
        ("Path", or_dash(stats.relayed.map(|relayed| if relayed { "relayed (TURN)" } else { "direct" }.into()))),
    ];
    view! {
        <dl>
            {rows.into_iter().map(|(name, value)| view! { <dt>{name}</dt><dd>{value}</dd> }).collect_view()}
        </dl>
    }
}
