//! Where state lives: Flink's `state.checkpoints.dir` turned into an object store and a root
//! path inside it. Local folders, S3 (or any S3-compatible endpoint) and memory (tests).

use std::fmt;
use std::sync::Arc;

use slatedb::object_store::ObjectStore;
use slatedb::object_store::aws::AmazonS3Builder;
use slatedb::object_store::local::LocalFileSystem;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::path::Path;

use crate::error::{Result, StateError};

/// What kind of store a location is; it decides which conditional writes are available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A local folder: supports create-only puts but not `If-Match` updates.
    Local,
    S3,
    Memory,
}

/// S3 connection settings, normally taken from the usual AWS environment variables.
#[derive(Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for a local S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Options {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<redacted>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl S3Options {
    /// `AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`), `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    pub fn from_env() -> S3Options {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> S3Options {
        S3Options {
            endpoint: get("AWS_ENDPOINT_URL_S3").or_else(|| get("AWS_ENDPOINT_URL")),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
        }
    }
}

/// An object store and the root path under which a job's state and checkpoints live.
#[derive(Clone)]
pub struct StateLocation {
    store: Arc<dyn ObjectStore>,
    root: Path,
    kind: StoreKind,
    url: String,
    /// Which store the paths are in: two locations with the same namespace see each other's
    /// objects under the same paths (one bucket, or the local file system).
    namespace: String,
}

impl fmt::Debug for StateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateLocation").field("url", &self.url).field("kind", &self.kind).finish()
    }
}

impl StateLocation {
    /// Parses a `state.checkpoints.dir` value: a plain path or `file:///path` (the folder is
    /// created), `s3://bucket/prefix` (configured from the AWS environment variables) or
    /// `memory://prefix` (a fresh in-memory store, for tests).
    pub fn parse(dir: &str) -> Result<StateLocation> {
        Self::parse_with(dir, &S3Options::from_env())
    }

    /// As [`StateLocation::parse`], with explicit S3 settings.
    pub fn parse_with(dir: &str, s3: &S3Options) -> Result<StateLocation> {
        let invalid =
            |reason: &str| StateError::InvalidLocation { location: dir.to_string(), reason: reason.to_string() };
        let trimmed = dir.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        if let Some(rest) = trimmed.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name after s3://"));
            }
            let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
            }
            // object_store needs a region even for S3-compatible endpoints that ignore it.
            builder = builder.with_region(s3.region.as_deref().unwrap_or("us-east-1"));
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = &s3.session_token {
                builder = builder.with_token(token);
            }
            let store = builder.build().map_err(|e| invalid(&e.to_string()))?;
            let root = Path::parse(prefix.trim_matches('/')).map_err(|e| invalid(&e.to_string()))?;
            let namespace = format!("s3://{bucket} at {}", s3.endpoint.as_deref().unwrap_or("AWS"));
            return Ok(StateLocation {
                store: Arc::new(store),
                root,
                kind: StoreKind::S3,
                url: trimmed.to_string(),
                namespace,
            });
        }
        if let Some(rest) = trimmed.strip_prefix("memory://") {
            let root = Path::parse(rest.trim_matches('/')).map_err(|e| invalid(&e.to_string()))?;
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            // Every memory location is a store of its own.
            let namespace = format!("memory {:p}", Arc::as_ptr(&store));
            return Ok(StateLocation { store, root, kind: StoreKind::Memory, url: trimmed.to_string(), namespace });
        }
        let local = if let Some(rest) = trimmed.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid("a file:// location needs an absolute path (file:///path)"));
            }
            rest
        } else if trimmed.contains("://") {
            return Err(invalid("unsupported scheme; use a path, file:///path, s3://bucket/prefix or memory://"));
        } else {
            trimmed
        };
        std::fs::create_dir_all(local).map_err(|e| invalid(&format!("cannot create the folder: {e}")))?;
        // One store for the whole file system and the folder as the root, so paths are absolute
        // and any two local locations see each other's databases (a savepoint elsewhere clones
        // from the checkpoints' databases, and a job restores from it).
        let folder = std::fs::canonicalize(local).map_err(|e| invalid(&format!("cannot resolve the folder: {e}")))?;
        let root = Path::from_absolute_path(&folder).map_err(|e| invalid(&e.to_string()))?;
        Ok(StateLocation {
            store: Arc::new(LocalFileSystem::new()),
            root,
            kind: StoreKind::Local,
            url: trimmed.to_string(),
            namespace: "the local file system".into(),
        })
    }

    /// A location over an existing store, e.g. one wrapped to count requests.
    pub fn from_store(store: Arc<dyn ObjectStore>, root: Path, kind: StoreKind) -> StateLocation {
        let url = format!("{store}/{root}");
        let namespace = format!("{store} {:p}", Arc::as_ptr(&store));
        StateLocation { store, root, kind, url, namespace }
    }

    /// Whether `other`'s paths name the same objects as this location's: the same bucket, the
    /// local file system, or the very same store. A savepoint's databases must be there.
    pub fn shares_store_with(&self, other: &StateLocation) -> bool {
        Arc::ptr_eq(&self.store, &other.store) || (self.kind == other.kind && self.namespace == other.namespace)
    }

    /// The same location seen through a wrapper of its store (counting, fault injection).
    pub fn map_store(&self, wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>) -> StateLocation {
        StateLocation { store: wrap(self.store.clone()), ..self.clone() }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// SlateDB's administration of the database at `db` in this store.
    pub fn admin(&self, db: &Path) -> slatedb::admin::Admin {
        slatedb::admin::AdminBuilder::new(db.clone(), self.store.clone()).build()
    }

    /// Writes `bytes` at `path` (retrying transient errors), replacing what was there.
    pub async fn write(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        use slatedb::object_store::{ObjectStoreExt, PutPayload};
        let payload = PutPayload::from(bytes);
        let (written, _) = crate::retry::with_backoff("write", || self.store.put(path, payload.clone())).await;
        written.map(|_| ()).map_err(|e| StateError::store(path, e))
    }

    /// Reads the whole object at `path`, given as [`Path`]'s display form.
    pub async fn read(&self, path: &str) -> Result<bytes::Bytes> {
        use slatedb::object_store::ObjectStoreExt;
        let path = Path::parse(path)
            .map_err(|e| StateError::InvalidLocation { location: path.to_string(), reason: e.to_string() })?;
        let (got, _) =
            crate::retry::with_backoff("read", || async { self.store.get(&path).await?.bytes().await }).await;
        got.map_err(|e| StateError::store(&path, e))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The value this location was parsed from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `root/a/b/...`; each part must be a valid path segment.
    pub fn child(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.join(*part);
        }
        path
    }

    /// Whether the store supports `If-Match` updates, which SlateDB's GC boundary files need.
    pub fn supports_conditional_update(&self) -> bool {
        self.kind != StoreKind::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_form() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("plain");
        let loc = StateLocation::parse_with(plain.to_str().expect("utf-8"), &S3Options::default()).expect("plain path");
        assert_eq!(loc.kind(), StoreKind::Local);
        assert!(plain.is_dir(), "the folder is created");
        let canonical = plain.canonicalize().expect("canonical");
        assert_eq!(format!("/{}", loc.root()), canonical.to_str().expect("utf-8"), "local roots are absolute");

        let url = format!("file://{}", dir.path().join("url").display());
        let other = StateLocation::parse_with(&url, &S3Options::default()).expect("file url");
        assert_eq!(other.kind(), StoreKind::Local);
        assert!(loc.shares_store_with(&other), "local folders are one file system");

        let s3 = S3Options { endpoint: Some("http://127.0.0.1:1".into()), ..S3Options::default() };
        let loc = StateLocation::parse_with("s3://bucket/some/prefix/", &s3).expect("s3 url");
        assert_eq!(loc.kind(), StoreKind::S3);
        assert_eq!(loc.root().as_ref(), "some/prefix");
        assert!(!loc.shares_store_with(&other));
        assert!(loc.shares_store_with(&StateLocation::parse_with("s3://bucket/elsewhere", &s3).expect("same bucket")));
        assert!(!loc.shares_store_with(&StateLocation::parse_with("s3://other/some/prefix", &s3).expect("other")));

        let loc = StateLocation::parse_with("memory://jobs", &S3Options::default()).expect("memory");
        assert_eq!(loc.child(&["j", "state"]).as_ref(), "jobs/j/state");
        assert!(loc.shares_store_with(&loc.map_store(|s| s)));
        assert!(!loc.shares_store_with(&StateLocation::parse_with("memory://jobs", &S3Options::default()).expect("m")));
    }

    #[test]
    fn bad_locations_are_named_in_the_error() {
        for bad in ["", "s3://", "hdfs://namenode/x", "file://relative/path"] {
            let err = StateLocation::parse_with(bad, &S3Options::default()).expect_err(bad);
            assert!(matches!(&err, StateError::InvalidLocation { location, .. } if location == bad), "{err}");
        }
    }

    #[test]
    fn env_lookup_prefers_the_s3_specific_endpoint() {
        let opts = S3Options::from_lookup(|name| match name {
            "AWS_ENDPOINT_URL" => Some("http://generic".into()),
            "AWS_ENDPOINT_URL_S3" => Some("http://s3-specific".into()),
            "AWS_DEFAULT_REGION" => Some("eu-west-1".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
            _ => None,
        });
        assert_eq!(opts.endpoint.as_deref(), Some("http://s3-specific"));
        assert_eq!(opts.region.as_deref(), Some("eu-west-1"));
        assert!(!format!("{opts:?}").contains("secret\""), "secrets are redacted");
    }
}
