//! Helpers shared by the integration tests: start the real `quiver` binary
//! on an ephemeral loopback port with a temporary data directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The superuser password every test server starts with.
pub const PASSWORD: &str = "quiver-test-secret";

pub struct Server {
    child: Child,
    pub port: u16,
    /// Where the data lives; kept across restarts by [`Server::restart`].
    pub dir: std::path::PathBuf,
    tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
    /// Every log line the server wrote.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// A server on a fresh temporary data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A fresh temporary data directory and extra `quiver serve` arguments.
    pub fn start_with(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut s = Server::spawn(&dir, &args).expect("quiver did not start");
        s.tmp = Some(tmp);
        s
    }

    /// A fresh temporary data directory, extra arguments, and environment
    /// variables set (`Some`) or removed (`None`) for the first start.
    pub fn start_with_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, port, log) = launch_with_env(&dir, &args, env).expect("quiver did not start");
        Server {
            child,
            port,
            dir,
            tmp: Some(tmp),
            args,
            log,
        }
    }

    /// Start `quiver serve` on `dir`; `Err` with its log if it exits first.
    pub fn spawn(dir: &std::path::Path, args: &[String]) -> Result<Server, String> {
        let (child, port, log) = launch(dir, args)?;
        Ok(Server {
            child,
            port,
            dir: dir.to_path_buf(),
            tmp: None,
            args: args.to_vec(),
            log,
        })
    }
}

type Launched = (Child, u16, Arc<Mutex<Vec<String>>>);

/// Run `quiver serve` on `dir` and wait until it accepts connections.
pub fn launch(dir: &std::path::Path, args: &[String]) -> Result<Launched, String> {
    launch_with_env(dir, args, &[("QUIVER_PASSWORD", Some(PASSWORD))])
}

/// [`launch`] with environment variables set (`Some`) or removed (`None`).
pub fn launch_with_env(
    dir: &std::path::Path,
    args: &[String],
    env: &[(&str, Option<&str>)],
) -> Result<Launched, String> {
    launch_wrapped(&[], dir, args, env)
}

/// [`launch_with_env`] with the server started through `wrapper` (a
/// command that ends by running its arguments, like `unshare`).
pub fn launch_wrapped(
    wrapper: &[String],
    dir: &std::path::Path,
    args: &[String],
    env: &[(&str, Option<&str>)],
) -> Result<Launched, String> {
    {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_quiver"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_quiver")),
        };
        command.arg("serve");
        if !args.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("QUIVER_PASSWORD")
            .env_remove("QUIVER_LOOPBACK_TRUST");
        for (k, v) in env {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start quiver");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("addr=")
                    && line.contains("accepting connections")
                {
                    let addr: String = line[i + 5..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Some(addr));
                    }
                }
                if std::env::var_os("QUIVER_TEST_LOG").is_some() {
                    eprintln!("[quiver] {line}");
                }
                sink.lock().unwrap().push(line);
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(None);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(log.lock().unwrap().join("\n"));
            }
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the listen address");
        Ok((child, port, log))
    }
}

impl Server {
    /// A server already launched (by [`launch_wrapped`]) on `dir`.
    pub fn from_launched(launched: Launched, dir: &std::path::Path) -> Server {
        let (child, port, log) = launched;
        Server {
            child,
            port,
            dir: dir.to_path_buf(),
            tmp: None,
            args: Vec::new(),
            log,
        }
    }

    /// SIGKILL the server, then start it again on the same data.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.restart_after_exit();
    }

    /// SIGTERM (graceful), wait, and start again on the same data.
    pub fn stop_and_restart(&mut self) {
        self.stop();
        self.restart_after_exit();
    }

    /// SIGTERM and wait for the exit; how long the server took.
    pub fn stop(&mut self) -> Duration {
        let started = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        started.elapsed()
    }

    /// Start again on the same data after [`Server::stop`].
    pub fn start_again(&mut self) {
        self.restart_after_exit();
    }

    fn restart_after_exit(&mut self) {
        let (child, port, log) = launch(&self.dir, &self.args).expect("quiver did not restart");
        self.child = child;
        self.port = port;
        self.log = log;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether a log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Whether the server logs `text` within 10 s (its log is read on
    /// another thread, so a line may arrive after the answer it preceded).
    pub fn logs_soon(&self, text: &str) -> bool {
        for _ in 0..100 {
            if self.logged(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn conn_string(&self, database: &str) -> String {
        self.conn_string_as("quiver", PASSWORD, database)
    }

    /// Connection string for `user` with `password`.
    pub fn conn_string_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={database}",
            self.port
        )
    }

    /// Connect as `user`; `Err` if the login fails.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(
            &self.conn_string_as(user, password, database),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.conn_string(database), tokio_postgres::NoTls)
                .await
                .expect("connect to quiver");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peak resident memory of process `pid` (VmHWM), in KiB.
pub fn rss_peak_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM:")
}

/// The resident memory of process `pid` now (VmRSS), in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:")
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A config file `quiver.toml` with `text`; keep the directory alive.
pub fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiver.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}
