//! What a request asks for, parsed from its path, method and query as kube-apiserver's
//! `RequestInfoFactory` does.

use std::collections::HashMap;

use http::Method;

use crate::registry::{self, Resource};
use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

#[derive(Debug)]
pub struct RequestInfo {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
}

/// What a path under `/api` or `/apis` names.
pub enum Target {
    /// `/api`, `/apis`: group discovery.
    Root {
        legacy: bool,
    },
    /// `/apis/<group>`: one group.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`: the resource list.
    GroupVersion {
        group: String,
        version: String,
    },
    Resource(RequestInfo),
}

/// Subresources of a namespace, which are not resources inside it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

pub fn parse(method: &Method, path: &str, query: &Query) -> ApiResult<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Ok(Target::Root { legacy: true }),
        ["apis"] => return Ok(Target::Root { legacy: false }),
        ["apis", group] => return Ok(Target::Group(group.to_string())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    if !registry::group_served(group, version) {
        return Err(ApiError::no_route());
    }
    if rest.is_empty() {
        return Ok(Target::GroupVersion {
            group: group.into(),
            version: version.into(),
        });
    }
    let mut rest: &[&str] = rest;
    let mut namespace = None;
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        } else {
            // `/namespaces/<name>[/status]`: the namespace object itself.
            namespace = None;
        }
    }
    let plural = rest[0];
    let resource = registry::find(group, version, plural).ok_or_else(ApiError::no_route)?;
    if resource.namespaced != namespace.is_some() && !(resource.namespaced && rest.len() == 1) {
        // A cluster-scoped resource under a namespace, or a namespaced object by name
        // without one.
        return Err(ApiError::no_route());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &subresource
        && !resource.has_subresource(sub)
    {
        return Err(ApiError::no_route());
    }
    if name.as_deref() == Some("") {
        return Err(ApiError::no_route());
    }
    let verb = match (method, name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if query.flag("watch") => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        // `pods/<name>/binding` is a create of a binding.
        (&Method::POST, true) if subresource.is_some() => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed()),
    };
    Ok(Target::Resource(RequestInfo {
        resource,
        namespace,
        name,
        subresource,
        verb,
    }))
}

/// Query parameters; [`Query::get`] gives a repeated key's last value, [`Query::all`]
/// every value (`dryRun` is a list in Kubernetes' options).
#[derive(Debug, Default)]
pub struct Query {
    last: HashMap<String, String>,
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut q = Query::default();
        if let Some(raw) = raw {
            for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
                q.last.insert(k.to_string(), v.to_string());
                q.pairs.push((k.into_owned(), v.into_owned()));
            }
        }
        q
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.last.get(key).map(String::as_str)
    }

    /// Every value given for `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean as Go's `strconv.ParseBool` and the apiserver read it: present and empty
    /// means true.
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => matches!(v, "" | "1" | "t" | "T" | "true" | "TRUE" | "True"),
        }
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?}: not an integer"))
            }),
        }
    }

    /// Whether a write is a dry run (`dryRun=All`), checked as kube-apiserver checks the
    /// `dryRun` of the verb's options (`CreateOptions`, `UpdateOptions`, `PatchOptions`):
    /// any other value is refused rather than taken for a real write.
    pub fn dry_run(&self, options_kind: &str) -> ApiResult<bool> {
        dry_run_values(self.all("dryRun"), options_kind)
    }
}

/// Reads the values of a `dryRun` list: empty is a real write, `All` a dry run, anything
/// else a 422 naming the field (kube-apiserver's `ValidateDryRun`).
pub fn dry_run_values<'a>(
    values: impl IntoIterator<Item = &'a str>,
    options_kind: &str,
) -> ApiResult<bool> {
    let mut dry = false;
    for v in values {
        if v != "All" {
            return Err(ApiError::invalid_options(
                &format!("{options_kind}.meta.k8s.io"),
                &[skiff_apimachinery::FieldError::not_supported(
                    "dryRun",
                    serde_json::json!(v),
                    &["All"],
                )],
            ));
        }
        dry = true;
    }
    Ok(dry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, q: &str) -> RequestInfo {
        match parse(&method, path, &Query::parse(Some(q))).ok().unwrap() {
            Target::Resource(i) => i,
            _ => panic!("not a resource"),
        }
    }

    #[test]
    fn namespaced_and_cluster_paths() {
        let i = info(Method::GET, "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            (i.resource.plural, i.namespace.as_deref(), i.verb),
            ("pods", Some("default"), Verb::List)
        );
        let i = info(Method::GET, "/api/v1/namespaces/default", "");
        assert_eq!(
            (i.resource.plural, i.name.as_deref(), i.verb),
            ("namespaces", Some("default"), Verb::Get)
        );
        let i = info(Method::PUT, "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (i.name.as_deref(), i.subresource.as_deref()),
            (Some("x"), Some("finalize"))
        );
        let i = info(Method::GET, "/api/v1/pods", "watch=1");
        assert_eq!((i.namespace, i.verb), (None, Verb::Watch));
        let i = info(
            Method::PATCH,
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            "",
        );
        assert_eq!(
            (i.resource.kind, i.subresource.as_deref(), i.verb),
            ("Deployment", Some("scale"), Verb::Patch)
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        for p in [
            "/api/v2/pods",
            "/apis/apps/v1/namespaces/d/pods",
            "/api/v1/nodes/a/scale",
            "/api/v1/namespaces/d/nodes/x",
            "/apis/nope/v1",
        ] {
            assert!(parse(&Method::GET, p, &Query::default()).is_err(), "{p}");
        }
    }

    #[test]
    fn go_booleans() {
        let q = Query::parse(Some("watch=&a=1&b=false&c=True"));
        assert!(q.flag("watch") && q.flag("a") && !q.flag("b") && q.flag("c") && !q.flag("d"));
    }
}
