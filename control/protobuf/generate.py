#!/usr/bin/env python3
"""Generate src/schema.rs: the field table skiff-protobuf transcodes protobuf with and fills
Go's zero values from.

Rerun (from control/protobuf/) after changing ROOTS or upgrading the source crates:

    python3 generate.py && cargo fmt --manifest-path Cargo.toml

Inputs (both must be unpacked in the local cargo registry, e.g. by `cargo fetch` on a crate
depending on them):
  * k8s-pb 0.9.0       prost-generated structs: field numbers and wire kinds.
  * k8s-openapi 0.29.0 (v1_33) serde impls: the JSON name of each Rust field.
  * kubernetes/api      Go types (types.go) at the tag $KUBE_API_REF (default v0.33.0, the
                       Kubernetes of k8s-openapi's v1_33): what Go's encoding/json writes for
                       each field left at its zero value (`Unset` in types.rs). Read from a git
                       clone named by $KUBE_API_GIT (default: the workplace mirror, made by
                       the `fetch` tool from github:kubernetes/api); nothing of it is copied.
They are joined on (package, type name, Rust field name / field number).

From the Go types, per field:
  * Nothing   a pointer, slice, map or []byte (a nil one is `null` without omitempty, which
              clients read as absent), a zero metav1.Time/MicroTime (`null`), a RawExtension,
              or a field the Go types here do not declare (apimachinery's meta types, whose
              non-omitempty fields k8s-openapi already requires, and fields newer than
              v1_33, which canonicalization drops).
  * OmitEmpty a non-pointer scalar tagged omitempty: on the protobuf wire even when zero,
              dropped from JSON. The transcoder drops its zero.
  * Zero      a non-pointer scalar without omitempty, a Quantity, IntOrString or Duration,
              or a struct (omitempty never omits a struct): Go writes its zero, `{}` with
              the struct's own zeros inside. `fill_go_zero_values` writes them.
"""

import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REG = os.path.expanduser("~/.cargo/registry/src")


def one_dir(pattern):
    found = sorted(glob.glob(os.path.join(REG, "*", pattern)))
    if not found:
        sys.exit(f"generate.py: {pattern} not found under {REG}")
    return found[-1]


PB = os.path.join(one_dir("k8s-pb-0.9.0"), "src")
KUBE_API_GIT = os.environ.get("KUBE_API_GIT", "/work/.mirror/kubernetes+api/repo")
KUBE_API_REF = os.environ.get("KUBE_API_REF", "v0.33.0")
OA = os.path.join(one_dir("k8s-openapi-0.29.0"), "src", "v1_33")

# (apiVersion, kind, package, message). An empty apiVersion matches any group version.
ROOTS = [
    ("v1", "Namespace", "api.core.v1", "Namespace"),
    ("v1", "Pod", "api.core.v1", "Pod"),
    ("v1", "Service", "api.core.v1", "Service"),
    ("v1", "Endpoints", "api.core.v1", "Endpoints"),
    ("v1", "ConfigMap", "api.core.v1", "ConfigMap"),
    ("v1", "Secret", "api.core.v1", "Secret"),
    ("v1", "Node", "api.core.v1", "Node"),
    ("v1", "Event", "api.core.v1", "Event"),
    ("v1", "ServiceAccount", "api.core.v1", "ServiceAccount"),
    ("v1", "PersistentVolume", "api.core.v1", "PersistentVolume"),
    ("v1", "PersistentVolumeClaim", "api.core.v1", "PersistentVolumeClaim"),
    ("v1", "ReplicationController", "api.core.v1", "ReplicationController"),
    ("apps/v1", "Deployment", "api.apps.v1", "Deployment"),
    ("apps/v1", "ReplicaSet", "api.apps.v1", "ReplicaSet"),
    ("apps/v1", "StatefulSet", "api.apps.v1", "StatefulSet"),
    ("apps/v1", "DaemonSet", "api.apps.v1", "DaemonSet"),
    ("apps/v1", "ControllerRevision", "api.apps.v1", "ControllerRevision"),
    ("batch/v1", "Job", "api.batch.v1", "Job"),
    ("batch/v1", "CronJob", "api.batch.v1", "CronJob"),
    ("coordination.k8s.io/v1", "Lease", "api.coordination.v1", "Lease"),
    ("policy/v1", "PodDisruptionBudget", "api.policy.v1", "PodDisruptionBudget"),
    ("policy/v1", "Eviction", "api.policy.v1", "Eviction"),
    ("storage.k8s.io/v1", "StorageClass", "api.storage.v1", "StorageClass"),
    ("node.k8s.io/v1", "RuntimeClass", "api.node.v1", "RuntimeClass"),
    ("discovery.k8s.io/v1", "EndpointSlice", "api.discovery.v1", "EndpointSlice"),
    ("events.k8s.io/v1", "Event", "api.events.v1", "Event"),
    # DeleteOptions is posted under whatever group version the resource lives in.
    ("", "DeleteOptions", "apimachinery.pkg.apis.meta.v1", "DeleteOptions"),
]

META = "apimachinery.pkg.apis.meta.v1"
# Well-known messages whose JSON form is not an object of their fields.
SPECIAL = {
    (META, "Time"): "Time",
    (META, "MicroTime"): "MicroTime",
    (META, "Duration"): "Duration",
    (META, "FieldsV1"): "FieldsV1",
    ("apimachinery.pkg.api.resource", "Quantity"): "Quantity",
    ("apimachinery.pkg.util.intstr", "IntOrString"): "IntOrString",
    ("apimachinery.pkg.runtime", "RawExtension"): "RawExtension",
}

# Special messages whose Go zero is a JSON value rather than `null`.
SPECIAL_ZERO = {"Quantity", "IntOrString", "Duration"}

SCALARS = {"string": "String", "bytes": "Bytes", "bool": "Bool", "int32": "Int32",
           "int64": "Int64", "double": "Double"}

ATTR = re.compile(r'^\s*#\[prost\((.*)\)\]\s*$')
FIELD = re.compile(r'^\s*pub (?:r#)?(\w+):\s*(.*)$')
TYPE_PATH = re.compile(r'((?:super::)+(?:\w+::)*)?([A-Z]\w*)')
BUILTIN = {"Option", "Vec", "String", "BTreeMap", "Box"}


def norm(name):
    """Rust field names differ in keyword escapes (r#type, type_) and in where acronyms
    split (pod_cid_rs vs pod_cidrs), so compare them without either."""
    return name.removeprefix("r#").rstrip("_").replace("_", "")


def parse_pb():
    """{(package, message): [(tag, rust_name, kind, repeated, target)]}."""
    messages = {}
    for path in glob.glob(os.path.join(PB, "**", "mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), PB).split(os.sep)
        package = ".".join(module)
        lines = open(path).read().split("\n")
        current = None
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r'^pub struct (\w+) \{', line)
            if m:
                current = []
                messages[(package, m.group(1))] = current
            elif line.startswith("}"):
                current = None
            am = ATTR.match(line)
            if am and current is not None:
                attr = am.group(1)
                # The declaration may span lines (long map types): read to depth-0 ','.
                decl = lines[i + 1].strip()
                j = i + 1
                while decl.count("<") != decl.count(">") or not decl.endswith(","):
                    j += 1
                    decl += " " + lines[j].strip()
                i = j
                fm = FIELD.match(decl)
                if not fm:
                    sys.exit(f"generate.py: cannot parse field {decl!r} in {path}")
                rust_name, rust_type = fm.group(1), fm.group(2)
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                repeated = "repeated" in attr
                target = None
                mm = re.match(r'(?:btree_)?map = "(\w+), (\w+)"', attr)
                if mm:
                    if mm.group(1) != "string":
                        sys.exit(f"generate.py: non-string map key in {path}")
                    kind = ("map", mm.group(2))
                else:
                    kind = attr.split(",")[0].split("=")[0].strip()
                if "message" in attr:
                    refs = [r for r in TYPE_PATH.findall(rust_type) if r[1] not in BUILTIN]
                    if len(refs) != 1:
                        sys.exit(f"generate.py: ambiguous type {rust_type!r} in {path}")
                    supers, name = refs[0]
                    parts = [p for p in (supers or "").split("::") if p]
                    mod = list(module)
                    for p in parts:
                        if p == "super":
                            mod.pop()
                        else:
                            mod.append(p)
                    target = (".".join(mod), name)
                current.append((tag, rust_name, kind, repeated, target))
            i += 1
    return messages


def parse_openapi():
    """{(package, lower-case type name): {normalized rust field: json name}}."""
    names = {}
    for path in glob.glob(os.path.join(OA, "**", "*.rs"), recursive=True):
        text = open(path).read()
        package = ".".join(os.path.relpath(os.path.dirname(path), OA).split(os.sep))
        for m in re.finditer(r"impl<'de> crate::serde::Deserialize<'de> for (\w+) \{", text):
            end = text.find("\nimpl", m.end())
            body = text[m.end(): end if end != -1 else len(text)]
            fields = {norm(f): j for j, f in re.findall(r'"([^"]+)" => Field::Key_(\w+),', body)}
            names[(package, m.group(1).lower())] = fields
    return names


GO_STRUCT = re.compile(r'^type (\w+) struct \{$')
# `Name Type `tags`` or an embedded `Type `tags``.
GO_FIELD = re.compile(r'^\s*(?:\w+\s+)?([^\s`]\S*)\s+`([^`]*)`')
GO_JSON = re.compile(r'\bjson:"([^"]*)"')
GO_PROTOBUF = re.compile(r'\bprotobuf:"[a-z0-9]+,(\d+),')


def parse_go():
    """{(package, lower-case message): {field number: (Go type, json tag options)}} of every
    field the Go types give a protobuf number."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "--git-dir", KUBE_API_GIT, *args], check=True,
                              capture_output=True, text=True).stdout

    fields = {}
    for path in git("ls-tree", "-r", "--name-only", KUBE_API_REF).split():
        if not path.endswith("/types.go") or path.count("/") != 2:
            continue
        package = "api." + ".".join(path.split("/")[:2])
        current = None
        for line in git("show", f"{KUBE_API_REF}:{path}").split("\n"):
            m = GO_STRUCT.match(line)
            if m:
                # prost renames acronyms (HTTPGetAction is HttpGetAction): join in lower case.
                current = fields.setdefault((package, m.group(1).lower()), {})
            elif line.startswith("}"):
                current = None
            elif current is not None:
                f = GO_FIELD.match(line)
                if not f:
                    continue
                json, number = GO_JSON.search(f.group(2)), GO_PROTOBUF.search(f.group(2))
                if json and number:
                    current[int(number.group(1))] = (f.group(1), json.group(1).split(",")[1:])
    if not fields:
        sys.exit(f"generate.py: no Go types found in {KUBE_API_GIT} at {KUBE_API_REF}")
    return fields


def unset(go_field, kind, repeated, target):
    """What Go writes for the field at its zero value: Nothing, OmitEmpty or Zero."""
    if go_field is None:
        return "Nothing"
    go_type, options = go_field
    if go_type.startswith("*") or repeated or isinstance(kind, tuple) or kind == "bytes" \
            or "omitzero" in options:
        return "Nothing"
    if kind == "message":
        if target in SPECIAL:
            return "Zero" if SPECIAL[target] in SPECIAL_ZERO else "Nothing"
        return "Zero"
    return "OmitEmpty" if "omitempty" in options else "Zero"


def camel(name):
    head, *rest = name.removeprefix("r#").rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def const_name(key):
    return re.sub(r'(?<=[a-z0-9])(?=[A-Z])', "_", f"{key[0]}.{key[1]}").replace(".", "_").upper()


def main():
    pb = parse_pb()
    oa = parse_openapi()
    go = parse_go()
    order, seen = [], set()
    queue = [(p, m) for _, _, p, m in ROOTS]
    while queue:
        key = queue.pop(0)
        if key in seen or key in SPECIAL:
            continue
        if key not in pb:
            sys.exit(f"generate.py: message {key} not in k8s-pb")
        seen.add(key)
        order.append(key)
        for _, _, kind, _, target in pb[key]:
            if target:
                queue.append(target)
    guessed = []

    def openapi_names(key):
        return oa.get((key[0], key[1].lower()))

    # Go embeds some structs (`json:",inline"`): k8s-pb keeps them as a message field, while
    # JSON (and k8s-openapi) flattens their fields into the parent. Spot them as message fields
    # with no JSON name whose parent is known to k8s-openapi.
    def is_flattened(child_fields, names):
        # Fields added after k8s-openapi's v1_33 are also missing; an inlined struct shows
        # up as most of its fields already named in the parent.
        hits = sum(norm(f[1]) in names for f in child_fields)
        return hits * 2 > len(child_fields)

    inline = set()
    extra_names = {}
    changed = True
    while changed:
        changed = False
        for key in order:
            names = dict(openapi_names(key) or {})
            names.update(extra_names.get(key, {}))
            if not names:
                continue
            for tag, rust_name, kind, repeated, target in pb[key]:
                if kind == "message" and not repeated and norm(rust_name) not in names \
                        and target not in SPECIAL and (key, tag) not in inline \
                        and is_flattened(pb[target], names):
                    inline.add((key, tag))
                    extra_names.setdefault(target, {}).update(names)
                    changed = True

    def kind_expr(kind, target):
        if isinstance(kind, tuple):
            value = kind[1]
            inner = message_expr(target) if value == "message" else f"Kind::{SCALARS[value]}"
            return f"Kind::Map(&{inner})"
        if kind == "message":
            return message_expr(target)
        return f"Kind::{SCALARS[kind]}"

    def message_expr(target):
        if target in SPECIAL:
            return f"Kind::{SPECIAL[target]}"
        return f"Kind::Message(&{const_name(target)})"

    # Each message's rows: (tag, json, kind expression, repeated, unset, message to walk).
    rows = {}
    for key in order:
        json_names = dict(extra_names.get(key, {}))
        json_names.update(openapi_names(key) or {})
        rows[key] = []
        for tag, rust_name, kind, repeated, target in sorted(pb[key]):
            walk = target if target in seen else None
            if (key, tag) in inline:
                rows[key].append((tag, "", f"Kind::Inline(&{const_name(target)})", False,
                                  "Nothing", walk))
                continue
            how = unset(go.get((key[0], key[1].lower()), {}).get(tag), kind, repeated, target)
            json = json_names.get(norm(rust_name))
            if json is None:
                json = camel(rust_name)
                guessed.append(f"{key[0]}.{key[1]}.{rust_name} -> {json}")
                # Unknown to k8s-openapi's v1_33: canonicalization drops it, so never add it.
                how = "Nothing" if how == "Zero" else how
            rows[key].append((tag, json, kind_expr(kind, target), repeated, how, walk))

    # A message fills when one of its fields has a zero to write, or holds one that fills.
    fills = set()
    changed = True
    while changed:
        changed = False
        for key in order:
            if key not in fills and any(how == "Zero" or walk in fills
                                        for _, _, _, _, how, walk in rows[key]):
                fills.add(key)
                changed = True

    out = [
        "// @generated by control/protobuf/generate.py from k8s-pb 0.9.0 (field numbers, wire kinds),",
        f"// k8s-openapi 0.29.0 v1_33 (JSON names) and kubernetes/api {KUBE_API_REF} (what Go writes",
        "// for a zero field). Do not edit: rerun the generator.",
        "",
        "use crate::types::{Field, Kind, Message, Root, Unset};",
        "",
        "/// Top-level kinds `to_json` accepts: (apiVersion or \"\" for any, kind, message).",
        "pub static ROOTS: &[Root] = &[",
    ]
    for api_version, kind, package, message in ROOTS:
        out.append(f"    Root {{ api_version: {api_version!r}, kind: {kind!r}, message: &{const_name((package, message))} }},".replace("'", '"'))
    out.append("];")
    for key in order:
        out.append("")
        out.append(f"pub static {const_name(key)}: Message = Message {{")
        out.append(f'    name: "k8s.io.{key[0]}.{key[1]}",')
        out.append("    fields: &[")
        for tag, json, kind, repeated, how, _ in rows[key]:
            out.append(f'        Field {{ number: {tag}, json: "{json}", kind: {kind}, repeated: {str(repeated).lower()}, unset: Unset::{how} }},')
        out.append("    ],")
        out.append(f"    fills: {str(key in fills).lower()},")
        out.append("};")
    with open(os.path.join(HERE, "src", "schema.rs"), "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"generate.py: {len(order)} messages written to src/schema.rs")
    for g in guessed:
        print(f"generate.py: warning: no k8s-openapi name, guessed {g}", file=sys.stderr)


if __name__ == "__main__":
    main()
