//! Where a panic happened: a process-wide panic hook that records the location (and, on
//! request, a backtrace) of panics raised inside warden-hosted handlers, and keeps them off
//! stderr so that the crash report is the one record of the failure.
//!
//! The hook is installed once, when the first supervisor starts, and chains to the hook that
//! was there before: panics outside warden's handlers are printed as usual. A handler's
//! future is polled inside `InHandler`, which marks the polling thread; the hook runs on the
//! panicking thread during that poll, so the record is read back right after `catch_unwind`.
//!
//! ```
//! // Print handler panics to stderr as well (off by default: the crash report is the record),
//! // and keep a backtrace in every crash report (costs a capture per panic).
//! warden_core::panic_capture::print_handler_panics(true);
//! warden_core::panic_capture::capture_backtraces(true);
//! ```

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::task::{Context, Poll};

static BACKTRACES: AtomicBool = AtomicBool::new(false);
static PRINT: AtomicBool = AtomicBool::new(false);

thread_local! {
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    static LAST: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// What the hook recorded of a panic in a handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// `file:line:column` of the panic.
    pub location: Option<String>,
    /// A backtrace, when enabled with [`capture_backtraces`].
    pub backtrace: Option<String>,
}

/// Includes a backtrace in the crash report of every panic in a handler (off by default: a
/// backtrace costs tens of microseconds per panic).
pub fn capture_backtraces(on: bool) {
    BACKTRACES.store(on, Ordering::Relaxed);
}

/// Also prints panics in handlers to stderr, as Rust's default hook does (off by default: the
/// crash report carries the same facts, structured).
pub fn print_handler_panics(on: bool) {
    PRINT.store(on, Ordering::Relaxed);
}

/// Installs the hook once; later calls do nothing.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_HANDLER.with(Cell::get) {
                return previous(info);
            }
            let captured = Captured {
                location: info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
                backtrace: BACKTRACES
                    .load(Ordering::Relaxed)
                    .then(|| std::backtrace::Backtrace::force_capture().to_string()),
            };
            LAST.with(|l| *l.borrow_mut() = Some(captured));
            if PRINT.load(Ordering::Relaxed) {
                previous(info);
            }
        }));
    });
}

/// The record of the last panic in a handler on this thread, if any (taken).
pub(crate) fn take() -> Option<Captured> {
    LAST.with(|l| l.borrow_mut().take())
}

pin_project_lite::pin_project! {
    /// Polls a handler's future with the thread marked as "inside a warden handler".
    pub(crate) struct InHandler<F> {
        #[pin]
        inner: F,
    }
}

impl<F> InHandler<F> {
    pub(crate) fn new(inner: F) -> Self {
        InHandler { inner }
    }
}

impl<F: Future> Future for InHandler<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Restored even if the poll unwinds, so that the flag never leaks to other tasks.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                IN_HANDLER.with(|f| f.set(self.0));
            }
        }
        let _restore = Restore(IN_HANDLER.with(|f| f.replace(true)));
        self.project().inner.poll(cx)
    }
}
