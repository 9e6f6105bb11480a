//! The load generator's HTTP/1.1 client: keep-alive connections, each used by one worker at a
//! time, with the request written and the answer read on that worker's own task.
//!
//! Why not reqwest: the driver shares the machine with the service it measures, and a pooled
//! reqwest call costs about twice a hyper server's side of it (profiled: 66 % of the bench's
//! CPU), much of it in the hand-off between the calling task and the connection's task. Every
//! µs the driver spends is taken from the service. wrk and other load generators write their
//! requests on the socket for the same reason. Answers are parsed with `httparse` (hyper's
//! own parser); bodies may be sized by `content-length` or chunked.

use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status and body of an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Idle connections to one `http://host:port`, taken by a worker for a call and put back.
#[derive(Debug)]
pub struct Pool {
    /// `host:port`, to connect to and to name in the `host` header.
    authority: String,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// A pool for `base` (`http://host:port`, no path); https is not supported.
    pub fn new(base: &str) -> anyhow::Result<Pool> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| {
                anyhow::anyhow!("the load generator speaks plain http:// only, not {base}")
            })?
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            anyhow::bail!("expected http://host:port without a path, not {base}");
        }
        Ok(Pool {
            authority: authority.to_owned(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` to `path`. A pooled connection that the server closed while it was idle
    /// (no byte of an answer came back) is replaced once, as HTTP clients do for keep-alive.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<Answer, String> {
        let named = |e: String| format!("POST {path}: {e}");
        let (mut conn, pooled) = match self.take() {
            Some(c) => (c, true),
            None => (self.connect().await.map_err(named)?, false),
        };
        let mut request = std::mem::take(&mut conn.request);
        write_request(&mut request, &self.authority, path, token, body);
        let answer = match conn.exchange(&request).await {
            // Only an idle connection from the pool may have been closed under us.
            Err(Failure::Stale(_)) if pooled => {
                conn = self.connect().await.map_err(named)?;
                conn.exchange(&request).await
            }
            other => other,
        };
        conn.request = request;
        match answer {
            Ok((answer, reusable)) => {
                if reusable {
                    self.idle.lock().expect("pool").push(conn);
                }
                Ok(answer)
            }
            Err(Failure::Stale(e) | Failure::Broken(e)) => Err(named(e)),
        }
    }

    fn take(&self) -> Option<Conn> {
        self.idle.lock().expect("pool").pop()
    }

    async fn connect(&self) -> Result<Conn, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.authority))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
        })
    }
}

fn write_request(out: &mut Vec<u8>, authority: &str, path: &str, token: Option<&str>, body: &[u8]) {
    use std::io::Write;
    out.clear();
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        let _ = write!(out, "authorization: Bearer {t}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The last request's bytes, kept for the allocation.
    request: Vec<u8>,
}

/// Why an exchange failed.
enum Failure {
    /// The connection was closed before any of the answer arrived: safe to try on a new one.
    Stale(String),
    Broken(String),
}

/// How the answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    /// Writes the request and reads its whole answer; also says whether the connection can
    /// carry another call.
    async fn exchange(&mut self, request: &[u8]) -> Result<(Answer, bool), Failure> {
        self.buf.clear();
        if let Err(e) = self.stream.write_all(request).await {
            return Err(Failure::Stale(e.to_string()));
        }
        let (status, framing, mut reusable, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut framing = Framing::UntilClose;
                    let mut reusable = response.version == Some(1);
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| Failure::Broken("bad content-length".into()))?;
                            framing = Framing::Length(n);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                        {
                            framing = Framing::Chunked;
                        } else if h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                        {
                            reusable = false;
                        }
                    }
                    break (status, framing, reusable, len);
                }
                Ok(httparse::Status::Partial) => {
                    let empty = self.buf.is_empty();
                    match self.fill().await {
                        Ok(0) if empty => {
                            return Err(Failure::Stale("closed by the server".into()))
                        }
                        Ok(0) => return Err(Failure::Broken("closed mid-answer".into())),
                        Ok(_) => {}
                        Err(e) if empty => return Err(Failure::Stale(e.to_string())),
                        Err(e) => return Err(Failure::Broken(e.to_string())),
                    }
                }
                Err(e) => return Err(Failure::Broken(format!("unparsable answer: {e}"))),
            }
        };
        let broken = |e: std::io::Error| Failure::Broken(e.to_string());
        let body = match framing {
            Framing::Length(n) => {
                while self.buf.len() < head_len + n {
                    if self.fill().await.map_err(broken)? == 0 {
                        return Err(Failure::Broken("closed mid-body".into()));
                    }
                }
                self.buf[head_len..head_len + n].to_vec()
            }
            Framing::Chunked => self.chunked(head_len).await?,
            Framing::UntilClose => {
                while self.fill().await.map_err(broken)? > 0 {}
                reusable = false;
                self.buf[head_len..].to_vec()
            }
        };
        Ok((Answer { status, body }, reusable))
    }

    /// Reads a chunked body that starts at `at` in the buffer.
    async fn chunked(&mut self, mut at: usize) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find_crlf(&self.buf[at..]) {
                    break at + i;
                }
                self.fill_or_fail().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[at..line_end]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| Failure::Broken(format!("bad chunk size {size_text:?}")))?;
            at = line_end + 2;
            // The chunk and its CRLF (for the last chunk: the empty trailer's CRLF).
            while self.buf.len() < at + size + 2 {
                self.fill_or_fail().await?;
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
            if size == 0 {
                return Ok(body);
            }
        }
    }

    async fn fill_or_fail(&mut self) -> Result<(), Failure> {
        match self.fill().await {
            Ok(0) => Err(Failure::Broken("closed mid-body".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(Failure::Broken(e.to_string())),
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Reads one whole request (head, then its content-length of body) off `s`, parsing the
    /// head with httparse as the client parses answers.
    async fn next_request(s: &mut tokio::net::TcpStream, buffered: &mut Vec<u8>) -> bool {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = request.parse(buffered) {
                let body = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value)
                            .expect("an ASCII content-length")
                            .trim()
                            .parse::<usize>()
                            .expect("a numeric content-length")
                    });
                if buffered.len() >= head + body {
                    buffered.drain(..head + body);
                    return true;
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A server that answers each request on a connection with the next canned answer.
    async fn serve(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for a in answers {
                assert!(next_request(&mut s, &mut seen).await);
                s.write_all(a).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_sized_and_chunked_answers_on_one_kept_alive_connection() {
        let base = serve(vec![
            b"HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\n{\"a\":1}",
            b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"b\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        ])
        .await;
        let pool = Pool::new(&base).unwrap();
        let a = pool.post("/v1/x", Some("t"), b"{}").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, &b"{\"a\":1}"[..]));
        let b = pool.post("/v1/y", None, b"{}").await.unwrap();
        assert_eq!((b.status, b.body.as_slice()), (409, &b"{\"b\":2}"[..]));
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_server_before_answering_is_replaced_once() {
        let base = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        ])
        .await;
        let pool = Pool::new(&base).unwrap();
        assert_eq!(pool.post("/", None, b"").await.unwrap().status, 200);
        // The server closed it and takes no second connection: a clear error, not a hang.
        let err = pool.post("/", None, b"").await.unwrap_err();
        assert!(err.contains("POST /"), "{err}");
    }

    #[test]
    fn only_plain_http_bases_are_accepted() {
        assert!(Pool::new("https://example.com").is_err());
        assert!(Pool::new("http://127.0.0.1:1/v1").is_err());
        assert!(Pool::new("http://127.0.0.1:1/").is_ok());
    }
}
