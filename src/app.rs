//! The pages: the landing page, the call page and the not-found page. Rendered on the server,
//! then hydrated in the browser.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    hooks::{use_navigate, use_params_map},
    path,
};

use crate::room::RoomId;

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

#[component]
fn HomePage() -> impl IntoView {
    let navigate = use_navigate();
    let new_call = move |_| navigate(&format!("/call/{}", RoomId::generate()), Default::default());
    view! {
        <section class="home">
            <h1>"Duo"</h1>
            <p>"Video calls for two. Start a call, then send its link to the other person."</p>
            <button class="primary" on:click=new_call>"New call"</button>
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
    let status = RwSignal::new("Press Start to join the call.".to_owned());
    view! {
        <Title text=format!("Call {room} · Duo")/>
        <section class="call">
            <div class="videos">
                <video class="remote" aria-label="Remote video" autoplay playsinline></video>
                <video class="local" aria-label="Local video" autoplay playsinline muted></video>
            </div>
            <p class="status" role="status">{status}</p>
            <div class="controls">
                <button class="primary">"Start"</button>
                <button class="danger">"Hang up"</button>
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
