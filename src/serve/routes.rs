//! The endpoints (docs/PROTOCOL.md, "HTTP"). Each one checks the caller's token before it
//! reads a byte of the body, then does the repository work on the blocking pool: the stores
//! are synchronous, and verifying a pack is CPU work.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::Log;
use super::auth::{Access, Denied, bearer};
use super::repos::{RepoSource, ServedRepo, SourceError, UpdateError};
use super::upload::{self, UploadError};
use crate::object::ObjectId;
use crate::pack::PackName;
use crate::refs::{RefError, check_full_name};
use crate::store::StoreError;
use crate::transport::wire::{
    API, DoomedList, ErrorBody, Info, MAX_JSON_REQUEST, Mark, PackList, PackReceived, RefList, RefUpdate, RefUpdated,
    VERSION, WireDoomed, WirePack,
};

/// What every request handler shares.
pub struct App {
    /// The repositories.
    pub source: Arc<dyn RepoSource>,
    /// The tokens.
    pub auth: super::Auth,
    /// Largest pack upload accepted, in bytes.
    pub max_pack_bytes: u64,
    /// Where writes and failures are reported.
    pub log: Log,
}

/// The routes, at `/mlv/v1/...` for one repository or `/{repo}/mlv/v1/...` for a directory.
pub fn router(app: Arc<App>, single: bool) -> Router {
    let base = if single { format!("/{API}") } else { format!("/{{repo}}/{API}") };
    Router::new()
        .route(&format!("{base}/info"), get(info))
        .route(&format!("{base}/refs"), get(list_refs).post(update_ref))
        .route(&format!("{base}/packs"), get(list_packs))
        .route(&format!("{base}/doomed"), get(list_doomed))
        .route(
            &format!("{base}/packs/{{file}}"),
            get(get_pack_file).head(head_pack_file).put(put_pack).delete(delete_pack),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), log_failures))
        .with_state(app)
}

/// An error reply: a status and `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    found: Option<Option<ObjectId>>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), found: None }
    }

    fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

/// The message of an error reply, kept on the response for [`log_failures`].
#[derive(Clone)]
struct Failure(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message.clone(), found: self.found };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mlv\""));
        }
        resp.extensions_mut().insert(Failure(self.message));
        resp
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> ApiError {
        match e {
            SourceError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            SourceError::BadName(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            SourceError::InTheWay(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            SourceError::Repo(_) => ApiError::internal(e),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Unauthenticated(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            Denied::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, why),
        }
    }
}

impl From<RefError> for ApiError {
    fn from(e: RefError) -> ApiError {
        let status = match &e {
            RefError::BadName(_) => StatusCode::BAD_REQUEST,
            RefError::Refused(_) | RefError::Clash { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RefError::Conflict { .. } => StatusCode::CONFLICT,
            // Another process holds the ref's lock for a moment: worth a retry.
            RefError::Locked(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs repository work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))
}

/// The repository a request is for, as far as the caller may see it.
enum Found {
    /// It exists.
    Repo(Arc<ServedRepo>),
    /// It does not exist, and this caller's first push would create it: it reads as empty.
    Creatable,
}

/// A request's repository name and token, after checking the token allows `need` there.
/// Nothing of the body has been read yet.
fn authorize(app: &App, params: &HashMap<String, String>, headers: &HeaderMap, need: Access) -> ApiResult<String> {
    let name = app.source.name(params.get("repo").map(String::as_str))?;
    app.auth.check(token(headers), &name, need)?;
    Ok(name)
}

fn token(headers: &HeaderMap) -> Option<&str> {
    bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// Opens the repository `name` for an authorized request; a write creates a missing one when
/// the server allows that.
async fn find(app: &Arc<App>, name: &str, headers: &HeaderMap, need: Access) -> ApiResult<Found> {
    let source = app.source.clone();
    let n = name.to_string();
    if let Some(repo) = blocking(move || source.open(&n)).await?? {
        return Ok(Found::Repo(repo));
    }
    let may_create = app.source.can_create() && app.auth.check(token(headers), name, Access::ReadWrite).is_ok();
    match (may_create, need) {
        (true, Access::ReadWrite) => {
            let source = app.source.clone();
            let n = name.to_string();
            let repo = blocking(move || source.create(&n)).await??;
            (app.log)(&format!("{name}: created"));
            Ok(Found::Repo(repo))
        }
        (true, Access::Read) => Ok(Found::Creatable),
        (false, _) => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no repository {name:?} here"))),
    }
}

async fn find_existing(app: &Arc<App>, name: &str, headers: &HeaderMap, need: Access) -> ApiResult<Arc<ServedRepo>> {
    match find(app, name, headers, need).await? {
        Found::Repo(r) => Ok(r),
        Found::Creatable => Err(ApiError::new(StatusCode::NOT_FOUND, format!("repository {name:?} is empty"))),
    }
}

type Params = Path<HashMap<String, String>>;

async fn info(State(app): State<Arc<App>>, Path(params): Params, headers: HeaderMap) -> ApiResult<Json<Info>> {
    let name = authorize(&app, &params, &headers, Access::Read)?;
    match find(&app, &name, &headers, Access::Read).await? {
        Found::Repo(repo) => Ok(Json(blocking(move || repo.info()).await??)),
        Found::Creatable => Ok(Json(Info { protocol: VERSION, exists: false, bare: true, head: None })),
    }
}

async fn list_refs(State(app): State<Arc<App>>, Path(params): Params, headers: HeaderMap) -> ApiResult<Json<RefList>> {
    let name = authorize(&app, &params, &headers, Access::Read)?;
    match find(&app, &name, &headers, Access::Read).await? {
        Found::Repo(repo) => Ok(Json(blocking(move || repo.refs()).await??)),
        Found::Creatable => Ok(Json(RefList::default())),
    }
}

async fn update_ref(
    State(app): State<Arc<App>>,
    Path(params): Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<RefUpdated>> {
    let name = authorize(&app, &params, &headers, Access::ReadWrite)?;
    let bytes = axum::body::to_bytes(body, MAX_JSON_REQUEST).await.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("unreadable ref update (at most {MAX_JSON_REQUEST} bytes): {e}"))
    })?;
    let update: RefUpdate = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("not a ref update: {e}")))?;
    check_full_name(&update.name)?;
    let repo = find_existing(&app, &name, &headers, Access::ReadWrite).await?;
    let RefUpdate { name: full, old, new } = update;
    let target = full.clone();
    match blocking(move || repo.update_ref(&target, old, new)).await? {
        Ok(()) => {
            let show = |v: Option<ObjectId>| v.map_or("nothing".into(), |id| id.short());
            (app.log)(&format!("{name}: {full} {} -> {}", show(old), show(new)));
            Ok(Json(RefUpdated { name: full, value: new }))
        }
        Err(UpdateError::Conflict { error, found }) => Err(ApiError { found: Some(found), ..error.into() }),
        Err(UpdateError::Ref(e)) => Err(e.into()),
    }
}

/// Runs `read` on the repository a read request names; one this caller's first push would
/// create reads as empty.
async fn read_or_empty<T: Default + Send + 'static>(
    app: &Arc<App>,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    read: impl FnOnce(&ServedRepo) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let name = authorize(app, params, headers, Access::Read)?;
    match find(app, &name, headers, Access::Read).await? {
        Found::Repo(repo) => Ok(blocking(move || read(&repo)).await??),
        Found::Creatable => Ok(T::default()),
    }
}

async fn list_packs(
    State(app): State<Arc<App>>,
    Path(params): Params,
    headers: HeaderMap,
) -> ApiResult<Json<PackList>> {
    let packs = read_or_empty(&app, &params, &headers, |repo| repo.packs().list()).await?;
    Ok(Json(PackList { packs: packs.into_iter().map(|p| WirePack { name: p.name.stem(), len: p.len }).collect() }))
}

async fn list_doomed(
    State(app): State<Arc<App>>,
    Path(params): Params,
    headers: HeaderMap,
) -> ApiResult<Json<DoomedList>> {
    let doomed = read_or_empty(&app, &params, &headers, |repo| repo.packs().doomed()).await?;
    Ok(Json(DoomedList {
        doomed: doomed.into_iter().map(|d| WireDoomed { name: d.name.stem(), marked: d.marked }).collect(),
    }))
}

/// `PUT packs/<pack>.doomed`: a gc marks a pack for deletion.
async fn mark_pack(app: Arc<App>, name: String, pack: PackName, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_REQUEST)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("unreadable mark: {e}")))?;
    let mark: Mark = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("not a deletion mark: {e}")))?;
    let repo = find_existing(&app, &name, &headers, Access::ReadWrite).await?;
    if !blocking(move || repo.doom(&pack, mark.marked)).await?? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no pack {pack} here")));
    }
    (app.log)(&format!("{name}: marked {pack} for deletion"));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE packs/<pack>.pack`: a gc deletes a pack it marked earlier; unmarked packs stay.
/// `DELETE packs/<pack>.doomed` removes the mark.
async fn delete_pack(State(app): State<Arc<App>>, Path(params): Params, headers: HeaderMap) -> ApiResult<Response> {
    let name = authorize(&app, &params, &headers, Access::ReadWrite)?;
    if let Some(pack) = mark_file(&params) {
        let repo = find_existing(&app, &name, &headers, Access::ReadWrite).await?;
        blocking(move || repo.packs().spare(&pack)).await??;
        (app.log)(&format!("{name}: unmarked {pack}"));
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let PackFile::Pack(pack) = pack_file(&params)? else {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "delete the pack: its index goes with it"));
    };
    let repo = find_existing(&app, &name, &headers, Access::ReadWrite).await?;
    if !blocking(move || repo.delete_marked(&pack)).await?? {
        let what = format!("{pack} is not marked for deletion: only packs a gc marked can be deleted");
        return Err(ApiError::new(StatusCode::CONFLICT, what));
    }
    (app.log)(&format!("{name}: deleted {pack}"));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The pack whose deletion mark a `packs/{file}` path names (`pack-<hex>.doomed`).
fn mark_file(params: &HashMap<String, String>) -> Option<PackName> {
    params.get("file")?.strip_suffix(".doomed").and_then(PackName::from_stem)
}

/// What a `packs/{file}` path names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PackFile {
    Pack(PackName),
    Index(PackName),
}

fn pack_file(params: &HashMap<String, String>) -> ApiResult<PackFile> {
    let file = params.get("file").map_or("", String::as_str);
    let parsed = match file.rsplit_once('.') {
        Some((stem, "pack")) => PackName::from_stem(stem).map(PackFile::Pack),
        Some((stem, "idx")) => PackName::from_stem(stem).map(PackFile::Index),
        _ => None,
    };
    parsed.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{file:?} is not pack-<64 hex>.pack or .idx")))
}

async fn pack_len(repo: &Arc<ServedRepo>, pack: PackName) -> ApiResult<u64> {
    let r = repo.clone();
    blocking(move || r.pack_len(&pack))
        .await??
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no pack {pack} here")))
}

async fn head_pack_file(State(app): State<Arc<App>>, Path(params): Params, headers: HeaderMap) -> ApiResult<Response> {
    let name = authorize(&app, &params, &headers, Access::Read)?;
    let file = pack_file(&params)?;
    let repo = find_existing(&app, &name, &headers, Access::Read).await?;
    let (PackFile::Pack(pack) | PackFile::Index(pack)) = file;
    let len = pack_len(&repo, pack).await?;
    let mut resp = StatusCode::OK.into_response();
    if let PackFile::Pack(_) = file {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        resp.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    Ok(resp)
}

async fn get_pack_file(State(app): State<Arc<App>>, Path(params): Params, headers: HeaderMap) -> ApiResult<Response> {
    let name = authorize(&app, &params, &headers, Access::Read)?;
    let file = pack_file(&params)?;
    let repo = find_existing(&app, &name, &headers, Access::Read).await?;
    match file {
        PackFile::Index(pack) => {
            pack_len(&repo, pack).await?;
            let index = blocking(move || repo.packs().read_index(&pack)).await??;
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], index.encode()).into_response())
        }
        PackFile::Pack(pack) => {
            let len = pack_len(&repo, pack).await?;
            let range = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or_default());
            let Some((start, end)) = parse_range(range, len) else {
                let mut e = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!(
                        "the range must be one `bytes=a-b`, `bytes=a-` or `bytes=-n` within the pack's {len} bytes"
                    ),
                )
                .into_response();
                e.headers_mut().insert(header::CONTENT_RANGE, hv(format!("bytes */{len}")));
                return Ok(e);
            };
            let mut resp = Response::new(stream_pack(repo, pack, start, end));
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if range.is_some() {
                h.insert(header::CONTENT_RANGE, hv(format!("bytes {start}-{}/{len}", end.saturating_sub(1))));
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            }
            Ok(resp)
        }
    }
}

fn hv(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The byte range `start..end` a `Range` header asks of a `len`-byte pack; the whole pack
/// without one; None when it is malformed, multiple or outside the pack.
pub fn parse_range(header: Option<&str>, len: u64) -> Option<(u64, u64)> {
    let Some(spec) = header else { return Some((0, len)) };
    let (first, last) = spec.trim().strip_prefix("bytes=")?.split_once('-')?;
    let num = |s: &str| if s.is_empty() { Some(None) } else { s.parse::<u64>().ok().map(Some) };
    match (num(first)?, num(last)?) {
        (Some(a), Some(b)) if a <= b && a < len => Some((a, b.saturating_add(1).min(len))),
        (Some(a), None) if a < len => Some((a, len)),
        (None, Some(n)) if n > 0 && len > 0 => Some((len - n.min(len), len)),
        _ => None,
    }
}

/// A body that streams bytes `start..end` of a pack from the store, in bounded memory: the
/// store writes pieces from the blocking pool, a small channel carries them to the socket. A
/// client that stops reading for [`upload::UPLOAD_IDLE`] loses the reply, so it cannot hold a
/// thread for ever.
fn stream_pack(repo: Arc<ServedRepo>, pack: PackName, start: u64, end: u64) -> Body {
    type Piece = Result<Bytes, std::io::Error>;
    const PIECE: usize = 256 << 10;
    struct Pipe {
        tx: tokio::sync::mpsc::Sender<Piece>,
        rt: tokio::runtime::Handle,
    }
    impl std::io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for piece in buf.chunks(PIECE) {
                let sent = self.rt.block_on(tokio::time::timeout(
                    upload::UPLOAD_IDLE,
                    self.tx.send(Ok(Bytes::copy_from_slice(piece))),
                ));
                match sent {
                    Ok(Ok(())) => {}
                    // The receiver is gone: the client went away. Stop reading the pack.
                    Ok(Err(_)) => return Err(std::io::ErrorKind::BrokenPipe.into()),
                    Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(4);
    let mut pipe = Pipe { tx, rt: tokio::runtime::Handle::current() };
    tokio::task::spawn_blocking(move || {
        if let Err(e) = repo.packs().copy_range(&pack, start, end - start, &mut pipe) {
            // Cuts the reply short: the client sees fewer bytes than promised (also when the
            // error cannot be queued, as the channel's end closes the body).
            let _ = pipe.tx.try_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

async fn put_pack(
    State(app): State<Arc<App>>,
    Path(params): Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let name = authorize(&app, &params, &headers, Access::ReadWrite)?;
    if let Some(pack) = mark_file(&params) {
        return mark_pack(app, name, pack, headers, body).await;
    }
    let PackFile::Pack(pack) = pack_file(&params)? else {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "indexes are not uploaded: the server builds them"));
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_pack_bytes) {
        return Err(UploadError::TooLarge(app.max_pack_bytes).into());
    }
    let repo = find_existing(&app, &name, &headers, Access::ReadWrite).await?;
    let staged = upload::stage(body, &repo.staging_dir(), pack, app.max_pack_bytes).await?;
    let (len, staged_at) = (staged.len, staged.file.display().to_string());
    match blocking(move || repo.receive(staged)).await? {
        Ok(_) => {
            (app.log)(&format!("{name}: received {pack} ({len} bytes)"));
            Ok(Json(PackReceived { name: pack.stem(), len }).into_response())
        }
        Err(e) => {
            // Name the pack, not the server's temporary file.
            let message = e.to_string().replace(&staged_at, &format!("{pack}.pack"));
            match e.is_corrupt() || matches!(e, StoreError::NotFound(_)) {
                true => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("pack rejected: {message}"))),
                false => Err(ApiError::internal(message)),
            }
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        let status = match e {
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Damaged(_) | UploadError::BrokenOff(_) => StatusCode::BAD_REQUEST,
            UploadError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

async fn not_found(method: Method) -> ApiError {
    let what = format!("no such endpoint for {method}: mlv serves {{base}}/{API}/info, refs, packs and packs/<file>");
    ApiError::new(StatusCode::NOT_FOUND, what)
}

/// Reports failed requests (except the 404s and 416s that clients expect) and server errors.
async fn log_failures(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    let quiet = [StatusCode::NOT_FOUND, StatusCode::RANGE_NOT_SATISFIABLE].contains(&status);
    if (status.is_client_error() || status.is_server_error()) && !quiet {
        let why = resp.extensions().get::<Failure>().map_or("", |f| f.0.as_str());
        (app.log)(&format!("{method} {path}: {} {why}", status.as_u16()));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_single_and_inside_the_pack() {
        assert_eq!(parse_range(None, 100), Some((0, 100)));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Some((0, 10)));
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Some((90, 100)));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Some((90, 100)));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Some((90, 100)));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Some((0, 100)));
        for bad in ["bytes=100-", "bytes=5-4", "bytes=-0", "bytes=0-1,5-6", "items=0-1", "bytes=x-1", "bytes=1"] {
            assert_eq!(parse_range(Some(bad), 100), None, "{bad}");
        }
    }
}
