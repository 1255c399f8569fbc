//! An `ObjectStore` wrapper that counts requests and bytes put, so benchmarks (and metrics)
//! can show what a checkpoint costs in object-storage terms.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use slatedb::object_store::path::Path;
use slatedb::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// Request counters; cheap to read at any time.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub puts: AtomicU64,
    pub bytes_put: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub copies: AtomicU64,
}

/// A point-in-time copy of [`RequestCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountsSnapshot {
    pub puts: u64,
    pub bytes_put: u64,
    pub gets: u64,
    pub lists: u64,
    pub deletes: u64,
    pub copies: u64,
}

impl CountsSnapshot {
    /// Requests of every kind.
    pub fn requests(&self) -> u64 {
        self.puts + self.gets + self.lists + self.deletes + self.copies
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CountsSnapshot) -> CountsSnapshot {
        CountsSnapshot {
            puts: self.puts - earlier.puts,
            bytes_put: self.bytes_put - earlier.bytes_put,
            gets: self.gets - earlier.gets,
            lists: self.lists - earlier.lists,
            deletes: self.deletes - earlier.deletes,
            copies: self.copies - earlier.copies,
        }
    }
}

impl RequestCounts {
    pub fn snapshot(&self) -> CountsSnapshot {
        CountsSnapshot {
            puts: self.puts.load(Ordering::Relaxed),
            bytes_put: self.bytes_put.load(Ordering::Relaxed),
            gets: self.gets.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            copies: self.copies.load(Ordering::Relaxed),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Counts every request it forwards to the wrapped store. A multipart upload counts one put
/// per part plus one for completing it.
#[derive(Debug)]
pub struct CountingObjectStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<RequestCounts>,
}

impl CountingObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> (Arc<CountingObjectStore>, Arc<RequestCounts>) {
        let counts = Arc::new(RequestCounts::default());
        (Arc::new(CountingObjectStore { inner, counts: counts.clone() }), counts)
    }
}

impl fmt::Display for CountingObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Arc<RequestCounts>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        add(&self.counts.puts, 1);
        add(&self.counts.bytes_put, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        add(&self.counts.puts, 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        add(&self.counts.deletes, 1);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for CountingObjectStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        add(&self.counts.puts, 1);
        add(&self.counts.bytes_put, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload { inner, counts: self.counts.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        add(&self.counts.gets, 1);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        add(&self.counts.gets, ranges.len() as u64);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let counts = self.counts.clone();
        let counted = locations
            .map(move |location| {
                add(&counts.deletes, 1);
                location
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        add(&self.counts.lists, 1);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        add(&self.counts.lists, 1);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        add(&self.counts.lists, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        add(&self.counts.copies, 1);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        add(&self.counts.copies, 1);
        self.inner.rename_opts(from, to, options).await
    }
}
