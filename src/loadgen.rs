//! `fusebox loadgen`: sends realistic mixed event batches over HTTP from several
//! keep-alive connections and reports sustained accepted events/s, batch latency
//! percentiles and the server's RSS.
//!
//! By default it starts the server itself (this binary, a temporary SQLite file or
//! `--database-url`), so one command measures client and server together on one
//! machine. The HTTP client is a minimal HTTP/1.1 writer/reader: a general client
//! would cost the (shared) CPU that the server needs.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Options of `fusebox loadgen`.
#[derive(Debug, Args, Clone)]
pub struct LoadgenArgs {
    /// Target server (`http://host:port`); without it a server is started.
    #[arg(long)]
    pub url: Option<String>,
    /// Client token for `/api/events` (with --url).
    #[arg(long)]
    pub token: Option<String>,
    /// Admin token (with --url), used to create the features exposures refer to.
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Database for the started server [default: a temporary SQLite file].
    #[arg(long = "database-url")]
    pub database_url: Option<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// How long to send, in seconds (after a 1 s warm-up that is not counted).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// PID of the server, for RSS (with --url).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// How many of the four features get an armed fuse, whose per-user outcome
    /// aggregates ingest then keeps current (0 measures plain storage).
    #[arg(long, default_value_t = 1)]
    pub fuses: usize,
    /// How events carry ids: `time-ordered` (UUIDv7, as PostHog's and other current
    /// SDKs generate them), `random` (UUIDv4) or `none` (the server derives them).
    #[arg(long, value_enum, default_value_t = IdStyle::TimeOrdered)]
    pub ids: IdStyle,
    /// Also print each server thread's CPU time over the measured window.
    #[arg(long)]
    pub threads: bool,
}

/// Event id layouts. Ids are the dedup key, so their order decides whether storing
/// one appends to the id index or lands on a random page of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdStyle {
    TimeOrdered,
    Random,
    None,
}

const FEATURES: [&str; 4] = [
    "loadgen.checkout",
    "loadgen.search",
    "loadgen.onboarding",
    "loadgen.pricing",
];
const ADMIN: &str = "*:*.loadgen-admin";
const CLIENT: &str = "*:development.loadgen-client";

struct Target {
    host_port: String,
    token: String,
    admin_token: String,
    child: Option<Child>,
    pid: Option<u32>,
    _dir: Option<TempDir>,
}

/// A temporary folder removed on drop (std only; `tempfile` is a dev-dependency).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the load and prints the report.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let target = start_target(&args)?;
    wait_healthy(&target.host_port).await?;
    for f in FEATURES {
        let body = format!("{{\"name\":\"{f}\"}}");
        let (status, _) = request(
            &target.host_port,
            "POST",
            "/api/admin/projects/default/features",
            &target.admin_token,
            &body,
        )
        .await?;
        if status != 201 && status != 409 {
            anyhow::bail!("creating feature {f} answered {status}");
        }
    }
    for f in FEATURES.iter().take(args.fuses) {
        let fuse =
            format!("/api/admin/projects/default/features/{f}/environments/development/fuse");
        let (status, _) =
            request(&target.host_port, "PUT", &fuse, &target.admin_token, "{}").await?;
        if status != 200 && status != 201 {
            anyhow::bail!("arming a fuse on {f} answered {status}");
        }
        // The first look builds the aggregates; from then on ingest maintains them.
        let (status, _) = request(
            &target.host_port,
            "POST",
            &format!("{fuse}/evaluate"),
            &target.admin_token,
            "{}",
        )
        .await?;
        if status != 200 {
            anyhow::bail!("evaluating the fuse on {f} answered {status}");
        }
    }
    let backend = match &args.database_url {
        Some(u) if u.starts_with("postgres") => "postgresql",
        Some(_) => "sqlite",
        None if args.url.is_some() => "remote",
        None => "sqlite",
    };
    println!(
        "fusebox loadgen: {} connections x {}-event batches for {} s against {} ({}), {} fused feature(s)",
        args.connections,
        args.batch,
        args.seconds,
        target.host_port,
        if target.child.is_some() {
            format!("started, {backend}")
        } else {
            "external".into()
        },
        args.fuses.min(FEATURES.len())
    );

    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let host = target.host_port.clone();
        let token = target.token.clone();
        let shape = args.clone();
        tasks.push(tokio::spawn(async move {
            connection(c as u64, host, token, shape, measure_from, end).await
        }));
    }
    let mut rss_peak_kb = 0;
    let pid = target.pid;
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu_from = pid.and_then(cpu_ticks);
        let client_from = cpu_ticks(std::process::id());
        while Instant::now() < end {
            if let Some(kb) = pid.and_then(|p| rss_kb(p, "VmRSS")) {
                peak = peak.max(kb);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let client = client_from
            .zip(cpu_ticks(std::process::id()))
            .map(|(a, b)| b.total.saturating_sub(a.total));
        (peak, cpu_from, pid.and_then(cpu_ticks), client)
    });
    let mut stats = Stats::default();
    for t in tasks {
        stats.merge(t.await??);
    }
    let (peak_kb, cpu_from, cpu_to, client_ticks) = sampler.await.unwrap_or((0, None, None, None));
    rss_peak_kb = rss_peak_kb.max(peak_kb);
    let elapsed = Instant::now()
        .duration_since(measure_from)
        .as_secs_f64()
        .max(0.001);
    stats.latencies_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        let v = &stats.latencies_ms;
        if v.is_empty() {
            return 0.0;
        }
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    println!(
        "accepted {} events in {:.1} s = {:.0} events/s; duplicates {}; rejected {}; 503s {}; batches {}",
        stats.accepted,
        elapsed,
        stats.accepted as f64 / elapsed,
        stats.duplicates,
        stats.rejected,
        stats.busy,
        stats.latencies_ms.len()
    );
    println!(
        "batch latency p50 {:.1} ms, p99 {:.1} ms",
        pct(0.50),
        pct(0.99)
    );
    if let Some(pid) = target.pid {
        let now = rss_kb(pid, "VmRSS").unwrap_or(0);
        let hwm = rss_kb(pid, "VmHWM").unwrap_or(0);
        println!(
            "server RSS {:.0} MB at the end, sampled peak {:.0} MB, high-water mark {:.0} MB",
            now as f64 / 1024.0,
            rss_peak_kb as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    if let (Some(from), Some(to)) = (cpu_from, cpu_to) {
        print_cpu(&from, &to, stats.accepted, args.threads);
    }
    if let Some(ticks) = client_ticks {
        println!(
            "client (this process) CPU {:.1} s, {:.1} us/event",
            ticks as f64 / 100.0,
            ticks as f64 / 100.0 * 1e6 / stats.accepted.max(1) as f64
        );
    }
    Ok(())
}

/// CPU ticks (user + system) of a process and of each of its threads, by thread id.
struct CpuTicks {
    total: u64,
    threads: std::collections::HashMap<u32, (String, u64)>,
    /// Per thread: nanoseconds spent runnable but waiting for a CPU (`schedstat`).
    waits: std::collections::HashMap<u32, u64>,
}

/// Server CPU over the measured window, per accepted event, and its busiest thread:
/// a thread near 100% busy is the serial limit (for SQLite, the event writer).
fn print_cpu(from: &CpuTicks, to: &CpuTicks, accepted: u64, per_thread: bool) {
    let hz = 100.0; // USER_HZ, fixed at 100 on Linux for /proc's clock ticks
    let window = |ticks: u64| ticks as f64 / hz;
    let per_event = |ticks: u64| window(ticks) * 1e6 / accepted.max(1) as f64;
    let busiest = to
        .threads
        .iter()
        .map(|(tid, (name, t))| {
            let before = from.threads.get(tid).map_or(0, |(_, b)| *b);
            (name.as_str(), t.saturating_sub(before))
        })
        .max_by_key(|(_, t)| *t);
    let total = to.total.saturating_sub(from.total);
    if per_thread {
        let mut threads: Vec<_> = to
            .threads
            .iter()
            .map(|(tid, (name, t))| {
                let before = from.threads.get(tid).map_or(0, |(_, b)| *b);
                (t.saturating_sub(before), *tid, name.as_str())
            })
            .filter(|(t, _, _)| *t > 0)
            .collect();
        threads.sort_unstable_by(|a, b| b.cmp(a));
        // Run-queue wait: time the thread was ready but another thread held the CPU.
        // A serial thread with a large wait is starved of CPU, not limited by itself.
        let wait = |tid: &u32| {
            let before = from.waits.get(tid).copied().unwrap_or(0);
            to.waits
                .get(tid)
                .map(|w| w.saturating_sub(before) as f64 / 1e9)
        };
        for (t, tid, name) in threads {
            match wait(&tid) {
                Some(w) => println!(
                    "  thread {tid} `{name}`: {:.2} s on CPU, {w:.2} s waiting for one",
                    window(t)
                ),
                None => println!("  thread {tid} `{name}`: {:.2} s", window(t)),
            }
        }
    }
    print!(
        "server CPU {:.1} s, {:.1} us/event",
        window(total),
        per_event(total)
    );
    if let Some((name, t)) = busiest {
        print!(
            "; busiest thread `{name}` {:.1} s, {:.1} us/event",
            window(t),
            per_event(t)
        );
    }
    println!();
}

/// A thread's or process's name and CPU ticks (utime + stime) from a `stat` line.
/// The name is parenthesised and may itself hold spaces and parentheses, so the
/// numbered fields are counted from the last `)`: state is field 3, utime 14, stime 15.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks))
}

fn cpu_ticks(pid: u32) -> Option<CpuTicks> {
    let (_, total) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = std::collections::HashMap::new();
    let mut waits = std::collections::HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(t) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            threads.insert(tid, t);
        }
        // `schedstat` is "on-CPU ns, run-queue wait ns, timeslices" (absent without
        // CONFIG_SCHED_INFO, in which case the report leaves the wait out).
        if let Some(w) = std::fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            waits.insert(tid, w);
        }
    }
    Some(CpuTicks {
        total,
        threads,
        waits,
    })
}

#[derive(Default)]
struct Stats {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    busy: u64,
    latencies_ms: Vec<f64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.busy += other.busy;
        self.latencies_ms.extend(other.latencies_ms);
    }
}

fn start_target(args: &LoadgenArgs) -> anyhow::Result<Target> {
    if let Some(url) = &args.url {
        let host_port = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        return Ok(Target {
            host_port,
            token: args.token.clone().unwrap_or_else(|| CLIENT.into()),
            admin_token: args.admin_token.clone().unwrap_or_else(|| ADMIN.into()),
            child: None,
            pid: args.server_pid,
            _dir: None,
        });
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir =
        std::env::temp_dir().join(format!("fusebox-loadgen-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("fusebox.db").display()));
    let child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .env("FUSEBOX_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("FUSEBOX_INIT_ADMIN_TOKENS", ADMIN)
        .env("FUSEBOX_INIT_CLIENT_TOKENS", CLIENT)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Target {
        host_port: format!("127.0.0.1:{port}"),
        token: CLIENT.into(),
        admin_token: ADMIN.into(),
        pid: Some(child.id()),
        child: Some(child),
        _dir: Some(TempDir(dir)),
    })
}

async fn wait_healthy(host: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok((200, _)) = request(host, "GET", "/ready", "", "").await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the server at {host} did not become ready in 30 s")
}

/// One request on a fresh connection (setup only).
async fn request(
    host: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = BufReader::new(TcpStream::connect(host).await?);
    send(&mut stream, host, method, path, token, body.as_bytes()).await?;
    read_response(&mut stream).await
}

async fn send(
    stream: &mut BufReader<TcpStream>,
    host: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let inner = stream.get_mut();
    inner.write_all(head.as_bytes()).await?;
    inner.write_all(body).await?;
    Ok(())
}

async fn read_response(stream: &mut BufReader<TcpStream>) -> anyhow::Result<(u16, String)> {
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends batches back to back on one connection until `end`.
async fn connection(
    index: u64,
    host: String,
    token: String,
    shape: LoadgenArgs,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<Stats> {
    let mut stream = BufReader::new(TcpStream::connect(&host).await?);
    let mut stats = Stats::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut body = String::with_capacity(shape.batch * 220);
    while Instant::now() < end {
        body.clear();
        let now = chrono::Utc::now().timestamp_millis();
        body.push('[');
        for i in 0..shape.batch {
            if i > 0 {
                body.push(',');
            }
            let user = rng.next() % shape.users.max(1);
            write_event(&mut body, shape.ids, now, user, &mut rng);
        }
        body.push(']');
        let sent = Instant::now();
        send(
            &mut stream,
            &host,
            "POST",
            "/api/events",
            &token,
            body.as_bytes(),
        )
        .await?;
        let (status, text) = read_response(&mut stream).await?;
        let took = sent.elapsed();
        if sent < measure_from {
            continue;
        }
        match status {
            202 => {
                let v: serde_json::Value = serde_json::from_str(&text)?;
                stats.accepted += v["accepted"].as_u64().unwrap_or(0);
                stats.duplicates += v["duplicates"].as_u64().unwrap_or(0);
                stats.rejected += v["rejected"].as_array().map_or(0, |r| r.len() as u64);
                stats.latencies_ms.push(took.as_secs_f64() * 1000.0);
            }
            503 => {
                stats.busy += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => anyhow::bail!("POST /api/events answered {other}: {text}"),
        }
    }
    Ok(stats)
}

/// 10% exposures, 80% activity, 5% errors, 5% feedback, as a product emits them.
fn write_event(out: &mut String, ids: IdStyle, now: i64, user: u64, rng: &mut Rng) {
    // Events reach the server up to a minute after they happened (SDK buffers).
    let ts = now - (rng.next() % 60_000) as i64;
    let id = match ids {
        // UUIDv7, generated when the event happened: 48-bit milliseconds, version,
        // 74 random bits.
        IdStyle::TimeOrdered => format!(
            r#""id":"{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}","#,
            (ts as u64 >> 16) as u32,
            ts as u64 & 0xffff,
            rng.next() & 0xfff,
            0x8000 | (rng.next() & 0x3fff),
            rng.next() & 0xffff_ffff_ffff
        ),
        IdStyle::Random => format!(
            r#""id":"{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}","#,
            rng.next() as u32,
            rng.next() & 0xffff,
            rng.next() & 0xfff,
            0x8000 | (rng.next() & 0x3fff),
            rng.next() & 0xffff_ffff_ffff
        ),
        IdStyle::None => String::new(),
    };
    let feature = FEATURES[(user % FEATURES.len() as u64) as usize];
    let roll = rng.next() % 100;
    let _ = match roll {
        0..=9 => write!(
            out,
            r#"{{{id}"type":"exposure","user_id":"user-{user}","feature":"{feature}","enabled":{},"timestamp":{ts}}}"#,
            user.is_multiple_of(2)
        ),
        10..=89 => write!(
            out,
            r#"{{{id}"type":"activity","user_id":"user-{user}","name":"{}","timestamp":{ts},"session_id":"s-{user}","properties":{{"page":"/home","plan":"pro"}}}}"#,
            ["session_start", "page_view", "checkout_completed", "search"][(roll % 4) as usize]
        ),
        90..=94 => write!(
            out,
            r#"{{{id}"type":"error","user_id":"user-{user}","name":"timeout","feature":"{feature}","timestamp":{ts}}}"#
        ),
        _ => write!(
            out,
            r#"{{{id}"type":"feedback","user_id":"user-{user}","feature":"{feature}","score":0.{},"timestamp":{ts}}}"#,
            rng.next() % 10
        ),
    };
}

/// xorshift64*: fast, deterministic per connection, good enough for load shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_stat;

    #[test]
    fn stat_lines_are_read_past_names_with_spaces_and_parentheses() {
        let line = "4242 (actix-rt|system:0) (x)) S 1 4242 4242 0 -1 4194624 1200 0 0 0 \
                    731 95 0 0 20 0 6 0 1234 801484 57588 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(("actix-rt|system:0) (x)".to_string(), 731 + 95))
        );
        assert_eq!(parse_stat("4242 (fusebox) S 1 2"), None);
        assert_eq!(parse_stat("no name here"), None);
    }

    #[test]
    fn this_process_has_a_readable_stat_line() {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", std::process::id()));
        if let Ok(stat) = stat {
            let (name, _) = parse_stat(&stat).expect("a Linux stat line parses");
            assert!(!name.is_empty());
        }
    }
}
