//! Loopback ports a test cluster holds for its whole life, so no other process (or
//! other test) can take a member's port while the member is down or between the
//! cluster choosing the number and the member listening on it.
//!
//! The cluster keeps one socket bound to each port with `SO_REUSEPORT`, never
//! listening. Each start of a member makes a fresh listening socket on the same port
//! (also `SO_REUSEPORT`, the only way to share it) and hands it to the node
//! (`NodeBuilder::peer_listener`, `client_listener`). While the member is down its
//! listener is gone, so connections are refused as they would be in production, yet
//! the port stays the cluster's: a socket bound without `SO_REUSEPORT` cannot join it,
//! and the kernel never picks a bound port for an outgoing connection.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Backlog of a member's listening sockets.
const BACKLOG: i32 = 1024;

/// A loopback port held for the life of this value.
#[derive(Debug)]
pub(super) struct HeldPort {
    _holder: Socket,
    addr: SocketAddr,
}

fn reuse_port_socket() -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    Ok(socket)
}

impl HeldPort {
    /// A fresh port on 127.0.0.1 chosen by the kernel, held from now on.
    pub(super) fn new() -> std::io::Result<Self> {
        let holder = reuse_port_socket()?;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        holder.bind(&any.into())?;
        let addr = holder
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("a loopback socket without an IP address"))?;
        Ok(Self {
            _holder: holder,
            addr,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new listening socket on this port, for one start of a member.
    pub(super) fn listener(&self) -> std::io::Result<TcpListener> {
        let socket = reuse_port_socket()?;
        socket.bind(&self.addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_cannot_be_taken_by_a_plain_bind_but_serves_its_member() {
        let port = HeldPort::new().unwrap();
        assert!(
            TcpListener::bind(port.addr).is_err(),
            "a plain bind took a held port"
        );
        let first = port.listener().unwrap();
        drop(first);
        // Down and up again on the same port.
        let again = port.listener().unwrap();
        assert_eq!(again.local_addr().unwrap(), port.addr);
    }
}
