//! The HTTP example: `GET /` greets, `GET /env/NAME` answers an environment variable,
//! `GET /spin/MS` keeps a CPU busy for MS milliseconds (to see CPU limits at work), anything
//! else is 404 (the Wasm build also answers `GET /fetch/HOST:PORT/PATH` with what an outgoing
//! request there returns). The request logic ([`respond`]) is plain Rust shared by two front-ends:
//!
//! - on `wasm32-wasip2` this library is a `wasi:http/proxy` component: it exports
//!   `wasi:http/incoming-handler`, and the host makes a fresh instance per request;
//! - elsewhere, [`native::serve`] is a tiny HTTP/1.1 server on std, so the same app can ship as
//!   a static Linux binary (`src/main.rs`) and be compared with its Wasm build.

/// Every answer is short plain text.
pub const CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The body of `GET /`.
pub const GREETING: &str = "hello from skiff\n";

/// What the app answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
        }
    }
}

/// Answers a request given its method and request target (path and optional query; the query
/// is ignored). Environment variables are read per request, so the host's env is what counts.
pub fn respond(method: &str, target: &str) -> Response {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let spin = path
        .strip_prefix("/spin/")
        .and_then(|ms| ms.parse::<u64>().ok());
    let known = path == "/" || env_name(path).is_some() || spin.is_some();
    if !known {
        return Response::text(404, "not found\n");
    }
    if method != "GET" {
        return Response::text(405, "method not allowed\n");
    }
    if let Some(ms) = spin {
        return Response::text(200, format!("spun {} ms\n", burn(ms.min(10_000))));
    }
    match env_name(path) {
        None => Response::text(200, GREETING),
        Some(name) => match std::env::var(name) {
            Ok(value) => Response::text(200, format!("{value}\n")),
            Err(_) => Response::text(404, format!("{name} is not set\n")),
        },
    }
}

/// Keeps a CPU busy for `ms` milliseconds of wall-clock time (less CPU when the host limits
/// it); returns `ms`.
fn burn(ms: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    ms
}

/// The NAME of `/env/NAME`, if `path` has that shape with a non-empty name.
fn env_name(path: &str) -> Option<&str> {
    path.strip_prefix("/env/")
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// The reason phrase the native server sends with a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "",
    }
}

#[cfg(not(target_os = "wasi"))]
pub mod native;

#[cfg(all(target_os = "wasi", target_env = "p2"))]
mod component {
    use wasip2::exports::http::incoming_handler::Guest;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
        ResponseOutparam, Scheme,
    };

    struct Handler;

    wasip2::http::proxy::export!(Handler);

    impl Guest for Handler {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let method = request.method();
            let target = request.path_with_query().unwrap_or_else(|| "/".to_string());
            drop(request);
            let response = match target.strip_prefix("/fetch/") {
                Some(rest) if matches!(method, Method::Get) => fetch(rest),
                _ => super::respond(method_name(&method), &target),
            };

            let body = response.body.as_bytes();
            let headers = Fields::from_list(&[
                (
                    "content-type".to_string(),
                    super::CONTENT_TYPE.as_bytes().to_vec(),
                ),
                (
                    "content-length".to_string(),
                    body.len().to_string().into_bytes(),
                ),
            ])
            .expect("static header names and values are valid");
            let outgoing = OutgoingResponse::new(headers);
            outgoing
                .set_status_code(response.status)
                .expect("the app only uses valid status codes");
            let outgoing_body = outgoing.body().expect("a new response's body is available");
            ResponseOutparam::set(out, Ok(outgoing));

            // One call per 4 KiB (the most `blocking-write-and-flush` takes) keeps host calls
            // to a minimum for these short bodies. If the client went away, the writes fail and
            // there is nobody left to tell.
            if let Ok(stream) = outgoing_body.write() {
                for chunk in body.chunks(4096) {
                    if stream.blocking_write_and_flush(chunk).is_err() {
                        break;
                    }
                }
            }
            let _ = OutgoingBody::finish(outgoing_body, None);
        }
    }

    /// `GET /fetch/HOST:PORT/PATH`: the body of `http://HOST:PORT/PATH`, fetched through
    /// `wasi:http/outgoing-handler` (the Wasm build only: it shows where a pod's outgoing
    /// requests leave from).
    fn fetch(rest: &str) -> super::Response {
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, "/".to_string()),
        };
        let failed = |why: String| super::Response::text(502, format!("fetch failed: {why}\n"));
        let request = OutgoingRequest::new(Fields::new());
        if request.set_scheme(Some(&Scheme::Http)).is_err()
            || request.set_authority(Some(authority)).is_err()
            || request.set_path_with_query(Some(&path)).is_err()
        {
            return failed(format!("bad target {rest}"));
        }
        let pending = match outgoing_handler::handle(request, None) {
            Ok(p) => p,
            Err(e) => return failed(format!("{e:?}")),
        };
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            other => return failed(format!("{other:?}")),
        };
        let Ok(body) = response.consume() else {
            return failed("no body".into());
        };
        let mut bytes = Vec::new();
        if let Ok(stream) = body.stream() {
            while let Ok(chunk) = stream.blocking_read(4096) {
                bytes.extend_from_slice(&chunk);
            }
        }
        super::Response::text(200, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn method_name(method: &Method) -> &str {
        match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(other) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_greets() {
        assert_eq!(respond("GET", "/"), Response::text(200, GREETING));
        assert_eq!(respond("GET", "/?x=1"), Response::text(200, GREETING));
    }

    #[test]
    fn env_answers_the_variable_or_404() {
        // PATH is set in any test environment; the value is whatever this process sees.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(
            respond("GET", "/env/PATH"),
            Response::text(200, format!("{path}\n"))
        );
        let unset = "SKIFF_HTTP_EXAMPLE_SURELY_UNSET";
        assert!(std::env::var(unset).is_err());
        let missing = respond("GET", &format!("/env/{unset}"));
        assert_eq!(missing.status, 404);
        assert!(missing.body.contains(unset));
    }

    #[test]
    fn other_paths_are_404_and_other_methods_405() {
        for target in ["/nope", "/env/", "/env", "/env/A/B", "/envX"] {
            assert_eq!(respond("GET", target).status, 404, "{target}");
        }
        assert_eq!(respond("POST", "/").status, 405);
        assert_eq!(respond("DELETE", "/env/PATH").status, 405);
        assert_eq!(respond("POST", "/nope").status, 404);
    }
}
