//! [`WatchServer`]: the routing of etcd's `/etcdserverpb.Watch/Watch` to a
//! [`WatchService`], written by hand in place of the generated
//! `etcdserverpb::watch_server::WatchServer`.
//!
//! The generated server can only send the generated `etcdserverpb::WatchResponse`, whose
//! events are owned `mvccpb::Event`s: fanning an event out to many watchers would copy
//! and encode it once per watcher. This one is the same glue (tonic's `Grpc::streaming`
//! with a `ProstCodec`) with `raftkv_proto::watch_wire::EncodedWatchResponse` as the
//! response type, which encodes each event once and is byte-identical on the wire. The
//! request side, the path and the service name are etcd's, so clients see no difference.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::watch_wire::EncodedWatchResponse;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::watch_service::{WatchBackend, WatchService, WatchStream};

/// etcd's Watch method.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// etcd's Watch gRPC service, ready for `tonic::transport::Server::add_service`.
pub struct WatchServer<B> {
    service: Arc<WatchService<B>>,
}

impl<B: WatchBackend> WatchServer<B> {
    /// Serve `service`.
    pub fn new(service: WatchService<B>) -> Self {
        Self {
            service: Arc::new(service),
        }
    }
}

impl<B> Clone for WatchServer<B> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
        }
    }
}

impl<B> NamedService for WatchServer<B> {
    const NAME: &'static str = "etcdserverpb.Watch";
}

/// One call of the Watch method.
struct WatchCall<B>(Arc<WatchService<B>>);

impl<B: WatchBackend> StreamingService<pb::WatchRequest> for WatchCall<B> {
    type Response = EncodedWatchResponse;
    type ResponseStream = WatchStream;
    type Future = BoxFuture<Response<WatchStream>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.watch(request) })
    }
}

impl<B, Req> tonic::codegen::Service<http::Request<Req>> for WatchServer<B>
where
    B: WatchBackend,
    Req: Body + Send + 'static,
    Req::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            // As the generated servers answer a method they do not have.
            return Box::pin(async move { Ok(Status::unimplemented("").into_http()) });
        }
        let call = WatchCall(self.service.clone());
        Box::pin(async move {
            let codec = ProstCodec::<EncodedWatchResponse, pb::WatchRequest>::default();
            Ok(Grpc::new(codec).streaming(call, request).await)
        })
    }
}
