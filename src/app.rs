//! The pages: the landing page, the call page and the not-found page. Rendered on the server,
//! then hydrated in the browser.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    hooks::{use_navigate, use_params_map},
    path,
};

use crate::{call::CallStatus, room::RoomId};

/// The HTML document around the app (server side only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
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
    view! {
        <Stylesheet id="leptos" href="/pkg/duo.css"/>
        <Title text="Duo: 1:1 video calls"/>
        <Router>
            <main>
                <Routes fallback=NotFound>
                    <Route path=path!("/") view=HomePage/>
                    <Route path=path!("/call/:room") view=CallRoute/>
                </Routes>
            </main>
        </Router>
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
    let navigate = use_navigate();
    let new_call = move |_| navigate(&format!("/call/{}", RoomId::generate()), Default::default());
    view! {
        <section class="home">
            <h1>"Duo"</h1>
            <p>"Video calls for two. Start a call, then send its link to the other person."</p>
            <button class="primary" on:click=new_call disabled=move || !hydrated.get()>"New call"</button>
        </section>
    }
}

/// `/call/{room}`: the call page for a valid room id, the not-found page otherwise.
#[component]
fn CallRoute() -> impl IntoView {
    let params = use_params_map();
    move || match params.read().get("room").map(|room| RoomId::parse(&room)) {
        Some(Ok(room)) => view! { <CallPage room/> }.into_any(),
        _ => view! { <NotFound/> }.into_any(),
    }
}

#[component]
fn CallPage(room: RoomId) -> impl IntoView {
    let hydrated = use_hydrated();
    let status = RwSignal::new(CallStatus::Idle);
    let active = Memo::new(move |_| status.with(CallStatus::is_active));
    let local_video = NodeRef::<leptos::html::Video>::new();
    let remote_video = NodeRef::<leptos::html::Video>::new();
    let title = format!("Call {room} · Duo");

    #[cfg(feature = "hydrate")]
    let call = StoredValue::new_local(None::<crate::call::engine::CallHandle>);
    #[cfg(feature = "hydrate")]
    on_cleanup(move || {
        if let Some(call) = call.try_get_value().flatten() {
            call.hang_up();
        }
    });

    let start = move |_| {
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
            let events = crate::call::engine::CallEvents {
                status: Rc::new(move |next| status.set(next)),
                local_stream: show(local_video),
                remote_stream: show(remote_video),
            };
            call.set_value(Some(crate::call::engine::start(room.clone(), events)));
        }
    };
    let hang_up = move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(call) = call.get_value() {
            call.hang_up();
        }
    };

    view! {
        <Title text=title/>
        <section class="call">
            <div class="videos">
                <video class="remote" node_ref=remote_video aria-label="Remote video" autoplay playsinline></video>
                <video class="local" node_ref=local_video aria-label="Local video" autoplay playsinline muted prop:muted=true></video>
            </div>
            <p class="status" role="status">{move || status.with(CallStatus::text)}</p>
            <div class="controls">
                <button class="primary" on:click=start disabled=move || active.get() || !hydrated.get()>"Start"</button>
                <button class="danger" on:click=hang_up disabled=move || !active.get()>"Hang up"</button>
            </div>
        </section>
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
