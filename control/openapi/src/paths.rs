//! Paths and operations of one group-version document, shaped like kube-apiserver's: every
//! operation names its `x-kubernetes-group-version-kind` and `x-kubernetes-action`, takes its
//! query parameters inline (kubectl's field validation check looks for `fieldValidation` among
//! the PATCH operation's own parameters) and lists its request media types (client-side apply
//! uses OpenAPI patch meta only when the PATCH operation accepts
//! `application/strategic-merge-patch+json`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Value, json};

use crate::Resource;
use crate::schemas::{SchemaSet, gvk, schema_ref};

/// Media types a PATCH body may have.
pub(crate) const PATCH_MEDIA_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

const BODY_MEDIA_TYPES: &[&str] = &["application/json", "application/yaml"];
const RESPONSE_MEDIA_TYPES: &[&str] = &["application/json", "application/yaml"];
const LIST_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];

/// Adds the paths of one resource (collection, item, all-namespaces list and subresources).
pub(crate) fn add_resource(
    paths: &mut BTreeMap<String, Value>,
    schemas: &mut SchemaSet,
    r: &Resource,
) {
    let ctx = Context::new(r, schemas);
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let scope = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{prefix}{scope}/{}", r.plural);
    let item = format!("{collection}/{{name}}");
    let own = gvk(r.group, r.version, r.kind);

    // The collection: list, create, deletecollection.
    let mut ops = ctx.path_parameters(false);
    ops.insert(
        "get".into(),
        ctx.operation(
            "list",
            &ctx.id("list", ""),
            &format!("list or watch objects of kind {}", r.kind),
            &own,
            list_parameters(),
            None,
            responses(&[("200", "OK")], &ctx.list_body, LIST_MEDIA_TYPES),
        ),
    );
    ops.insert(
        "post".into(),
        ctx.operation(
            "post",
            &ctx.id("create", ""),
            &format!("create a {}", r.kind),
            &own,
            write_parameters(false),
            Some((BODY_MEDIA_TYPES, ctx.body.clone())),
            responses(
                &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                &ctx.body,
                RESPONSE_MEDIA_TYPES,
            ),
        ),
    );
    let mut deletecollection_parameters = list_parameters();
    deletecollection_parameters.extend(delete_parameters());
    ops.insert(
        "delete".into(),
        ctx.operation(
            "deletecollection",
            &ctx.id("deleteCollection", ""),
            &format!("delete collection of {}", r.kind),
            &own,
            deletecollection_parameters,
            Some((&["application/json"], ctx.delete_options.clone())),
            responses(&[("200", "OK")], &ctx.status, RESPONSE_MEDIA_TYPES),
        ),
    );
    paths.insert(collection, Value::Object(ops));

    // The item: read, replace, patch, delete.
    let mut ops = ctx.path_parameters(true);
    ops.insert(
        "get".into(),
        ctx.operation(
            "get",
            &ctx.id("read", ""),
            &format!("read the specified {}", r.kind),
            &own,
            Vec::new(),
            None,
            responses(&[("200", "OK")], &ctx.body, RESPONSE_MEDIA_TYPES),
        ),
    );
    ops.insert(
        "put".into(),
        ctx.replace(
            &own,
            "",
            &ctx.body,
            &format!("replace the specified {}", r.kind),
        ),
    );
    ops.insert(
        "patch".into(),
        ctx.patch(
            &own,
            "",
            &ctx.body,
            &format!("partially update the specified {}", r.kind),
        ),
    );
    ops.insert(
        "delete".into(),
        ctx.operation(
            "delete",
            &ctx.id("delete", ""),
            &format!("delete a {}", r.kind),
            &own,
            delete_parameters(),
            Some((&["application/json"], ctx.delete_options.clone())),
            responses(
                &[("200", "OK"), ("202", "Accepted")],
                &ctx.status,
                RESPONSE_MEDIA_TYPES,
            ),
        ),
    );
    paths.insert(item.clone(), Value::Object(ops));

    // Namespaced kinds can be listed across namespaces.
    if r.namespaced {
        let mut ops = serde_json::Map::new();
        ops.insert("parameters".into(), json!([pretty_parameter()]));
        ops.insert(
            "get".into(),
            ctx.operation(
                "list",
                &format!("list{}{}ForAllNamespaces", ctx.group_version, r.kind),
                &format!("list or watch objects of kind {}", r.kind),
                &own,
                list_parameters(),
                None,
                responses(&[("200", "OK")], &ctx.list_body, LIST_MEDIA_TYPES),
            ),
        );
        paths.insert(format!("{prefix}/{}", r.plural), Value::Object(ops));
    }

    for sub in r.subresources {
        if let Some(ops) = subresource(&ctx, schemas, sub, &own) {
            paths.insert(format!("{item}/{sub}"), Value::Object(ops));
        }
    }
}

/// The operations of one subresource, or `None` for one without a known shape.
fn subresource(
    ctx: &Context,
    schemas: &mut SchemaSet,
    sub: &str,
    own: &Value,
) -> Option<serde_json::Map<String, Value>> {
    let r = ctx.resource;
    let suffix = capitalize(sub);
    let mut ops = ctx.path_parameters(true);
    match sub {
        // Subresources that read and write the whole object.
        "status" | "ephemeralcontainers" | "resize" => {
            ops.insert(
                "get".into(),
                ctx.operation(
                    "get",
                    &ctx.id("read", &suffix),
                    &format!("read {sub} of the specified {}", r.kind),
                    own,
                    Vec::new(),
                    None,
                    responses(&[("200", "OK")], &ctx.body, RESPONSE_MEDIA_TYPES),
                ),
            );
            let put = ctx.replace(
                own,
                &suffix,
                &ctx.body,
                &format!("replace {sub} of the specified {}", r.kind),
            );
            ops.insert("put".into(), put);
            let patch = ctx.patch(
                own,
                &suffix,
                &ctx.body,
                &format!("partially update {sub} of the specified {}", r.kind),
            );
            ops.insert("patch".into(), patch);
        }
        "scale" => {
            let scale_gvk = gvk("autoscaling", "v1", "Scale");
            let body = match schemas.kind("autoscaling", "v1", "Scale") {
                Some(name) => schema_ref(&name),
                None => json!({ "type": "object" }),
            };
            ops.insert(
                "get".into(),
                ctx.operation(
                    "get",
                    &ctx.id("read", &suffix),
                    &format!("read scale of the specified {}", r.kind),
                    &scale_gvk,
                    Vec::new(),
                    None,
                    responses(&[("200", "OK")], &body, RESPONSE_MEDIA_TYPES),
                ),
            );
            let put = ctx.replace(
                &scale_gvk,
                &suffix,
                &body,
                &format!("replace scale of the specified {}", r.kind),
            );
            ops.insert("put".into(), put);
            let patch = ctx.patch(
                &scale_gvk,
                &suffix,
                &body,
                &format!("partially update scale of the specified {}", r.kind),
            );
            ops.insert("patch".into(), patch);
        }
        // Namespace finalize: a replace of the object that only writes spec.finalizers.
        "finalize" => {
            let put = ctx.replace(
                own,
                &suffix,
                &ctx.body,
                &format!("replace finalize of the specified {}", r.kind),
            );
            ops.insert("put".into(), put);
        }
        "binding" | "eviction" => {
            let (group, version, kind) = if sub == "binding" {
                (r.group, r.version, "Binding")
            } else {
                ("policy", "v1", "Eviction")
            };
            let binding_gvk = gvk(group, version, kind);
            let body = match schemas.kind(group, version, kind) {
                Some(name) => schema_ref(&name),
                None => json!({ "type": "object" }),
            };
            ops.insert(
                "post".into(),
                ctx.operation(
                    "post",
                    &ctx.id("create", &suffix),
                    &format!("create {sub} of a {}", r.kind),
                    &binding_gvk,
                    write_parameters(false),
                    Some((BODY_MEDIA_TYPES, body.clone())),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        &body,
                        RESPONSE_MEDIA_TYPES,
                    ),
                ),
            );
        }
        "log" => {
            ops.insert(
                "get".into(),
                ctx.operation(
                    "get",
                    &ctx.id("read", &suffix),
                    &format!("read log of the specified {}", r.kind),
                    own,
                    log_parameters(),
                    None,
                    responses(
                        &[("200", "OK")],
                        &json!({ "type": "string" }),
                        &["text/plain"],
                    ),
                ),
            );
        }
        _ => return None,
    }
    Some(ops)
}

/// What every operation of one resource shares.
struct Context<'a> {
    resource: &'a Resource,
    /// `CoreV1`, `AppsV1`, `CoordinationV1`: the middle of upstream's operation ids.
    group_version: String,
    /// `core_v1`, `apps_v1`: upstream's tag.
    tag: String,
    body: Value,
    list_body: Value,
    status: Value,
    delete_options: Value,
    patch_body: Value,
}

impl<'a> Context<'a> {
    fn new(r: &'a Resource, schemas: &mut SchemaSet) -> Self {
        // A kind without a schema still gets its paths, so kubectl sees that the server
        // validates fields; its bodies are then untyped objects.
        let body = match schemas.kind(r.group, r.version, r.kind) {
            Some(name) => schema_ref(&name),
            None => json!({ "type": "object" }),
        };
        let list_body = match schemas.list(r.group, r.version, r.kind) {
            Some(name) => schema_ref(&name),
            None => json!({ "type": "object" }),
        };
        let status = schema_ref(&schemas.tagged_meta::<meta::Status>(&[gvk("", "v1", "Status")]));
        let delete_gvks = [
            gvk("", "v1", "DeleteOptions"),
            gvk(r.group, r.version, "DeleteOptions"),
        ];
        let delete_options = schema_ref(&schemas.tagged_meta::<meta::DeleteOptions>(&delete_gvks));
        let patch_body = schema_ref(&schemas.meta::<meta::Patch>());
        let group_name = if r.group.is_empty() {
            "core".to_owned()
        } else {
            r.group.trim_end_matches(".k8s.io").to_owned()
        };
        let group_version = format!(
            "{}{}",
            group_name.split('.').map(capitalize).collect::<String>(),
            capitalize(r.version)
        );
        let tag = format!("{}_{}", group_name.replace('.', "_"), r.version);
        Context {
            resource: r,
            group_version,
            tag,
            body,
            list_body,
            status,
            delete_options,
            patch_body,
        }
    }

    /// Upstream's operation id, e.g. `patchAppsV1NamespacedDeploymentScale`.
    fn id(&self, verb: &str, suffix: &str) -> String {
        let scope = if self.resource.namespaced {
            "Namespaced"
        } else {
            ""
        };
        format!(
            "{verb}{}{scope}{}{suffix}",
            self.group_version, self.resource.kind
        )
    }

    /// The path item's own parameters: `{name}`, `{namespace}` and `pretty`.
    fn path_parameters(&self, item: bool) -> serde_json::Map<String, Value> {
        let mut parameters = Vec::new();
        if item {
            parameters.push(path_parameter(
                "name",
                &format!("name of the {}", self.resource.kind),
            ));
        }
        if self.resource.namespaced {
            parameters.push(path_parameter(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        parameters.push(pretty_parameter());
        let mut ops = serde_json::Map::new();
        ops.insert("parameters".into(), Value::Array(parameters));
        ops
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &self,
        action: &str,
        id: &str,
        description: &str,
        gvk: &Value,
        parameters: Vec<Value>,
        body: Option<(&[&str], Value)>,
        responses: Value,
    ) -> Value {
        let mut op = serde_json::Map::new();
        op.insert("description".into(), description.into());
        op.insert("operationId".into(), id.into());
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some((media_types, schema)) = body {
            op.insert(
                "requestBody".into(),
                json!({ "content": content(media_types, &schema), "required": true }),
            );
        }
        op.insert("responses".into(), responses);
        op.insert("tags".into(), json!([self.tag]));
        op.insert("x-kubernetes-action".into(), action.into());
        op.insert("x-kubernetes-group-version-kind".into(), gvk.clone());
        Value::Object(op)
    }

    fn replace(&self, gvk: &Value, suffix: &str, body: &Value, description: &str) -> Value {
        self.operation(
            "put",
            &self.id("replace", suffix),
            description,
            gvk,
            write_parameters(false),
            Some((BODY_MEDIA_TYPES, body.clone())),
            responses(
                &[("200", "OK"), ("201", "Created")],
                body,
                RESPONSE_MEDIA_TYPES,
            ),
        )
    }

    fn patch(&self, gvk: &Value, suffix: &str, body: &Value, description: &str) -> Value {
        self.operation(
            "patch",
            &self.id("patch", suffix),
            description,
            gvk,
            write_parameters(true),
            Some((PATCH_MEDIA_TYPES, self.patch_body.clone())),
            responses(
                &[("200", "OK"), ("201", "Created")],
                body,
                RESPONSE_MEDIA_TYPES,
            ),
        )
    }
}

fn content(media_types: &[&str], schema: &Value) -> Value {
    Value::Object(
        media_types
            .iter()
            .map(|m| ((*m).to_owned(), json!({ "schema": schema })))
            .collect(),
    )
}

fn responses(codes: &[(&str, &str)], schema: &Value, media_types: &[&str]) -> Value {
    Value::Object(
        codes
            .iter()
            .map(|(code, description)| {
                (
                    (*code).to_owned(),
                    json!({ "description": description, "content": content(media_types, schema) }),
                )
            })
            .collect(),
    )
}

fn query_parameter(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "description": description,
        "in": "query",
        "name": name,
        "schema": { "type": ty, "uniqueItems": true },
    })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({
        "description": description,
        "in": "path",
        "name": name,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty_parameter() -> Value {
    query_parameter(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    )
}

/// Parameters of create, replace and (with `patch`) patch.
fn write_parameters(patch: bool) -> Vec<Value> {
    let mut parameters = vec![
        query_parameter(
            "dryRun",
            "string",
            "When present, modifications are not persisted. The only valid value is All: every dry run stage is processed.",
        ),
        query_parameter(
            "fieldManager",
            "string",
            "The name of the actor or entity making these changes, at most 128 printable characters. Required for apply patches (application/apply-patch), optional otherwise.",
        ),
        query_parameter(
            "fieldValidation",
            "string",
            "How the server responds to unknown or duplicate fields in the request object. Ignore: drops them silently. Warn: serves the request and warns about each one. Strict: fails the request.",
        ),
    ];
    if patch {
        parameters.push(query_parameter(
            "force",
            "boolean",
            "Forces an apply patch: the caller takes over fields owned by other managers. Must be unset for other patch types.",
        ));
    }
    parameters
}

fn delete_parameters() -> Vec<Value> {
    vec![
        query_parameter(
            "dryRun",
            "string",
            "When present, modifications are not persisted. The only valid value is All: every dry run stage is processed.",
        ),
        query_parameter(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted; zero deletes immediately, unset uses the kind's default.",
        ),
        query_parameter(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy. Whether dependents are orphaned.",
        ),
        query_parameter(
            "propagationPolicy",
            "string",
            "How garbage collection treats dependents: Orphan, Background or Foreground.",
        ),
    ]
}

fn list_parameters() -> Vec<Value> {
    vec![
        query_parameter(
            "allowWatchBookmarks",
            "boolean",
            "Asks for BOOKMARK watch events; the server may send them at its discretion.",
        ),
        query_parameter(
            "continue",
            "string",
            "The continue token of a previous chunked list response, to get the next chunk.",
        ),
        query_parameter(
            "fieldSelector",
            "string",
            "Restricts the returned objects by their fields. Defaults to everything.",
        ),
        query_parameter(
            "labelSelector",
            "string",
            "Restricts the returned objects by their labels. Defaults to everything.",
        ),
        query_parameter(
            "limit",
            "integer",
            "The most objects to return; the response then carries a continue token if more exist.",
        ),
        query_parameter(
            "resourceVersion",
            "string",
            "Which resource versions the request may be served from. Defaults to the most recent.",
        ),
        query_parameter(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to list calls: Exact or NotOlderThan.",
        ),
        query_parameter(
            "sendInitialEvents",
            "boolean",
            "With watch=true, starts the watch with synthetic ADDED events for the current objects.",
        ),
        query_parameter(
            "timeoutSeconds",
            "integer",
            "Ends the list or watch call after this many seconds.",
        ),
        query_parameter(
            "watch",
            "boolean",
            "Watches for changes to the described resources and returns them as a stream of events.",
        ),
    ]
}

fn log_parameters() -> Vec<Value> {
    vec![
        query_parameter(
            "container",
            "string",
            "The container to stream logs of; optional when the pod has one container.",
        ),
        query_parameter("follow", "boolean", "Follows the log stream."),
        query_parameter(
            "limitBytes",
            "integer",
            "The most bytes to return before the log is cut.",
        ),
        query_parameter(
            "previous",
            "boolean",
            "Returns the logs of the previous, terminated container.",
        ),
        query_parameter(
            "sinceSeconds",
            "integer",
            "Only logs newer than this many seconds.",
        ),
        query_parameter(
            "tailLines",
            "integer",
            "How many lines from the end of the log to show.",
        ),
        query_parameter(
            "timestamps",
            "boolean",
            "Prefixes every line with an RFC3339 timestamp.",
        ),
    ]
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
