//! The pages: the landing page, the call page and the not-found page. Rendered on the server,
//! then hydrated in the browser.
//!
//! Three fixed pages need no client-side router: the page is chosen from the path once, and
//! going from one to another is an ordinary page load. Leaving `leptos_router` out keeps about
//! 55 KiB (gzip) out of the wasm that must arrive before a call can start.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};

use crate::{
    call::{CallCommand, CallStats, CallStatus, ChatLine, Device, MediaChoice},
    protocol::MediaState,
    room::RoomId,
};
use leptos::wasm_bindgen::JsCast;

/// The HTML document around the app (server side only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::server::headers::for_page(&options);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options=options.clone()/>
                <HashedStylesheet id="leptos" options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let page = match Page::from_path(&current_path()) {
        Page::Home => view! { <HomePage/> }.into_any(),
        Page::Call(room) => view! { <CallPage room/> }.into_any(),
        Page::NotFound => view! { <NotFound/> }.into_any(),
    };
    view! {
        <Title text="Duo: 1:1 video calls"/>
        <main>{page}</main>
    }
}

/// What a path shows: `/`, `/call/{room}` for a valid room id, or the not-found page.
#[derive(Debug, PartialEq)]
pub enum Page {
    Home,
    Call(RoomId),
    NotFound,
}

impl Page {
    pub fn from_path(path: &str) -> Page {
        match path.strip_prefix("/call/") {
            Some(room) => RoomId::parse(room).map_or(Page::NotFound, Page::Call),
            None if path == "/" => Page::Home,
            None => Page::NotFound,
        }
    }
}

/// The path being rendered: the request's on the server, the address bar's in the browser.
fn current_path() -> String {
    #[cfg(feature = "ssr")]
    {
        use_context::<axum::http::request::Parts>().map(|parts| parts.uri.path().to_owned()).unwrap_or_default()
    }
    #[cfg(not(feature = "ssr"))]
    {
        window().location().pathname().unwrap_or_default()
    }
}

/// True once the wasm has hydrated the page: buttons that need it stay disabled until then,
/// so a click before the app is ready is never silently lost.
fn use_hydrated() -> ReadSignal<bool> {
    let hydrated = RwSignal::new(false);
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| hydrated.set(true));
    hydrated.read_only()
}

#[component]
fn HomePage() -> impl IntoView {
    let hydrated = use_hydrated();
    let new_call = move |_| {
        let _ = window().location().set_href(&format!("/call/{}", RoomId::generate()));
    };
    view! {
        <section class="home">
            <h1>"Duo"</h1>
            <p>"Video calls for two. Start a call, then send its link to the other person."</p>
            <button class="primary" on:click=new_call disabled=move || !hydrated.get()>"New call"</button>
        </section>
    }
}

#[component]
fn CallPage(room: RoomId) -> impl IntoView {
    let hydrated = use_hydrated();
    let status = RwSignal::new(CallStatus::Idle);
    let active = Memo::new(move |_| status.with(CallStatus::is_active));
    let blocked = Memo::new(move |_| {
        status.with(|s| matches!(s, CallStatus::InsecureContext(_) | CallStatus::BrowserUnsupported))
    });
    // Browsers give the camera, the microphone and WebRTC only to secure contexts: say so
    // before anyone presses Start (effects run in the browser only).
    Effect::new(move |_| {
        use leptos::web_sys::js_sys::Reflect;
        let window = window();
        let navigator = Reflect::get(&window, &"navigator".into()).unwrap_or_default();
        let media = Reflect::get(&navigator, &"mediaDevices".into()).unwrap_or_default();
        let address = window.location().href().unwrap_or_default();
        if let Some(why) = crate::call::media_blocked(window.is_secure_context(), !media.is_undefined(), &address) {
            status.set(why);
        }
    });
    let local = RwSignal::new(MediaState::default());
    let remote = RwSignal::new(None::<MediaState>);
    let chat = RwSignal::new(Vec::<ChatLine>::new());
    let stats = RwSignal::new(None::<CallStats>);
    let devices = RwSignal::new(Vec::<Device>::new());
    let notice = RwSignal::new(None::<String>);
    let local_video = NodeRef::<leptos::html::Video>::new();
    let remote_video = NodeRef::<leptos::html::Video>::new();
    let title = format!("Call {room} · Duo");
    #[cfg(feature = "hydrate")]
    let room = StoredValue::new(room);

    #[cfg(feature = "hydrate")]
    let call = StoredValue::new_local(None::<crate::call::engine::CallHandle>);
    // The next call's signaling socket, opened while the page waits for Start (and again after
    // each call), so that Start does not wait for a connection.
    #[cfg(feature = "hydrate")]
    let prepared = StoredValue::new_local(None::<crate::call::engine::Prepared>);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if !active.get() && !blocked.get() && prepared.with_value(Option::is_none) {
            prepared.set_value(Some(crate::call::engine::prepare(&room.get_value())));
        }
    });
    #[cfg(feature = "hydrate")]
    on_cleanup(move || {
        if let Some(call) = call.try_get_value().flatten() {
            call.command(CallCommand::HangUp);
        }
    });
    // Hands a command to the call in progress, if any (in the browser; never on the server).
    let command = move |command: CallCommand| {
        #[cfg(feature = "hydrate")]
        if let Some(call) = call.get_value() {
            call.command(command);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = command;
    };

    let start_with = move |choice: MediaChoice| {
        #[cfg(feature = "hydrate")]
        {
            use std::rc::Rc;
            let show = |video: NodeRef<leptos::html::Video>| {
                Rc::new(move |stream: Option<web_sys::MediaStream>| {
                    if let Some(video) = video.get_untracked() {
                        video.set_src_object(stream.as_ref());
                        if stream.is_some() {
                            // Autoplay may be refused; the element still shows frames once allowed.
                            let _ = video.play();
                        }
                    }
                })
            };
            chat.set(Vec::new());
            let events = crate::call::engine::CallEvents {
                status: Rc::new(move |next| status.set(next)),
                local_stream: show(local_video),
                remote_stream: show(remote_video),
                local_media: Rc::new(move |state| local.set(state)),
                remote_media: Rc::new(move |state| remote.set(state)),
                chat: Rc::new(move |line| chat.update(|lines| lines.push(line))),
                devices: Rc::new(move |list| devices.set(list)),
                stats: Rc::new(move |reading| stats.set(reading)),
                notice: Rc::new(move |text| notice.set(text)),
            };
            let room = room.get_value();
            let next = prepared.try_update_value(Option::take).flatten();
            let next = next.unwrap_or_else(|| crate::call::engine::prepare(&room));
            call.set_value(Some(crate::call::engine::start(room, choice, events, next)));
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = choice;
    };
    let toggle_microphone = move || command(CallCommand::Microphone(!local.get_untracked().audio));
    let toggle_camera = move || {
        let camera_on = local.get_untracked().video && !local.get_untracked().screen;
        command(CallCommand::Camera(!camera_on))
    };

    // M and V work anywhere on the page but in the chat box and the device lists.
    let keys = window_event_listener(leptos::ev::keydown, move |event| {
        let typing = event
            .target()
            .and_then(|target| target.dyn_into::<leptos::web_sys::Element>().ok())
            .is_some_and(|element| matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if typing || event.ctrl_key() || event.meta_key() || event.alt_key() || !active.get_untracked() {
            return;
        }
        match event.key().as_str() {
            "m" | "M" => toggle_microphone(),
            "v" | "V" => toggle_camera(),
            _ => {}
        }
    });
    on_cleanup(move || keys.remove());

    let draft = RwSignal::new(String::new());
    let send_chat = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let text = draft.get_untracked().trim().to_owned();
        if !text.is_empty() {
            command(CallCommand::Chat(text));
            draft.set(String::new());
        }
    };
    let use_device = move |event: leptos::ev::Event| {
        let id = event_target_value(&event);
        if let Some(device) = devices.get_untracked().into_iter().find(|d| d.id == id) {
            command(CallCommand::UseDevice(device));
        }
    };
    let device_options = move |cameras: bool| {
        devices
            .get()
            .into_iter()
            .filter(|d| d.is_camera == cameras)
            .map(|d| view! { <option value=d.id.clone()>{d.label.clone()}</option> })
            .collect_view()
    };

    view! {
        <Title text=title/>
        <section class="call">
            // Screen readers navigate by headings; the page shows the call itself instead.
            <h1 class="visually-hidden">"Video call"</h1>
            <div class="videos">
                <video class="remote" node_ref=remote_video aria-label="The other person's video" autoplay playsinline></video>
                // Always in the page, so screen readers announce what appears in it.
                <div aria-live="polite">
                    <p class="camera-off" hidden=move || remote.get().is_none_or(|r| r.video)>
                        "The other person's camera is off"
                    </p>
                    <ul class="remote-state">
                        <Show when=move || remote.get().is_some_and(|r| !r.audio)>
                            <li>"The other person is muted"</li>
                        </Show>
                        <Show when=move || remote.get().is_some_and(|r| r.screen)>
                            <li>"The other person is sharing their screen"</li>
                        </Show>
                    </ul>
                </div>
                <video class="local" class:screen=move || local.get().screen node_ref=local_video aria-label="Your video"
                    autoplay playsinline muted prop:muted=true></video>
            </div>
            <p class="status" role="status">{move || status.with(CallStatus::text)}</p>
            <p class="notice" aria-live="polite">{move || notice.get()}</p>
            <Show when=move || matches!(status.get(), CallStatus::MediaUnavailable(_))>
                <div class="controls">
                    <button on:click=move |_| start_with(MediaChoice::MicrophoneOnly)>"Join with audio only"</button>
                    <button on:click=move |_| start_with(MediaChoice::Nothing)>"Watch and listen only"</button>
                </div>
            </Show>
            <div class="controls">
                <button class="primary" on:click=move |_| start_with(MediaChoice::CameraAndMicrophone)
                    disabled=move || active.get() || !hydrated.get() || blocked.get()>"Start"</button>
                <button title="Mute the microphone (M)" aria-pressed=move || (!local.get().audio).to_string()
                    on:click=move |_| toggle_microphone() disabled=move || !active.get()>"Mute"</button>
                <button title="Turn the camera off (V)" aria-pressed=move || (!local.get().video).to_string()
                    on:click=move |_| toggle_camera() disabled=move || !active.get() || local.get().screen>"Camera off"</button>
                <button title="Share your screen instead of the camera" aria-pressed=move || local.get().screen.to_string()
                    on:click=move |_| command(CallCommand::ShareScreen(!local.get_untracked().screen))
                    disabled=move || !active.get()>"Share screen"</button>
                <button class="danger" on:click=move |_| command(CallCommand::HangUp)
                    disabled=move || !active.get()>"Hang up"</button>
            </div>
            <Show when=move || active.get() && !devices.get().is_empty()>
                <div class="devices">
                    <label>"Camera " <select on:change=use_device>{move || device_options(true)}</select></label>
                    <label>"Microphone " <select on:change=use_device>{move || device_options(false)}</select></label>
                </div>
            </Show>
            <section class="chat" aria-label="Chat">
                <ol class="messages" aria-live="polite">
                    <For each=move || chat.get().into_iter().enumerate() key=|(index, _)| *index let:((_, line))>
                        <li class:mine=line.mine>
                            <span class="who">{if line.mine { "You" } else { "Them" }}</span>
                            " " <time>{clock(line.sent_at)}</time> " "
                            <span class="text">{line.text}</span>
                        </li>
                    </For>
                </ol>
                <form on:submit=send_chat>
                    <input aria-label="Message" placeholder="Write a message" prop:value=draft
                        on:input=move |event| draft.set(event_target_value(&event)) maxlength="2000"/>
                    <button type="submit" disabled=move || !active.get()>"Send"</button>
                </form>
            </section>
            <details class="stats">
                <summary>"Statistics"</summary>
                {move || match stats.get() {
                    None => view! { <p>"No connection yet."</p> }.into_any(),
                    Some(s) => view! { <StatsTable stats=s/> }.into_any(),
                }}
            </details>
        </section>
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

/// `HH:MM` of a Unix time in milliseconds: local time in the browser, UTC on the server.
fn clock(millis: u64) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(millis as f64));
        format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let minutes = millis / 60_000;
        format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found · Duo"/>
        <section class="not-found">
            <h1>"This call link doesn't work"</h1>
            <p>"Call links look like /call/ followed by letters, digits, '-' or '_'. Check the link, or start a new call."</p>
            <a href="/">"Start a new call"</a>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_chooses_the_page() {
        assert_eq!(Page::from_path("/"), Page::Home);
        assert_eq!(Page::from_path("/call/abc-DEF_123"), Page::Call(RoomId::parse("abc-DEF_123").unwrap()));
        for not_found in ["", "/call/", "/call/not.a.room", "/call/a/b", "/calls/abc", "/elsewhere"] {
            assert_eq!(Page::from_path(not_found), Page::NotFound, "{not_found:?}");
        }
    }
}
