//! Listening sockets inherited from the process that started us, the way systemd socket
//! activation passes them (`sd_listen_fds(3)`): `LISTEN_PID` (our pid), `LISTEN_FDS`
//! (how many, from descriptor 3 on) and `LISTEN_FDNAMES` (their names, `:`-separated).
//!
//! raftkv takes two names: `peer` and `client` (`FileDescriptorName=` in a `.socket`
//! unit). An inherited socket replaces the matching `--listen-*` flag. Why: a supervisor
//! (systemd, a test harness) that binds the ports itself keeps them across restarts of
//! the server, and nobody can take a port between its choosing and the server serving
//! on it.
//!
//! The variables are removed from the environment once read (so nothing this process
//! starts inherits them), and the descriptors are made close-on-exec.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Inherited sockets that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A variable that does not parse.
    #[error("socket activation: invalid {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An inherited descriptor that is not a listening TCP socket.
    #[error("socket activation: descriptor {fd} ({name}) is not a listening TCP socket: {reason}")]
    NotAListener {
        /// The descriptor.
        fd: RawFd,
        /// Its name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The listeners passed to this process, by name.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The Raft peer listener (`peer`).
    pub peer: Option<TcpListener>,
    /// The etcd API listener (`client`).
    pub client: Option<TcpListener>,
}

impl Inherited {
    /// The address of the inherited peer listener, if any.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the inherited client listener, if any.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Which descriptors carry which names, from the three variables' values. `None` when
/// the sockets are not meant for this process (no `LISTEN_PID`, or another pid's).
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    own_pid: u32,
) -> Result<Option<Vec<(RawFd, String)>>, ActivationError> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let pid: u32 = parse_number("LISTEN_PID", pid)?;
    if pid != own_pid {
        return Ok(None);
    }
    let count: usize = parse_number("LISTEN_FDS", fds)?;
    let names: Vec<String> = match listen_fdnames {
        Some(names) => names.split(':').map(String::from).collect(),
        None => Vec::new(),
    };
    if names.len() != count {
        return Err(ActivationError::Invalid {
            name: "LISTEN_FDNAMES",
            value: listen_fdnames.unwrap_or_default().into(),
            reason: format!("{count} sockets need {count} names (peer, client)"),
        });
    }
    let mut seen = Vec::new();
    for name in &names {
        if name != "peer" && name != "client" {
            return Err(ActivationError::Invalid {
                name: "LISTEN_FDNAMES",
                value: names.join(":"),
                reason: format!("unknown name {name:?}: raftkv takes \"peer\" and \"client\""),
            });
        }
        if seen.contains(name) {
            return Err(ActivationError::Invalid {
                name: "LISTEN_FDNAMES",
                value: names.join(":"),
                reason: format!("{name:?} given twice"),
            });
        }
        seen.push(name.clone());
    }
    Ok(Some(
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| (LISTEN_FDS_START + i as RawFd, name))
            .collect(),
    ))
}

/// The number in variable `name`'s `value`.
fn parse_number<T>(name: &'static str, value: &str) -> Result<T, ActivationError>
where
    T: std::str::FromStr<Err = std::num::ParseIntError>,
{
    value
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| ActivationError::Invalid {
            name,
            value: value.into(),
            reason: e.to_string(),
        })
}

/// Take the sockets this process inherited (see the module docs), and remove the
/// variables from the environment. Call it once, first thing in `main`, before any
/// other thread runs: it edits the environment and adopts descriptors 3 and up.
pub fn take_inherited() -> Result<Inherited, ActivationError> {
    let var = |name| std::env::var(name).ok();
    let parsed = parse(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called before any other thread starts (see above).
        unsafe { std::env::remove_var(name) };
    }
    let mut inherited = Inherited::default();
    for (fd, name) in parsed?.unwrap_or_default() {
        let listener = adopt(fd, &name)?;
        match name.as_str() {
            "peer" => inherited.peer = Some(listener),
            _ => inherited.client = Some(listener),
        }
    }
    Ok(inherited)
}

/// Own descriptor `fd` as a listening TCP socket, after checking that it is one.
fn adopt(fd: RawFd, name: &str) -> Result<TcpListener, ActivationError> {
    let not_a_listener = |reason: String| ActivationError::NotAListener {
        fd,
        name: name.into(),
        reason,
    };
    // SAFETY: `fd` is open (fcntl succeeds) and, by the activation protocol, handed to
    // this process to own; `parse` yields each descriptor once.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(not_a_listener(std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: as above.
    let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let is_stream = socket.r#type().map_err(|e| not_a_listener(e.to_string()))? == socket2::Type::STREAM;
    let listening = socket.is_listener().map_err(|e| not_a_listener(e.to_string()))?;
    let inet = socket
        .local_addr()
        .map_err(|e| not_a_listener(e.to_string()))?
        .as_socket()
        .is_some();
    if !(is_stream && listening && inet) {
        return Err(not_a_listener(format!(
            "stream: {is_stream}, listening: {listening}, IP: {inet}"
        )));
    }
    socket
        .set_cloexec(true)
        .map_err(|e| not_a_listener(e.to_string()))?;
    Ok(socket.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sockets_meant_for_another_process_are_ignored() {
        assert!(parse(None, Some("2"), Some("peer:client"), 7).unwrap().is_none());
        assert!(
            parse(Some("8"), Some("2"), Some("peer:client"), 7)
                .unwrap()
                .is_none()
        );
        assert!(parse(Some("7"), None, None, 7).unwrap().is_none());
    }

    #[test]
    fn names_map_to_descriptors_from_three() {
        let fds = parse(Some("7"), Some("2"), Some("client:peer"), 7)
            .unwrap()
            .unwrap();
        assert_eq!(fds, vec![(3, "client".to_string()), (4, "peer".to_string())]);
        let one = parse(Some("7"), Some("1"), Some("peer"), 7).unwrap().unwrap();
        assert_eq!(one, vec![(3, "peer".to_string())]);
    }

    #[test]
    fn bad_variables_get_clear_errors() {
        let cases = [
            (Some("x"), Some("1"), Some("peer"), "invalid LISTEN_PID"),
            (Some("7"), Some("two"), Some("peer"), "invalid LISTEN_FDS"),
            (Some("7"), Some("2"), Some("peer"), "2 sockets need 2 names"),
            (Some("7"), Some("1"), None, "1 sockets need 1 names"),
            (Some("7"), Some("1"), Some("metrics"), "unknown name \"metrics\""),
            (Some("7"), Some("2"), Some("peer:peer"), "given twice"),
        ];
        for (pid, fds, names, expected) in cases {
            let err = parse(pid, fds, names, 7).unwrap_err().to_string();
            assert!(err.contains(expected), "{pid:?} {fds:?} {names:?}: {err}");
        }
    }

    #[test]
    fn a_descriptor_that_is_not_a_listener_is_refused() {
        // A bound socket that does not listen.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
        let err = adopt(fd, "peer").unwrap_err().to_string();
        assert!(err.contains("listening: false"), "{err}");
        // A listening one is adopted and usable.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        let adopted = adopt(fd, "client").unwrap();
        assert_eq!(adopted.local_addr().unwrap(), addr);
    }
}
