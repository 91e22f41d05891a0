//! A registry entry's `auth:` key: the Go ociregistry's `user`, `password`,
//! `passwordFromEnv` and `token` map (`static`, `provider`, `providerOpts`,
//! `expiry`), plus ours: `passwordFile` (a mounted secret) and `token` as a
//! plain string (a bearer token). Resolved into [`Credentials`] at load; every
//! problem names its key.
//!
//! `provider: ecr` becomes [`Credentials::Ecr`]: the fetcher asks ECR for a
//! token (see `fetch::ecr`) when the registry is first pulled from. A build
//! without the `ecr` cargo feature refuses it, naming the feature.
//!
//! Precedence, as in Go where Go has the key: a `token.static` value wins over
//! everything (Go sends it as `Authorization: Basic <token>` and never
//! negotiates); for the password, `passwordFromEnv` wins over `passwordFile`,
//! which wins over `password`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::parse as parse_duration;

/// The token providers the Go ociregistry knows.
const GO_PROVIDERS: &[&str] = &["ecr"];
/// The `providerOpts` keys the Go ECR provider reads.
const ECR_OPTS: &[&str] = &["profile", "region"];
/// Go's default `expiry` of a provider's token: it refreshes every 12 hours.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(12 * 3600);
/// Bytes of a `passwordFile` read at most: a password, not a file to slurp.
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_from_env: Option<String>,
    /// A file holding the password (a mounted secret), read at load and trimmed (ours).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Option<TokenConfig>,
}

/// `auth.token`: ours, a bearer token as a string; or the Go map.
#[derive(Debug, Clone)]
pub enum TokenConfig {
    Bearer(String),
    Go(GoToken),
}

/// By hand rather than `untagged`, so a misspelt key of the map is named.
impl<'de> Deserialize<'de> for TokenConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TokenConfig, D::Error> {
        use serde::de::Error;
        match serde_yaml_ng::Value::deserialize(d)? {
            serde_yaml_ng::Value::String(s) => Ok(TokenConfig::Bearer(s)),
            v @ serde_yaml_ng::Value::Mapping(_) => {
                serde_yaml_ng::from_value(v).map(TokenConfig::Go).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(
                "token: a string (a bearer token) or a map (static, provider, providerOpts, expiry)",
            )),
        }
    }
}

/// The Go ociregistry's `auth.token` map.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GoToken {
    #[serde(default)]
    pub provider: Option<String>,
    /// `key=value,key=value`, provider-specific.
    #[serde(default)]
    pub provider_opts: Option<String>,
    /// How often the provider's token is refreshed: `6h`, `30m`.
    #[serde(default)]
    pub expiry: Option<String>,
    /// A token sent as-is (`Authorization: Basic <static>`, as Go sends it).
    #[serde(default, rename = "static")]
    pub static_token: Option<String>,
}

/// Credentials for one upstream, resolved from the config.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User and password, answering a Basic challenge or fetching bearer tokens.
    Basic { user: String, password: String },
    /// Sent on every request as `Authorization: Bearer <token>` (ours: `auth.token: <string>`).
    Token(String),
    /// Sent on every request as `Authorization: Basic <token>` (Go's `auth.token.static`:
    /// an already encoded credential, such as an ECR authorization token).
    StaticBasic(String),
    /// An ECR authorization token (`AWS:<password>`), asked of ECR's
    /// `GetAuthorizationToken` with the AWS credentials of this source and
    /// renewed before it expires; used as Basic credentials.
    Ecr(EcrSource),
}

/// Where an ECR token comes from: Go's `providerOpts` and `expiry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrSource {
    /// `profile=`: the shared config/credentials profile (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// `region=`: the ECR region (else `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's).
    pub region: Option<String>,
    /// A token is asked for again after this long at the latest (Go's `expiry`, 12h by default).
    pub expiry: Duration,
}

impl Credentials {
    /// The `Authorization` value sent on every request, for credentials that are fixed
    /// (no challenge is answered and nothing can be refreshed).
    pub fn fixed_authorization(&self) -> Option<String> {
        match self {
            Credentials::Token(t) => Some(format!("Bearer {t}")),
            Credentials::StaticBasic(t) => Some(format!("Basic {t}")),
            Credentials::Basic { .. } | Credentials::Ecr(_) => None,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::StaticBasic(_) => f.write_str("StaticBasic(<redacted>)"),
            Credentials::Ecr(source) => write!(f, "Ecr({source:?})"),
        }
    }
}

/// Resolves `auth` (of the entry at `at`, e.g. `registries[0] (quay.io)`); problems are pushed.
pub fn credentials(auth: &AuthConfig, at: &str, problems: &mut Vec<String>) -> Option<Credentials> {
    match &auth.token {
        Some(TokenConfig::Bearer(t)) => {
            return token_value(t, &format!("{at}.auth.token"), problems).map(Credentials::Token)
        }
        Some(TokenConfig::Go(go)) => {
            if let Some(c) = go_token(go, at, problems) {
                return Some(c);
            }
        }
        None => {}
    }
    let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let Some(user) = auth.user.clone().filter(|u| !u.is_empty()) else {
        if given(&auth.password) || given(&auth.password_from_env) || auth.password_file.is_some() {
            problems.push(format!("{at}.auth: a password is given without a user"));
        }
        return None;
    };
    let password = if let Some(var) = auth.password_from_env.as_ref().filter(|v| !v.is_empty()) {
        match std::env::var(var) {
            Ok(p) => p,
            Err(_) => {
                problems.push(format!("{at}.auth.passwordFromEnv: environment variable {var:?} is not set"));
                return None;
            }
        }
    } else if let Some(path) = &auth.password_file {
        match read_password_file(path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{at}.auth.passwordFile: {}: {e}", path.display()));
                return None;
            }
        }
    } else if let Some(p) = &auth.password {
        p.clone()
    } else {
        problems.push(format!("{at}.auth: user {user:?} has no password, passwordFromEnv or passwordFile"));
        return None;
    };
    Some(Credentials::Basic { user, password })
}

/// Go's token map. `static` wins (Go uses it and never asks the provider); a
/// provider is checked fully, then becomes [`Credentials::Ecr`] (or is
/// refused, naming the cargo feature, by a build without ECR support).
fn go_token(go: &GoToken, at: &str, problems: &mut Vec<String>) -> Option<Credentials> {
    let key = format!("{at}.auth.token");
    let mut source = EcrSource { profile: None, region: None, expiry: DEFAULT_EXPIRY };
    if let Some(expiry) = go.expiry.as_deref().filter(|e| !e.is_empty()) {
        match parse_duration(expiry) {
            Ok(d) if d.as_secs() >= 1 => source.expiry = d,
            Ok(_) => problems.push(format!("{key}.expiry: {expiry:?} is shorter than a second")),
            Err(e) => problems.push(format!("{key}.expiry: {e}")),
        }
    }
    let provider = go.provider.as_deref().filter(|p| !p.is_empty());
    if let Some(p) = provider {
        if !GO_PROVIDERS.contains(&p) {
            problems.push(format!("{key}.provider: {p:?} is not a token provider (the Go ociregistry knows: ecr)"));
        }
    }
    if let Some(opts) = go.provider_opts.as_deref().filter(|o| !o.is_empty()) {
        for pair in opts.split(',') {
            match pair.split_once('=') {
                Some((k, v)) if ECR_OPTS.contains(&k.trim()) && !v.trim().is_empty() => match option_value(v.trim()) {
                    Some(v) if k.trim() == "profile" => source.profile = Some(v),
                    Some(v) => source.region = Some(v),
                    None => problems.push(format!(
                        "{key}.providerOpts: the value of {:?} must be letters, digits, '-', '_' or '.'",
                        k.trim()
                    )),
                },
                Some((k, _)) if ECR_OPTS.contains(&k.trim()) => {
                    problems.push(format!("{key}.providerOpts: {:?} has no value", k.trim()))
                }
                _ => problems.push(format!(
                    "{key}.providerOpts: {pair:?} is not key=value with a key of {}",
                    ECR_OPTS.join(", ")
                )),
            }
        }
    }
    if let Some(t) = go.static_token.as_deref().filter(|t| !t.is_empty()) {
        return token_value(t, &format!("{key}.static"), problems).map(Credentials::StaticBasic);
    }
    if provider == Some("ecr") {
        if cfg!(feature = "ecr") {
            return Some(Credentials::Ecr(source));
        }
        problems.push(format!(
            "{key}.provider: ecr: this build has no ECR support (it was built without the `ecr` cargo feature), \
             and the registry would be pulled from without the credentials asked for; rebuild with \
             `--features ecr`, paste a token from `aws ecr get-authorization-token` into {key}.static, or use \
             auth.user AWS with passwordFromEnv/passwordFile holding the ECR password"
        ));
    }
    None
}

/// A profile or region name, which goes into a file lookup, a host name and a
/// signature: bounded, and only the characters AWS uses in them.
fn option_value(v: &str) -> Option<String> {
    let ok = v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| v.to_string())
}

/// A token that can go into a header as it is.
fn token_value(t: &str, key: &str, problems: &mut Vec<String>) -> Option<String> {
    let t = t.trim();
    if t.is_empty() || t.len() > 16 * 1024 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(format!("{key}: must be 1 to 16384 printable ASCII characters without spaces"));
        return None;
    }
    Some(t.to_string())
}

fn read_password_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_PASSWORD_FILE + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!("larger than {MAX_PASSWORD_FILE} bytes"));
    }
    let password = text.trim();
    if password.is_empty() {
        return Err("empty".to_string());
    }
    Ok(password.to_string())
}
