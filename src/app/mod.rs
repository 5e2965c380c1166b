//! The pages: the landing page, the call page and the not-found page. Rendered on the server,
//! then hydrated in the browser. The call page, in parts, is [`call_page`].
//!
//! Three fixed pages need no client-side router: the page is chosen from the path once, and
//! going from one to another is an ordinary page load. Leaving `leptos_router` out keeps about
//! 55 KiB (gzip) out of the wasm that must arrive before a call can start.

use leptos::{either::EitherOf3, prelude::*};
use leptos_meta::{provide_meta_context, Title};

use crate::room::RoomId;

mod call_page;
mod icons;
use call_page::CallPage;

/// The HTML document around the app (the server's; the browser hydrates inside it).
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    use leptos_meta::{HashedStylesheet, MetaTags};

    crate::server::headers::for_page(&options);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // The tab's icon is the SVG alone (229 bytes); the PNGs in public/ are made from
                // it and fetched only by what asks for them: a home screen, the manifest's installer.
                <link rel="icon" href="/icon.svg" type="image/svg+xml"/>
                <link rel="apple-touch-icon" href="/apple-touch-icon.png"/>
                <link rel="manifest" href="/manifest.webmanifest"/>
                <meta name="theme-color" content="#111418"/>
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
    // An enum of the three, not a type-erased view: erasing one keeps its async hydration
    // code in the wasm, though hydration here is never async.
    let page = match Page::from_path(&current_path()) {
        Page::Home => EitherOf3::A(view! { <HomePage/> }),
        Page::Call(room) => EitherOf3::B(view! { <CallPage room/> }),
        Page::NotFound => EitherOf3::C(view! { <NotFound/> }),
    };
    view! {
        <Title text="Duo: small video calls"/>
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
pub(crate) fn use_hydrated() -> ReadSignal<bool> {
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
            <p>"Small video calls, browser to browser. Start a call, then send its link to the people you want in it."</p>
            <button class="primary" on:click=new_call disabled=move || !hydrated.get()>"New call"</button>
        </section>
    }
}

/// `HH:MM` of a Unix time in milliseconds: local time in the browser, UTC on the server.
pub(crate) fn clock(millis: u64) -> String {
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
