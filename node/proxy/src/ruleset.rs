//! The proxy's nftables table as data, and the `nft` script that turns one state of it
//! into another: the whole table at start (replaced atomically), then only what changed
//! (chains flushed and refilled, map and set elements added and deleted), each as one
//! transaction.
//!
//! The skeleton (base chains on the NAT and filter hooks, the maps, the sets the hooks
//! read) never changes while the proxy runs; what changes is the maps' and sets'
//! elements, the load-balancing chains Services share (made when a first Service needs
//! one, removed when a last one stops), and the chains and affinity sets of Services with
//! session affinity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;

/// The mark on packets to masquerade (kube-proxy's `0x4000`).
pub const MASQ_MARK: u32 = 0x4000;

/// Verdict maps and sets of the skeleton: name and declaration (a map's type has a `:`).
pub const MAPS: &[(&str, &str)] = &[
    (
        "cluster-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict",
    ),
    (
        "external-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict",
    ),
    ("node-ports", "type inet_proto . inet_service : verdict"),
    ("no-endpoints", "type ipv4_addr . inet_proto . inet_service"),
    ("no-endpoint-node-ports", "type inet_proto . inet_service"),
    // Endpoints by Service port and slot, per protocol (`model::backends_map`; the
    // `mod 2` only gives the slot's type).
    (
        "backends-tcp",
        "typeof ip daddr . tcp dport . numgen random mod 2 : ip daddr . tcp dport",
    ),
    (
        "backends-udp",
        "typeof ip daddr . udp dport . numgen random mod 2 : ip daddr . udp dport",
    ),
    (
        "backends-sctp",
        "typeof ip daddr . sctp dport . numgen random mod 2 : ip daddr . sctp dport",
    ),
    (
        "node-port-backends-tcp",
        "typeof tcp dport . numgen random mod 2 : ip daddr . tcp dport",
    ),
    (
        "node-port-backends-udp",
        "typeof udp dport . numgen random mod 2 : ip daddr . udp dport",
    ),
    (
        "node-port-backends-sctp",
        "typeof sctp dport . numgen random mod 2 : ip daddr . sctp dport",
    ),
    ("pod-cidrs", "type ipv4_addr; flags interval"),
    ("hairpin", "type ipv4_addr . ipv4_addr"),
];

/// One Service's share of the table: its chains, its elements of the skeleton's maps and
/// sets, its affinity sets, and the endpoint addresses it DNATs to (for the hairpin set,
/// which Services share).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Part {
    /// Regular chains (named `s-…`, `x-…`, `e-…`) and their rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Elements of the skeleton's maps and sets: map name → element key → value (`""` for
    /// a set's element).
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Sets made per endpoint for session affinity: name → timeout in seconds. The name
    /// carries the timeout, so a new timeout is a new set.
    pub affinity: BTreeMap<String, u32>,
    /// Addresses of the endpoints its rules DNAT to.
    pub endpoints: BTreeSet<std::net::Ipv4Addr>,
    /// Chains it shares with other Services (named `lb-…`), and their rules: the same
    /// name has the same rules in every part.
    pub shared: BTreeMap<String, Vec<String>>,
}

impl Part {
    pub fn element(&mut self, map: &'static str, key: String, value: String) {
        self.elements.entry(map).or_default().insert(key, value);
    }

    fn absorb(&mut self, other: &Part) {
        self.chains
            .extend(other.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (map, elems) in &other.elements {
            self.elements
                .entry(map)
                .or_default()
                .extend(elems.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.affinity
            .extend(other.affinity.iter().map(|(k, v)| (k.clone(), *v)));
        self.endpoints.extend(other.endpoints.iter().copied());
        self.shared
            .extend(other.shared.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// The table's changing contents: a part per Service (by `namespace/name`), shared with
/// the cache that made it (`Arc`: an unchanged Service costs a pointer comparison), the
/// pod CIDRs, how many parts DNAT to each endpoint address (the `hairpin` set holds
/// those with one or more) and how many use each shared chain (counted, so that a change
/// looks only at the parts it touched).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ruleset {
    pub parts: BTreeMap<String, Arc<Part>>,
    pub pod_cidrs: BTreeSet<String>,
    pub endpoint_refs: HashMap<std::net::Ipv4Addr, u32>,
    pub shared_refs: HashMap<String, u32>,
}

fn count<K: std::hash::Hash + Eq + Clone>(
    refs: &mut HashMap<K, u32>,
    keys: impl Iterator<Item = K>,
    up: bool,
) {
    for k in keys {
        if up {
            *refs.entry(k).or_default() += 1;
        } else if let Some(n) = refs.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                refs.remove(&k);
            }
        }
    }
}

fn hairpin_element(ip: std::net::Ipv4Addr) -> String {
    format!("{ip} . {ip}")
}

impl Ruleset {
    /// Replaces the part of Service `key` (none: the Service is gone), keeping the
    /// endpoint counts current: the cost is that Service's, whatever the table holds.
    pub fn set_part(&mut self, key: &str, part: Option<Arc<Part>>) {
        let old = match &part {
            Some(p) => self.parts.insert(key.to_string(), p.clone()),
            None => self.parts.remove(key),
        };
        if let Some(old) = old {
            count(
                &mut self.endpoint_refs,
                old.endpoints.iter().copied(),
                false,
            );
            count(&mut self.shared_refs, old.shared.keys().cloned(), false);
        }
        if let Some(new) = part {
            count(&mut self.endpoint_refs, new.endpoints.iter().copied(), true);
            count(&mut self.shared_refs, new.shared.keys().cloned(), true);
        }
    }

    /// A ruleset of `parts` and `pod_cidrs`.
    pub fn assemble(parts: BTreeMap<String, Arc<Part>>, pod_cidrs: &[ipnet::Ipv4Net]) -> Ruleset {
        let (mut endpoint_refs, mut shared_refs) = (HashMap::new(), HashMap::new());
        for part in parts.values() {
            count(&mut endpoint_refs, part.endpoints.iter().copied(), true);
            count(&mut shared_refs, part.shared.keys().cloned(), true);
        }
        Ruleset {
            parts,
            pod_cidrs: pod_cidrs.iter().map(|c| c.to_string()).collect(),
            endpoint_refs,
            shared_refs,
        }
    }

    /// Everything as one part (the shared sets among its elements): for reading.
    pub fn flat(&self) -> Part {
        let mut out = Part::default();
        for p in self.parts.values() {
            out.absorb(p);
        }
        let shared = std::mem::take(&mut out.shared);
        out.chains.extend(shared);
        let cidrs = out.elements.entry("pod-cidrs").or_default();
        cidrs.extend(self.pod_cidrs.iter().map(|k| (k.clone(), String::new())));
        let hairpin = out.elements.entry("hairpin").or_default();
        hairpin.extend(
            self.endpoint_refs
                .keys()
                .map(|ip| (hairpin_element(*ip), String::new())),
        );
        out
    }
}

/// The skeleton of table `table`, after deleting any table of that name: hooks, maps,
/// helper chains.
fn skeleton(table: &str, out: &mut String) {
    let _ = writeln!(out, "table ip {table} {{}}");
    let _ = writeln!(out, "delete table ip {table}");
    let _ = writeln!(out, "table ip {table} {{");
    for (name, decl) in MAPS {
        let kind = if decl.contains(':') { "map" } else { "set" };
        let _ = writeln!(out, "\t{kind} {name} {{\n\t\t{decl};\n\t}}");
    }
    let masq = MASQ_MARK;
    let _ = write!(
        out,
        "\tchain services {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @cluster-ips\n\
         \t\tip daddr . meta l4proto . th dport vmap @external-ips\n\
         \t\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @node-ports\n\
         \t}}\n\
         \tchain mark-for-masquerade {{\n\
         \t\tmeta mark set meta mark | {masq:#x}\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump services\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tjump services\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr . ip daddr @hairpin masquerade fully-random\n\
         \t\tmeta mark & {masq:#x} == {masq:#x} meta mark set meta mark & {unmask:#x} masquerade fully-random\n\
         \t}}\n\
         \tchain reject-no-endpoints {{\n\
         \t\tmeta l4proto tcp reject with tcp reset\n\
         \t\treject\n\
         \t}}\n\
         \tchain no-endpoints-check {{\n\
         \t\tip daddr . meta l4proto . th dport @no-endpoints goto reject-no-endpoints\n\
         \t\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport @no-endpoint-node-ports goto reject-no-endpoints\n\
         \t}}\n\
         \tchain filter-input {{\n\
         \t\ttype filter hook input priority -110; policy accept;\n\
         \t\tct state new jump no-endpoints-check\n\
         \t}}\n\
         \tchain filter-forward {{\n\
         \t\ttype filter hook forward priority -110; policy accept;\n\
         \t\tct state new jump no-endpoints-check\n\
         \t}}\n\
         \tchain filter-output {{\n\
         \t\ttype filter hook output priority -110; policy accept;\n\
         \t\tct state new jump no-endpoints-check\n\
         \t}}\n",
        unmask = !MASQ_MARK,
    );
    let _ = writeln!(out, "}}");
}

fn rules_into(table: &str, chain: &str, rules: &[String], out: &mut String) {
    for r in rules {
        let _ = writeln!(out, "add rule ip {table} {chain} {r}");
    }
}

fn element_text(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} : {value}")
    }
}

fn add_affinity_set(table: &str, name: &str, timeout: u32, out: &mut String) {
    let _ = writeln!(
        out,
        "add set ip {table} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
    );
}

/// The script that makes table `table` exactly `rs`, replacing whatever is there (one
/// transaction: packets see the old table or the new one).
pub fn full(table: &str, rs: &Ruleset) -> String {
    let mut out = String::new();
    skeleton(table, &mut out);
    let flat = rs.flat();
    for (name, timeout) in &flat.affinity {
        add_affinity_set(table, name, *timeout, &mut out);
    }
    for name in flat.chains.keys() {
        let _ = writeln!(out, "add chain ip {table} {name}");
    }
    for (name, rules) in &flat.chains {
        rules_into(table, name, rules, &mut out);
    }
    for (map, elems) in &flat.elements {
        add_elements(table, map, elems.iter(), &mut out);
    }
    out
}

fn add_elements<'a>(
    table: &str,
    map: &str,
    elems: impl Iterator<Item = (&'a String, &'a String)>,
    out: &mut String,
) {
    let items: Vec<String> = elems.map(|(k, v)| element_text(k, v)).collect();
    // Bounded lines: one `add element` per 500.
    for chunk in items.chunks(500) {
        let _ = writeln!(
            out,
            "add element ip {table} {map} {{ {} }}",
            chunk.join(", ")
        );
    }
}

fn delete_elements<'a>(
    table: &str,
    map: &str,
    keys: impl Iterator<Item = &'a String>,
    out: &mut String,
) {
    let items: Vec<&String> = keys.collect();
    for chunk in items.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|k| k.as_str()).collect();
        let _ = writeln!(
            out,
            "delete element ip {table} {map} {{ {} }}",
            keys.join(", ")
        );
    }
}

/// The script that changes table `table` from `old` to `new`; empty when they are equal.
/// Only the Services whose part changed are looked into.
pub fn diff(table: &str, old: &Ruleset, new: &Ruleset) -> String {
    let (mut before, mut after) = (Part::default(), Part::default());
    let keys: BTreeSet<&String> = old.parts.keys().chain(new.parts.keys()).collect();
    for key in keys {
        match (old.parts.get(key), new.parts.get(key)) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) || a == b => {}
            (a, b) => {
                if let Some(a) = a {
                    before.absorb(a);
                }
                if let Some(b) = b {
                    after.absorb(b);
                }
            }
        }
    }
    if old.pod_cidrs != new.pod_cidrs {
        let e = before.elements.entry("pod-cidrs").or_default();
        e.extend(old.pod_cidrs.iter().map(|k| (k.clone(), String::new())));
        let e = after.elements.entry("pod-cidrs").or_default();
        e.extend(new.pod_cidrs.iter().map(|k| (k.clone(), String::new())));
    }
    // Hairpin elements: only addresses of the parts that changed can have come or gone.
    let touched: BTreeSet<std::net::Ipv4Addr> = before
        .endpoints
        .iter()
        .chain(after.endpoints.iter())
        .copied()
        .collect();
    for ip in touched {
        let (was, is) = (
            old.endpoint_refs.contains_key(&ip),
            new.endpoint_refs.contains_key(&ip),
        );
        if was {
            before.element("hairpin", hairpin_element(ip), String::new());
        }
        if is {
            after.element("hairpin", hairpin_element(ip), String::new());
        }
    }
    // Shared chains: likewise, only those of the parts that changed can have come or gone
    // (a name's rules are the same wherever they come from).
    let names: BTreeSet<String> = before
        .shared
        .keys()
        .chain(after.shared.keys())
        .cloned()
        .collect();
    for name in names {
        let rules = |first: &Part, second: &Part| {
            first
                .shared
                .get(&name)
                .or_else(|| second.shared.get(&name))
                .cloned()
                .unwrap_or_default()
        };
        if old.shared_refs.contains_key(&name) {
            let r = rules(&before, &after);
            before.chains.insert(name.clone(), r);
        }
        if new.shared_refs.contains_key(&name) {
            let r = rules(&after, &before);
            after.chains.insert(name.clone(), r);
        }
    }
    diff_parts(table, &before, &after)
}

/// The script from `old` to `new`. Order matters within the transaction: what a rule or
/// element refers to exists before it, and goes only after nothing refers to it.
fn diff_parts(table: &str, old: &Part, new: &Part) -> String {
    let mut out = String::new();
    for (name, timeout) in &new.affinity {
        if !old.affinity.contains_key(name) {
            add_affinity_set(table, name, *timeout, &mut out);
        }
    }
    let added: BTreeSet<&String> = new
        .chains
        .keys()
        .filter(|k| !old.chains.contains_key(*k))
        .collect();
    for name in &added {
        let _ = writeln!(out, "add chain ip {table} {name}");
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(before) if before == rules => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain ip {table} {name}");
                rules_into(table, name, rules, &mut out);
            }
            None => rules_into(table, name, rules, &mut out),
        }
    }
    let empty = BTreeMap::new();
    let maps: BTreeSet<&&str> = old.elements.keys().chain(new.elements.keys()).collect();
    for map in maps {
        let before = old.elements.get(*map).unwrap_or(&empty);
        let after = new.elements.get(*map).unwrap_or(&empty);
        let gone = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, _)| k);
        delete_elements(table, map, gone, &mut out);
        let came = after.iter().filter(|(k, v)| before.get(*k) != Some(*v));
        add_elements(table, map, came, &mut out);
    }
    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|k| !new.chains.contains_key(*k))
        .collect();
    // Emptied first: a removed chain may jump to another removed one.
    for name in &removed {
        let _ = writeln!(out, "flush chain ip {table} {name}");
    }
    for name in &removed {
        let _ = writeln!(out, "delete chain ip {table} {name}");
    }
    for name in old.affinity.keys() {
        if !new.affinity.contains_key(name) {
            let _ = writeln!(out, "delete set ip {table} {name}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(chains: &[(&str, &[&str])], elems: &[(&'static str, &str, &str)]) -> Part {
        let mut p = Part::default();
        for (c, rules) in chains {
            p.chains
                .insert(c.to_string(), rules.iter().map(|s| s.to_string()).collect());
        }
        for (m, k, v) in elems {
            p.element(m, k.to_string(), v.to_string());
        }
        p
    }

    fn one(p: Part) -> Ruleset {
        Ruleset {
            parts: [("default/web".to_string(), Arc::new(p))].into(),
            ..Default::default()
        }
    }

    fn rs(chains: &[(&str, &[&str])], elems: &[(&'static str, &str, &str)]) -> Ruleset {
        one(part(chains, elems))
    }

    #[test]
    fn equal_states_need_no_script() {
        let a = rs(
            &[("s-1", &["goto e-1"])],
            &[("cluster-ips", "k", "goto s-1")],
        );
        assert_eq!(diff("t", &a, &a.clone()), "");
    }

    #[test]
    fn a_diff_touches_only_what_changed_and_orders_references() {
        let old = rs(
            &[
                ("s-1", &["goto e-1"]),
                ("e-1", &["dnat to 10.0.0.1:80"]),
                ("s-2", &["goto e-2"]),
                ("e-2", &["dnat to 10.0.0.2:80"]),
            ],
            &[
                ("cluster-ips", "10.96.0.10 . tcp . 80", "goto s-1"),
                ("cluster-ips", "10.96.0.11 . tcp . 80", "goto s-2"),
            ],
        );
        let new = rs(
            &[
                ("s-1", &["goto e-3"]),
                ("e-3", &["dnat to 10.0.0.3:80"]),
                ("s-2", &["goto e-2"]),
                ("e-2", &["dnat to 10.0.0.2:80"]),
            ],
            &[
                ("cluster-ips", "10.96.0.10 . tcp . 80", "goto s-1"),
                ("no-endpoints", "10.96.0.12 . tcp . 80", ""),
            ],
        );
        let script = diff("t", &old, &new);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "add chain ip t e-3",
                "add rule ip t e-3 dnat to 10.0.0.3:80",
                "flush chain ip t s-1",
                "add rule ip t s-1 goto e-3",
                "delete element ip t cluster-ips { 10.96.0.11 . tcp . 80 }",
                "add element ip t no-endpoints { 10.96.0.12 . tcp . 80 }",
                "flush chain ip t e-1",
                "delete chain ip t e-1",
            ],
            "{script}"
        );
    }

    #[test]
    fn a_shared_chain_lives_while_a_service_uses_it() {
        let uses = |chain: &str, n: &str| {
            let mut p = part(&[], &[("cluster-ips", n, &format!("goto {chain}"))]);
            p.shared
                .insert(chain.into(), vec![format!("rules of {chain}")]);
            Arc::new(p)
        };
        let mut a = Ruleset::default();
        a.set_part("default/web", Some(uses("lb-c-2", "10.96.0.10")));
        a.set_part("default/api", Some(uses("lb-c-2", "10.96.0.11")));
        assert!(full("t", &a).contains("add rule ip t lb-c-2 rules of lb-c-2"));
        // web drops to one endpoint: lb-c-1 is made, lb-c-2 stays for api.
        let mut b = a.clone();
        b.set_part("default/web", Some(uses("lb-c-1", "10.96.0.10")));
        let script = diff("t", &a, &b);
        assert!(script.contains("add chain ip t lb-c-1\n"), "{script}");
        assert!(!script.contains("lb-c-2"), "{script}");
        // api goes: nothing uses lb-c-2 any more.
        let mut c = b.clone();
        c.set_part("default/api", None);
        let script = diff("t", &b, &c);
        assert!(script.contains("delete chain ip t lb-c-2"), "{script}");
        assert!(!script.contains("lb-c-1"), "{script}");
        assert_eq!(c.shared_refs, [("lb-c-1".to_string(), 1)].into());
    }

    #[test]
    fn the_full_script_replaces_the_table() {
        let mut p = part(
            &[("s-1", &["goto e-1"])],
            &[("node-ports", "tcp . 30080", "goto x-1")],
        );
        p.affinity.insert("a-1".into(), 10800);
        let script = full("t", &one(p));
        assert!(script.starts_with("table ip t {}\ndelete table ip t\ntable ip t {\n"));
        assert!(script.contains(
            "add set ip t a-1 { type ipv4_addr; flags dynamic,timeout; timeout 10800s; }"
        ));
        assert!(script.contains("add element ip t node-ports { tcp . 30080 : goto x-1 }"));
    }
}
