//! The generic resource handler: every verb on every resource of the registry.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use skiff_apimachinery::Kind;
use skiff_selectors::{FieldSelector, LabelSelector};
use skiff_store::{KeyValue, ListOptions};

use crate::decode::{self, FieldValidation};
use crate::object::{self, meta_mut};
use crate::patch::PatchKind;
use crate::registry::Resource;
use crate::request::{self, Query, RequestInfo, Target, Verb};
use crate::status::{ApiError, ApiResult};
use crate::table::{self, Format};
use crate::{AppState, discovery, json_response, strategy};

/// Entry point for everything under `/api` and `/apis`.
pub async fn api(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match serve(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn serve(state: &Arc<AppState>, req: Request) -> ApiResult<Response> {
    let (mut parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let target = request::parse(&parts.method, parts.uri.path(), &query)?;
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let info = match target {
        Target::Root { legacy } => {
            if let Some(v) = discovery::aggregated_version(&accept) {
                let mut resp = json_response(StatusCode::OK, &discovery::aggregated(legacy, v));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(&discovery::aggregated_content_type(v))
                        .expect("valid header"),
                );
                return Ok(resp);
            }
            let v = if legacy {
                discovery::api_versions(&state.server_address)
            } else {
                discovery::api_group_list()
            };
            return Ok(json_response(StatusCode::OK, &v));
        }
        Target::Group(g) => {
            return discovery::api_group(&g)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(ApiError::no_route);
        }
        Target::GroupVersion { group, version } => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::resource_list(&group, &version),
            ));
        }
        Target::Resource(info) => info,
    };
    // Pods' connect subresources: streamed to the node, not stored.
    if let Some(sub @ ("exec" | "attach" | "portforward")) = info.subresource.as_deref()
        && info.resource.has_subresource(sub)
    {
        let key = info.resource.key(
            info.namespace.as_deref(),
            info.name.as_deref().unwrap_or(""),
        );
        let kv = state.store.get(&key).await?.ok_or_else(|| {
            ApiError::not_found(info.resource, info.name.as_deref().unwrap_or(""))
        })?;
        let pod = object::decode(info.resource, &kv)?;
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        return crate::remote::proxy(
            state,
            &pod,
            sub,
            &parts.method,
            parts.uri.query(),
            &parts.headers,
            upgrade,
        )
        .await;
    }
    let body = match parts.method {
        Method::GET | Method::HEAD => Bytes::new(),
        _ => read_body(body).await?,
    };
    // Every write says whether it is a dry run before anything else is looked at: the
    // options of a delete come from its body (kubectl's `DeleteOptions`, where its
    // `dryRun` travels) or, without a body, from the query; the other writes' from the
    // query.
    let delete = match info.verb {
        Verb::Delete | Verb::DeleteCollection => {
            Some(delete_options(&parts.headers, &body, &query)?)
        }
        _ => None,
    };
    let dry_run = match (&delete, info.verb) {
        (Some(opts), _) => opts.dry_run,
        (None, Verb::Create) => query.dry_run("CreateOptions")?,
        (None, Verb::Update) => query.dry_run("UpdateOptions")?,
        (None, Verb::Patch) => query.dry_run("PatchOptions")?,
        (None, _) => false,
    };
    let ctx = Ctx {
        state,
        info: &info,
        query: &query,
        headers: &parts.headers,
        format: table::format(&accept, query.get("includeObject")),
        dry_run,
    };
    match (info.verb, delete) {
        (Verb::Get, _) => ctx.get().await,
        (Verb::List, _) => ctx.list().await,
        (Verb::Watch, _) => ctx.watch().await,
        (Verb::Create, _) => ctx.create(&body).await,
        (Verb::Update, _) => ctx.update(&body).await,
        (Verb::Patch, _) => ctx.patch(&body).await,
        (Verb::Delete, Some(opts)) => ctx.delete(&opts).await,
        (Verb::DeleteCollection, Some(opts)) => ctx.delete_collection(&opts).await,
        (Verb::Delete | Verb::DeleteCollection, None) => unreachable!("options read above"),
    }
}

mod eviction;

struct Ctx<'a> {
    state: &'a Arc<AppState>,
    info: &'a RequestInfo,
    query: &'a Query,
    headers: &'a HeaderMap,
    format: Format,
    /// `dryRun=All`: everything a write does but the store write.
    dry_run: bool,
}

/// A response body with optional `Warning` headers.
struct Reply {
    code: StatusCode,
    body: Value,
    warnings: Vec<String>,
}

impl Reply {
    fn into_response(self) -> Response {
        let mut resp = json_response(self.code, &self.body);
        for w in self.warnings {
            let text = format!("299 - {}", serde_json::to_string(&w).unwrap_or_default());
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }
}

fn kind_of(r: &Resource) -> Kind<'static> {
    Kind {
        group: r.group,
        kind: r.kind,
    }
}

impl Ctx<'_> {
    fn resource(&self) -> &'static Resource {
        self.info.resource
    }

    fn ns(&self) -> Option<&str> {
        self.info.namespace.as_deref()
    }

    fn name(&self) -> &str {
        self.info.name.as_deref().unwrap_or("")
    }

    fn key(&self) -> String {
        self.resource().key(self.ns(), self.name())
    }

    /// Removes `obj` from the store at `key` if it is still at `revision`, and gives back
    /// what its strategy reserved for it: every path that removes an object goes here.
    async fn remove(
        &self,
        key: &str,
        revision: i64,
        obj: &Value,
    ) -> skiff_store::Result<skiff_store::KeyValue> {
        let kv = self.state.store.delete(key, Some(revision)).await?;
        self.resource().strategy.release(self.state, obj).await;
        Ok(kv)
    }

    fn field_validation(&self) -> ApiResult<FieldValidation> {
        FieldValidation::from_query(self.query.get("fieldValidation"))
    }

    fn object_reply(&self, code: StatusCode, obj: Value, warnings: Vec<String>) -> Response {
        let body = match self.format {
            Format::Table(include) if self.info.subresource.is_none() => {
                table::table(self.resource(), &[obj], include, json!({}), true)
            }
            _ => obj,
        };
        Reply {
            code,
            body,
            warnings,
        }
        .into_response()
    }

    async fn read(&self) -> ApiResult<(KeyValue, Value)> {
        let kv = self
            .state
            .store
            .get(&self.key())
            .await?
            .ok_or_else(|| ApiError::not_found(self.resource(), self.name()))?;
        let obj = object::decode(self.resource(), &kv)?;
        Ok((kv, obj))
    }

    // ---- reading -------------------------------------------------------------------

    async fn get(&self) -> ApiResult<Response> {
        let (_, obj) = self.read().await?;
        match self.info.subresource.as_deref() {
            Some("scale") => Ok(json_response(
                StatusCode::OK,
                &to_scale(self.resource(), &obj),
            )),
            Some("log") => crate::logs::pod_log(self.state, &obj, self.query).await,
            _ => Ok(self.object_reply(StatusCode::OK, obj, Vec::new())),
        }
    }

    fn selectors(&self) -> ApiResult<(LabelSelector, FieldSelector)> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        for f in fields.fields() {
            if !strategy::field_supported(self.resource(), f) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
        }
        Ok((labels, fields))
    }

    async fn list(&self) -> ApiResult<Response> {
        let (labels, fields) = self.selectors()?;
        let limit = self.query.int("limit")?.unwrap_or(0).max(0) as usize;
        let prefix = self.resource().prefix(self.ns());
        let (mut start_after, mut revision) = (None, None);
        if let Some(token) = self.query.get("continue").filter(|t| !t.is_empty()) {
            let (rev, start) = decode_continue(token, &prefix)?;
            revision = Some(rev);
            start_after = Some(start);
        } else if let (Some(rv), Some("Exact")) = (
            self.query.get("resourceVersion"),
            self.query.get("resourceVersionMatch"),
        ) {
            revision = Some(object::parse_resource_version(rv)?);
        }
        // A field selector on the name narrows the read to one key.
        let exact_name = fields.exact("metadata.name").map(str::to_string);
        let mut items = Vec::new();
        let mut next_continue = None;
        let list_revision;
        if let (Some(name), None) = (&exact_name, &start_after) {
            let key = format!("{prefix}{name}");
            let current = self.state.store.current_revision().await?;
            if self.resource().namespaced && self.ns().is_none() {
                // All namespaces: scan, the name filter applies below.
                list_revision = self
                    .scan(
                        &prefix,
                        revision,
                        limit,
                        None,
                        &labels,
                        &fields,
                        &mut items,
                        &mut next_continue,
                    )
                    .await?;
            } else {
                if let Some(kv) = self.state.store.get(&key).await? {
                    let obj = object::decode(self.resource(), &kv)?;
                    if self.matches(&obj, &labels, &fields) {
                        items.push(obj);
                    }
                }
                list_revision = current;
            }
        } else {
            list_revision = self
                .scan(
                    &prefix,
                    revision,
                    limit,
                    start_after,
                    &labels,
                    &fields,
                    &mut items,
                    &mut next_continue,
                )
                .await?;
        }
        let mut meta = json!({"resourceVersion": list_revision.to_string()});
        if let Some(c) = next_continue {
            meta["continue"] = json!(c);
        }
        let body = match self.format {
            Format::Table(include) => table::table(self.resource(), &items, include, meta, true),
            Format::Object => json!({
                "kind": format!("{}List", self.resource().kind),
                "apiVersion": self.resource().api_version(),
                "metadata": meta,
                "items": items,
            }),
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    /// Reads pages from the store until `limit` matching objects are found.
    #[allow(clippy::too_many_arguments)]
    async fn scan(
        &self,
        prefix: &str,
        revision: Option<i64>,
        limit: usize,
        mut start_after: Option<String>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        items: &mut Vec<Value>,
        next_continue: &mut Option<String>,
    ) -> ApiResult<i64> {
        let mut revision = revision;
        loop {
            let want = if limit == 0 {
                0
            } else {
                (limit - items.len()).max(1)
            };
            let page = self
                .state
                .store
                .list(
                    prefix,
                    ListOptions {
                        revision,
                        limit: want,
                        start_after: start_after.clone(),
                    },
                )
                .await?;
            revision = Some(page.revision);
            for kv in &page.items {
                let obj = object::decode(self.resource(), kv)?;
                if self.matches(&obj, labels, fields) {
                    items.push(obj);
                }
            }
            let last_key = page.items.last().map(|kv| kv.key.clone());
            if !page.more || last_key.is_none() {
                return Ok(page.revision);
            }
            start_after = last_key;
            if limit > 0 && items.len() >= limit {
                *next_continue = Some(encode_continue(
                    page.revision,
                    start_after.as_deref().unwrap_or(""),
                    prefix,
                ));
                return Ok(page.revision);
            }
        }
    }

    fn matches(&self, obj: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        (labels.is_empty() || labels.matches(&object::labels(obj)))
            && (fields.is_empty() || fields.matches(&|f: &str| object::field_value(obj, f)))
    }

    async fn watch(&self) -> ApiResult<Response> {
        let (labels, fields) = self.selectors()?;
        let resource = self.resource();
        let prefix = resource.prefix(self.ns());
        let timeout = self
            .query
            .int("timeoutSeconds")?
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(Duration::from_secs(1800));
        let bookmarks = self.query.flag("allowWatchBookmarks");
        let send_initial = self
            .query
            .get("sendInitialEvents")
            .map(|_| self.query.flag("sendInitialEvents"));
        let rv = self.query.get("resourceVersion").unwrap_or("");
        // Where the stream starts, and the objects to send first as ADDED: read a page at
        // a time at the revision of the first, as the client takes them, so that a watch
        // holds at most a page of the store however large the resource is and however
        // slowly its client reads.
        let (start, mut initial, mut initial_after) =
            if (rv.is_empty() || rv == "0") || send_initial == Some(true) {
                let page = self
                    .state
                    .store
                    .list(
                        &prefix,
                        ListOptions {
                            revision: None,
                            limit: INITIAL_EVENTS_PAGE,
                            start_after: None,
                        },
                    )
                    .await?;
                let after = if page.more {
                    page.items.last().map(|kv| kv.key.clone())
                } else {
                    None
                };
                (page.revision, page.items, after)
            } else {
                (object::parse_resource_version(rv)?, Vec::new(), None)
            };
        let store = self.state.store.clone();
        let subscription = self.state.cache.subscribe(start);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let format = self.format;
        let filter = WatchFilter {
            resource,
            prefix,
            labels,
            fields,
        };
        tokio::spawn(async move {
            let mut out = EventWriter {
                tx,
                resource,
                format,
                first: true,
            };
            let mut sub = match subscription {
                Ok(s) => s,
                Err(expired) => {
                    let _ = out.expired(expired.oldest).await;
                    return;
                }
            };
            loop {
                for kv in std::mem::take(&mut initial) {
                    let Ok(obj) = object::decode(resource, &kv) else {
                        continue;
                    };
                    if filter.matches(&obj) && !out.send("ADDED", obj).await {
                        return;
                    }
                }
                let Some(after) = initial_after.take() else {
                    break;
                };
                let page = store
                    .list(
                        &filter.prefix,
                        ListOptions {
                            revision: Some(start),
                            limit: INITIAL_EVENTS_PAGE,
                            start_after: Some(after),
                        },
                    )
                    .await;
                match page {
                    Ok(page) => {
                        if page.more {
                            initial_after = page.items.last().map(|kv| kv.key.clone());
                        }
                        initial = page.items;
                    }
                    // Compacted past while the client was reading: it relists.
                    Err(_) => {
                        let _ = out.expired(start).await;
                        return;
                    }
                }
            }
            if send_initial == Some(true) {
                let mut b = bookmark(resource, start);
                meta_mut(&mut b)
                    .entry("annotations")
                    .or_insert_with(|| json!({}))["k8s.io/initial-events-end"] = json!("true");
                if !out.send_raw("BOOKMARK", b).await {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        // As kube-apiserver: a last bookmark lets the client resume from
                        // the newest revision instead of replaying.
                        if bookmarks {
                            let _ = out.send_raw("BOOKMARK", bookmark(resource, sub.bookmark_revision())).await;
                        }
                        return;
                    }
                    _ = out.tx.closed() => return,
                    _ = tick.tick(), if bookmarks => {
                        if !out.send_raw("BOOKMARK", bookmark(resource, sub.bookmark_revision())).await {
                            return;
                        }
                    }
                    ev = sub.next() => {
                        match ev {
                            Ok(ev) => {
                                if let Some((kind, obj)) = filter.event(&ev)
                                    && !out.send_served(kind, obj).await {
                                        return;
                                    }
                            }
                            Err(expired) => {
                                let _ = out.expired(expired.oldest).await;
                                return;
                            }
                        }
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut resp = Response::new(Body::from_stream(stream));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }

    // ---- writing -------------------------------------------------------------------

    async fn create(&self, body: &[u8]) -> ApiResult<Response> {
        if self.info.subresource.as_deref() == Some("binding") {
            return self.bind(body).await;
        }
        if self.info.subresource.as_deref() == Some("eviction") {
            return self.evict(body).await;
        }
        if self.info.subresource.is_some() {
            return Err(ApiError::method_not_allowed());
        }
        let mut input = decode::body_object(self.headers, body)?;
        decode::check_type(self.resource(), &mut input)?;
        let (obj, warnings) = decode::canonical(self.resource(), &input, self.field_validation()?)?;
        let created = self.create_object(obj).await?;
        Ok(self.object_reply(StatusCode::CREATED, created, warnings))
    }

    async fn create_object(&self, mut obj: Value) -> ApiResult<Value> {
        let resource = self.resource();
        resource.strategy.admit_create(self.state, &mut obj).await?;
        self.prepare_create(&mut obj)?;
        let name = object::name(&obj).to_string();
        let ns = object::meta_str(&obj, "namespace").map(str::to_string);
        if let Some(ns) = &ns {
            self.check_namespace_open(ns).await?;
        }
        if self.dry_run {
            // What the write would answer: a name that is taken is a conflict.
            let key = resource.key(ns.as_deref(), &name);
            if self.state.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(resource, &name));
            }
            resource
                .strategy
                .reserve(self.state, &mut obj, true)
                .await?;
            return Ok(obj);
        }
        let reserved = resource
            .strategy
            .reserve(self.state, &mut obj, false)
            .await?;
        let key = resource.key(ns.as_deref(), &name);
        let created = self
            .state
            .store
            .create(&key, object::encode(resource, &obj))
            .await;
        let kv = match created {
            Ok(kv) => kv,
            Err(e) => {
                // Only what this create took: a node named again with its own pod CIDR
                // (AlreadyExists) must not take the live node's reservation with it.
                if reserved {
                    resource.strategy.release(self.state, &obj).await;
                }
                return Err(match e {
                    skiff_store::Error::AlreadyExists => ApiError::already_exists(resource, &name),
                    other => other.into(),
                });
            }
        };
        object::written(resource, obj, &kv)
    }

    fn prepare_create(&self, obj: &mut Value) -> ApiResult<()> {
        let resource = self.resource();
        let url_ns = self.ns().map(str::to_string);
        {
            let meta = meta_mut(obj);
            if resource.namespaced {
                let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
                match &url_ns {
                    Some(ns) if body_ns.is_empty() || body_ns == ns => {
                        meta.insert("namespace".into(), json!(ns));
                    }
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                    None => return Err(ApiError::no_route()),
                }
            } else {
                meta.remove("namespace");
            }
            let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
            let generate = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() && !generate.is_empty() {
                meta.insert("name".into(), json!(object::generate_name(generate)));
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
            if resource.has_spec {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(f);
            }
        }
        object::drop_empty_meta(obj);
        strategy::reset_status_on_create(resource, obj);
        skiff_apimachinery::apply_defaults(kind_of(resource), obj);
        resource.strategy.prepare_for_create(obj);
        let errors =
            skiff_apimachinery::validate(kind_of(resource), resource.namespaced, obj, None);
        if !errors.is_empty() {
            return Err(ApiError::invalid(resource, object::name(obj), &errors));
        }
        Ok(())
    }

    async fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let ns_res = crate::registry::find("", "v1", "namespaces").expect("namespaces served");
        let Some(kv) = self.state.store.get(&ns_res.key(None, ns)).await? else {
            return Err(ApiError::namespace_not_found(ns));
        };
        let obj = object::decode(ns_res, &kv)?;
        if object::is_deleting(&obj) {
            return Err(ApiError::forbidden(
                self.resource(),
                self.name(),
                format_args!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    async fn bind(&self, body: &[u8]) -> ApiResult<Response> {
        let binding = decode::body_object(self.headers, body)?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                self.resource(),
                self.name(),
                &[skiff_apimachinery::FieldError::required("target.name", "")],
            ));
        }
        let pod_name = self.name().to_string();
        self.guaranteed_update(None, |pod| {
            let mut pod = pod.clone();
            let current = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !current.is_empty() {
                let mut e = ApiError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on pods/binding \"{pod_name}\": pod {pod_name} is already assigned to node \"{current}\""
                    ),
                );
                e.details = Some(json!({"name": pod_name, "kind": "pods/binding"}));
                return Err(e);
            }
            pod["spec"]["nodeName"] = json!(node);
            set_condition(&mut pod, "PodScheduled", "True");
            Ok(pod)
        }, true)
        .await?;
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    async fn update(&self, body: &[u8]) -> ApiResult<Response> {
        let resource = self.resource();
        let sub = self.info.subresource.clone();
        let mut input = decode::body_object(self.headers, body)?;
        if sub.as_deref() == Some("scale") {
            let replicas = input.pointer("/spec/replicas").and_then(Value::as_i64);
            let precondition = object::meta_str(&input, "resourceVersion")
                .map(object::parse_resource_version)
                .transpose()?;
            let updated = self
                .guaranteed_update(
                    precondition,
                    |obj| {
                        let mut obj = obj.clone();
                        obj["spec"]["replicas"] = json!(replicas.unwrap_or(0));
                        Ok(obj)
                    },
                    false,
                )
                .await?;
            return Ok(json_response(
                StatusCode::OK,
                &to_scale(self.resource(), &updated),
            ));
        }
        decode::check_type(resource, &mut input)?;
        let (obj, warnings) = decode::canonical(resource, &input, self.field_validation()?)?;
        let body_name = object::name(&obj);
        if body_name != self.name() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({})",
                self.name()
            )));
        }
        let precondition = object::meta_str(&obj, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(object::parse_resource_version)
            .transpose()?;
        let updated = self
            .guaranteed_update(precondition, |_| Ok(obj.clone()), false)
            .await?;
        Ok(self.object_reply(StatusCode::OK, updated, warnings))
    }

    /// Reads the object, computes its new form with `change(old, old_clone)`, prepares and
    /// validates it, and writes it guarded by the revision it read. Conflicts are retried
    /// unless the caller gave a resourceVersion precondition (then they are the client's).
    async fn guaranteed_update(
        &self,
        precondition: Option<i64>,
        change: impl Fn(&Value) -> ApiResult<Value>,
        internal: bool,
    ) -> ApiResult<Value> {
        let resource = self.resource();
        let sub = if internal {
            Some("internal")
        } else {
            self.info.subresource.as_deref()
        };
        for _ in 0..16 {
            let (kv, old) = self.read().await?;
            if let Some(p) = precondition
                && p != kv.mod_revision
            {
                return Err(ApiError::conflict(resource, self.name()));
            }
            let proposed = change(&old)?;
            let mut new = prepare_update(resource, &old, proposed, sub)?;
            if !internal {
                let errors = if sub == Some(crate::ephemeral::SUBRESOURCE) {
                    skiff_apimachinery::validate_pod_ephemeral_containers_update(&new, &old)
                } else {
                    skiff_apimachinery::validate(
                        kind_of(resource),
                        resource.namespaced,
                        &new,
                        Some(&old),
                    )
                };
                if !errors.is_empty() {
                    return Err(ApiError::invalid(resource, self.name(), &errors));
                }
            }
            meta_mut(&mut new).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            if new == old {
                // Nothing changed: no write, the resourceVersion stays (as Kubernetes).
                return Ok(old);
            }
            let allocating = sub.is_none() && !object::is_deleting(&new);
            if self.dry_run {
                if allocating {
                    let strategy = resource.strategy;
                    strategy
                        .reserve_update(self.state, &old, &mut new, true)
                        .await?;
                }
                return Ok(new);
            }
            let reserved = allocating
                && resource
                    .strategy
                    .reserve_update(self.state, &old, &mut new, false)
                    .await?;
            // The last finalizer gone from an object being deleted: it goes now (a
            // namespace once its `spec.finalizers`, which the namespace controller
            // empties through `finalize`, are gone too).
            let namespace_finalizers = resource.is_namespaces()
                && new
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
            if object::is_deleting(&new)
                && object::finalizers(&new).is_empty()
                && !namespace_finalizers
                && !resource.strategy.graceful_pending(&new)
            {
                return match self.remove(&self.key(), kv.mod_revision, &new).await {
                    Ok(kv) => object::decode(resource, &kv),
                    Err(skiff_store::Error::Conflict { .. }) if precondition.is_none() => continue,
                    Err(skiff_store::Error::Conflict { .. }) => {
                        Err(ApiError::conflict(resource, self.name()))
                    }
                    Err(e) => Err(e.into()),
                };
            }
            let written = self
                .state
                .store
                .update(&self.key(), kv.mod_revision, object::encode(resource, &new))
                .await;
            if allocating {
                // Success gives back what the old form held and the new does not; a failed
                // write, what this attempt took.
                let (kept, gone) = match &written {
                    Ok(_) => (&new, &old),
                    Err(_) => (&old, &new),
                };
                if written.is_ok() || reserved {
                    resource
                        .strategy
                        .release_update(self.state, kept, gone)
                        .await;
                }
            }
            match written {
                Ok(kv) => return object::written(resource, new, &kv),
                Err(skiff_store::Error::Conflict { .. }) if precondition.is_none() => continue,
                Err(skiff_store::Error::Conflict { .. }) => {
                    return Err(ApiError::conflict(resource, self.name()));
                }
                Err(skiff_store::Error::NotFound) => {
                    return Err(ApiError::not_found(resource, self.name()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(resource, self.name()))
    }

    async fn patch(&self, body: &[u8]) -> ApiResult<Response> {
        let resource = self.resource();
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let kind = PatchKind::from_content_type(&ct)?;
        let validation = self.field_validation()?;
        let patch = crate::patch::Patch::parse(kind, body)?;
        let sub = self.info.subresource.as_deref();
        if kind == PatchKind::Apply && sub != Some("scale") {
            decode::check_apply(resource, &patch.body)?;
        }
        if kind == PatchKind::Apply && sub.is_none() {
            // Server-side apply creates what does not exist yet.
            if self.state.store.get(&self.key()).await?.is_none() {
                let (obj, warnings) = decode::canonical(resource, &patch.body, validation)?;
                if object::name(&obj) != self.name() {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({})",
                        object::name(&obj),
                        self.name()
                    )));
                }
                let created = self.create_object(obj).await?;
                return Ok(self.object_reply(StatusCode::CREATED, created, warnings));
            }
        }
        let precondition = match patch
            .body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            Some(rv) if kind != PatchKind::Json => Some(object::parse_resource_version(rv)?),
            _ => None,
        };
        let warnings = std::sync::Mutex::new(Vec::new());
        let updated = self
            .guaranteed_update(
                precondition,
                |current| {
                    if sub == Some("scale") {
                        let patched = patch.apply(resource, to_scale(resource, current))?;
                        let mut obj = current.clone();
                        let replicas = patched
                            .pointer("/spec/replicas")
                            .cloned()
                            .unwrap_or(json!(0));
                        obj["spec"]["replicas"] = replicas;
                        return Ok(obj);
                    }
                    // A status write keeps only the status of what it makes: the spec is
                    // neither patched nor decoded when the patch does not name it.
                    let status_only = sub == Some("status")
                        && matches!(kind, PatchKind::Merge | PatchKind::Strategic)
                        && patch.body.get("spec").is_none();
                    let mut patched = if status_only {
                        let Value::Object(fields) = current else {
                            return Err(ApiError::internal("stored object is not an object"));
                        };
                        let without_spec: serde_json::Map<String, Value> = fields
                            .iter()
                            .filter(|(k, _)| k.as_str() != "spec")
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        patch.apply(resource, Value::Object(without_spec))?
                    } else {
                        patch.apply(resource, current.clone())?
                    };
                    decode::check_type(resource, &mut patched)?;
                    let (obj, w) = decode::canonical(resource, &patched, validation)?;
                    *warnings.lock().expect("warnings lock") = w;
                    Ok(obj)
                },
                false,
            )
            .await?;
        let warnings = warnings.into_inner().unwrap_or_default();
        if sub == Some("scale") {
            return Ok(json_response(
                StatusCode::OK,
                &to_scale(self.resource(), &updated),
            ));
        }
        Ok(self.object_reply(StatusCode::OK, updated, warnings))
    }

    async fn delete(&self, opts: &DeleteOptions) -> ApiResult<Response> {
        if self.info.subresource.is_some() {
            return Err(ApiError::method_not_allowed());
        }
        let (kv, obj) = self.read().await?;
        if self.resource().is_namespaces() && UNDELETABLE_NAMESPACES.contains(&self.name()) {
            // kube-apiserver's NamespaceLifecycle admission, dry runs included.
            return Err(ApiError::forbidden(
                self.resource(),
                self.name(),
                "this namespace may not be deleted",
            ));
        }
        let reply = match self.delete_retrying(kv, obj, opts).await? {
            Deleted::Pending(obj) => obj,
            Deleted::Raced => return Err(ApiError::conflict(self.resource(), self.name())),
            Deleted::Gone(obj) if returns_deleted_object(self.resource()) => obj,
            // What kube-apiserver answers for the kinds whose storage does not return the
            // deleted object: a Status naming it (`kind` is the resource, as Go sets it).
            Deleted::Gone(obj) => {
                let resource = self.resource();
                let mut details = json!({
                    "name": object::name(&obj),
                    "kind": resource.plural,
                    "uid": object::meta_str(&obj, "uid").unwrap_or(""),
                });
                if !resource.group.is_empty() {
                    details["group"] = json!(resource.group);
                }
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Success", "details": details})
            }
        };
        Ok(self.object_reply(StatusCode::OK, reply, Vec::new()))
    }

    /// Deletes one object, or under `dryRun` says what a delete would do without writing:
    /// an object with finalizers, a namespace, or a pod on a node with a grace period is
    /// marked (deletionTimestamp) and kept; anything else is removed.
    async fn delete_object(
        &self,
        kv: KeyValue,
        obj: Value,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let resource = self.resource();
        let name = object::name(&obj).to_string();
        if let Some(uid) = &opts.uid
            && object::meta_str(&obj, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict_because(
                resource,
                &name,
                format_args!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object::meta_str(&obj, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = opts.resource_version
            && rv != kv.mod_revision
        {
            return Err(ApiError::conflict_because(
                resource,
                &name,
                format_args!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                ),
            ));
        }
        let grace = resource
            .strategy
            .deletion_grace(&obj, opts.grace_period_seconds);
        let finalizers = finalizers_for_deletion(resource, &obj, opts.propagation);
        let finalizers_changed = finalizers != object::finalizers(&obj);
        let keep = !finalizers.is_empty() || resource.is_namespaces() || grace > 0;
        let key = resource.key(object::meta_str(&obj, "namespace"), &name);
        if !keep {
            if self.dry_run {
                return Ok(Deleted::Gone(obj));
            }
            let kv = match self.remove(&key, kv.mod_revision, &obj).await {
                Ok(kv) => kv,
                Err(skiff_store::Error::Conflict { .. }) => return Ok(Deleted::Raced),
                Err(skiff_store::Error::NotFound) => {
                    return Err(ApiError::not_found(resource, &name));
                }
                Err(other) => return Err(other.into()),
            };
            return Ok(Deleted::Gone(object::decode(resource, &kv)?));
        }
        if resource.is_namespaces() && object::is_deleting(&obj) {
            return Err(ApiError::conflict_because(
                resource,
                &name,
                "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.",
            ));
        }
        if object::is_deleting(&obj) && opts.grace_period_seconds.is_none() && !finalizers_changed {
            return Ok(Deleted::Pending(obj));
        }
        let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
        let mut new = obj.clone();
        {
            let meta = meta_mut(&mut new);
            if finalizers_changed {
                if finalizers.is_empty() {
                    meta.remove("finalizers");
                } else {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
            }
            if !meta.contains_key("deletionTimestamp") {
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                // As kube-apiserver: a generation is bumped, never made up.
                if let Some(generation) = meta.get("generation").and_then(Value::as_i64)
                    && generation > 0
                {
                    meta.insert("generation".into(), json!(generation + 1));
                }
            }
            // A namespace's delete writes only its timestamp and phase; a second delete
            // that only changes the propagation keeps the grace period it had.
            if !resource.is_namespaces()
                && (!object::is_deleting(&obj) || opts.grace_period_seconds.is_some())
            {
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
        }
        if resource.is_namespaces() {
            new["status"]["phase"] = json!("Terminating");
        }
        if self.dry_run {
            return Ok(Deleted::Pending(new));
        }
        let kv = match self
            .state
            .store
            .update(&key, kv.mod_revision, object::encode(resource, &new))
            .await
        {
            Ok(kv) => kv,
            Err(skiff_store::Error::Conflict { .. }) => return Ok(Deleted::Raced),
            Err(other) => return Err(other.into()),
        };
        Ok(Deleted::Pending(object::decode(resource, &kv)?))
    }

    /// `delete_object`, read again and retried when another write lands between the read
    /// and the guarded write (a controller writing status, say), as kube-apiserver's
    /// `GuaranteedUpdate` retries; with the client's own resourceVersion precondition a
    /// race is the client's 409.
    async fn delete_retrying(
        &self,
        mut kv: KeyValue,
        mut obj: Value,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let resource = self.resource();
        let name = object::name(&obj).to_string();
        let key = resource.key(object::meta_str(&obj, "namespace"), &name);
        for _ in 0..32 {
            match self.delete_object(kv, obj, opts).await? {
                Deleted::Raced if opts.resource_version.is_none() => {
                    let Some(fresh) = self.state.store.get(&key).await? else {
                        return Err(ApiError::not_found(resource, &name));
                    };
                    obj = object::decode(resource, &fresh)?;
                    kv = fresh;
                }
                Deleted::Raced => return Err(ApiError::conflict(resource, &name)),
                done => return Ok(done),
            }
        }
        Err(ApiError::conflict(resource, &name))
    }

    /// Deletes (or under `dryRun`, pretends to delete) every object the selectors match,
    /// and answers with them as listed, as kube-apiserver's `DeleteCollection` does.
    async fn delete_collection(&self, opts: &DeleteOptions) -> ApiResult<Response> {
        if self.resource().is_namespaces() {
            return Err(ApiError::method_not_allowed());
        }
        let (labels, fields) = self.selectors()?;
        let prefix = self.resource().prefix(self.ns());
        // `limit` and `continue` page the deletion as they page a list: one page is
        // deleted, and the reply's `continue` names the next.
        let limit = self.query.int("limit")?.unwrap_or(0).max(0) as usize;
        let (revision, start_after) = match self.query.get("continue") {
            Some(token) if !token.is_empty() => {
                let (rev, after) = decode_continue(token, &prefix)?;
                (Some(rev), Some(after))
            }
            _ => (None, None),
        };
        let mut items = Vec::new();
        let mut next = None;
        let rev = self
            .scan(
                &prefix,
                revision,
                limit,
                start_after,
                &labels,
                &fields,
                &mut items,
                &mut next,
            )
            .await?;
        for obj in &items {
            let key = self
                .resource()
                .key(object::meta_str(obj, "namespace"), object::name(obj));
            let Some(kv) = self.state.store.get(&key).await? else {
                continue;
            };
            let current = object::decode(self.resource(), &kv)?;
            match self.delete_retrying(kv, current, opts).await {
                Ok(_) => {}
                // Gone meanwhile: what the client asked for. Anything else (a failed
                // precondition among them) stops the deletion, as in kube-apiserver.
                Err(e) if e.code == StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        let resource = self.resource();
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": metadata,
                "items": items,
            }),
        ))
    }
}

/// What a delete did (or, under `dryRun`, would do).
enum Deleted {
    /// Removed from the store: the object as it was.
    Gone(Value),
    /// Kept, marked for deletion (finalizers, a namespace, a pod's grace period).
    Pending(Value),
    /// Another write came between the read and this one: nothing was written.
    Raced,
}

/// Kinds whose delete answers with the deleted object rather than a `Status`, as their
/// kube-apiserver storage sets `ReturnDeletedObject` (pods, services, service accounts,
/// persistent volumes and claims; namespaces, whose storage returns the object itself).
fn returns_deleted_object(resource: &Resource) -> bool {
    resource.group.is_empty()
        && matches!(
            resource.plural,
            "pods"
                | "services"
                | "serviceaccounts"
                | "namespaces"
                | "persistentvolumes"
                | "persistentvolumeclaims"
        )
}

// ---- helpers ---------------------------------------------------------------------------

/// Namespaces kube-apiserver's NamespaceLifecycle admission never lets go.
const UNDELETABLE_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// How many stored objects a watch's initial events read at a time.
const INITIAL_EVENTS_PAGE: usize = 500;

/// Past the limit, how much more of an oversize body is read and dropped so that the
/// client, still sending, gets the 413 instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The request body, at most [`crate::MAX_REQUEST_BODY`] bytes; a larger one is a 413.
async fn read_body(body: Body) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::bad_request("the request body could not be read"));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= crate::MAX_REQUEST_BODY {
            buf.extend_from_slice(&data);
        } else if seen > crate::MAX_REQUEST_BODY + DRAIN_LIMIT {
            break;
        }
    }
    if seen > crate::MAX_REQUEST_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

/// The new stored form of an object on update: server-owned metadata from `old`, status
/// or spec as the subresource allows, generation bumped when the spec changed.
fn prepare_update(
    resource: &Resource,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
) -> ApiResult<Value> {
    if sub == Some("status") {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if out["status"].is_null() {
            out.as_object_mut().expect("object").remove("status");
        }
        return Ok(out);
    }
    if sub == Some(crate::ephemeral::SUBRESOURCE) {
        return Ok(crate::ephemeral::prepare_update(old, &new));
    }
    if sub == Some("finalize") {
        let mut out = old.clone();
        out["spec"]["finalizers"] = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        return Ok(out);
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    {
        let meta = meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    meta.insert(f.into(), v.clone());
                }
                None => {
                    meta.remove(f);
                }
            }
        }
    }
    crate::object::drop_empty_meta(&mut new);
    if resource.has_subresource("status") && sub.is_none() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().expect("object").remove("status");
            }
        }
    }
    skiff_apimachinery::apply_defaults(kind_of(resource), &mut new);
    if sub.is_none() {
        resource.strategy.prepare_for_update(old, &mut new);
    }
    bump_generation(resource, old, &mut new);
    Ok(new)
}

/// The last step of every update: defaults applied, then the generation bumped when the
/// spec changed (for kinds with a spec).
pub(crate) fn default_and_bump_generation(resource: &Resource, old: &Value, new: &mut Value) {
    skiff_apimachinery::apply_defaults(kind_of(resource), new);
    bump_generation(resource, old, new);
}

/// The generation goes up when the spec changed (for kinds with a spec).
fn bump_generation(resource: &Resource, old: &Value, new: &mut Value) {
    if resource.has_spec && new.get("spec") != old.get("spec") {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(new).insert("generation".into(), json!(g + 1));
    }
}

#[derive(Debug)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    uid: Option<String>,
    resource_version: Option<i64>,
    dry_run: bool,
    /// `propagationPolicy` (or the older `orphanDependents`), when the request gave one.
    propagation: Option<Propagation>,
}

/// How a delete treats the objects that name the deleted one as their owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    Orphan,
    Background,
    Foreground,
}

const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
const ORPHAN_FINALIZER: &str = "orphan";

/// The finalizers an object has once deleted with `asked`, as kube-apiserver's
/// `deletionFinalizersForGarbageCollection`: Orphan adds `orphan`, Foreground adds
/// `foregroundDeletion` (each dropping the other), Background drops both; without a
/// policy, one the object already carries stands, else the resource's default (Orphan for
/// batch/v1 Jobs, for compatibility, as Kubernetes; Background for the rest).
fn finalizers_for_deletion(
    resource: &Resource,
    obj: &Value,
    asked: Option<Propagation>,
) -> Vec<String> {
    let mut finalizers = object::finalizers(obj);
    if resource.is_namespaces() {
        return finalizers;
    }
    let has = |f: &str, list: &[String]| list.iter().any(|x| x == f);
    let policy = asked.unwrap_or_else(|| {
        if has(ORPHAN_FINALIZER, &finalizers) {
            Propagation::Orphan
        } else if has(FOREGROUND_FINALIZER, &finalizers) {
            Propagation::Foreground
        } else if resource.group == "batch" && resource.plural == "jobs" {
            Propagation::Orphan
        } else {
            Propagation::Background
        }
    });
    let (add, drop): (Option<&str>, &[&str]) = match policy {
        Propagation::Orphan => (Some(ORPHAN_FINALIZER), &[FOREGROUND_FINALIZER]),
        Propagation::Foreground => (Some(FOREGROUND_FINALIZER), &[ORPHAN_FINALIZER]),
        Propagation::Background => (None, &[ORPHAN_FINALIZER, FOREGROUND_FINALIZER]),
    };
    finalizers.retain(|f| !drop.contains(&f.as_str()));
    if let Some(add) = add
        && !has(add, &finalizers)
    {
        finalizers.push(add.to_string());
    }
    finalizers
}

/// What a delete asks for, as written in its body or its query, before it is checked.
struct AskedDeletion {
    grace: Option<i64>,
    propagation: Option<String>,
    orphan: Option<bool>,
    dry_run: Vec<String>,
}

impl AskedDeletion {
    fn from_body(body: &Value) -> ApiResult<AskedDeletion> {
        let grace = match body.get("gracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "error decoding DeleteOptions: gracePeriodSeconds must be an integer, got {v}"
                ))
            })?),
        };
        let dry_run = match body.get("dryRun") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "error decoding DeleteOptions: dryRun must be a list of strings, got {other}"
                )));
            }
        };
        Ok(AskedDeletion {
            grace,
            propagation: body
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
            orphan: body.get("orphanDependents").and_then(Value::as_bool),
            dry_run,
        })
    }

    fn from_query(query: &Query) -> ApiResult<AskedDeletion> {
        Ok(AskedDeletion {
            grace: query.int("gracePeriodSeconds")?,
            propagation: query.get("propagationPolicy").map(str::to_string),
            orphan: query
                .get("orphanDependents")
                .map(|_| query.flag("orphanDependents")),
            dry_run: query.all("dryRun").map(str::to_string).collect(),
        })
    }
}

/// A delete's options as kube-apiserver reads them: from the body when there is one (a
/// `DeleteOptions`, which is where kubectl puts `dryRun`, `gracePeriodSeconds` and
/// `propagationPolicy`), otherwise from the query; checked before anything is deleted.
fn delete_options(headers: &HeaderMap, body: &[u8], query: &Query) -> ApiResult<DeleteOptions> {
    let from_body = !body.iter().all(u8::is_ascii_whitespace);
    // JSON, YAML or protobuf, by Content-Type: client-go's typed clients send their
    // DeleteOptions as protobuf (kubectl drain's pod deletes among them).
    let body: Value = if from_body {
        decode::body_object(headers, body)?
    } else {
        json!({})
    };
    parse_delete_options(from_body, &body, query)
}

/// `DeleteOptions` from a body already decoded (or, when `from_body` is false, from the
/// query alone).
fn parse_delete_options(from_body: bool, body: &Value, query: &Query) -> ApiResult<DeleteOptions> {
    use skiff_apimachinery::FieldError;
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != "DeleteOptions"
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the body ({kind}) of a delete must be DeleteOptions"
        )));
    }
    let asked = if from_body {
        AskedDeletion::from_body(body)?
    } else {
        AskedDeletion::from_query(query)?
    };
    let mut errors = Vec::new();
    if let Some(p) = &asked.propagation {
        if asked.orphan.is_some() {
            errors.push(FieldError::invalid(
                "propagationPolicy",
                json!(p),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        } else if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            errors.push(FieldError::not_supported(
                "propagationPolicy",
                json!(p),
                &["Foreground", "Background", "Orphan", "nil"],
            ));
        }
    }
    let mut dry_run = false;
    for v in &asked.dry_run {
        if v == "All" {
            dry_run = true;
        } else {
            errors.push(FieldError::not_supported("dryRun", json!(v), &["All"]));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_options(
            "DeleteOptions.meta.k8s.io",
            &errors,
        ));
    }
    let resource_version = body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .map(object::parse_resource_version)
        .transpose()?;
    let propagation = match (asked.propagation.as_deref(), asked.orphan) {
        (Some("Orphan"), _) | (None, Some(true)) => Some(Propagation::Orphan),
        (Some("Foreground"), _) => Some(Propagation::Foreground),
        (Some(_), _) | (None, Some(false)) => Some(Propagation::Background),
        (None, None) => None,
    };
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: asked.grace,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version,
        dry_run,
    })
}

fn set_condition(obj: &mut Value, kind: &str, status: &str) {
    let now = object::now_rfc3339();
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .expect("status object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("array");
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    list.push(
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
    );
}

/// An `autoscaling/v1` Scale for an object with `spec.replicas`.
fn to_scale(resource: &Resource, obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = resource.strategy.scale_selector(obj);
    let selector = skiff_printers::label_selector_string(selector.as_ref()).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

fn encode_continue(rev: i64, start_after: &str, prefix: &str) -> String {
    use base64::Engine;
    let start = start_after.strip_prefix(prefix).unwrap_or(start_after);
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rev, format!("{prefix}{start}")))
}

fn bookmark(resource: &Resource, rev: i64) -> Value {
    json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rev.to_string()},
    })
}

struct WatchFilter {
    resource: &'static Resource,
    prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&object::labels(obj)))
            && (self.fields.is_empty()
                || self.fields.matches(&|f: &str| object::field_value(obj, f)))
    }

    /// The event a client sees for a change, if any: a change that makes an object start
    /// or stop matching the selectors is an ADDED or DELETED, as kube-apiserver sends.
    fn event<'e>(&self, ev: &'e crate::watch::CachedEvent) -> Option<(&'static str, Served<'e>)> {
        if !ev.key.starts_with(&self.prefix) {
            return None;
        }
        if crate::convert::stored_as_served(self.resource) {
            // Matched as stored, and sent as the bytes every watcher shares.
            let now = ev.object.as_ref().map(|o| self.matches(o));
            let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
            let (kind, prev) = match now {
                None if before => ("DELETED", true),
                None => return None,
                Some(true) if before => ("MODIFIED", false),
                Some(true) => ("ADDED", false),
                Some(false) if before => ("DELETED", false),
                Some(false) => return None,
            };
            return Some((kind, Served::Json(ev.json(prev)?)));
        }
        self.converted_event(ev)
            .map(|(kind, obj)| (kind, Served::Value(obj)))
    }

    /// As [`WatchFilter::event`], for a resource served in another form than stored.
    fn converted_event(&self, ev: &crate::watch::CachedEvent) -> Option<(&'static str, Value)> {
        let served = |v: &Value| {
            let mut o = crate::convert::from_storage(self.resource, v.clone());
            meta_mut(&mut o).insert("resourceVersion".into(), json!(ev.revision.to_string()));
            o
        };
        let prev = ev.prev.as_deref().map(served);
        match &ev.object {
            None => {
                let prev = prev?;
                self.matches(&prev).then_some(("DELETED", prev))
            }
            Some(obj) => {
                let obj = served(obj);
                let now = self.matches(&obj);
                let before = prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", obj)),
                    (false, true) => Some(("ADDED", obj)),
                    (true, false) => Some(("DELETED", obj)),
                    (false, false) => None,
                }
            }
        }
    }
}

/// An object a watch sends: encoded once for every watcher, or made for this one.
enum Served<'e> {
    Json(&'e Bytes),
    Value(Value),
}

struct EventWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    resource: &'static Resource,
    format: Format,
    first: bool,
}

impl EventWriter {
    async fn send(&mut self, kind: &str, obj: Value) -> bool {
        let obj = match self.format {
            Format::Table(include) => {
                let with_columns = std::mem::replace(&mut self.first, false);
                table::table(self.resource, &[obj], include, json!({}), with_columns)
            }
            Format::Object => obj,
        };
        self.send_raw(kind, obj).await
    }

    async fn send_served(&mut self, kind: &str, obj: Served<'_>) -> bool {
        match (obj, self.format) {
            (Served::Json(json), Format::Object) => {
                let mut line = Vec::with_capacity(json.len() + kind.len() + 24);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(kind.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(json);
                line.extend_from_slice(b"}\n");
                self.tx.send(Ok(Bytes::from(line))).await.is_ok()
            }
            (Served::Json(json), Format::Table(_)) => match serde_json::from_slice(json) {
                Ok(obj) => self.send(kind, obj).await,
                Err(_) => true,
            },
            (Served::Value(obj), _) => self.send(kind, obj).await,
        }
    }

    async fn send_raw(&mut self, kind: &str, obj: Value) -> bool {
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }

    async fn expired(&mut self, oldest: i64) -> bool {
        let status = ApiError::gone(format!(
            "too old resource version: the oldest available is {oldest}"
        ))
        .to_status();
        self.send_raw("ERROR", status).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited protobuf field.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    /// client-go's typed clients send DeleteOptions as protobuf: `dryRun` read from there
    /// is a dry run like any other.
    #[test]
    fn delete_options_are_read_from_protobuf_json_or_the_query() {
        // DeleteOptions{gracePeriodSeconds: 7, propagationPolicy: "Background", dryRun: ["All"]}
        let mut options = vec![1 << 3, 7];
        options.extend(field(4, b"Background"));
        options.extend(field(5, b"All"));
        let type_meta = [field(1, b"v1"), field(2, b"DeleteOptions")].concat();
        let mut body = b"k8s\0".to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, &options));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        let opts = delete_options(&headers, &body, &Query::default()).unwrap();
        assert!(opts.dry_run);
        assert_eq!(opts.grace_period_seconds, Some(7));

        let json = HeaderMap::new();
        let opts = delete_options(&json, br#"{"dryRun":["All"]}"#, &Query::default()).unwrap();
        assert!(opts.dry_run);
        // A body's options are the options: the query is not read beside them.
        let query = Query::parse(Some("dryRun=All"));
        let opts = delete_options(&json, br#"{"gracePeriodSeconds":0}"#, &query).unwrap();
        assert!(!opts.dry_run);
        let opts = delete_options(&json, b"", &query).unwrap();
        assert!(opts.dry_run);

        let err = delete_options(&json, br#"{"dryRun":["true"]}"#, &Query::default()).unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.details.unwrap()["causes"][0]["field"], "dryRun");
        let err = delete_options(&json, b"", &Query::parse(Some("dryRun=yes"))).unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_tampering() {
        let t = encode_continue(
            42,
            "/registry/core/pods/default/b",
            "/registry/core/pods/default/",
        );
        assert_eq!(
            decode_continue(&t, "/registry/core/pods/default/").unwrap(),
            (42, "/registry/core/pods/default/b".to_string())
        );
        assert!(decode_continue("not-base64!", "/p/").is_err());
        use base64::Engine;
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"rv":1,"start":"../../secrets/x"}"#);
        assert!(decode_continue(&evil, "/p/").is_err());
    }
}
