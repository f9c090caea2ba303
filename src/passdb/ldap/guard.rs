//! ldap3 (0.12) panics on some replies it cannot decode instead of returning an error: an
//! empty SEQUENCE, a message without an ID, a search answered with an operation it does not
//! expect (Samba's extended response), a malformed result or entry. A broken or hostile
//! directory must cost a connection or a request, never a task that dies in silence (a
//! change stream that stops following) or a panic report per reply in the log. So every
//! future that reads the directory's replies is polled through `guarded`: a panic in it is
//! caught and becomes an error, logged where it is caught with the server's name, and the
//! process's panic hook ([`crate::process::log_panics`]) asks [`caught_here`] and stays
//! quiet for it.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many [`Guarded`] futures this thread is polling now (they nest: a request's future
    /// holds the connect's).
    static POLLING: Cell<u32> = const { Cell::new(0) };
}

/// Whether a panic on this thread now will be caught by a `Guarded` future.
pub fn caught_here() -> bool {
    POLLING.with(|p| p.get() > 0)
}

/// A panic the LDAP library had on something the server sent, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server sent a reply the LDAP library cannot read ({0})")]
pub(super) struct Panicked(pub(super) String);

/// `f()`, or its panic.
pub(super) fn unpanicked<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    let depth = POLLING.with(|p| p.replace(p.get() + 1));
    let done = std::panic::catch_unwind(AssertUnwindSafe(f));
    POLLING.with(|p| p.set(depth));
    done.map_err(|payload| Panicked(message(payload.as_ref())))
}

/// `future`, whose panics become `Err` with the panic's message.
pub(super) fn guarded<F: Future>(future: F) -> Guarded<F> {
    Guarded {
        inner: Some(Box::pin(future)),
    }
}

/// See [`guarded`].
pub(super) struct Guarded<F> {
    /// `None` once it has panicked: never polled again.
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(Panicked("polled after it panicked".into())));
        };
        match unpanicked(|| inner.as_mut().poll(cx)) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(message) => {
                self.inner = None;
                Poll::Ready(Err(message))
            }
        }
    }
}

/// The longest panic message kept: ldap3's may print a whole undecodable message.
const MAX_MESSAGE: usize = 200;

/// A panic's message, printable and at most `MAX_MESSAGE` bytes. ldap3's describe what
/// the server sent, never a request; the daemon's own are fixed texts.
pub fn message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let cut = text.len().min(MAX_MESSAGE);
    let cut = (0..=cut)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let shown = crate::request::Printable(&text.as_bytes()[..cut]).to_string();
    if cut < text.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_nothing_else_changes() {
        let ok = guarded(async { 7 }).await;
        assert_eq!(ok, Ok(7));
        assert!(!caught_here());
        let failed = guarded(async {
            assert!(caught_here());
            panic!("unrecognized op id: 24");
        })
        .await;
        assert_eq!(failed, Err(Panicked("unrecognized op id: 24".into())));
        assert!(!caught_here(), "the depth is restored after a panic");
        // Nested: the inner one catches; the outer one goes on.
        let outer = guarded(async {
            let inner = guarded(async { panic!("{}", "element") }).await;
            assert!(caught_here());
            inner
        })
        .await;
        assert_eq!(outer, Ok(Err(Panicked("element".into()))));
    }

    #[test]
    fn long_or_unprintable_messages_are_cut_and_escaped() {
        let long = "x".repeat(500);
        let shown = message(&long);
        assert_eq!(shown.chars().filter(|&c| c == 'x').count(), MAX_MESSAGE);
        assert!(shown.ends_with('…'));
        assert!(!message(&"line\nbreak").contains('\n'));
        assert_eq!(message(&42u8), "a panic without a message");
        assert_eq!(unpanicked(|| 1), Ok(1));
        assert_eq!(
            unpanicked(|| -> u8 { panic!("expected") }),
            Err(Panicked("expected".into()))
        );
    }
}
