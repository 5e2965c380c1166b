//! The HTTP side: the axum router (Leptos pages, static files, the `/ws/{room}` upgrade),
//! listening, and graceful shutdown.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{connect_info::Connected, ConnectInfo, FromRef, MatchedPath, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use axum_server::{accept::Accept, tls_rustls::RustlsAcceptor, ConnectionShutdown, Handle};
use leptos::prelude::LeptosOptions;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tower_http::{classify::ServerErrorsFailureClass, compression::CompressionLayer, trace::TraceLayer};
use tracing::info;

use crate::{
    app::shell,
    protocol::{IceTransportPolicy, MAX_FRAME_BYTES, MIN_SESSION_LEN},
    room::RoomId,
    server::assets::Files,
    server::config::{Config, MediaMode},
    server::headers,
    server::hub::{lock, Capacity, Hub, HubSettings},
    server::ice::IceConfig,
    server::limits::{Flood, LogThrottle, Open, OpenPerClient, PerClient},
    server::origin::{listen_names, Caller, OriginPolicy},
    server::sfu::sockets::{IceTcp, Sfu, Sockets},
    server::signaling::{self, Joining, SessionLimits, TurnGrant},
    server::tls,
    server::websocket::{Meter, Upgrade},
};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What may wait for a slow reader before it is dropped: far more than a call's whole
/// negotiation (a few SDPs of a few KiB and some candidates), far less than memory to worry about.
const OUTBOX: Capacity = Capacity { frames: 256, bytes: 1 << 20 };
/// Bytes a signaling socket reads at most per call, and the read buffer it starts with. 2 KiB
/// takes three pipelined candidates in one read: against 1 KiB, half the reads and about 1 µs
/// less CPU per relayed message, for 1 KiB more per idle connection (docs/performance.md).
const READ_BUFFER: usize = 2048;
/// Bytes of queued frames written before a flush is due anyway.
const WRITE_BATCH: usize = 16 * 1024;
/// How long shutdown waits for sockets to close after telling them to.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) leptos_options: LeptosOptions,
    pub(crate) hub: Arc<Hub>,
    /// Set on SIGTERM: `/readyz` fails from then on.
    draining: Arc<AtomicBool>,
    origins: Arc<OriginPolicy>,
    trusted_proxies: Arc<[IpAddr]>,
    sockets_per_client: Arc<OpenPerClient>,
    upgrades_per_client: Arc<PerClient>,
    turn_per_client: Arc<PerClient>,
    limits: SessionLimits,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl AppState {
    /// `https`: whether this server speaks TLS itself; `port`: the one it listens on.
    pub(crate) fn new(config: &Config, leptos_options: LeptosOptions, https: bool, port: u16) -> io::Result<Self> {
        let ice = IceConfig {
            urls: config.ice_servers.clone(),
            turn_secret: config.turn_secret()?,
            credential_lifetime: config.turn_credential_lifetime,
            transport_policy: if config.relay_only { IceTransportPolicy::Relay } else { IceTransportPolicy::All },
        };
        if let Some(note) = config.media_note {
            info!("{note}");
        }
        let sfu = match config.media {
            MediaMode::Mesh => None,
            MediaMode::Sfu | MediaMode::Auto => Some(start_sfu(config)?),
        };
        Ok(Self {
            leptos_options,
            hub: Hub::new(
                HubSettings {
                    ice,
                    media: config.media,
                    sfu,
                    room_size: usize::from(config.room_size()),
                    outbox: OUTBOX,
                    queued_budget: config.max_queued_mib as usize * (1 << 20),
                },
                config.redis.as_ref(),
            )
            .map_err(|error| io::Error::other(format!("--redis: {error}")))?,
            draining: Arc::default(),
            origins: Arc::new(OriginPolicy::new(https, &listen_names(config.addr), port, &config.allowed_origins)),
            trusted_proxies: config.trusted_proxies.iter().map(|ip| ip.to_canonical()).collect(),
            sockets_per_client: OpenPerClient::new(config.max_sockets_per_client as usize),
            upgrades_per_client: Arc::new(PerClient::new(
                f64::from(config.sockets_per_minute_per_client) / 60.0,
                config.sockets_per_minute_per_client,
            )),
            turn_per_client: Arc::new(PerClient::new(
                f64::from(config.turn_credentials_per_client) / 3600.0,
                config.turn_credentials_per_client,
            )),
            limits: SessionLimits { messages_per_second: config.rate_limit, idle_timeout: config.idle_timeout },
        })
    }
}

/// Bytes the media socket's kernel buffers are asked to hold each way: room for a burst of a
/// room of 50's video frames.
const MEDIA_SOCKET_BUFFER: usize = 4 << 20;

/// Binds the media sockets (UDP, and TCP for ICE-TCP) and starts the forwarding unit on them.
fn start_sfu(config: &Config) -> io::Result<Sfu> {
    let wanted = config.media_udp_addr();
    let socket = std::net::UdpSocket::bind(wanted)
        .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp {wanted} (--media-addr): {e}")))?;
    let bound = socket.local_addr()?;
    // A room's senders send at once (a video frame each, every 66 ms): the default 208 KiB
    // overflows from about 20 people, and the kernel drops what does not fit.
    let buffers = socket2::SockRef::from(&socket);
    let _ = buffers.set_recv_buffer_size(MEDIA_SOCKET_BUFFER).and(buffers.set_send_buffer_size(MEDIA_SOCKET_BUFFER));
    // Linux reports twice what it grants (the rest is its bookkeeping).
    let (received, sent) = (buffers.recv_buffer_size()? / 2, buffers.send_buffer_size()? / 2);
    if received < MEDIA_SOCKET_BUFFER {
        tracing::warn!(
            "the media socket's receive buffer is {received} bytes, not {MEDIA_SOCKET_BUFFER}: raise net.core.rmem_max \
             (docs/deploy.md), or large rooms lose packets"
        );
    }
    info!("media socket buffers: {received} bytes in, {sent} out");
    // Browsers reach it at one address: its own, or the public one in front of it.
    let ip = config.media_public_ip.unwrap_or(bound.ip());
    if ip.is_unspecified() {
        return Err(io::Error::other(format!(
            "the media socket binds every interface ({bound}): say which address browsers reach it at with --media-public-ip"
        )));
    }
    let udp_advertised = SocketAddr::new(ip, bound.port());
    info!("media (SFU) on udp {bound}, reached at {udp_advertised}");
    let tcp = match config.media_tcp_listen() {
        None => {
            info!("no ICE-TCP: browsers whose network blocks UDP cannot reach the media (--media-tcp-addr)");
            None
        }
        Some(wanted) => match std::net::TcpListener::bind(wanted).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => {
                let bound = listener.local_addr()?;
                let advertised = SocketAddr::new(config.media_public_ip.unwrap_or(bound.ip()), bound.port());
                info!("media (SFU) over ICE-TCP on tcp {bound}, reached at {advertised}");
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let per_client = OpenPerClient::new(config.max_connections_per_client as usize);
                Some(IceTcp { listener, advertised, per_client })
            }
            // The default port is a guess (another server's, `cargo leptos watch`'s reload
            // port): without it the server works, only without the fallback.
            Err(e) if config.media_tcp_addr.is_none() => {
                tracing::warn!(
                    "no ICE-TCP: cannot listen on tcp {wanted}, the default: {e}; choose one with --media-tcp-addr"
                );
                None
            }
            Err(e) => {
                let message = format!("cannot listen on tcp {wanted} for ICE-TCP (--media-tcp-addr, or `off`): {e}");
                return Err(io::Error::new(e.kind(), message));
            }
        },
    };
    let udp = tokio::net::UdpSocket::from_std(socket)?;
    Sfu::spawn(Sockets { udp, udp_advertised, tcp })
        .map_err(|e| io::Error::other(format!("{e} (say which address browsers reach it at with --media-public-ip)")))
}

/// Every route, with the security headers. `strict_transport`: see [`crate::server::tls::Tls`].
pub(crate) fn router(state: AppState, strict_transport: bool) -> Router {
    // Rendering a page spawns tasks through Leptos's executor; an error means it is set already.
    let _ = any_spawner::Executor::init_tokio();
    let page = leptos_axum::render_app_to_stream({
        let options = state.leptos_options.clone();
        move || shell(options.clone())
    });
    // The pages; every other path is a file of the site (`robots.txt`) or the not-found page
    // (404). Compressed as they are made: they are small, and the front end's files come
    // precompressed.
    let files = Files::new(state.leptos_options.site_root.as_ref().into());
    let pages = Router::new()
        .route("/", get(page.clone()))
        .route("/call/{room}", get(page.clone()))
        .fallback(move |request| file_or_page(files.clone(), page.clone(), request))
        .layer(CompressionLayer::new());
    let routes = Router::new()
        .nest_service("/pkg", crate::server::assets::service(&state.leptos_options))
        .route("/ws/{room}", get(signaling_socket))
        .merge(pages)
        .layer(axum::middleware::from_fn(only_what_pages_load))
        // Request spans name the route, never the path: paths hold call links and sessions.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
                    tracing::debug_span!("request", method = %request.method(), route)
                })
                // Any client can repeat the request that failed: a few lines a second at most.
                .on_failure(|failure: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                    if let Some(left_out) = FAILURE_LOG.allow(Instant::now()) {
                        tracing::error!(%failure, ?latency, similar_left_out = left_out, "response failed");
                    }
                }),
        )
        // Added after the trace layer, so untraced: a load balancer asks every second, and a
        // 503 (draining, or Redis away) is the answer it wants, not a server error to log.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state);
    headers::add(routes, strict_transport)
}

/// The file of the site that `request` names, or else the app's page for its path: the
/// not-found page (404), as the app renders it for any path that is not a page.
async fn file_or_page<Page>(files: Files, page: impl FnOnce(Request) -> Page, request: Request) -> Response
where
    Page: Future<Output = Response>,
{
    let (parts, body) = request.into_parts();
    let mut file = files.serve(Request::from_parts(parts.clone(), Body::empty())).await;
    match file.status() {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => page(Request::from_parts(parts, body)).await,
        status => {
            let headers = file.headers_mut();
            if status.is_success() {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(SITE_FILE_CACHE));
            }
            // A release build's precompressed copies: one name, several encodings.
            headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
            file
        }
    }
}

/// `Cache-Control` of a file of the site (`robots.txt`, the icons, the manifest). Their names
/// never change, unlike `/pkg`'s: kept a day, so that a browser does not ask on every visit
/// and a new release's icon still shows within a day.
const SITE_FILE_CACHE: &str = "public, max-age=86400";

/// The build leaves more in `/pkg` than a page loads (TypeScript declarations); only what pages
/// load is served.
async fn only_what_pages_load(request: Request, next: axum::middleware::Next) -> Response {
    if is_served(request.uri().path()) {
        next.run(request).await
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// Outside `/pkg/`, anything (pages, `robots.txt`, the not-found page); in it, the wasm, the
/// JavaScript that loads it and the CSS. Judged on the path as the file server reads it:
/// percent-decoded, empty and `.` segments dropped (`//pkg/x`, `/%70kg/x` and `/./pkg/x` are
/// all `/pkg/x` to it).
fn is_served(path: &str) -> bool {
    let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segments = path.split('/').filter(|segment| !segment.is_empty() && *segment != ".");
    if segments.next() != Some("pkg") {
        return true;
    }
    match (segments.next(), segments.next()) {
        (Some(file), None) => matches!(file.rsplit_once('.'), Some((name, "wasm" | "js" | "css")) if !name.is_empty()),
        _ => false,
    }
}

#[derive(serde::Deserialize)]
struct SocketParams {
    /// Chosen by the client for one call; the same value again means a reconnect.
    session: Option<String>,
    /// `later`: take the place in the room only when the client sends `JOIN`.
    join: Option<String>,
}

/// `GET /ws/{room}?session=...&join=later`: checks the room id, session and join (400), the
/// page's origin and the `Host` (403) and the client's open sockets (429), then hands the
/// upgraded socket to [`signaling::Connection`].
async fn signaling_socket(
    Path(room): Path<String>,
    Query(params): Query<SocketParams>,
    State(state): State<AppState>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    headers: HeaderMap,
    upgrade: Result<Upgrade, (StatusCode, &'static str)>,
) -> Response {
    let room = match RoomId::parse(&room) {
        Ok(room) => room,
        Err(invalid) => return (StatusCode::BAD_REQUEST, format!("bad room id: {invalid}")).into_response(),
    };
    let session = match params.session.as_deref().map(parse_session).transpose() {
        Ok(session) => session,
        Err(invalid) => return (StatusCode::BAD_REQUEST, format!("bad session: {invalid}")).into_response(),
    };
    let joining = match params.join.as_deref() {
        None => Joining::Now,
        Some("later") => Joining::Later,
        Some(_) => return (StatusCode::BAD_REQUEST, "bad join: the only value is \"later\"").into_response(),
    };
    let origins = headers.get_all(header::ORIGIN).iter().map(|value| value.as_bytes());
    let caller = match state.origins.check(origins, headers.get(header::HOST).map(|host| host.as_bytes())) {
        Ok(caller) => caller,
        Err(refused) => {
            crate::server::metrics::refused_upgrade("origin");
            if let Some(left_out) = REFUSAL_LOG.allow(Instant::now()) {
                let origin = headers
                    .get(header::ORIGIN)
                    .map(|o| String::from_utf8_lossy(o.as_bytes()).chars().take(100).collect::<String>());
                tracing::info!(?origin, similar_left_out = left_out, "refused a signaling socket: {refused}");
            }
            return (StatusCode::FORBIDDEN, refused.to_string()).into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(refused) => return refused.into_response(),
    };
    let client = client_address(connection.peer, &headers, &state.trusted_proxies);
    if !state.upgrades_per_client.take(client, Instant::now()) {
        crate::server::metrics::refused_upgrade("sockets_per_minute_per_client");
        return (StatusCode::TOO_MANY_REQUESTS, "too many new signaling sockets from this address; slow down")
            .into_response();
    }
    let Some(open) = state.sockets_per_client.open(client) else {
        crate::server::metrics::refused_upgrade("sockets_per_client");
        return (StatusCode::TOO_MANY_REQUESTS, "too many signaling sockets from this address").into_response();
    };
    // TURN relays cost the operator bandwidth: credentials only for this site's pages, and
    // only so many per client, counted when the connection joins its room.
    let eligible = caller == Caller::Page && state.hub.issues_turn_credentials();
    let turn_budget = state.turn_per_client.clone();
    let turn = TurnGrant::new(move || {
        eligible && {
            let granted = turn_budget.take(client, Instant::now());
            if !granted {
                crate::server::metrics::refused_upgrade("turn_credentials_per_client");
            }
            granted
        }
    });
    let (hub, limits) = (state.hub, state.limits);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        // Small buffers: tungstenite's 128 KiB default read buffer costs that much per socket
        // (and is zero-filled on every read). It grows for a bigger frame when one comes.
        .read_buffer_size(READ_BUFFER)
        // Frames queued for one peer are written together at the flush that follows them.
        .write_buffer_size(WRITE_BATCH);
    // Every frame the socket reads is charged from the start, fragments included; a message
    // may stay unfinished as long as a connection may stay silent.
    let meter = Meter::new(Flood::new(limits.messages_per_second, Instant::now()), limits.idle_timeout);
    let connection = signaling::Connection { hub, room, session_id: session, limits, turn, per_client: open };
    match joining {
        Joining::Now => upgrade.on_upgrade(config, meter, move |socket| connection.run(socket)),
        Joining::Later => upgrade.on_upgrade(config, meter, move |socket| connection.run_after_join(socket)),
    }
}

/// Refused upgrades, logged a few a second at most: anyone can cause them.
static REFUSAL_LOG: LogThrottle = LogThrottle::new();
/// Server errors (5xx), likewise.
static FAILURE_LOG: LogThrottle = LogThrottle::new();

/// The client's address: the connection's, or for a trusted reverse proxy's request, the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy.
///
/// Each proxy appends the address it was connected from, so walking from the right, every hop
/// up to the first untrusted address was written by a trusted proxy, and that address is the
/// client's; whatever comes before it is the client's own claim, read no further. The header is
/// read as bytes, its lines as one list: a client's non-ASCII or unparsable claim cannot hide the
/// address the proxy appended after it. A hop a trusted proxy should have written but that is no
/// address (a proxy that does not append) leaves the client counted as the nearest proxy.
fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let mut client = peer.ip().to_canonical();
    let hops = headers.get_all("x-forwarded-for").iter().flat_map(|value| value.as_bytes().split(|&byte| byte == b','));
    for hop in hops.rev() {
        if !trusted.contains(&client) {
            break;
        }
        match parse_hop(hop) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` hop: an address, or one with a port (`192.0.2.1:5000`,
/// `[2001:db8::1]:5000`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop.trim_ascii()).ok()?;
    let ip = hop.parse::<IpAddr>().or_else(|_| hop.parse::<SocketAddr>().map(|address| address.ip())).ok()?;
    Some(ip.to_canonical())
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

/// Ready to take calls: until shutdown starts, and (with `--redis`) while Redis answers.
async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !state.hub.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable")
    } else {
        (StatusCode::OK, "ready")
    }
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
    let max_connections = fit_file_limit(config.max_connections as usize);
    let state = AppState::new(&config, leptos_options, tls.is_some(), listener.local_addr()?.port())?;
    let hub = state.hub.clone();
    let draining = state.draining.clone();
    let trusted_proxies = state.trusted_proxies.clone();
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

    let handle = Handle::<SocketAddr>::new();
    let shutdown_handle = handle.clone();
    let shutdown_hub = hub.clone();
    let grace = config.shutdown_grace;
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        shutdown_signal().await;
        draining.store(true, Ordering::Relaxed);
        shutdown_hub.hand_over_media();
        if !grace.is_zero() {
            info!("draining: /readyz fails for {grace:?} before sockets close");
            tokio::time::sleep(grace).await;
        }
        info!("shutting down: closing signaling sockets");
        shutdown_hub.shutdown();
        // Requests still in progress get this long; then their connections are closed.
        shutdown_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
        let _ = stopping.send(());
    });
    let mut server = axum_server::Server::from_listener(listener)
        .handle(handle)
        // A connection must send its first request, and every request its headers, in time:
        // half-sent requests (slowloris) cannot pile up.
        .first_request_timeout(config.header_timeout);
    server.http_builder().http1().header_read_timeout(config.header_timeout);
    // HTTP/2 (offered over TLS) has no header timeout; a connection whose peer stopped
    // answering pings is closed (and an idle one by `close_idle_http2`).
    server
        .http_builder()
        .http2()
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(config.header_timeout);
    let per_second = config.connections_per_second_per_client;
    let capped = Capped {
        permits: Arc::new(Semaphore::new(max_connections)),
        per_client: Arc::new(PerClient::new(f64::from(per_second), per_second.saturating_mul(4))),
        open_per_client: OpenPerClient::new(config.max_connections_per_client as usize),
        trusted_proxies,
    };
    let app = app
        .layer(axum::middleware::from_fn_with_state(config.header_timeout, close_idle_http2))
        .into_make_service_with_connect_info::<Connection>();
    let serving = async {
        match tls {
            Some(tls) => server.acceptor(RustlsAcceptor::new(tls.rustls).acceptor(capped)).serve(app).await,
            None => server.acceptor(capped).serve(app).await,
        }
    };
    // Whatever is still open (a request that never completes, a socket that never closes),
    // the process ends by its deadline once shutdown has begun.
    let deadline = async {
        let _ = stopped.await;
        tokio::time::sleep(DRAIN_TIMEOUT * 2).await;
    };
    tokio::select! {
        served = serving => served?,
        () = deadline => tracing::warn!("connections still open at the shutdown deadline were cut"),
    }
    metrics_server.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, hub.closed()).await.is_err() {
        tracing::warn!(open = hub.peer_count(), "some sockets did not close in time");
    }
    info!("stopped");
    Ok(())
}

/// Raises the process's open-file limit so that `wanted` connections fit (with room for the
/// rest of the process), as far as the hard limit allows; returns the connections that fit.
fn fit_file_limit(wanted: usize) -> usize {
    const OTHER_FILES: u64 = 64;
    let need = wanted as u64 + OTHER_FILES;
    match rlimit::increase_nofile_limit(need) {
        Ok(limit) if limit >= need => wanted,
        Ok(limit) => {
            let fits = limit.saturating_sub(OTHER_FILES).max(1) as usize;
            tracing::warn!(
                "the open-file limit ({limit}) holds only {fits} connections, not --max-connections {wanted}"
            );
            fits
        }
        Err(error) => {
            tracing::warn!(
                "cannot read or raise the open-file limit ({error}); --max-connections {wanted} may not fit"
            );
            wanted
        }
    }
}

/// Accepts connections while fewer than `--max-connections` are open, and from each client
/// address at most `--connections-per-second-per-client` and fewer than
/// `--max-connections-per-client` open; past any of these, closes a new one at once (before
/// any TLS or HTTP work), so what is open keeps working and a reconnect loop costs the server
/// next to nothing.
#[derive(Clone)]
struct Capped {
    permits: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    open_per_client: Arc<OpenPerClient>,
    /// Their connections carry many clients': not counted per client here.
    trusted_proxies: Arc<[IpAddr]>,
}

impl Capped {
    fn refuse<T>(&self, reason: &'static str, why: &str) -> std::future::Ready<io::Result<T>> {
        crate::server::metrics::refused_connection(reason);
        if let Some(left_out) = REFUSAL_LOG.allow(Instant::now()) {
            tracing::warn!(similar_left_out = left_out, "refused a connection: {why}");
        }
        std::future::ready(Err(io::Error::other(reason)))
    }
}

impl<S> Accept<TcpStream, S> for Capped {
    type Stream = Counted;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let client = stream.peer_addr().ok().map(|peer| peer.ip().to_canonical());
        let mut per_client = None;
        if let Some(client) = client.filter(|client| !self.trusted_proxies.contains(client)) {
            if !self.per_client.take(client, Instant::now()) {
                return self.refuse("connections_per_client", "a client opens connections too fast");
            }
            match self.open_per_client.open(client) {
                Some(open) => per_client = Some(open),
                None => return self.refuse("open_per_client", "a client holds --max-connections-per-client"),
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return self.refuse("max_connections", "--max-connections are open");
        };
        // Signaling messages are small and each one holds up a call's setup: send them at
        // once, without Nagle's wait for the previous packet's acknowledgement.
        crate::server::metrics::tcp_connections(1.0);
        let counted = Counted { stream, _permit: permit, _per_client: per_client };
        std::future::ready(counted.stream.set_nodelay(true).map(|()| (counted, service)))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::server::metrics::tcp_connections(-1.0);
    }
}

/// A connection that counts against `--max-connections` until it is dropped (upgraded
/// signaling sockets included).
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// And against its client's `--max-connections-per-client`.
    _per_client: Option<Open>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What every request of one connection carries as its `ConnectInfo`: the peer's address, and
/// whether the connection is idle.
#[derive(Clone)]
struct Connection {
    peer: SocketAddr,
    idle: Arc<Mutex<Idle>>,
}

impl Connected<SocketAddr> for Connection {
    fn connect_info(peer: SocketAddr) -> Self {
        let idle = Idle { in_progress: 0, since: tokio::time::Instant::now(), watched: false };
        Self { peer, idle: Arc::new(Mutex::new(idle)) }
    }
}

/// One connection's requests in progress (each until its response begins: one still being sent
/// when the connection is closed gracefully is sent to the end), and since when it has had none.
struct Idle {
    in_progress: usize,
    since: tokio::time::Instant,
    /// Whether [`close_when_idle`] watches the connection.
    watched: bool,
}

/// Closes an HTTP/2 connection that has had no request in progress for `limit`, as hyper does
/// an idle HTTP/1 one (its header timeout covers the wait for the next request). Answering the
/// server's pings does not keep it open: they tell a live peer from a dead one, not a connection
/// in use from an idle one.
async fn close_idle_http2(State(limit): State<Duration>, request: Request, next: axum::middleware::Next) -> Response {
    let extensions = request.extensions();
    let _in_progress = match (extensions.get::<ConnectInfo<Connection>>(), extensions.get::<ConnectionShutdown>()) {
        (Some(ConnectInfo(connection)), Some(shutdown)) if request.version() == Version::HTTP_2 => {
            let shutdown = shutdown.clone();
            Some(InProgress::begin(&connection.idle, limit, move || shutdown.graceful_shutdown()))
        }
        _ => None,
    };
    next.run(request).await
}

/// A request in progress on a watched connection, until dropped.
struct InProgress(Arc<Mutex<Idle>>);

impl InProgress {
    /// Counts a request; the connection's first starts the watch that calls `close` once the
    /// connection has been idle for `limit`.
    fn begin(idle: &Arc<Mutex<Idle>>, limit: Duration, close: impl FnOnce() + Send + 'static) -> Self {
        let mut state = lock(idle);
        state.in_progress += 1;
        if !std::mem::replace(&mut state.watched, true) {
            tokio::spawn(close_when_idle(Arc::downgrade(idle), limit, close));
        }
        Self(idle.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.in_progress -= 1;
        state.since = tokio::time::Instant::now();
    }
}

/// Wakes once per `limit` at most, and ends within `limit` of the connection's end (when the
/// last `Connection` holding `idle` is dropped).
async fn close_when_idle(idle: Weak<Mutex<Idle>>, limit: Duration, close: impl FnOnce()) {
    let mut check = tokio::time::Instant::now() + limit;
    loop {
        tokio::time::sleep_until(check).await;
        let Some(idle) = idle.upgrade() else { return };
        let state = lock(&idle);
        let now = tokio::time::Instant::now();
        if state.in_progress > 0 {
            check = now + limit;
        } else if now < state.since + limit {
            check = state.since + limit;
        } else {
            // Graceful: a GOAWAY, and responses still being sent finish first.
            close();
            return;
        }
    }
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
    fn only_what_pages_load_is_served_from_pkg() {
        for served in ["/", "/call/x", "/robots.txt", "/pkg/duo.js", "/pkg/duo.wasm", "/pkg/duo.css", "/pkgs/x.d.ts"] {
            assert!(is_served(served), "{served}");
        }
        let hidden =
            ["/pkg/duo.d.ts", "/pkg/duo_bg.wasm.d.ts", "/pkg", "/pkg/", "/pkg/.js", "/pkg/a/b.js", "/pkg/duo.js.map"];
        // The same, written as the file server would still understand them.
        let disguised =
            ["//pkg/duo.d.ts", "/%70kg/duo.d.ts", "/pkg%2Fduo.d.ts", "/./pkg/duo.d.ts", "/pkg/duo%2Ed%2Ets"];
        for path in hidden.into_iter().chain(disguised) {
            assert!(!is_served(path), "{path}");
        }
    }

    #[test]
    fn the_client_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy() {
        let forwarded = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().unwrap());
            headers
        };
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let trusted = ["127.0.0.1".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_address(proxy, &forwarded("192.0.2.9"), &[]), ip("127.0.0.1"), "not trusted");
        assert_eq!(client_address(proxy, &forwarded("192.0.2.9"), &trusted), ip("192.0.2.9"));
        // The client may claim anything before its own address; the proxy appends the real one.
        assert_eq!(client_address(proxy, &forwarded("6.6.6.6, 192.0.2.9"), &trusted), ip("192.0.2.9"));
        assert_eq!(client_address(proxy, &forwarded("192.0.2.9:5000"), &trusted), ip("192.0.2.9"));
        assert_eq!(client_address(proxy, &forwarded("[2001:db8::9]:5000"), &trusted), ip("2001:db8::9"));
        assert_eq!(client_address(proxy, &forwarded("garbage"), &trusted), ip("127.0.0.1"));
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), ip("127.0.0.1"));
        let direct: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        assert_eq!(client_address(direct, &forwarded("192.0.2.9"), &trusted), ip("198.51.100.1"));
    }

    #[tokio::test]
    async fn a_watched_connection_closes_once_idle_and_never_with_a_request_in_progress() {
        let limit = Duration::from_millis(50);
        let connection = Connection::connect_info(SocketAddr::from(([127, 0, 0, 1], 5000)));
        let (closing, mut closed) = tokio::sync::oneshot::channel();
        let slow = InProgress::begin(&connection.idle, limit, move || closing.send(()).unwrap());
        tokio::time::sleep(limit * 5).await;
        assert!(closed.try_recv().is_err(), "a request in progress keeps it open");
        let next = InProgress::begin(&connection.idle, limit, || unreachable!("one watch a connection"));
        drop((slow, next));
        tokio::time::timeout(Duration::from_secs(5), closed).await.expect("closed once idle").unwrap();

        // A connection that ends first is never closed, and its watch ends with it.
        let connection = Connection::connect_info(SocketAddr::from(([127, 0, 0, 1], 5001)));
        let (closing, closed) = tokio::sync::oneshot::channel::<()>();
        drop(InProgress::begin(&connection.idle, limit, move || closing.send(()).unwrap()));
        drop(connection);
        let ended = tokio::time::timeout(Duration::from_secs(5), closed).await.expect("the watch ended");
        assert!(ended.is_err(), "never closed");
    }

    /// What nginx passes on: whatever the client sent, then the address it came from.
    fn forwarded_lines(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(line).unwrap());
        }
        headers
    }

    #[test]
    fn a_client_claim_of_any_bytes_never_hides_the_address_the_proxy_appended() {
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let trusted = ["127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let client = |lines: &[&[u8]]| client_address(proxy, &forwarded_lines(lines), &trusted);
        // Bytes that are not visible ASCII (HeaderValue::to_str refuses them), before the real address.
        assert_eq!(client(&[b"\xff\xfe\x80, 192.0.2.9"]), ip("192.0.2.9"));
        assert_eq!(client(&[b"caf\xc3\xa9\t,,, 6.6.6.6 junk, 192.0.2.9"]), ip("192.0.2.9"));
        // Several lines are one list, in order: the client's, then the proxy's.
        assert_eq!(client(&[b"\xff 6.6.6.6", b"192.0.2.9"]), ip("192.0.2.9"));
        assert_eq!(client(&[b"6.6.6.6, 192.0.2.9", b"10.0.0.2"]), ip("192.0.2.9"), "through two trusted proxies");
        assert_eq!(client(&[b"6.6.6.6, [2001:db8::9]:443, 10.0.0.2"]), ip("2001:db8::9"));
        // A trusted proxy's hop that is no address: nothing before it is known, the proxy is counted.
        assert_eq!(client(&[b"\xff\xfe"]), ip("127.0.0.1"));
        assert_eq!(client(&[b"192.0.2.9, \xff"]), ip("127.0.0.1"));
        assert_eq!(client(&[b"192.0.2.9\xff"]), ip("127.0.0.1"));
        assert_eq!(client(&[b"192.0.2.9, "]), ip("127.0.0.1"));
        assert_eq!(client(&[b""]), ip("127.0.0.1"));
        assert_eq!(client(&[b"192.0.2.9, garbage, 10.0.0.2"]), ip("10.0.0.2"), "the nearest proxy known");
        // A mapped IPv4 address is that IPv4 address.
        assert_eq!(client(&[b"::ffff:192.0.2.9"]), ip("192.0.2.9"));
    }
}
