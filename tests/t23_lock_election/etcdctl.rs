//! etcdctl's lock and elect commands, two processes each.

use super::*;

pub(crate) fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn require_etcdctl() -> bool {
    if etcdctl_available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "etcdctl is required under CI=true (apt-get install etcd-client)"
    );
    eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_two_processes_hold_it_one_at_a_time() {
    if !require_etcdctl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let log = dir.path().join("holders.log");
    let mut children = Vec::new();
    for (who, node) in nodes.iter().enumerate().take(2) {
        let endpoint = node.client_urls()[0].clone();
        // Each process takes the lock 3 times, logging start and end around a pause.
        let script = format!(
            "for i in 1 2 3; do etcdctl --endpoints={endpoint} lock ctl-lock -- sh -c \
             'echo start {who} >> {log}; sleep 0.3; echo end {who} >> {log}' || exit 1; done",
            log = log.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for mut child in children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "etcdctl lock never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success());
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 12, "{lines:?}");
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect("a start");
        let end = pair[1].strip_prefix("end ").expect("an end");
        assert_eq!(start, end, "two holders at once: {lines:?}");
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Lines a child prints, read by a thread into a channel.
pub(crate) fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

pub(crate) async fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, wanted: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match rx.try_recv() {
            Ok(line) if line == wanted => return,
            Ok(_) => {}
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                assert!(Instant::now() < deadline, "never printed {wanted:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => panic!("exited without printing {wanted:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_two_processes_one_leader_at_a_time() {
    if !require_etcdctl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let elect = |endpoint: &str, proposal: &str| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["elect", "ctl-election", proposal])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = elect(&nodes[0].client_urls()[0], "proposal-a");
    let first_lines = lines_of(&mut first);
    wait_for_line(&first_lines, "proposal-a").await;
    let mut second = elect(&nodes[1].client_urls()[0], "proposal-b");
    let second_lines = lines_of(&mut second);
    // The second campaigner waits while the first leads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(second_lines.try_recv().is_err(), "two leaders at once");
    let (_, leaders) = nodes[0].leases().await.unwrap();
    assert_eq!(leaders.len(), 2, "one session lease per campaigner");
    // SIGINT: etcdctl resigns (revokes its session); the second becomes leader.
    let killed = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for_line(&second_lines, "proposal-b").await;
    let deadline = Instant::now() + WAIT;
    while first.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first etcdctl elect never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    for node in &nodes {
        node.shutdown().await;
    }
}
