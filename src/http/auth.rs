//! `[server] password`: the login, its sessions (an HttpOnly cookie) and the check every
//! protected endpoint makes.
//!
//! The password is compared in constant time (SHA-256 of both sides, compared with
//! `subtle`), sessions are 256-bit random tokens kept in memory (a restart logs everyone
//! out), and failed attempts are rate-limited per source address: the login form and
//! `Authorization: Bearer` spend the same budget, and an address that spent it is refused
//! before the password is compared.
//!
//! Bearer grammar (RFC 6750 section 2.1, with RFC 9110's case-insensitive scheme): exactly
//! `Bearer`, one space, then the password as it is, with no whitespace before or after it.
//! Basic (RFC 7617), for tools that can only put credentials in the URL
//! (`http://user:password@host/whep`, as go2rtc does): exactly `Basic`, one space, the
//! standard base64 of `user:password`; the user name is not checked. Any other
//! `Authorization` header (another scheme, two spaces, bad base64, no colon, several
//! headers) is a failed attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::config::Password;
use crate::limits::{LimitLog, RateLimiter};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "peercam_session";
/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Sessions kept at most; the oldest is dropped to make room.
const MAX_SESSIONS: usize = 1024;

/// Attempts refused because the address spent its failure budget.
static LOGIN_LIMIT: LimitLog = LimitLog::new("[limits] login_failures_per_minute");
/// Wrong passwords (form or Bearer), logged throttled.
static WRONG_PASSWORD: LimitLog = LimitLog::new("[server] password");

/// What a request's credentials allow on a protected endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// Open camera, a live session, or the right Bearer password.
    Allowed,
    /// No credentials, or wrong ones.
    Refused,
    /// Too many failures from this address: try again after this long.
    TooMany(Duration),
}

/// The outcome of a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// Right password: set this `Set-Cookie` value.
    Accepted(String),
    /// Wrong password.
    Refused,
    /// Too many failures from this address: try again after this long.
    TooMany(Duration),
}

/// The password check and the live sessions.
pub struct Auth {
    /// SHA-256 of the password; `None` when the camera is open.
    digest: Option<[u8; 32]>,
    sessions: Mutex<HashMap<String, Instant>>,
    failures: RateLimiter,
    /// Mark the cookie `Secure` (the server speaks HTTPS).
    secure: bool,
}

impl Auth {
    /// The check for `password` (`None`: open), with failed logins limited to
    /// `failures_per_minute` per address; `secure` when served over HTTPS.
    pub fn new(password: Option<&Password>, failures_per_minute: u32, secure: bool) -> Self {
        Auth {
            digest: password.map(|p| sha256(p.expose().as_bytes())),
            sessions: Mutex::new(HashMap::new()),
            failures: RateLimiter::new(failures_per_minute),
            secure,
        }
    }

    /// True when no password is set: everyone may watch.
    pub fn is_open(&self) -> bool {
        self.digest.is_none()
    }

    /// Whether a request from `addr` with these headers may use protected endpoints: the
    /// camera is open, it carries a live session cookie, or `Authorization: Bearer
    /// <password>`. A wrong or malformed `Authorization` spends `addr`'s failure budget like a
    /// wrong login; once it is spent the header is refused before it is compared.
    pub fn check(&self, addr: IpAddr, headers: &HeaderMap) -> Access {
        let Some(digest) = &self.digest else {
            return Access::Allowed;
        };
        if self.has_session(headers) {
            return Access::Allowed;
        }
        let mut given = headers.get_all(AUTHORIZATION).iter();
        let (Some(first), second) = (given.next(), given.next()) else {
            return Access::Refused;
        };
        let now = Instant::now();
        if let Some(wait) = self.failures.exhausted(addr, now) {
            LOGIN_LIMIT.hit(|| format!("refusing the password from {addr}: too many failures"));
            return Access::TooMany(wait);
        }
        let right = second.is_none()
            && presented_password(first)
                .is_some_and(|password| bool::from(sha256(&password).ct_eq(digest)));
        if right {
            return Access::Allowed;
        }
        self.failed(addr, now, "Authorization header");
        Access::Refused
    }

    /// Whether these headers carry a live session cookie (a browser that logged in).
    pub fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(token) = session_cookie(headers) else {
            return false;
        };
        let now = Instant::now();
        let mut sessions = self.sessions();
        match sessions.get(token) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                sessions.remove(token);
                false
            }
            None => false,
        }
    }

    /// Counts a failed attempt from `addr` (the next is refused when its budget is spent).
    fn failed(&self, addr: IpAddr, now: Instant, how: &str) {
        WRONG_PASSWORD.hit(|| format!("wrong password from {addr} ({how})"));
        let _ = self.failures.take(addr, now);
    }

    /// Checks a login from `addr`: the right password opens a session. An address over its
    /// failure limit is refused before the password is looked at, so guessing cannot go on.
    pub fn login(&self, addr: IpAddr, attempt: &str) -> Login {
        let Some(digest) = &self.digest else {
            return Login::Accepted(self.new_session());
        };
        let now = Instant::now();
        if let Some(wait) = self.failures.exhausted(addr, now) {
            LOGIN_LIMIT.hit(|| format!("refusing the password from {addr}: too many failures"));
            return Login::TooMany(wait);
        }
        if bool::from(sha256(attempt.as_bytes()).ct_eq(digest)) {
            log::info!("login from {addr}");
            return Login::Accepted(self.new_session());
        }
        self.failed(addr, now, "login form");
        Login::Refused
    }

    /// Ends the session these headers carry, if any; returns the `Set-Cookie` value that
    /// clears the cookie.
    pub fn logout(&self, headers: &HeaderMap) -> String {
        if let Some(token) = session_cookie(headers) {
            self.sessions().remove(token);
        }
        format!("{}=; Max-Age=0; {}", COOKIE_NAME, self.cookie_attributes())
    }

    /// Live sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Times the password was refused unread because of the failure limit.
    pub fn limit_hits(&self) -> u64 {
        LOGIN_LIMIT.hits()
    }

    /// Wrong passwords so far (form and Bearer).
    pub fn failures(&self) -> u64 {
        WRONG_PASSWORD.hits()
    }

    fn new_session(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions();
        sessions.retain(|_, expiry| *expiry > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(t, _)| t.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token.clone(), now + SESSION_LIFETIME);
        format!(
            "{COOKIE_NAME}={token}; Max-Age={}; {}",
            SESSION_LIFETIME.as_secs(),
            self.cookie_attributes()
        )
    }

    fn cookie_attributes(&self) -> &'static str {
        if self.secure {
            "Path=/; HttpOnly; SameSite=Strict; Secure"
        } else {
            "Path=/; HttpOnly; SameSite=Strict"
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The password an `Authorization` header presents: the token of `Bearer <token>`, or the
/// password of `Basic base64(user:password)` (see the module documentation for the
/// grammar); `None` for anything else.
fn presented_password(value: &axum::http::HeaderValue) -> Option<Vec<u8>> {
    use base64::Engine;
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(6)?;
    if scheme.eq_ignore_ascii_case(b"Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    let (scheme, token) = bytes.split_at_checked(7)?;
    let well_formed = scheme.eq_ignore_ascii_case(b"Bearer ")
        && !token.is_empty()
        && !token.first().is_some_and(u8::is_ascii_whitespace)
        && !token.last().is_some_and(u8::is_ascii_whitespace);
    well_formed.then(|| token.to_vec())
}

/// The value of our session cookie in the `Cookie` headers, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn auth() -> Auth {
        Auth::new(Some(&Password("correct horse".into())), 3, false)
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().expect("name=value");
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).expect("header"),
        );
        h
    }

    fn allowed(a: &Auth, headers: &HeaderMap) -> bool {
        a.check(ADDR, headers) == Access::Allowed
    }

    fn authorization(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn open_when_no_password() {
        let a = Auth::new(None, 3, false);
        assert!(a.is_open());
        assert!(allowed(&a, &HeaderMap::new()));
    }

    #[test]
    fn the_right_password_opens_a_session_cookie() {
        let a = auth();
        assert!(!allowed(&a, &HeaderMap::new()));
        let Login::Accepted(cookie) = a.login(ADDR, "correct horse") else {
            panic!("right password refused")
        };
        assert!(cookie.starts_with("peercam_session="), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
        assert!(allowed(&a, &with_cookie(&cookie)));
        assert!(!allowed(&a, &with_cookie("peercam_session=forged")));
        let cleared = a.logout(&with_cookie(&cookie));
        assert!(cleared.contains("Max-Age=0"));
        assert!(!allowed(&a, &with_cookie(&cookie)), "logged out");
        let secure = Auth::new(Some(&Password("correct horse".into())), 3, true);
        let Login::Accepted(cookie) = secure.login(ADDR, "correct horse") else {
            panic!("refused")
        };
        assert!(cookie.ends_with("; Secure"), "{cookie}");
    }

    #[test]
    fn bearer_password_works_for_scripts_with_the_exact_grammar() {
        // Generous budget: this test is about the grammar.
        let a = Auth::new(Some(&Password("correct horse".into())), 1000, false);
        for good in [
            "Bearer correct horse",
            "bearer correct horse",
            "BEARER correct horse",
            // Basic peercam:correct horse, and with no user name (go2rtc's URL userinfo).
            "Basic cGVlcmNhbTpjb3JyZWN0IGhvcnNl",
            "basic OmNvcnJlY3QgaG9yc2U=",
        ] {
            assert!(allowed(&a, &authorization(good)), "{good}");
        }
        for bad in [
            "Bearer wrong",
            "Bearer  correct horse",
            "Bearer\tcorrect horse",
            "Bearercorrect horse",
            "Bearer correct horse\t",
            "Bearer ",
            "Bearer",
            // Basic without the user's colon, with bad base64, or the wrong password.
            "Basic Y29ycmVjdCBob3JzZQ==",
            "Basic cGVlcmNhbTpjb3JyZWN0IGhvcnNl=",
            "Basic  cGVlcmNhbTpjb3JyZWN0IGhvcnNl",
            "Basic cGVlcmNhbTp3cm9uZw==",
            "correct horse",
        ] {
            assert_eq!(
                a.check(ADDR, &authorization(bad)),
                Access::Refused,
                "{bad:?}"
            );
        }
        // Two Authorization headers are refused even if one is right.
        let mut two = authorization("Bearer correct horse");
        two.append(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert_eq!(a.check(ADDR, &two), Access::Refused);
    }

    #[test]
    fn wrong_bearers_spend_the_login_budget_and_then_are_not_compared() {
        let a = auth();
        for _ in 0..2 {
            assert_eq!(
                a.check(ADDR, &authorization("Bearer guess")),
                Access::Refused
            );
        }
        assert_eq!(
            a.login(ADDR, "guess"),
            Login::Refused,
            "one budget for both ways"
        );
        // Spent: the right password waits, by Bearer and by the form.
        assert!(matches!(
            a.check(ADDR, &authorization("Bearer correct horse")),
            Access::TooMany(_)
        ));
        assert!(matches!(a.login(ADDR, "correct horse"), Login::TooMany(_)));
        // No credentials spend nothing; a session still works; other addresses are apart.
        assert_eq!(a.check(ADDR, &HeaderMap::new()), Access::Refused);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        let Login::Accepted(cookie) = a.login(other, "correct horse") else {
            panic!("another address is not limited")
        };
        assert!(allowed(&a, &with_cookie(&cookie)));
        assert!(a.failures() >= 3);
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let a = auth();
        for _ in 0..3 {
            assert_eq!(a.login(ADDR, "guess"), Login::Refused);
        }
        // Over the limit even the right password waits: guessing cannot go on.
        assert!(matches!(a.login(ADDR, "correct horse"), Login::TooMany(_)));
        assert!(a.limit_hits() >= 1);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        assert!(matches!(
            a.login(other, "correct horse"),
            Login::Accepted(_)
        ));
    }

    #[test]
    fn sessions_are_bounded() {
        let a = auth();
        for _ in 0..(MAX_SESSIONS + 10) {
            assert!(matches!(a.login(ADDR, "correct horse"), Login::Accepted(_)));
        }
        assert_eq!(a.session_count(), MAX_SESSIONS);
    }
}
