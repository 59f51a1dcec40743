//! Ports that no other process can take between a test choosing them and a server
//! serving on them.
//!
//! Binding port 0, reading the number and closing the socket before the server binds it
//! (the old `free_port`) left a window in which the kernel could hand the same number to
//! an outgoing connection or to another test, and a member then failed to start with
//! "Address already in use". Two kinds of port replace it:
//!
//! - [`HeldPort`], for raftkv servers: the test keeps a socket bound to the port (with
//!   `SO_REUSEPORT`, never listening) for as long as the test runs. Each start of the
//!   member makes a fresh listening socket on the same port (also `SO_REUSEPORT`, the
//!   only way to share the port) and hands it to the server: in-process through
//!   `NodeBuilder::{peer,client}_listener`, to a child process as an inherited
//!   descriptor (systemd socket activation, `LISTEN_FDS`). While the member is down its
//!   listening socket is gone, so connections are refused as they would be in
//!   production, yet the port stays ours: a socket bound without `SO_REUSEPORT` cannot
//!   join it, and the kernel never picks a bound port for an outgoing connection.
//! - [`ReservedPort`], for etcd (which cannot inherit sockets): a port outside the
//!   kernel's ephemeral range (`net.ipv4.ip_local_port_range`), so no outgoing
//!   connection gets it, locked with `flock` on a file under
//!   `$TMPDIR/raftkv-ports/` for the life of the reservation, so no other harness that
//!   follows the same rule (these tests, `benches/cluster.sh`) picks it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};

/// Backlog of the listening sockets made here (a cluster's peers and a test's clients).
const BACKLOG: i32 = 1024;

/// A loopback port held for the life of this value; see the module docs.
#[derive(Debug)]
pub struct HeldPort {
    holder: Socket,
    addr: SocketAddr,
}

fn reuse_port_socket() -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket
}

impl HeldPort {
    /// A fresh port on 127.0.0.1 chosen by the kernel, held from now on.
    pub fn new() -> Self {
        let holder = reuse_port_socket();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        holder.bind(&any.into()).unwrap();
        let addr = holder.local_addr().unwrap().as_socket().unwrap();
        Self { holder, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new listening socket on this port, for one start of a server. It is
    /// close-on-exec; [`super::process`] moves it to a fixed descriptor for the child.
    pub fn listener(&self) -> TcpListener {
        let socket = reuse_port_socket();
        socket.bind(&self.addr.into()).unwrap();
        socket.listen(BACKLOG).unwrap();
        socket.into()
    }
}

impl Default for HeldPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A port outside the ephemeral range, locked for the life of this value; see the module
/// docs.
#[derive(Debug)]
pub struct ReservedPort {
    port: u16,
    /// Holds the `flock`; released when the file closes (also when the process dies).
    _lock: File,
}

/// Where reserved ports are chosen: below the ephemeral range when there is room, else
/// above it.
fn reservable_range() -> std::ops::Range<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().filter_map(|n| n.parse::<u16>().ok());
    let (low, high) = (bounds.next().unwrap_or(32768), bounds.next().unwrap_or(60999));
    if low >= 12_000 {
        10_000..low
    } else {
        assert!(
            high <= 63_000,
            "no room outside the ephemeral port range {low}-{high} for reserved test ports"
        );
        high + 1..65_535
    }
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("raftkv-ports");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl ReservedPort {
    /// Reserve a port on 127.0.0.1 that is free now and that no outgoing connection and
    /// no other reserving harness will take.
    pub fn new() -> Self {
        let range = reservable_range();
        let span = u32::from(range.end - range.start);
        // Start at a different place in each process so concurrent harnesses rarely
        // contend for the same lock files.
        let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos();
        let locks = lock_dir();
        for step in 0..span {
            let port = range.start + ((seed.wrapping_add(step)) % span) as u16;
            let lock = File::create(locks.join(format!("{port}.lock"))).unwrap();
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !locked {
                continue;
            }
            // Skip ports that something outside these rules (a long-running service)
            // already uses. Releasing this probe is safe: the port is outside the
            // ephemeral range and locked, so nothing that follows the rules takes it.
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Self { port, _lock: lock };
            }
        }
        panic!("no free port in {range:?} outside the ephemeral range");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
