//! HTTPS: the certificate the server presents, from PEM files (read again on SIGHUP and when
//! the files change, so a renewal needs no restart and drops no call) or made at start
//! (`--tls-self-signed`).

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use axum_server::tls_rustls::RustlsConfig;
use rustls_pki_types::{pem::PemObject, CertificateDer};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info};

use crate::server::config::Config;

/// How often the certificate files are checked for a change.
const FILE_CHECK: Duration = Duration::from_secs(2);

pub(crate) struct Tls {
    pub(crate) rustls: RustlsConfig,
    /// Whether browsers may be told to insist on HTTPS (`Strict-Transport-Security`): only with
    /// a certificate they trust. A self-signed one would stop people from accepting its warning
    /// on later visits.
    pub(crate) strict_transport: bool,
}

/// The HTTPS set-up the flags ask for, or `None` for plain HTTP.
pub(crate) async fn setup(config: &Config) -> io::Result<Option<Tls>> {
    // Registered now, before the server says it listens: SIGHUP (`systemctl reload`) must never
    // end the process, whatever the mode.
    let hangup = signal(SignalKind::hangup())?;
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        // Taken before the files are read, so a change made meanwhile is not missed.
        let seen = modified(cert, key).await;
        let (cert_pem, key_pem) = read(cert, key).await?;
        let fingerprint = fingerprint_of_pem(&cert_pem)?;
        let rustls = RustlsConfig::from_pem(cert_pem, key_pem)
            .await
            .map_err(|e| io::Error::other(format!("{}: {e}", cert.display())))?;
        info!(certificate = %cert.display(), sha256 = %fingerprint, "serving HTTPS");
        tokio::spawn(keep_fresh(rustls.clone(), cert.clone(), key.clone(), seen, hangup));
        return Ok(Some(Tls { rustls, strict_transport: true }));
    }
    tokio::spawn(nothing_to_reload(hangup));
    if config.tls_self_signed {
        let names = crate::server::origin::listen_names(config.addr);
        let made = rcgen::generate_simple_self_signed(names.clone()).map_err(io::Error::other)?;
        let fingerprint = fingerprint(made.cert.der());
        let rustls = RustlsConfig::from_der(vec![made.cert.der().to_vec()], made.signing_key.serialize_der()).await?;
        info!(names = ?names, sha256 = %fingerprint, "serving HTTPS with a self-signed certificate; browsers warn once: check that they show this fingerprint");
        Ok(Some(Tls { rustls, strict_transport: false }))
    } else {
        Ok(None)
    }
}

/// Reloads the certificate on SIGHUP and when either file changes. A file that does not load
/// (half-written, or a key that does not match) is logged and the certificate in use stays.
async fn keep_fresh(rustls: RustlsConfig, cert: PathBuf, key: PathBuf, mut seen: Modified, mut hangup: Signal) {
    let mut every = tokio::time::interval(FILE_CHECK);
    loop {
        tokio::select! {
            _ = hangup.recv() => info!("SIGHUP: reloading the certificate"),
            _ = every.tick() => {
                let now = modified(&cert, &key).await;
                if now == seen {
                    continue;
                }
                seen = now;
                info!("the certificate files changed: reloading");
            }
        }
        let reloaded = async {
            let (cert_pem, key_pem) = read(&cert, &key).await?;
            let fingerprint = fingerprint_of_pem(&cert_pem)?;
            rustls.reload_from_pem(cert_pem, key_pem).await?;
            io::Result::Ok(fingerprint)
        };
        match reloaded.await {
            Ok(fingerprint) => info!(sha256 = %fingerprint, "now serving the new certificate"),
            Err(e) => {
                error!(certificate = %cert.display(), "could not load the certificate; keeping the one in use: {e}")
            }
        }
    }
}

async fn nothing_to_reload(mut hangup: Signal) {
    while hangup.recv().await.is_some() {
        info!("SIGHUP: no certificate file to reload");
    }
}

async fn read(cert: &Path, key: &Path) -> io::Result<(Vec<u8>, Vec<u8>)> {
    async fn read_one(path: &Path) -> io::Result<Vec<u8>> {
        tokio::fs::read(path).await.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
    Ok((read_one(cert).await?, read_one(key).await?))
}

/// When the certificate and key files last changed.
type Modified = (Option<SystemTime>, Option<SystemTime>);

async fn modified(cert: &Path, key: &Path) -> Modified {
    let time = |path: &Path| {
        let path = path.to_owned();
        async move { tokio::fs::metadata(path).await.and_then(|m| m.modified()).ok() }
    };
    (time(cert).await, time(key).await)
}

/// The SHA-256 fingerprint of the first (leaf) certificate of a PEM chain.
fn fingerprint_of_pem(pem: &[u8]) -> io::Result<String> {
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| io::Error::other("no certificate in the file"))?
        .map_err(|e| io::Error::other(format!("bad certificate PEM: {e}")))?;
    Ok(fingerprint(&leaf))
}

/// SHA-256 of a DER certificate, as browsers show it: `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_in_colon_hex() {
        // SHA-256 of the empty input.
        assert_eq!(
            fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn the_fingerprint_of_a_chain_is_its_leafs() {
        let leaf = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let chain = format!("{}{}", leaf.cert.pem(), other.cert.pem());
        assert_eq!(fingerprint_of_pem(chain.as_bytes()).unwrap(), fingerprint(leaf.cert.der()));
        assert!(fingerprint_of_pem(b"not a certificate").is_err());
    }
}
