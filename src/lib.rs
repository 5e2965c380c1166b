//! Duo: a 1:1 video-call app. One crate, built twice by cargo-leptos: the server binary
//! (feature `ssr`) and the browser's wasm (feature `hydrate`).
//!
//! # Layout
//! - [`app`]: the Leptos pages and components, rendered on the server and hydrated in the browser.
//! - [`call`]: the call in the browser: media, WebRTC with perfect negotiation, signaling client.
//! - [`protocol`]: the signaling wire protocol (JSON `message_type`/`content`), shared by both sides.
//! - [`room`]: room ids: generating and validating the name in a call link.
//! - `config` (server): command-line flags and environment variables.
//! - `origin` (server): which pages may open the signaling socket (Origin and Host checks).
//! - `server` (server): the axum router (pages, `/ws/{room}`, `/healthz`, `/readyz`), plain or
//!   TLS listening, `/metrics` on its own address, and shutdown.
//! - `tls` (server): the HTTPS certificate: from files, reloaded on change, or self-signed.
//! - `assets` (server): the front end's files: precompressed, hashed names cached for good.
//! - `headers` (server): security headers, and each page's Content-Security-Policy with its nonce.
//! - `hub` (server): rooms of two and relaying between them; no HTTP in it.
//! - `limits` (server): token buckets and per-address counts: what one client may cost.
//! - `metrics` (server): the Prometheus metrics `/metrics` reports.
//! - `ice` (server): the STUN/TURN servers each browser gets, with short-lived TURN credentials.
//! - `signaling` (server): one WebSocket connection's loop: checks, limits, liveness.

pub mod app;
pub mod call;
pub mod protocol;
pub mod room;

#[cfg(feature = "ssr")]
pub mod assets;
#[cfg(feature = "ssr")]
pub mod config;
#[cfg(feature = "ssr")]
pub mod headers;
#[cfg(feature = "ssr")]
pub mod hub;
#[cfg(feature = "ssr")]
pub mod ice;
#[cfg(feature = "ssr")]
pub mod limits;
#[cfg(feature = "ssr")]
pub mod metrics;
#[cfg(feature = "ssr")]
pub mod origin;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod signaling;
#[cfg(feature = "ssr")]
pub mod tls;

/// The wasm entry point: attaches the app to the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
