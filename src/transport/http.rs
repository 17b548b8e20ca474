//! The HTTP transport: a client for `mlv serve` (docs/PROTOCOL.md, section "HTTP").
//!
//! The remote's packs and refs sit behind the same [`PackStore`] and [`RefStore`] as a local
//! repository's: each call is one or a few HTTP requests, driven on the shared runtime. Reads
//! and pack uploads are retried on network errors and 5xx replies (a pack is named by its
//! content, so sending it again is harmless); ref updates are compare-and-swap, so a retry
//! whose first attempt did land is recognised rather than reported as a conflict. A transfer
//! that makes no progress for a minute ends with an error rather than hanging.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::runtime::block_on;
use super::wire::{DoomedList, ErrorBody, Info, Mark, PackList, RefList, RefUpdate, VERSION};
use super::{Remote, TransportError};
use crate::config::RemoteConfig;
use crate::object::ObjectId;
use crate::pack::{PackError, PackIndex, PackName, SealedPack};
use crate::refs::{Head, RefError, RefStore, check_name};
use crate::store::{Doomed, PackInfo, PackStore, StoreError};

/// The environment variable holding the bearer token (it wins over `token` in the config).
pub const TOKEN_ENV: &str = "MLV_TOKEN";
/// The environment variable that overrides [`STALL_TIMEOUT`], in seconds.
pub const TIMEOUT_ENV: &str = "MLV_HTTP_TIMEOUT";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may go without any byte moving before it is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pauses before each retry of a request that failed on the network or with a 5xx.
const BACKOFF: [Duration; 3] = [Duration::from_millis(200), Duration::from_millis(800), Duration::from_secs(2)];
/// Largest JSON reply read (a ref or pack list).
const MAX_JSON_REPLY: usize = 256 << 20;
/// Largest error reply read.
const MAX_ERROR_REPLY: usize = 64 << 10;
/// Largest pack index read: 16 million objects.
const MAX_INDEX: usize = 1 << 30;
/// Reads up to this size are cached: the entries of commits, trees and tensor files, which
/// walking the remote's history reads again and again.
const SMALL_READ: u64 = 1 << 20;
/// Bytes the small-read cache holds at most.
const SMALL_READS_TOTAL: usize = 8 << 20;
/// What a refused token should do next.
const TOKEN_HINT: &str = "set MLV_TOKEN, or `token` in [remote.<name>] of .mlv/config";

/// Opens the repository served at `url` (no trailing `/`).
pub fn open(url: &str, settings: &RemoteConfig) -> Result<Remote, TransportError> {
    let mut parsed = reqwest::Url::parse(url).map_err(|_| TransportError::BadUrl(url.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Named without its credentials: messages must not show them.
        let _ = (parsed.set_username(""), parsed.set_password(None));
        let what = format!("a token does not go in the URL: {TOKEN_HINT}");
        return Err(TransportError::Failed { url: parsed.to_string(), what });
    }
    let failed = |what: String| TransportError::Failed { url: url.to_string(), what };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(TransportError::BadUrl(url.to_string()));
    }
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()).or_else(|| settings.token.clone());
    let client = Arc::new(Client::new(url, token.as_deref()).map_err(failed)?);
    let info: Info = block_on(client.get_json("info")).map_err(|f| match &f {
        Failure::Status { status, .. } if *status == StatusCode::NOT_FOUND => {
            TransportError::NotARepository(url.to_string())
        }
        Failure::Status { status, .. } if matches!(status.as_u16(), 401 | 403) => {
            TransportError::Unauthorized { url: url.to_string(), what: f.to_string() }
        }
        _ => failed(f.to_string()),
    })?;
    if info.protocol != VERSION {
        return Err(failed(format!("the server speaks protocol {}, this mlv speaks {VERSION}", info.protocol)));
    }
    Ok(Remote {
        url: url.to_string(),
        packs: Arc::new(HttpPacks(client.clone())),
        refs: Box::new(HttpRefs(client)),
        work_tree: info.exists && !info.bare,
    })
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// The server replied with an error status.
    Status {
        /// The status.
        status: StatusCode,
        /// The server's message.
        message: String,
        /// In a 409 to a ref update: what the ref holds.
        found: Option<Option<ObjectId>>,
    },
    /// The connection could not be made, or broke.
    Network(String),
    /// Nothing moved for the stall timeout.
    Stalled(Duration),
    /// The reply is not what the protocol says.
    Protocol(String),
    /// Writing what arrived failed here.
    Local(std::io::Error),
}

impl Failure {
    /// Worth another try: the network or the server had a problem, not the request.
    fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => status.is_server_error(),
            Failure::Network(_) | Failure::Stalled(_) => true,
            Failure::Protocol(_) | Failure::Local(_) => false,
        }
    }

    fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A network failure, described by its causes (the URL is named by the caller).
    fn network(e: reqwest::Error) -> Failure {
        let connect = e.is_connect();
        let e = e.without_url();
        let mut text = if connect { "cannot connect to the server".to_string() } else { e.to_string() };
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let t = c.to_string();
            if !text.contains(&t) && !t.starts_with("client error") {
                text = format!("{text}: {t}");
            }
            cause = c.source();
        }
        Failure::Network(text)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { status, message, .. } if *status == StatusCode::UNAUTHORIZED => {
                write!(f, "HTTP {status}: {message}; {TOKEN_HINT}")
            }
            Failure::Status { status, message, .. } if *status == StatusCode::FORBIDDEN => {
                write!(f, "HTTP {status}: {message}; use a token that allows it ({TOKEN_HINT})")
            }
            Failure::Status { status, message, .. } => write!(f, "HTTP {status}: {message}"),
            Failure::Network(e) => write!(f, "{e}"),
            Failure::Stalled(t) => write!(f, "no progress for {} s: the transfer stalled", t.as_secs()),
            Failure::Protocol(e) => write!(f, "unexpected reply: {e}"),
            Failure::Local(e) => write!(f, "{e}"),
        }
    }
}

/// When bytes last moved, for requests whose length has no bound in time (uploads).
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity { start: Instant::now(), last_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Completes once nothing moved for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// The connection to one served repository.
struct Client {
    http: reqwest::Client,
    /// The repository's URL, for messages (it never holds the token).
    url: String,
    /// `{url}/mlv/v1`.
    api: String,
    auth: Option<HeaderValue>,
    stall: Duration,
    reads: SmallReads,
}

impl Client {
    fn new(url: &str, token: Option<&str>) -> Result<Client, String> {
        let auth = match token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the token holds characters an HTTP header cannot carry".to_string())?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect is a misconfigured URL to fix, not a reason to send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mlv/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::network(e).to_string())?;
        let stall = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map_or(STALL_TIMEOUT, Duration::from_secs);
        Ok(Client {
            http,
            url: url.to_string(),
            api: format!("{url}/{}", super::wire::API),
            auth,
            stall,
            reads: SmallReads::default(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}/{path}", self.api));
        match &self.auth {
            Some(v) => rb.header(header::AUTHORIZATION, v.clone()),
            None => rb,
        }
    }

    /// Sends one request; a reply with an error status becomes a [`Failure::Status`]. With
    /// `activity`, the request may take as long as it keeps moving bytes; without, its reply
    /// must start within the stall timeout.
    async fn send(&self, rb: RequestBuilder, activity: Option<&Activity>) -> Result<Response, Failure> {
        let sent = match activity {
            Some(act) => {
                act.touch();
                tokio::select! {
                    r = rb.send() => r,
                    () = act.stalled(self.stall) => return Err(Failure::Stalled(self.stall)),
                }
            }
            None => match tokio::time::timeout(self.stall, rb.send()).await {
                Ok(r) => r,
                Err(_) => return Err(Failure::Stalled(self.stall)),
            },
        };
        let resp = sent.map_err(Failure::network)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_of(resp).await)
    }

    /// The failure an error reply describes.
    async fn error_of(&self, resp: Response) -> Failure {
        let status = resp.status();
        let body = self.read_body(resp, MAX_ERROR_REPLY).await.unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Failure::Status { status, message: e.error, found: e.found },
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(300).collect();
                let message = if text.is_empty() { status.canonical_reason().unwrap_or("").to_string() } else { text };
                Failure::Status { status, message, found: None }
            }
        }
    }

    /// The next piece of a reply's body, waiting at most the stall timeout.
    async fn next_chunk(&self, resp: &mut Response) -> Result<Option<Bytes>, Failure> {
        match tokio::time::timeout(self.stall, resp.chunk()).await {
            Ok(r) => r.map_err(Failure::network),
            Err(_) => Err(Failure::Stalled(self.stall)),
        }
    }

    /// A whole reply body of at most `max` bytes.
    async fn read_body(&self, mut resp: Response, max: usize) -> Result<Vec<u8>, Failure> {
        let too_long = || Failure::Protocol(format!("the reply is longer than {max} bytes"));
        let declared = resp.content_length().unwrap_or(0);
        if declared > max as u64 {
            return Err(too_long());
        }
        let mut out = Vec::with_capacity(declared as usize);
        while let Some(chunk) = self.next_chunk(&mut resp).await? {
            if out.len() + chunk.len() > max {
                return Err(too_long());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(f) if f.retryable() && tries < BACKOFF.len() => {
                    tokio::time::sleep(BACKOFF[tries]).await;
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    /// GETs `path` and reads its whole body, at most `max` bytes.
    async fn get_bytes(&self, path: &str, max: usize) -> Result<Vec<u8>, Failure> {
        self.retrying(|| async {
            let resp = self.send(self.request(Method::GET, path), None).await?;
            self.read_body(resp, max).await
        })
        .await
    }

    /// GETs `path` and parses its JSON.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let body = self.get_bytes(path, MAX_JSON_REPLY).await?;
        serde_json::from_slice(&body).map_err(|e| Failure::Protocol(format!("{path}: {e}")))
    }

    fn pack_path(pack: &PackName, ext: &str) -> String {
        format!("packs/{}.{ext}", pack.stem())
    }

    /// A GET of bytes `start..end` of a pack, checked to be that range.
    async fn get_range(&self, pack: &PackName, start: u64, end: u64) -> Result<Response, Failure> {
        let rb = self
            .request(Method::GET, &Client::pack_path(pack, "pack"))
            .header(header::RANGE, format!("bytes={start}-{}", end - 1));
        let resp = self.send(rb, None).await?;
        let range = resp.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let wanted = format!("bytes {start}-{}/", end - 1);
        if resp.status() != StatusCode::PARTIAL_CONTENT || !range.starts_with(&wanted) {
            return Err(Failure::Protocol(format!(
                "asked for bytes {start}..{end} of {pack}, got HTTP {} with range {range:?}",
                resp.status()
            )));
        }
        Ok(resp)
    }

    /// Streams bytes `start..end` of a pack into `out`. A reply that breaks off is resumed
    /// where it stopped; retries are counted only when no byte arrived in between.
    async fn copy_range(&self, pack: &PackName, start: u64, end: u64, out: &mut dyn Write) -> Result<(), Failure> {
        let mut pos = start;
        let mut tries = 0;
        while pos < end {
            let before = pos;
            let result = async {
                let mut resp = self.get_range(pack, pos, end).await?;
                while let Some(chunk) = self.next_chunk(&mut resp).await? {
                    if pos + chunk.len() as u64 > end {
                        return Err(Failure::Protocol(format!("more bytes of {pack} than asked for")));
                    }
                    out.write_all(&chunk).map_err(Failure::Local)?;
                    pos += chunk.len() as u64;
                }
                if pos < end {
                    return Err(Failure::Network(format!("the reply ended {} bytes early", end - pos)));
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => {}
                Err(f) if f.retryable() && (pos > before || tries < BACKOFF.len()) => {
                    if pos > before {
                        tries = 0;
                    }
                    tokio::time::sleep(BACKOFF[tries.min(BACKOFF.len() - 1)]).await;
                    tries += 1;
                }
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }

    /// PUTs a sealed pack, streamed from its file.
    async fn upload(&self, pack: &SealedPack) -> Result<(), Failure> {
        let path = Client::pack_path(&pack.name, "pack");
        self.retrying(|| async {
            let file = tokio::fs::File::open(&pack.file).await.map_err(Failure::Local)?;
            let activity = Activity::new();
            let moving = activity.clone();
            let body = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).inspect(move |_| moving.touch());
            let rb = self
                .request(Method::PUT, &path)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, pack.len)
                .body(reqwest::Body::wrap_stream(body));
            self.send(rb, Some(&activity)).await.map(drop)
        })
        .await
    }

    /// POSTs one ref update. A conflict whose ref already holds the new value is this very
    /// update, made by an attempt whose reply was lost.
    async fn update_ref(&self, update: &RefUpdate) -> Result<(), Failure> {
        let body = serde_json::to_vec(update).map_err(|e| Failure::Protocol(e.to_string()))?;
        let result = self
            .retrying(|| async {
                let rb = self
                    .request(Method::POST, "refs")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                self.send(rb, None).await.map(drop)
            })
            .await;
        match result {
            Err(Failure::Status { status: StatusCode::CONFLICT, found: Some(found), .. }) if found == update.new => {
                Ok(())
            }
            other => other,
        }
    }

    /// DELETEs a pack file (or its mark); one that is not there is not an error.
    fn delete(&self, pack: &PackName, ext: &str) -> Result<(), Failure> {
        let path = Client::pack_path(pack, ext);
        match block_on(self.retrying(|| self.send(self.request(Method::DELETE, &path), None))) {
            Err(f) if f.status() == Some(StatusCode::NOT_FOUND) => Ok(()),
            other => other.map(drop),
        }
    }

    /// A pack name the server listed.
    fn pack_named(&self, stem: &str) -> Result<PackName, StoreError> {
        PackName::from_stem(stem)
            .ok_or_else(|| StoreError::Backend(format!("{}: the server listed {stem:?}, not a pack name", self.url)))
    }

    fn store_error(&self, doing: &str, f: Failure) -> StoreError {
        match f {
            Failure::Local(e) => StoreError::Io(e),
            f => StoreError::Backend(format!("{}: {doing}: {f}", self.url)),
        }
    }

    fn ref_error(&self, doing: &str, f: Failure) -> RefError {
        RefError::Backend(format!("{}: {doing}: {f}", self.url))
    }

    fn refs(&self) -> Result<RefList, RefError> {
        block_on(self.get_json("refs")).map_err(|f| self.ref_error("listing refs", f))
    }
}

/// Recent small reads, by (pack, start, length), oldest dropped first.
#[derive(Default)]
struct SmallReads(Mutex<SmallReadsInner>);

type ReadKey = (PackName, u64, u64);

#[derive(Default)]
struct SmallReadsInner {
    map: HashMap<ReadKey, Bytes>,
    order: VecDeque<ReadKey>,
    bytes: usize,
}

impl SmallReads {
    fn get(&self, key: &ReadKey) -> Option<Bytes> {
        self.0.lock().ok()?.map.get(key).cloned()
    }

    fn put(&self, key: ReadKey, value: Bytes) {
        if value.len() as u64 > SMALL_READ {
            return;
        }
        let Ok(mut inner) = self.0.lock() else { return };
        if inner.map.contains_key(&key) {
            return;
        }
        while inner.bytes + value.len() > SMALL_READS_TOTAL {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(v) = inner.map.remove(&old) {
                inner.bytes -= v.len();
            }
        }
        inner.bytes += value.len();
        inner.order.push_back(key);
        inner.map.insert(key, value);
    }
}

/// The remote's packs.
struct HttpPacks(Arc<Client>);

impl PackStore for HttpPacks {
    fn describe(&self) -> String {
        self.0.url.clone()
    }

    fn list(&self) -> Result<Vec<PackInfo>, StoreError> {
        let c = &self.0;
        let list: PackList = block_on(c.get_json("packs")).map_err(|f| c.store_error("listing packs", f))?;
        list.packs.into_iter().map(|p| Ok(PackInfo { name: c.pack_named(&p.name)?, len: p.len })).collect()
    }

    fn read_index(&self, pack: &PackName) -> Result<PackIndex, StoreError> {
        let c = &self.0;
        let path = Client::pack_path(pack, "idx");
        let bytes = block_on(c.get_bytes(&path, MAX_INDEX)).map_err(|f| c.store_error("reading an index", f))?;
        let shown = Path::new(&c.api).join(&path);
        let index = PackIndex::decode(&shown, &bytes)?;
        if index.pack_hash != pack.0 {
            return Err(PackError::corrupt(&shown, "the index is of another pack").into());
        }
        Ok(index)
    }

    fn read_range(&self, pack: &PackName, start: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let c = &self.0;
        let key = (*pack, start, len);
        if let Some(hit) = c.reads.get(&key) {
            return Ok(hit);
        }
        let end =
            start.checked_add(len).ok_or_else(|| StoreError::Backend(format!("range {start}+{len} overflows")))?;
        let mut buf = Vec::with_capacity(len.min(64 << 20) as usize);
        block_on(c.copy_range(pack, start, end, &mut buf)).map_err(|f| c.store_error("reading a pack", f))?;
        let bytes = Bytes::from(buf);
        c.reads.put(key, bytes.clone());
        Ok(bytes)
    }

    fn copy_range(&self, pack: &PackName, start: u64, len: u64, out: &mut dyn Write) -> Result<(), StoreError> {
        let c = &self.0;
        let end =
            start.checked_add(len).ok_or_else(|| StoreError::Backend(format!("range {start}+{len} overflows")))?;
        block_on(c.copy_range(pack, start, end, out)).map_err(|f| c.store_error("downloading a pack", f))
    }

    fn has_pack(&self, pack: &PackName) -> Result<bool, StoreError> {
        let c = &self.0;
        let path = Client::pack_path(pack, "pack");
        let asked = block_on(c.retrying(|| c.send(c.request(Method::HEAD, &path), None)));
        match asked {
            Ok(_) => Ok(true),
            Err(f) if f.status() == Some(StatusCode::NOT_FOUND) => Ok(false),
            Err(f) => Err(c.store_error("asking for a pack", f)),
        }
    }

    fn install(&self, pack: SealedPack) -> Result<(), StoreError> {
        let c = &self.0;
        block_on(c.upload(&pack)).map_err(|f| c.store_error(&format!("sending {}", pack.name), f))
    }

    fn doomed(&self) -> Result<Vec<Doomed>, StoreError> {
        let c = &self.0;
        let list: DoomedList = block_on(c.get_json("doomed")).map_err(|f| c.store_error("listing marked packs", f))?;
        list.doomed.into_iter().map(|d| Ok(Doomed { name: c.pack_named(&d.name)?, marked: d.marked })).collect()
    }

    fn doom(&self, pack: &PackName, marked: u64) -> Result<(), StoreError> {
        let c = &self.0;
        let body = serde_json::to_vec(&Mark { marked }).map_err(|e| StoreError::Backend(e.to_string()))?;
        let path = Client::pack_path(pack, "doomed");
        let rb = || c.request(Method::PUT, &path).header(header::CONTENT_TYPE, "application/json").body(body.clone());
        block_on(c.retrying(|| c.send(rb(), None))).map_err(|f| c.store_error(&format!("marking {pack}"), f))?;
        Ok(())
    }

    fn spare(&self, pack: &PackName) -> Result<(), StoreError> {
        self.0.delete(pack, "doomed").map_err(|f| self.0.store_error(&format!("unmarking {pack}"), f))
    }

    fn delete(&self, pack: &PackName) -> Result<(), StoreError> {
        self.0.delete(pack, "pack").map_err(|f| self.0.store_error(&format!("deleting {pack}"), f))
    }
}

/// The remote's refs.
struct HttpRefs(Arc<Client>);

impl HttpRefs {
    fn cas(&self, full: &str, old: Option<ObjectId>, new: Option<ObjectId>) -> Result<(), RefError> {
        let c = &self.0;
        let update = RefUpdate { name: full.to_string(), old, new };
        match block_on(c.update_ref(&update)) {
            Ok(()) => Ok(()),
            Err(Failure::Status { status: StatusCode::CONFLICT, found, message }) => match found {
                Some(found) => Err(RefError::conflict(full, old, found)),
                None => Err(RefError::Refused(message)),
            },
            Err(Failure::Status { status, message, .. }) if matches!(status.as_u16(), 400 | 422) => {
                Err(RefError::Refused(message))
            }
            Err(f) => Err(c.ref_error(&format!("moving {full}"), f)),
        }
    }
}

impl RefStore for HttpRefs {
    fn head(&self) -> Result<Head, RefError> {
        Ok(self.0.refs()?.head.map_or_else(|| Head::Branch("main".into()), Head::from))
    }

    fn set_head(&self, _: &Head) -> Result<(), RefError> {
        Err(RefError::Refused("a remote's HEAD is not set by a push".into()))
    }

    fn read(&self, full: &str) -> Result<Option<ObjectId>, RefError> {
        Ok(self.0.refs()?.refs.get(full).copied())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
        let refs = self.0.refs()?.refs;
        Ok(refs
            .into_iter()
            .filter_map(|(name, id)| Some((name.strip_prefix(prefix)?.to_string(), id)))
            .filter(|(name, _)| check_name(name).is_ok())
            .collect())
    }

    fn update(&self, full: &str, new: ObjectId, expected: Option<ObjectId>) -> Result<(), RefError> {
        self.cas(full, expected, Some(new))
    }

    fn delete(&self, full: &str, expected: ObjectId) -> Result<(), RefError> {
        self.cas(full, Some(expected), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_read_cache_keeps_recent_reads_within_its_budget() {
        let cache = SmallReads::default();
        let pack = PackName([1; 32]);
        let piece = Bytes::from(vec![7u8; 1 << 20]);
        for i in 0..12 {
            cache.put((pack, i, 1 << 20), piece.clone());
        }
        assert!(cache.get(&(pack, 0, 1 << 20)).is_none(), "the oldest were dropped");
        assert!(cache.get(&(pack, 11, 1 << 20)).is_some());
        let inner = cache.0.lock().unwrap();
        assert!(inner.bytes <= SMALL_READS_TOTAL && inner.map.len() == inner.order.len());
        drop(inner);
        cache.put((pack, 99, 2 << 20), Bytes::from(vec![0u8; 2 << 20]));
        assert!(cache.get(&(pack, 99, 2 << 20)).is_none(), "large reads are not cached");
    }

    #[test]
    fn only_network_trouble_and_server_errors_are_retried() {
        let status =
            |s: u16| Failure::Status { status: StatusCode::from_u16(s).unwrap(), message: String::new(), found: None };
        assert!(status(503).retryable() && status(500).retryable());
        assert!(!status(404).retryable() && !status(409).retryable() && !status(422).retryable());
        assert!(Failure::Network("reset".into()).retryable());
        assert!(!Failure::Protocol("junk".into()).retryable());
    }

    #[test]
    fn refused_tokens_say_what_to_do() {
        let f = Failure::Status { status: StatusCode::UNAUTHORIZED, message: "needs a token".into(), found: None };
        assert!(f.to_string().contains("MLV_TOKEN"));
    }

    #[test]
    fn tokens_stay_out_of_urls() {
        let url = "http://user:secret@127.0.0.1:1/x";
        let err = open(url, &RemoteConfig::default()).err().unwrap();
        assert!(err.to_string().contains("MLV_TOKEN") && !err.to_string().contains("secret"), "{err}");
    }

    /// A bare repository with two commits (the second a child of the first), served by an
    /// in-process `mlv serve` until the returned sender is dropped.
    fn served_repo() -> (tempfile::TempDir, String, [ObjectId; 2], tokio::sync::oneshot::Sender<()>) {
        use crate::object::{Commit, ObjectKind, Signature, Tree};
        let tmp = tempfile::tempdir().unwrap();
        let repo = crate::Repository::init_bare(&tmp.path().join("r")).unwrap();
        let mut w = repo.writer().unwrap();
        let tree = w.put(ObjectKind::Tree, &Tree { entries: vec![] }.encode()).unwrap();
        let who = Signature { name: "t".into(), email: "t@x".into(), time: 0, tz_minutes: 0 };
        let commit = |parents: Vec<ObjectId>, message: &str| Commit {
            tree,
            parents,
            author: who.clone(),
            committer: who.clone(),
            git: None,
            message: message.into(),
        };
        let one = w.put(ObjectKind::Commit, &commit(vec![], "one\n").encode()).unwrap();
        let two = w.put(ObjectKind::Commit, &commit(vec![one], "two\n").encode()).unwrap();
        w.finish().unwrap();
        repo.refs.update("refs/heads/main", one, None).unwrap();
        let opts = crate::serve::Options {
            dir: tmp.path().to_path_buf(),
            auth: crate::serve::Auth::open(),
            allow_create: false,
            max_pack_bytes: 1 << 30,
            log: Arc::new(|_: &str| {}),
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = rt.block_on(crate::serve::Server::bind("127.0.0.1:0".parse().unwrap(), opts)).unwrap();
        let url = format!("http://{}/r", server.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            rt.block_on(server.run(async {
                let _ = stopped.await;
            }))
        });
        (tmp, url, [one, two], stop)
    }

    #[test]
    fn a_ref_update_repeated_after_a_lost_reply_is_not_a_conflict() {
        let (_tmp, url, [one, two], _stop) = served_repo();
        let remote = open(&url, &RemoteConfig::default()).unwrap();
        remote.refs.update("refs/heads/main", two, Some(one)).unwrap();
        // The same update again, as a retry whose first reply was lost sends it.
        remote.refs.update("refs/heads/main", two, Some(one)).unwrap();
        let err = remote.refs.update("refs/heads/main", one, None).unwrap_err();
        assert!(matches!(err, RefError::Conflict { .. }), "{err}");
        remote.refs.update("refs/heads/gone", one, None).unwrap();
        remote.refs.delete("refs/heads/gone", one).unwrap();
        remote.refs.delete("refs/heads/gone", one).unwrap();
        assert_eq!(remote.refs.list("refs/heads/").unwrap(), vec![("main".to_string(), two)]);
        assert_eq!(remote.refs.head().unwrap(), Head::Branch("main".into()));
        assert!(matches!(remote.refs.set_head(&Head::Detached(one)), Err(RefError::Refused(_))));
    }

    #[test]
    fn pack_reads_are_exact_and_objects_decode_from_them() {
        let (_tmp, url, _, _stop) = served_repo();
        let remote = open(&url, &RemoteConfig::default()).unwrap();
        let packs = remote.packs.list().unwrap();
        let pack = packs[0];
        let index = remote.packs.read_index(&pack.name).unwrap();
        assert_eq!(index.records.len(), 3);
        assert!(remote.packs.has_pack(&pack.name).unwrap());
        assert!(!remote.packs.has_pack(&PackName([9; 32])).unwrap());
        let head = remote.packs.read_range(&pack.name, 0, 8).unwrap();
        assert_eq!(&head[..], crate::pack::PACK_MAGIC);
        let mut all = Vec::new();
        remote.packs.copy_range(&pack.name, 0, pack.len, &mut all).unwrap();
        assert_eq!(all.len() as u64, pack.len);
        assert_eq!(&all[all.len() - 32..], &pack.name.0);
        assert!(remote.packs.read_range(&pack.name, pack.len - 4, 8).is_err(), "past the end");
        let odb = crate::store::Odb::open(remote.packs.clone()).unwrap();
        let commits = index.records.iter().filter(|r| r.kind == crate::object::ObjectKind::Commit);
        let mut parents: Vec<usize> = commits.map(|r| odb.commit(&r.id).unwrap().parents.len()).collect();
        parents.sort();
        assert_eq!(parents, vec![0, 1], "commits decode from the remote's packs");
    }
}
