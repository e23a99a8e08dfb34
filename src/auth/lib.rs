//! Who may connect and what they may do: SCRAM-SHA-256 logins ([`scram`]),
//! users, roles and privileges ([`acl`]), the login policy, the per-address
//! limit on failed logins. The catalog stores what [`acl`] describes; the
//! server creates the bootstrap superuser.

pub mod acl;
pub mod scram;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;

/// The superuser created on first start unless configured otherwise.
pub const DEFAULT_SUPERUSER: &str = "quiver";
/// Where a generated superuser password is written, in the data directory.
pub const INITIAL_PASSWORD_FILE: &str = "initial-password";

/// A password from the configuration; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// The `[auth]` and `[tls]` settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Name of the superuser created on first start.
    pub superuser: String,
    /// Its password on first start; random (and written to a file) if none.
    pub password: Option<Secret>,
    /// Let loopback clients log in as any existing user without a password.
    pub loopback_trust: bool,
    /// Refuse connections without TLS from non-loopback addresses.
    pub require_tls: bool,
    /// Server certificate chain and private key (PEM) for TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Failed logins an address may make in a burst before it must wait.
    pub max_failed_logins: u32,
    /// How long an address waits per failed login it may make again.
    pub failed_login_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            superuser: DEFAULT_SUPERUSER.to_string(),
            password: None,
            loopback_trust: false,
            require_tls: false,
            tls_cert: None,
            tls_key: None,
            max_failed_logins: 10,
            failed_login_interval: Duration::from_secs(6),
        }
    }
}

/// Whether `addr` is the local machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A token bucket of failed logins per client address: each address may
/// fail `burst` times, then once per `interval`. Other addresses are not
/// affected. An attempt holds one of its address's tokens while it runs
/// ([`LoginLimiter::begin`] .. [`LoginLimiter::end`]), so attempts made at
/// once cannot together fail more often than the tokens left (checking
/// first and counting the failure after let 13 of 40 through, not 10).
#[derive(Debug)]
pub struct LoginLimiter {
    burst: f64,
    interval: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Attempts running, each holding a token.
    running: u32,
}

/// Whether a login attempt may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Running attempts hold the tokens left: ask again shortly (the
    /// ones that succeed give theirs back).
    Wait,
    /// No token left: refused, for about this long.
    Refused(Duration),
}

impl LoginLimiter {
    pub fn new(burst: u32, interval: Duration) -> LoginLimiter {
        LoginLimiter {
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let refill = now.duration_since(b.at).as_secs_f64() / self.interval.as_secs_f64();
        Bucket {
            tokens: (b.tokens + refill).min(self.burst),
            at: now,
            running: b.running,
        }
    }

    /// An attempt from `ip` begins; on [`Admit::Go`] it holds a token
    /// until [`LoginLimiter::end`].
    pub fn begin(&self, ip: IpAddr) -> Admit {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget addresses that have recovered fully.
            let full = self.burst;
            buckets.retain(|_, b| b.running > 0 || self.refilled(*b, now).tokens < full);
        }
        let b = buckets.get(&ip).map_or(
            Bucket {
                tokens: self.burst,
                at: now,
                running: 0,
            },
            |b| self.refilled(*b, now),
        );
        let admit = if b.tokens - f64::from(b.running) >= 1.0 {
            Admit::Go
        } else if b.running > 0 {
            Admit::Wait
        } else {
            Admit::Refused(self.interval.mul_f64(1.0 - b.tokens))
        };
        let running = b.running + u32::from(admit == Admit::Go);
        buckets.insert(ip, Bucket { running, ..b });
        admit
    }

    /// The attempt from `ip` ended; a `failed` one spends its token.
    pub fn end(&self, ip: IpAddr, failed: bool) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if let Some(b) = buckets.get(&ip).copied() {
            let mut b = self.refilled(b, now);
            b.running = b.running.saturating_sub(1);
            if failed {
                b.tokens = (b.tokens - 1.0).max(0.0);
            }
            buckets.insert(ip, b);
        }
    }
}

/// A random password for the bootstrap superuser.
pub fn random_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(scram::random_bytes::<18>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        assert!(is_loopback(&"127.0.0.1:5".parse().unwrap()));
        assert!(is_loopback(&"[::1]:5".parse().unwrap()));
        assert!(is_loopback(&"[::ffff:127.0.0.1]:5".parse().unwrap()));
        assert!(!is_loopback(&"10.0.0.1:5".parse().unwrap()));
    }

    #[test]
    fn limiter_is_per_address() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.begin(a), Admit::Go);
            l.end(a, true);
        }
        let Admit::Refused(wait) = l.begin(a) else {
            panic!("not refused");
        };
        assert!(wait > Duration::from_secs(50));
        assert_eq!(l.begin(b), Admit::Go);
        let quick = LoginLimiter::new(1, Duration::from_millis(20));
        assert_eq!(quick.begin(a), Admit::Go);
        quick.end(a, true);
        assert!(matches!(quick.begin(a), Admit::Refused(_)));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(quick.begin(a), Admit::Go);
    }

    #[test]
    fn attempts_at_once_hold_their_tokens() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.begin(a), Admit::Go);
        }
        // Three are running: the fourth waits for them.
        assert_eq!(l.begin(a), Admit::Wait);
        // One succeeds and gives its token back.
        l.end(a, false);
        assert_eq!(l.begin(a), Admit::Go);
        for _ in 0..3 {
            l.end(a, true);
        }
        assert!(matches!(l.begin(a), Admit::Refused(_)));
    }
}
