//! The systemd notification protocol (`sd_notify`), for units of
//! `Type=notify` (`deploy/systemd/ociregistry.service`): when `$NOTIFY_SOCKET`
//! names a unix datagram socket (a path, or an abstract name written with a
//! leading `@`), `serve` sends it `STATUS=` lines as it starts, `READY=1` once
//! it is ready (store indexed, preloading done, every serving thread accepting:
//! the same moment `/ready` turns 200) and `STOPPING=1` when a graceful stop
//! begins. Without the variable nothing is sent. A datagram per message, as
//! `sd_notify(3)` does; a failed send is logged at debug and otherwise ignored
//! (systemd then times the start out, which says more than we could).

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go, if anywhere.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// To the socket `$NOTIFY_SOCKET` names; to nowhere when it is unset, empty or unusable (logged).
    pub fn from_env() -> Notifier {
        let name = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        let Some(name) = name.to_str().filter(|n| !n.is_empty()) else {
            return Notifier { target: None };
        };
        match Notifier::connect(name) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(socket = name, error = %e, "NOTIFY_SOCKET is set but unusable: systemd will not hear of readiness");
                Notifier { target: None }
            }
        }
    }

    fn connect(name: &str) -> std::io::Result<Notifier> {
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None => SocketAddr::from_pathname(name)?,
        };
        Ok(Notifier { target: Some((UnixDatagram::unbound()?, to)) })
    }

    /// Sends one message (newline-separated `KEY=value` assignments).
    pub fn send(&self, message: &str) {
        let Some((socket, to)) = &self.target else { return };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), to) {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
    }

    /// `STATUS=<text>`, the line `systemctl status` shows; kept to one line.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::connect(path.to_str().unwrap()).unwrap().status("preloading\nimages");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=preloading images");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ociregistry-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::connect(&format!("@{name}")).unwrap().send("READY=1");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
