//! [`Client::informer`]: the List-Watch cache (`raftkv_core::informer`) over a client: a
//! linearizable paged list, then a [`Watcher`] from its revision, which itself resumes on
//! another endpoint when a connection breaks; the informer re-lists when the watch's next
//! revision was compacted away meanwhile.

use raftkv_core::informer::{Informer, InformerHandler, ListWatch, SourceError, WatchEvents};
use raftkv_core::kv::{RangeRequest, RangeResponse};
use raftkv_core::watch::{WatchRequest, WatchResponse};

use crate::client::Client;
use crate::error::ClientError;
use crate::watch::Watcher;

/// A compacted revision is the informer's cue to list again; anything else a retry.
fn source_error(e: ClientError) -> SourceError {
    match e {
        ClientError::Server(raftkv_core::Error::Request(raftkv_core::RequestError::Compacted { .. })) => {
            SourceError::Compacted
        }
        other => SourceError::Failed(other.to_string()),
    }
}

/// The client as an informer's source.
struct ClientSource(Client);

impl ListWatch for ClientSource {
    type Watch = Watcher;

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse, SourceError> {
        self.0.range(request).await.map_err(source_error)
    }

    async fn watch(&self, request: WatchRequest) -> Result<Watcher, SourceError> {
        self.0.watch(request).await.map_err(source_error)
    }
}

impl WatchEvents for Watcher {
    async fn next(&mut self) -> Option<Result<WatchResponse, SourceError>> {
        Watcher::next(self).await.map(|r| r.map_err(source_error))
    }

    fn request_progress(&mut self) {
        Watcher::request_progress(self);
    }
}

impl Client {
    /// A List-Watch cache of every key under `prefix`, calling `handler` (`()` for none)
    /// on each add, update and delete (client-go's informer; see
    /// `raftkv_core::informer`). Runs as a task on the current Tokio runtime until
    /// dropped.
    pub fn informer<H: InformerHandler>(&self, prefix: impl Into<Vec<u8>>, handler: H) -> Informer {
        Informer::spawn(ClientSource(self.clone()), prefix, handler)
    }
}
