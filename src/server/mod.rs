//! The server (feature `ssr`): everything the binary runs and the browser never sees.
//!
//! - `config`: command-line flags and environment variables.
//! - `http`: the axum router (pages, `/ws/{room}`, `/healthz`, `/readyz`), plain or TLS
//!   listening, `/metrics` on its own address, and shutdown.
//! - `origin`: which pages may open the signaling socket (Origin and Host checks).
//! - `tls`: the HTTPS certificate: from files, reloaded on change, or self-signed.
//! - `assets`: the front end's files: precompressed, hashed names cached for good.
//! - `headers`: security headers, and each page's Content-Security-Policy with its nonce.
//! - `hub`: rooms, places and relaying between people, alone or shared through Redis; no HTTP in it.
//! - `limits`: token buckets and per-address counts: what one client may cost.
//! - `metrics`: the Prometheus metrics `/metrics` reports.
//! - `ice`: the STUN/TURN servers each browser gets, with short-lived TURN credentials.
//! - `sfu`: the forwarding unit (SFU) media goes through in rooms beyond a mesh.
//! - `signaling`: one WebSocket connection's loop: checks, limits, liveness.
//! - `websocket`: the signaling socket's upgrade, and reads that charge every frame.
//!
//! Every module is `pub(crate)`, so the compiler reports what nothing uses; the few items the
//! binary and the integration tests need are re-exported here.

pub(crate) mod assets;
pub(crate) mod config;
pub(crate) mod headers;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod ice;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod origin;
pub(crate) mod sfu;
pub(crate) mod signaling;
pub(crate) mod tls;
pub(crate) mod websocket;

pub use assets::use_hashed_names;
pub use config::Config;
pub use http::serve;
pub use ice::turn_password;
pub use metrics::install as install_metrics;
pub use tls::fingerprint;
