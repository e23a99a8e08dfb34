//! Who may connect. For now: `trust` for loopback clients only (the user
//! name is recorded in the session); password logins replace this policy.

use std::net::SocketAddr;

/// Whether a client at `addr` may log in without a password.
pub fn trust_allowed(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(trust_allowed(&"127.0.0.1:5".parse().unwrap()));
        assert!(trust_allowed(&"[::1]:5".parse().unwrap()));
        assert!(!trust_allowed(&"10.0.0.1:5".parse().unwrap()));
    }
}
