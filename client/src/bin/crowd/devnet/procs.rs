//! Local processes: finding the binaries, starting them with their output in
//! a log file, telling whether one still runs, and signalling it.
//!
//! Liveness is read from `/proc` (Linux): a pid counts as ours only while the
//! process is not a zombie and its command line still carries the home
//! directory it was started with, so a recycled pid is never signalled.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `name` next to the running `crowd` (the same target directory), else on PATH.
pub fn find_bin(name: &str) -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found next to crowd or on PATH; build with `cargo build --workspace --bins`"
            )
        })
}

/// Runs `bin args…` to completion; its output goes to the log (appended).
pub fn run_to_end(bin: &Path, args: &[&OsStr], log: &Path) -> Result<()> {
    let out = open_log(log, true)?;
    let err = out.try_clone()?;
    let status = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status}); see {}",
            bin.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            log.display()
        );
    }
    Ok(())
}

fn open_log(log: &Path, append: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))
}

/// Starts `bin args…` in the background with stdout and stderr appended to
/// `log`. With `detach` it gets its own process group, so it outlives `crowd`
/// and a Ctrl-C in the terminal does not reach it. Returns the pid.
pub fn spawn(bin: &Path, args: &[&OsStr], log: &Path, detach: bool) -> Result<u32> {
    let out = open_log(log, true)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    if detach {
        cmd.process_group(0);
    }
    // The child is not waited for here: `crowd devnet up` exits and leaves it
    // to init; `alive` treats an unreaped zombie as stopped.
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let pid = child.id();
    // `spawn` returns once the exec is done, but the kernel sets up the new
    // program's command line a moment later: until then /proc shows it empty
    // (measured: half the time, right after spawning) and `alive` would call
    // the process gone. Wait for it, or for the process to exit.
    let deadline = Instant::now() + CMDLINE_WAIT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            break;
        }
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(pid)
}

/// Longest wait for a spawned process's command line to appear in /proc.
const CMDLINE_WAIT: Duration = Duration::from_secs(5);

/// Is `pid` running, and is it the process started with `--home home`?
pub fn alive(pid: u32, home: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')'
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, None | Some('Z' | 'X' | 'x')) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let home = home.as_os_str().as_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == home)
}

/// Sends `signal` ("TERM", "KILL") to `pid` if it is still the process
/// started with `--home home`.
pub fn signal(pid: u32, home: &Path, signal: &str) -> Result<()> {
    if !alive(pid, home) {
        return Ok(());
    }
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    if !status.success() && alive(pid, home) {
        bail!("kill -s {signal} {pid} failed");
    }
    Ok(())
}

/// Stops every `(pid, home)`: SIGTERM, up to `grace` to exit, then SIGKILL.
/// Returns how many had to be killed.
pub fn stop_all(procs: &[(u32, PathBuf)], grace: Duration) -> Result<usize> {
    for (pid, home) in procs {
        signal(*pid, home, "TERM")?;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(|(pid, home)| alive(*pid, home)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stragglers: Vec<_> = procs.iter().filter(|(pid, home)| alive(*pid, home)).collect();
    for (pid, home) in &stragglers {
        signal(*pid, home, "KILL")?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && stragglers.iter().any(|(pid, home)| alive(*pid, home)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some((pid, _)) = stragglers.iter().find(|(pid, home)| alive(*pid, home)) {
        bail!("process {pid} is still running after SIGKILL");
    }
    Ok(stragglers.len())
}

/// The last `n` lines of a log file (at most its last 16 KiB), for error reports.
pub fn tail(log: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Right after `spawn` the process must count as alive: its command
    /// line is in place (it was empty for about half of fresh spawns before
    /// `spawn` waited for it, which made `devnet up` report a healthy node as
    /// "exited before it was ready").
    #[test]
    fn a_spawned_process_is_alive_at_once_and_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let sh = Path::new("/bin/sh");
        for i in 0..50 {
            let marker = tmp.path().join(format!("marker-{i}"));
            let args = [OsStr::new("-c"), OsStr::new("sleep 30"), marker.as_os_str()];
            let pid = spawn(sh, &args, &log, true).unwrap();
            assert!(alive(pid, &marker), "spawn {i}: pid {pid} not alive");
            assert!(!alive(pid, &tmp.path().join("other")));
            assert_eq!(
                stop_all(&[(pid, marker.clone())], Duration::from_secs(5)).unwrap(),
                0
            );
            assert!(!alive(pid, &marker));
        }
    }
}
