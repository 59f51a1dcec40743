//! etcdctl's watch against a node: prefix, revision, prev-kv, interactive, progress, compaction.

use super::*;

pub(crate) fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An `etcdctl watch` process; its output lines arrive on channels.
pub(crate) struct Etcdctl {
    pub(crate) child: Child,
    pub(crate) stdout: std_mpsc::Receiver<String>,
    pub(crate) stderr: std_mpsc::Receiver<String>,
}

impl Etcdctl {
    pub(crate) fn spawn(endpoint: &str, args: &[&str]) -> Self {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoint.trim_start_matches("http://")))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run etcdctl");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std_mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) fn lines(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| self.stdout.recv_timeout(WAIT).expect("etcdctl printed in time"))
            .collect()
    }

    pub(crate) fn input(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_prefix_rev_prev_kv_interactive_progress_and_compaction() {
    if !etcdctl_available() {
        assert!(
            std::env::var("CI").is_err(),
            "etcdctl is required under CI=true (apt-get install etcd-client)"
        );
        eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = support::start_cluster(3, dir.path()).await;
    let leader_id = support::wait_for_agreed_leader(&nodes, WAIT).await;
    // Writes through the leader; etcdctl watches on a follower.
    let node = nodes.iter().find(|n| n.id() == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.id() != leader_id).unwrap();
    let endpoint = follower.client_urls()[0].clone();
    let first = node.put("foo1", "a").await.unwrap().header.revision;
    node.put("foo2", "b").await.unwrap();

    let watch = Etcdctl::spawn(
        &endpoint,
        &[
            "watch",
            "--prefix",
            "foo",
            "--rev",
            &first.to_string(),
            "--prev-kv",
        ],
    );
    assert_eq!(watch.lines(6), ["PUT", "foo1", "a", "PUT", "foo2", "b"]);
    node.put("foo1", "c").await.unwrap();
    assert_eq!(
        watch.lines(5),
        ["PUT", "foo1", "a", "foo1", "c"],
        "previous, then new"
    );
    node.delete("foo2").await.unwrap();
    assert_eq!(watch.lines(5), ["DELETE", "foo2", "b", "foo2", ""]);
    drop(watch);

    // Interactive: a watch, then a progress request.
    support::wait_until("the first etcdctl's watcher to go", WAIT, || {
        follower.watch_counts().watchers == 0
    })
    .await;
    let mut interactive = Etcdctl::spawn(&endpoint, &["watch", "-i"]);
    interactive.input("watch foo1");
    support::wait_until("etcdctl's watcher", WAIT, || {
        follower.watch_counts().watchers == 1
    })
    .await;
    let current = node.put("foo1", "d").await.unwrap().header.revision;
    assert_eq!(interactive.lines(3), ["PUT", "foo1", "d"]);
    interactive.input("progress");
    assert_eq!(interactive.lines(1), [format!("progress notify: {current}")]);
    drop(interactive);

    // A compacted start revision: etcd's message, and etcdctl ends.
    node.compact(current).await.unwrap();
    support::wait_until("the follower applied the compaction", WAIT, || {
        follower.applied().get() >= node.applied().get()
    })
    .await;
    let mut compacted = Etcdctl::spawn(&endpoint, &["watch", "foo1", "--rev", &first.to_string()]);
    let message = compacted.stderr.recv_timeout(WAIT).expect("etcdctl reported");
    assert_eq!(
        message,
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
    );
    let deadline = Instant::now() + WAIT;
    while compacted.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "etcdctl did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    for node in &nodes {
        node.shutdown().await;
    }
}
