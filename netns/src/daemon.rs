//! The HTTP client of sandboxd's API: HTTP/1.1 + JSON over its unix socket (the contract in
//! the OpenAPI document the daemon serves at `GET /v1/openapi.json`, kept in docs/).
//!
//! hyper 1's connection-level client over a `tokio::net::UnixStream`, driven by a current-thread
//! runtime: `netns` is a short-lived process that sends one request, so a multi-threaded runtime
//! or a connection pool would only cost start-up time. Every failure becomes one [`Error`] line:
//! the daemon's `{"message"}` with the exit class of its status, or "cannot reach sandboxd at
//! PATH: <reason>".

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// Where sandboxd listens unless `--daemon` or `SANDBOXD_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sandboxd/sandboxd.sock";

/// Connecting to a live unix socket is immediate; a full accept backlog must not hang us.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one non-streaming request. Creating a sandbox runs a CNI chain, which takes
/// milliseconds to seconds; a daemon stuck for this long is reported rather than waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The socket path: `--daemon`, else `$SANDBOXD_SOCKET` (when not empty), else the default.
pub fn socket_path(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            env("SANDBOXD_SOCKET")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// A client of one sandboxd socket.
pub struct Client {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// Squash a message to one line (a multi-line daemon or plugin message must not break the
/// "one line naming the problem" promise).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Map a non-2xx answer to an error: the body's `message` (else its first text, else the status)
/// with the exit class of the status (400 and other 4xx: usage, 404: not found, 409 and 5xx:
/// failed).
pub fn status_error(status: StatusCode, body: &[u8]) -> Error {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(one_line))
        .filter(|m| !m.is_empty());
    let msg = from_json.unwrap_or_else(|| {
        let text = one_line(&String::from_utf8_lossy(body));
        if text.is_empty() {
            format!("sandboxd answered {status}")
        } else {
            format!("sandboxd answered {status}: {text}")
        }
    });
    match status {
        StatusCode::NOT_FOUND => Error::NotFound(msg),
        StatusCode::CONFLICT => Error::Failed(msg),
        s if s.is_client_error() => Error::Usage(msg),
        _ => Error::Failed(msg),
    }
}

impl Client {
    /// A client for `socket`; nothing is connected yet.
    pub fn new(socket: PathBuf) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Failed(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Client { socket, rt })
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> Error {
        Error::Failed(format!(
            "cannot reach sandboxd at {}: {}",
            self.socket.display(),
            one_line(&reason.to_string())
        ))
    }

    /// Connect, send one request, return the response head with its streaming body. The
    /// connection task lives on the runtime until the body has been read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Incoming>> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket))
            .await
            .map_err(|_| self.unreachable("timed out connecting"))?
            .map_err(|e| self.unreachable(e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            // Errors surface through send_request or the body; nothing to add here.
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            // HTTP/1.1 requires Host; a unix socket has none, so name the service.
            .header(hyper::header::HOST, "sandboxd");
        let bytes = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| Error::Failed(format!("building the request for {path}: {e}")))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// One request/response exchange: `Ok(None)` for an empty 2xx body (204), the decoded JSON
    /// otherwise; any other status is [`status_error`].
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Option<Value>> {
        self.call_as(method, path, body)
    }

    /// [`Client::call`], decoding the answer straight into `T`: long lists (1000 sandboxes)
    /// skip the intermediate `Value` tree, which cost most of `netns sandbox ls`'s time.
    pub fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<T>> {
        self.rt.block_on(async {
            let work = async {
                let resp = self.send(method, path, body).await?;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| self.unreachable(e))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(status_error(status, &bytes));
                }
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    Error::Failed(format!("sandboxd sent invalid JSON for {path}: {e}"))
                })
            };
            tokio::time::timeout(REQUEST_TIMEOUT, work)
                .await
                .map_err(|_| {
                    self.unreachable(format!(
                        "no answer to {path} within {}s",
                        REQUEST_TIMEOUT.as_secs()
                    ))
                })?
        })
    }

    /// GET a stream of lines (`/v1/events`): `on_line` gets each complete line without its
    /// newline and returns `false` to stop. Returns when the daemon ends the stream.
    pub fn stream_lines(&self, path: &str, on_line: &mut dyn FnMut(&[u8]) -> bool) -> Result<()> {
        self.rt.block_on(async {
            let resp = self.send(Method::GET, path, None).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| self.unreachable(e))?
                    .to_bytes();
                return Err(status_error(status, &bytes));
            }
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| self.unreachable(e))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = line.strip_suffix(b"\n").unwrap_or(&line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if !line.is_empty() && !on_line(line) {
                        return Ok(());
                    }
                }
            }
            if !buf.is_empty() {
                on_line(&buf);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;

    /// A fake sandboxd for unit tests: answers each connection with the next canned raw HTTP
    /// response and records the requests (head + body) it got.
    pub struct Fake {
        pub socket: PathBuf,
        handle: Option<std::thread::JoinHandle<Vec<String>>>,
        _dir: TempDir,
    }

    /// A directory removed on drop.
    pub struct TempDir(pub PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn temp_dir(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("netns-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// A raw HTTP/1.1 response with a body and Content-Length.
    pub fn resp(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    pub fn json_resp(status: &str, body: &Value) -> String {
        resp(status, "application/json", &body.to_string())
    }

    impl Fake {
        pub fn start(responses: Vec<String>) -> Fake {
            let dir = temp_dir("fake");
            let socket = dir.0.join("sandboxd.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let handle = std::thread::spawn(move || {
                let mut seen = Vec::new();
                for r in responses {
                    let (stream, _) = listener.accept().unwrap();
                    let mut reader = BufReader::new(stream);
                    let mut head = String::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" || line.is_empty() {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    seen.push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
                    let mut stream = reader.into_inner();
                    stream.write_all(r.as_bytes()).unwrap();
                }
                seen
            });
            Fake {
                socket,
                handle: Some(handle),
                _dir: dir,
            }
        }

        /// The requests received (waits for every canned response to be sent).
        pub fn requests(mut self) -> Vec<String> {
            self.handle.take().unwrap().join().unwrap()
        }
    }

    #[test]
    fn socket_path_order() {
        let env = |k: &str| (k == "SANDBOXD_SOCKET").then(|| "/env.sock".to_string());
        assert_eq!(
            socket_path(Some(Path::new("/flag.sock")), &env),
            PathBuf::from("/flag.sock")
        );
        assert_eq!(socket_path(None, &env), PathBuf::from("/env.sock"));
        let empty = |_: &str| Some(String::new());
        assert_eq!(socket_path(None, &empty), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(socket_path(None, &|_| None), PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn status_mapping() {
        let m = |s: u16, b: &str| status_error(StatusCode::from_u16(s).unwrap(), b.as_bytes());
        assert_eq!(
            m(400, r#"{"message":"bad subnet \"x\""}"#),
            Error::Usage("bad subnet \"x\"".into())
        );
        assert_eq!(
            m(404, r#"{"message":"network nope not found"}"#),
            Error::NotFound("network nope not found".into())
        );
        assert_eq!(
            m(409, r#"{"message":"network n has endpoints: a, b"}"#),
            Error::Failed("network n has endpoints: a, b".into())
        );
        assert_eq!(
            m(500, "{\"message\":\"plugin failed:\\n  line two\"}"),
            Error::Failed("plugin failed: line two".into())
        );
        assert_eq!(
            m(422, "oops\nmore"),
            Error::Usage("sandboxd answered 422 Unprocessable Entity: oops more".into())
        );
        assert_eq!(
            m(503, ""),
            Error::Failed("sandboxd answered 503 Service Unavailable".into())
        );
        assert_eq!(
            m(405, r#"{"message":""}"#),
            Error::Usage("sandboxd answered 405 Method Not Allowed: {\"message\":\"\"}".into())
        );
    }

    #[test]
    fn unreachable_socket_is_one_line_exit_1() {
        let dir = temp_dir("nosock");
        let sock = dir.0.join("missing.sock");
        let c = Client::new(sock.clone()).unwrap();
        let e = c.call(Method::GET, "/v1/networks", None).unwrap_err();
        let Error::Failed(m) = &e else {
            panic!("{e:?}")
        };
        assert!(
            m.starts_with(&format!("cannot reach sandboxd at {}: ", sock.display())),
            "{m}"
        );
        assert!(m.contains("No such file"), "{m}");
        assert!(!m.contains('\n'));
        assert_eq!(e.exit_code(), 1);
        // A socket nobody accepts on: refused.
        let l = UnixListener::bind(&sock).unwrap();
        drop(l);
        let e = c.call(Method::GET, "/v1/networks", None).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[test]
    fn call_sends_json_and_decodes_answers() {
        let fake = Fake::start(vec![
            json_resp("201 Created", &serde_json::json!({"name": "n1"})),
            resp("204 No Content", "text/plain", ""),
            json_resp(
                "409 Conflict",
                &serde_json::json!({"message": "network n1 exists"}),
            ),
            resp("200 OK", "application/json", "not json"),
        ]);
        let c = Client::new(fake.socket.clone()).unwrap();
        let v = c
            .call(
                Method::POST,
                "/v1/networks",
                Some(&serde_json::json!({"name": "n1"})),
            )
            .unwrap();
        assert_eq!(v, Some(serde_json::json!({"name": "n1"})));
        assert_eq!(
            c.call(Method::DELETE, "/v1/networks/n1", None).unwrap(),
            None
        );
        assert_eq!(
            c.call(Method::GET, "/v1/networks/n1", None).unwrap_err(),
            Error::Failed("network n1 exists".into())
        );
        let e = c.call(Method::GET, "/v1/networks", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sandboxd sent invalid JSON for /v1/networks"),
            "{e}"
        );
        let reqs = fake.requests();
        assert!(
            reqs[0].starts_with("POST /v1/networks HTTP/1.1\r\n"),
            "{}",
            reqs[0]
        );
        assert!(reqs[0]
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert!(reqs[0].to_ascii_lowercase().contains("host: sandboxd"));
        assert!(reqs[0].ends_with("\n{\"name\":\"n1\"}"), "{}", reqs[0]);
        assert!(reqs[1].starts_with("DELETE /v1/networks/n1 HTTP/1.1"));
    }

    #[test]
    fn a_daemon_that_hangs_up_is_one_line() {
        let dir = temp_dir("hangup");
        let sock = dir.0.join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            let _ = s.read(&mut b);
            // Close without answering.
        });
        let c = Client::new(sock.clone()).unwrap();
        let e = c.call(Method::GET, "/v1/networks", None).unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().starts_with("cannot reach sandboxd at"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn stream_splits_lines_across_chunks() {
        let dir = temp_dir("stream");
        let sock = dir.0.join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b);
            let chunks = ["{\"a\":1}\n{\"b\"", ":2}\n\n", "{\"c\":3}"];
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n")
                .unwrap();
            for c in chunks {
                s.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
                    .unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            s.write_all(b"0\r\n\r\n").unwrap();
        });
        let c = Client::new(sock).unwrap();
        let mut lines = Vec::new();
        c.stream_lines("/v1/events", &mut |l| {
            lines.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        t.join().unwrap();
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }
}
