//! The daemon's log lines are written by a thread of their own, so that a request never
//! waits for a `write(2)` to stderr, syslog or the journal: its thread formats the line and
//! queues it, and the writer thread writes what has queued, stderr lines in one write. With
//! `-V` (a line per success) that write was the largest cost of a request.
//!
//! Nothing is dropped: when the queue holds `MAX_QUEUED` bytes (a log that cannot keep
//! up), the next line waits for room, as a direct write would have. The order of lines is
//! kept. [`flush`] waits until every queued line is written: at exit, and after a panic's
//! line. Before [`start`] (and if the thread cannot be started), lines are written at once
//! by the thread that logs them.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::syslog::Priority;

/// Bytes queued at most before a line waits for the writer.
const MAX_QUEUED: usize = 1 << 20;

/// How long the writer lets lines gather after a write.
const GATHER: Duration = Duration::from_millis(2);

/// How long [`flush`] waits for a writer that is stuck (a full pipe to a dead reader).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// One formatted line and where it goes.
pub(crate) enum Line {
    /// Text for stderr, its newline included.
    Stderr(Vec<u8>),
    /// A message for syslog(3), at its priority.
    Syslog(Priority, Vec<u8>),
    /// A journal datagram; `text` goes to stderr when the journal does not take it.
    Journal {
        socket: Arc<UnixDatagram>,
        datagram: Vec<u8>,
        text: Vec<u8>,
    },
}

impl Line {
    fn len(&self) -> usize {
        match self {
            Line::Stderr(text) | Line::Syslog(_, text) => text.len(),
            Line::Journal { datagram, .. } => datagram.len(),
        }
    }

    /// Writes one line where it goes (stderr lines are gathered by the writer instead).
    fn write(self) {
        match self {
            Line::Stderr(text) => {
                // Nothing to be done about a log that refuses a line.
                let _ = std::io::stderr().write_all(&text);
            }
            Line::Syslog(priority, text) => {
                use std::os::unix::ffi::OsStrExt;
                let _ = nix::syslog::syslog(priority, std::ffi::OsStr::from_bytes(&text));
            }
            Line::Journal {
                socket,
                datagram,
                text,
            } => {
                if socket.send(&datagram).is_err() {
                    let _ = std::io::stderr().write_all(&text);
                }
            }
        }
    }
}

#[derive(Default)]
struct State {
    lines: VecDeque<Line>,
    /// Bytes in `lines`.
    queued: usize,
    /// The writer holds lines it took and has not written yet.
    writing: bool,
    /// The writer waits for a line (and must be woken); otherwise it comes back by itself.
    idle: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// Lines arrived (for the writer).
    arrived: Condvar,
    /// Lines written (for a full queue's senders, and [`flush`]).
    written: Condvar,
}

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

/// Starts the writer thread; lines logged from now on are queued. Call once privileges are
/// dropped (the thread is one of the process's). A second call does nothing.
pub fn start() {
    if QUEUE.get().is_some() {
        return;
    }
    let queue = Arc::new(Queue::default());
    let writer = Arc::clone(&queue);
    let spawned = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || write_lines(&writer));
    if spawned.is_ok() {
        let _ = QUEUE.set(queue);
    }
}

/// Queues `line` for the writer (waiting for room when the queue is full), or writes it at
/// once when there is no writer.
pub(crate) fn send(line: Line) {
    let Some(queue) = QUEUE.get() else {
        return line.write();
    };
    let mut state = queue.state.lock().unwrap_or_else(|e| e.into_inner());
    while state.queued >= MAX_QUEUED {
        state = queue.written.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    state.queued += line.len();
    state.lines.push_back(line);
    if state.idle {
        state.idle = false;
        queue.arrived.notify_one();
    }
}

/// Waits until every line queued so far is written (two seconds at most).
pub fn flush() {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let state = queue.state.lock().unwrap_or_else(|e| e.into_inner());
    let _ = queue
        .written
        .wait_timeout_while(state, FLUSH_WAIT, |s| !s.lines.is_empty() || s.writing);
}

/// The writer thread: takes what has queued, writes it (consecutive stderr lines in one
/// write), and again. After writing it lets lines gather for [`GATHER`] before it looks
/// again, and waits to be woken only when there were none: under load the logging threads
/// then wake nobody (a wake-up per line cost more than the write it saved), and a line
/// after a quiet spell is written at once.
fn write_lines(queue: &Queue) {
    let mut stderr_text = Vec::new();
    loop {
        let lines = {
            let mut state = queue.state.lock().unwrap_or_else(|e| e.into_inner());
            while state.lines.is_empty() {
                state.idle = true;
                state = queue.arrived.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.idle = false;
            state.queued = 0;
            state.writing = true;
            std::mem::take(&mut state.lines)
        };
        queue.written.notify_all();
        for line in lines {
            match line {
                Line::Stderr(text) => stderr_text.extend_from_slice(&text),
                other => {
                    write_stderr(&mut stderr_text);
                    other.write();
                }
            }
        }
        write_stderr(&mut stderr_text);
        queue
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writing = false;
        queue.written.notify_all();
        std::thread::sleep(GATHER);
    }
}

fn write_stderr(text: &mut Vec<u8>) {
    if !text.is_empty() {
        let _ = std::io::stderr().write_all(text);
        text.clear();
        if text.capacity() > MAX_QUEUED {
            *text = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_waits_for_every_queued_line() {
        // The process-wide queue: lines sent before the start are written at once, after
        // it by the thread, and a flush returns once the queue is empty.
        send(Line::Stderr(
            b"log_writer test: before the start\n".to_vec(),
        ));
        start();
        start();
        for i in 0..1000 {
            send(Line::Stderr(
                format!("log_writer test: line {i}\n").into_bytes(),
            ));
        }
        flush();
        let queue = QUEUE.get().expect("started");
        let state = queue.state.lock().unwrap();
        assert!(state.lines.is_empty() && !state.writing && state.queued == 0);
    }
}
