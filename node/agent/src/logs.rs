//! Container logs, in the CRI format the kubelet reads: one file per container attempt,
//! `<logs>/<namespace>_<pod>_<uid>_<container>_<restart>.log` (names and uids have no `_`),
//! each line
//! `<RFC 3339 nano time> <stdout|stderr> <F|P> <text>` (`P` for a partial line). Files rotate
//! at [`MAX_FILE_BYTES`], keeping [`MAX_FILES`] per attempt, as the kubelet's
//! containerLogMaxSize and containerLogMaxFiles defaults do.
//!
//! The kubelet makes a directory per pod and one per container; here they are files in one
//! directory. Under pod churn a new inode was the costliest part of starting a container
//! (ext4 without a journal checks each candidate inode for a recent deletion, and new
//! directories are spread over block groups): one inode per attempt is the least there is,
//! and even that one is not made while a pod starts. Removed logs are emptied and kept as
//! spares in `<logs>/.spare`, and the agent makes spares (two per pod it may hold) in the
//! background when it starts and once pods stop starting; a new attempt's file is a spare
//! renamed into place (a rename allocates no inode), or a new file when none is left.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use skiff_shim::{LogSink, Stream};
use tokio::sync::{mpsc, watch};

pub const MAX_FILE_BYTES: u64 = 10 << 20;
pub const MAX_FILES: usize = 5;

/// The spares' directory inside the logs directory.
const SPARE_DIR: &str = ".spare";

#[derive(Clone)]
pub struct LogManager {
    root: PathBuf,
    /// Bytes written per log file, for followers to wait on.
    written: Arc<Mutex<HashMap<PathBuf, watch::Sender<u64>>>>,
    spares: Arc<Spares>,
}

/// Empty files kept for new attempts, named by number in [`SPARE_DIR`].
struct Spares {
    dir: PathBuf,
    /// Most spares kept.
    cap: usize,
    state: Mutex<SpareState>,
    /// Signalled when a spare is taken.
    taken: std::sync::Condvar,
}

#[derive(Default)]
struct SpareState {
    free: Vec<u64>,
    /// Spares being made or given back, not yet in `free`: counted against the cap so
    /// that concurrent givers and the maker cannot overshoot it.
    pending: usize,
    next: u64,
    /// When a spare was last taken.
    taken: Option<std::time::Instant>,
}

/// Spares are made again only once none has been taken for this long: making one holds
/// the spares' directory, which a pod starting meanwhile must wait for, and the maker runs
/// at the lowest priority.
const SPARES_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

impl Spares {
    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(n.to_string())
    }

    /// Moves a spare to `path`, emptied, with the time of now; false when none is left.
    fn take(&self, path: &Path) -> bool {
        loop {
            let n = {
                let mut state = self.state.lock().expect("spares lock");
                let Some(n) = state.free.pop() else {
                    return false;
                };
                state.taken = Some(std::time::Instant::now());
                n
            };
            self.taken.notify_one();
            // A spare someone removed by hand is skipped.
            if std::fs::rename(self.path(n), path).is_ok() {
                return true;
            }
        }
    }

    /// Keeps `path` as a spare when there is room (emptied), else removes it.
    fn give(&self, path: &Path) {
        let n = {
            let mut state = self.state.lock().expect("spares lock");
            if state.free.len() + state.pending >= self.cap {
                None
            } else {
                state.pending += 1;
                state.next += 1;
                Some(state.next)
            }
        };
        let kept = n.is_some_and(|n| {
            let emptied = OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(0));
            emptied.is_ok() && std::fs::rename(path, self.path(n)).is_ok()
        });
        if let Some(n) = n {
            let mut state = self.state.lock().expect("spares lock");
            state.pending -= 1;
            if kept {
                state.free.push(n);
                return;
            }
        }
        let _ = std::fs::remove_file(path);
    }

    /// Makes spares until there are `cap`, or until one is taken (then the caller waits
    /// for pods to stop starting and calls again); false when one could not be made.
    fn fill(&self) -> bool {
        loop {
            let n = {
                let mut state = self.state.lock().expect("spares lock");
                let busy = state.taken.is_some_and(|t| t.elapsed() < SPARES_QUIET);
                if state.free.len() + state.pending >= self.cap || busy {
                    return true;
                }
                state.pending += 1;
                state.next += 1;
                state.next
            };
            let made = File::create(self.path(n)).is_ok();
            let mut state = self.state.lock().expect("spares lock");
            state.pending -= 1;
            if !made {
                return false;
            }
            state.free.push(n);
        }
    }
}

impl LogManager {
    /// Logs in `root`, without spares.
    pub fn new(root: PathBuf) -> io::Result<Self> {
        Self::with_spares(root, 0)
    }

    /// Logs in `root`, keeping up to `spares` empty files for new attempts. The spares
    /// left from before are found again; [`LogManager::fill_spares`] makes the rest.
    pub fn with_spares(root: PathBuf, spares: usize) -> io::Result<Self> {
        let dir = root.join(SPARE_DIR);
        std::fs::create_dir_all(if spares > 0 { &dir } else { &root })?;
        let mut state = SpareState::default();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                Some(n) if state.free.len() < spares => {
                    state.next = state.next.max(n);
                    state.free.push(n);
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self {
            root,
            written: Arc::default(),
            spares: Arc::new(Spares {
                dir,
                cap: spares,
                state: Mutex::new(state),
                taken: std::sync::Condvar::new(),
            }),
        })
    }

    /// Makes spares up to the number kept, in a background thread at the lowest CPU
    /// priority, so that a node starting pods right away is not slowed by it.
    ///
    /// The thread then tops the spares up again whenever pods have taken some, so that a
    /// burst after a steady stream finds them; it ends with the last handle on the logs.
    pub fn fill_spares(&self) {
        let spares = Arc::downgrade(&self.spares);
        let _ = std::thread::Builder::new()
            .name("skiff-log-spares".into())
            .spawn(move || {
                // SAFETY: setpriority on the calling thread (who 0), no memory involved.
                unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
                while let Some(spares) = spares.upgrade() {
                    // A disk that refuses files is tried again later, not in a loop.
                    let made = spares.fill();
                    let state = spares.state.lock().expect("spares lock");
                    let quiet = match state.taken {
                        Some(t) if made && state.free.len() < spares.cap => {
                            SPARES_QUIET.saturating_sub(t.elapsed())
                        }
                        _ => std::time::Duration::from_secs(5),
                    };
                    // Woken when a spare is taken; the timeout notices the logs are gone.
                    let _ = spares
                        .taken
                        .wait_timeout(state, quiet.max(std::time::Duration::from_millis(10)));
                }
            });
    }

    /// Opens `path` for appending: an existing file, a spare, or a new file.
    fn create(&self, path: &Path) -> io::Result<File> {
        let append = || OpenOptions::new().append(true).open(path);
        match append() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        if self.spares.take(path) {
            let file = append()?;
            // Its time is what tells a recreated pod's logs from the old pod's.
            file.set_modified(std::time::SystemTime::now())?;
            return Ok(file);
        }
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Where the logs of a pod's containers start: `<root>/<namespace>_<pod>_<uid>_`.
    fn pod_prefix(namespace: &str, pod: &str, uid: &str) -> String {
        format!("{namespace}_{pod}_{uid}_")
    }

    /// A writer for one attempt of a container.
    pub fn open(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        restart: u32,
    ) -> io::Result<Arc<ContainerLog>> {
        let path = self.root.join(format!(
            "{}{container}_{restart}.log",
            Self::pod_prefix(namespace, pod, uid)
        ));
        let file = self.create(&path)?;
        let size = file.metadata()?.len();
        let notify = self
            .written
            .lock()
            .expect("log lock")
            .entry(path.clone())
            .or_insert_with(|| watch::channel(size).0)
            .clone();
        Ok(Arc::new(ContainerLog {
            manager: self.clone(),
            path,
            state: Mutex::new(WriterState {
                file,
                size,
                partial: [Vec::new(), Vec::new()],
            }),
            notify,
            live: Mutex::new(Vec::new()),
        }))
    }

    /// Removes a pod's logs (when the pod object is gone), rotated ones included.
    pub fn remove_pod(&self, namespace: &str, pod: &str, uid: &str) {
        let prefix = Self::pod_prefix(namespace, pod, uid);
        let ours = |name: &std::ffi::OsStr| name.to_str().is_some_and(|n| n.starts_with(&prefix));
        self.written
            .lock()
            .expect("log lock")
            .retain(|p, _| !p.file_name().is_some_and(ours));
        for entry in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            if ours(&entry.file_name()) {
                self.spares.give(&entry.path());
            }
        }
    }

    /// The log file of a container: the newest attempt, or the one before it. Of several
    /// pods by this name (one deleted, one recreated), the one written to last.
    pub fn find(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{pod}_");
        // Per pod uid: when its logs were last written, and this container's attempts.
        let mut pods: HashMap<String, (std::time::SystemTime, Vec<u32>)> = HashMap::new();
        for entry in std::fs::read_dir(&self.root).ok()?.flatten() {
            let name = entry.file_name();
            // `<uid>_<container>_<attempt>.log`: uids and container names have no `_`.
            let Some((uid, rest)) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|r| r.split_once('_'))
            else {
                continue;
            };
            let Some(modified) = entry.metadata().ok().and_then(|m| m.modified().ok()) else {
                continue;
            };
            let slot = pods
                .entry(uid.to_string())
                .or_insert((std::time::SystemTime::UNIX_EPOCH, Vec::new()));
            slot.0 = slot.0.max(modified);
            if let Some((c, attempt)) = rest.rsplit_once('_')
                && c == container
                && let Ok(attempt) = attempt.parse()
            {
                slot.1.push(attempt);
            }
        }
        let (uid, (_, mut attempts)) = pods.into_iter().max_by_key(|(_, (t, _))| *t)?;
        attempts.sort_unstable();
        let attempt = if previous {
            attempts.iter().rev().nth(1)?
        } else {
            attempts.last()?
        };
        Some(
            self.root
                .join(format!("{prefix}{uid}_{container}_{attempt}.log")),
        )
    }

    /// Waits for a log file to grow past `len`.
    pub fn subscribe(&self, path: &Path) -> Option<watch::Receiver<u64>> {
        self.written
            .lock()
            .expect("log lock")
            .get(path)
            .map(|tx| tx.subscribe())
    }
}

struct WriterState {
    file: File,
    size: u64,
    /// An unfinished line per stream.
    partial: [Vec<u8>; 2],
}

/// One container attempt's log file.
pub struct ContainerLog {
    manager: LogManager,
    path: PathBuf,
    state: Mutex<WriterState>,
    notify: watch::Sender<u64>,
    /// `kubectl attach` sessions following the output as it is written.
    live: Mutex<Vec<mpsc::Sender<Chunk>>>,
}

/// A piece of output as the container wrote it, for `kubectl attach`.
pub type Chunk = (Stream, Vec<u8>);

/// Chunks an attach session may fall behind by; one further behind is cut off (its output
/// ends) rather than holding up the container's output or the agent's memory.
const LIVE_BACKLOG: usize = 256;

/// Longest line kept whole; longer ones are written as `P` pieces, as CRI runtimes do.
const MAX_LINE: usize = 16 * 1024;

impl ContainerLog {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_line(&self, state: &mut WriterState, stream: Stream, tag: char, line: &[u8]) {
        let mut out = Vec::with_capacity(line.len() + 48);
        out.extend_from_slice(
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.push(b' ');
        out.push(tag as u8);
        out.push(b' ');
        out.extend_from_slice(line);
        out.push(b'\n');
        if state.size + out.len() as u64 > MAX_FILE_BYTES {
            self.rotate(state);
        }
        if state.file.write_all(&out).is_ok() {
            state.size += out.len() as u64;
        }
    }

    /// `c_0.log` → `c_0.log.<time>`; the oldest rotated files beyond the limit are removed.
    fn rotate(&self, state: &mut WriterState) {
        let stamp = Utc::now().format("%Y%m%d-%H%M%S%.f");
        let rotated = self.path.with_extension(format!("log.{stamp}"));
        if std::fs::rename(&self.path, &rotated).is_err() {
            return;
        }
        if let Ok(f) = self.manager.create(&self.path) {
            state.file = f;
            state.size = 0;
        }
        let name = self
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut old: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}.")))
            })
            .collect();
        old.sort();
        while old.len() >= MAX_FILES {
            self.manager.spares.give(&old.remove(0));
        }
    }

    /// Writes out unfinished lines (at the end of an attempt).
    pub fn flush(&self) {
        let mut state = self.state.lock().expect("log lock");
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut state.partial[stream as usize]);
            if !line.is_empty() {
                self.write_line(&mut state, stream, 'F', &line);
            }
        }
        let _ = state.file.flush();
        self.notify.send_replace(state.size);
    }
}

impl ContainerLog {
    /// Output written from now on, until the attempt is over (`kubectl attach`).
    pub fn follow_live(&self) -> mpsc::Receiver<Chunk> {
        let (tx, rx) = mpsc::channel(LIVE_BACKLOG);
        self.live.lock().expect("live lock").push(tx);
        rx
    }

    /// The attempt is over: unfinished lines are written and followers are told, once the
    /// last handle to this log is dropped, that nothing more will come.
    pub fn close(&self) {
        self.live.lock().expect("live lock").clear();
        self.flush();
        self.manager
            .written
            .lock()
            .expect("log lock")
            .remove(&self.path);
    }
}

impl LogSink for ContainerLog {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.state.lock().expect("log lock");
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut state.partial[stream as usize]);
            line.extend_from_slice(&rest[..i]);
            self.write_line(&mut state, stream, 'F', &line);
            rest = &rest[i + 1..];
        }
        let partial = &mut state.partial[stream as usize];
        partial.extend_from_slice(rest);
        while state.partial[stream as usize].len() >= MAX_LINE {
            let piece: Vec<u8> = state.partial[stream as usize].drain(..MAX_LINE).collect();
            self.write_line(&mut state, stream, 'P', &piece);
        }
        self.notify.send_replace(state.size);
        drop(state);
        let mut live = self.live.lock().expect("live lock");
        if !live.is_empty() {
            live.retain(|tx| tx.try_send((stream, bytes.to_vec())).is_ok());
        }
    }
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub time: DateTime<Utc>,
    pub stream: String,
    pub partial: bool,
    pub text: String,
}

pub fn parse_line(raw: &str) -> Option<Line> {
    let mut parts = raw.splitn(4, ' ');
    let time = DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&Utc);
    let stream = parts.next()?.to_string();
    let partial = parts.next()? == "P";
    let text = parts.next().unwrap_or("").to_string();
    Some(Line {
        time,
        stream,
        partial,
        text,
    })
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    pub since: Option<DateTime<Utc>>,
    pub limit_bytes: Option<usize>,
}

/// Reads a log file from the start (or its last `tail_lines` lines) and renders what the
/// options select. Returns the rendered text and the file offset it read to.
pub fn read_from(
    path: &Path,
    offset: u64,
    opts: &LogOptions,
    first: bool,
) -> io::Result<(Vec<u8>, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut read = offset;
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        read += n as u64;
        if let Some(line) = parse_line(buf.trim_end_matches('\n')) {
            lines.push(line);
        }
    }
    if first && let Some(tail) = opts.tail_lines {
        let full = lines.iter().filter(|l| !l.partial).count();
        let mut skip_full = full.saturating_sub(tail);
        let mut start = 0;
        while skip_full > 0 && start < lines.len() {
            if !lines[start].partial {
                skip_full -= 1;
            }
            start += 1;
        }
        lines.drain(..start);
    }
    let mut out = Vec::new();
    for line in lines {
        if opts.since.is_some_and(|since| line.time < since) {
            continue;
        }
        if opts.timestamps {
            out.extend_from_slice(
                line.time
                    .to_rfc3339_opts(SecondsFormat::Nanos, true)
                    .as_bytes(),
            );
            out.push(b' ');
        }
        out.extend_from_slice(line.text.as_bytes());
        if !line.partial {
            out.push(b'\n');
        }
    }
    Ok((out, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_partial_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(dir.path().to_path_buf()).unwrap();
        let log = logs.open("ns", "p", "u1", "c", 0).unwrap();
        log.write(Stream::Stdout, b"one\ntw");
        log.write(Stream::Stderr, b"err\n");
        log.write(Stream::Stdout, b"o\nthree");
        log.flush();
        let path = logs.find("ns", "p", "c", false).unwrap();
        let (all, _) = read_from(&path, 0, &LogOptions::default(), true).unwrap();
        assert_eq!(String::from_utf8(all).unwrap(), "one\nerr\ntwo\nthree\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let (last, _) = read_from(&path, 0, &tail, true).unwrap();
        assert_eq!(String::from_utf8(last).unwrap(), "two\nthree\n");
        let raw = std::fs::read_to_string(&path).unwrap();
        let first = parse_line(raw.lines().nth(1).unwrap()).unwrap();
        assert_eq!(
            (first.stream.as_str(), first.text.as_str()),
            ("stderr", "err")
        );
    }

    #[test]
    fn previous_is_the_attempt_before() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(dir.path().to_path_buf()).unwrap();
        for attempt in 0..3 {
            let log = logs.open("ns", "p", "u1", "c", attempt).unwrap();
            log.write(Stream::Stdout, format!("attempt {attempt}\n").as_bytes());
        }
        let now = logs.find("ns", "p", "c", false).unwrap();
        let before = logs.find("ns", "p", "c", true).unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            (name(&now), name(&before)),
            ("ns_p_u1_c_2.log".into(), "ns_p_u1_c_1.log".into())
        );
        // Another container's attempts are its own, even with a name that extends this one.
        let other = logs.open("ns", "p", "u1", "c-2", 7).unwrap();
        other.write(Stream::Stdout, b"other\n");
        assert_eq!(logs.find("ns", "p", "c", false).unwrap(), now);
        assert!(logs.find("ns", "p", "c-2", true).is_none());
        // A pod of that name recreated (a new uid): its logs, not the old pod's.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let again = logs.open("ns", "p", "u2", "c", 0).unwrap();
        again.write(Stream::Stdout, b"again\n");
        assert_eq!(
            name(&logs.find("ns", "p", "c", false).unwrap()),
            "ns_p_u2_c_0.log"
        );
        assert!(
            logs.find("ns", "p", "c", true).is_none(),
            "u2 has one attempt"
        );
        // Removing a pod takes all its files and no other pod's.
        let other_pod = logs.open("ns", "p2", "u3", "c", 0).unwrap();
        other_pod.write(Stream::Stdout, b"x\n");
        logs.remove_pod("ns", "p", "u2");
        assert_eq!(
            name(&logs.find("ns", "p", "c", false).unwrap()),
            "ns_p_u1_c_2.log"
        );
        logs.remove_pod("ns", "p", "u1");
        assert!(logs.find("ns", "p", "c", false).is_none());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "p2's log is left"
        );
    }

    #[test]
    fn removed_logs_are_emptied_spares_for_new_attempts() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let spares = |d: &Path| std::fs::read_dir(d.join(SPARE_DIR)).unwrap().count();
        let logs = LogManager::with_spares(dir.path().to_path_buf(), 2).unwrap();
        assert!(logs.spares.fill());
        assert_eq!(spares(dir.path()), 2);
        let first = logs.open("ns", "p", "u1", "c", 0).unwrap();
        first.write(Stream::Stdout, b"old pod\n");
        first.close();
        let inode = std::fs::metadata(first.path()).unwrap().ino();
        assert_eq!(spares(dir.path()), 1, "the first attempt took a spare");
        // Gone with its pod, the file is kept (emptied) for the next pod of that name.
        std::thread::sleep(std::time::Duration::from_millis(20));
        logs.remove_pod("ns", "p", "u1");
        assert!(logs.find("ns", "p", "c", false).is_none());
        let again = logs.open("ns", "p", "u2", "c", 0).unwrap();
        again.write(Stream::Stdout, b"new pod\n");
        let path = logs.find("ns", "p", "c", false).unwrap();
        assert_eq!(path, again.path());
        let (text, _) = read_from(&path, 0, &LogOptions::default(), true).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "new pod\n");
        let reused: Vec<u64> = [0u32, 1, 2]
            .iter()
            .map(|&a| logs.open("ns", "q", "u3", "c", a).unwrap())
            .map(|l| std::fs::metadata(l.path()).unwrap().ino())
            .collect();
        assert!(
            std::fs::metadata(&path).unwrap().ino() == inode || reused.contains(&inode),
            "the removed file's inode came back"
        );
        assert_eq!(spares(dir.path()), 0, "none left: new files are made");
        // No more spares are kept than asked for; the rest are removed.
        logs.remove_pod("ns", "q", "u3");
        logs.remove_pod("ns", "p", "u2");
        assert_eq!(spares(dir.path()), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A restarted agent finds its spares again.
        let restarted = LogManager::with_spares(dir.path().to_path_buf(), 1).unwrap();
        assert_eq!(spares(dir.path()), 1, "spares beyond the new limit removed");
        let log = restarted.open("ns", "r", "u4", "c", 0).unwrap();
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), 0);
        assert_eq!(spares(dir.path()), 0);
    }

    #[test]
    fn spares_taken_are_made_again_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let spares = || {
            std::fs::read_dir(dir.path().join(SPARE_DIR))
                .unwrap()
                .count()
        };
        let eventually = |n: usize| {
            let start = std::time::Instant::now();
            while spares() != n {
                assert!(
                    start.elapsed().as_secs() < 20,
                    "{} spares, not {n}",
                    spares()
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let logs = LogManager::with_spares(dir.path().to_path_buf(), 3).unwrap();
        logs.fill_spares();
        eventually(3);
        let taken: Vec<_> = (0..2)
            .map(|i| logs.open("ns", "p", "u", "c", i).unwrap())
            .collect();
        eventually(3);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "2 logs and .spare"
        );
        drop(taken);
    }

    #[test]
    fn pods_removed_at_once_keep_no_more_spares_than_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::with_spares(dir.path().to_path_buf(), 4).unwrap();
        let pods: Vec<Vec<_>> = (0..8)
            .map(|t| {
                (0..40)
                    .map(|i| logs.open("ns", &format!("p{t}-{i}"), "u", "c", 0).unwrap())
                    .collect()
            })
            .collect();
        // Eight threads remove their pods' logs at the same time.
        std::thread::scope(|s| {
            for (t, pod_logs) in pods.into_iter().enumerate() {
                let logs = &logs;
                s.spawn(move || {
                    for (i, log) in pod_logs.into_iter().enumerate() {
                        log.close();
                        logs.remove_pod("ns", &format!("p{t}-{i}"), "u");
                    }
                });
            }
        });
        let spares = std::fs::read_dir(dir.path().join(SPARE_DIR))
            .unwrap()
            .count();
        assert_eq!(spares, 4, "spares kept of at most 4");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only .spare"
        );
    }

    #[test]
    fn long_lines_become_partial_pieces_that_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(dir.path().to_path_buf()).unwrap();
        let log = logs.open("ns", "p", "u1", "c", 0).unwrap();
        let long = "x".repeat(MAX_LINE * 2 + 10);
        log.write(Stream::Stdout, format!("{long}\n").as_bytes());
        let (text, _) = read_from(log.path(), 0, &LogOptions::default(), true).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), format!("{long}\n"));
    }
}
