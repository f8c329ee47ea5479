//! A wasi:cli command for the node agent's tests: the first argument picks a behaviour, the
//! rest are its parameters. Every behaviour prints what it does, so a test can read progress
//! from the pod's logs. Only std is used, so the same program also runs natively.
//!
//! ```text
//! exit N              print "exiting with N", exit with code N
//! echo ARGS...        print each argument on its own line
//! print-env           print every environment variable as KEY=VALUE, sorted by key
//! cat PATH...         print the files' contents
//! write PATH TEXT     write TEXT (no newline added) to PATH, print "wrote N bytes to PATH"
//! ls DIR              print DIR's entry names, sorted, one a line, directories with a '/'
//! alloc MIB           allocate and touch MIB MiB, 1 MiB at a time, printing "allocated K MiB"
//! spin                print "spinning", then busy-loop forever
//! sleep SECS          print "sleeping SECS", sleep (fractions allowed), print "slept", exit 0
//! serve PORT          listen on 0.0.0.0:PORT, print "listening on 0.0.0.0:P" (P the bound
//!                     port, for PORT 0), answer every HTTP request 200 "testbed\n"
//! log N [MILLIS]      print "line 1" .. "line N", MILLIS (default 100) apart
//! pi DIGITS           print pi to DIGITS decimal places (at most 10,000), as "3.14159..."
//! lookup NAME         print each address NAME resolves to, one a line (the system's
//!                     resolver: on wasip2, wasi:sockets/ip-name-lookup)
//! taint               print "pristine" if its static data (an initialised word and 64 KiB
//!                     of zeros) is as the program image has it, else "tainted"; then
//!                     overwrite both, so that an instance reusing this memory would see it
//! ```
//!
//! A failure prints `testbed: <why>` on stderr and exits 1; a usage error exits 2.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

const USAGE: &str = "usage: testbed exit N | echo ARGS... | print-env | cat PATH... | \
write PATH TEXT | ls DIR | alloc MIB | spin | sleep SECS | serve PORT | log N [MILLIS] | pi DIGITS | \
lookup NAME | taint";

const MIB: usize = 1024 * 1024;

/// Static data `taint` checks and overwrites: initialised (in the data section) and zeroed
/// (in bss).
static WORD: AtomicU64 = AtomicU64::new(0x5eed_5eed_5eed_5eed);
static ZEROS: [AtomicU8; 64 * 1024] = [const { AtomicU8::new(0) }; 64 * 1024];

fn taint() {
    let pristine = WORD.load(Ordering::Relaxed) == 0x5eed_5eed_5eed_5eed
        && ZEROS.iter().all(|b| b.load(Ordering::Relaxed) == 0);
    println!("{}", if pristine { "pristine" } else { "tainted" });
    WORD.store(0xdead_beef, Ordering::Relaxed);
    for b in &ZEROS {
        b.store(0xff, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, params)) = args.split_first() else {
        return usage();
    };
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let result = match (command.as_str(), params.as_slice()) {
        ("exit", [code]) => match code.parse::<i32>() {
            Ok(code) => {
                println!("exiting with {code}");
                std::process::exit(code)
            }
            Err(_) => return usage(),
        },
        ("echo", words) => {
            for word in words {
                println!("{word}");
            }
            Ok(())
        }
        ("print-env", []) => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (key, value) in vars {
                println!("{key}={value}");
            }
            Ok(())
        }
        ("cat", paths) if !paths.is_empty() => cat(paths),
        ("write", [path, text]) => std::fs::write(path, text)
            .map(|()| println!("wrote {} bytes to {path}", text.len()))
            .map_err(|e| format!("cannot write {path}: {e}")),
        ("ls", [dir]) => ls(dir),
        ("alloc", [mib]) => match mib.parse::<usize>() {
            Ok(mib) => {
                alloc(mib);
                Ok(())
            }
            Err(_) => return usage(),
        },
        ("spin", []) => spin(),
        ("sleep", [secs]) => match secs
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        {
            Some(duration) => {
                println!("sleeping {secs}");
                std::thread::sleep(duration);
                println!("slept");
                Ok(())
            }
            None => return usage(),
        },
        ("serve", [port]) => match port.parse::<u16>() {
            Ok(port) => serve(port),
            Err(_) => return usage(),
        },
        ("log", [count, rest @ ..]) if rest.len() <= 1 => {
            let millis = rest.first().map_or(Ok(100), |millis| millis.parse::<u64>());
            match (count.parse::<u64>(), millis) {
                (Ok(count), Ok(millis)) => {
                    log(count, Duration::from_millis(millis));
                    Ok(())
                }
                _ => return usage(),
            }
        }
        ("pi", [digits]) => match digits.parse::<usize>() {
            Ok(n) if n <= 10_000 => {
                println!("{}", pi(n));
                Ok(())
            }
            _ => return usage(),
        },
        ("lookup", [name]) => {
            use std::net::ToSocketAddrs;
            (*name, 0u16)
                .to_socket_addrs()
                .map(|addrs| {
                    for a in addrs {
                        println!("{}", a.ip());
                    }
                })
                .map_err(|e| format!("cannot resolve {name}: {e}"))
        }
        ("taint", []) => {
            taint();
            Ok(())
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("testbed: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Pi to `decimals` places by Rabinowitz and Wagon's spigot: each step multiplies a
/// mixed-radix fraction by 10 and carries out one digit; a run of 9s is held back until
/// the next digit says whether a carry turns it into 0s.
fn pi(decimals: usize) -> String {
    let len = (decimals + 1) * 10 / 3 + 2;
    let mut a = vec![2u64; len];
    let mut digits = String::with_capacity(decimals + 2);
    let (mut held, mut nines) = (None::<u64>, 0);
    for _ in 0..=decimals {
        let mut carry = 0u64;
        for i in (1..len).rev() {
            let x = 10 * a[i] + carry * (i as u64 + 1);
            let d = 2 * i as u64 + 1;
            a[i] = x % d;
            carry = x / d;
        }
        let x = 10 * a[0] + carry;
        a[0] = x % 10;
        let q = x / 10;
        match q {
            9 => nines += 1,
            10 => {
                if let Some(h) = held {
                    digits.push(char::from(b'0' + h as u8 + 1));
                }
                digits.extend(std::iter::repeat_n('0', nines));
                held = Some(0);
                nines = 0;
            }
            _ => {
                if let Some(h) = held {
                    digits.push(char::from(b'0' + h as u8));
                }
                digits.extend(std::iter::repeat_n('9', nines));
                held = Some(q);
                nines = 0;
            }
        }
    }
    if let Some(h) = held {
        digits.push(char::from(b'0' + h as u8));
    }
    digits.extend(std::iter::repeat_n('9', nines));
    digits.truncate(decimals + 1);
    if decimals > 0 {
        digits.insert(1, '.');
    }
    digits
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn cat(paths: &[&str]) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    for path in paths {
        let contents = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        stdout
            .write_all(&contents)
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    stdout
        .flush()
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

fn ls(dir: &str) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {dir}: {e}"))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {dir}: {e}"))?;
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

/// Allocates `mib` MiB in 1 MiB blocks, writing every byte so the memory is really used.
/// Past a memory limit the allocation fails and the program aborts (a trap in Wasm): that
/// is what an OOMKilled test wants to see.
fn alloc(mib: usize) {
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for allocated in 1..=mib {
        let mut block = vec![0u8; MIB];
        block.fill(allocated as u8 | 1);
        blocks.push(block);
        println!("allocated {allocated} MiB");
    }
    // Read the blocks back so the optimiser cannot drop them.
    let sum: u64 = blocks.iter().map(|block| u64::from(block[MIB - 1])).sum();
    std::hint::black_box(sum);
    println!("done");
}

fn spin() -> ! {
    println!("spinning");
    let mut counter = 0u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn log(count: u64, interval: Duration) {
    for line in 1..=count {
        if line > 1 {
            std::thread::sleep(interval);
        }
        println!("line {line}");
    }
}

/// Answers every HTTP request with 200 "testbed\n", one connection at a time, closing each
/// after its answer: enough for probes and reachability tests, and simple on a single thread.
fn serve(port: u16) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    // The bound address, so that port 0 tells a test which port it got.
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    println!("listening on {bound}");
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // A client that misbehaves only loses its own connection.
                let _ = answer(stream);
            }
            Err(e) => eprintln!("testbed: accept failed: {e}"),
        }
    }
}

fn answer(stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(&stream);
    // Read the request head; any body is ignored.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    (&stream).write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntestbed\n",
    )
}
