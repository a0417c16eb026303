//! Fixtures of the system tests: the `statemanager` and `smctl` binaries of
//! this workspace (built when missing or older than the sources), a daemon
//! on the embedded store in a temporary directory on 127.0.0.1:0, and smctl
//! runs against it with a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// How long the daemon may take to say `listening on <addr>`.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long one smctl run may take before the test fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// The two binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `target/<profile>/statemanager`.
    pub statemanager: PathBuf,
    /// `target/<profile>/smctl`.
    pub smctl: PathBuf,
}

impl Bins {
    /// The directory holding both (for `PATH`).
    pub fn dir(&self) -> &Path {
        self.smctl.parent().unwrap_or(Path::new("."))
    }
}

/// The workspace's root (this package is its `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The binaries next to this test executable's profile directory
/// (`target/<profile>/deps/<test>` → `target/<profile>/`). When one is
/// missing or older than a source file it is built from, they are built
/// with `cargo build -p statemanager -p smctl` in the same profile and
/// target directory (once per test process; cargo's lock serialises
/// concurrent processes, and a build with nothing to do is quick).
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let deps = exe.parent().expect("the test executable's directory");
        let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
            deps.parent().expect("target/<profile>")
        } else {
            deps
        };
        let suffix = std::env::consts::EXE_SUFFIX;
        let bins = Bins {
            statemanager: profile_dir.join(format!("statemanager{suffix}")),
            smctl: profile_dir.join(format!("smctl{suffix}")),
        };
        let (newest, newest_path) = newest_source();
        let stale: Vec<String> = [&bins.statemanager, &bins.smctl]
            .into_iter()
            .filter_map(|bin| match modified(bin) {
                None => Some(format!("{} is missing", bin.display())),
                Some(at) if at < newest => Some(format!(
                    "{} is older than {}",
                    bin.display(),
                    newest_path.display()
                )),
                Some(_) => None,
            })
            .collect();
        if !stale.is_empty() {
            build(profile_dir, &stale);
        }
        for bin in [&bins.statemanager, &bins.smctl] {
            assert!(
                bin.is_file(),
                "{} is still missing after cargo build",
                bin.display()
            );
        }
        bins
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest source file the binaries are built from, and when it changed.
fn newest_source() -> (SystemTime, PathBuf) {
    let root = workspace_root();
    let mut newest = (SystemTime::UNIX_EPOCH, root.join("Cargo.lock"));
    for file in ["Cargo.toml", "Cargo.lock"] {
        visit(&root.join(file), &mut newest);
    }
    for dir in ["crates", "proto", "bin/statemanager", "bin/smctl"] {
        visit(&root.join(dir), &mut newest);
    }
    newest
}

/// Keeps in `newest` the latest `.rs`, `.toml`, `.proto` or `.lock` file
/// under `path` (test directories and build output skipped).
fn visit(path: &Path, newest: &mut (SystemTime, PathBuf)) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == "tests")
        {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            visit(&entry.path(), newest);
        }
        return;
    }
    let relevant = path
        .extension()
        .is_some_and(|e| e == "rs" || e == "toml" || e == "proto" || e == "lock");
    if let (true, Ok(at)) = (relevant, meta.modified())
        && at > newest.0
    {
        *newest = (at, path.to_path_buf());
    }
}

fn build(profile_dir: &Path, why: &[String]) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    };
    let target_dir = profile_dir.parent().expect("the target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "-p", "statemanager", "-p", "smctl", "--profile"])
        .arg(&profile)
        .arg("--target-dir")
        .arg(target_dir);
    eprintln!(
        "system-tests: building the binaries under test ({}): {command:?}",
        why.join("; ")
    );
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build statemanager and smctl: {e}"));
    assert!(
        output.status.success(),
        "`cargo build -p statemanager -p smctl --profile {profile}` failed ({}); build them \
         by hand and run the tests again:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `statemanager` binary on the embedded store in a temporary data
/// directory, serving gRPC on a free loopback port. Killed when dropped.
pub struct Daemon {
    child: Child,
    /// Where its gRPC server is bound.
    pub address: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon on `data_dir` with `extra` flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(&bins().statemanager)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // Nothing listens there: reconcile requests wait in the outbox.
            .args(["--action-controller", "http://127.0.0.1:9"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the statemanager binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().expect("piped stderr"), output.clone());
        drain(child.stdout.take().expect("piped stdout"), output.clone());
        let started = Instant::now();
        loop {
            let text = output.lock().expect("output lock").clone();
            if let Some(address) = logged_address(&text, "listening on ") {
                return Self {
                    child,
                    address,
                    output,
                };
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the daemon exited ({status}) before listening; output:\n{}",
                    output.lock().expect("output lock")
                );
            }
            if started.elapsed() > START_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not log 'listening on <addr>' within {START_DEADLINE:?}; \
                     output:\n{}",
                    output.lock().expect("output lock")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `http://{address}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Everything the daemon printed so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// smctl against this daemon.
    pub fn smctl(&self, args: &[&str]) -> Run {
        smctl_at(&self.url(), args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- statemanager output ({}) ---\n{}",
                self.address,
                self.output()
            );
        }
    }
}

fn drain(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut output = output.lock().expect("output lock");
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// The socket address after `marker` in the log.
fn logged_address(text: &str, marker: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let rest = &line[line.find(marker)? + marker.len()..];
        let rest = rest.trim_start_matches(['\'', '"', '`']);
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// What one smctl run did.
#[derive(Debug)]
pub struct Run {
    /// The arguments.
    pub args: Vec<String>,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code and returns self.
    #[track_caller]
    pub fn exits(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "smctl {:?} exited {:?}, expected {code}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts success (exit 0) and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        self.exits(0).stdout
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "smctl {:?} printed no JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }
}

/// The smctl command with `SMCTL_SERVER=server`, no colours, no inherited
/// `SMCTL_*` settings.
pub fn smctl_command(server: &str) -> Command {
    let mut command = Command::new(&bins().smctl);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SMCTL_") {
            command.env_remove(key);
        }
    }
    command
        .env("SMCTL_SERVER", server)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// Runs smctl with `args` against `server`, failing the test after
/// [`RUN_DEADLINE`].
pub fn smctl_at(server: &str, args: &[&str]) -> Run {
    let mut command = smctl_command(server);
    command.args(args);
    run(command, args.iter().map(|a| a.to_string()).collect())
}

/// Runs `command` to its end, within [`RUN_DEADLINE`].
pub fn run(mut command: Command, args: Vec<String>) -> Run {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} starts: {e}"));
    let output = wait_with_deadline(child, RUN_DEADLINE, &args);
    Run {
        args,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn wait_with_deadline(mut child: Child, deadline: Duration, what: &[String]) -> Output {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what:?} did not end within {deadline:?}");
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Sends SIGINT (what Ctrl-C sends) to `pid`.
pub fn interrupt(pid: u32) {
    let sent = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -INT {pid}: {sent}");
}

/// A node report that makes model `nav` Dead (its one container exited
/// with code 137): the `node-report.yaml` docs/smctl.md shows.
pub fn node_report_yaml() -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/smctl.md"))
        .expect("docs/smctl.md is readable");
    let marker = "```yaml\n# node-report.yaml\n";
    let start = doc.find(marker).unwrap_or_else(|| {
        panic!("docs/smctl.md shows node-report.yaml in a block starting {marker:?}")
    }) + "```yaml\n".len();
    let end = doc[start..].find("```").expect("the block ends") + start;
    doc[start..end].to_owned()
}
