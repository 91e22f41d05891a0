//! The command line as a user meets it: help, version, and every kind of bad
//! input failing with a message that names the problem.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ociregistry")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_documents_every_flag() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in ["--image-path", "--config-file", "--log-level", "--log-file", "serve", "version", "HTTP_PROXY"] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let o = run(&["serve", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--host",
        "--port",
        "--default-ns",
        "--air-gapped",
        "--always-pull-latest",
        "--pull-timeout",
        "--header-timeout",
        "--threads",
        "--io-driver",
        "--preload-images",
        "--os",
        "--arch",
        "--hello-world",
        "SIGHUP",
    ] {
        assert!(out.contains(flag), "serve --help lacks {flag}:\n{out}");
    }
    let o = run(&["load", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--image-file",
        "--os",
        "--arch",
        "--all-platforms",
        "--jobs",
        "--pull-timeout",
        "--resolve-ref",
        "Exit status",
    ] {
        assert!(out.contains(flag), "load --help lacks {flag}:\n{out}");
    }
}

#[test]
fn bad_platforms_are_named() {
    let o = run(&["--image-path", "/nonexistent/images", "load", "--image-file", "x", "--arch", "AMD64"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("\"AMD64\""), "{}", stderr(&o));
    let o = run(&["--image-path", "/nonexistent/images", "serve", "--os", "Linux"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("os/arch") && stderr(&o).contains("\"Linux\""), "{}", stderr(&o));
}

#[test]
fn version_prints_the_version_as_go_does() {
    let o = run(&["version"]);
    assert!(o.status.success());
    // Go: `ociregistry version: <ver> build date: <date>` on standard error.
    let err = stderr(&o);
    let line = err.trim();
    let prefix = format!("ociregistry version: {} build date: ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix) && line.len() > prefix.len(), "{line:?}");
    assert!(o.stdout.is_empty());
    let o = run(&["--version"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("ociregistry {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn no_subcommand_prints_the_help_and_succeeds_as_go_does() {
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for word in ["serve", "load", "list", "prune", "version", "--config-file"] {
        assert!(out.contains(word), "the help lacks {word}:\n{out}");
    }
    let o = run(&["--log-level", "INFO"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn unknown_flags_and_bad_values_are_named() {
    let o = run(&["serve", "--prot", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--prot"), "{}", stderr(&o));
    let o = run(&["serve", "--io-driver", "kqueue"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("kqueue"), "{}", stderr(&o));
    let o = run(&["--log-level", "loud", "serve"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("loud"), "{}", stderr(&o));
    let o = run(&["serve", "--port", "70000"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("70000"), "{}", stderr(&o));
}

#[test]
fn config_errors_name_the_key_and_the_server_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("registries:\n  - name: quay.io\n    shceme: http\n", "shceme"),
        ("registries:\n  - name: quay.io\n    scheme: ftp\n", "registries[0] (quay.io).scheme"),
        ("registries:\n  - name: quay.io\n    tls: {ca: /no/such/ca.pem}\n", "tls.ca"),
        (
            "registries:\n  - name: quay.io\n    auth: {user: u, passwordFromEnv: OCIREG_UNSET_VAR}\n",
            "OCIREG_UNSET_VAR",
        ),
        ("pullTimeout: 0\n", "pullTimeout"),
        ("port: [1]\n", "port"),
        (
            "registries:\n  - name: 1.dkr.ecr.us-east-1.amazonaws.com\n    auth: {token: {provider: ecr, providerOpts: \"zone=a\"}}\n",
            "auth.token.providerOpts: \"zone=a\"",
        ),
        ("registries:\n  - name: quay.io\n    auth: {user: u, passwordFile: /no/such/secret}\n", "passwordFile"),
    ];
    for (yaml, needle) in cases {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let images = dir.path().join("images");
        let o = run(&[
            "--image-path",
            images.to_str().unwrap(),
            "--config-file",
            path.to_str().unwrap(),
            "serve",
            "--port",
            "0",
        ]);
        assert_eq!(o.status.code(), Some(1), "{yaml}");
        assert!(stderr(&o).contains(needle), "{yaml}: {}", stderr(&o));
    }
    let o = run(&["--config-file", "/no/such/file.yaml", "serve"]);
    assert!(stderr(&o).contains("/no/such/file.yaml"), "{}", stderr(&o));
    assert_eq!(stderr(&o).matches("No such file or directory").count(), 1, "the reason once: {}", stderr(&o));
}

#[test]
fn an_unusable_image_path_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let o = run(&["--image-path", file.to_str().unwrap(), "serve", "--port", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not-a-dir"), "{}", stderr(&o));
}

#[test]
fn log_file_receives_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ociregistry.log");
    let images = dir.path().join("images");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .args(["--image-path", images.to_str().unwrap(), "--log-file", log.to_str().unwrap()])
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut text = String::new();
    while std::time::Instant::now() < deadline && !text.contains(" listening ") {
        std::thread::sleep(std::time::Duration::from_millis(20));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(" listening ") && text.contains("addr=127.0.0.1:"), "{text}");
    assert!(!text.contains('\u{1b}'), "no terminal colours in a log file");
}
