//! The S3 transport: a repository kept as plain objects in an S3-compatible store, with no mlv
//! server. Packs are immutable objects named by their hash; refs are small objects moved by
//! conditional PUTs (`If-None-Match: *` to create, `If-Match: <etag>` to replace), which is
//! what makes a ref update a compare-and-swap. Key layout in docs/PROTOCOL.md, `## S3`.

mod packs;
mod refs;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, GetOptions, GetRange, GetResult, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::{Remote, TransportError};
use crate::config::RemoteConfig;
pub use packs::S3Packs;
pub use refs::S3Refs;

/// The marker object that makes a prefix a repository.
pub const MARKER: &str = "mlv-repo.json";
/// The repository format the marker names.
pub const REPO_FORMAT: u32 = 1;
/// Refs, HEAD and the marker are tiny; anything larger under those keys is not ours.
const MAX_SMALL: u64 = 4096;

/// Opens the repository at `s3://bucket/prefix`, with endpoint and credentials from the
/// `AWS_*` environment variables, overridden by the remote's config section.
pub fn open(url: &str, bucket: &str, prefix: &str, settings: &RemoteConfig) -> Result<Remote, TransportError> {
    // `vars()` would panic on a variable that is not Unicode; such a one is not ours anyway.
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    open_with_env(url, bucket, prefix, settings, env)
}

/// Like [`open`], with the `AWS_*` variables given rather than read from this process's
/// environment (tests open repositories in process without changing their environment).
pub fn open_with_env(
    url: &str,
    bucket: &str,
    prefix: &str,
    settings: &RemoteConfig,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Remote, TransportError> {
    let bucket = Arc::new(Bucket::connect(url, bucket, prefix, settings, env)?);
    bucket.check_repository()?;
    Ok(Remote {
        url: url.to_string(),
        packs: Arc::new(S3Packs::new(bucket.clone())),
        refs: Box::new(S3Refs::new(bucket)),
        work_tree: false,
    })
}

/// Why a request failed, sorted by what the caller does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// The key does not exist.
    NotFound,
    /// The bucket does not exist.
    NoBucket,
    /// A conditional write lost: the key exists (create) or changed (update).
    Lost,
    /// The server refused the credentials.
    Denied,
    /// No answer: connection refused, DNS, timeout.
    Unreachable,
    /// Anything else the server or client reported.
    Other,
}

/// A failed request on one key.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    /// `s3://bucket/key`.
    key: String,
    detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::NotFound => write!(f, "{}: no such key", self.key),
            FailureKind::NoBucket => write!(f, "{}: the bucket does not exist", self.key),
            FailureKind::Denied => write!(
                f,
                "{}: access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) \
                 ({})",
                self.key, self.detail
            ),
            _ => write!(f, "{}: {}", self.key, self.detail),
        }
    }
}

impl Failure {
    fn new(key: String, e: object_store::Error) -> Failure {
        let text = e.to_string();
        // Listing and multipart errors reach us as generic ones: the S3 error code in the
        // body (standard across S3-compatible servers) says what happened.
        let code = s3_error(&text);
        let kind = match (&e, code.map(|c| c.0)) {
            (_, Some("NoSuchBucket")) => FailureKind::NoBucket,
            (object_store::Error::NotFound { .. }, _) | (_, Some("NoSuchKey")) => FailureKind::NotFound,
            (
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotModified { .. },
                _,
            )
            | (_, Some("PreconditionFailed")) => FailureKind::Lost,
            (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }, _)
            | (
                _,
                Some("AccessDenied" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "ExpiredToken" | "InvalidToken"),
            ) => FailureKind::Denied,
            (e, _) if unreachable(e) => FailureKind::Unreachable,
            _ => FailureKind::Other,
        };
        let detail = match code {
            Some((code, message)) => format!("{code}: {message}"),
            None => text,
        };
        Failure { kind, key, detail }
    }

    fn other(key: String, detail: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Other, key, detail: detail.into() }
    }
}

/// The `<Code>` and `<Message>` of an S3 error body quoted in an error's text.
fn s3_error(text: &str) -> Option<(&str, &str)> {
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&format!("</{name}>"))?;
        Some(&text[start..start + len])
    };
    Some((element("Code")?, element("Message").unwrap_or("")))
}

impl From<Failure> for crate::store::StoreError {
    fn from(f: Failure) -> Self {
        crate::store::StoreError::Backend(f.to_string())
    }
}

impl From<Failure> for crate::refs::RefError {
    fn from(f: Failure) -> Self {
        crate::refs::RefError::Backend(f.to_string())
    }
}

/// True if the request got no HTTP answer at all.
fn unreachable(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            return matches!(h.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout);
        }
        source = s.source();
    }
    false
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Put {
    /// Written.
    Done,
    /// Its condition did not hold; nothing was written.
    Lost,
}

/// A small object with the version it was read at.
#[derive(Debug, Clone)]
struct Versioned {
    bytes: Bytes,
    e_tag: String,
}

/// One repository in a bucket: the client, the key prefix, and whether the marker is there.
pub(crate) struct Bucket {
    store: AmazonS3,
    url: String,
    bucket: String,
    prefix: String,
    endpoint: String,
    marked: AtomicBool,
}

impl Bucket {
    /// Builds the client: `AWS_*` variables from `env`, then the settings of the remote's
    /// config section, path-style requests, conditional PUTs by ETag, bounded timeouts.
    fn connect(
        url: &str,
        bucket: &str,
        prefix: &str,
        settings: &RemoteConfig,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Bucket, TransportError> {
        let failed = |what: String| TransportError::Failed { url: url.to_string(), what };
        if !prefix.is_empty() && Path::parse(prefix).map_or(true, |p| p.as_ref() != prefix) {
            return Err(TransportError::BadUrl(url.to_string()));
        }
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            // A part or a ranged read is at most a few tens of MiB: five minutes allows a slow
            // link, and a stalled response ends after a minute without bytes.
            .with_timeout(Duration::from_secs(300))
            .with_read_timeout(Duration::from_secs(60));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 4,
            retry_timeout: Duration::from_secs(120),
        };
        let mut builder = AmazonS3Builder::new().with_client_options(client);
        let mut endpoint_url = None;
        let mut region = None;
        for (key, value) in env {
            match key.as_str() {
                "AWS_ENDPOINT_URL" => endpoint_url = Some(value.clone()),
                "AWS_REGION" => region = Some(value.clone()),
                "AWS_DEFAULT_REGION" => region = region.or(Some(value.clone())),
                _ => {}
            }
            if key.starts_with("AWS_")
                && let Ok(k) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(k, value);
            }
        }
        // AWS_ENDPOINT_URL wins over the older AWS_ENDPOINT; the config section over both.
        if let Some(e) = settings.endpoint.clone().or(endpoint_url) {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = settings.region.clone().or(region) {
            builder = builder.with_region(r);
        }
        if settings.allow_http {
            builder = builder.with_allow_http(true);
        }
        let allow_http = builder.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint).unwrap_or_else(|| {
            let region = builder.get_config_value(&AmazonS3ConfigKey::Region);
            format!("https://s3.{}.amazonaws.com", region.as_deref().unwrap_or("us-east-1"))
        });
        let truthy = |v: String| ["1", "true", "on", "yes", "y"].contains(&v.to_ascii_lowercase().as_str());
        if endpoint.starts_with("http://") && !allow_http.is_some_and(truthy) {
            return Err(failed(format!(
                "the endpoint {endpoint} is plain http: set AWS_ALLOW_HTTP=true (or `allow_http = true` in the \
                 remote's config) to allow it"
            )));
        }
        let store = builder
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .build()
            .map_err(|e| failed(format!("cannot configure the S3 client: {e}")))?;
        Ok(Bucket {
            store,
            url: url.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint,
            marked: AtomicBool::new(false),
        })
    }

    /// The object key of `rel` (`refs/heads/main`, `packs/...`) under the prefix.
    fn path(&self, rel: &str) -> Path {
        Path::from(key(&self.prefix, rel))
    }

    /// `s3://bucket/prefix/rel`, for messages.
    fn show(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, key(&self.prefix, rel))
    }

    /// `rel` of a key listed under the prefix.
    fn relative<'a>(&self, location: &'a Path) -> Option<&'a str> {
        let key = location.as_ref();
        if self.prefix.is_empty() { Some(key) } else { key.strip_prefix(&self.prefix)?.strip_prefix('/') }
    }

    fn fail(&self, rel: &str) -> impl FnOnce(object_store::Error) -> Failure {
        let key = self.show(rel);
        move |e| Failure::new(key, e)
    }

    /// Checks that the prefix is an mlv repository, or nothing yet: the first request, so it
    /// is also where bad credentials and a wrong endpoint show.
    fn check_repository(&self) -> Result<(), TransportError> {
        let url = self.url.clone();
        let to_transport = |f: Failure| match f.kind {
            FailureKind::Denied => TransportError::Unauthorized {
                url: url.clone(),
                what: format!(
                    "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) ({})",
                    f.detail
                ),
            },
            FailureKind::Unreachable => TransportError::Failed {
                url: url.clone(),
                what: format!(
                    "cannot reach the S3 endpoint {} (set AWS_ENDPOINT_URL, or `endpoint` in the remote's config): {}",
                    self.endpoint, f.detail
                ),
            },
            FailureKind::NotFound | FailureKind::NoBucket => TransportError::Failed {
                url: url.clone(),
                what: format!("bucket {:?} does not exist at {} (create it first)", self.bucket, self.endpoint),
            },
            _ => TransportError::Failed { url: url.clone(), what: f.detail },
        };
        let state = super::runtime::block_on(async {
            let top = self.prefix_path();
            let listing =
                self.store.list_with_delimiter(top.as_ref()).await.map_err(|e| Failure::new(self.show(""), e))?;
            let names: Vec<&str> = listing
                .objects
                .iter()
                .map(|o| &o.location)
                .chain(&listing.common_prefixes)
                .filter_map(|p| self.relative(p))
                .collect();
            if names.contains(&MARKER) {
                let text = self.get_small(MARKER).await?.map(|v| v.bytes).unwrap_or_default();
                check_marker(&text).map_err(|what| Failure::other(self.show(MARKER), what))?;
                self.marked.store(true, Ordering::Release);
                Ok(true)
            } else {
                // Nothing yet is an empty repository; an unmarked one is somebody else's data.
                Ok(!names.iter().any(|n| ["packs", "refs", "HEAD"].contains(n)))
            }
        });
        match state.map_err(to_transport)? {
            true => Ok(()),
            false => Err(TransportError::NotARepository(self.url.clone())),
        }
    }

    /// The prefix as a listing root (None: the whole bucket).
    fn prefix_path(&self) -> Option<Path> {
        (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()))
    }

    /// Writes the marker if this prefix does not have it yet: the first write of a push.
    async fn mark(&self) -> Result<(), Failure> {
        if self.marked.load(Ordering::Acquire) {
            return Ok(());
        }
        let text = format!("{{\"format\":{REPO_FORMAT}}}\n");
        self.put(MARKER, Bytes::from(text), PutMode::Create).await?;
        self.marked.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads a small object whole, with its ETag; None if it does not exist.
    async fn get_small(&self, rel: &str) -> Result<Option<Versioned>, Failure> {
        let result = match self.store.get_opts(&self.path(rel), GetOptions::default()).await {
            Ok(r) => r,
            Err(e) => {
                let f = Failure::new(self.show(rel), e);
                return if f.kind == FailureKind::NotFound { Ok(None) } else { Err(f) };
            }
        };
        let e_tag = result.meta.e_tag.clone().ok_or_else(|| {
            Failure::other(self.show(rel), "the server sent no ETag, so refs cannot be updated safely")
        })?;
        let bytes = self.collect(rel, result, MAX_SMALL).await?;
        Ok(Some(Versioned { bytes, e_tag }))
    }

    /// Reads a whole object of at most `max` bytes.
    async fn get_whole(&self, rel: &str, max: u64) -> Result<Bytes, Failure> {
        let result = self.store.get_opts(&self.path(rel), GetOptions::default()).await.map_err(self.fail(rel))?;
        self.collect(rel, result, max).await
    }

    /// Reads bytes `range` of an object; exactly that many, or an error.
    async fn get_range(&self, rel: &str, range: Range<u64>) -> Result<GetResult, Failure> {
        let want = range.end - range.start;
        let opts = GetOptions { range: Some(GetRange::Bounded(range.clone())), ..GetOptions::default() };
        let result = self.store.get_opts(&self.path(rel), opts).await.map_err(self.fail(rel))?;
        if result.range != range {
            let what = format!(
                "asked for bytes {}..{}, the server sent {}..{} ({want} bytes wanted)",
                range.start, range.end, result.range.start, result.range.end
            );
            return Err(Failure::other(self.show(rel), what));
        }
        Ok(result)
    }

    /// A body into memory, refusing more than `max` bytes.
    async fn collect(&self, rel: &str, result: GetResult, max: u64) -> Result<Bytes, Failure> {
        let size = result.range.end - result.range.start;
        if size > max {
            return Err(Failure::other(self.show(rel), format!("{size} bytes, more than the {max} expected")));
        }
        let mut out = Vec::with_capacity(size as usize);
        let mut body = result.into_stream();
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(self.fail(rel))?;
            if (out.len() + piece.len()) as u64 > size {
                return Err(Failure::other(self.show(rel), "the server sent more bytes than it announced"));
            }
            out.extend_from_slice(&piece);
        }
        if out.len() as u64 != size {
            let what = format!("the body ended after {} of {size} bytes", out.len());
            return Err(Failure::other(self.show(rel), what));
        }
        Ok(Bytes::from(out))
    }

    /// Size of an object, None if it does not exist.
    async fn size(&self, rel: &str) -> Result<Option<u64>, Failure> {
        match self.store.head(&self.path(rel)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) => {
                let f = Failure::new(self.show(rel), e);
                if f.kind == FailureKind::NotFound { Ok(None) } else { Err(f) }
            }
        }
    }

    /// One PUT, conditional or not. A lost condition is an answer, not an error.
    async fn put(&self, rel: &str, bytes: Bytes, mode: PutMode) -> Result<Put, Failure> {
        let opts = PutOptions { mode, ..PutOptions::default() };
        match self.store.put_opts(&self.path(rel), PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(Put::Done),
            Err(e) => {
                let f = Failure::new(self.show(rel), e);
                if f.kind == FailureKind::Lost { Ok(Put::Lost) } else { Err(f) }
            }
        }
    }

    /// Deletes an object; one that is not there is not an error.
    async fn delete(&self, rel: &str) -> Result<(), Failure> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let f = Failure::new(self.show(rel), e);
                if f.kind == FailureKind::NotFound { Ok(()) } else { Err(f) }
            }
        }
    }

    /// Every object under the directory `rel` (`packs`, `refs/heads`), recursively.
    async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>, Failure> {
        let dir = self.path(rel);
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&dir));
        while let Some(meta) = listing.next().await {
            out.push(meta.map_err(self.fail(rel))?);
        }
        Ok(out)
    }
}

/// `prefix/rel`, or `rel` with no prefix.
fn key(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{rel}"),
    }
}

/// Checks the marker's text: `{"format":1}`.
fn check_marker(text: &[u8]) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Marker {
        format: u32,
    }
    let marker: Marker =
        serde_json::from_slice(text).map_err(|e| format!("not an mlv repository marker ({e}): remove it or fix it"))?;
    if marker.format != REPO_FORMAT {
        return Err(format!(
            "repository format {} is not supported (this mlv reads {REPO_FORMAT}): upgrade mlv",
            marker.format
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_prefix() {
        assert_eq!(key("team/llama", "refs/heads/main"), "team/llama/refs/heads/main");
        assert_eq!(key("", "refs/heads/main"), "refs/heads/main");
        assert_eq!(key("team", ""), "team");
    }

    #[test]
    fn s3_error_codes_are_read_from_bodies() {
        let text = "Generic S3 error: Error performing GET http://h/b in 1ms - Server returned non-2xx status \
                    code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(
            s3_error(text),
            Some(("SignatureDoesNotMatch", "The request signature we calculated does not match"))
        );
        assert_eq!(s3_error("<Code>NoSuchBucket</Code>"), Some(("NoSuchBucket", "")));
        assert_eq!(s3_error("connection refused"), None);
        assert_eq!(s3_error("<Code>unterminated"), None);
    }

    #[test]
    fn markers_name_a_format_this_build_reads() {
        assert!(check_marker(b"{\"format\":1}\n").is_ok());
        assert!(check_marker(b"{\"format\":2}").unwrap_err().contains("format 2"));
        assert!(check_marker(b"garbage").is_err());
        assert!(check_marker(b"").is_err());
    }
}
