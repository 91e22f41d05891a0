//! In-process fake of ECR's token API (`GetAuthorizationToken`, AWS JSON 1.1:
//! `POST /` with `X-Amz-Target`), for tests of `auth.token.provider: ecr`.
//! It answers only requests signed with AWS Signature V4 for the expected
//! access key, region and service (the signature itself is checked with the
//! secret key it was given), issuing base64 `AWS:<password>` tokens that ECR
//! says expire after `lifetime`; it can be told to refuse, or to issue tokens
//! for another password from now on. Every request is counted. Blocking std threads: plain `#[test]`s use it.
//!
//! It also plays IAM Identity Center's portal (`AWS_ENDPOINT_URL_SSO`) when
//! told a bearer token ([`FakeEcr::serve_sso`]): `GetRoleCredentials`
//! (`GET /federation/credentials`) with that token answers the keys it checks
//! ECR's signatures against.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024;

struct State {
    access_key: String,
    secret_key: String,
    region: String,
    password: Mutex<String>,
    lifetime_secs: AtomicU64,
    refuse: AtomicBool,
    calls: AtomicUsize,
    /// The SSO bearer token, account and role `GetRoleCredentials` answers for, and its calls.
    sso: Mutex<Option<(String, String, String)>>,
    sso_calls: AtomicUsize,
    /// Why requests were turned away (a bad signature, a wrong target), for assertions.
    rejections: Mutex<Vec<String>>,
}

pub struct FakeEcr {
    state: Arc<State>,
    port: u16,
}

impl FakeEcr {
    /// Issues tokens for `AWS:<password>` to requests signed with these keys for `region`.
    pub fn start(access_key: &str, secret_key: &str, region: &str, password: &str) -> FakeEcr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake ECR: bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: region.into(),
            password: Mutex::new(password.into()),
            lifetime_secs: AtomicU64::new(12 * 3600),
            refuse: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            sso: Mutex::new(None),
            sso_calls: AtomicUsize::new(0),
            rejections: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        FakeEcr { state, port }
    }

    /// For `AWS_ENDPOINT_URL_ECR`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The token it issues: base64 of `AWS:<password>`.
    pub fn token(&self) -> String {
        self.state.token()
    }

    /// Issues tokens for `AWS:<password>` from now on (ECR's tokens rotated).
    pub fn set_password(&self, password: &str) {
        *self.state.password.lock().unwrap() = password.to_string();
    }

    /// Requests answered with a token.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Answers `GetRoleCredentials` for `bearer`, `account` and `role` with the keys ECR requests must be signed with.
    pub fn serve_sso(&self, bearer: &str, account: &str, role: &str) {
        *self.state.sso.lock().unwrap() = Some((bearer.into(), account.into(), role.into()));
    }

    /// `GetRoleCredentials` requests answered with keys.
    pub fn sso_calls(&self) -> usize {
        self.state.sso_calls.load(Ordering::SeqCst)
    }

    pub fn rejections(&self) -> Vec<String> {
        self.state.rejections.lock().unwrap().clone()
    }

    /// Refuse (400 AccessDeniedException) every request from now on, or stop refusing.
    pub fn refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// `expiresAt` of the tokens issued from now on, from the time of issue.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.state.lifetime_secs.store(lifetime.as_secs(), Ordering::SeqCst);
    }
}

impl State {
    fn token(&self) -> String {
        let password = self.password.lock().unwrap().clone();
        super::fake_upstream::basic_auth("AWS", &password).trim_start_matches("Basic ").to_string()
    }
}

fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("fake ECR: clone"));
    let mut writer = stream;
    for _ in 0..1000 {
        let Some((method, path, headers, body)) = read_request(&mut reader) else { return };
        let (status, body) = answer(state, &method, &path, &headers, &body);
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(body.as_bytes())).is_err() {
            return;
        }
    }
}

type Headers = Vec<(String, String)>;

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, Headers, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        let mut h = String::new();
        total += reader.read_line(&mut h).ok().filter(|n| *n > 0)?;
        if total > MAX_HEAD {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = header(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if len > MAX_BODY {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn answer(state: &State, method: &str, path: &str, headers: &Headers, body: &[u8]) -> (u16, String) {
    let reject = |why: String| {
        state.rejections.lock().unwrap().push(why.clone());
        (400, format!(r#"{{"__type":"InvalidSignatureException","message":{why:?}}}"#))
    };
    if method == "GET" && path.starts_with("/federation/credentials?") {
        return role_credentials(state, path, headers).unwrap_or_else(|why| {
            state.rejections.lock().unwrap().push(why.clone());
            (401, format!(r#"{{"message":{why:?}}}"#))
        });
    }
    if method != "POST" || path != "/" || header(headers, "x-amz-target") != Some(TARGET) {
        return reject(format!("not a GetAuthorizationToken request: {method} {path}"));
    }
    if let Err(why) = check_signature(state, method, path, headers, body) {
        return reject(why);
    }
    if state.refuse.load(Ordering::SeqCst) {
        return (400, r#"{"__type":"AccessDeniedException","message":"the fake ECR refuses"}"#.to_string());
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expires = now + state.lifetime_secs.load(Ordering::SeqCst);
    let token = state.token();
    (
        200,
        format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":{expires}.0,"proxyEndpoint":"https://123456789012.dkr.ecr.{}.amazonaws.com"}}]}}"#,
            state.region
        ),
    )
}

/// SSO's `GetRoleCredentials`: the bearer token, account and role it was told, answered with the keys.
fn role_credentials(state: &State, path: &str, headers: &Headers) -> Result<(u16, String), String> {
    let sso = state.sso.lock().unwrap().clone().ok_or("SSO is not served")?;
    let (bearer, account, role) = sso;
    if header(headers, "x-amz-sso_bearer_token") != Some(bearer.as_str()) {
        return Err("GetRoleCredentials without the SSO bearer token".into());
    }
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| query.split('&').find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')));
    if param("account_id") != Some(account.as_str()) || param("role_name") != Some(role.as_str()) {
        return Err(format!("GetRoleCredentials for another account or role: {query}"));
    }
    state.sso_calls.fetch_add(1, Ordering::SeqCst);
    let expires_ms = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600) * 1000;
    Ok((
        200,
        format!(
            r#"{{"roleCredentials":{{"accessKeyId":"{}","secretAccessKey":"{}","sessionToken":"sso-session","expiration":{expires_ms}}}}}"#,
            state.access_key, state.secret_key
        ),
    ))
}

/// Checks the SigV4 `Authorization`: scope, signed headers, and the signature recomputed.
fn check_signature(state: &State, method: &str, path: &str, headers: &Headers, body: &[u8]) -> Result<(), String> {
    let auth = header(headers, "authorization").ok_or("no Authorization")?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .ok_or(format!("no {name} in Authorization"))
    };
    let credential = field("Credential")?;
    let signed = field("SignedHeaders")?;
    let signature = field("Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(format!("bad credential scope {credential}"));
    };
    if key != state.access_key || region != state.region || service != "ecr" {
        return Err(format!("credential scope {key}/{region}/{service} is not the expected one"));
    }
    let amz_date = header(headers, "x-amz-date").ok_or("no X-Amz-Date")?;
    if !amz_date.starts_with(date) || !signed.split(';').any(|h| h == "host") {
        return Err("X-Amz-Date or the signed headers do not fit the scope".into());
    }
    let mut canonical_headers = String::new();
    for name in signed.split(';') {
        let value = header(headers, name).ok_or(format!("signed header {name} missing"))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    let canonical = format!("{method}\n{path}\n\n{canonical_headers}\n{signed}\n{}", hex(&Sha256::digest(body)));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut k = hmac(format!("AWS4{}", state.secret_key).as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    if hex(&hmac(&k, to_sign.as_bytes())) != signature {
        return Err("the signature does not match".into());
    }
    Ok(())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(data).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
