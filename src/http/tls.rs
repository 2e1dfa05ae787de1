//! HTTPS for the one HTTP port: `[server] tls = "self-signed"` (a certificate generated once
//! with rcgen and kept in the state directory) or `{ cert, key }` PEM files. rustls with the
//! ring provider; no OpenSSL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ServerSettings, TlsMode};

/// Where the self-signed certificate lives, under the state directory.
const SELF_SIGNED_DIR: &str = "tls";
/// Years a generated certificate is valid.
const SELF_SIGNED_YEARS: i32 = 10;

/// Why HTTPS could not be set up. Each names the file or directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("[server] tls: cannot read {what} from {path}: {reason}")]
    Read {
        /// "the certificate" or "the private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate and key do not make a usable server configuration.
    #[error(
        "[server] tls: the certificate {cert} and key {key} cannot be used together: {reason}"
    )]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The self-signed certificate could not be stored.
    #[error("[server] tls = \"self-signed\": cannot write {path}: {source} (set [server] state_dir to a directory peercam may write)")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rcgen failed.
    #[error("[server] tls = \"self-signed\": cannot generate a certificate: {0}")]
    Generate(String),
    /// The configured private key may be read (or written) by every user.
    #[error("[server] tls: the private key {path} is open to every user on this machine (mode {mode:04o}); run `chmod 600 {path}` (or `chmod 640` with a group the service has)")]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The state directory: `[server] state_dir`, else `$STATE_DIRECTORY` (the first, when
/// systemd lists several), else `/var/lib/peercam`.
pub fn state_dir(server: &ServerSettings) -> PathBuf {
    if let Some(dir) = &server.state_dir {
        return dir.clone();
    }
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/peercam"))
}

/// The acceptor for `[server] tls`, or `None` for plain HTTP. Creates the self-signed
/// certificate on first use.
pub fn acceptor(server: &ServerSettings) -> Result<Option<TlsAcceptor>, TlsError> {
    let (cert, key) = match &server.tls {
        TlsMode::Off => return Ok(None),
        TlsMode::Files { cert, key } => {
            refuse_exposed_key(key)?;
            (cert.clone(), key.clone())
        }
        TlsMode::SelfSigned => self_signed(&state_dir(server).join(SELF_SIGNED_DIR))?,
    };
    let chain = read_chain(&cert)?;
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::Read {
        what: "the private key",
        path: key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |reason: String| TlsError::Config {
        cert: cert.clone(),
        key: key.clone(),
        reason,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_error(e.to_string()))?;
    // HTTP/1.1 only: the WebSocket upgrade is an HTTP/1.1 feature.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    log::info!("HTTPS with {}", describe(&server.tls, &cert));
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn describe(mode: &TlsMode, cert: &Path) -> String {
    match mode {
        TlsMode::SelfSigned => format!(
            "the self-signed certificate {} (browsers warn about it once)",
            cert.display()
        ),
        _ => format!("the certificate {}", cert.display()),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what: "the certificate",
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(read_error(
            "no \"BEGIN CERTIFICATE\" block in the file".to_owned(),
        ));
    }
    Ok(chain)
}

/// The self-signed certificate and key in `dir`, generated there if missing.
fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let store = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Store { path, source }
    };
    if cert.exists() && key.exists() {
        make_private(&key).map_err(store(&key))?;
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(store(dir))?;
    let names = super::hosts::local_names();
    let mut params = rcgen::CertificateParams::new(names.clone())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    let now = time_now_year();
    params.not_before = rcgen::date_time_ymd(now - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(now + SELF_SIGNED_YEARS, 1, 1);
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key, key_pair.serialize_pem().as_bytes()).map_err(store(&key))?;
    std::fs::write(&cert, certificate.pem()).map_err(store(&cert))?;
    log::info!(
        "generated a self-signed certificate for {} in {}",
        names.join(", "),
        dir.display()
    );
    Ok((cert, key))
}

/// The current year (UTC), good enough for a validity window that starts a year earlier.
fn time_now_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 365.2425 days a year.
    1970 + (secs / 31_556_952) as i32
}

/// Writes a file only its owner may read (also when it existed with another mode).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

/// The permission bits of `path` (none if it cannot be read: reading the key says why).
fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// The generated key is peercam's own: if it is open to anyone but its owner (copied, or
/// restored from a backup), it is made private again, with a warning.
fn make_private(key: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(mode) = mode_of(key) else {
        return Ok(());
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
        log::warn!(
            "the self-signed certificate's private key {} was open to other users (mode {mode:04o}); \
             it is private again (0600), but may have been read",
            key.display()
        );
    }
    Ok(())
}

/// A configured key is the administrator's file: peercam does not change it, and refuses to
/// start while every user may read it. Group access is allowed (e.g. `root:peercam 0640`,
/// as for the configuration file).
fn refuse_exposed_key(key: &Path) -> Result<(), TlsError> {
    match mode_of(key) {
        Some(mode) if mode & 0o007 != 0 => Err(TlsError::KeyExposed {
            path: key.to_owned(),
            mode,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error text of a setup that must fail.
    fn error_of(s: &ServerSettings) -> String {
        match acceptor(s) {
            Ok(_) => panic!("expected an error for {:?}", s.tls),
            Err(e) => e.to_string(),
        }
    }

    fn settings(tls: TlsMode, dir: &Path) -> ServerSettings {
        ServerSettings {
            tls,
            state_dir: Some(dir.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn off_means_plain_http() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(acceptor(&settings(TlsMode::Off, dir.path()))
            .expect("off")
            .is_none());
        assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none());
    }

    #[test]
    fn self_signed_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(TlsMode::SelfSigned, dir.path());
        assert!(acceptor(&s).expect("first start").is_some());
        let cert = dir.path().join("tls/cert.pem");
        let key = dir.path().join("tls/key.pem");
        let first = std::fs::read(&cert).expect("cert written");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        assert!(acceptor(&s).expect("second start").is_some());
        assert_eq!(std::fs::read(&cert).expect("cert kept"), first);
        // The stored pair works as a { cert, key } configuration too.
        let files = TlsMode::Files { cert, key };
        assert!(acceptor(&settings(files, dir.path()))
            .expect("files")
            .is_some());
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let missing = TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let e = error_of(&settings(missing.clone(), dir.path()));
        assert!(
            e.contains("cannot read the certificate") && e.contains("cert.pem"),
            "{e}"
        );
        std::fs::write(&cert, "not a certificate\n").expect("write");
        let e = error_of(&settings(missing.clone(), dir.path()));
        assert!(e.contains("no \"BEGIN CERTIFICATE\""), "{e}");
        // A certificate with someone else's key.
        let other = tempfile::tempdir().expect("tempdir");
        acceptor(&settings(TlsMode::SelfSigned, dir.path())).expect("make a pair");
        acceptor(&settings(TlsMode::SelfSigned, other.path())).expect("make another pair");
        let mismatched = TlsMode::Files {
            cert: dir.path().join("tls/cert.pem"),
            key: other.path().join("tls/key.pem"),
        };
        let e = error_of(&settings(mismatched, dir.path()));
        assert!(e.contains("cannot be used together"), "{e}");
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn mode(path: &Path) -> u32 {
        mode_of(path).expect("mode")
    }

    #[test]
    fn a_generated_key_open_to_others_is_made_private_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(TlsMode::SelfSigned, dir.path());
        acceptor(&s).expect("first start");
        let key = dir.path().join("tls/key.pem");
        let pem = std::fs::read(&key).expect("key");
        for open in [0o644, 0o640, 0o604] {
            set_mode(&key, open);
            assert!(acceptor(&s).expect("start").is_some());
            assert_eq!(mode(&key), 0o600, "after {open:04o}");
            assert_eq!(std::fs::read(&key).expect("key"), pem, "the same key");
        }
        // A key.pem left open without its certificate is written anew, private.
        std::fs::remove_file(dir.path().join("tls/cert.pem")).expect("rm");
        set_mode(&key, 0o644);
        assert!(acceptor(&s).expect("start").is_some());
        assert_eq!(mode(&key), 0o600);
        assert_ne!(std::fs::read(&key).expect("key"), pem, "a new key");
    }

    #[test]
    fn a_configured_key_readable_by_every_user_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        acceptor(&settings(TlsMode::SelfSigned, dir.path())).expect("make a pair");
        let cert = dir.path().join("tls/cert.pem");
        let key = dir.path().join("tls/key.pem");
        let files = settings(
            TlsMode::Files {
                cert,
                key: key.clone(),
            },
            dir.path(),
        );
        for open in [0o644, 0o604, 0o602, 0o666] {
            set_mode(&key, open);
            let e = error_of(&files);
            let expected = format!(
                "the private key {} is open to every user on this machine (mode {open:04o}); \
                 run `chmod 600 {}`",
                key.display(),
                key.display()
            );
            assert!(e.contains(&expected), "{e}");
            assert_eq!(
                mode(&key),
                open,
                "the administrator's file is left as it is"
            );
        }
        // Owner only, or a group (root:peercam 0640): accepted.
        for private in [0o600, 0o400, 0o640, 0o440] {
            set_mode(&key, private);
            assert!(acceptor(&files).expect("start").is_some(), "{private:04o}");
        }
    }

    #[test]
    fn an_unwritable_state_dir_says_what_to_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let e = error_of(&settings(TlsMode::SelfSigned, &file));
        assert!(e.contains("state_dir"), "{e}");
    }
}
