//! A writer child: started on a directory, read as it prints, killed (SIGKILL) at its
//! point, and what it printed before it died.

use super::*;

/// What one child printed before it died.
#[derive(Default)]
pub(crate) struct ChildRun {
    pub(crate) opened: Option<(u64, u64)>,
    pub(crate) acks: Vec<u64>,
    pub(crate) killed_after: Duration,
    pub(crate) stderr: String,
}

pub(crate) fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(8_000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A running child with its stdout parsed into events and its stderr collected.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) events: Receiver<Event>,
    pub(crate) stderr: Receiver<Vec<u8>>,
    pub(crate) spawned: Instant,
    pub(crate) ctx: String,
}

impl Running {
    pub(crate) fn spawn(dir: &Path, ctx: String) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (event_tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(event) = parse_line(&line)
                    && event_tx.send(event).is_err()
                {
                    break;
                }
            }
        });
        let (stderr_tx, stderr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            let _ = stderr_tx.send(buf);
        });
        Self {
            child,
            events,
            stderr: stderr_rx,
            spawned,
            ctx,
        }
    }

    pub(crate) fn sigkill(&mut self) {
        // SIGKILL (what `Child::kill` sends on Unix): no destructors, no flush. Harmless if
        // the child already exited, and never signals a reused pid after it was reaped.
        let _ = self.child.kill();
    }

    pub(crate) fn reap(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the killed child was not reaped within {EXIT_DEADLINE:?}",
                self.ctx
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn collect_stderr(&mut self) -> String {
        match self.stderr.recv_timeout(EXIT_DEADLINE) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => format!("(child stderr did not reach end-of-file within {EXIT_DEADLINE:?})"),
        }
    }

    /// Kill the child and fail the test with `msg` and the child's stderr.
    pub(crate) fn fail(&mut self, msg: &str) -> ! {
        self.sigkill();
        let status = self.reap();
        let stderr = self.collect_stderr();
        panic!(
            "{}: {msg}\nchild status: {status}\nchild stderr (tail):\n{}",
            self.ctx,
            tail(&stderr)
        );
    }

    pub(crate) fn record(&mut self, event: Event, run: &mut ChildRun) {
        match event {
            Event::Opened { last, applied } => run.opened = Some((last, applied)),
            Event::Ack(i) => run.acks.push(i),
            Event::Garbled(line) => self.fail(&format!("garbled child output {line:?}")),
        }
    }

    /// Run until the kill point, SIGKILL, and collect every ack printed before death.
    pub(crate) fn run_until_killed(mut self, kill: KillPoint) -> ChildRun {
        let mut run = ChildRun::default();
        match kill {
            KillPoint::AfterAcks(n) => {
                let mut ack_deadline = self.spawned + ACK_DEADLINE;
                while (run.acks.len() as u64) < n {
                    let wait = ack_deadline.saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(wait) {
                        Ok(event) => {
                            let acks = run.acks.len();
                            self.record(event, &mut run);
                            if run.acks.len() > acks {
                                ack_deadline = Instant::now() + ACK_DEADLINE;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                            "no ack within {ACK_DEADLINE:?} ({} of {n} acks so far, opened: {:?})",
                            run.acks.len(),
                            run.opened
                        )),
                        Err(RecvTimeoutError::Disconnected) => self.fail(&format!(
                            "the child closed stdout (exited?) before being killed, after {} acks",
                            run.acks.len()
                        )),
                    }
                }
            }
            KillPoint::AfterDelay(delay) => {
                let at = self.spawned + delay;
                loop {
                    match self
                        .events
                        .recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(event) => self.record(event, &mut run),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => self.fail(&format!(
                            "the child closed stdout (exited?) before being killed, after {} acks",
                            run.acks.len()
                        )),
                    }
                }
            }
        }
        self.sigkill();
        run.killed_after = self.spawned.elapsed();
        // Everything the child wrote before it died is an acknowledgement too.
        let drain_deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            match self
                .events
                .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) => self.record(event, &mut run),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                    "child stdout did not close within {EXIT_DEADLINE:?} of SIGKILL"
                )),
            }
        }
        let status = self.reap();
        run.stderr = self.collect_stderr();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{}: the child must die of our SIGKILL, not exit by itself ({status})\nchild stderr (tail):\n{}",
            self.ctx,
            tail(&run.stderr)
        );
        run
    }
}

impl Drop for Running {
    /// A parent that panics never leaves a writer running on the directory.
    fn drop(&mut self) {
        self.sigkill();
        let _ = self.child.try_wait();
    }
}
