//! The processes under measurement: spawned with their output in files,
//! stopped with SIGTERM (or SIGKILL, as a crash), killed if dropped, and
//! read from `/proc` for peak RSS and CPU time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// A child process; stdout and stderr go to `<dir>/<name>.stdout|.stderr`.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, program: &Path, args: &[String]) -> Result<Self> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", child_log())
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).with_context(|| stdout.display().to_string())?)
            .stderr(File::create(&stderr).with_context(|| stderr.display().to_string())?)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.into(),
            child,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with the end of its stderr if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.stderr.display(),
                tail(&self.stderr, 15)
            ),
        }
    }

    /// Waits for it to exit by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `timeout`; true if it exited 0 by itself.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        if self.exited().is_none() {
            // std has no SIGTERM; the `kill` utility is everywhere we run.
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
        }
        match self.wait_exit(timeout) {
            Some(status) => status.success(),
            None => {
                self.kill9();
                false
            }
        }
    }

    /// Peak RSS and CPU time so far (read it before stopping the process).
    pub fn usage(&self) -> Usage {
        usage_of(&self.name, self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill9();
        }
    }
}

/// `RUST_LOG` of the processes under test: `BENCH_CHILD_LOG`, else `info`
/// (e.g. `BENCH_CHILD_LOG=info,master::output=debug` to see transactions).
fn child_log() -> String {
    std::env::var("BENCH_CHILD_LOG").unwrap_or_else(|_| "info".into())
}

/// What a process used, from `/proc/<pid>`.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub name: String,
    /// `VmHWM`: the peak resident set size, MiB.
    pub peak_rss_mib: Option<f64>,
    /// User + system CPU time, seconds.
    pub cpu_secs: Option<f64>,
}

pub fn usage_of(name: &str, pid: u32) -> Usage {
    Usage {
        name: name.into(),
        peak_rss_mib: peak_rss_kib(pid).map(|k| k as f64 / 1024.0),
        cpu_secs: cpu_secs(pid),
    }
}

/// `VmHWM` of `pid`, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of `pid` (all its threads).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    Some(ticks as f64 / clock_ticks_per_sec())
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let status = "Name:\tmaster\nVmPeak:\t  900 kB\nVmHWM:\t   53124 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(53124));
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(cpu_secs(me).is_some());
    }
}
