//! The OS threads command containers run on, kept for the next command once one ends.
//!
//! A command needs a thread of its own (its CPU time is the thread's, it joins the pod's
//! network namespace, and a busy guest must not stall the agent), but making and ending a
//! thread per pod cost about a twentieth of a Wasm burst's CPU: the stack and signal
//! stacks mapped, protected and unmapped (each a TLB flush on every CPU running the
//! agent), the allocator's per-thread heap set up and torn down. A thread that ran a
//! command goes back to the host's network namespace and waits for the next one; if it
//! cannot go back it ends. Each command still builds its own tokio runtime on it, so
//! nothing a guest left behind (tasks, the runtime's blocking threads, which were made in
//! the pod's namespace) outlives the command.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A command's whole run, from entering the pod's namespace to reporting its exit.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Threads kept waiting at most: a burst's worth of concurrent commands.
const MAX_IDLE: usize = 64;
/// A waiting thread ends after this long without a command.
const IDLE_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(crate) struct Threads {
    /// Waiting threads, the most recently used last (its stack and heap are the warmest).
    idle: Mutex<Vec<(u64, Sender<Job>)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Threads {
    /// Runs `job` on a waiting thread, or on a new one.
    pub(crate) fn run(self: &Arc<Self>, job: Job) -> std::io::Result<()> {
        let waiting = self.idle.lock().expect("idle threads").pop();
        if let Some((_, tx)) = waiting {
            // A popped thread is waiting on its channel (an ending thread that found
            // itself popped waits for this job), so the send always lands.
            return tx
                .send(job)
                .map_err(|_| std::io::Error::other("a command thread ended while taken"));
        }
        let (tx, rx) = mpsc::channel();
        tx.send(job).expect("the receiver is held here");
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let threads = self.clone();
        std::thread::Builder::new()
            .name("wasm command".into())
            .spawn(move || threads.work(id, tx, rx))?;
        Ok(())
    }

    fn work(&self, id: u64, tx: Sender<Job>, rx: Receiver<Job>) {
        loop {
            let job = match rx.recv_timeout(IDLE_FOR) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    let mut idle = self.idle.lock().expect("idle threads");
                    match idle.iter().position(|(i, _)| *i == id) {
                        // Still listed: nobody can hand it a job any more.
                        Some(at) => {
                            idle.remove(at);
                            return;
                        }
                        // Taken just now: its job is on the way.
                        None => {
                            drop(idle);
                            match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            job();
            // Back in the host's network namespace, or never used again: the next pod's
            // sockets must not be made in this one's.
            if crate::netns::back_to_host().is_err() {
                return;
            }
            let mut idle = self.idle.lock().expect("idle threads");
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push((id, tx.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread a job ran on, by its id in /proc.
    fn run_and_tid(threads: &Arc<Threads>) -> String {
        let (tx, rx) = mpsc::channel();
        threads
            .run(Box::new(move || {
                let link = std::fs::read_link("/proc/thread-self").expect("thread-self");
                tx.send(link.file_name().unwrap().to_string_lossy().into_owned())
                    .unwrap();
            }))
            .unwrap();
        rx.recv().unwrap()
    }

    #[test]
    fn a_finished_command_thread_runs_the_next_command() {
        let threads = Arc::new(Threads::default());
        let first = run_and_tid(&threads);
        // The thread lists itself as waiting once its job returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while threads.idle.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never came back");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(run_and_tid(&threads), first);
        // Two at once take two threads.
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let (tx, rx) = mpsc::channel::<()>();
                let (seen_tx, seen_rx) = mpsc::channel();
                threads
                    .run(Box::new(move || {
                        let link = std::fs::read_link("/proc/thread-self").unwrap();
                        seen_tx.send(link).unwrap();
                        let _ = rx.recv();
                    }))
                    .unwrap();
                let seen = seen_rx.recv().unwrap();
                (seen, tx)
            });
            let (held, release) = a.join().unwrap();
            let other = run_and_tid(&threads);
            drop(release);
            (held, other)
        });
        assert_ne!(a.file_name().unwrap().to_string_lossy(), b);
    }
}
