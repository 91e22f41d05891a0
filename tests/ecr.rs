//! `auth.token.provider: ecr` against an in-process fake of ECR's token API
//! (`common::fake_ecr`, which checks the SigV4 signature) and the fake
//! upstream requiring Basic `AWS:<password>`, through the real binary: the
//! token is asked for at first use, reused within its expiry, asked for again
//! after it, and a refusal by ECR answers the client cleanly, backs off, and
//! leaks no secret into the log (not even at TRACE). A token the registry (or
//! its token endpoint) refuses before it is due is renewed at once and the
//! request retried, at most once per 30 s.

mod common;

use std::time::Duration;

use common::fake_ecr::FakeEcr;
use common::fake_upstream::{Auth, FakeUpstream, Options};
use common::Server;

const ACCESS_KEY: &str = "AKIAFAKEECRTEST00001";
const SECRET_KEY: &str = "S3cret-aws-secret-key-0e7c41";
const REGION: &str = "eu-fake-1";
const PASSWORD: &str = "S3cret-ecr-password-b3d9";

fn ecr_upstream() -> FakeUpstream {
    let up = FakeUpstream::start_with(Options {
        auth: Auth::Basic { user: "AWS".into(), pass: PASSWORD.into() },
        ..Options::default()
    });
    for tag in ["v1", "v2", "v3"] {
        up.add_image("team/app", tag, &[format!("layer {tag}").into_bytes()]);
    }
    up
}

/// The server, configured for `up` with `token` options, reaching `ecr` with these AWS keys.
fn server(up: &FakeUpstream, ecr: &FakeEcr, token: &str) -> (Server, tempfile::TempDir) {
    server_with_log(up, ecr, token, "debug")
}

/// [`server`] logging at `level` (`RUST_LOG`).
fn server_with_log(up: &FakeUpstream, ecr: &FakeEcr, token: &str, level: &str) -> (Server, tempfile::TempDir) {
    // No shared config or credentials file of the machine running the tests is read.
    let aws = tempfile::tempdir().unwrap();
    let none = aws.path().join("none");
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth:\n      token: {token}\n",
        up.host()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_ENDPOINT_URL_ECR", &ecr.url()),
        ("AWS_CONFIG_FILE", none.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", none.to_str().unwrap()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", level),
    ];
    (Server::start_with_env(&config, &[], &env), aws)
}

fn pull(server: &Server, up: &FakeUpstream, tag: &str) -> common::HttpResponse {
    server.get(&format!("/v2/{}/team/app/manifests/{tag}", up.host()), &[])
}

/// No secret of the test (AWS secret key, ECR password, the token) in `text`.
fn assert_no_secret(text: &str, ecr: &FakeEcr) {
    for (secret, what) in
        [(SECRET_KEY, "the AWS secret key"), (PASSWORD, "the ECR password"), (&ecr.token(), "the token")]
    {
        assert!(!text.contains(secret), "{what} leaked:\n{text}");
    }
}

#[test]
fn the_token_is_asked_for_at_first_use_and_reused_within_its_expiry() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    // At TRACE, where AWS's SDK would log the token it received.
    let token = format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}");
    let (server, _aws) = server_with_log(&up, &ecr, &token, "trace");
    assert_eq!(ecr.calls(), 0, "nothing is asked before a pull");
    let r = pull(&server, &up, "v1");
    assert_eq!(r.status, 200, "{}\n{:?}\n{}", r.text(), ecr.rejections(), server.log());
    assert_eq!(ecr.calls(), 1, "rejected: {:?}", ecr.rejections());
    let presented: Vec<_> =
        up.requests().iter().filter_map(|q| q.header("authorization").map(str::to_string)).collect();
    assert!(presented.contains(&format!("Basic {}", ecr.token())), "the token is the Basic credential: {presented:?}");
    for tag in ["v2", "v3"] {
        assert_eq!(pull(&server, &up, tag).status, 200);
    }
    assert_eq!(ecr.calls(), 1, "within its expiry the token is reused");
    assert!(ecr.rejections().is_empty(), "{:?}", ecr.rejections());
    assert_no_secret(&server.log(), &ecr);
}

#[test]
fn concurrent_first_pulls_share_one_request_to_ecr() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    let urls: Vec<String> = ["v1", "v2", "v3"]
        .iter()
        .map(|tag| server.url(&format!("/v2/{}/team/app/manifests/{tag}", up.host())))
        .collect();
    let statuses = common::concurrently(9, move |i| common::http_get(&urls[i % 3], &[]).status);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}\n{}", server.log());
    assert_eq!(ecr.calls(), 1, "one request to ECR, however many pulls wanted the token");
}

#[test]
fn the_token_is_asked_for_again_after_its_expiry() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let token = format!("{{provider: ecr, providerOpts: \"region={REGION}\", expiry: 1s}}");
    let (server, _aws) = server(&up, &ecr, &token);
    assert_eq!(pull(&server, &up, "v1").status, 200, "{}", server.log());
    assert_eq!(ecr.calls(), 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pull(&server, &up, "v2").status, 200, "{}", server.log());
    assert_eq!(ecr.calls(), 2, "past expiry the token is renewed");
    assert_no_secret(&server.log(), &ecr);
}

#[test]
fn the_token_is_renewed_before_ecr_expires_it() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    // expiry 12h, but ECR says the token expires in 4 s: renewed with a quarter of that left.
    ecr.set_lifetime(Duration::from_secs(4));
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    assert_eq!(pull(&server, &up, "v1").status, 200, "{}", server.log());
    assert_eq!(ecr.calls(), 1);
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(pull(&server, &up, "v2").status, 200, "{}", server.log());
    assert_eq!(ecr.calls(), 2, "ECR's expiresAt is honoured, not only expiry");
}

#[test]
fn a_refusal_by_ecr_answers_the_client_cleanly_backs_off_and_leaks_nothing() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    ecr.refuse(true);
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    let r = pull(&server, &up, "v1");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_no_secret(&format!("{:?}\n{}", r.headers, r.text()), &ecr);
    assert!(
        common::wait_until(Duration::from_secs(10), || server.log().contains("ECR authorization token request failed")),
        "{}",
        server.log()
    );
    assert!(server.log().contains("AccessDeniedException"), "the reason is logged: {}", server.log());
    assert_eq!(ecr.calls(), 0);
    // Once ECR answers again, a pull after the back-off succeeds.
    ecr.refuse(false);
    let ok = common::wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        pull(&server, &up, "v1").status == 200
    });
    assert!(ok, "{}", server.log());
    assert_eq!(ecr.calls(), 1);
    assert_no_secret(&server.log(), &ecr);
}

#[test]
fn a_wrong_secret_key_is_refused_by_the_signature_check() {
    // The fake checks the signature: a server holding another secret key gets no token.
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, "another-secret", REGION, PASSWORD);
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    assert_eq!(pull(&server, &up, "v1").status, 502);
    assert_eq!(ecr.calls(), 0);
    assert!(ecr.rejections().iter().any(|r| r.contains("signature does not match")), "{:?}", ecr.rejections());
    assert_no_secret(&server.log(), &ecr);
}

/// ECR rotates its password and the upstream takes only the new one from now on.
fn rotate(up: &FakeUpstream, ecr: &FakeEcr, password: &str, bearer: bool) {
    ecr.set_password(password);
    let user_pass = Some(("AWS".to_string(), password.to_string()));
    up.set_auth(if bearer {
        Auth::Bearer { token_ttl_secs: 300, user_pass }
    } else {
        Auth::Basic { user: "AWS".into(), pass: password.into() }
    });
}

#[test]
fn a_token_the_registry_refuses_is_renewed_at_once_but_not_again_within_30_s() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    assert_eq!(pull(&server, &up, "v1").status, 200, "{}", server.log());
    assert_eq!(ecr.calls(), 1);

    // Long before its expiry, the registry stops taking the token: it is renewed and the pull retried.
    rotate(&up, &ecr, "rotated-once-5c1e", false);
    let r = pull(&server, &up, "v2");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.log());
    assert_eq!(ecr.calls(), 2, "one renewal for the refused token");
    let presented: Vec<_> = up
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/manifests/v2"))
        .map(|q| q.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(presented.len(), 2, "the refused request and one retry: {presented:?}");
    assert_eq!(presented[1], Some(format!("Basic {}", ecr.token())), "the retry carries the new token");
    assert!(server.log().contains("renewing it"), "{}", server.log());

    // Refused again within 30 s of that renewal: ECR is not asked again, the refusal stands.
    rotate(&up, &ecr, "rotated-twice-9d0a", false);
    let r = pull(&server, &up, "v3");
    assert_eq!(r.status, 404, "an upstream denial, as without ECR: {}", r.text());
    assert_eq!(ecr.calls(), 2, "a forced renewal at most once per 30 s");
    assert!(server.log().contains("renewed too recently"), "{}", server.log());
    assert_no_secret(&server.log(), &ecr);
}

#[test]
fn a_token_the_token_endpoint_refuses_is_renewed_at_once() {
    let up = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: Some(("AWS".into(), PASSWORD.into())) },
        ..Options::default()
    });
    for tag in ["v1", "v2"] {
        up.add_image("team/app", tag, &[format!("layer {tag}").into_bytes()]);
    }
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    assert_eq!(pull(&server, &up, "v1").status, 200, "{}", server.log());
    assert_eq!(ecr.calls(), 1);

    // The bearer token runs out and the token endpoint no longer takes the old ECR token.
    rotate(&up, &ecr, "rotated-realm-77b2", true);
    up.expire_tokens();
    let r = pull(&server, &up, "v2");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), server.log());
    assert_eq!(ecr.calls(), 2, "the refused ECR token was renewed");
    assert_no_secret(&server.log(), &ecr);
}

#[test]
fn pulls_refused_together_share_one_renewal() {
    let up = ecr_upstream();
    let tags = ["c1", "c2", "c3", "c4", "c5", "c6"];
    for tag in tags {
        up.add_image("team/app", tag, &[format!("layer {tag}").into_bytes()]);
    }
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let (server, _aws) = server(&up, &ecr, &format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}"));
    assert_eq!(pull(&server, &up, "v1").status, 200, "{}", server.log());
    rotate(&up, &ecr, "rotated-together-31f4", false);
    let urls: Vec<String> =
        tags.iter().map(|tag| server.url(&format!("/v2/{}/team/app/manifests/{tag}", up.host()))).collect();
    let statuses = common::concurrently(tags.len(), move |i| common::http_get(&urls[i], &[]).status);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}\n{}", server.log());
    assert_eq!(ecr.calls(), 2, "one renewal for every pull refused with the old token");
}

/// The server for `up` with `token` options and this environment only: no AWS keys in it, so
/// the keys must come from the profile `AWS_CONFIG_FILE` names.
fn server_with_profile(up: &FakeUpstream, token: &str, env: &[(&str, &str)]) -> Server {
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\n    auth:\n      token: {token}\n",
        up.host()
    );
    let mut all = vec![("AWS_EC2_METADATA_DISABLED", "true"), ("RUST_LOG", "debug")];
    all.extend_from_slice(env);
    Server::start_with_env(&config, &[], &all)
}

#[test]
fn a_profiles_credential_process_gives_the_keys() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let aws = tempfile::tempdir().unwrap();
    let runs = aws.path().join("runs");
    let script = aws.path().join("creds.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> '{}'\nprintf '{{\"Version\": 1, \"AccessKeyId\": \"%s\", \"SecretAccessKey\": \"%s\"}}' '{ACCESS_KEY}' '{SECRET_KEY}'\n",
            runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = aws.path().join("config");
    std::fs::write(&config, format!("[profile builder]\ncredential_process = {}\n", script.display())).unwrap();
    let none = aws.path().join("none");
    let token = format!("{{provider: ecr, providerOpts: \"region={REGION},profile=builder\"}}");
    let server = server_with_profile(
        &up,
        &token,
        &[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", none.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_ECR", &ecr.url()),
            ("HOME", aws.path().to_str().unwrap()),
        ],
    );
    let r = pull(&server, &up, "v1");
    assert_eq!(r.status, 200, "{}\n{:?}\n{}", r.text(), ecr.rejections(), server.log());
    assert_eq!(ecr.calls(), 1, "signed with the process's keys: {:?}", ecr.rejections());
    assert!(std::fs::read_to_string(&runs).is_ok_and(|r| r.lines().count() >= 1), "the process ran");
    assert_no_secret(&server.log(), &ecr);
}

#[test]
fn an_sso_profile_gets_role_credentials_from_the_portal_with_the_cached_sign_in() {
    let up = ecr_upstream();
    let ecr = FakeEcr::start(ACCESS_KEY, SECRET_KEY, REGION, PASSWORD);
    let (bearer, account, role) = ("sso-bearer-7f3a", "123456789012", "RegistryPuller");
    ecr.serve_sso(bearer, account, role);
    let home = tempfile::tempdir().unwrap();
    let start_url = "https://example-org.awsapps.com/start";
    let config = home.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile org]\nsso_start_url = {start_url}\nsso_region = {REGION}\nsso_account_id = {account}\nsso_role_name = {role}\nregion = {REGION}\n"
        ),
    )
    .unwrap();
    // What `aws sso login` leaves: the access token cached under the sha1 of the start URL.
    let cache = home.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let sha1 = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{start_url}' | sha1sum | cut -d' ' -f1")])
        .output()
        .unwrap();
    let name = String::from_utf8(sha1.stdout).unwrap().trim().to_string();
    assert_eq!(name.len(), 40, "sha1sum: {name:?}");
    std::fs::write(
        cache.join(format!("{name}.json")),
        format!(
            r#"{{"startUrl": "{start_url}", "region": "{REGION}", "accessToken": "{bearer}", "expiresAt": "2099-01-01T00:00:00Z"}}"#
        ),
    )
    .unwrap();
    let none = home.path().join("none");
    let token = format!("{{provider: ecr, providerOpts: \"region={REGION}\"}}");
    let server = server_with_profile(
        &up,
        &token,
        &[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", none.to_str().unwrap()),
            ("AWS_PROFILE", "org"),
            ("AWS_ENDPOINT_URL_ECR", &ecr.url()),
            ("AWS_ENDPOINT_URL_SSO", &ecr.url()),
            ("HOME", home.path().to_str().unwrap()),
        ],
    );
    let r = pull(&server, &up, "v1");
    assert_eq!(r.status, 200, "{}\n{:?}\n{}", r.text(), ecr.rejections(), server.log());
    assert_eq!((ecr.sso_calls(), ecr.calls()), (1, 1), "rejected: {:?}", ecr.rejections());
    assert!(!server.log().contains(bearer), "the SSO token is not logged");
    assert_no_secret(&server.log(), &ecr);
}
