//! The native front-end: a small HTTP/1.1 server on std, one thread per connection, with
//! keep-alive, so a load generator measures the app rather than connection setup. It parses
//! only what the app needs: the request line, `Content-Length` and `Connection`; request bodies
//! are read and dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Requests whose head (request line and headers) is larger than this are refused.
const MAX_HEAD: usize = 16 * 1024;

/// Request bodies larger than this are refused; the app never needs one.
const MAX_BODY: u64 = 1024 * 1024;

/// Accepts connections on `listener` forever, serving each on its own thread.
pub fn serve(listener: TcpListener) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                std::thread::spawn(move || {
                    // A connection that fails (reset, bad request) only ends itself.
                    let _ = serve_connection(stream);
                });
            }
            // Running out of descriptors or an aborted handshake is no reason to stop
            // serving; pause briefly so a persistent error does not spin.
            Err(e) => {
                eprintln!("http-server: accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
pub fn serve_connection(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let head = match read_head(&mut reader)? {
            Some(head) => head,
            None => return Ok(()),
        };
        let request = match Request::parse(&head) {
            Ok(request) => request,
            Err(status) => {
                write_response(&mut writer, status, "bad request\n", false)?;
                return Ok(());
            }
        };
        if request.chunked {
            // Nobody sends this app a chunked body; refusing is simpler than decoding one.
            write_response(
                &mut writer,
                411,
                "chunked request bodies are not supported\n",
                false,
            )?;
            return Ok(());
        }
        if request.content_length > MAX_BODY {
            write_response(&mut writer, 413, "request body too large\n", false)?;
            return Ok(());
        }
        io::copy(
            &mut (&mut reader).take(request.content_length),
            &mut io::sink(),
        )?;
        let response = crate::respond(&request.method, &request.target);
        write_response(
            &mut writer,
            response.status,
            &response.body,
            request.keep_alive,
        )?;
        if !request.keep_alive {
            return Ok(());
        }
    }
}

/// Reads up to and including the blank line that ends a request head. `None` when the client
/// closed the connection between requests.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let before = head.len();
        let read = reader
            .by_ref()
            .take((MAX_HEAD - before + 1) as u64)
            .read_line(&mut head)?;
        if read == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let line = &head[before..];
        if line == "\r\n" || line == "\n" {
            // Blank lines before a request line are allowed (RFC 9112, section 2.2).
            if before == 0 {
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
    }
}

/// The parts of a request head the app uses.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    content_length: u64,
    chunked: bool,
    keep_alive: bool,
}

impl Request {
    /// Parses a request head; the error is the status code to answer with.
    fn parse(head: &str) -> Result<Request, u16> {
        let mut lines = head.lines();
        let request_line = lines.next().ok_or(400u16)?;
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(400);
        };
        let mut keep_alive = match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return Err(400),
        };
        if method.is_empty() || !target.starts_with('/') {
            return Err(400);
        }
        let mut content_length = 0;
        let mut chunked = false;
        for line in lines.take_while(|line| !line.is_empty()) {
            let (name, value) = line.split_once(':').ok_or(400u16)?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().map_err(|_| 400u16)?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for option in value.split(',').map(str::trim) {
                    if option.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if option.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        Ok(Request {
            method: method.to_string(),
            target: target.to_string(),
            content_length,
            chunked,
            keep_alive,
        })
    }
}

fn write_response(
    writer: &mut TcpStream,
    status: u16,
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    // One write per response: head and body leave in the same segment.
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\nconnection: {connection}\r\n\r\n{body}",
        reason = crate::reason(status),
        content_type = crate::CONTENT_TYPE,
        length = body.len(),
    );
    writer.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GREETING;
    use std::net::{Ipv4Addr, Shutdown};

    fn start() -> std::net::SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(listener));
        addr
    }

    /// Sends `requests` on one connection, half-closes it and returns all the server wrote.
    fn exchange(addr: std::net::SocketAddr, requests: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(requests.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn answers_requests_on_one_kept_alive_connection() {
        let addr = start();
        let answer = exchange(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /nope HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
             GET /env/SKIFF_HTTP_EXAMPLE_SURELY_UNSET HTTP/1.1\r\nConnection: close\r\n\r\n\
             GET / HTTP/1.1\r\n\r\n",
        );
        let statuses: Vec<&str> = answer
            .lines()
            .filter(|line| line.starts_with("HTTP/1.1 "))
            .collect();
        // The fourth request came after `Connection: close` and is not answered.
        assert_eq!(
            statuses,
            [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 404 Not Found",
                "HTTP/1.1 404 Not Found"
            ]
        );
        let first = answer.split("HTTP/1.1 404").next().unwrap();
        assert!(first.contains(&format!("content-length: {}\r\n", GREETING.len())));
        assert!(first.contains("connection: keep-alive\r\n"));
        assert!(first.ends_with(&format!("\r\n\r\n{GREETING}")));
        assert!(answer.ends_with("SKIFF_HTTP_EXAMPLE_SURELY_UNSET is not set\n"));
    }

    #[test]
    fn http_1_0_closes_after_one_answer() {
        let addr = start();
        let answer = exchange(addr, "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n");
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 1);
        assert!(answer.contains("connection: close\r\n"));
    }

    #[test]
    fn malformed_requests_get_400() {
        let addr = start();
        let answer = exchange(addr, "NONSENSE\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn parses_what_the_app_uses() {
        let request = Request::parse(
            "GET /env/X?y HTTP/1.1\r\nCONTENT-LENGTH: 3\r\nConnection: Close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            request,
            Request {
                method: "GET".into(),
                target: "/env/X?y".into(),
                content_length: 3,
                chunked: false,
                keep_alive: false,
            }
        );
        assert_eq!(Request::parse("GET / HTTP/2\r\n\r\n"), Err(400));
        assert_eq!(Request::parse("GET x HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(
            Request::parse("GET / HTTP/1.1\r\nContent-Length: many\r\n\r\n"),
            Err(400)
        );
    }
}
