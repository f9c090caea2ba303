//! The admin socket, `<run_dir>/admin` (mode 0600): one command line in, one answer out,
//! then the connection closes. Only root and the daemon's own user may use it: the socket's
//! mode, and the peer's credentials (`SO_PEERCRED`) checked on every connection.
//!
//! Commands (`saslauthd-rs-ctl` sends them):
//! - `metrics`: the OpenMetrics text of the driver's metrics, `# EOF` last;
//! - `reload`: the same as SIGHUP.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{bind_socket, serve, Limits};
use crate::auth::Live;

/// The longest command line.
const MAX_COMMAND: usize = 1024;

/// `<run_dir>/admin`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("admin")
}

/// Binds `<run_dir>/admin`, mode 0600, owned by `owner` (the user the daemon becomes).
pub fn bind(
    run_dir: &Path,
    owner: Option<(u32, u32)>,
) -> io::Result<std::os::unix::net::UnixListener> {
    bind_socket(&socket_path(run_dir), 0o600, owner)
}

/// Serves the admin socket until `shutdown` completes.
pub async fn serve_admin<L: super::Listen<Stream = UnixStream>>(
    listener: L,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Limits {
        read_timeout: Duration::from_secs(5),
        max_connections: 16,
        ..Limits::default()
    };
    serve(
        listener,
        limits,
        shutdown,
        || false,
        move |stream, _token, slot| {
            let live = Arc::clone(&live);
            async move {
                let _slot = slot;
                if let Err(e) = handle(stream, &live, limits.read_timeout).await {
                    tracing::debug!("admin connection: {e}");
                }
            }
        },
    )
    .await
}

async fn handle(mut stream: UnixStream, live: &Live, timeout: Duration) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let peer = stream.peer_cred()?.uid();
    let mut line = Vec::new();
    let read = tokio::time::timeout(timeout, async {
        let mut byte = [0u8; 256];
        while !line.contains(&b'\n') && line.len() <= MAX_COMMAND {
            let n = stream.read(&mut byte).await?;
            if n == 0 {
                break;
            }
            line.extend_from_slice(&byte[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) || line.len() > MAX_COMMAND {
        return Ok(());
    }
    // Checked once the command is read, so that the client hears the refusal.
    if peer != 0 && peer != me {
        tracing::warn!("admin socket: refused a connection from uid {peer}");
        return stream
            .write_all(b"error: only root and the daemon's user may use the admin socket\n")
            .await;
    }
    let text = String::from_utf8_lossy(&line);
    let command = text.trim();
    let answer = match command {
        "metrics" => live.current().metrics().encode(),
        "reload" => {
            // The SIGHUP handler does the work, as for `systemctl reload`.
            match nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGHUP) {
                Ok(()) => "ok: reloading (the log says how it went)\n".to_string(),
                Err(e) => format!("error: {e}\n"),
            }
        }
        other => format!("error: unknown command {other:?} (metrics, reload)\n"),
    };
    tracing::debug!(command, "admin command");
    stream.write_all(answer.as_bytes()).await
}
