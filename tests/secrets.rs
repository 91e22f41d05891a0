//! Upstream credentials never leave the server except towards their upstream:
//! with Basic auth (the password given in the file, and through
//! `passwordFromEnv` and `passwordFile`), a Bearer-token upstream whose token endpoint wants a
//! password, static tokens (ours and Go's), and an ECR token (`provider: ecr`, from the fake ECR
//! token API with AWS keys and a session token in the environment), the real binary serves pulls that succeed and
//! pulls that fail (wrong password, upstream 500, upstream unreachable), and a SIGHUP reload, at
//! `--log-level debug` with `--metrics` on; no password, no base64 of
//! `user:password`, no AWS secret key or session token, and no token issued by the upstream or ECR appears in the server
//! log, in any response head or body, or on the metrics page.

mod common;

use common::fake_ecr::FakeEcr;
use common::fake_upstream::{basic_auth, Auth, FakeUpstream, Fault, Options};
use common::{free_port, http_get, HttpResponse, Server};

const PW_FILE: &str = "S3cret-in-the-file-7f3a";
const PW_ENV: &str = "S3cret-from-the-env-91bd";
const PW_TOKEN: &str = "S3cret-for-the-token-c04e";
const PW_WRONG: &str = "S3cret-but-wrong-5d21";
const PW_UNREACHABLE: &str = "S3cret-never-sent-e8aa";
const STATIC_TOKEN: &str = "S3cret-static-token-2b6f";
const ENV_VAR: &str = "OCIREG_SECRETS_TEST_PASSWORD";
const PW_MOUNTED: &str = "S3cret-in-a-mounted-file-44d0";
const GO_STATIC: &str = "S3cret-go-static-token-9a1c";
const PW_ECR: &str = "S3cret-ecr-password-6e02";
const AWS_SECRET: &str = "S3cret-aws-secret-access-key-13f8";
const AWS_SESSION: &str = "S3cret-aws-session-token-a7c5";

fn basic(user: &str, pass: &str) -> Auth {
    Auth::Basic { user: user.into(), pass: pass.into() }
}

/// Everything a client or scraper could see of one answer.
fn seen(r: &HttpResponse) -> String {
    let headers: String = r.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
    format!("{}\n{headers}\n{}\n", r.status, r.text())
}

#[test]
fn credentials_appear_in_no_log_line_answer_or_metric() {
    let basic_file = FakeUpstream::start_with(Options { auth: basic("alice", PW_FILE), ..Options::default() });
    let basic_env = FakeUpstream::start_with(Options { auth: basic("bob", PW_ENV), ..Options::default() });
    let bearer = FakeUpstream::start_with(Options {
        auth: Auth::Bearer { token_ttl_secs: 300, user_pass: Some(("carol".into(), PW_TOKEN.into())) },
        ..Options::default()
    });
    // The cache is configured with a different password than this upstream wants.
    let wrong = FakeUpstream::start_with(Options { auth: basic("dave", "the-right-one"), ..Options::default() });
    // A static token this upstream does not accept.
    let static_token = FakeUpstream::start_with(Options { auth: basic("frank", "x"), ..Options::default() });
    // A password from a mounted secret file, and Go's static token (refused by this upstream).
    let mounted = FakeUpstream::start_with(Options { auth: basic("gina", PW_MOUNTED), ..Options::default() });
    let go_static = FakeUpstream::start_with(Options { auth: basic("hank", "y"), ..Options::default() });
    // An ECR registry: Basic AWS:<password>, the password from the fake ECR token API.
    let ecr_registry = FakeUpstream::start_with(Options { auth: basic("AWS", PW_ECR), ..Options::default() });
    let ecr = FakeEcr::start("AKIASECRETSTEST00001", AWS_SECRET, "eu-fake-1", PW_ECR);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("password");
    std::fs::write(&secret_file, format!("{PW_MOUNTED}\n")).unwrap();
    let aws_none = secret_dir.path().join("no-aws-files");
    let unreachable = format!("127.0.0.1:{}", free_port());
    let ups = [&basic_file, &basic_env, &bearer, &wrong, &static_token, &mounted, &go_static, &ecr_registry];
    // Distinct layers for each upstream: a blob cached from one is served for any name.
    let images: Vec<_> =
        ups.iter().map(|up| up.add_image("team/app", "v1", &[format!("one {}", up.host()).into_bytes()])).collect();
    for up in ups {
        up.add_image("team/app", "v2", &[format!("two {}", up.host()).into_bytes()]);
    }

    let config = format!(
        "prefetch: false\nregistries:\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{user: alice, password: \"{PW_FILE}\"}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{user: bob, passwordFromEnv: {ENV_VAR}}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{user: carol, password: \"{PW_TOKEN}\"}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{user: dave, password: \"{PW_WRONG}\"}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{token: \"{STATIC_TOKEN}\"}}\n\
         - name: \"{unreachable}\"\n  scheme: http\n  auth: {{user: erin, password: \"{PW_UNREACHABLE}\"}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{user: gina, passwordFile: \"{}\"}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{token: {{static: \"{GO_STATIC}\"}}}}\n\
         - name: \"{}\"\n  scheme: http\n  auth: {{token: {{provider: ecr, providerOpts: region=eu-fake-1}}}}\n",
        basic_file.host(),
        basic_env.host(),
        bearer.host(),
        wrong.host(),
        static_token.host(),
        mounted.host(),
        secret_file.display(),
        go_static.host(),
        ecr_registry.host(),
    );
    let metrics_port = free_port().to_string();
    let env = [
        (ENV_VAR, PW_ENV),
        ("AWS_ACCESS_KEY_ID", "AKIASECRETSTEST00001"),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("AWS_SESSION_TOKEN", AWS_SESSION),
        ("AWS_ENDPOINT_URL_ECR", &ecr.url()),
        ("AWS_CONFIG_FILE", aws_none.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", aws_none.to_str().unwrap()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let server = Server::start_with_env(&config, &["--metrics", &metrics_port], &env);

    let mut answers = String::new();
    let mut get = |path: String, want: u16| {
        let r = server.get(&path, &[]);
        assert_eq!(r.status, want, "GET {path}: {}", r.text());
        answers += &seen(&r);
        let r = server.head(&path, &[]);
        answers += &seen(&r);
    };
    // Pulls that succeed, through each kind of credential that works.
    let working = [&basic_file, &basic_env, &bearer].into_iter().zip(&images);
    for (up, image) in working.chain([(&mounted, &images[5]), (&ecr_registry, &images[7])]) {
        let host = up.host();
        get(format!("/v2/{host}/team/app/manifests/v1"), 200);
        get(format!("/v2/{host}/team/app/blobs/{}", image.layer_digests[0]), 200);
        get(format!("/v2/{host}/team/app/tags/list?n=1"), 200);
        get(format!("/v2/{host}/team/app/manifests/nope"), 404);
        get(format!("/v2/{host}/other/manifests/v1"), 404);
    }
    // Pulls that fail upstream after authenticating: a 500 on a manifest and on a blob.
    for up in [&basic_file, &basic_env, &bearer] {
        let host = up.host();
        // (Not v2, fetched below: a 500 is remembered for a while per object.)
        up.set_fault("/manifests/broken", Fault::status(500), None);
        get(format!("/v2/{host}/team/app/manifests/broken"), 502);
        up.clear_faults();
        up.set_fault("/blobs/", Fault::status(500), None);
        let layer = common::fake_upstream::sha256_digest(format!("two {host}").as_bytes());
        get(format!("/v2/{host}/team/app/blobs/{layer}"), 502);
        up.clear_faults();
    }
    // An expired token is replaced by a new one: the second token must not leak either.
    bearer.expire_tokens();
    get(format!("/v2/{}/team/app/manifests/v2", bearer.host()), 200);
    // Credentials the upstream refuses: not found, as the distribution spec has it.
    get(format!("/v2/{}/team/app/manifests/v1", wrong.host()), 404);
    get(format!("/v2/{}/team/app/blobs/{}", wrong.host(), images[3].layer_digests[0]), 404);
    get(format!("/v2/{}/team/app/manifests/v1", static_token.host()), 404);
    get(format!("/v2/{}/team/app/manifests/v1", go_static.host()), 404);
    // A reload (SIGHUP) logs what it did, and no credential.
    server.signal(libc::SIGHUP);
    assert!(
        common::wait_until(std::time::Duration::from_secs(10), || server.log().contains("SIGHUP: reloaded")),
        "{}",
        server.log()
    );
    // An upstream nobody answers at.
    get(format!("/v2/{unreachable}/team/app/manifests/v1"), 502);
    get(format!("/v2/{unreachable}/team/app/tags/list"), 502);

    let metrics = http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]);
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("ociregistry_"), "{}", metrics.text());

    // The credentials were really used, so their absence below means something.
    let sent = |up: &FakeUpstream, value: &str| up.requests().iter().any(|r| r.header("authorization") == Some(value));
    assert!(sent(&basic_file, &basic_auth("alice", PW_FILE)), "the file password was sent upstream");
    assert!(sent(&basic_env, &basic_auth("bob", PW_ENV)), "the env password was sent upstream");
    assert!(sent(&bearer, &basic_auth("carol", PW_TOKEN)), "the token password was sent to the token endpoint");
    assert!(sent(&wrong, &basic_auth("dave", PW_WRONG)), "the wrong password was tried");
    assert!(sent(&static_token, &format!("Bearer {STATIC_TOKEN}")), "the static token was tried");
    assert!(sent(&mounted, &basic_auth("gina", PW_MOUNTED)), "the mounted file's password was sent upstream");
    assert!(sent(&go_static, &format!("Basic {GO_STATIC}")), "Go's static token was tried");
    assert!(sent(&ecr_registry, &format!("Basic {}", ecr.token())), "the ECR token was sent upstream");
    assert_eq!(ecr.calls(), 1, "rejected by the fake ECR: {:?}", ecr.rejections());
    let tokens = bearer.issued_tokens();
    assert!(tokens.len() >= 2, "a token, and a fresh one after expiry: {tokens:?}");
    for token in &tokens {
        assert!(sent(&bearer, &format!("Bearer {token}")), "issued token {token} was used");
    }

    let mut secrets: Vec<(String, &str)> = Vec::new();
    for (user, pass) in [
        ("alice", PW_FILE),
        ("bob", PW_ENV),
        ("carol", PW_TOKEN),
        ("dave", PW_WRONG),
        ("erin", PW_UNREACHABLE),
        ("gina", PW_MOUNTED),
        ("AWS", PW_ECR),
    ] {
        secrets.push((pass.to_string(), "a password"));
        let b64 = basic_auth(user, pass).strip_prefix("Basic ").unwrap().to_string();
        secrets.push((b64, "a base64 user:password"));
    }
    secrets.push((STATIC_TOKEN.to_string(), "the static token"));
    secrets.push((GO_STATIC.to_string(), "Go's static token"));
    secrets.push((AWS_SECRET.to_string(), "the AWS secret access key"));
    secrets.push((AWS_SESSION.to_string(), "the AWS session token"));
    secrets.extend(tokens.into_iter().map(|t| (t, "an issued bearer token")));

    let log = server.log();
    assert!(log.contains("manifest cached") && log.contains("upstream"), "debug logging is on:\n{log}");
    for (what, text) in [("the server log", &log), ("an answer", &answers), ("the metrics page", &metrics.text())] {
        for (secret, kind) in &secrets {
            if let Some(at) = text.find(secret.as_str()) {
                let line = text[..at].rsplit('\n').next().unwrap_or("").to_string() + &text[at..];
                panic!("{kind} appears in {what}: {}", line.lines().next().unwrap_or(""));
            }
        }
    }
}
