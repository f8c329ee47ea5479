//! Kubernetes label and field selectors: parsing and matching.
//!
//! Syntax as `k8s.io/apimachinery/pkg/labels` and `pkg/fields` accept it: written by hand
//! because no maintained crate parses Kubernetes' string forms.

use std::collections::BTreeMap;

/// A parse error whose message names what is wrong, in the words Kubernetes uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => v.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let (Some(v), Some(bound)) = (v, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.op == Op::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A parsed label selector: a conjunction of requirements. The empty selector matches all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Label keys: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9_.-]`, starting and ending alphanumeric.
fn check_key(key: &str) -> Result<(), ParseError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(ParseError(format!(
            "unable to parse requirement: invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )))
    }
}

fn check_value(value: &str) -> Result<(), ParseError> {
    let ok = value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ParseError(format!(
            "unable to parse requirement: values[0][{value}]: Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )))
    }
}

/// Tokens of the label selector grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

fn lex(s: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Token::Bang);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            '>' => {
                out.push(Token::Gt);
                i += 1;
            }
            '<' => {
                out.push(Token::Lt);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n\r,()!=<>".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err(&self, what: &str) -> ParseError {
        ParseError(format!("unable to parse requirement: {what}"))
    }

    fn requirement(&mut self) -> Result<Requirement, ParseError> {
        let negated = if self.peek() == Some(&Token::Bang) {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Some(Token::Ident(k)) => k,
            Some(t) => return Err(self.err(&format!("found '{t:?}', expected: identifier"))),
            None => return Err(self.err("found '', expected: identifier")),
        };
        check_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
                values: Vec::new(),
            });
        }
        let op = match self.peek() {
            None | Some(Token::Comma) => {
                return Ok(Requirement {
                    key,
                    op: Op::Exists,
                    values: Vec::new(),
                });
            }
            Some(Token::Eq) | Some(Token::DoubleEq) => Op::Equals,
            Some(Token::NotEq) => Op::NotEquals,
            Some(Token::Gt) => Op::GreaterThan,
            Some(Token::Lt) => Op::LessThan,
            Some(Token::Ident(w)) if w == "in" => Op::In,
            Some(Token::Ident(w)) if w == "notin" => Op::NotIn,
            Some(t) => {
                return Err(self.err(&format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    token_text(t)
                )));
            }
        };
        self.next();
        let values = match op {
            Op::In | Op::NotIn => self.value_set()?,
            _ => match self.peek() {
                Some(Token::Ident(v)) => {
                    let v = v.clone();
                    self.next();
                    vec![v]
                }
                // `a=` selects the empty value.
                None | Some(Token::Comma) => vec![String::new()],
                Some(t) => {
                    return Err(
                        self.err(&format!("found '{}', expected: identifier", token_text(t)))
                    );
                }
            },
        };
        if matches!(op, Op::GreaterThan | Op::LessThan) {
            let v = &values[0];
            if v.parse::<i64>().is_err() {
                return Err(ParseError(format!(
                    "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                )));
            }
        } else {
            for v in &values {
                check_value(v)?;
            }
        }
        Ok(Requirement { key, op, values })
    }

    fn value_set(&mut self) -> Result<Vec<String>, ParseError> {
        match self.next() {
            Some(Token::Open) => {}
            t => {
                return Err(self.err(&format!(
                    "found '{}', expected: '('",
                    t.as_ref().map(token_text).unwrap_or_default()
                )));
            }
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(v)) => {
                    values.push(v);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        t => {
                            return Err(self.err(&format!(
                                "found '{}', expected: ',' or ')'",
                                t.as_ref().map(token_text).unwrap_or_default()
                            )));
                        }
                    }
                }
                // `in ()` and `in (a,)` carry an empty value, as Kubernetes reads them.
                Some(Token::Close) => {
                    values.push(String::new());
                    break;
                }
                Some(Token::Comma) => values.push(String::new()),
                None => return Err(self.err("found '', expected: ',', ')' or identifier")),
                Some(t) => {
                    return Err(self.err(&format!(
                        "found '{}', expected: ',', ')' or identifier",
                        token_text(&t)
                    )));
                }
            }
        }
        Ok(values)
    }
}

fn token_text(t: &Token) -> String {
    match t {
        Token::Ident(s) => s.clone(),
        Token::Comma => ",".into(),
        Token::Open => "(".into(),
        Token::Close => ")".into(),
        Token::Bang => "!".into(),
        Token::Eq => "=".into(),
        Token::DoubleEq => "==".into(),
        Token::NotEq => "!=".into(),
        Token::Gt => ">".into(),
        Token::Lt => "<".into(),
    }
}

impl LabelSelector {
    /// Parses the string form: `a=b,c!=d,e in (f,g),h notin (i),j,!k,l==m`, also `x>1`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let mut p = Parser {
            tokens: lex(s)?,
            pos: 0,
        };
        let mut requirements = Vec::new();
        if p.tokens.is_empty() {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(t) => {
                    return Err(p.err(&format!("found '{}', expected: ','", token_text(&t))));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds from the structured `metav1.LabelSelector` parts (`matchLabels`,
    /// `matchExpressions` as `(key, operator, values)` with In, NotIn, Exists,
    /// DoesNotExist).
    pub fn from_parts(
        match_labels: &BTreeMap<String, String>,
        match_expressions: &[(String, String, Vec<String>)],
    ) -> Result<Self, ParseError> {
        let mut requirements = Vec::new();
        for (k, v) in match_labels {
            check_key(k)?;
            check_value(v)?;
            requirements.push(Requirement {
                key: k.clone(),
                op: Op::Equals,
                values: vec![v.clone()],
            });
        }
        for (key, op, values) in match_expressions {
            check_key(key)?;
            let op = match op.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(ParseError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            match op {
                Op::In | Op::NotIn if values.is_empty() => {
                    return Err(ParseError(
                        "for 'in', 'notin' operators, values set can't be empty".into(),
                    ));
                }
                Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                    return Err(ParseError(
                        "values set must be empty for exists and does not exist".into(),
                    ));
                }
                _ => {}
            }
            requirements.push(Requirement {
                key: key.clone(),
                op,
                values: values.clone(),
            });
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed field selector: `metadata.name=x,status.phase!=Running` (`=`, `==`, `!=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Splits on unescaped `sep`, keeping escapes for the next stage.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> Result<String, ParseError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
                Some(e) => {
                    return Err(ParseError(format!(
                        "invalid field selector: invalid escape sequence: \\{e}"
                    )));
                }
                None => {
                    return Err(ParseError(
                        "invalid field selector: unterminated escape sequence".into(),
                    ));
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for part in split_unescaped(s, ',') {
            if part.is_empty() {
                continue;
            }
            // The first unescaped operator splits field and value.
            let (field, value, equal) = split_operator(&part).ok_or_else(|| {
                ParseError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ))
            })?;
            requirements.push(FieldRequirement {
                field: unescape(field.trim())?,
                value: unescape(value)?,
                equal,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The field names used, so a server can refuse unsupported ones.
    pub fn fields(&self) -> Vec<&str> {
        self.requirements.iter().map(|r| r.field.as_str()).collect()
    }

    /// If the selector requires `field` to equal one value, that value.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.equal && r.field == field)
            .map(|r| r.value.as_str())
    }

    /// `get(field)` returns the object's value for a field (`None`: empty string).
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = get(&r.field).unwrap_or_default();
            (v == r.value) == r.equal
        })
    }
}

fn split_operator(part: &str) -> Option<(&str, &str, bool)> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&part[..i], &part[i + 2..], false));
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&part[..i], &part[i + 2..], true));
            }
            b'=' => return Some((&part[..i], &part[i + 1..], true)),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_inequality() {
        let s = LabelSelector::parse("app=web, tier==front,env!=prod").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod")
        ])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "front")])));
    }

    #[test]
    fn set_forms_and_existence() {
        let s = LabelSelector::parse("env in (a, b),tier notin (x),owner,!legacy").unwrap();
        assert!(s.matches(&labels(&[("env", "b"), ("owner", "me")])));
        assert!(!s.matches(&labels(&[("env", "c"), ("owner", "me")])));
        assert!(!s.matches(&labels(&[("env", "a"), ("owner", "me"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("env", "a")])));
        assert!(!s.matches(&labels(&[("env", "a"), ("owner", "me"), ("legacy", "")])));
    }

    #[test]
    fn numeric_comparisons() {
        let s = LabelSelector::parse("size>3,weight<10").unwrap();
        assert!(s.matches(&labels(&[("size", "4"), ("weight", "9")])));
        assert!(!s.matches(&labels(&[("size", "3"), ("weight", "9")])));
        assert!(LabelSelector::parse("size>x").is_err());
    }

    #[test]
    fn empty_selects_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty() && s.matches(&labels(&[])));
    }

    #[test]
    fn malformed_selectors_say_why() {
        for bad in ["a in (b", "a in b", "=b", "a b", "a=b=c", "-a=b", "a=b!"] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert!(e.0.starts_with("unable to parse requirement"), "{bad}: {e}");
        }
        let e = LabelSelector::parse("a=b c").unwrap_err();
        assert!(e.0.contains("found 'c', expected: ','"), "{e}");
    }

    #[test]
    fn structured_selectors() {
        let s = LabelSelector::from_parts(
            &labels(&[("app", "web")]),
            &[("tier".into(), "In".into(), vec!["a".into()])],
        )
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(
            LabelSelector::from_parts(&labels(&[]), &[("t".into(), "In".into(), vec![])]).is_err()
        );
        assert!(
            LabelSelector::from_parts(
                &labels(&[]),
                &[("t".into(), "Exists".into(), vec!["x".into()])]
            )
            .is_err()
        );
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse("metadata.name=web,status.phase!=Running").unwrap();
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
        let escaped = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(escaped.exact("metadata.name"), Some("a,b"));
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse(r"a=\q").is_err());
        let missing = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(missing.matches(&|_: &str| None));
    }
}
