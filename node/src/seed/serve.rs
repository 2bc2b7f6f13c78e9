//! Answering inbound blob requests from the store.
//!
//! [`serve`] is the whole answer, blocking (disk reads, and the first time a blob is served,
//! hashing it into its outboard tree). [`BlobServer::admit`] is what the actor calls: it
//! answers [`BlobResponse::Busy`] at once when [`SERVING_MAX`] requests are already being
//! served, and otherwise hands back a future to spawn, which does the blocking part on
//! tokio's blocking pool.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::SeedingCounters;
use super::store::{BlobStore, StoreError};
use super::wire::{BlobRequest, BlobResponse};

/// Requests served at once by default; more are answered `Busy`.
pub const SERVING_MAX: usize = 8;

/// The answer to `req` from `store`.
pub fn serve(store: &BlobStore, req: &BlobRequest) -> BlobResponse {
    let BlobRequest::Get { digest, offset, len } = req else {
        // Not a blob read (the actor answers those itself).
        return BlobResponse::NotFound;
    };
    match store.read_slice(digest, *offset, *len) {
        Ok((total_size, bytes)) => BlobResponse::Slice { total_size, bytes },
        Err(StoreError::NotFound) => BlobResponse::NotFound,
        Err(StoreError::BadRange { size, .. }) => BlobResponse::BadRange { total_size: size },
        Err(StoreError::Corrupt) => {
            tracing::error!(%digest, "stored blob does not match its digest; not serving it");
            BlobResponse::NotFound
        }
        Err(e) => {
            tracing::warn!(%digest, error = %e, "cannot serve blob");
            BlobResponse::NotFound
        }
    }
}

/// Serves blob requests with a bound on how many run at once.
#[derive(Debug, Clone)]
pub struct BlobServer {
    store: Arc<BlobStore>,
    permits: Arc<Semaphore>,
    counters: Arc<SeedingCounters>,
    upload: Arc<crate::budget::ByteRate>,
}

impl BlobServer {
    /// A server answering from `store`, at most `serving_max` requests at once (at least 1).
    pub fn new(store: Arc<BlobStore>, serving_max: usize, counters: Arc<SeedingCounters>) -> Self {
        let permits = Arc::new(Semaphore::new(serving_max.max(1)));
        Self { store, permits, counters, upload: Arc::default() }
    }

    /// The same server, sending at most what `upload` allows.
    pub fn with_upload_cap(mut self, upload: Arc<crate::budget::ByteRate>) -> Self {
        self.upload = upload;
        self
    }

    /// Takes a request: `Err(Busy)` to send back at once when the server is full, or the
    /// future that computes the answer (spawn it; it holds a serving slot until it ends).
    pub fn admit(
        &self,
        req: BlobRequest,
    ) -> Result<impl Future<Output = BlobResponse> + Send + 'static, BlobResponse> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            SeedingCounters::add(&self.counters.requests_busy, 1);
            return Err(BlobResponse::Busy);
        };
        let (store, counters, upload) =
            (self.store.clone(), self.counters.clone(), self.upload.clone());
        let len = match &req {
            BlobRequest::Get { len, .. } => *len,
            BlobRequest::TorrentAddr => 0,
        };
        Ok(async move {
            upload.spend(len as usize).await;
            let res = tokio::task::spawn_blocking(move || serve(&store, &req))
                .await
                .unwrap_or(BlobResponse::Busy);
            drop(permit);
            if let BlobResponse::Slice { .. } = &res {
                SeedingCounters::add(&counters.requests_served, 1);
                SeedingCounters::add(&counters.bytes_served, u64::from(len));
            }
            res
        })
    }

    /// Answers a request in place (for callers already off the actor loop).
    pub async fn handle(&self, req: BlobRequest) -> BlobResponse {
        match self.admit(req) {
            Ok(fut) => fut.await,
            Err(busy) => busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use starling_protocol::Digest;

    use super::*;
    use crate::seed::{CHUNK_BYTES, slice};

    fn store() -> (tempfile::TempDir, Arc<BlobStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path(), None).unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn requests_get_slices_not_found_or_bad_range() {
        let (_dir, store) = store();
        let data = vec![5u8; CHUNK_BYTES as usize + 100];
        let d = store.insert(&data).unwrap();
        let counters = Arc::new(SeedingCounters::default());
        let server = BlobServer::new(store, 2, counters.clone());
        let res = server.handle(BlobRequest::Get { digest: d, offset: 0, len: CHUNK_BYTES }).await;
        let BlobResponse::Slice { total_size, bytes } = res else { panic!("{res:?}") };
        assert_eq!(total_size, data.len() as u64);
        assert!(slice::verify(&d, 0, CHUNK_BYTES, &bytes).is_ok());
        assert_eq!(counters.snapshot().bytes_served, u64::from(CHUNK_BYTES));

        let missing = BlobRequest::Get { digest: Digest([0; 32]), offset: 0, len: 1 };
        assert_eq!(server.handle(missing).await, BlobResponse::NotFound);
        let past = BlobRequest::Get { digest: d, offset: u64::from(CHUNK_BYTES), len: 101 };
        assert_eq!(
            server.handle(past).await,
            BlobResponse::BadRange { total_size: data.len() as u64 }
        );
    }

    #[tokio::test]
    async fn beyond_the_bound_requests_are_answered_busy() {
        let (_dir, store) = store();
        let d = store.insert(b"hello").unwrap();
        let counters = Arc::new(SeedingCounters::default());
        let server = BlobServer::new(store, 2, counters.clone());
        let req = BlobRequest::Get { digest: d, offset: 0, len: 5 };
        let a = server.admit(req.clone()).ok().unwrap();
        let b = server.admit(req.clone()).ok().unwrap();
        assert_eq!(server.admit(req.clone()).err(), Some(BlobResponse::Busy));
        assert!(matches!(a.await, BlobResponse::Slice { .. }));
        // A finished request frees its slot.
        let c = server.admit(req).ok().unwrap();
        assert!(matches!(b.await, BlobResponse::Slice { .. }));
        assert!(matches!(c.await, BlobResponse::Slice { .. }));
        assert_eq!(counters.snapshot().requests_busy, 1);
        assert_eq!(counters.snapshot().requests_served, 3);
    }
}
