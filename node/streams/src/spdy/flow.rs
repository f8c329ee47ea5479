//! SPDY/3.1 flow control windows (§2.6.8): 64 KiB initial windows per stream and for the
//! session, reopened by WINDOW_UPDATE.

use std::sync::Mutex;

use tokio::sync::Notify;

/// The initial window of every stream and of the session.
pub const INITIAL_WINDOW: u32 = 64 * 1024;
/// Windows may not grow past 2^31-1.
const MAX_WINDOW: i64 = 0x7fff_ffff;

/// What the server lets the client send: shrinks as DATA arrives, and once half the initial
/// window has been consumed the consumed amount is returned as a WINDOW_UPDATE delta.
#[derive(Debug)]
pub struct RecvWindow {
    window: i64,
    unacknowledged: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow::new()
    }
}

impl RecvWindow {
    pub fn new() -> RecvWindow {
        RecvWindow {
            window: i64::from(INITIAL_WINDOW),
            unacknowledged: 0,
        }
    }

    /// Data arrived. Returns false if the client overran the window. This is not enforced:
    /// moby/spdystream ignores windows, so every kubectl would overrun it.
    pub fn received(&mut self, n: usize) -> bool {
        self.window -= n as i64;
        self.window >= 0
    }

    /// The application took `n` bytes; returns the delta to announce, if it is time.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.unacknowledged = self.unacknowledged.saturating_add(n as u32);
        if self.unacknowledged >= INITIAL_WINDOW / 2 {
            let delta = self.unacknowledged;
            self.unacknowledged = 0;
            self.window += i64::from(delta);
            Some(delta)
        } else {
            None
        }
    }

    pub fn available(&self) -> i64 {
        self.window
    }
}

#[derive(Debug, thiserror::Error)]
#[error("window update grows the window past 2^31-1")]
pub struct WindowOverflow;

/// What the client lets the server send.
#[derive(Debug)]
pub struct SendWindow {
    window: Mutex<i64>,
    initial: Mutex<i64>,
    opened: Notify,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow::new()
    }
}

impl SendWindow {
    pub fn new() -> SendWindow {
        SendWindow::with_initial(INITIAL_WINDOW)
    }

    /// A window that starts at `initial` (the client's SETTINGS_INITIAL_WINDOW_SIZE).
    pub fn with_initial(initial: u32) -> SendWindow {
        SendWindow {
            window: Mutex::new(i64::from(initial)),
            initial: Mutex::new(i64::from(initial)),
            opened: Notify::new(),
        }
    }

    /// Returns window taken but not used.
    pub fn give_back(&self, n: usize) {
        if n > 0 {
            *self.window.lock().unwrap_or_else(|e| e.into_inner()) += n as i64;
            self.opened.notify_waiters();
        }
    }

    pub fn available(&self) -> i64 {
        *self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// WINDOW_UPDATE from the client.
    pub fn grow(&self, delta: u32) -> Result<(), WindowOverflow> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let grown = *w + i64::from(delta);
        if grown > MAX_WINDOW {
            return Err(WindowOverflow);
        }
        *w = grown;
        drop(w);
        self.opened.notify_waiters();
        Ok(())
    }

    /// SETTINGS_INITIAL_WINDOW_SIZE: moves the window by the change of the initial size, which
    /// can make it negative (§2.6.8).
    pub fn set_initial(&self, initial: u32) {
        let mut old = self.initial.lock().unwrap_or_else(|e| e.into_inner());
        let diff = i64::from(initial) - *old;
        *old = i64::from(initial);
        *self.window.lock().unwrap_or_else(|e| e.into_inner()) += diff;
        self.opened.notify_waiters();
    }

    /// Takes up to `want` bytes of window, waiting while it is closed. Returns how many were
    /// taken (at least 1 when `want` > 0).
    pub async fn take(&self, want: usize) -> usize {
        loop {
            let opened = self.opened.notified();
            {
                let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
                if *w > 0 {
                    let n = (want as i64).min(*w);
                    *w -= n;
                    return n as usize;
                }
            }
            opened.await;
        }
    }
}
