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
/// affected, and nothing blocks: a limited attempt is refused at once.
#[derive(Debug)]
pub struct LoginLimiter {
    burst: f64,
    interval: Duration,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl LoginLimiter {
    pub fn new(burst: u32, interval: Duration) -> LoginLimiter {
        LoginLimiter {
            burst: f64::from(burst.max(1)),
            interval: interval.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn tokens(&self, at: (f64, Instant), now: Instant) -> f64 {
        let refill = now.duration_since(at.1).as_secs_f64() / self.interval.as_secs_f64();
        (at.0 + refill).min(self.burst)
    }

    /// `Err(wait)` if `ip` has used up its failed logins.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let buckets = self.buckets.lock();
        let Some(&bucket) = buckets.get(&ip) else {
            return Ok(());
        };
        let tokens = self.tokens(bucket, now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.interval.mul_f64(1.0 - tokens))
        }
    }

    /// Record a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget addresses that have recovered fully.
            let full = self.burst;
            buckets.retain(|_, b| self.tokens(*b, now) < full);
        }
        let tokens = buckets
            .get(&ip)
            .map(|b| self.tokens(*b, now))
            .unwrap_or(self.burst);
        buckets.insert(ip, ((tokens - 1.0).max(0.0), now));
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
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(l.check(b).is_ok());
        let quick = LoginLimiter::new(1, Duration::from_millis(20));
        quick.failed(a);
        assert!(quick.check(a).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(quick.check(a).is_ok());
    }
}
