//! The CLI over https:// and wss://: a TLS terminator started here (tokio-rustls, a CA and a
//! certificate for localhost made with openssl) forwards bytes to a plain gateway. With
//! `SSL_CERT_FILE` naming the CA, `publish`, `listen` (https:// becomes wss://) and `stats`
//! work through it; without it, they fail with a certificate error that says what to do.

mod support;

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A TLS listener on a held port that forwards every connection to `to`. Its tasks live on
/// the test's runtime and end with it.
struct Terminator {
    hold: PortHold,
    _accept: tokio::task::JoinHandle<()>,
}

impl Terminator {
    fn start(cert: &Path, key: &Path, to: std::net::SocketAddr) -> Terminator {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("read the certificate")
            .map(|c| c.expect("a PEM certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("read the private key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let hold = PortHold::new();
        let listener = hold.listen();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends its handshake here.
                    let Ok(mut tls) = acceptor.accept(sock).await else { return };
                    let Ok(mut plain) = TcpStream::connect(to).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Terminator { hold, _accept: accept }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.hold.port())
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn wsgate(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut p = Process::spawn(wsgate_command(args, env));
    let status = p.wait_exit(STEP).await.unwrap_or_else(|| panic!("wsgate {args:?} still running after {STEP:?}"));
    Out { code: status.code(), stdout: p.stdout(), stderr: p.stderr() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_listen_and_stats_over_https_and_wss() {
    let gw = Gateway::start(&[]).await;
    let dir = TempDir::new("cli-tls");
    let files = make_tls_files(dir.path()).await;
    let tls = Terminator::start(&files.cert, &files.key, gw.addr);
    let url = tls.url();
    let ca = files.ca.to_str().unwrap().to_owned();
    let env = [("JWT_SECRET", gw.secret.as_str()), ("WSGATE_URL", url.as_str()), ("SSL_CERT_FILE", ca.as_str())];

    // listen: https:// → wss://, through the terminator.
    let listener = Process::spawn(wsgate_command(&["listen", "--sub", "tess"], &env));
    wait_until("the wss:// listener's connected frame", STEP, || {
        std::future::ready(listener.stdout().contains("\"connected\""))
    })
    .await;
    let mut plain = connect_user(&gw, "tess").await;

    let out = wsgate(&["publish", "--type", "over.tls", "--data", "{\"s\":1}", "--user", "tess"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let id = serde_json::from_str::<Value>(out.stdout.trim()).unwrap()["id"].clone();
    assert_eq!(plain.expect_event("over.tls").await["id"], id);
    wait_until("the wss:// listener to print the event", STEP, || {
        std::future::ready(listener.stdout().contains("over.tls"))
    })
    .await;
    let printed: Vec<Value> = listener.stdout().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((printed[1]["id"].clone(), printed[1]["data"].clone()), (id, json!({"s": 1})));

    let out = wsgate(&["stats"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let stats: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(stats["local_connections"], 2, "the wss:// listener and the plain client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_clear_error() {
    let gw = Gateway::start(&[]).await;
    let dir = TempDir::new("cli-tls-untrusted");
    let files = make_tls_files(dir.path()).await;
    let tls = Terminator::start(&files.cert, &files.key, gw.addr);
    let url = tls.url();
    // The system's CAs only: none of them signed the test certificate.
    let env = [("JWT_SECRET", gw.secret.as_str()), ("WSGATE_URL", url.as_str())];
    for args in [&["publish", "--type", "t"][..], &["listen"][..], &["stats"][..]] {
        let out = wsgate(args, &env).await;
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        let err = out.stderr.to_lowercase();
        assert!(err.contains("certificate"), "{args:?}: not a certificate error: {}", out.stderr);
        assert!(err.contains("ssl_cert_file"), "{args:?}: does not say what to do: {}", out.stderr);
    }
    // Another CA (of the same name, as it happens) is no better.
    let other = TempDir::new("cli-tls-other");
    let other = make_tls_files(other.path()).await;
    let ca = other.ca.to_str().unwrap();
    let out = wsgate(&["stats"], &[("WSGATE_URL", url.as_str()), ("SSL_CERT_FILE", ca)]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("the server's certificate is not trusted here (invalid peer certificate"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("set SSL_CERT_FILE to that CA's PEM file"), "{}", out.stderr);
    assert_eq!(gw.metric("wsgate_connections").await, 0.0, "nothing got through");
}
