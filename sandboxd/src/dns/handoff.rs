//! Keeping the name service's sockets open across a restart (`--dns-handoff`), so queries sent
//! while no daemon runs are answered by the next one instead of bouncing off a closed port.
//!
//! At SIGTERM the daemon starts a holder (`sandboxd --dns-hold PATH`, the same binary) that
//! inherits every listening socket and waits on the unix socket PATH. The next daemon connects
//! there first, receives the sockets (`SCM_RIGHTS`) with their labels, and serves them instead
//! of binding new ones: datagrams that arrived meanwhile wait in the socket's receive queue and
//! get their answer. The holder reads nothing, exits once it has handed over, and after
//! [`HOLD_FOR`] if no daemon came. A kill -9 leaves no holder: queries then bounce until the
//! next start binds again.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// How long a holder waits for the next daemon.
pub const HOLD_FOR: Duration = Duration::from_secs(30);

/// The environment variable carrying `fd=label` pairs to the holder.
const ENV: &str = "SANDBOXD_DNS_FDS";

/// At most this many descriptors per message (the kernel's SCM_MAX_FD is 253).
const CHUNK: usize = 200;

fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a descriptor the caller owns; only its close-on-exec flag changes.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flag) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Start the holder with these sockets (`label`, fd). Returns its pid.
pub fn spawn_holder(path: &Path, fds: &[(String, RawFd)]) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let mut spec = String::new();
    for (label, fd) in fds {
        set_cloexec(*fd, false)?;
        spec.push_str(&format!("{fd}={label};"));
    }
    let child = std::process::Command::new(exe)
        .arg("--dns-hold")
        .arg(path)
        .env(ENV, spec)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn();
    for (_, fd) in fds {
        let _ = set_cloexec(*fd, true);
    }
    Ok(child?.id())
}

/// Send `labels` (newline-separated) with `fds` in one message.
fn send_fds(s: &UnixStream, labels: &str, fds: &[RawFd]) -> std::io::Result<()> {
    let mut data = labels.as_bytes().to_vec();
    data.push(0);
    let iov = [IoSlice::new(&data)];
    sendmsg::<()>(
        s.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Receive one message: its labels and descriptors; `None` at end of stream.
fn recv_fds(s: &UnixStream) -> std::io::Result<Option<Vec<(String, OwnedFd)>>> {
    let mut data = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; CHUNK]);
    let mut fds = Vec::new();
    let n = {
        let mut iov = [IoSliceMut::new(&mut data)];
        // MSG_CMSG_CLOEXEC: the received descriptors are close-on-exec, so plugins we exec do
        // not inherit them.
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: SCM_RIGHTS gave us these descriptors; nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        msg.bytes
    };
    if n == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&data[..n]);
    let labels: Vec<String> = text
        .trim_end_matches('\0')
        .lines()
        .map(str::to_string)
        .collect();
    Ok(Some(labels.into_iter().zip(fds).collect()))
}

/// The holder process (`sandboxd --dns-hold PATH`): never returns.
pub fn hold(path: &Path) -> ! {
    let spec = std::env::var(ENV).unwrap_or_default();
    let mut fds: Vec<(String, RawFd)> = Vec::new();
    for item in spec.split(';').filter(|s| !s.is_empty()) {
        if let Some((fd, label)) = item.split_once('=') {
            if let Ok(fd) = fd.parse::<RawFd>() {
                fds.push((label.to_string(), fd));
            }
        }
    }
    // Keep nothing else the daemon left open: above all not its exec.lock, which the next
    // daemon waits for.
    let keep: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).collect();
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor inherited from the daemon that nothing here uses.
            unsafe { libc::close(fd) };
        }
    }
    let _ = std::fs::remove_file(path);
    let Ok(l) = UnixListener::bind(path) else {
        std::process::exit(1);
    };
    let deadline = std::time::Instant::now() + HOLD_FOR;
    let _ = l.set_nonblocking(true);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                for chunk in fds.chunks(CHUNK) {
                    let labels: Vec<&str> = chunk.iter().map(|(l, _)| l.as_str()).collect();
                    let raw: Vec<RawFd> = chunk.iter().map(|(_, fd)| *fd).collect();
                    if send_fds(&s, &labels.join("\n"), &raw).is_err() {
                        break;
                    }
                }
                // Wait for the daemon to close its end: it has all the sockets by then.
                let mut b = [0u8; 1];
                let _ = (&s).read(&mut b);
                break;
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break,
        }
    }
    let _ = std::fs::remove_file(path);
    std::process::exit(0);
}

/// Take the sockets a holder keeps at `path`, if one does: label -> descriptor.
pub fn adopt(path: &Path) -> HashMap<String, OwnedFd> {
    let mut out = HashMap::new();
    let Ok(mut s) = UnixStream::connect(path) else {
        return out;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // The holder sends everything, then waits for us to close; a shutdown of our write side
    // tells it we are done once everything is read.
    while let Ok(Some(batch)) = recv_fds(&s) {
        let n = batch.len();
        out.extend(batch);
        if n < CHUNK {
            break;
        }
    }
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Both);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Descriptors and labels survive the trip, in order, as new descriptors of the same files.
    #[test]
    fn fds_travel_with_their_labels() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = std::env::temp_dir().join(format!("sandboxd-handoff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<std::fs::File> = (0..3)
            .map(|i| {
                let p = dir.join(format!("f{i}"));
                std::fs::write(&p, format!("file {i}")).unwrap();
                std::fs::File::open(p).unwrap()
            })
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        send_fds(
            &a,
            "udp 10.0.0.1:53\ntcp 10.0.0.1:53\nudp [fd00::1]:53",
            &raw,
        )
        .unwrap();
        let got = recv_fds(&b).unwrap().unwrap();
        let labels: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["udp 10.0.0.1:53", "tcp 10.0.0.1:53", "udp [fd00::1]:53"]
        );
        for (i, (_, fd)) in got.into_iter().enumerate() {
            assert!(!raw.contains(&fd.as_raw_fd()));
            let mut s = String::new();
            std::fs::File::from(fd).read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("file {i}"));
        }
        drop(a);
        assert!(recv_fds(&b).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
