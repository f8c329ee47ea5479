//! Egress masquerade: one nftables table named after the bridge, loaded with one `nft -f -`
//! transaction. No maintained Rust crate speaks nftables' netlink protocol for NAT rules, and
//! the ruleset changes only when the network is set up or torn down, so the `nft` command
//! costs nothing on the pod path.

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;

/// Replaces (or creates) the table atomically: declaring the table first makes the delete
/// succeed whether or not it existed.
/// Pods' traffic leaving the node is masqueraded unless it goes to a pod: the `cluster`
/// set holds every node's pod CIDR ([`set_cluster`]), this one's from the start.
pub(crate) async fn load_masquerade(table: &str, bridge: &str, cidr: Ipv4Net) -> Result<(), Error> {
    let script = format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tset cluster {{\n\
         \t\ttype ipv4_addr; flags interval; auto-merge;\n\
         \t\telements = {{ {cidr} }}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cidr} ip daddr != @cluster oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         }}\n"
    );
    run(&script).await
}

/// Makes the pod CIDRs of the cluster `cidrs`, in one transaction.
pub(crate) async fn set_cluster(table: &str, cidrs: &[Ipv4Net]) -> Result<(), Error> {
    let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    run(&format!(
        "flush set ip {table} cluster\nadd element ip {table} cluster {{ {} }}\n",
        list.join(", ")
    ))
    .await
}

/// Deletes table `table` of the `ip` family; a table that is not there is not an error.
pub async fn delete_table(table: &str) -> Result<(), Error> {
    run(&format!("table ip {table} {{}}\ndelete table ip {table}\n")).await
}

/// Runs `script` as one `nft -f -` transaction: all of it or nothing.
pub async fn run(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| Error::Nft(format!("write to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Nft(format!("wait for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
