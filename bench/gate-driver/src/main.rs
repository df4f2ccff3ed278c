//! gate-driver: the upstream and the clients of `bench/tool_gate.sh` in one process, so both
//! ends of every stream are timed with one clock (`Instant`, CLOCK_MONOTONIC).
//!
//! The upstream replays a recorded SSE body to every request: one chunked write per event,
//! `--gap-us` apart, and notes when it hands the kernel the first text event and the event that
//! completes the tool call (the time is taken just before the write, so a reader woken by the
//! write can never appear to read before it). The clients (`--conc` threads, each with its own
//! keep-alive connection per target) send the same request to each target in turn, all threads
//! on one target at a time: straight to the upstream, or through the proxy as one agent or
//! another. A client notes when its read returns the last byte of each of those two events, and
//! checks that the body it got is byte-identical to the recording.
//!
//! It prints, per target, the percentiles of the two delays (upstream write → client read) and
//! the difference of each pair of targets' percentiles; `--out` keeps every sample as CSV.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: gate-driver --events FILE --text-marker S --done-marker S[&S..] \
--listen ADDR --path PATH --request FILE --target NAME=ADDR[,AGENT]... [--header 'K: V']... \
[--calls N] [--rounds N] [--conc N] [--gap-us N] [--warmup N] [--label S] [--out FILE]";

fn main() {
    if let Err(e) = run() {
        eprintln!("gate-driver: {e}\n{USAGE}");
        std::process::exit(2);
    }
}

/// The recorded stream, split into events, and the two events timed.
struct Script {
    events: Vec<Vec<u8>>,
    body: Vec<u8>,
    /// Index of the first text event.
    text: usize,
    /// Index of the event that completes the tool call.
    done: usize,
    /// Body lengths at which the text and completing events can be dispatched (through the first
    /// byte of the blank line's line end, as an SSE parser may), then at which they are whole.
    ends: [usize; 4],
}

impl Script {
    fn load(path: &str, text_marker: &str, done_markers: &str) -> Result<Self, String> {
        let body = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let events = split_events(&body);
        let text = events
            .iter()
            .position(|e| find(e, text_marker.as_bytes()).is_some())
            .ok_or_else(|| format!("no event of {path} contains {text_marker:?}"))?;
        let done = events
            .iter()
            .rposition(|e| {
                done_markers
                    .split('&')
                    .all(|m| find(e, m.as_bytes()).is_some())
            })
            .ok_or_else(|| format!("no event of {path} contains all of {done_markers:?}"))?;
        let end = |i: usize| -> usize { events[..=i].iter().map(Vec::len).sum() };
        // A CRLF blank line ends the event at its CR for a WHATWG parser; its LF may come later.
        let dispatch = |i: usize| end(i) - usize::from(events[i].ends_with(b"\r\n"));
        Ok(Self {
            ends: [dispatch(text), dispatch(done), end(text), end(done)],
            text,
            done,
            events,
            body,
        })
    }
}

/// When the upstream wrote the two timed events of each request id (ns since `t0`).
struct Stamps {
    t0: Instant,
    text: Vec<AtomicU64>,
    done: Vec<AtomicU64>,
}

impl Stamps {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

struct Target {
    name: String,
    addr: String,
    agent: Option<String>,
}

/// One call's result: target, id, and when the client read each of `Script::ends`.
struct Sample {
    target: usize,
    id: usize,
    read: [u64; 4],
}

#[derive(Default)]
struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut it = std::env::args().skip(1);
        let mut pairs = Vec::new();
        while let Some(k) = it.next() {
            let k = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected {k:?}"))?
                .to_string();
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn get(&self, key: &str) -> Result<&str, String> {
        self.all(key)
            .last()
            .copied()
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn num(&self, key: &str, default: usize) -> Result<usize, String> {
        match self.all(key).last() {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: not a number: {v}")),
        }
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse()?;
    let script = Arc::new(Script::load(
        args.get("events")?,
        args.get("text-marker")?,
        args.get("done-marker")?,
    )?);
    let targets: Vec<Target> = args
        .all("target")
        .into_iter()
        .map(|t| {
            let (name, rest) = t.split_once('=').ok_or(format!("--target {t}"))?;
            let (addr, agent) = match rest.split_once(',') {
                Some((a, g)) => (a, Some(g.to_string())),
                None => (rest, None),
            };
            Ok(Target {
                name: name.to_string(),
                addr: addr.to_string(),
                agent,
            })
        })
        .collect::<Result<_, String>>()?;
    if targets.is_empty() {
        return Err("no --target".into());
    }
    let conc = args.num("conc", 4)?.max(1);
    let rounds = args.num("rounds", 4)?.max(1);
    let per = args.num("calls", 1000)?.div_ceil(rounds * conc);
    let warmup = args.num("warmup", 20)?;
    let gap = Duration::from_micros(args.num("gap-us", 1000)? as u64);
    let path = args.get("path")?.to_string();
    let body = std::fs::read(args.get("request")?).map_err(|e| e.to_string())?;
    let headers: String = args
        .all("header")
        .iter()
        .map(|h| format!("{h}\r\n"))
        .collect();
    let label = args.get("label").unwrap_or("stream").to_string();

    let ids = conc * targets.len() * (warmup + rounds * per) + 1;
    let stamps = Arc::new(Stamps {
        t0: Instant::now(),
        text: (0..ids).map(|_| AtomicU64::new(0)).collect(),
        done: (0..ids).map(|_| AtomicU64::new(0)).collect(),
    });
    let listener = TcpListener::bind(args.get("listen")?).map_err(|e| e.to_string())?;
    {
        let (script, stamps) = (script.clone(), stamps.clone());
        thread::spawn(move || serve(listener, script, stamps, gap));
    }

    let targets = Arc::new(targets);
    let next = Arc::new(AtomicUsize::new(0));
    let errors: Arc<Vec<AtomicUsize>> =
        Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect());
    let differ: Arc<Vec<AtomicUsize>> =
        Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect());
    let barrier = Arc::new(Barrier::new(conc));
    let started = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (targets, next, errors, differ, barrier) = (
                targets.clone(),
                next.clone(),
                errors.clone(),
                differ.clone(),
                barrier.clone(),
            );
            let (script, stamps, path, body, headers) = (
                script.clone(),
                stamps.clone(),
                path.clone(),
                body.clone(),
                headers.clone(),
            );
            thread::spawn(move || {
                let mut client = Client {
                    conns: targets.iter().map(|_| None).collect(),
                    script: &script,
                    stamps: &stamps,
                    path: &path,
                    body: &body,
                    headers: &headers,
                };
                let mut samples = Vec::new();
                for (ti, t) in targets.iter().enumerate() {
                    for _ in 0..warmup {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let _ = client.call(ti, t, id);
                    }
                }
                for r in 0..rounds {
                    for k in 0..targets.len() {
                        // Rotate the order each round; all threads on one target at a time.
                        let ti = (k + r) % targets.len();
                        barrier.wait();
                        for _ in 0..per {
                            let id = next.fetch_add(1, Ordering::Relaxed);
                            match client.call(ti, &targets[ti], id) {
                                Ok((read, same)) => {
                                    if !same {
                                        differ[ti].fetch_add(1, Ordering::Relaxed);
                                    }
                                    samples.push(Sample {
                                        target: ti,
                                        id,
                                        read,
                                    });
                                }
                                Err(e) => {
                                    if errors[ti].fetch_add(1, Ordering::Relaxed) == 0 {
                                        eprintln!("gate-driver: {}: {e}", targets[ti].name);
                                    }
                                }
                            }
                        }
                    }
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.join().map_err(|_| "a client thread panicked")?);
    }
    let secs = started.elapsed().as_secs_f64();

    // Delays in µs per target, in the order of `Script::ends`.
    let mut lat: Vec<[Vec<f64>; 4]> = targets.iter().map(|_| Default::default()).collect();
    let mut csv = String::from(
        "target,id,text_write_ns,done_write_ns,text_read_ns,done_read_ns,text_last_read_ns,done_last_read_ns\n",
    );
    for s in &samples {
        let tw = stamps.text[s.id].load(Ordering::Acquire);
        let dw = stamps.done[s.id].load(Ordering::Acquire);
        for (k, r) in s.read.iter().enumerate() {
            let w = if k % 2 == 0 { tw } else { dw };
            lat[s.target][k].push(r.saturating_sub(w) as f64 / 1e3);
        }
        let [a, b, c, d] = s.read;
        let _ = writeln!(
            csv,
            "{},{},{tw},{dw},{a},{b},{c},{d}",
            targets[s.target].name, s.id
        );
    }
    if let Ok(out) = args.get("out") {
        std::fs::write(out, csv).map_err(|e| format!("{out}: {e}"))?;
    }
    // Per target: text p50, p99; tool p50, p90, p99, p99.9, max; text and tool p50 to the last byte.
    let mut table: Vec<[f64; 9]> = Vec::new();
    for (ti, t) in targets.iter().enumerate() {
        for v in lat[ti].iter_mut() {
            v.sort_by(f64::total_cmp);
        }
        let [text, done, text_last, done_last] = &lat[ti];
        let row = [
            pct(text, 0.5),
            pct(text, 0.99),
            pct(done, 0.5),
            pct(done, 0.9),
            pct(done, 0.99),
            pct(done, 0.999),
            pct(done, 1.0),
            pct(text_last, 0.5),
            pct(done_last, 0.5),
        ];
        let cells: String = row.iter().map(|v| format!(" {v:.0} |")).collect();
        println!(
            "| {label} | {} | {} |{cells} {} | {} |",
            t.name,
            done.len(),
            errors[ti].load(Ordering::Relaxed),
            differ[ti].load(Ordering::Relaxed),
        );
        table.push(row);
    }
    for j in 1..targets.len() {
        for i in 0..j {
            let cells: String = (0..9)
                .map(|k| match k {
                    6 => " |".to_string(),
                    _ => format!(" {:+.0} |", table[j][k] - table[i][k]),
                })
                .collect();
            println!(
                "| {label} | {} − {} | |{cells} | |",
                targets[j].name, targets[i].name
            );
        }
    }
    eprintln!(
        "gate-driver: {label}: {} calls in {secs:.1} s ({} events each, text event {}, tool call complete at event {})",
        samples.len(),
        script.events.len(),
        script.text,
        script.done
    );
    Ok(())
}

/// The events of an SSE body, each with the blank line that ends it (lines end in CRLF, LF or
/// CR); bytes after the last blank line are one more event.
fn split_events(body: &[u8]) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let (mut start, mut line_start, mut i) = (0, 0, 0);
    while i < body.len() {
        let eol = match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let blank = i == line_start;
        i += eol;
        line_start = i;
        if blank {
            events.push(body[start..i].to_vec());
            start = i;
        }
    }
    if start < body.len() {
        events.push(body[start..].to_vec());
    }
    events
}

/// The `p` quantile of sorted `v` (nearest rank).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A header's value from a request or response head.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(head).ok()?.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Read until a head (ending in a blank line) is in `buf`: its length, or `None` at EOF.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut tmp = [0u8; 16384];
    loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            return Ok(Some(p + 4));
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn serve(listener: TcpListener, script: Arc<Script>, stamps: Arc<Stamps>, gap: Duration) {
    for conn in listener.incoming().flatten() {
        let (script, stamps) = (script.clone(), stamps.clone());
        thread::spawn(move || {
            let _ = serve_conn(conn, &script, &stamps, gap);
        });
    }
}

/// Answer every request on one connection with the script, timing the two events.
fn serve_conn(
    mut s: TcpStream,
    script: &Script,
    stamps: &Stamps,
    gap: Duration,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut frame = Vec::new();
    let mut tmp = [0u8; 16384];
    while let Some(head) = read_head(&mut s, &mut buf)? {
        let len: usize = header(&buf[..head], "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let id: Option<usize> = header(&buf[..head], "x-bench-id").and_then(|v| v.parse().ok());
        buf.drain(..head);
        while buf.len() < len {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..len);
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
        )?;
        for (i, ev) in script.events.iter().enumerate() {
            if i > 0 {
                thread::sleep(gap);
            }
            frame.clear();
            frame.extend_from_slice(format!("{:x}\r\n", ev.len()).as_bytes());
            frame.extend_from_slice(ev);
            frame.extend_from_slice(b"\r\n");
            if let Some(id) = id.filter(|id| *id < stamps.text.len()) {
                if i == script.text {
                    stamps.text[id].store(stamps.now(), Ordering::Release);
                }
                if i == script.done {
                    stamps.done[id].store(stamps.now(), Ordering::Release);
                }
            }
            s.write_all(&frame)?;
        }
        s.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

/// One client thread's connections and what it sends.
struct Client<'a> {
    conns: Vec<Option<TcpStream>>,
    script: &'a Script,
    stamps: &'a Stamps,
    path: &'a str,
    body: &'a [u8],
    headers: &'a str,
}

impl Client<'_> {
    /// One call to target `ti`: when the client read each of `Script::ends`, and whether the
    /// body is the recording's.
    fn call(&mut self, ti: usize, t: &Target, id: usize) -> Result<([u64; 4], bool), String> {
        let r = self.exchange(ti, t, id);
        if r.is_err() {
            self.conns[ti] = None;
        }
        r
    }

    fn exchange(&mut self, ti: usize, t: &Target, id: usize) -> Result<([u64; 4], bool), String> {
        if self.conns[ti].is_none() {
            let c = TcpStream::connect(&t.addr).map_err(|e| format!("connect {}: {e}", t.addr))?;
            c.set_nodelay(true).map_err(|e| e.to_string())?;
            self.conns[ti] = Some(c);
        }
        let Some(s) = self.conns[ti].as_mut() else {
            return Err("no connection".into());
        };
        let agent = t
            .agent
            .as_ref()
            .map(|a| format!("x-agent-name: {a}\r\n"))
            .unwrap_or_default();
        let mut req = format!(
            "POST {} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-bench-id: {id}\r\n{agent}{}\r\n",
            self.path,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        req.extend_from_slice(self.body);
        s.write_all(&req).map_err(|e| e.to_string())?;

        let mut raw = Vec::new();
        let mut body = Vec::with_capacity(self.script.body.len() + 1024);
        let mut chunks: Option<Dechunk> = None;
        let mut read = [None; 4];
        let mut tmp = [0u8; 65536];
        loop {
            let n = s.read(&mut tmp).map_err(|e| e.to_string())?;
            let now = self.stamps.now();
            if n == 0 {
                return Err("connection closed mid-response".into());
            }
            match chunks.as_mut() {
                Some(d) => d.feed(&tmp[..n], &mut body)?,
                None => {
                    raw.extend_from_slice(&tmp[..n]);
                    let Some(p) = find(&raw, b"\r\n\r\n") else {
                        continue;
                    };
                    let head = &raw[..p + 4];
                    if !head.starts_with(b"HTTP/1.1 200") {
                        let line = String::from_utf8_lossy(&head[..head.len().min(80)]).to_string();
                        return Err(format!("status: {line}"));
                    }
                    if !header(head, "transfer-encoding")
                        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
                    {
                        return Err("response is not chunked".into());
                    }
                    let mut d = Dechunk::default();
                    d.feed(&raw[p + 4..], &mut body)?;
                    chunks = Some(d);
                }
            }
            for (r, end) in read.iter_mut().zip(self.script.ends) {
                if r.is_none() && body.len() >= end {
                    *r = Some(now);
                }
            }
            if chunks.as_ref().is_some_and(|d| d.done) {
                break;
            }
        }
        match read {
            [Some(a), Some(b), Some(c), Some(d)] => Ok(([a, b, c, d], body == self.script.body)),
            _ => Err(format!(
                "body ended early ({} of {} bytes): {}",
                body.len(),
                self.script.body.len(),
                String::from_utf8_lossy(&body[body.len().saturating_sub(300)..])
            )),
        }
    }
}

/// Incremental `transfer-encoding: chunked` decoder.
#[derive(Default)]
struct Dechunk {
    /// Data bytes left in the current chunk, then its CRLF.
    data: usize,
    crlf: usize,
    line: Vec<u8>,
    trailer: bool,
    done: bool,
}

impl Dechunk {
    fn feed(&mut self, mut b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !b.is_empty() && !self.done {
            if self.data > 0 {
                let k = self.data.min(b.len());
                out.extend_from_slice(&b[..k]);
                self.data -= k;
                b = &b[k..];
                continue;
            }
            if self.crlf > 0 {
                let k = self.crlf.min(b.len());
                self.crlf -= k;
                b = &b[k..];
                continue;
            }
            let Some(p) = b.iter().position(|c| *c == b'\n') else {
                self.line.extend_from_slice(b);
                return Ok(());
            };
            self.line.extend_from_slice(&b[..p]);
            b = &b[p + 1..];
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_string();
            self.line.clear();
            if self.trailer {
                self.done = line.is_empty();
                continue;
            }
            let size = line.split(';').next().unwrap_or_default().trim();
            let n =
                usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
            if n == 0 {
                self.trailer = true;
            } else {
                self.data = n;
                self.crlf = 2;
            }
        }
        Ok(())
    }
}
