//! `ociregistry prune` against the real binary and an image path filled by
//! the real server from the fake upstream: by pattern, date, last pull and
//! size; a layer shared by two images survives its first owner's pruning;
//! pinned images (pins file and `pinned:` config) stay; while a server owns
//! the path the command hands the prune to it (pulls go on); a pruned image
//! pulls again; and `pruneConfig` prunes inside a server while pulls go on.
//! `maxSize` evicts the least recently pulled images, does not evict at every
//! commit when pinned content fills it (one warning), and warns when
//! air-gapped; a stale `.admin` is ignored with a note, a lock holder whose
//! admin API does not answer is refused by pid. Against the real upstream
//! (`docker-registry`): prunes by pattern and by date handed to a running
//! server while two threads pull, then containerd pulls the pinned image and
//! the shared-layer survivor from an air-gapped restart, and not the pruned one.
//! Background `pruneConfig` of type `accessed` (with `count`) and `created`
//! (with Go's `dryrun`, which only logs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::containerd::{write_hosts_dir, Containerd, PullOpts};
use common::distribution::{Distribution, Mode};
use common::fake_upstream::{FakeImage, FakeUpstream};
use common::images::{host_arch, write_image, ImageInfo, LayerSpec};
use common::{plain_registry, random_bytes, wait_until, Server};

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(images: &Path, config: Option<&Path>, command: &str, args: &[&str]) -> Ran {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ociregistry"));
    c.args(["--image-path", images.to_str().unwrap()]);
    if let Some(config) = config {
        c.arg("--config-file").arg(config);
    }
    let o = c.arg(command).args(args).env_remove("RUST_LOG").output().expect("run ociregistry");
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn prune(images: &Path, config: Option<&Path>, args: &[&str]) -> Ran {
    let r = run(images, config, "prune", args);
    assert!(r.code.is_some(), "prune was killed: {}", r.stderr);
    r
}

fn blob_file(images: &Path, digest: &str) -> PathBuf {
    images.join("blobs/sha256").join(&digest[7..9]).join(&digest[7..])
}

/// Pulls an image whole (manifest by tag, config, layers), checking every byte.
fn pull(server: &Server, up: &FakeUpstream, repo: &str, img: &FakeImage, layers: &[Vec<u8>]) -> Result<(), String> {
    let host = up.host();
    let r = server.get(&format!("/v2/{host}/{repo}/manifests/v1"), &[]);
    if (r.status, &r.body) != (200, &img.manifest_bytes) {
        return Err(format!("{repo} manifest: {} {}", r.status, r.text()));
    }
    let r = server.get(&format!("/v2/{host}/{repo}/blobs/{}", img.config_digest), &[]);
    if r.status != 200 {
        return Err(format!("{repo} config: {}", r.status));
    }
    for (digest, layer) in img.layer_digests.iter().zip(layers) {
        let r = server.get(&format!("/v2/{host}/{repo}/blobs/{digest}"), &[]);
        if r.status != 200 || r.body != *layer {
            return Err(format!("{repo} layer {digest}: {}", r.status));
        }
    }
    Ok(())
}

/// Waits (bounded) until every object of `img` is journaled: commits are answered before.
fn wait_recorded(images: &Path, img: &FakeImage) {
    let journal = images.join("index/records.jsonl");
    let all: Vec<&String> = img.layer_digests.iter().chain([&img.config_digest, &img.manifest_digest]).collect();
    let done = wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        all.iter().all(|d| text.contains(&format!("\"digest\":\"{d}\"")))
    });
    assert!(done, "not journaled within 10 s");
}

struct Setup {
    up: FakeUpstream,
    _dir: tempfile::TempDir,
    images: PathBuf,
    config_file: PathBuf,
    config: String,
}

fn setup(extra_config: &str) -> Setup {
    let up = FakeUpstream::start();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let config = format!("{}{extra_config}", plain_registry(&up.host()));
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, &config).unwrap();
    Setup { up, _dir: dir, images, config_file, config }
}

#[test]
fn prune_by_pattern_keeps_shared_layers_and_pinned_images_and_a_pruned_image_pulls_again() {
    let s = setup("pinned: ['team/p:']\n");
    let (up, images, host) = (&s.up, &s.images, s.up.host());
    let shared = random_bytes(1, 40_000);
    let la = vec![shared.clone(), random_bytes(2, 30_000)];
    let lb = vec![shared.clone(), random_bytes(3, 20_000)];
    let lp = vec![random_bytes(4, 10_000)];
    let lq = vec![random_bytes(5, 10_000)];
    let a = up.add_image("team/a", "v1", &la);
    let b = up.add_image("team/b", "v1", &lb);
    let p = up.add_image("team/p", "v1", &lp);
    let q = up.add_image("team/q", "v1", &lq);
    let mut server = Server::start_in(images, &s.config, &[]);
    for (repo, img, layers) in [("team/a", &a, &la), ("team/b", &b, &lb), ("team/p", &p, &lp), ("team/q", &q, &lq)] {
        pull(&server, up, repo, img, layers).unwrap();
        wait_recorded(images, img);
    }
    std::fs::write(images.join("index/pins"), format!("{host}/team/q:v1\n")).unwrap();
    up.set_tag("team/b", "v2", &b.manifest_digest);
    let r = server.get(&format!("/v2/{host}/team/b/manifests/v2"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());

    let dry = prune(images, Some(&s.config_file), &["--pattern", "team/a", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "a dry run through the server: {}", dry.stderr);
    assert!(
        dry.stdout.contains(&format!("would remove image {host}/team/a:v1 (image {})", a.manifest_digest)),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains(&format!("would remove blob {} (30000 bytes)", a.layer_digests[1])), "{}", dry.stdout);
    assert!(!dry.stdout.contains(&a.layer_digests[0]), "b still uses the shared layer: {}", dry.stdout);
    assert!(blob_file(images, &a.manifest_digest).exists(), "a dry run removes nothing");
    assert!(server.stop().success());

    let done = prune(images, Some(&s.config_file), &["--pattern", "team/a"]);
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    assert!(
        done.stdout.lines().last().unwrap().starts_with("pruned 1 images, 1 manifests, 2 blobs; freed "),
        "{}",
        done.stdout
    );
    for gone in [&a.manifest_digest, &a.config_digest, &a.layer_digests[1]] {
        assert!(!blob_file(images, gone).exists(), "{gone} is still there");
    }
    assert!(!images.join(format!("tags/{host}/team/a/_tags/v1")).exists(), "its tag went with it");
    assert!(blob_file(images, &a.layer_digests[0]).exists(), "the shared layer stays with b");

    let pinned = prune(images, Some(&s.config_file), &["--pattern", "team/(p|q)"]);
    assert_eq!(pinned.code, Some(0), "{}", pinned.stderr);
    assert!(
        pinned.stdout.contains("pruned 0 images") && pinned.stdout.contains("2 pinned images kept"),
        "{}",
        pinned.stdout
    );
    assert!(blob_file(images, &p.layer_digests[0]).exists() && blob_file(images, &q.layer_digests[0]).exists());

    // A second tag of b's manifest: pruning it takes only the tag.
    let tag = prune(images, Some(&s.config_file), &["--pattern", "team/b:v2"]);
    assert!(
        tag.stdout.contains("pruned 1 images, 0 manifests, 0 blobs; freed 0 bytes"),
        "{}{}",
        tag.stdout,
        tag.stderr
    );
    assert!(!images.join(format!("tags/{host}/team/b/_tags/v2")).exists(), "the pruned tag is gone");
    assert!(
        images.join(format!("tags/{host}/team/b/_tags/v1")).exists() && blob_file(images, &b.manifest_digest).exists()
    );

    let server = Server::start_in(images, &s.config, &[]);
    up.clear_log();
    pull(&server, up, "team/b", &b, &lb).unwrap();
    assert!(up.requests().is_empty(), "b is whole in the cache: {:?}", up.requests().len());
    pull(&server, up, "team/a", &a, &la).unwrap();
    assert!(up.count("GET", "team/a/manifests/v1") >= 1, "a was fetched again");
    assert_eq!(up.count("GET", &a.layer_digests[0]), 0, "the shared layer was still cached");
}

#[test]
fn prune_by_date_by_last_pull_and_to_fit_a_size() {
    let s = setup("");
    let (up, images) = (&s.up, &s.images);
    let layers: Vec<Vec<Vec<u8>>> = (0..3).map(|i| vec![random_bytes(10 + i, 50_000 + 1000 * i as usize)]).collect();
    let imgs: Vec<FakeImage> =
        ["team/a", "team/b", "team/c"].iter().zip(&layers).map(|(r, l)| up.add_image(r, "v1", l)).collect();
    let mut server = Server::start_in(images, &s.config, &[]);
    for ((repo, img), l) in ["team/a", "team/b", "team/c"].iter().zip(&imgs).zip(&layers) {
        pull(&server, up, repo, img, l).unwrap();
        wait_recorded(images, img);
    }
    assert!(server.stop().success());
    let pulled = std::fs::read_to_string(images.join("index/pulled")).unwrap();
    assert_eq!(pulled.lines().count(), 3, "written at shutdown: {pulled}");

    let none = prune(images, None, &["--date", "2000-01-01T00:00:00"]);
    assert!(none.stdout.contains("pruned 0 images"), "{}{}", none.stdout, none.stderr);
    let bad = prune(images, None, &["--date", "yesterday"]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--date"), "{}", bad.stderr);
    assert_eq!(prune(images, None, &[]).code, Some(2), "no criteria: refused");

    // a was pulled 10 days ago, b 2 days ago, c now.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let times = [now - 10 * 86_400, now - 2 * 86_400, now];
    let text: String = imgs.iter().zip(times).map(|(i, t)| format!("{} {t}\n", i.manifest_digest)).collect();
    std::fs::write(images.join("index/pulled"), format!("{text}not a line\n")).unwrap();
    let week = prune(images, None, &["--accessed-before", "7d", "--dry-run"]);
    assert!(
        week.stdout.contains("/team/a:v1") && !week.stdout.contains("/team/b:v1"),
        "{}{}",
        week.stdout,
        week.stderr
    );

    // Everything cached is the three images; fitting b and c leaves exactly them.
    let sizes: Vec<u64> = (0..3)
        .map(|i| (imgs[i].manifest_bytes.len() + layers[i][0].len()) as u64 + config_size(images, &imgs[i]))
        .collect();
    let size = |i: usize| sizes[i];
    let fit = (size(1) + size(2)).to_string();
    let done = prune(images, None, &["--max-size", &fit]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(done.stdout.contains(&format!("; freed {} bytes", size(0))), "{}", done.stdout);
    assert!(!blob_file(images, &imgs[0].layer_digests[0]).exists(), "the least recently pulled went");
    assert!(
        blob_file(images, &imgs[1].layer_digests[0]).exists() && blob_file(images, &imgs[2].layer_digests[0]).exists()
    );

    let later = format_local(now + 3600);
    let all = prune(images, None, &["--date", &later]);
    assert!(all.stdout.contains("pruned 2 images"), "{}{}", all.stdout, all.stderr);
    let left: Vec<_> = walk(&images.join("blobs"));
    assert!(left.is_empty(), "everything created before an hour from now is gone: {left:?}");
    assert_eq!(run(images, None, "list", &[]).stdout, "", "nothing listed");
}

#[test]
fn prune_config_prunes_inside_the_server_while_pulls_go_on() {
    let s = setup("pruneConfig:\n  enabled: true\n  type: pattern\n  expr: team/a\n  frequency: 1s\n");
    let up = Arc::new(s.up);
    let la = vec![random_bytes(20, 200_000), random_bytes(21, 1000)];
    let lb = vec![la[0].clone(), random_bytes(22, 150_000)];
    let a = up.add_image("team/a", "v1", &la);
    let b = up.add_image("team/b", "v1", &lb);
    let server = Arc::new(Server::start_in(&s.images, &s.config, &[]));
    // b is cached before the first run (1 s in), so the layer it shares with a is always in use.
    pull(&server, &up, "team/b", &b, &lb).unwrap();
    wait_recorded(&s.images, &b);
    let (stop, pulls, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (server, up, stop, pulls, failures) =
                (server.clone(), up.clone(), stop.clone(), pulls.clone(), failures.clone());
            let (img, layers, repo) =
                if i % 2 == 0 { (a.clone(), la.clone(), "team/a") } else { (b.clone(), lb.clone(), "team/b") };
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match pull(&server, &up, repo, &img, &layers) {
                        Ok(()) => pulls.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("pull failed during prune: {e}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let pruned_twice = wait_until(Duration::from_secs(30), || server.log().matches("removed image").count() >= 2);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(pruned_twice, "the background prune did not run twice:\n{}", server.log());
    assert_eq!(failures.load(Ordering::Relaxed), 0, "every pull succeeded ({} did)", pulls.load(Ordering::Relaxed));
    assert!(up.count("GET", "team/a/manifests/v1") >= 2, "a was pruned and pulled again");
    assert!(!server.log().contains(&format!("removed blob {}", a.layer_digests[0])), "never the layer b shares");
}

fn config_size(images: &Path, img: &FakeImage) -> u64 {
    std::fs::metadata(blob_file(images, &img.config_digest)).unwrap().len()
}

/// Unix seconds as the local `YYYY-MM-DDTHH:MM:SS` prune's --date reads.
fn format_local(secs: u64) -> String {
    let o = Command::new("date").args(["-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S"]).output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn prune_hands_its_work_to_a_running_server_while_pulls_go_on() {
    let s = setup("");
    let up = Arc::new(s.up);
    let host = up.host();
    let la = vec![random_bytes(30, 50_000)];
    let lb = vec![random_bytes(31, 60_000)];
    let lc = vec![random_bytes(32, 70_000)];
    let a = up.add_image("team/a", "v1", &la);
    let b = up.add_image("team/b", "v1", &lb);
    let c = up.add_image("team/c", "v1", &lc);
    let server = Arc::new(Server::start_in(&s.images, &s.config, &[]));
    for (repo, img, layers) in [("team/a", &a, &la), ("team/b", &b, &lb), ("team/c", &c, &lc)] {
        pull(&server, &up, repo, img, layers).unwrap();
        wait_recorded(&s.images, img);
    }
    let (stop, pulls, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let puller = {
        let (server, up, stop, pulls, failures) =
            (server.clone(), up.clone(), stop.clone(), pulls.clone(), failures.clone());
        let (b, c, lb, lc) = (b.clone(), c.clone(), lb.clone(), lc.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (repo, img, layers) in [("team/b", &b, &lb), ("team/c", &c, &lc)] {
                    match pull(&server, &up, repo, img, layers) {
                        Ok(()) => pulls.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("pull failed during prune: {e}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        })
    };
    let dry = prune(&s.images, Some(&s.config_file), &["--pattern", "team/a", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}{}", dry.stdout, dry.stderr);
    assert!(dry.stdout.lines().last().unwrap().starts_with("dry run: 1 images"), "{}", dry.stdout);
    let done = prune(&s.images, Some(&s.config_file), &["--pattern", "team/a"]);
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    assert!(done.stdout.contains(&format!("removed image {host}/team/a:v1")), "{}", done.stdout);
    assert!(done.stdout.lines().last().unwrap().starts_with("pruned 1 images, 1 manifests, 2 blobs; freed "));
    assert!(!blob_file(&s.images, &a.manifest_digest).exists(), "the server removed it");
    assert!(!blob_file(&s.images, &a.layer_digests[0]).exists());
    let logged = wait_until(Duration::from_secs(10), || server.log().contains("removed image"));
    assert!(logged, "the server logged the prune");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    puller.join().unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "every pull succeeded ({} did)", pulls.load(Ordering::Relaxed));
    assert!(pulls.load(Ordering::Relaxed) > 0);
    pull(&server, &up, "team/a", &a, &la).unwrap();
    assert!(up.count("GET", "team/a/manifests/v1") >= 2, "a was pruned and fetched again");
    assert_eq!(prune(&s.images, Some(&s.config_file), &[]).code, Some(2), "no criteria: refused before asking");
}

#[test]
fn max_size_evicts_the_least_recently_pulled_unpinned_images_in_the_background() {
    let s = setup("pinned: ['team/p:']\npruneConfig:\n  maxSize: 250000\n  lowWatermark: 220000\n");
    let (up, images, host) = (&s.up, &s.images, s.up.host());
    let layers: Vec<Vec<Vec<u8>>> = (0..4).map(|i| vec![random_bytes(40 + i, 100_000)]).collect();
    let names = ["team/p", "team/a", "team/b", "team/c"];
    let imgs: Vec<FakeImage> = names.iter().zip(&layers).map(|(n, l)| up.add_image(n, "v1", l)).collect();
    let server = Server::start_in(images, &s.config, &[]);
    let gone = |i: usize| !blob_file(images, &imgs[i].layer_digests[0]).exists();
    // Pull times are kept in seconds: each image is pulled in a later second than the one before.
    let next_second = || std::thread::sleep(Duration::from_millis(1100));
    for i in 0..3 {
        pull(&server, up, names[i], &imgs[i], &layers[i]).unwrap();
        wait_recorded(images, &imgs[i]);
        next_second();
    }
    let logged = |what: &str| server.log().contains(&format!("removed image {host}/{what}:v1"));
    assert!(
        wait_until(Duration::from_secs(10), || gone(1) && logged("team/a")),
        "a was not evicted:\n{}",
        server.log()
    );
    assert!(!gone(0) && !gone(2), "the pinned p and the newer b stay");
    pull(&server, up, names[3], &imgs[3], &layers[3]).unwrap();
    wait_recorded(images, &imgs[3]);
    assert!(wait_until(Duration::from_secs(10), || gone(2)), "b was not evicted:\n{}", server.log());
    assert!(!gone(0) && !gone(3), "the pinned p and the newest c stay");
    pull(&server, up, names[1], &imgs[1], &layers[1]).unwrap();
    assert!(up.count("GET", "team/a/manifests/v1") >= 2, "an evicted image is fetched again");
}

#[test]
fn when_pinned_images_fill_max_size_commits_do_not_each_start_an_eviction() {
    let s = setup("pinned: ['team/p:']\npruneConfig:\n  maxSize: 100000\n  lowWatermark: 90000\n");
    let (up, images) = (&s.up, &s.images);
    let pinned_layers = vec![random_bytes(50, 200_000)];
    let p = up.add_image("team/p", "v1", &pinned_layers);
    let server = Server::start_in(images, &s.config, &[]);
    pull(&server, up, "team/p", &p, &pinned_layers).unwrap();
    wait_recorded(images, &p);
    let stuck = "still over the low watermark after evicting";
    assert!(wait_until(Duration::from_secs(10), || server.log().contains(stuck)), "{}", server.log());
    // Small unpinned images, a few KB in all: less growth than the margin (the watermarks' distance,
    // 10000 bytes), within the first backoff (30 s), so no eviction runs for them.
    let small: Vec<(String, FakeImage, Vec<Vec<u8>>)> = (0..5)
        .map(|i| {
            let layers = vec![random_bytes(60 + i, 300)];
            let repo = format!("team/s{i}");
            let img = up.add_image(&repo, "v1", &layers);
            (repo, img, layers)
        })
        .collect();
    for (repo, img, layers) in &small {
        pull(&server, up, repo, img, layers).unwrap();
        wait_recorded(images, img);
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = server.log();
    assert_eq!(log.matches(stuck).count(), 1, "warned once:\n{log}");
    assert_eq!(log.matches("pruned 0 images").count(), 1, "one eviction, not one per commit:\n{log}");
    for (_, img, _) in &small {
        assert!(blob_file(images, &img.layer_digests[0]).exists(), "{} was evicted:\n{log}", img.manifest_digest);
    }
}

#[test]
fn a_stale_admin_file_is_ignored_with_a_note_and_a_deaf_server_is_refused_by_pid() {
    let s = setup("");
    let (up, images, host) = (&s.up, &s.images, s.up.host());
    let la = vec![random_bytes(70, 5_000)];
    let a = up.add_image("team/a", "v1", &la);
    let mut server = Server::start_in(images, &s.config, &[]);
    pull(&server, up, "team/a", &a, &la).unwrap();
    wait_recorded(images, &a);
    // A crash leaves .admin behind, naming a dead pid and a port nothing listens on.
    server.kill9();
    assert!(images.join(".admin").exists());
    let ran = prune(images, Some(&s.config_file), &["--pattern", "team/a"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("no longer holds the image path's lock"), "{}", ran.stderr);
    assert!(ran.stdout.contains(&format!("removed image {host}/team/a:v1")), "{}", ran.stdout);
    assert!(!blob_file(images, &a.manifest_digest).exists(), "pruned in place");

    // A live process holds the lock and its admin API does not answer: nothing to prune in place.
    let deaf = common::DeafServer::hold(images);
    let ran = prune(images, Some(&s.config_file), &["--pattern", "team/"]);
    assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
    let pid = format!("pid {}", std::process::id());
    assert!(ran.stderr.contains(&pid) && ran.stderr.contains("admin API does not answer"), "{}", ran.stderr);
    drop(deaf);
}

#[test]
fn air_gapped_size_eviction_removes_whole_unpinned_images_and_warns() {
    let s = setup("");
    let (up, images, host) = (&s.up, &s.images, s.up.host());
    let layers: Vec<Vec<Vec<u8>>> = (0..2).map(|i| vec![random_bytes(80 + i, 100_000)]).collect();
    let names = ["team/a", "team/b"];
    let imgs: Vec<FakeImage> = names.iter().zip(&layers).map(|(n, l)| up.add_image(n, "v1", l)).collect();
    let mut server = Server::start_in(images, &s.config, &[]);
    for i in 0..2 {
        pull(&server, up, names[i], &imgs[i], &layers[i]).unwrap();
        wait_recorded(images, &imgs[i]);
        std::thread::sleep(Duration::from_millis(1100)); // pull times are kept in seconds
    }
    server.stop();
    // Over maxSize at startup, air-gapped: the least recently pulled whole image goes, with a warning.
    let config = format!("{}pruneConfig:\n  maxSize: 150000\n  lowWatermark: 120000\n", s.config);
    let server = Server::start_in(images, &config, &["--air-gapped"]);
    let warned = "evicted images to fit maxSize in air-gapped mode: they cannot be fetched back";
    assert!(wait_until(Duration::from_secs(10), || server.log().contains(warned)), "{}", server.log());
    assert!(server.log().contains(&format!("removed image {host}/team/a:v1")), "{}", server.log());
    for digest in imgs[0].layer_digests.iter().chain([&imgs[0].config_digest, &imgs[0].manifest_digest]) {
        assert!(!blob_file(images, digest).exists(), "all of a goes: {digest}");
    }
    for digest in imgs[1].layer_digests.iter().chain([&imgs[1].config_digest, &imgs[1].manifest_digest]) {
        assert!(blob_file(images, digest).exists(), "all of b stays: {digest}");
    }
    let r = server.get(&format!("/v2/{host}/team/b/manifests/v1"), &[]);
    assert_eq!((r.status, &r.body), (200, &imgs[1].manifest_bytes), "b is still served air-gapped");
}

#[test]
fn prune_through_a_server_prints_every_line_once_in_order_even_past_the_jobs_line_cap() {
    use common::images::{host_arch, write_image, LayerSpec};
    let dir = tempfile::tempdir().unwrap();
    let (layout, images) = (dir.path().join("layout"), dir.path().join("images"));
    // 300 images of 4 lines each (image, manifest, config, layer): past the 1000 lines a job keeps.
    for i in 0..300 {
        let layer = [LayerSpec::text(&format!("etc/n-{i}"), &format!("n {i}\n"))];
        write_image(&layout, &format!("upstream.test/many/n{i:03}:v1"), ("linux", host_arch()), &layer);
    }
    let tar = dir.path().join("many.tar");
    assert!(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&layout).arg(".").status().unwrap().success());
    let loaded = run(&images, None, "load", &["--image-file", tar.to_str().unwrap()]);
    assert_eq!(loaded.code, Some(0), "{}{}", loaded.stdout, loaded.stderr);
    let server = Server::start_in(&images, "registries: []\n", &["--air-gapped"]);
    let ran = prune(&images, None, &["--pattern", "upstream.test/many/"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 1201, "{}", ran.stdout);
    assert!(lines[1200].starts_with("pruned 300 images, 300 manifests, 600 blobs"), "{}", lines[1200]);
    for (i, chunk) in lines[..1200].chunks(4).enumerate() {
        assert!(chunk[0].starts_with(&format!("removed image upstream.test/many/n{i:03}:v1 ")), "{chunk:?}");
        assert!(chunk[1].starts_with("removed manifest ") && chunk[2].starts_with("removed blob "), "{chunk:?}");
    }
    assert!(server.log().contains("pruned 300 images"), "the server ran it");
}

/// The name the real upstream is listed under in [`prune_through_a_server_leaves_what_containerd_pulls_air_gapped`].
const UPSTREAM: &str = "upstream.test";

/// Pulls an image pushed to the real upstream whole through the server (manifest by tag `v1`).
fn pull_pushed(server: &Server, repo: &str, image: &ImageInfo) -> Result<(), String> {
    let accept = [("Accept", image.media_type.as_str())];
    let r = server.get(&format!("/v2/{UPSTREAM}/{repo}/manifests/v1"), &accept);
    if (r.status, &r.body) != (200, &image.manifest_bytes) {
        return Err(format!("{repo} manifest: {} {}", r.status, r.text()));
    }
    for digest in std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d)) {
        let r = server.get(&format!("/v2/{UPSTREAM}/{repo}/blobs/{digest}"), &[]);
        if r.status != 200 {
            return Err(format!("{repo} blob {digest}: {}", r.status));
        }
    }
    Ok(())
}

/// Waits (bounded) until every object of a pushed image is journaled.
fn wait_journaled(images: &Path, image: &ImageInfo) {
    let journal = images.join("index/records.jsonl");
    let all: Vec<&String> =
        image.layers.iter().map(|(d, _)| d).chain([&image.config_digest, &image.manifest_digest]).collect();
    let done = wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        all.iter().all(|d| text.contains(&format!("\"digest\":\"{d}\"")))
    });
    assert!(done, "not journaled within 10 s");
}

#[test]
fn prune_through_a_server_leaves_what_containerd_pulls_air_gapped() {
    let mut up = Distribution::start(Mode::Plain);
    let layout = tempfile::tempdir().unwrap();
    let platform = ("linux", host_arch());
    let shared = LayerSpec::random(70, 120_000);
    let push = |name: &str, layers: &[LayerSpec]| {
        let image = write_image(layout.path(), name, platform, layers);
        up.push(layout.path(), name, &format!("prune/{name}:v1"), &[]);
        image
    };
    let a = push("a", &[shared.clone(), LayerSpec::text("etc/a", "a\n")]);
    let b = push("b", &[shared, LayerSpec::text("etc/b", "b\n")]);
    let p = push("p", &[LayerSpec::random(71, 60_000)]);
    let c = push("c", &[LayerSpec::random(72, 50_000)]);
    let d = push("d", &[LayerSpec::random(73, 50_000)]);
    assert_eq!(a.layers[0].0, b.layers[0].0, "a and b share their first layer");

    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    let config = format!("registries:\n  - name: {UPSTREAM}\n    endpoint: {}\npinned: ['prune/p:']\n", up.base_url);
    let config_file = work.path().join("config.yaml");
    std::fs::write(&config_file, &config).unwrap();
    let server = Arc::new(Server::start_in(&images, &config, &[]));
    // c and d are cached (created) before `cut`, a, b and p after it.
    for (repo, image) in [("prune/c", &c), ("prune/d", &d)] {
        pull_pushed(&server, repo, image).unwrap();
        wait_journaled(&images, image);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let cut = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    std::thread::sleep(Duration::from_millis(1100));
    for (repo, image) in [("prune/a", &a), ("prune/b", &b), ("prune/p", &p)] {
        pull_pushed(&server, repo, image).unwrap();
        wait_journaled(&images, image);
    }

    // Two threads pull c and d through the server while the prunes are handed to it.
    let (stop, pulls, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pullers: Vec<_> = [("prune/c", c.clone()), ("prune/d", d.clone())]
        .into_iter()
        .map(|(repo, image)| {
            let (server, stop, pulls, failures) = (server.clone(), stop.clone(), pulls.clone(), failures.clone());
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match pull_pushed(&server, repo, &image) {
                        Ok(()) => pulls.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("pull failed during prune: {e}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let by_pattern = prune(&images, Some(&config_file), &["--pattern", "prune/a:,prune/p:"]);
    assert_eq!(by_pattern.code, Some(0), "{}{}", by_pattern.stdout, by_pattern.stderr);
    assert!(by_pattern.stdout.contains(&format!("removed image {UPSTREAM}/prune/a:v1")), "{}", by_pattern.stdout);
    let summary = by_pattern.stdout.lines().last().unwrap();
    assert!(summary.starts_with("pruned 1 images, 1 manifests, 2 blobs"), "{}", by_pattern.stdout);
    assert!(
        !summary.contains("pulled again meanwhile"),
        "the plan itself left the shared layer alone: {}",
        by_pattern.stdout
    );
    assert!(!blob_file(&images, &a.manifest_digest).exists(), "the server removed a");
    assert!(blob_file(&images, &a.layers[0].0).exists(), "the layer b shares stays");
    assert!(blob_file(&images, &p.manifest_digest).exists(), "p is pinned");
    let by_date = prune(&images, Some(&config_file), &["--date", &format_local(cut)]);
    assert_eq!(by_date.code, Some(0), "{}{}", by_date.stdout, by_date.stderr);
    let removed = |name: &str| by_date.stdout.contains(&format!("removed image {UPSTREAM}/prune/{name}:v1"));
    assert!(removed("c") && removed("d"), "created before the cut: {}", by_date.stdout);
    assert!(!removed("b") && !removed("p"), "created after the cut: {}", by_date.stdout);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for puller in pullers {
        puller.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "every pull succeeded ({} did)", pulls.load(Ordering::Relaxed));
    assert!(pulls.load(Ordering::Relaxed) > 0);

    // The upstream gone, an air-gapped server serves containerd what the prunes left, and not a.
    let mut server = Arc::try_unwrap(server).ok().expect("the pullers are done");
    assert!(server.stop().success());
    up.stop();
    let mirror = Server::start_in(&images, &config, &["--air-gapped"]);
    let ctrd = Containerd::start();
    let hosts = write_hosts_dir(&work.path().join("hosts"), UPSTREAM, &format!("http://{}", mirror.addr));
    for (name, image) in [("p", &p), ("b", &b)] {
        let reference = format!("{UPSTREAM}/prune/{name}:v1");
        ctrd.pull(name, &reference, &hosts, &PullOpts::default()).unwrap_or_else(|e| {
            panic!("ctr pull {reference}: {e}\n--- containerd:\n{}\n--- ociregistry:\n{}", ctrd.log(), mirror.log())
        });
        let content = ctrd.list_content(name).unwrap();
        for digest in std::iter::once(&image.config_digest).chain(image.layers.iter().map(|(d, _)| d)) {
            assert!(content.contains(digest), "containerd lacks {digest} of {reference}: {content:?}");
        }
    }
    let gone = mirror.get(&format!("/v2/{UPSTREAM}/prune/a/manifests/v1"), &[("Accept", a.media_type.as_str())]);
    assert_eq!(gone.status, 404, "pruned, and air-gapped: {}", gone.text());
    assert!(ctrd.pull("a", &format!("{UPSTREAM}/prune/a:v1"), &hosts, &PullOpts::default()).is_err());
}

/// Pulls `img`'s manifest every 300 ms (so it stays recently pulled) until `stop`; bounded to 2 minutes.
fn keep_pulling(
    server: Arc<Server>,
    up: Arc<FakeUpstream>,
    repo: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..400 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let r = server.get(&format!("/v2/{}/{repo}/manifests/v1", up.host()), &[]);
            assert_eq!(r.status, 200, "{repo}: {}", r.text());
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// The image counts of the background runs' summary lines ("pruned N images, ...").
fn pruned_counts(log: &str) -> Vec<usize> {
    log.lines()
        .filter_map(|l| l.split("pruned ").nth(1))
        .filter_map(|rest| rest.split(" images").next()?.parse().ok())
        .collect()
}

#[test]
fn prune_config_accessed_removes_images_not_pulled_lately_at_most_count_a_run() {
    // The first run is 6 s after startup: a, b and e (pulled once at startup) are then over 3 s
    // unpulled, k (pulled every 300 ms) is not; with count 1 each run removes one of the three, and
    // the fourth none.
    let s = setup("pruneConfig:\n  enabled: true\n  type: accessed\n  duration: 3s\n  frequency: 6s\n  count: 1\n");
    let up = Arc::new(s.up);
    let host = up.host();
    let repos = ["team/a", "team/b", "team/e", "team/k"];
    let layers: Vec<Vec<Vec<u8>>> = (0..4).map(|i| vec![random_bytes(40 + i, 20_000)]).collect();
    let imgs: Vec<FakeImage> = repos.iter().zip(&layers).map(|(r, l)| up.add_image(r, "v1", l)).collect();
    let server = Arc::new(Server::start_in(&s.images, &s.config, &[]));
    for ((repo, img), l) in repos.iter().zip(&imgs).zip(&layers) {
        pull(&server, &up, repo, img, l).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let keeper = keep_pulling(server.clone(), up.clone(), "team/k", stop.clone());
    let removed = |log: &str, repo: &str| log.contains(&format!("removed image {host}/{repo}:v1"));
    // Until a fourth run has had k to consider with nothing else left.
    let all_three = wait_until(Duration::from_secs(50), || {
        let log = server.log();
        ["team/a", "team/b", "team/e"].iter().all(|r| removed(&log, r)) && pruned_counts(&log).len() >= 4
    });
    stop.store(true, Ordering::Relaxed);
    keeper.join().unwrap();
    let log = server.log();
    assert!(all_three, "the three unpulled images were not all removed:\n{log}");
    assert!(!removed(&log, "team/k"), "k was pulled all along:\n{log}");
    assert!(blob_file(&s.images, &imgs[3].layer_digests[0]).exists());
    let counts = pruned_counts(&log);
    assert!(counts.iter().filter(|&&n| n > 0).count() >= 3, "three runs removed one each: {counts:?}\n{log}");
    assert!(counts.iter().all(|&n| n <= 1), "count: 1 bounds every run: {counts:?}\n{log}");
}

#[test]
fn prune_config_created_removes_even_a_pulled_image_and_dryrun_only_logs() {
    // Go's spelling, dryrun: every run logs what it would remove, and nothing goes.
    let dry = "pruneConfig:\n  enabled: true\n  type: created\n  duration: 1s\n  frequency: 1s\n  dryrun: true\n";
    let s = setup(dry);
    let up = Arc::new(s.up);
    let host = up.host();
    let la = vec![random_bytes(50, 30_000)];
    let a = up.add_image("team/a", "v1", &la);
    let mut server = Server::start_in(&s.images, &s.config, &[]);
    pull(&server, &up, "team/a", &a, &la).unwrap();
    let would = format!("would remove image {host}/team/a:v1");
    let twice = wait_until(Duration::from_secs(20), || server.log().matches(&would).count() >= 2);
    assert!(twice, "two dry runs did not log a:\n{}", server.log());
    assert!(server.log().contains("dry run: 1 images"), "{}", server.log());
    assert!(!server.log().contains("removed image"), "{}", server.log());
    for digest in [&a.manifest_digest, &a.config_digest, &a.layer_digests[0]] {
        assert!(blob_file(&s.images, digest).exists(), "a dry run removed {digest}");
    }
    assert!(server.stop().success());

    // Not dry: a goes though it is pulled all along (created, not last pulled, counts).
    let config = s.config.replace("dryrun: true", "dryrun: false");
    let server = Arc::new(Server::start_in(&s.images, &config, &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let keeper = keep_pulling(server.clone(), up.clone(), "team/a", stop.clone());
    let removed = format!("removed image {host}/team/a:v1");
    let gone = wait_until(Duration::from_secs(20), || server.log().contains(&removed));
    stop.store(true, Ordering::Relaxed);
    keeper.join().unwrap();
    assert!(gone, "a was not removed:\n{}", server.log());
    let again = server.get(&format!("/v2/{host}/team/a/manifests/v1"), &[]);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(up.count("GET", "team/a/manifests/v1") >= 2, "removed, then fetched again");
}
