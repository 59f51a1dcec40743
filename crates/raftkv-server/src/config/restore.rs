//! `raftkv-server restore SNAPSHOT`: the command line of `etcdutl snapshot restore` (and
//! etcdctl 3.4's `snapshot restore`), resolved to what the storage's restore needs: the
//! snapshot file, the new data directory, this member's id and the new member list.
//!
//! The ids are computed exactly as the server computes them from the same `--name`,
//! `--initial-cluster` and `--initial-cluster-token`, so a member started afterwards with
//! those flags finds itself in the restored membership. One default differs from etcd's,
//! as it does for the server: the advertised peer URL is `http://127.0.0.1:2380` (the
//! server's default listen address), not `http://localhost:2380`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

use super::ConfigError;
use super::urls::{members_by_id, parse_advertise_urls, parse_initial_cluster};

/// etcdutl's restore flags.
#[derive(Debug, Parser)]
#[command(
    name = "raftkv-server restore",
    about = "Seed a new member's data directory from a snapshot (`etcdctl snapshot save` \
             against raftkv), for a new cluster: run it for every member with the same \
             snapshot, --initial-cluster and --initial-cluster-token, then start the \
             members with those flags.",
    disable_version_flag = true
)]
struct RestoreArgs {
    /// The snapshot file.
    #[arg(value_name = "SNAPSHOT")]
    snapshot: PathBuf,
    /// This member's name [default: default].
    #[arg(long)]
    name: Option<String>,
    /// The data directory to create [default: <name>.etcd].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The new cluster: name=peer-url,... [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, value_name = "LIST")]
    initial_cluster: Option<String>,
    /// The new cluster's token [default: etcd-cluster].
    #[arg(long, value_name = "TOKEN")]
    initial_cluster_token: Option<String>,
    /// This member's peer URL [default: http://127.0.0.1:2380].
    #[arg(long, value_name = "URL")]
    initial_advertise_peer_urls: Option<String>,
    /// Accepted for etcd's scripts: raftkv's snapshot files always carry a checksum, and
    /// it is always checked.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    skip_hash_check: Option<String>,
}

/// A resolved restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The data directory to create.
    pub data_dir: PathBuf,
    /// This member's id in the new cluster.
    pub id: u64,
    /// The new cluster's members: id -> peer URL.
    pub members: BTreeMap<u64, String>,
}

impl RestorePlan {
    /// From the arguments after `restore`.
    pub fn load(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        let args =
            RestoreArgs::try_parse_from(std::iter::once("raftkv-server restore".to_string()).chain(args))
                .map_err(|e| match e.kind() {
                    clap::error::ErrorKind::DisplayHelp => ConfigError::Help(e.render().to_string()),
                    _ => ConfigError::Parse(e.render().to_string().trim_end().to_string()),
                })?;
        if args.skip_hash_check.as_deref().is_some_and(|v| v != "false") {
            return Err(ConfigError::Unsupported {
                flag: "--skip-hash-check".into(),
                reason: "raftkv always checks a snapshot's checksum".into(),
            });
        }
        let name = args.name.unwrap_or_else(|| "default".to_string());
        let token = args
            .initial_cluster_token
            .unwrap_or_else(|| "etcd-cluster".to_string());
        let advertise = match args.initial_advertise_peer_urls.as_deref() {
            Some(urls) => match parse_advertise_urls("--initial-advertise-peer-urls", urls)?.as_slice() {
                [url] => url.clone(),
                _ => {
                    return Err(ConfigError::InvalidValue {
                        flag: "--initial-advertise-peer-urls".into(),
                        value: urls.into(),
                        reason: "raftkv advertises one peer URL".into(),
                    });
                }
            },
            None => "http://127.0.0.1:2380".to_string(),
        };
        let cluster_text = args
            .initial_cluster
            .unwrap_or_else(|| format!("{name}={advertise}"));
        let members = parse_initial_cluster(&cluster_text, &token)?;
        let own = members.iter().find(|m| m.name == name).ok_or_else(|| {
            ConfigError::Conflict(format!(
                "couldn't find local name {name:?} in the initial cluster configuration (--initial-cluster {cluster_text})"
            ))
        })?;
        if own.peer_url != advertise {
            return Err(ConfigError::Conflict(format!(
                "--initial-cluster has {name}={} but missing from --initial-advertise-peer-urls={advertise}",
                own.peer_url
            )));
        }
        Ok(Self {
            snapshot: args.snapshot,
            data_dir: args
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("{name}.etcd"))),
            id: own.id,
            members: members_by_id(&members),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{Config, InheritedAddrs, etcd_member_id};

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_ids_are_the_ones_the_server_computes_from_the_same_flags() {
        let cluster =
            "--initial-cluster a=http://10.0.0.1:2380,b=http://10.0.0.2:2380 --initial-cluster-token t";
        let plan = RestorePlan::load(args(&format!(
            "backup.db --name b --initial-advertise-peer-urls http://10.0.0.2:2380 {cluster}"
        )))
        .unwrap();
        let server = Config::load(
            args(&format!(
                "--name b --initial-advertise-peer-urls http://10.0.0.2:2380 {cluster}"
            )),
            InheritedAddrs::default(),
        )
        .unwrap()
        .config;
        assert_eq!(Some(plan.id), server.id);
        assert_eq!(plan.members, server.initial_cluster);
        assert_eq!(plan.data_dir, PathBuf::from("b.etcd"));
        assert_eq!(plan.id, etcd_member_id(&["http://10.0.0.2:2380"], "t"));
    }

    #[test]
    fn a_lone_member_defaults_to_the_servers_defaults() {
        let plan = RestorePlan::load(args("backup.db")).unwrap();
        let server = Config::load(Vec::<String>::new(), InheritedAddrs::default())
            .unwrap()
            .config;
        assert_eq!((Some(plan.id), plan.members), (server.id, server.initial_cluster));
    }

    #[test]
    fn bad_restores_are_refused_before_anything_is_written() {
        for (line, expected) in [
            (
                "backup.db --name x --initial-cluster y=http://127.0.0.1:2380",
                "couldn't find local name",
            ),
            ("backup.db --skip-hash-check", "--skip-hash-check"),
            ("", "SNAPSHOT"),
        ] {
            let err = RestorePlan::load(args(line)).unwrap_err().to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
