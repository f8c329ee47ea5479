//! What survives an agent restart: one file per allocated IP under `<state_dir>/ips`, whose
//! content says who holds it (`pool`, or `pod <uid>`), and the namespace files under
//! `<state_dir>/netns`, named after the host veth. The IP is the key of a sandbox: the
//! veth and namespace names are derived from it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    Pool,
    /// A pod's sandbox with a namespace of its own.
    Pod(String),
    /// A pod's address-only sandbox: its IP on the node's bridge, no namespace.
    Address(String),
}

impl Owner {
    fn encode(&self) -> String {
        match self {
            Owner::Pool => "pool\n".to_string(),
            Owner::Pod(uid) => format!("pod {uid}\n"),
            Owner::Address(uid) => format!("addr {uid}\n"),
        }
    }

    /// The record is the first line, which must be whole (end in a newline); what follows
    /// it is the tail of a longer record it overwrote in place.
    pub(crate) fn decode(s: &str) -> Option<Owner> {
        let (s, _) = s.split_once('\n')?;
        if s == "pool" {
            Some(Owner::Pool)
        } else if let Some(uid) = s.strip_prefix("addr ") {
            (!uid.is_empty()).then(|| Owner::Address(uid.to_string()))
        } else {
            s.strip_prefix("pod ")
                .filter(|u| !u.is_empty())
                .map(|u| Owner::Pod(u.to_string()))
        }
    }
}

/// Hands out host addresses of the pod CIDR: the first host is the gateway, the network
/// and broadcast addresses are never used. Round robin, so a freed IP is not handed out
/// again at once (peers may still hold ARP and conntrack entries for it).
#[derive(Debug)]
pub(crate) struct Allocator {
    cidr: Ipv4Net,
    used: BTreeSet<u32>,
    cursor: u32,
}

impl Allocator {
    pub(crate) fn new(cidr: Ipv4Net) -> Self {
        Allocator {
            cidr,
            used: BTreeSet::new(),
            cursor: 0,
        }
    }

    fn base(&self) -> u32 {
        u32::from(self.cidr.network())
    }

    /// Number of addresses pods can have.
    pub(crate) fn capacity(&self) -> u32 {
        let size = 1u64 << (32 - self.cidr.prefix_len());
        (size - 3) as u32
    }

    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// The offset of a pod address inside the CIDR, if it is one a pod can have.
    pub(crate) fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        let off = u32::from(ip) - self.base();
        (2..2 + self.capacity()).contains(&off).then_some(off)
    }

    /// Marks an IP found in use (at recovery).
    pub(crate) fn mark(&mut self, ip: Ipv4Addr) -> bool {
        match self.offset(ip) {
            Some(off) => self.used.insert(off),
            None => false,
        }
    }

    /// After recovery: allocation goes on after the highest IP in use, as it would have
    /// without the restart, rather than reusing the lowest IPs just freed.
    pub(crate) fn resume_after_highest(&mut self) {
        if let Some(max) = self.used.last() {
            self.cursor = (max - 2 + 1) % self.capacity();
        }
    }

    pub(crate) fn allocate(&mut self) -> Option<Ipv4Addr> {
        let cap = self.capacity();
        for i in 0..cap {
            let slot = (self.cursor + i) % cap;
            let off = slot + 2;
            if self.used.insert(off) {
                self.cursor = (slot + 1) % cap;
                return Some(Ipv4Addr::from(self.base() + off));
            }
        }
        None
    }

    pub(crate) fn release(&mut self, ip: Ipv4Addr) {
        if let Some(off) = self.offset(ip) {
            self.used.remove(&off);
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// What the records dir holds: each IP with its owner (`None` for an unreadable record),
/// and files that are not records, for the caller to delete.
pub(crate) struct Loaded {
    pub records: Vec<(Ipv4Addr, Option<Owner>)>,
    pub junk: Vec<PathBuf>,
}

/// The record files of one network.
#[derive(Debug, Clone)]
pub(crate) struct Records {
    dir: PathBuf,
}

impl Records {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Records { dir }
    }

    fn path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Writes the owner of `ip`, so that a crash leaves the old or the new record, never
    /// half of one. An existing record is overwritten in place (one `pwrite` of its first
    /// line; a longer record's tail after it is ignored, see [`Owner::decode`]): a sandbox
    /// changing hands (pool to pod, pod back to pool) then costs no new inode, which on
    /// ext4 under churn is the expensive part, nor a truncation. A new one is written to a
    /// temporary and renamed. No fsync: the state dir lives on /run,
    /// which a reboot empties along with the namespaces it describes.
    pub(crate) fn write(&self, ip: Ipv4Addr, owner: &Owner) -> Result<(), Error> {
        use std::os::unix::fs::FileExt;
        let path = self.path(ip);
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => {
                let data = owner.encode();
                return file
                    .write_all_at(data.as_bytes(), 0)
                    .map_err(|e| Error::io(format!("write {}", path.display()), e));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        }
        let tmp = self.dir.join(format!("{ip}.tmp"));
        std::fs::write(&tmp, owner.encode())
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("rename to {}", path.display()), e))
    }

    pub(crate) fn remove(&self, ip: Ipv4Addr) -> Result<(), Error> {
        match std::fs::remove_file(self.path(ip)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove record of {ip}"), e)),
        }
    }

    /// Every record, plus the files that are not records (leftover temporaries).
    pub(crate) fn load(&self) -> Result<Loaded, Error> {
        let mut records = Vec::new();
        let mut junk = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read ips dir", e))?;
            let name = entry.file_name();
            match name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) {
                Some(ip) => {
                    let owner = std::fs::read_to_string(entry.path())
                        .ok()
                        .and_then(|s| Owner::decode(&s));
                    records.push((ip, owner));
                }
                None => junk.push(entry.path()),
            }
        }
        Ok(Loaded { records, junk })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A small map the node keeps in its state dir, `<key> <value>` per line (the routes and
/// addresses it added, see `peers` and `announce`); what does not parse is skipped.
pub(crate) fn read_pairs<K, V>(file: &Path) -> std::collections::BTreeMap<K, V>
where
    K: std::str::FromStr + Ord,
    V: std::str::FromStr,
{
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.parse().ok()?, v.parse().ok()?))
        })
        .collect()
}

/// Writes `pairs` to `file` whole (a temporary file renamed over it).
pub(crate) fn write_pairs<K: std::fmt::Display, V: std::fmt::Display>(
    file: &Path,
    pairs: &std::collections::BTreeMap<K, V>,
) -> Result<(), Error> {
    let text: String = pairs.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, file))
        .map_err(|e| Error::io(format!("write {}", file.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocator_skips_network_gateway_and_broadcast() {
        let mut a = Allocator::new(net("10.9.0.0/29"));
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        let got: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            got,
            (2..=6)
                .map(|h| Ipv4Addr::new(10, 9, 0, h))
                .collect::<Vec<_>>()
        );
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn allocator_does_not_reuse_a_freed_ip_at_once() {
        let mut a = Allocator::new(net("10.9.0.0/24"));
        let first = a.allocate().unwrap();
        a.release(first);
        let second = a.allocate().unwrap();
        assert_ne!(first, second);
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn allocator_respects_marked_ips() {
        let mut a = Allocator::new(net("10.9.0.0/29"));
        assert!(a.mark(Ipv4Addr::new(10, 9, 0, 2)));
        assert!(
            !a.mark(Ipv4Addr::new(10, 9, 0, 1)),
            "gateway is not a pod address"
        );
        assert!(!a.mark(Ipv4Addr::new(10, 9, 1, 2)), "outside the cidr");
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 9, 0, 3)));
        let mut a = Allocator::new(net("10.9.0.0/29"));
        a.mark(Ipv4Addr::new(10, 9, 0, 4));
        a.mark(Ipv4Addr::new(10, 9, 0, 3));
        a.resume_after_highest();
        assert_eq!(
            a.allocate(),
            Some(Ipv4Addr::new(10, 9, 0, 5)),
            "goes on after the highest"
        );
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 9, 0, 6)));
        assert_eq!(
            a.allocate(),
            Some(Ipv4Addr::new(10, 9, 0, 2)),
            "wraps around"
        );
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn owners_round_trip() {
        for o in [
            Owner::Pool,
            Owner::Pod("0b6c-uid".into()),
            Owner::Address("0b6c-uid".into()),
        ] {
            assert_eq!(Owner::decode(&o.encode()), Some(o.clone()));
        }
        assert_eq!(Owner::decode("pod \n"), None);
        assert_eq!(Owner::decode("addr \n"), None);
        assert_eq!(Owner::decode("garbage"), None);
        assert_eq!(Owner::decode("pool"), None, "a line without its end");
        // Overwritten in place, before the cut: the first line counts.
        assert_eq!(
            Owner::decode("pool\n0b6c-uid\n"),
            Some(Owner::Pool),
            "a shorter record over a longer one"
        );
    }

    #[test]
    fn records_are_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(dir.path().to_path_buf());
        let ip = Ipv4Addr::new(10, 9, 0, 2);
        records
            .write(ip, &Owner::Pod("a-long-pod-uid".into()))
            .unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&records.path(ip));
        records.write(ip, &Owner::Pool).unwrap();
        let text = std::fs::read_to_string(records.path(ip)).unwrap();
        assert!(text.starts_with("pool\n"), "{text:?}");
        assert_eq!(inode(&records.path(ip)), before, "the same file");
        records.write(ip, &Owner::Pod("b".into())).unwrap();
        let loaded = records.load().unwrap();
        assert_eq!(loaded.records, vec![(ip, Some(Owner::Pod("b".into())))]);
        assert!(loaded.junk.is_empty());
    }
}
