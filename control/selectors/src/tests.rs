use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_err(s: &str) -> String {
    LabelSelector::parse(s).unwrap_err().0
}

fn roundtrip(s: &str) -> String {
    LabelSelector::parse(s).unwrap().to_string()
}

#[test]
fn equality_forms() {
    let s = LabelSelector::parse("app=web, tier==front,env!=prod").unwrap();
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
    assert!(!s.matches(&labels(&[
        ("app", "web"),
        ("tier", "front"),
        ("env", "prod")
    ])));
    assert!(!s.matches(&labels(&[("app", "db"), ("tier", "front")])));
    // `!=` matches objects without the label.
    let ne = LabelSelector::parse("env!=prod").unwrap();
    assert!(ne.matches(&labels(&[])));
}

#[test]
fn empty_value_after_equals() {
    let s = LabelSelector::parse("a=,b").unwrap();
    assert!(s.matches(&labels(&[("a", ""), ("b", "x")])));
    assert!(!s.matches(&labels(&[("b", "x")])));
    assert_eq!(s.to_string(), "a=,b");
}

#[test]
fn set_forms() {
    let s = LabelSelector::parse("env in (a, b),tier notin (x)").unwrap();
    assert!(s.matches(&labels(&[("env", "b")])));
    assert!(!s.matches(&labels(&[("env", "c")])));
    assert!(!s.matches(&labels(&[("env", "a"), ("tier", "x")])));
    assert!(!s.matches(&labels(&[("tier", "y")])));
}

#[test]
fn set_values_may_be_empty_or_keywords() {
    // `()` and stray commas stand for the empty value, as Kubernetes reads them.
    assert_eq!(roundtrip("x in ()"), "x in ()");
    assert_eq!(roundtrip("x in (,a)"), "x in (,a)");
    assert_eq!(roundtrip("x in (a,,b)"), "x in (,a,b)");
    assert_eq!(roundtrip("x in (b,a,b)"), "x in (a,b)");
    // `in` and `notin` are plain words where values stand.
    let s = LabelSelector::parse("in in (in,notin)").unwrap();
    assert!(s.matches(&labels(&[("in", "notin")])));
    assert_eq!(roundtrip("a=in"), "a=in");
}

#[test]
fn existence_forms() {
    let s = LabelSelector::parse("owner,!legacy").unwrap();
    assert!(s.matches(&labels(&[("owner", "")])));
    assert!(!s.matches(&labels(&[("owner", "me"), ("legacy", "")])));
    assert!(!s.matches(&labels(&[])));
}

#[test]
fn numeric_comparisons() {
    let s = LabelSelector::parse("size>3,weight<10").unwrap();
    assert!(s.matches(&labels(&[("size", "4"), ("weight", "9")])));
    assert!(!s.matches(&labels(&[("size", "3"), ("weight", "9")])));
    assert!(!s.matches(&labels(&[("size", "big"), ("weight", "9")])));
    assert!(!s.matches(&labels(&[("weight", "9")])));
    assert_eq!(s.to_string(), "size>3,weight<10");
}

#[test]
fn whitespace_is_tabs_newlines_and_spaces() {
    let s = LabelSelector::parse(" a\t=\nb ,\r c in ( d , e ) ").unwrap();
    assert_eq!(s.to_string(), "a=b,c in (d,e)");
}

#[test]
fn empty_selects_everything() {
    let s = LabelSelector::parse("").unwrap();
    assert!(s.is_empty() && s.matches(&labels(&[])));
    assert!(LabelSelector::parse("   ").unwrap().is_empty());
}

#[test]
fn string_form_is_sorted_by_key() {
    assert_eq!(
        roundtrip("z=1,!b,a notin (y,x),m,n==2"),
        "a notin (x,y),!b,m,n==2,z=1"
    );
}

#[test]
fn exact_match() {
    let s = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
    assert_eq!(s.exact("a"), Some("1"));
    assert_eq!(s.exact("b"), Some("2"));
    assert_eq!(s.exact("c"), None);
    assert_eq!(s.exact("d"), None);
    assert_eq!(s.exact("e"), None);
}

#[test]
fn syntax_errors_read_as_kubernetes_writes_them() {
    assert_eq!(
        parse_err("a in (b"),
        "unable to parse requirement: found '', expected: ',' or ')'"
    );
    assert_eq!(
        parse_err("a in b"),
        "unable to parse requirement: found 'b' expected: '('"
    );
    assert_eq!(
        parse_err("a in (b c)"),
        "unable to parse requirement: found 'c', expected: ',' or ')'"
    );
    assert_eq!(
        parse_err("a in (=)"),
        "unable to parse requirement: found '=', expected: ',', ')' or identifier"
    );
    assert_eq!(
        parse_err("a in (b,="),
        "unable to parse requirement: found '=', expected: ',', or identifier"
    );
    assert_eq!(
        parse_err("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(
        parse_err("a=("),
        "unable to parse requirement: found '(', expected: identifier"
    );
    assert_eq!(
        parse_err("!(b"),
        "unable to parse requirement: found '(', expected: identifier"
    );
    assert_eq!(
        parse_err("!=b"),
        "found '!=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        parse_err("=b"),
        "found '=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        parse_err("a=b c"),
        "found 'c', expected: ',' or 'end of string'"
    );
    assert_eq!(
        parse_err("a=b,"),
        "found '', expected: identifier after ','"
    );
    assert_eq!(
        parse_err("!a=b"),
        "found '=', expected: ',' or 'end of string'"
    );
}

#[test]
fn invalid_keys_and_values_name_the_rule() {
    assert_eq!(
        parse_err("-a=b"),
        "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    assert_eq!(
        parse_err("Example.com/a=b"),
        "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    assert!(parse_err("a/b/c").contains("\"a/b/c\": a qualified name must consist"));
    assert!(parse_err("/a").contains("prefix part must be non-empty"));
    let long = "k".repeat(64);
    assert!(parse_err(&long).contains("name part must be no more than 63 characters"));
    assert_eq!(
        parse_err("a=b-"),
        "unable to parse requirement: values[0][a]: Invalid value: \"b-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    );
    assert_eq!(
        parse_err("a>x"),
        "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
    );
    // Two problems with one value come back together, in brackets.
    let both = parse_err("a>x.");
    assert!(
        both.starts_with(
            "unable to parse requirement: [values[0]: Invalid value: \"x.\": for 'Gt'"
        ),
        "{both}"
    );
    assert!(both.contains(", values[0][a]: Invalid value: \"x.\": a valid label"));
    assert!(both.ends_with("?')]"));
}

#[test]
fn structured_selectors() {
    let s = LabelSelector::from_parts(
        &labels(&[("app", "web")]),
        &[
            ("tier".into(), "In".into(), vec!["b".into(), "a".into()]),
            ("old".into(), "DoesNotExist".into(), vec![]),
            ("env".into(), "NotIn".into(), vec!["prod".into()]),
            ("team".into(), "Exists".into(), vec![]),
        ],
    )
    .unwrap();
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("team", "x")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
    assert_eq!(
        s.to_string(),
        "app=web,env notin (prod),!old,team,tier in (a,b)"
    );
    assert!(
        LabelSelector::from_parts(&labels(&[]), &[])
            .unwrap()
            .matches(&labels(&[("x", "y")]))
    );
}

#[test]
fn structured_selector_errors() {
    let err = |exprs: &[(String, String, Vec<String>)]| {
        LabelSelector::from_parts(&labels(&[]), exprs)
            .unwrap_err()
            .0
    };
    assert_eq!(
        err(&[("t".into(), "In".into(), vec![])]),
        "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
    );
    assert_eq!(
        err(&[("t".into(), "Exists".into(), vec!["x".into()])]),
        "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
    );
    assert_eq!(
        err(&[("t".into(), "Gt".into(), vec!["1".into()])]),
        "\"Gt\" is not a valid label selector operator"
    );
    assert!(
        err(&[("-t".into(), "Exists".into(), vec![])]).starts_with("key: Invalid value: \"-t\"")
    );
    let bad_label = LabelSelector::from_parts(&labels(&[("app", "-")]), &[])
        .unwrap_err()
        .0;
    assert!(bad_label.starts_with("values[0][app]: Invalid value: \"-\""));
}

#[test]
fn field_selectors() {
    let s = FieldSelector::parse("status.phase!=Running,metadata.name=web").unwrap();
    assert_eq!(s.fields(), ["metadata.name", "status.phase"]);
    assert_eq!(s.exact("metadata.name"), Some("web"));
    assert_eq!(s.exact("status.phase"), None);
    let get = |phase: &'static str| {
        move |f: &str| match f {
            "metadata.name" => Some("web".to_string()),
            "status.phase" => Some(phase.to_string()),
            _ => None,
        }
    };
    assert!(s.matches(&get("Pending")));
    assert!(!s.matches(&get("Running")));
    assert_eq!(s.to_string(), "metadata.name=web,status.phase!=Running");
    let double = FieldSelector::parse("metadata.name==web").unwrap();
    assert_eq!(double.exact("metadata.name"), Some("web"));
}

#[test]
fn field_selector_edge_cases() {
    assert!(FieldSelector::parse("").unwrap().is_empty());
    assert!(FieldSelector::parse(",,").unwrap().is_empty());
    assert!(FieldSelector::parse("=").unwrap().is_empty());
    let missing = FieldSelector::parse("spec.nodeName=").unwrap();
    assert!(missing.matches(&|_: &str| None));
    assert!(!missing.matches(&|_: &str| Some("n1".into())));
    // Field names keep their spaces: Kubernetes does not trim them.
    assert_eq!(FieldSelector::parse(" a=b").unwrap().fields(), [" a"]);
}

#[test]
fn field_selector_escapes() {
    let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,x=y").unwrap();
    assert_eq!(s.exact("metadata.name"), Some(r"a,b=c\d"));
    assert_eq!(s.exact("x"), Some("y"));
    assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,x=y");
}

#[test]
fn field_selector_errors() {
    let err = |s: &str| FieldSelector::parse(s).unwrap_err().0;
    assert_eq!(
        err("metadata.name"),
        "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
    );
    assert_eq!(
        err("a=b,c"),
        "invalid selector: 'a=b,c'; can't understand 'c'"
    );
    assert_eq!(
        err(r"a=\q"),
        r"invalid field selector: invalid escape sequence: \q"
    );
    assert_eq!(
        err(r"a=b\"),
        r"invalid field selector: invalid escape sequence: \"
    );
    assert_eq!(
        err("a=b=c"),
        "invalid field selector: unescaped character in value: 61"
    );
}

/// A selector of a hundred thousand bad values: every one checked (the distinct problems
/// found in time linear in their number), at most 64 quoted in the message.
#[test]
fn many_bad_values_give_a_bounded_message() {
    let values: Vec<String> = (0..100_000).map(|i| format!("_{i}")).collect();
    let err = LabelSelector::parse(&format!("a in ({})", values.join(","))).unwrap_err();
    let message = err.0;
    assert!(
        message.contains("and 99936 more errors"),
        "{}",
        &message[..200]
    );
    assert!(message.len() < 64 * 400, "{}", message.len());
}

/// Values are a set: `in` with many values matches by lookup, duplicates are one value.
#[test]
fn large_value_sets_match() {
    let values: Vec<String> = (0..50_000).map(|i| format!("v{i}")).collect();
    let s = LabelSelector::parse(&format!("t in ({},v7,v7)", values.join(","))).unwrap();
    let labels = |v: &str| std::collections::BTreeMap::from([("t".to_string(), v.to_string())]);
    assert!(s.matches(&labels("v49999")));
    assert!(s.matches(&labels("v7")));
    assert!(!s.matches(&labels("w1")));
    let n = LabelSelector::parse(&format!("t notin ({})", values.join(","))).unwrap();
    assert!(!n.matches(&labels("v123")));
    assert!(n.matches(&labels("x")));
}
