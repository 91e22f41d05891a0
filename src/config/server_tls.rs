//! `serverTlsConfig`: HTTPS on the serving port, with the Go ociregistry's keys
//! and meaning. `cert` and `key` (PEM files) make the port HTTPS; `clientAuth`
//! is `none` (the default) or `verify`, case-insensitive as in Go: `verify`
//! refuses clients without a certificate signed by `ca` (a PEM bundle), or by
//! the system's trusted CAs when `ca` is not given. As in Go, `ca` means
//! nothing without `clientAuth: verify`; since Go configs (and the Go chart,
//! from a secret's `ca.crt`) commonly set it with `clientAuth: none`, that is
//! accepted, and the server logs a WARN naming `serverTlsConfig.ca` at startup.
//!
//! Where Go silently serves plain HTTP (a `cert` without a `key`) or fails
//! every handshake (`clientAuth: verify` without a certificate), this refuses
//! the file, naming the key: a security setting is never silently dropped.
//! The files are read by `crate::tls::server` at startup and on reload.
//!
//! `kernelTls` (ours, not Go's) is `auto` (the default) or `off`: with `auto`,
//! where the kernel offers its TLS module, a connection's record encryption is
//! handed to the kernel after the rustls handshake (see `crate::tls::offload`).

use std::path::PathBuf;

use serde::Deserialize;

/// `serverTlsConfig` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerTlsConfig {
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: Option<String>,
    /// `auto` or `off`; absent means `auto`.
    #[serde(default)]
    pub kernel_tls: Option<String>,
}

/// Whether HTTPS connections hand their records to the kernel's TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelTlsMode {
    /// Where the kernel offers it, each connection whose cipher it supports.
    #[default]
    Auto,
    /// Never: rustls encrypts every record in user space.
    Off,
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any client may connect (one-way TLS).
    None,
    /// A client must present a certificate that verifies against the CA.
    Verify,
}

/// HTTPS settings, validated: where the certificate, its key and the client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CAs client certificates must chain to (`clientAuth: verify` only);
    /// `None` with `Verify` means the system's trusted CAs, as in Go.
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// A `ca` given with `clientAuth: none`: not used, and warned about.
    pub unused_ca: Option<PathBuf>,
    pub kernel_tls: KernelTlsMode,
}

/// Checks `serverTlsConfig`; `None` when it asks for nothing (absent, or no key set).
pub fn validate(config: Option<&ServerTlsConfig>, problems: &mut Vec<String>) -> Option<ServerTls> {
    let c = config?;
    if c.cert.is_none() && c.key.is_none() && c.ca.is_none() && c.client_auth.is_none() {
        return None;
    }
    let kernel_tls = match c.kernel_tls.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("auto") => KernelTlsMode::Auto,
        Some("off") => KernelTlsMode::Off,
        Some(other) => {
            problems.push(format!("serverTlsConfig.kernelTls: {other:?} is neither auto nor off"));
            return None;
        }
    };
    let client_auth = match c.client_auth.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("none") => ClientAuth::None,
        Some("verify") => ClientAuth::Verify,
        Some(other) => {
            problems.push(format!("serverTlsConfig.clientAuth: {other:?} is neither none nor verify"));
            return None;
        }
    };
    match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            ca: c.ca.clone().filter(|_| client_auth == ClientAuth::Verify),
            client_auth,
            unused_ca: c.ca.clone().filter(|_| client_auth == ClientAuth::None),
            kernel_tls,
        }),
        (Some(_), None) => {
            problems.push("serverTlsConfig.key: missing; cert and key must be given together".into());
            None
        }
        (None, Some(_)) => {
            problems.push("serverTlsConfig.cert: missing; cert and key must be given together".into());
            None
        }
        (None, None) => {
            problems.push(
                "serverTlsConfig.cert, serverTlsConfig.key: missing; HTTPS (and clientAuth or ca) needs the \
                 server's certificate and key"
                    .into(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (Option<ServerTls>, Vec<String>) {
        let c: ServerTlsConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        (validate(Some(&c), &mut problems), problems)
    }

    #[test]
    fn go_keys_are_read_with_go_meaning() {
        let (tls, p) = check("cert: /c.pem\nkey: /k.pem\nca: /ca.pem\nclientAuth: VERIFY\n");
        assert!(p.is_empty(), "{p:?}");
        let tls = tls.unwrap();
        assert_eq!((tls.client_auth, tls.ca.as_deref()), (ClientAuth::Verify, Some(std::path::Path::new("/ca.pem"))));
        assert_eq!(tls.unused_ca, None);
        let (tls, p) = check("cert: /c.pem\nkey: /k.pem\nca: /ca.pem\n");
        assert!(p.is_empty(), "Go configs set ca with clientAuth none: accepted, warned about: {p:?}");
        let tls = tls.unwrap();
        assert_eq!((tls.client_auth, tls.ca), (ClientAuth::None, None), "ca means nothing without verify, as in Go");
        assert_eq!(tls.unused_ca.as_deref(), Some(std::path::Path::new("/ca.pem")), "kept to be warned about");
        assert_eq!(check("{}\n"), (None, vec![]), "nothing asked");
        assert_eq!(tls.kernel_tls, KernelTlsMode::Auto, "the kernel's TLS is used where it is offered");
        let (tls, p) = check("cert: /c.pem\nkey: /k.pem\nkernelTls: OFF\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(tls.unwrap().kernel_tls, KernelTlsMode::Off);
    }

    #[test]
    fn what_go_would_drop_silently_is_refused_by_name() {
        for (yaml, needle) in [
            ("cert: /c.pem\n", "serverTlsConfig.key"),
            ("key: /k.pem\n", "serverTlsConfig.cert"),
            ("clientAuth: verify\n", "serverTlsConfig.cert"),
            ("cert: /c.pem\nkey: /k.pem\nclientAuth: maybe\n", "serverTlsConfig.clientAuth"),
            ("cert: /c.pem\nkey: /k.pem\nkernelTls: on\n", "serverTlsConfig.kernelTls"),
        ] {
            let (tls, p) = check(yaml);
            assert!(tls.is_none() && p.len() == 1 && p[0].contains(needle), "{yaml:?}: {p:?}");
        }
        assert!(serde_yaml_ng::from_str::<ServerTlsConfig>("crt: /c.pem\n").is_err(), "unknown keys are refused");
    }
}
