//! Image references as Kubernetes writes them: `nginx` means `docker.io/library/nginx:latest`.

use std::net::IpAddr;

use crate::Error;

const DEFAULT_REGISTRY: &str = "docker.io";

/// Expands a reference the way the kubelet and Docker do: a first path component without
/// `.` or `:` (and not `localhost`) is a Docker Hub repository, single names live under
/// `library/`, and a reference with neither tag nor digest means `:latest`.
pub fn normalize_reference(reference: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.is_empty() {
        return Err(invalid("it is empty"));
    }
    if reference.len() > 4096 {
        return Err(invalid("it is longer than 4096 characters"));
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        crate::store::check_digest(digest).map_err(|_| {
            invalid("the digest must be sha256: followed by 64 lower-case hex digits")
        })?;
    }
    // A tag follows the last `:` that comes after the last `/` (a `:` before it is a port).
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || tag.starts_with(['.', '-'])
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid(
            "a tag is at most 128 of [A-Za-z0-9_.-] and starts with a letter, digit or _",
        ));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        None => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
    };
    if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(invalid("the registry host is malformed"));
    }
    for component in path.split('/') {
        let ok = !component.is_empty()
            && component.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !ok {
            return Err(invalid(
                "repository path components are lower-case letters, digits and separators (. _ -)",
            ));
        }
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(tag), _) => {
            out.push(':');
            out.push_str(tag);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
    Ok(out)
}

/// Parses a normalized reference into oci-client's form.
pub(crate) fn parse(normalized: &str) -> Result<oci_client::Reference, Error> {
    normalized
        .parse::<oci_client::Reference>()
        .map_err(|e| Error::InvalidReference {
            reference: normalized.to_string(),
            reason: e.to_string(),
        })
}

/// The registry host of a normalized reference, with its port if any.
pub(crate) fn registry_of(normalized: &str) -> &str {
    normalized.split('/').next().unwrap_or(normalized)
}

/// Whether a registry (`host[:port]`) is on this machine, where plain HTTP is allowed as
/// Docker allows it: `localhost`, 127.0.0.0/8 and ::1.
pub(crate) fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The tag or digest after the repository, for the OCI layout's `ref.name` annotation.
pub(crate) fn tag_of(normalized: &str) -> &str {
    let name = normalized.split('@').next().unwrap_or(normalized);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[last_slash + i + 1..],
        None => normalized.split('@').nth(1).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("bitnami/redis", "docker.io/bitnami/redis:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/foo:v1", "localhost:5000/foo:v1"),
            ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000/a/b/c:latest"),
            ("ghcr.io/org/app:v2", "ghcr.io/org/app:v2"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_reference(&format!("busybox@{digest}")).unwrap(),
            format!("docker.io/library/busybox@{digest}")
        );
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "Nginx",
            "foo:",
            "foo@sha256:xyz",
            "a//b",
            "foo:-x",
            "localhost:5000/../x",
        ] {
            assert!(normalize_reference(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn loopback_registries() {
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("127.8.9.10"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("docker.io"));
        assert!(!is_loopback_registry("10.0.0.1:5000"));
        assert!(!is_loopback_registry("localhost.example.com"));
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("localhost:5000/foo:v1"), "v1");
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(tag_of(&format!("localhost:5000/foo@{digest}")), digest);
    }
}
