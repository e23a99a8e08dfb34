//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it.
//!
//! The server keeps only a verifier (salt, iterations, StoredKey, ServerKey),
//! never the password or anything equivalent to it: a client proves it knows
//! the password by a proof from which the server recovers ClientKey and
//! checks `H(ClientKey) == StoredKey`.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom, rand::SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Iterations for new verifiers (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;

/// Why an exchange failed. The client is told only "password authentication
/// failed"; these say what went wrong for the log.
#[derive(Debug, Error, PartialEq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported on this connection")]
    ChannelBinding,
    #[error("nonce mismatch")]
    Nonce,
    #[error("wrong password or unknown user")]
    Proof,
}

impl quiver_common::sqlstate::SqlStateError for ScramError {
    fn sqlstate(&self) -> quiver_common::sqlstate::SqlState {
        use quiver_common::sqlstate;
        match self {
            ScramError::Malformed(_) | ScramError::ChannelBinding | ScramError::Nonce => {
                sqlstate::PROTOCOL_VIOLATION
            }
            ScramError::Proof => sqlstate::INVALID_PASSWORD,
        }
    }
}

/// A stored SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// Compare without an early exit, so timing says nothing about where
/// the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bytes from the system's secure random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system source fails only when the OS has no entropy source at all.
    SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random source is unavailable");
    out
}

/// SASLprep the password as PostgreSQL does: if it cannot be normalised,
/// use it as is.
fn normalize(password: &str) -> String {
    stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string())
}

impl Verifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        Verifier::with_salt(password, &random_bytes::<16>(), ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN),
            salt,
            normalize(password).as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// PostgreSQL's text form: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn to_pg_string(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }

    /// Parse PostgreSQL's text form, as `psql`'s `\password` sends it.
    pub fn parse_pg_string(s: &str) -> Option<Verifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iter, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let v = Verifier {
            iterations: iter.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?,
            server_key: B64.decode(server).ok()?,
        };
        (v.stored_key.len() == 32 && v.server_key.len() == 32).then_some(v)
    }

    /// A stand-in for a user that does not exist, so that the exchange looks
    /// the same (salt stable per name) and then fails at the proof.
    pub fn mock(user: &str, server_secret: &[u8]) -> Verifier {
        let salt = hmac_sha256(server_secret, user.as_bytes());
        Verifier {
            iterations: ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: random_bytes::<32>().to_vec(),
            server_key: random_bytes::<32>().to_vec(),
        }
    }
}

/// The user name and nonce of a client-first message.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFirst {
    /// `n,,` or `y,,`: the channel-binding header the final message repeats.
    gs2_header: String,
    bare: String,
    nonce: String,
    /// The name in the message (PostgreSQL clients leave it empty and use
    /// the startup packet's user).
    pub user: String,
}

impl ClientFirst {
    pub fn parse(data: &[u8]) -> Result<ClientFirst, ScramError> {
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().ok_or(ScramError::Malformed("empty"))?;
        let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel-binding flag")),
        }
        let mut user = None;
        let mut nonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(v.replace("=2C", ",").replace("=3D", "="));
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v.to_string());
            } else if attr.starts_with("m=") {
                return Err(ScramError::Malformed("mandatory extension not supported"));
            }
        }
        let nonce = nonce
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        Ok(ClientFirst {
            gs2_header: format!("{flag},{authzid},"),
            bare: bare.to_string(),
            nonce,
            user: user.ok_or(ScramError::Malformed("no user name"))?,
        })
    }
}

/// The server's side of one exchange, after it sent server-first.
pub struct Exchange {
    verifier: Verifier,
    client_first: ClientFirst,
    server_first: String,
    nonce: String,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exchange(..)")
    }
}

impl Exchange {
    /// Answer a client-first message; returns the server-first message.
    pub fn start(client_first: ClientFirst, verifier: Verifier) -> (Exchange, String) {
        let nonce = format!("{}{}", client_first.nonce, B64.encode(random_bytes::<18>()));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        (
            Exchange {
                verifier,
                client_first,
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        )
    }

    /// Check the client-final message; returns server-final (`v=...`).
    pub fn finish(&self, data: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let binding = binding.ok_or(ScramError::Malformed("no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.client_first.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first.bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::Proof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = sha256(&client_key);
        if !same_bytes(&stored, &self.verifier.stored_key) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side of the exchange, as libpq computes it.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iter: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iter).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored = sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac_sha256(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn run(stored_password: &str, given: &str) -> Result<String, ScramError> {
        let verifier = Verifier::new(stored_password);
        let first = ClientFirst::parse(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (ex, server_first) = Exchange::start(first, verifier);
        ex.finish(client_final(given, "n=,r=rOprNGfwEbeRWgbNEkqO", &server_first).as_bytes())
    }

    #[test]
    fn right_password_passes_wrong_fails() {
        assert!(run("pencil", "pencil").unwrap().starts_with("v="));
        assert_eq!(run("pencil", "pen"), Err(ScramError::Proof));
    }

    #[test]
    fn rfc7677_keys() {
        // RFC 7677 §3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::with_salt("pencil", &salt, 4096);
        let first = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let mut ex = Exchange::start(first, v).0;
        ex.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        ex.server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into();
        let reply = ex
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(reply, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn pg_text_form_round_trips() {
        let v = Verifier::new("secret");
        let text = v.to_pg_string();
        assert_eq!(Verifier::parse_pg_string(&text), Some(v));
        assert!(Verifier::parse_pg_string("md5abc").is_none());
        assert!(format!("{:?}", Verifier::new("x")).contains(".."));
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert!(ClientFirst::parse(b"p=tls-server-end-point,,n=,r=x").is_err());
        assert!(ClientFirst::parse(b"n,,n=u").is_err());
        let first = ClientFirst::parse(b"n,,n=,r=abc").unwrap();
        let (ex, _) = Exchange::start(first, Verifier::new("p"));
        assert_eq!(ex.finish(b"c=biws,r=abc,p=AAAA"), Err(ScramError::Nonce));
        assert!(ex.finish(b"garbage").is_err());
    }
}
