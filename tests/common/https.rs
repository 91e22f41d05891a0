//! A rustls HTTPS client for tests of `serverTlsConfig`: a client config trusting a test CA
//! (optionally presenting a client certificate), and a keep-alive connection that sends GETs
//! or raw requests and reads `Content-Length` answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A TLS client connection that keeps alive between requests.
pub struct Https {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

/// A response read off an [`Https`] connection.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl Https {
    /// Connects to `addr` as `localhost` and completes the handshake.
    pub fn connect(addr: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<Https> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Https { tls })
    }

    /// The DER of the certificate the server presented.
    pub fn server_cert(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// One keep-alive GET; the body is read to its `Content-Length`.
    pub fn get(&mut self, path: &str, accept: &str) -> std::io::Result<Answer> {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n"))?;
        self.answer(false)
    }

    /// Writes raw request bytes (one or several requests).
    pub fn send(&mut self, requests: &str) -> std::io::Result<()> {
        self.tls.write_all(requests.as_bytes())?;
        self.tls.flush()
    }

    /// Reads one response; a HEAD's has no body whatever its `Content-Length`.
    pub fn answer(&mut self, head_only: bool) -> std::io::Result<Answer> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.tls.read(&mut byte)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
            }
            head.push(byte[0]);
            assert!(head.len() < 64 * 1024, "response head too large");
        }
        let head = String::from_utf8(head).unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .expect("a Content-Length");
        let mut body = vec![0u8; if head_only { 0 } else { len }];
        self.tls.read_exact(&mut body)?;
        Ok(Answer { status, head, body })
    }
}
