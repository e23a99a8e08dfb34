//! Fuzzing on the stable toolchain: every parser a client's bytes reach
//! (quiver's SQL dialect, pgwire's message decoder, vector, bit and array
//! text, COPY lines, WAL records read back at recovery) is fed mutations of
//! the corpus in `fuzz/corpus/<target>/` (byte flips, inserts, deletions,
//! repeats, splices, dictionary words) and must answer every input without
//! a panic. An input that panics is saved to `fuzz/crashes/` and fails the
//! test.
//!
//! `make test` runs each target for `QUIVER_FUZZ_RUNS` (default 20,000)
//! mutations from a fixed seed, so that it is the same run every time; a
//! long run: `QUIVER_FUZZ_SECS=600 QUIVER_FUZZ_SEED=<n> cargo test --release
//! --test fuzz -- --nocapture` (runs per target are printed). An input that
//! runs for more than 10 s is saved as `fuzz/crashes/<target>-slow` and
//! stops the run. Findings stay in the corpus as `found-*` seeds (see
//! `fuzz/README.md`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: enough randomness for mutations, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Words that reach deep into the parsers.
const DICTIONARY: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "(",
    ")",
    "((((",
    "))))",
    ",",
    "'",
    "\"",
    "$1",
    "::vector",
    "::int[]",
    "<->",
    "<#>",
    "<=>",
    "<+>",
    "<~>",
    "<%>",
    "@@",
    "||",
    "+",
    "-",
    "*",
    "/",
    "NULL",
    "[",
    "]",
    "{",
    "}",
    ":",
    "/10",
    "e308",
    "e-400",
    "NaN",
    "Infinity",
    "-0",
    "\\",
    "\\N",
    "\\.",
    "\t",
    "\n",
    "\r\n",
    ";",
    "--",
    "/*",
    "*/",
    "E'\\x00'",
    "ARRAY[",
    "SEARCH",
    "NEAREST",
    "TO",
    "WITH (",
    "= ",
    "LIMIT 18446744073709551615",
    "OFFSET -1",
    "ORDER BY",
    "GROUP BY",
    "JOIN",
    "INSERT INTO",
    "VALUES",
    "ON CONFLICT",
    "DO UPDATE SET",
    "COPY",
    "STDIN",
    "CSV",
    "GRANT",
    "CREATE INDEX",
    "USING hnsw",
    "\u{feff}",
    "\u{0}",
    "é",
    "𝄞",
    "\u{202e}",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                out.drain(i..i + n);
            }
            3 if len > 0 => {
                // Repeat a slice: deep nesting, long lists.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let piece = out[i..i + n].to_vec();
                let times = 1 + rng.below(64);
                for _ in 0..times {
                    out.splice(i..i, piece.iter().copied());
                }
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            5 | 6 => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let i = rng.below(len + 1);
                out.splice(i..i, word.iter().copied());
            }
            _ if len > 0 => {
                // An interesting number over a byte.
                let i = rng.below(len);
                out[i] = [0u8, 0x7f, 0x80, 0xff, b'0', b'9', b'-'][rng.below(7)];
            }
            _ => {}
        }
    }
    out.truncate(1 << 16);
    out
}

/// The checkout whose `fuzz/` is read and written: this one, or
/// `QUIVER_FUZZ_ROOT` (a copy of it on another machine).
fn root() -> PathBuf {
    std::env::var_os("QUIVER_FUZZ_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()))
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok().map(|b| (e.path(), b)))
                .collect()
        })
        .unwrap_or_default();
    seeds.sort();
    let mut out: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    out.push(Vec::new());
    out
}

/// How long a target runs: seconds if `QUIVER_FUZZ_SECS` is set, else a
/// number of mutations.
enum Budget {
    Seconds(u64),
    Runs(u64),
}

fn budget() -> Budget {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    match var("QUIVER_FUZZ_SECS") {
        Some(s) => Budget::Seconds(s),
        None => Budget::Runs(var("QUIVER_FUZZ_RUNS").unwrap_or(20_000)),
    }
}

/// Feed `target` mutated inputs for the configured time; panics are
/// saved and reported.
fn fuzz(target: &str, run: impl Fn(&[u8]) + Sync) {
    let seed = std::env::var("QUIVER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005E_ED0F_F022)
        | 1;
    let corpus = corpus(target);
    watchdog();
    // Statements nest: give the parsers the server's stack.
    let (runs, crashes) = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(target.to_string())
            .stack_size(quiver::STATEMENT_STACK_BYTES)
            .spawn_scoped(s, || {
                std::panic::set_hook(Box::new(|_| {}));
                let mut rng = Rng(seed);
                let started = Instant::now();
                let (mut runs, mut crashes) = (0u64, Vec::new());
                for seed_input in &corpus {
                    check(&run, seed_input, &mut crashes);
                }
                let more = |runs: u64| match budget() {
                    Budget::Seconds(s) => started.elapsed() < Duration::from_secs(s),
                    Budget::Runs(n) => runs < n,
                };
                while more(runs) {
                    let base = &corpus[rng.below(corpus.len())];
                    let input = mutate(&mut rng, base, &corpus);
                    check(&run, &input, &mut crashes);
                    runs += 1;
                }
                let _ = std::panic::take_hook();
                (runs, crashes)
            })
            .expect("fuzz thread")
            .join()
            .expect("fuzz thread")
    });
    eprintln!(
        "fuzz {target}: {runs} runs (seed {seed}), {} crashes",
        crashes.len()
    );
    if !crashes.is_empty() {
        let dir = root().join("fuzz/crashes");
        let _ = std::fs::create_dir_all(&dir);
        for (i, c) in crashes.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("{target}-{seed}-{i}")), c);
        }
        panic!(
            "fuzz {target}: {} inputs panicked; saved in fuzz/crashes/ (first: {:?})",
            crashes.len(),
            String::from_utf8_lossy(&crashes[0])
        );
    }
}

/// The input being run and since when: a watchdog saves one that takes
/// longer than [`SLOW`] (a hang is a finding too) and stops the test.
static CURRENT: std::sync::Mutex<Option<(String, Instant, Vec<u8>)>> = std::sync::Mutex::new(None);
const SLOW: Duration = Duration::from_secs(10);

fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let guard = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((target, since, input)) = guard.as_ref()
                    && since.elapsed() > SLOW
                {
                    let dir = root().join("fuzz/crashes");
                    let _ = std::fs::create_dir_all(&dir);
                    let path = dir.join(format!("{target}-slow"));
                    let _ = std::fs::write(&path, input);
                    eprintln!(
                        "fuzz {target}: an input ran for more than {SLOW:?}; saved in {}",
                        path.display()
                    );
                    std::process::exit(101);
                }
            }
        });
    });
}

fn check(run: &(impl Fn(&[u8]) + Sync), input: &[u8], crashes: &mut Vec<Vec<u8>>) {
    let target = std::thread::current().name().unwrap_or("fuzz").to_string();
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((target, Instant::now(), input.to_vec()));
    if catch_unwind(AssertUnwindSafe(|| run(input))).is_err() && crashes.len() < 16 {
        crashes.push(input.to_vec());
    }
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// quiver's SQL parser. sqlparser backtracked exponentially on nesting that
/// fails to parse (nested `CAST(`, `ARRAY[` in unclosed VALUES; the seeds
/// `found-*`); its work is bounded now (`quiver::sql::bounded`).
#[test]
fn sql_parser() {
    fuzz("sql", |bytes| {
        let _ = quiver::sql::parse(&String::from_utf8_lossy(bytes));
    });
}

#[test]
fn vector_bit_and_array_text() {
    fuzz("vector", |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let _ = quiver::vector::text::parse_vector(&text);
        let _ = quiver::vector::bits::parse_bits(&text);
        let _ = quiver::common::pg_array::parse(&text);
    });
}

#[test]
fn copy_lines() {
    let formats = [
        quiver::sql::statement::CopyOptions::text(),
        quiver::sql::statement::CopyOptions::csv(),
    ];
    fuzz("copy", |bytes| {
        let line = String::from_utf8_lossy(bytes);
        for f in &formats {
            let _ = quiver::exec::copy::split_line(&line, f);
        }
    });
}

/// The pgwire messages a client sends: as a logged-in connection reads
/// them (quiver's length and field checks, then pgwire's decoder: pgwire's
/// decoder alone panics on Bind and Parse frames whose fields run past
/// their length, the seed `found-bind-overrun`), and as a new connection
/// reads its startup (pgwire alone).
#[test]
fn wire_messages() {
    use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
    fuzz("wire", |bytes| {
        let _ = quiver::server::conn::read_messages(bytes, 1 << 20);
        // A new connection: the SSL request or startup packet, then the
        // startup packet after an SSL request was answered.
        let mut ctx = DecodeContext::new(ProtocolVersion::default());
        let mut buf = bytes::BytesMut::from(bytes);
        let _ = PgWireFrontendMessage::decode(&mut buf, &ctx);
        ctx.awaiting_frontend_ssl = false;
        let _ = PgWireFrontendMessage::decode(&mut buf, &ctx);
    });
}

#[test]
fn wal_records() {
    use quiver::storage::wal::{LocalWal, WalRecord, WalSync};
    let dir = tempfile::tempdir().unwrap();
    fuzz("wal", |bytes| {
        // A payload read back...
        let _ = WalRecord::decode(bytes);
        // ...and a log file with a valid frame around it, then the bytes
        // raw, as recovery reads them.
        let mut frame = (bytes.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        frame.extend_from_slice(bytes);
        frame.extend_from_slice(bytes);
        let wal = dir.path().join("w");
        let _ = std::fs::remove_dir_all(&wal);
        let _ = std::fs::create_dir_all(&wal);
        let _ = std::fs::write(wal.join(format!("{:020}.log", 1)), &frame);
        let _ = LocalWal::open(&wal, WalSync::Always, 2);
    });
}
