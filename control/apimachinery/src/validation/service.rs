//! Services, as `ValidateService` and `ValidateServiceUpdate`.

use super::pod::port_num_or_name;
use super::{Errs, arr, child, index, one_of, s};
use crate::{FieldError, go_quote, names};
use serde_json::{Value, json};
use std::collections::HashSet;

pub(crate) fn validate_service(svc: &Value, old: Option<&Value>, errs: &mut Errs) {
    let empty = json!({});
    let spec = svc.get("spec").unwrap_or(&empty);
    let ty = s(spec, "type");
    let headless = s(spec, "clusterIP") == "None";
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if ty == "ExternalName" {
        for f in ["clusterIPs", "ipFamilies"] {
            if !arr(spec, f).is_empty() {
                errs.push(FieldError::forbidden(
                    child("spec", f),
                    "may not be set for ExternalName services",
                ));
            }
        }
        if spec.get("ipFamilyPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                "spec.ipFamilyPolicy",
                "may not be set for ExternalName services",
            ));
        }
        let cname = s(spec, "externalName").trim_end_matches('.');
        if cname.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            errs.extend(names::validate_dns1123_subdomain(
                cname,
                "spec.externalName",
            ));
        }
    }
    let mut port_names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(child(&pp, "name"), ""));
        } else if !name.is_empty() {
            errs.extend(names::validate_dns1123_label(name, &child(&pp, "name")));
            if !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&pp, "name"), json!(name)));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        for m in names::is_valid_port_num(port) {
            errs.push(FieldError::invalid(child(&pp, "port"), json!(port), m));
        }
        one_of(
            p,
            "protocol",
            &child(&pp, "protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
            errs,
        );
        port_num_or_name(p.get("targetPort"), &child(&pp, "targetPort"), errs);
        let node_port = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    child(&pp, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                for m in names::is_valid_port_num(node_port) {
                    errs.push(FieldError::invalid(
                        child(&pp, "nodePort"),
                        json!(node_port),
                        m,
                    ));
                }
            }
        }
    }
    // The same (protocol, port) twice.
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let key = (
            s(p, "protocol").to_string(),
            p.get("port").and_then(Value::as_i64).unwrap_or(0),
        );
        if !seen.insert(key.clone()) {
            let repr = format!(
                "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                go_quote(&key.0),
                key.1
            );
            errs.push(FieldError::duplicate(
                index("spec.ports", i),
                crate::go_repr(repr),
            ));
        }
    }
    one_of(
        spec,
        "type",
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        true,
        errs,
    );
    one_of(
        spec,
        "sessionAffinity",
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        true,
        errs,
    );
    if ty != "ExternalName" {
        errs.extend(names::validate_labels(
            spec.get("selector"),
            "spec.selector",
        ));
    }
    let ip = s(spec, "clusterIP");
    if !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            json!(ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    for f in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        one_of(
            spec,
            f,
            &child("spec", f),
            &["Cluster", "Local"],
            false,
            errs,
        );
    }
    if spec
        .get("externalTrafficPolicy")
        .is_some_and(|v| !v.is_null())
        && !matches!(ty, "NodePort" | "LoadBalancer")
        && arr(spec, "externalIPs").is_empty()
    {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            spec["externalTrafficPolicy"].clone(),
            "may only be set for externally-accessible services",
        ));
    }
    if let Some(old) = old {
        let old_spec = old.get("spec").unwrap_or(&empty);
        let old_ip = s(old_spec, "clusterIP");
        if !old_ip.is_empty()
            && s(old_spec, "type") != "ExternalName"
            && ty != "ExternalName"
            && ip != old_ip
        {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                json!([ip]),
                "may not change once set",
            ));
            errs.push(FieldError::invalid(
                "spec.clusterIP",
                json!(ip),
                super::meta::FIELD_IMMUTABLE,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Kind, apply_defaults, validate};
    use serde_json::{Value, json};

    fn svc(name: &str, spec: Value) -> Value {
        let mut s = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
        apply_defaults(
            Kind {
                group: "",
                kind: "Service",
            },
            &mut s,
        );
        s
    }

    fn check(s: &Value, old: Option<&Value>) -> Vec<String> {
        validate(
            Kind {
                group: "",
                kind: "Service",
            },
            true,
            s,
            old,
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn valid_service_and_headless() {
        assert!(
            check(
                &svc(
                    "web",
                    json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})
                ),
                None
            )
            .is_empty()
        );
        assert!(
            check(
                &svc(
                    "db",
                    json!({"clusterIP": "None", "selector": {"app": "db"}})
                ),
                None
            )
            .is_empty()
        );
        assert!(
            check(
                &svc(
                    "ext",
                    json!({"type": "ExternalName", "externalName": "example.com"})
                ),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn service_name_is_dns1035() {
        let errs = check(&svc("1web", json!({"ports": [{"port": 80}]})), None);
        assert_eq!(
            errs,
            [
                "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
    }

    #[test]
    fn ports_rules() {
        assert_eq!(
            check(&svc("web", json!({})), None),
            ["spec.ports: Required value"]
        );
        let errs = check(
            &svc(
                "web",
                json!({"type": "Magic", "ports": [{"port": 80}, {"port": 0, "name": "b"}, {"port": 80, "name": "b"}]}),
            ),
            None,
        );
        assert_eq!(
            errs,
            [
                "spec.ports[0].name: Required value",
                "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[2].name: Duplicate value: \"b\"",
                "spec.ports[2]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ]
        );
    }

    #[test]
    fn cluster_ip_cannot_change() {
        let old = svc(
            "web",
            json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}),
        );
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.0.0.6");
        assert_eq!(
            check(&new, Some(&old)),
            [
                "spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.6\"}: may not change once set",
                "spec.clusterIP: Invalid value: \"10.0.0.6\": field is immutable",
            ]
        );
    }
}
