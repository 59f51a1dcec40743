//! A request over the server's message limit, answered as grpc-go answers it (so as
//! etcd does): `ResourceExhausted` "grpc: received message larger than max (N vs. M)".
//! tonic answers `OutOfRange` "Error, decoded message length too large: ...", and
//! `OutOfRange` is the code etcd clients read as a compacted or future revision. The
//! refusal is a trailers-only answer (the call never reached a handler), so only its
//! headers change.

use http::{HeaderValue, Response};
use tonic::{Code, Status};

/// `response`, with tonic's oversize refusal turned into grpc-go's.
pub(crate) fn as_grpc_go<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    // Cheap first: only a trailers-only OutOfRange answer is looked at further.
    if headers.get("grpc-status").map(HeaderValue::as_bytes) != Some(b"11") {
        return response;
    }
    let Some((found, limit)) = Status::from_header_map(headers)
        .filter(|s| s.code() == Code::OutOfRange)
        .and_then(|s| tonic_sizes(s.message()))
    else {
        return response;
    };
    let text = format!("grpc: received message larger than max ({found} vs. {limit})");
    // The message is percent-encoded as tonic writes it; it cannot fail for this text.
    let _ = Status::resource_exhausted(text).add_header(headers);
    response
}

/// (found, limit) from tonic's text, or `None` for any other `OutOfRange`.
fn tonic_sizes(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &'static str, message: &'static str) -> Response<()> {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_static(status));
        r.headers_mut()
            .insert("grpc-message", HeaderValue::from_static(message));
        r
    }

    #[test]
    fn only_tonics_oversize_refusal_changes() {
        let r = as_grpc_go(answer(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%205242893%20bytes,%20the%20limit%20is:%202097152%20bytes",
        ));
        let status = Status::from_header_map(r.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (5242893 vs. 2097152)"
        );
        let compacted = as_grpc_go(answer(
            "11",
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert_eq!(compacted.headers()["grpc-status"], "11");
        let other = as_grpc_go(answer(
            "3",
            "Error, decoded message length too large: found 1 bytes, the limit is: 0 bytes",
        ));
        assert_eq!(other.headers()["grpc-status"], "3");
    }
}
