//! HTTPS from a kernel that has the `tls` module (kernel TLS), which the machines the tests run
//! on lack: the outer test boots a qemu guest on Debian's kernel (`common::vm`) that runs this
//! same test binary on `guest_https_pull` alone. Inside, the real `ociregistry` serves
//! `serverTlsConfig` from an in-process fake upstream; a rustls client pulls a manifest and a
//! 4 MiB blob, checking digests, and the metrics page is read. The certificates are made on
//! the host (openssl is not in the guest) and copied in at the same path. A second guest runs
//! busybox's sh failing on purpose: its status, environment and output must come back.
//! Without booting: the module selection on a fake tree of plain, `.ko.xz` and `.ko.zst` modules.

mod common;

use std::path::Path;
use std::time::Duration;

use common::certs::{make_pki, path_str};
use common::fake_upstream::{sha256_digest, FakeUpstream};
use common::https::{client_config, Https};
use common::vm::{run_in_vm, GuestRun};
use common::{random_bytes, Server};

/// Set in the guest's environment: `guest_https_pull` runs only there.
const IN_GUEST: &str = "OCIREGISTRY_IN_GUEST";
/// The host directory holding the test PKI, copied into the guest at the same path.
const GUEST_PKI: &str = "OCIREGISTRY_GUEST_PKI";

#[test]
fn https_in_a_guest_with_the_tls_module() {
    // Not under /tmp, which the guest mounts a fresh tmpfs over.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pki = make_pki(&dir.path().join("pki"));
    let test_binary = std::env::current_exe().unwrap();
    let outcome = run_in_vm(&GuestRun {
        binary: &test_binary,
        args: &["--exact", "guest_https_pull", "--include-ignored", "--nocapture", "--test-threads", "1"],
        env: &[(IN_GUEST, "1"), (GUEST_PKI, path_str(&pki.dir)), ("RUST_BACKTRACE", "1")],
        files: &[&pki.dir],
        timeout: Duration::from_secs(120),
    });
    let output = &outcome.output;
    assert!(!outcome.timed_out, "the guest did not finish within the timeout; its console:\n{output}");
    assert_eq!(outcome.exit_code, Some(0), "the test in the guest failed; its console:\n{output}");
    assert!(output.contains("test result: ok. 1 passed"), "the guest ran no test named guest_https_pull:\n{output}");
    eprintln!("the guest ({}) ran for {:?}:\n{output}", outcome.accelerator, outcome.elapsed);
}

#[test]
fn a_failing_guest_program_is_reported_with_its_status_environment_and_output() {
    let busybox = common::vm::find_on_path("busybox").expect("busybox (Debian package busybox-static)");
    let outcome = run_in_vm(&GuestRun {
        binary: &busybox,
        args: &["sh", "-c", "printf 'said: %s' \"$GREETING\"; exit 7"],
        env: &[("GREETING", "it's $HOME")],
        files: &[],
        timeout: Duration::from_secs(60),
    });
    let output = &outcome.output;
    assert!(!outcome.timed_out, "{output}");
    assert_eq!(outcome.exit_code, Some(7), "{output}");
    assert!(output.contains("said: it's $HOME"), "the variable is passed as it is: {output}");
}

/// The guest's half: skipped on the host (it is `#[ignore]`d, and without `OCIREGISTRY_IN_GUEST`
/// it returns at once).
#[test]
#[ignore = "runs inside the guest that https_in_a_guest_with_the_tls_module boots"]
fn guest_https_pull() {
    if std::env::var_os(IN_GUEST).is_none() {
        common::skipped("guest_https_pull", "runs only inside the qemu guest (OCIREGISTRY_IN_GUEST=1)");
        return;
    }
    let ulp = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap();
    assert!(ulp.split_whitespace().any(|u| u == "tls"), "the guest's kernel lists no tls ULP: {ulp:?}");

    for cipher in [Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Chacha20Poly1305] {
        kernel_encrypts_records(cipher);
    }

    let pki_dir = std::env::var(GUEST_PKI).expect("OCIREGISTRY_GUEST_PKI names the PKI directory");
    let pki = Path::new(&pki_dir);
    let (cert, key, ca) = (pki.join("server.crt"), pki.join("server.key"), pki.join("ca.crt"));
    let up = FakeUpstream::start();
    let layers = vec![random_bytes(41, 3000), random_bytes(42, 4 << 20)];
    let image = up.add_image("team/app", "v1", &layers);
    let config = format!(
        "prefetch: false\nregistries:\n  - name: \"{}\"\n    scheme: http\nserverTlsConfig:\n  cert: {}\n  key: {}\n",
        up.host(),
        path_str(&cert),
        path_str(&key),
    );
    let metrics_port = common::free_port().to_string();
    let server = Server::start(&config, &["--metrics", &metrics_port]);

    // One connection per kind of session the server offers (TLS 1.3 and 1.2, each AEAD), each
    // pulling through the fetch or from the cache's files, twice on the keep-alive connection:
    // the kernel encrypts what rustls would have, and bodies go out with sendfile.
    let mut bytes_expected = 0u64;
    for (i, (name, config)) in session_kinds(&ca).into_iter().enumerate() {
        let mut conn = Https::connect(&server.addr, config).unwrap();
        for round in ["first", "again"] {
            let a = conn.get(&format!("/v2/{}/team/app/manifests/v1", up.host()), "*/*").unwrap();
            assert_eq!(a.status, 200, "{name}: manifest ({round}): {}", a.head);
            assert_eq!(sha256_digest(&a.body), image.manifest_digest, "{name}: manifest ({round})");
            for (digest, bytes) in image.layer_digests.iter().zip(&layers) {
                let a = conn.get(&format!("/v2/{}/team/app/blobs/{digest}", up.host()), "*/*").unwrap();
                assert_eq!(a.status, 200, "{name}: blob ({round}): {}", a.head);
                assert_eq!(a.body.len(), bytes.len(), "{name}: blob ({round})");
                assert_eq!(&sha256_digest(&a.body), digest, "{name}: blob ({round})");
                if (i > 0 || round == "again") && bytes.len() > 1 << 20 {
                    bytes_expected += bytes.len() as u64; // from the cache's file (small ones may be kept in memory)
                }
            }
        }
        // A range, and a HEAD, on the same connection.
        let digest = &image.layer_digests[1];
        conn.send(&format!(
            "GET /v2/{}/team/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-1123\r\n\r\n",
            up.host()
        ))
        .unwrap();
        let a = conn.answer(false).unwrap();
        assert_eq!((a.status, &a.body[..]), (206, &layers[1][100..1124]), "{name}: range: {}", a.head);
    }
    // A client that pipelines two requests right behind its handshake's last flight.
    let mut conn = Https::connect(&server.addr, client_config(&ca, None)).unwrap();
    let path = format!("/v2/{}/team/app/blobs/{}", up.host(), image.layer_digests[0]);
    conn.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();
    for _ in 0..2 {
        let a = conn.answer(false).unwrap();
        assert_eq!((a.status, sha256_digest(&a.body)), (200, image.layer_digests[0].clone()), "pipelined: {}", a.head);
    }

    let page = common::http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).text();
    let tls_lines: Vec<&str> =
        page.lines().filter(|l| l.starts_with("ociregistry_tls") || l.contains("path=")).collect();
    println!("guest metrics:\n{}", tls_lines.join("\n"));
    let log = server.log();
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offload_available"), 1, "{page}\n{log}");
    let connections = session_kinds(&ca).len() as u64 + 1;
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offloads_total"), connections, "{page}\n{log}");
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offload_declined_total"), 0, "{page}\n{log}");
    assert_eq!(common::metric(&page, "ociregistry_tls_kernel_offload_failures_total"), 0, "{page}\n{log}");
    assert_eq!(
        common::metric(&page, "ociregistry_body_bytes_sent_total{path=\"tls\"}"),
        0,
        "rustls sent no file body: {page}"
    );
    let kernel = common::metric(&page, "ociregistry_body_bytes_sent_total{path=\"kernel_tls\"}");
    assert!(kernel >= bytes_expected, "every cached 4 MiB body went through the kernel ({bytes_expected}): {page}");
    assert!(log.contains("kernel TLS available: the tls module is loaded"), "{log}");
    for kind in ["TLS 1.3 AES-128-GCM", "TLS 1.3 AES-256-GCM", "TLS 1.3 ChaCha20-Poly1305", "TLS 1.2 AES-128-GCM"] {
        assert!(log.contains(kind), "the probe names {kind} as carried: {log}");
    }
    let stat = std::fs::read_to_string("/proc/net/tls_stat").unwrap_or_default();
    println!("/proc/net/tls_stat:\n{stat}");
    let tx_sw: u64 = stat.lines().find_map(|l| l.strip_prefix("TlsTxSw")).map_or(0, |v| v.trim().parse().unwrap());
    assert!(tx_sw >= connections, "the kernel counted our sessions: {stat}");
}

/// Client configurations that each negotiate one kind of session: TLS 1.3 with each AEAD
/// suite, and TLS 1.2 (ECDHE-ECDSA, the test certificate being P-256) with each.
fn session_kinds(ca: &Path) -> Vec<(&'static str, std::sync::Arc<rustls::ClientConfig>)> {
    use rustls::crypto::ring::cipher_suite as cs;
    let kinds = [
        ("TLS 1.3 AES-128-GCM", cs::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13),
        ("TLS 1.3 AES-256-GCM", cs::TLS13_AES_256_GCM_SHA384, &rustls::version::TLS13),
        ("TLS 1.3 ChaCha20-Poly1305", cs::TLS13_CHACHA20_POLY1305_SHA256, &rustls::version::TLS13),
        ("TLS 1.2 AES-128-GCM", cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &rustls::version::TLS12),
        ("TLS 1.2 AES-256-GCM", cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, &rustls::version::TLS12),
        ("TLS 1.2 ChaCha20-Poly1305", cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, &rustls::version::TLS12),
    ];
    kinds
        .into_iter()
        .map(|(name, suite, version)| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = rustls::crypto::CryptoProvider {
                cipher_suites: vec![suite],
                ..rustls::crypto::ring::default_provider()
            };
            let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            (name, std::sync::Arc::new(config))
        })
        .collect()
}

/// The TLS 1.3 ciphers rustls negotiates, which the offload hands to the kernel.
#[derive(Clone, Copy, Debug)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// Sets `TLS_TX` (zero key) on one end of a loopback TCP connection and `TLS_RX` on the other,
/// writes a few bytes and checks the peer's raw socket receives one TLS 1.3 application-data
/// record: the guest's kernel loads the cipher's modules when asked (through `modprobe` and
/// `modules.alias`) and encrypts in the kernel.
fn kernel_encrypts_records(cipher: Cipher) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ulp = b"tls";
    // SAFETY: setsockopt on an open socket with a buffer of the given length.
    let set = unsafe { libc::setsockopt(sender.as_raw_fd(), libc::SOL_TCP, libc::TCP_ULP, ulp.as_ptr().cast(), 3) };
    assert_eq!(set, 0, "TCP_ULP tls: {}", std::io::Error::last_os_error());
    let info = crypto_info(cipher);
    // SAFETY: as above; `info` is the kernel's tls12_crypto_info_* layout for `cipher`.
    let set = unsafe {
        libc::setsockopt(
            sender.as_raw_fd(),
            libc::SOL_TLS,
            libc::TLS_TX,
            info.as_ptr().cast(),
            info.len() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "TLS_TX {cipher:?}: {}", std::io::Error::last_os_error());
    sender.write_all(b"hello").unwrap();
    // Header (5) + the bytes + the inner content type (1) + the AEAD tag (16).
    let mut record = [0u8; 5 + 5 + 1 + 16];
    peer.read_exact(&mut record).unwrap();
    assert_eq!(record[..5], [0x17, 0x03, 0x03, 0x00, 22], "{cipher:?}: not one TLS 1.3 record: {record:?}");
    assert_ne!(record[5..10], *b"hello", "{cipher:?}: the bytes went out in the clear");
    println!("guest: the kernel encrypted a TLS 1.3 record with {cipher:?}");
}

/// `struct tls12_crypto_info_*` for TLS 1.3 with a zero key, IV and sequence number.
fn crypto_info(cipher: Cipher) -> Vec<u8> {
    // (cipher type, IV, key, salt, record sequence) sizes from linux/tls.h
    let (kind, iv, key, salt) = match cipher {
        Cipher::Aes128Gcm => (libc::TLS_CIPHER_AES_GCM_128, 8, 16, 4),
        Cipher::Aes256Gcm => (libc::TLS_CIPHER_AES_GCM_256, 8, 32, 4),
        Cipher::Chacha20Poly1305 => (libc::TLS_CIPHER_CHACHA20_POLY1305, 12, 32, 0),
    };
    let mut info = Vec::new();
    info.extend_from_slice(&libc::TLS_1_3_VERSION.to_ne_bytes());
    info.extend_from_slice(&kind.to_ne_bytes());
    info.resize(info.len() + iv + key + salt + 8, 0);
    info
}

#[test]
fn module_file_names_plain_xz_and_zstd() {
    use common::vm::modules::{module_file, Compression};
    assert_eq!(module_file("tls.ko"), Some(("tls".to_string(), Compression::None)));
    assert_eq!(module_file("aesni-intel.ko.xz"), Some(("aesni_intel".to_string(), Compression::Xz)));
    assert_eq!(module_file("chacha20poly1305.ko.zst"), Some(("chacha20poly1305".to_string(), Compression::Zstd)));
    for other in ["tls.ko.gz", "modules.order", ".ko", ".ko.xz", "tls.ko.xz.tmp", "tls"] {
        assert_eq!(module_file(other), None, "{other}");
    }
}

/// A fake modules tree with `.ko`, `.ko.xz` and `.ko.zst` files (tiny ELF files with a
/// `.modinfo`): the compressed ones are indexed, read, and shipped uncompressed as `.ko`,
/// with dependencies outside the shipped directories followed.
#[test]
fn compressed_modules_are_indexed_and_shipped_uncompressed() {
    use common::vm::modules::{copy_selected, modules_alias, modules_dep, select};
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("6.99.0-1-amd64");
    let modules = [
        ("kernel/net/tls/tls.ko.xz", "depends=lib-helper\0alias=tcp-ulp-tls\0"),
        ("kernel/crypto/gcm.ko.zst", "depends=\0alias=crypto-gcm\0"),
        ("kernel/lib/lib-helper.ko", "depends=\0"),
        ("kernel/drivers/unrelated.ko.xz", "depends=\0"),
    ];
    for (relative, info) in modules {
        let elf = fake_module(info);
        let plain = tree.join(relative.trim_end_matches(".xz").trim_end_matches(".zst"));
        std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
        std::fs::write(&plain, &elf).unwrap();
        let (tool, args) = if relative.ends_with(".xz") {
            ("xz", ["-q", "-z"]) // replaces the file with file.xz
        } else if relative.ends_with(".zst") {
            ("zstd", ["-q", "--rm"])
        } else {
            continue;
        };
        let status = std::process::Command::new(tool).args(args).arg(&plain).status().unwrap();
        assert!(status.success() && tree.join(relative).is_file(), "{tool} made {relative}");
    }
    let chosen = select(&tree).unwrap();
    assert_eq!(chosen.keys().collect::<Vec<_>>(), ["gcm", "lib_helper", "tls"]);
    assert_eq!(chosen["tls"].relative, Path::new("kernel/net/tls/tls.ko"));
    assert_eq!(chosen["gcm"].relative, Path::new("kernel/crypto/gcm.ko"));
    assert_eq!(chosen["tls"].elf, fake_module("depends=lib-helper\0alias=tcp-ulp-tls\0"));
    let dep = modules_dep(&chosen);
    assert!(dep.contains("kernel/net/tls/tls.ko: kernel/lib/lib-helper.ko\n"), "{dep}");
    assert!(modules_alias(&chosen).contains("alias crypto-gcm gcm\n"));

    let copy = dir.path().join("copy");
    assert_eq!(copy_selected(&tree, &copy).unwrap(), 3);
    assert_eq!(std::fs::read(copy.join("kernel/crypto/gcm.ko")).unwrap(), fake_module("depends=\0alias=crypto-gcm\0"));
    assert!(!copy.join("kernel/drivers").exists(), "only the selected modules are copied");
    // The copy is a modules tree of its own: selecting from it again finds the same modules.
    assert_eq!(select(&copy).unwrap().keys().collect::<Vec<_>>(), ["gcm", "lib_helper", "tls"]);
}

/// A little-endian ELF64 file with a `.shstrtab` and a `.modinfo` holding `info`.
fn fake_module(info: &str) -> Vec<u8> {
    let names = b"\0.shstrtab\0.modinfo\0";
    let (names_at, info_at) = (64u64, 64 + names.len() as u64);
    let headers_at = (info_at + info.len() as u64).next_multiple_of(8);
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x28..0x30].copy_from_slice(&headers_at.to_le_bytes());
    elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes()); // section header size
    elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes()); // sections: null, .shstrtab, .modinfo
    elf[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes()); // .shstrtab's index
    elf.extend_from_slice(names);
    elf.extend_from_slice(info.as_bytes());
    elf.resize(headers_at as usize, 0);
    for (name_at, offset, size) in
        [(0u32, 0u64, 0u64), (1, names_at, names.len() as u64), (11, info_at, info.len() as u64)]
    {
        let mut header = [0u8; 64];
        header[..4].copy_from_slice(&name_at.to_le_bytes());
        header[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
        header[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&header);
    }
    elf
}
