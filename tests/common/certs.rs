//! A throwaway PKI for TLS tests, made with the openssl CLI: a CA, a server certificate for
//! 127.0.0.1 and localhost, and a client certificate for mutual TLS, all ECDSA P-256.
//!
//! It also lays out the two certificate directories that skopeo's `--cert-dir` options read:
//! `*.crt` files are trusted CAs, a `client.cert` + `client.key` pair is presented as client identity.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug)]
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A skopeo cert dir holding only `ca.crt`.
    pub skopeo_ca_dir: PathBuf,
    /// A skopeo cert dir holding `ca.crt`, `client.cert` and `client.key`.
    pub skopeo_client_dir: PathBuf,
}

/// Writes the CA, server and client keys and certificates into `dir` (created if missing).
pub fn make_pki(dir: &Path) -> TestPki {
    fs::create_dir_all(dir).unwrap();
    let pki = TestPki {
        dir: dir.to_path_buf(),
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        skopeo_ca_dir: dir.join("skopeo-ca"),
        skopeo_client_dir: dir.join("skopeo-client"),
    };
    make_ca(&pki);
    let server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
                      extendedKeyUsage=serverAuth\n\
                      keyUsage=critical,digitalSignature\n\
                      basicConstraints=critical,CA:FALSE\n";
    make_leaf(&pki, "localhost", server_ext, &pki.server_key, &pki.server_cert, 2);
    let client_ext = "extendedKeyUsage=clientAuth\n\
                      keyUsage=critical,digitalSignature\n\
                      basicConstraints=critical,CA:FALSE\n";
    make_leaf(&pki, "ociregistry-test-client", client_ext, &pki.client_key, &pki.client_cert, 3);
    make_skopeo_dirs(&pki);
    pki
}

/// Writes a new key and a server certificate for 127.0.0.1 and localhost signed by `pki`'s CA
/// (to replace the server's pair: serials must differ from the ones `make_pki` used, 2 and 3).
pub fn make_server_pair(pki: &TestPki, key: &Path, cert: &Path, serial: u32) {
    let server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
                      extendedKeyUsage=serverAuth\n\
                      keyUsage=critical,digitalSignature\n\
                      basicConstraints=critical,CA:FALSE\n";
    make_leaf(pki, &format!("localhost-{serial}"), server_ext, key, cert, serial);
}

fn make_ca(pki: &TestPki) {
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        path_str(&pki.ca_key),
        "-out",
        path_str(&pki.ca_cert),
        "-days",
        "3650",
        "-subj",
        "/CN=ociregistry-test-ca",
        "-set_serial",
        "1",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
}

fn make_leaf(pki: &TestPki, common_name: &str, extensions: &str, key: &Path, cert: &Path, serial: u32) {
    let csr = pki.dir.join(format!("{common_name}.csr"));
    let ext = pki.dir.join(format!("{common_name}.ext"));
    fs::write(&ext, extensions).unwrap();
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        path_str(key),
        "-out",
        path_str(&csr),
        "-subj",
        &format!("/CN={common_name}"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(&pki.ca_cert),
        "-CAkey",
        path_str(&pki.ca_key),
        "-set_serial",
        &serial.to_string(),
        "-days",
        "825",
        "-sha256",
        "-extfile",
        path_str(&ext),
        "-out",
        path_str(cert),
    ]);
    fs::remove_file(csr).unwrap();
    fs::remove_file(ext).unwrap();
}

fn make_skopeo_dirs(pki: &TestPki) {
    fs::create_dir_all(&pki.skopeo_ca_dir).unwrap();
    fs::copy(&pki.ca_cert, pki.skopeo_ca_dir.join("ca.crt")).unwrap();
    fs::create_dir_all(&pki.skopeo_client_dir).unwrap();
    fs::copy(&pki.ca_cert, pki.skopeo_client_dir.join("ca.crt")).unwrap();
    fs::copy(&pki.client_cert, pki.skopeo_client_dir.join("client.cert")).unwrap();
    fs::copy(&pki.client_key, pki.skopeo_client_dir.join("client.key")).unwrap();
}

/// Runs `openssl ARGS`, panicking with its stderr when it fails.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
