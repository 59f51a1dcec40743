//! Opening a gRPC channel to one endpoint, the same way for load clients and watchers:
//! a bounded connect, Nagle off.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// The deadline of opening each connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one gRPC channel to `url` (under [`CONNECT_TIMEOUT`], Nagle off).
pub async fn open_channel(url: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| Error::InvalidEndpoint {
            endpoint: url.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|source| Error::Connect {
        endpoint: url.to_string(),
        source,
    })
}
