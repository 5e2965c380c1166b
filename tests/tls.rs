//! HTTPS and `wss://` from the real server binary: the certificate it presents, a renewal
//! picked up on SIGHUP or on a file change while a call goes on, and a bad new file that leaves
//! the old certificate serving.
#![cfg(feature = "ssr")]

mod common;

use std::{fs, path::PathBuf, sync::Arc, time::Duration};

use common::{get_over, Server, STEP};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::{
    client::TlsStream,
    rustls::{
        pki_types::{CertificateDer, ServerName},
        ClientConfig, RootCertStore,
    },
    TlsConnector,
};
use tokio_tungstenite::{tungstenite::Message as Ws, WebSocketStream};

/// A certificate authority of the test's own, which the test's client trusts.
fn authority() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "Duo test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for localhost signed by `ca`: the full chain and the key, in PEM, and
/// the SHA-256 fingerprint of the leaf.
struct Leaf {
    chain: String,
    key: String,
    fingerprint: String,
}

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let cert = CertificateParams::new(names).unwrap().signed_by(&key, ca).unwrap();
    Leaf {
        chain: format!("{}{}", cert.pem(), ca.pem()),
        key: key.serialize_pem(),
        fingerprint: duo::server::fingerprint(cert.der()),
    }
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("duo-tls-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    fn write(&self, chain: &str, key: &str) {
        fs::write(self.cert(), chain).unwrap();
        fs::write(self.key(), key).unwrap();
    }
    /// Replaces the files with new contents but the old modification times, so that only a
    /// SIGHUP can make the server notice: each is written beside, dated, then renamed over.
    fn write_unnoticed(&self, chain: &str, key: &str) {
        for (path, contents) in [(self.cert(), chain), (self.key(), key)] {
            let time = fs::metadata(&path).unwrap().modified().unwrap();
            let beside = path.with_extension("new");
            fs::write(&beside, contents).unwrap();
            fs::File::options().write(true).open(&beside).unwrap().set_modified(time).unwrap();
            fs::rename(&beside, &path).unwrap();
        }
    }
    fn start(&self) -> Server {
        Server::start(&["--tls-cert", self.cert().to_str().unwrap(), "--tls-key", self.key().to_str().unwrap()])
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn connector(ca: &CertifiedIssuer<'static, KeyPair>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A verified TLS connection to the server, and the fingerprint of the certificate it showed.
async fn handshake(server: &Server, tls: &TlsConnector) -> (TlsStream<TcpStream>, String) {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("a trusted certificate");
    let leaf = stream.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    (stream, duo::server::fingerprint(&leaf))
}

/// Handshakes until the server shows `fingerprint`, for a few seconds at most.
async fn expect_certificate(server: &Server, tls: &TlsConnector, fingerprint: &str) {
    let mut shown = String::new();
    for _ in 0..100 {
        shown = handshake(server, tls).await.1;
        if shown == fingerprint {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server shows {shown}, not {fingerprint}");
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn join(server: &Server, tls: &TlsConnector, room: &str) -> Wss {
    let (stream, _) = handshake(server, tls).await;
    let url = format!("wss://localhost:{}/ws/{room}", server.addr.port());
    let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await.expect("wss upgrade");
    assert!(recv(&mut socket).await.contains("WELCOME"));
    socket
}

async fn recv(socket: &mut Wss) -> String {
    loop {
        match tokio::time::timeout(STEP, socket.next()).await.expect("a frame in time") {
            Some(Ok(Ws::Text(text))) => return text.to_string(),
            Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
            other => panic!("the call's socket ended: {other:?}"),
        }
    }
}

/// Both directions of a call's signaling still work.
async fn still_talking(alice: &mut Wss, bob: &mut Wss) {
    let offer = r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0"}}"#;
    alice.send(Ws::text(offer)).await.unwrap();
    assert_eq!(recv(bob).await, offer);
    let candidate = r#"{"message_type":"CANDIDATE","content":null}"#;
    bob.send(Ws::text(candidate)).await.unwrap();
    assert_eq!(recv(alice).await, candidate);
}

/// A server on its first certificate, a second one ready, and a client that trusts both.
struct Renewal {
    ca: CertifiedIssuer<'static, KeyPair>,
    tls: TlsConnector,
    first: Leaf,
    second: Leaf,
    files: Files,
    server: Server,
}

async fn renewal(name: &str) -> Renewal {
    let ca = authority();
    let (tls, first, second, files) = (connector(&ca), leaf(&ca), leaf(&ca), Files::new(name));
    files.write(&first.chain, &first.key);
    let server = files.start();
    expect_certificate(&server, &tls, &first.fingerprint).await;
    Renewal { ca, tls, first, second, files, server }
}

#[tokio::test]
async fn https_and_wss_with_a_full_chain_and_sighup_renews_the_certificate_without_dropping_a_call() {
    let Renewal { ca, tls, first, second, files, server } = renewal("sighup").await;
    assert!(server.log_line(&first.fingerprint).is_some(), "the log names the certificate's fingerprint");

    // A page over HTTPS, with Strict-Transport-Security since the certificate is a real one.
    let (stream, _) = handshake(&server, &tls).await;
    let page = get_over(stream, "localhost", "/call/tls-room").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("strict-transport-security"), ["max-age=31536000"]);

    let mut alice = join(&server, &tls, "tls-room").await;
    let mut bob = join(&server, &tls, "tls-room").await;
    assert!(recv(&mut alice).await.contains("PEER_JOINED"));

    files.write_unnoticed(&second.chain, &second.key);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handshake(&server, &tls).await.1, first.fingerprint, "no reload before SIGHUP");
    server.signal("HUP");
    expect_certificate(&server, &tls, &second.fingerprint).await;
    still_talking(&mut alice, &mut bob).await;

    // A broken file, and a certificate whose key does not match: logged, and the one in use stays.
    let third = leaf(&ca);
    for (chain, key) in [("not a certificate", second.key.as_str()), (third.chain.as_str(), second.key.as_str())] {
        files.write_unnoticed(chain, key);
        let errors = server.log_count("could not load");
        server.signal("HUP");
        for _ in 0..100 {
            if server.log_count("could not load") > errors {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(server.log_count("could not load") > errors);
        assert_eq!(handshake(&server, &tls).await.1, second.fingerprint);
    }
    still_talking(&mut alice, &mut bob).await;
}

#[tokio::test]
async fn a_renewed_certificate_file_is_picked_up_without_a_signal() {
    let Renewal { tls, second, files, server, .. } = renewal("watch").await;
    let mut alice = join(&server, &tls, "renewed").await;
    let mut bob = join(&server, &tls, "renewed").await;
    assert!(recv(&mut alice).await.contains("PEER_JOINED"));
    // As certbot does: new files in place, no signal.
    files.write(&second.chain, &second.key);
    expect_certificate(&server, &tls, &second.fingerprint).await;
    still_talking(&mut alice, &mut bob).await;
}

#[test]
fn plain_http_on_an_address_other_machines_reach_warns_that_their_browsers_need_https() {
    let warning = "browsers on other machines will not allow the camera";
    let everywhere = Server::start(&["--addr", "0.0.0.0:0"]);
    assert!(everywhere
        .log_line(warning)
        .is_some_and(|line| line.contains("WARN") && line.contains("--tls-self-signed")));
    let with_tls = Server::start(&["--addr", "0.0.0.0:0", "--tls-self-signed"]);
    let loopback = Server::start(&["--addr", "[::ffff:127.0.0.1]:0"]);
    for quiet in [with_tls, loopback] {
        assert!(quiet.log_line("metrics on").is_some());
        assert_eq!(quiet.log_count(warning), 0, "{:?}", quiet.log);
    }
}

#[tokio::test]
async fn sighup_without_a_certificate_file_keeps_the_server_running() {
    // `systemctl reload` on a plain server, or one with a self-signed certificate.
    for args in [&[][..], &["--tls-self-signed"][..]] {
        let server = Server::start(args);
        server.signal("HUP");
        assert!(server.log_line("SIGHUP: no certificate file to reload").is_some(), "{args:?}");
        assert!(TcpStream::connect(server.addr).await.is_ok(), "{args:?}: still serving");
    }
}
