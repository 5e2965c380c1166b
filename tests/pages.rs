//! The server-rendered pages of the real server binary: which path shows what, with which status.
#![cfg(feature = "ssr")]

mod common;

use common::{get, http_get, Server};

#[tokio::test]
async fn each_path_renders_its_page() {
    let server = Server::start(&[]);
    let (status, home) = http_get(&server, "/").await;
    assert_eq!(status, 200);
    assert!(home.contains("New call"), "{home}");

    let (status, call) = http_get(&server, "/call/abc-DEF_123").await;
    assert_eq!(status, 200);
    assert!(call.contains("Your video") && call.contains(">Start<") && call.contains("Ready to join?"), "{call}");

    for path in ["/call/not.a.room", "/call/", "/no/such/page"] {
        let (status, page) = http_get(&server, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(page.contains("This call link doesn"), "{path}: {page}");
    }
}

/// The `nonce-…` of a Content-Security-Policy's script-src.
fn script_nonce(policy: &str) -> String {
    let script_src = policy.split(';').map(str::trim).find(|d| d.starts_with("script-src ")).expect("a script-src");
    assert!(!script_src.contains("'unsafe-inline'") && !script_src.contains("'unsafe-eval'"), "{script_src}");
    assert!(script_src.contains("'wasm-unsafe-eval'"), "{script_src}");
    let nonce = script_src.split(' ').find_map(|s| s.strip_prefix("'nonce-")?.strip_suffix('\'')).expect("a nonce");
    nonce.to_owned()
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = Server::start(&[]);
    for path in ["/", "/call/abc-DEF_123", "/no/such/page", "/pkg/duo.css", "/healthz", "/readyz"] {
        let response = get(server.addr, path).await;
        assert_eq!(response.header("referrer-policy"), ["no-referrer"], "{path}");
        assert_eq!(response.header("x-content-type-options"), ["nosniff"], "{path}");
        assert_eq!(
            response.header("permissions-policy"),
            ["camera=(self), microphone=(self), display-capture=(self)"],
            "{path}"
        );
        let policy = response.header("content-security-policy");
        assert_eq!(policy.len(), 1, "{path}: one policy");
        for directive in ["frame-ancestors 'none'", "base-uri 'none'"] {
            assert!(policy[0].contains(directive), "{path}: {}", policy[0]);
        }
        // Plain HTTP: no HSTS (that comes only with a real certificate; see tests/tls.rs).
        assert!(response.header("strict-transport-security").is_empty(), "{path}");
    }
}

#[tokio::test]
async fn pages_run_only_the_scripts_their_nonce_admits_and_are_never_cached() {
    let server = Server::start(&[]);
    let mut nonces = Vec::new();
    for path in ["/", "/call/abc-DEF_123", "/call/abc-DEF_123", "/no/such/page"] {
        let page = get(server.addr, path).await;
        let policy = page.header("content-security-policy")[0].to_owned();
        let nonce = script_nonce(&policy);
        assert!(nonce.len() >= 16, "{nonce}");
        for directive in ["connect-src 'self'", "object-src 'none'", "default-src 'self'"] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        // Every inline script of the page carries this response's nonce.
        let scripts: Vec<_> = page.body.match_indices("<script").map(|(at, _)| &page.body[at..]).collect();
        assert!(!scripts.is_empty(), "{path}: the hydration script");
        for script in scripts {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains(&format!("nonce=\"{nonce}\"")), "{path}: {tag}");
        }
        assert_eq!(page.header("cache-control"), ["no-store"], "{path}");
        nonces.push(nonce);
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a fresh nonce for every response");
}

/// Width and height of a PNG, from its header.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(png[..8], *b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The icons and the manifest as committed in `public/` (a release build copies them into the
/// site): what the pages link to is served with its type and kept a day, and the manifest parses
/// and lists icons that are served, of the sizes it says.
#[tokio::test]
async fn the_icons_and_the_manifest_are_served_as_the_pages_link_them() {
    let public = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("public");
    let server = Server::start_with_env(&[], &[("LEPTOS_SITE_ROOT", public.to_str().unwrap())]);
    let addr = server.addr;
    let served = |path: String, content_type: &'static str| {
        let public = public.clone();
        async move {
            let response = get(addr, &path).await;
            assert_eq!(response.status, 200, "{path}");
            assert_eq!(response.header("content-type"), [content_type], "{path}");
            assert_eq!(response.header("cache-control"), ["public, max-age=86400"], "{path}");
            assert!(response.header("vary").contains(&"accept-encoding"), "{path}");
            let file = std::fs::read(public.join(path.trim_start_matches('/'))).unwrap();
            assert_eq!(response.header("content-length"), [file.len().to_string()], "{path}: the whole file");
            (response, file)
        }
    };

    let home = get(addr, "/").await.body;
    let linked = |rel: &str| {
        let tag = home.split("<link ").find(|tag| tag.starts_with(&format!("rel=\"{rel}\""))).expect(rel);
        tag.split("href=\"").nth(1).and_then(|href| href.split('"').next()).unwrap().to_owned()
    };
    assert_eq!(linked("icon"), "/icon.svg");
    let (svg, _) = served(linked("icon"), "image/svg+xml").await;
    assert!(svg.body.starts_with("<svg") && svg.body.len() < 1024, "{}", svg.body);
    let (_, touch) = served(linked("apple-touch-icon"), "image/png").await;
    assert_eq!(png_size(&touch), (180, 180));
    // Asked for by name, with no link, by browsers and tools that find no icon they can use.
    let (_, ico) = served("/favicon.ico".into(), "image/x-icon").await;
    assert_eq!(ico[..4], [0, 0, 1, 0], "an icon file");

    let (manifest, _) = served(linked("manifest"), "application/manifest+json").await;
    let manifest: serde_json::Value = serde_json::from_str(&manifest.body).expect("the manifest is JSON");
    assert_eq!(manifest["name"], "Duo");
    assert_eq!(manifest["start_url"], "/");
    assert_eq!(manifest["display"], "standalone");
    let mut purposes = Vec::new();
    for icon in manifest["icons"].as_array().expect("icons") {
        let (src, sizes) = (icon["src"].as_str().unwrap(), icon["sizes"].as_str().unwrap());
        assert_eq!(icon["type"], "image/png", "{src}");
        let (_, png) = served(src.to_owned(), "image/png").await;
        let (width, height) = png_size(&png);
        assert_eq!(format!("{width}x{height}"), sizes, "{src}");
        purposes.push((icon["purpose"].as_str().unwrap_or("any").to_owned(), width));
    }
    // What installing asks for: 192 and 512 pixels, and one that a mask may crop.
    for wanted in [("any", 192), ("any", 512), ("maskable", 512)] {
        assert!(purposes.contains(&(wanted.0.to_owned(), wanted.1)), "{wanted:?} in {purposes:?}");
    }
}
