//! The HTTP side: the axum router (Leptos pages, static files, the `/ws/{room}` upgrade),
//! listening, and graceful shutdown.

use std::{
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        FromRef, MatchedPath, Path, Query, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use axum_server::{accept::NoDelayAcceptor, tls_rustls::RustlsAcceptor, Handle};
use leptos::prelude::LeptosOptions;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use tracing::info;

use crate::{
    app::shell,
    config::Config,
    headers,
    hub::{Hub, HubSettings},
    ice::IceConfig,
    protocol::{IceTransportPolicy, MAX_FRAME_BYTES, MIN_SESSION_LEN},
    room::RoomId,
    signaling::{self, SessionLimits},
    tls,
};

/// Frames that may wait for a slow reader before it is dropped: far more than a call's whole
/// negotiation, far less than memory to worry about (at most 64 KiB each).
const OUTBOX_CAPACITY: usize = 256;
/// Bytes a signaling socket reads at most per call, and the read buffer it starts with. 2 KiB
/// takes three pipelined candidates in one read: against 1 KiB, half the reads and about 1 µs
/// less CPU per relayed message, for 1 KiB more per idle connection (docs/performance.md).
const READ_BUFFER: usize = 2048;
/// Bytes of queued frames written before a flush is due anyway.
const WRITE_BATCH: usize = 16 * 1024;
/// How long shutdown waits for sockets to close after telling them to.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub hub: Arc<Hub>,
    /// Set on SIGTERM: `/readyz` fails from then on.
    draining: Arc<AtomicBool>,
    allowed_origins: Arc<[String]>,
    limits: SessionLimits,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl AppState {
    pub fn new(config: &Config, leptos_options: LeptosOptions) -> io::Result<Self> {
        let ice = IceConfig {
            urls: config.ice_servers.clone(),
            turn_secret: config.turn_secret()?,
            credential_lifetime: config.turn_credential_lifetime,
            transport_policy: if config.relay_only { IceTransportPolicy::Relay } else { IceTransportPolicy::All },
        };
        Ok(Self {
            leptos_options,
            hub: Hub::new(HubSettings { ice, outbox_capacity: OUTBOX_CAPACITY }),
            draining: Arc::default(),
            allowed_origins: config.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_owned()).collect(),
            limits: SessionLimits { messages_per_second: config.rate_limit, idle_timeout: config.idle_timeout },
        })
    }
}

/// Every route, with the security headers. `strict_transport`: see [`crate::tls::Tls`].
pub fn router(state: AppState, strict_transport: bool) -> Router {
    // Rendering a page spawns tasks through Leptos's executor; an error means it is set already.
    let _ = any_spawner::Executor::init_tokio();
    let page = leptos_axum::render_app_to_stream({
        let options = state.leptos_options.clone();
        move || shell(options.clone())
    });
    let routes = Router::new()
        // The pages; every other path is a static file or the not-found page (404).
        .route("/", get(page.clone()))
        .route("/call/{room}", get(page))
        .route("/ws/{room}", get(signaling_socket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        // Request spans name the route, never the path: paths hold call links and sessions.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
            let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
            tracing::debug_span!("request", method = %request.method(), route)
        }))
        .with_state(state);
    headers::add(routes, strict_transport)
}

#[derive(serde::Deserialize)]
struct SocketParams {
    /// Chosen by the client for one call; the same value again means a reconnect.
    session: Option<String>,
}

/// `GET /ws/{room}?session=...`: checks the room id and session (400) and the page's origin
/// (403), then hands the upgraded socket to [`signaling::run`].
async fn signaling_socket(
    Path(room): Path<String>,
    Query(params): Query<SocketParams>,
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let room = match RoomId::parse(&room) {
        Ok(room) => room,
        Err(invalid) => return (StatusCode::BAD_REQUEST, format!("bad room id: {invalid}")).into_response(),
    };
    let session = match params.session.as_deref().map(parse_session).transpose() {
        Ok(session) => session,
        Err(invalid) => return (StatusCode::BAD_REQUEST, format!("bad session: {invalid}")).into_response(),
    };
    if !origin_allowed(&headers, &state.allowed_origins) {
        return (StatusCode::FORBIDDEN, "this origin may not open the signaling socket").into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Small buffers: tungstenite's 128 KiB default read buffer costs that much per socket
        // (and is zero-filled on every read). It grows for a bigger frame when one comes.
        .read_buffer_size(READ_BUFFER)
        // Frames queued for one peer are written together at the flush that follows them.
        .write_buffer_size(WRITE_BATCH)
        .on_upgrade(move |socket| signaling::run(socket, state.hub, room, session, state.limits))
}

/// A session follows the room id's alphabet (URL-safe, at most 64 characters), and is long
/// enough to be a credential.
fn parse_session(session: &str) -> Result<String, String> {
    RoomId::parse(session).map_err(|invalid| invalid.to_string().replace("room id", "session"))?;
    if session.len() < MIN_SESSION_LEN {
        return Err(format!("a session has at least {MIN_SESSION_LEN} characters (best: 128 random bits)"));
    }
    Ok(session.to_owned())
}

/// Ready to take calls: until shutdown starts.
async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ready")
    }
}

/// Browsers always send `Origin` on a WebSocket upgrade; a page from another site must not be
/// able to join calls with its visitors' cameras. Clients that are not browsers send none.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Serves until SIGTERM or Ctrl-C; then fails `/readyz` for the grace period, closes every
/// signaling socket with 1001 and returns.
pub async fn serve(config: Config, leptos_options: LeptosOptions, metrics: PrometheusHandle) -> io::Result<()> {
    let tls = tls::setup(&config).await?;
    let bind = |addr, flag| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} ({flag}): {e}")))
    };
    let listener = bind(config.addr, "--addr").await?;
    let metrics_listener = bind(config.metrics_addr, "--metrics-addr").await?;
    let state = AppState::new(&config, leptos_options)?;
    let hub = state.hub.clone();
    let draining = state.draining.clone();
    let app = router(state, tls.as_ref().is_some_and(|tls| tls.strict_transport));
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("listening on {scheme}://{}", listener.local_addr()?);
    if tls.is_none() && !config.addr.ip().to_canonical().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {}: browsers on other machines will not allow the camera or microphone \
             on a plain http:// address. Use --tls-cert/--tls-key, --tls-self-signed, or a TLS reverse proxy \
             (docs/deploy.md)",
            config.addr
        );
    }
    info!("metrics on http://{}/metrics", metrics_listener.local_addr()?);
    let metrics_server = tokio::spawn(async move {
        if let Err(error) = serve_metrics(metrics_listener, metrics).await {
            tracing::error!("metrics stopped: {error}");
        }
    });

    let handle = Handle::<std::net::SocketAddr>::new();
    let shutdown_handle = handle.clone();
    let shutdown_hub = hub.clone();
    let grace = config.shutdown_grace;
    tokio::spawn(async move {
        shutdown_signal().await;
        draining.store(true, Ordering::Relaxed);
        if !grace.is_zero() {
            info!("draining: /readyz fails for {grace:?} before sockets close");
            tokio::time::sleep(grace).await;
        }
        info!("shutting down: closing signaling sockets");
        shutdown_hub.shutdown();
        // Requests still in progress get this long; then their connections are closed.
        shutdown_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
    });
    // Signaling messages are small and each one holds up a call's setup: send them at once,
    // without Nagle's wait for the previous packet's acknowledgement (as browsers do too).
    let server = axum_server::Server::from_listener(listener).handle(handle);
    let app = app.into_make_service();
    match tls {
        Some(tls) => server.acceptor(RustlsAcceptor::new(tls.rustls).acceptor(NoDelayAcceptor)).serve(app).await?,
        None => server.acceptor(NoDelayAcceptor).serve(app).await?,
    }
    metrics_server.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, hub.closed()).await.is_err() {
        tracing::warn!(open = hub.peer_count(), "some sockets did not close in time");
    }
    info!("stopped");
    Ok(())
}

/// `/metrics`, for Prometheus, on its own (by default loopback) address; nothing else there.
async fn serve_metrics(listener: TcpListener, metrics: PrometheusHandle) -> io::Result<()> {
    let render = {
        let metrics = metrics.clone();
        move || std::future::ready(metrics.render())
    };
    // Histograms are summarised by the exporter; keep its buffers small between scrapes.
    let upkeep = async {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            metrics.run_upkeep();
        }
    };
    tokio::select! {
        served = axum::serve(listener, Router::new().route("/metrics", get(render))) => served,
        () = upkeep => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn same_origin_and_listed_origins_pass() {
        let allowed = ["https://app.example".to_owned()];
        assert!(origin_allowed(&headers(Some("http://127.0.0.1:3000"), "127.0.0.1:3000"), &allowed));
        assert!(origin_allowed(&headers(Some("https://app.example"), "internal:8080"), &allowed));
        assert!(origin_allowed(&headers(None, "127.0.0.1:3000"), &allowed));
    }

    #[test]
    fn a_session_is_long_enough_to_be_a_credential() {
        let generated = RoomId::generate();
        assert_eq!(parse_session(generated.as_str()).as_deref(), Ok(generated.as_str()));
        assert!(parse_session("0123456789abcdef").is_ok());
        assert!(parse_session("alice").unwrap_err().contains("at least 16"));
        assert!(parse_session("not ok, not ok, not ok").unwrap_err().contains("session may only contain"));
        assert!(parse_session(&"x".repeat(65)).is_err());
    }

    #[test]
    fn other_origins_are_refused() {
        assert!(!origin_allowed(&headers(Some("http://evil.example"), "127.0.0.1:3000"), &[]));
        assert!(!origin_allowed(&headers(Some("http://127.0.0.1:3001"), "127.0.0.1:3000"), &[]));
        assert!(!origin_allowed(&headers(Some("null"), "127.0.0.1:3000"), &[]));
    }
}
