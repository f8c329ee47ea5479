//! Registry credentials, and reading them from an imagePullSecret's `.dockerconfigjson`.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::Deserialize;

use crate::Error;

/// How to authenticate to a registry. Bearer tokens are not given here: the client
/// negotiates them from these credentials when a registry asks for a token.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    Basic { username: String, password: String },
}

impl fmt::Debug for RegistryAuth {
    // The password never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl RegistryAuth {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            RegistryAuth::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuthEntry>,
}

#[derive(Deserialize)]
struct DockerAuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The credentials a `.dockerconfigjson` (the data of a `kubernetes.io/dockerconfigjson`
/// Secret) holds for `registry` (`host[:port]`); `Anonymous` when it has none for it.
/// Keys may be written as a bare host, with a scheme, or with a path, as `docker login`
/// and older tools wrote them; Docker Hub is also known as `index.docker.io`.
pub fn auth_from_docker_config(
    dockerconfigjson: &[u8],
    registry: &str,
) -> Result<RegistryAuth, Error> {
    let config: DockerConfig =
        serde_json::from_slice(dockerconfigjson).map_err(|e| Error::DockerConfig(e.to_string()))?;
    let wanted = canonical_host(registry);
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| canonical_host(key) == wanted)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password)
        && !username.is_empty()
    {
        return Ok(RegistryAuth::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Err(Error::DockerConfig(format!(
            "auths.{key} has neither `auth` nor `username` and `password`"
        )));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| Error::DockerConfig(format!("auths.{key}.auth is not base64: {e}")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| Error::DockerConfig(format!("auths.{key}.auth is not UTF-8")))?;
    let Some((username, password)) = decoded.split_once(':') else {
        return Err(Error::DockerConfig(format!(
            "auths.{key}.auth must encode username:password"
        )));
    };
    Ok(RegistryAuth::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

fn canonical_host(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_forms() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                "localhost:5000":{{"username":"bob","password":"pw"}}}}}}"#
        );
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "docker.io").unwrap(),
            RegistryAuth::Basic {
                username: "alice".into(),
                password: "s3cr:et".into()
            }
        );
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "localhost:5000").unwrap(),
            RegistryAuth::Basic {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            auth_from_docker_config(json.as_bytes(), "ghcr.io").unwrap(),
            RegistryAuth::Anonymous
        );
    }

    #[test]
    fn rejects_broken_entries() {
        let err = auth_from_docker_config(br#"{"auths":{"r.io":{"auth":"!!"}}}"#, "r.io")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auths.r.io.auth is not base64"), "{err}");
        assert!(auth_from_docker_config(b"\"nope\"", "r.io").is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let auth = RegistryAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
