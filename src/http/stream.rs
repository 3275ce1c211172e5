//! The listening socket and a connection's stream, TCP or Unix alike.

use std::io::{self, Read, Write};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    pub(super) fn prepare(&self, timeout: Duration) -> io::Result<()> {
        match self {
            // Head and body go out in two writes; do not hold the second for an ACK.
            Stream::Tcp(s) => s
                .set_nodelay(true)
                .and_then(|_| s.set_write_timeout(Some(timeout))),
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
        }?;
        self.set_read_timeout(timeout)
    }

    pub(super) fn shutdown(&self, how: Both) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    pub(super) fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    pub(super) fn shutdown_read(&self) {
        let _ = self.shutdown(Both::Read);
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    /// True if the client has closed (or reset) the connection and sent nothing still unread:
    /// whoever reads it next sees its end at once. Looks without reading or waiting (a peek
    /// that does not block, whatever the socket's own timeouts).
    pub(super) fn has_ended(&self) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut byte = [0u8; 1];
        match recv(
            self.fd(),
            &mut byte[..],
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Ok((n, _)) => n == 0,
            Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
        }
    }

    /// True if the client has sent bytes that nobody has read yet: it is not silent (a
    /// request may be waiting whole). Looks without reading or waiting.
    pub(super) fn has_waiting(&self) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut byte = [0u8; 1];
        recv(
            self.fd(),
            &mut byte[..],
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        )
        .is_ok_and(|(n, _)| n > 0)
    }

    /// Whether a whole request head (up to its blank line) waits unread in the socket: a
    /// client that has sent its request, not one still trickling it (a slowloris). Peeks at
    /// most `max_head` bytes, taking nothing.
    pub(super) fn has_whole_head(&self, max_head: usize) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut buf = vec![0u8; max_head];
        match recv(
            self.fd(),
            &mut buf[..],
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Ok((n, _)) => {
                let got = &buf[..n.min(max_head)];
                got.windows(4).any(|w| w == b"\r\n\r\n") || got.windows(2).any(|w| w == b"\n\n")
            }
            Err(_) => false,
        }
    }

    /// Waits, up to the read timeout, until the client has sent a byte or closed, without
    /// taking anything from the socket: true if there is a byte to read. So that a
    /// connection says it is reading *before* it takes a request's bytes, never holding a
    /// request unseen by [`evict`](super::slots::evict) and `hand_to_ending`.
    pub(super) fn wait_readable(&self) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut byte = [0u8; 1];
        loop {
            match recv(self.fd(), &mut byte[..], RecvFlags::PEEK) {
                Ok((n, _)) => return n > 0,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Sends `bytes` if the send buffer takes them now, without waiting: the answer to a
    /// connection closed from outside ([`evict`](super::slots::evict)), whose own thread
    /// cannot write it. A partial answer is never sent (nothing is written without room).
    pub(super) fn send_now(&self, bytes: &[u8]) {
        use rustix::net::{send, SendFlags};
        if !bytes.is_empty() && self.has_room() {
            let _ = send(self.fd(), bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
        }
    }

    /// True if a write would not wait for the client to read: no write of ours is blocked on a
    /// full send buffer now. Looks without waiting.
    pub(super) fn has_room(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let fd = self.fd();
        let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).is_ok_and(|_| !fds[0].revents().is_empty())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Listener {
    /// Binds a Unix socket at `path`, readable and writable by owner and group. A socket file
    /// nobody listens on (left by a process that died) is replaced; one where a live server
    /// answers is an error naming the path, so that a second agent cannot take over the first's.
    pub fn unix(path: &Path) -> Result<Listener, String> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let fail = |e: io::Error| format!("cannot listen on unix:{}: {e}", path.display());
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(format!(
                        "cannot listen on unix:{}: a running server (another yurt-ota?) answers \
                         there; stop it, or give this one another api.listen",
                        path.display()
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(fail)?
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let l = UnixListener::bind(path).map_err(fail)?;
        // Read and write for the service's user and group, whatever the umask: device apps
        // reach the socket by joining the group (the unit sets UMask=0027).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
        Ok(Listener::Unix(l, path.to_owned()))
    }

    pub(super) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// Wakes a thread blocked in `accept` (which then fails) by shutting the listening socket
    /// down for reading, through a duplicate of its descriptor. Nothing goes by the socket's
    /// address, which another process may have taken over.
    pub(super) fn wake(&self) {
        let fd: io::Result<OwnedFd> = match self {
            Listener::Tcp(l) => l.try_clone().map(OwnedFd::from),
            Listener::Unix(l, _) => l.try_clone().map(OwnedFd::from),
        };
        let done = fd.and_then(|fd| UnixStream::from(fd).shutdown(Both::Read));
        if let Err(e) = done {
            log::warn!("cannot wake the API's accept thread: {e}");
        }
    }
}
