//! Duo: a video-call app: up to four people browser to browser, larger rooms (25 by default,
//! `--max-room-size`) through its own forwarding unit. One crate, built twice by cargo-leptos:
//! the server binary (feature `ssr`) and the browser's wasm (feature `hydrate`).
//!
//! # Layout
//! - [`app`]: the Leptos pages, rendered on the server and hydrated in the browser; the call page
//!   in small parts that only render state, joined to the call engine in one place.
//! - [`call`]: the call: every decision in a pure machine (inputs in, effects out, unit-tested
//!   without a browser) and the browser engine that carries its effects out with web-sys.
//! - [`protocol`]: the signaling wire protocol (JSON `message_type`/`content`), shared by both sides.
//! - [`room`]: room ids: generating and validating the name in a call link.
//! - [`server`] (feature `ssr`): the axum server, the signaling hub and everything else only the
//!   binary runs, one module per concern (its own doc lists them).

// The call page's view is one deeply nested type; the default limit of 128 is too low for it.
#![recursion_limit = "256"]

pub(crate) mod app;
pub(crate) mod call;
pub mod protocol;
pub(crate) mod room;

#[cfg(feature = "ssr")]
pub mod server;

/// The wasm entry point: attaches the app to the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
