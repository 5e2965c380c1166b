//! The call page: before Start a join screen (this side's preview, who is there, Start), then a
//! stage that fills the window, one control bar, and side panels. In parts that each render a
//! piece of [`CallState`]: [`stage`] the videos, [`join`] the join screen's side and the status
//! line, [`bar`] the controls and their shortcuts, [`panels`] the chat, the people and the rest.
//! One module, [`link`], joins the page to the call engine: it has a browser body and a server
//! body, and the parts never touch the browser themselves.

use leptos::{html::Video, prelude::*};
use leptos_meta::Title;

use crate::{
    app::icons::Icon,
    call::{Author, CallCommand, CallStats, CallStatus, ChatLine, Device, Remote},
    protocol::MediaState,
    room::RoomId,
};
use link::Actions;

mod bar;
mod join;
mod panels;
mod stage;

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
    /// Before Start: who is already in the call, by name (`None`: no name given), once the
    /// server has said; `None` until then.
    present: RwSignal<Option<Vec<Option<String>>>>,
    chat: RwSignal<Vec<ChatLine>>,
    /// The chat message being written.
    draft: RwSignal<String>,
    stats: RwSignal<Option<CallStats>>,
    devices: RwSignal<Vec<Device>>,
    /// The camera and microphone the person chose, if they chose.
    chosen: RwSignal<Vec<Device>>,
    /// Before Start: how loud the microphone is, from 0 to 1, where the browser can tell.
    level: RwSignal<Option<f64>>,
    /// Why something the person asked for did not happen.
    notice: RwSignal<Option<String>>,
    /// This side's link is too slow for the video its tiles would show.
    slow: RwSignal<bool>,
    /// Before Start, this side's camera shows to this side alone; Mute and Camera off choose
    /// how the call starts.
    previewing: RwSignal<bool>,
    /// This side's display name, as typed; the browser keeps it for the next visit.
    name: RwSignal<String>,
    local_video: NodeRef<Video>,
    /// The side panel shown, if any.
    panel: RwSignal<Option<Panel>>,
    /// How many chat lines had come when the chat was last open.
    chat_seen: RwSignal<usize>,
    /// Before Start: the browser would ask before showing the camera, so the page offers to ask.
    camera_ask: RwSignal<bool>,
    /// The browser can show a video in picture-in-picture.
    picture_in_picture: RwSignal<bool>,
    /// What just happened in the call, in a few words, shown for a moment ("Bob: hi").
    event: RwSignal<Option<String>>,
}

impl CallState {
    fn new() -> Self {
        Self {
            status: RwSignal::new(CallStatus::Idle),
            local: RwSignal::new(MediaState::default()),
            speaking: RwSignal::new(false),
            remotes: RwSignal::new(Vec::new()),
            present: RwSignal::new(None),
            chat: RwSignal::new(Vec::new()),
            draft: RwSignal::new(String::new()),
            stats: RwSignal::new(None),
            devices: RwSignal::new(Vec::new()),
            chosen: RwSignal::new(Vec::new()),
            level: RwSignal::new(None),
            notice: RwSignal::new(None),
            slow: RwSignal::new(false),
            previewing: RwSignal::new(false),
            name: RwSignal::new(String::new()),
            local_video: NodeRef::new(),
            panel: RwSignal::new(None),
            chat_seen: RwSignal::new(0),
            camera_ask: RwSignal::new(false),
            picture_in_picture: RwSignal::new(false),
            event: RwSignal::new(None),
        }
    }

    /// Chat lines from others that came while the chat was shut.
    fn unread(&self) -> usize {
        let seen = self.chat_seen.get();
        self.chat.with(|lines| lines.iter().skip(seen).filter(|line| matches!(line.from, Author::Them(_))).count())
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

/// A side panel of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Panel {
    Chat,
    People,
    More,
}

impl Panel {
    /// The id of the bar's button that opens it.
    fn button_id(self) -> &'static str {
        match self {
            Panel::Chat => "chat-button",
            Panel::People => "people-button",
            Panel::More => "more-button",
        }
    }

    /// Where the focus goes when it opens: the message field, or the Close button.
    fn first_focus(self) -> &'static str {
        match self {
            Panel::Chat => "chat-message",
            Panel::People | Panel::More => "panel-close",
        }
    }

    /// The bar button's label.
    fn label(self) -> &'static str {
        match self {
            Panel::Chat => "Chat",
            Panel::People => "People",
            Panel::More => "More",
        }
    }

    /// The panel's heading, and the button's tooltip.
    fn title(self) -> &'static str {
        match self {
            Panel::Chat => "Chat",
            Panel::People => "People in the call",
            Panel::More => "Devices, statistics and shortcuts",
        }
    }

    fn icon(self) -> Icon {
        match self {
            Panel::Chat => Icon::Chat,
            Panel::People => Icon::People,
            Panel::More => Icon::More,
        }
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

    /// Uses `device` from now on: before Start in the preview, in a call in the call.
    fn use_device(self, state: CallState, device: Device) {
        state.chosen.update(|chosen| {
            chosen.retain(|other| other.is_camera != device.is_camera);
            chosen.push(device.clone());
        });
        if state.previewing.get_untracked() {
            self.preview_device(device);
        } else {
            self.command(CallCommand::UseDevice(device));
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

    use leptos::{
        prelude::*,
        wasm_bindgen::{JsCast, JsValue},
    };

    use web_sys::{HtmlVideoElement, MediaStream, Storage};

    use super::{CallState, Panel};
    use crate::{
        call::{
            engine::{self, CallEvents, CallHandle, EarlyMedia, Prepared},
            Author, CallCommand, ChatLine, Device, MediaChoice, Remote,
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
            let document = Reflect::get(&window, &"document".into()).unwrap_or_default();
            let pip = Reflect::get(&document, &"pictureInPictureEnabled".into()).unwrap_or_default();
            state.picture_in_picture.set(pip.as_bool() == Some(true));
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
                let present = Rc::new(move |names| state.present.set(Some(names)));
                link.prepared.set_value(Some(engine::prepare(&link.room.get_value(), present)));
                if first.is_none() {
                    leptos::task::spawn_local(link.preview(false));
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
        /// Turns the camera and microphone on before Start and shows them in this side's view:
        /// at once where the browser already lets this site use them; where it would ask, once
        /// the person has `asked` for it (until then the page offers to).
        async fn preview(self, asked: bool) {
            if !asked && !EarlyMedia::allowed().await {
                if !self.started() {
                    self.state.camera_ask.set(true);
                }
                return;
            }
            if self.started() {
                return;
            }
            let media = EarlyMedia::request();
            self.prepared.update_value(|prepared| {
                if let Some(prepared) = prepared {
                    prepared.use_early_media(media.clone());
                }
            });
            let Some(granted) = media.shown().await else {
                if asked && !self.started() {
                    self.state.notice.set(Some(
                        "The browser did not allow the camera and microphone. Press Start to join: you can still \
                         join with audio only, or just watch and listen."
                            .into(),
                    ));
                }
                return;
            };
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
                self.meter();
                // Their names are known now that the browser has granted the camera.
                if let Ok(devices) = engine::devices().await {
                    self.state.devices.set(devices);
                }
            }
        }

        /// Reads the microphone's level ten times a second, until Start.
        fn meter(self) {
            let level = self.prepared.try_update_value(|prepared| prepared.as_mut().map(Prepared::microphone_level));
            match level.flatten().filter(|_| self.state.previewing.get_untracked()) {
                Some(level) => {
                    self.state.level.set(level);
                    set_timeout(move || self.meter(), std::time::Duration::from_millis(100));
                }
                None => self.state.level.set(None),
            }
        }

        /// Before Start: shows `device` in the preview, and the call will send it.
        pub(super) fn preview_device(self, device: Device) {
            leptos::task::spawn_local(async move {
                let track = match engine::open_device(&device).await {
                    Ok(track) => track,
                    Err(_) => {
                        let text = format!("The browser could not open {}.", device.label);
                        return self.state.notice.set(Some(text));
                    }
                };
                let is_camera = device.is_camera;
                let used = self.prepared.try_update_value(|prepared| {
                    prepared.as_mut().map(|prepared| prepared.use_track(Clone::clone(&track), is_camera)).is_some()
                });
                if used != Some(true) {
                    // Start was pressed meanwhile: the call switches to it instead.
                    track.stop();
                    self.command(CallCommand::UseDevice(device));
                }
            });
        }

        /// Asks the browser for the camera and microphone, to show them before Start.
        pub(super) fn ask_for_camera(self) {
            self.state.camera_ask.set(false);
            leptos::task::spawn_local(self.preview(true));
        }

        /// Shows `tile` on the whole screen, or back in the page if it is there already.
        pub(super) fn full_screen(self, tile: &web_sys::HtmlDivElement) {
            match window().document().filter(|document| document.fullscreen_element().is_some()) {
                Some(document) => document.exit_fullscreen(),
                None => {
                    let _ = tile.request_fullscreen();
                }
            }
        }

        /// Shows `video` in a floating window of its own, where the browser can.
        pub(super) fn picture_in_picture(self, video: &HtmlVideoElement) {
            use leptos::web_sys::js_sys::{Function, Promise, Reflect};
            let request = Reflect::get(video, &"requestPictureInPicture".into()).ok();
            if let Some(request) = request.and_then(|request| request.dyn_into::<Function>().ok()) {
                if let Ok(promise) = request.call0(video).and_then(|p| p.dyn_into::<Promise>()) {
                    settle(promise);
                }
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
            state.chat_seen.set(0);
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
                chat: Rc::new(move |line: ChatLine| {
                    // With the chat shut, the line is told for a moment instead.
                    if let (Author::Them(who), false) = (&line.from, state.panel.get_untracked() == Some(Panel::Chat)) {
                        state.event.set(Some(format!("{who}: {}", super::glimpse(&line.text))));
                    }
                    state.chat.update(|lines| lines.push(line));
                }),
                event: Rc::new(move |text| state.event.set(Some(text))),
                // Unless something new was typed meanwhile.
                unsent: Rc::new(move |text| {
                    if state.draft.with_untracked(String::is_empty) {
                        state.draft.set(text);
                    }
                }),
                devices: Rc::new(move |list| state.devices.set(list)),
                stats: Rc::new(move |reading| state.stats.set(reading)),
                notice: Rc::new(move |text| state.notice.set(text)),
                slow_link: Rc::new(move |slow| state.slow.set(slow)),
                shown: Rc::new(move || self.shown()),
            };
            let room = self.room.get_value();
            let next = self.prepared.try_update_value(Option::take).flatten();
            let next =
                next.unwrap_or_else(|| engine::prepare(&room, Rc::new(move |names| state.present.set(Some(names)))));
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

        /// Each tile on screen, by its key, and the size its video is drawn at in device pixels
        /// (as `object-fit` draws it; the box until the video's size is known); nothing while the
        /// page is hidden.
        fn shown(self) -> crate::call::machine::Shown {
            let window = leptos::prelude::window();
            if document().visibility_state() != web_sys::VisibilityState::Visible {
                return Vec::new();
            }
            let ratio = window.device_pixel_ratio();
            let size = |value: Result<JsValue, JsValue>| value.ok().and_then(|value| value.as_f64()).unwrap_or(0.0);
            let (screen_width, screen_height) = (size(window.inner_width()), size(window.inner_height()));
            self.media.with_value(|media| {
                media
                    .iter()
                    .filter_map(|playing| {
                        let video = playing.video.as_ref()?;
                        let rect = video.get_bounding_client_rect();
                        let on_screen = rect.width() > 0.0
                            && rect.height() > 0.0
                            && rect.bottom() > 0.0
                            && rect.right() > 0.0
                            && rect.top() < screen_height
                            && rect.left() < screen_width;
                        if !on_screen {
                            return None;
                        }
                        let (natural_width, natural_height) =
                            (f64::from(video.video_width()), f64::from(video.video_height()));
                        let (width, height) = if natural_width > 0.0 && natural_height > 0.0 {
                            let fit = window.get_computed_style(video).ok().flatten();
                            let cover = fit.and_then(|style| style.get_property_value("object-fit").ok());
                            let (across, down) = (rect.width() / natural_width, rect.height() / natural_height);
                            let scale =
                                if cover.as_deref() == Some("cover") { across.max(down) } else { across.min(down) };
                            (natural_width * scale, natural_height * scale)
                        } else {
                            (rect.width(), rect.height())
                        };
                        Some((playing.peer, ((width * ratio).round() as u32, (height * ratio).round() as u32)))
                    })
                    .collect()
            })
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
            // Autoplay may be refused, and a newer stream (or none) aborts the play before: the
            // element still shows frames once allowed.
            if let Ok(playing) = video.play() {
                settle(playing);
            }
        }
    }

    /// Waits for `promise` and lets a refusal go: the page decides nothing on it, and an
    /// unhandled rejection would be an error in the console.
    fn settle(promise: leptos::web_sys::js_sys::Promise) {
        leptos::task::spawn_local(async move {
            let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
        });
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

        pub(super) fn ask_for_camera(self) {}

        pub(super) fn preview_device(self, _device: crate::call::Device) {}

        pub(super) fn full_screen<E>(self, _tile: &E) {}

        pub(super) fn picture_in_picture<V>(self, _video: &V) {}
    }
}

#[component]
pub(super) fn CallPage(room: RoomId) -> impl IntoView {
    let title = format!("Call {room} · Duo");
    let state = CallState::new();
    let actions = link::connect(room, state);
    bar::use_shortcuts(state, actions);
    // An event shows for a few seconds, unless a newer one took its place.
    Effect::new(move |_| {
        if let Some(shown) = state.event.get() {
            set_timeout(
                move || {
                    state.event.update(|event| {
                        if event.as_ref() == Some(&shown) {
                            *event = None;
                        }
                    })
                },
                std::time::Duration::from_secs(5),
            );
        }
    });
    view! {
        <Title text=title/>
        <section class="call" class:in-call=move || state.active() class:with-panel=move || state.panel.get().is_some()>
            // Screen readers navigate by headings; the page shows the call itself instead.
            <h1 class="visually-hidden">"Video call"</h1>
            {stage::stage(state, actions)}
            // Before the side: on the join screen, Mute and Camera off come before Start.
            {bar::bar(state, actions)}
            {join::side(state, actions)}
            {panels::panels(state, actions)}
        </section>
    }
}

/// The start of a chat line, to show in an event.
#[cfg(any(feature = "hydrate", test))]
fn glimpse(text: &str) -> String {
    const CHARS: usize = 80;
    match text.char_indices().nth(CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_shows_the_start_of_a_long_line() {
        assert_eq!(super::glimpse("hi"), "hi");
        let long = "é".repeat(200);
        assert_eq!(super::glimpse(&long), format!("{}…", "é".repeat(80)));
    }
}
