//! A running `mlv serve` and raw HTTP requests to it, for the tests that talk to the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::TestRepo;

/// A running `mlv serve`, killed when dropped (also when a test fails).
pub struct Server {
    /// The server process.
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    log: PathBuf,
}

impl Server {
    /// Serves `dir` on a free loopback port with the extra options `opts`, and waits until
    /// it says where it listens.
    pub fn start(r: &TestRepo, dir: &Path, opts: &[&str]) -> Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = r.scratch("logs").join(format!("serve-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlv"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(opts)
            .arg(dir)
            .env("HOME", &r.home)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start mlv serve");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let addr = line.trim().rsplit_once(" on http://").map(|(_, a)| a.to_string());
        let server = Server { child, addr: addr.unwrap_or_default(), log };
        assert!(
            line.starts_with("Serving ") && !server.addr.ends_with(":0") && !server.addr.is_empty(),
            "mlv serve printed {line:?}; its log:\n{}",
            server.log()
        );
        server
    }

    /// The URL of repository `name` ("" for a server of one repository).
    pub fn url(&self, name: &str) -> String {
        if name.is_empty() { format!("http://{}", self.addr) } else { format!("http://{}/{name}", self.addr) }
    }

    /// What the server reported so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One raw HTTP/1.1 request; returns the status and the body.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body));
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string()))
}
