//! Deterministic OCI image layouts for tests, built on disk with no network.
//!
//! Layers are real ustar archives (mode 0644, uid/gid 0, mtime 0) compressed with a gzip header that
//! carries no timestamp and no file name, so the same specs always give the same digests.
//! Images can be written with OCI media types or with Docker schema 2 media types. skopeo's `oci:`
//! transport only finds refs whose index.json descriptor has an OCI media type, so Docker-typed refs are
//! pushed from a `dir:` copy ([`write_skopeo_dir`]), which skopeo copies byte for byte. Pushed without
//! `--format`, either kind keeps the digests returned here. Converting on push (`skopeo copy --format
//! v2s2`) rewrites the manifests and changes their digests; read those back from the registry instead.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Layers whose files add up to more than this are stored uncompressed inside gzip (fast, still valid).
const STORE_ONLY_ABOVE: usize = 1 << 20;
const RANDOM_PERIOD: usize = 1 << 20;

/// Which family of media types the manifests, configs and layers are written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }

    fn layer_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_LAYER_GZIP,
            Format::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

/// The regular files of one layer, as (path inside the archive, content). Paths are at most 100 bytes.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub files: Vec<(String, Vec<u8>)>,
}

impl LayerSpec {
    /// One small text file.
    pub fn text(name: &str, content: &str) -> Self {
        LayerSpec { files: vec![(name.to_string(), content.as_bytes().to_vec())] }
    }

    /// One file of `size` incompressible pseudo-random bytes, the same for the same `seed`.
    pub fn random(seed: u64, size: usize) -> Self {
        LayerSpec { files: vec![(format!("random-{seed}.bin"), pseudo_random_bytes(seed, size))] }
    }
}

/// One image manifest as written (and, pushed without conversion, as served).
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub media_type: String,
    pub config_digest: String,
    /// (digest, compressed size) of each layer, in manifest order.
    pub layers: Vec<(String, u64)>,
    /// (os, architecture).
    pub platform: (String, String),
    /// Bytes of config and layers, as a client pulling this image downloads them besides the manifest.
    pub total_size: u64,
}

/// One image index (or Docker manifest list) and its per-platform manifests.
#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub index_digest: String,
    pub index_bytes: Vec<u8>,
    pub media_type: String,
    pub manifests: Vec<ImageInfo>,
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Where the blob `digest` lives in the layout.
pub fn blob_path(layout_dir: &Path, digest: &str) -> PathBuf {
    layout_dir.join("blobs").join("sha256").join(hex_part(digest))
}

/// Writes an OCI image for `platform` = (os, architecture) and tags it `ref_name` in the layout.
pub fn write_image(layout_dir: &Path, ref_name: &str, platform: (&str, &str), layers: &[LayerSpec]) -> ImageInfo {
    write_image_as(Format::Oci, layout_dir, ref_name, platform, layers)
}

/// Like [`write_image`] with the media types of `format`.
pub fn write_image_as(
    format: Format,
    layout_dir: &Path,
    ref_name: &str,
    platform: (&str, &str),
    layers: &[LayerSpec],
) -> ImageInfo {
    init_layout(layout_dir);
    let image = write_manifest(format, layout_dir, platform, layers);
    tag(layout_dir, ref_name, &image.media_type, &image.manifest_digest, image.manifest_bytes.len());
    image
}

/// Writes a multi-platform OCI index tagged `ref_name`: platform `i` = (os, architecture) gets the layers
/// `layers_per_platform[i]`.
pub fn write_index(
    layout_dir: &Path,
    ref_name: &str,
    platforms: &[(&str, &str)],
    layers_per_platform: &[Vec<LayerSpec>],
) -> IndexInfo {
    write_index_as(Format::Oci, layout_dir, ref_name, platforms, layers_per_platform)
}

/// Like [`write_index`] with the media types of `format` (a Docker manifest list for `Format::Docker`).
pub fn write_index_as(
    format: Format,
    layout_dir: &Path,
    ref_name: &str,
    platforms: &[(&str, &str)],
    layers_per_platform: &[Vec<LayerSpec>],
) -> IndexInfo {
    assert_eq!(platforms.len(), layers_per_platform.len(), "one layer list per platform");
    init_layout(layout_dir);
    let manifests: Vec<ImageInfo> = platforms
        .iter()
        .zip(layers_per_platform)
        .map(|(platform, layers)| write_manifest(format, layout_dir, *platform, layers))
        .collect();
    let entries: Vec<Value> = manifests
        .iter()
        .map(|m| {
            json!({
                "mediaType": m.media_type,
                "digest": m.manifest_digest,
                "size": m.manifest_bytes.len(),
                "platform": {"architecture": m.platform.1, "os": m.platform.0},
            })
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": format.index_type(), "manifests": entries});
    let index_bytes = serde_json::to_vec_pretty(&index).unwrap();
    let index_digest = write_blob(layout_dir, &index_bytes);
    tag(layout_dir, ref_name, format.index_type(), &index_digest, index_bytes.len());
    IndexInfo { index_digest, index_bytes, media_type: format.index_type().to_string(), manifests }
}

/// The descriptor that index.json tags `ref_name`, if any.
pub fn ref_descriptor(layout_dir: &Path, ref_name: &str) -> Option<Value> {
    let index: Value = serde_json::from_slice(&fs::read(layout_dir.join("index.json")).ok()?).ok()?;
    let entries = index["manifests"].as_array()?;
    entries.iter().find(|e| e["annotations"][REF_NAME_ANNOTATION] == ref_name).cloned()
}

/// Copies the image or index tagged `ref_name` into `out_dir` in the layout of skopeo's `dir:` transport:
/// `manifest.json`, `<hex>.manifest.json` per index entry, and every blob as `<hex>`.
pub fn write_skopeo_dir(layout_dir: &Path, ref_name: &str, out_dir: &Path) {
    let descriptor = ref_descriptor(layout_dir, ref_name).unwrap_or_else(|| panic!("no ref {ref_name}"));
    fs::create_dir_all(out_dir).unwrap();
    fs::write(out_dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
    let top = fs::read(blob_path(layout_dir, descriptor["digest"].as_str().unwrap())).unwrap();
    fs::write(out_dir.join("manifest.json"), &top).unwrap();
    let top: Value = serde_json::from_slice(&top).unwrap();
    let Some(instances) = top["manifests"].as_array() else {
        return copy_image_blobs(layout_dir, &top, out_dir);
    };
    for instance in instances {
        let digest = instance["digest"].as_str().unwrap();
        let bytes = fs::read(blob_path(layout_dir, digest)).unwrap();
        fs::write(out_dir.join(format!("{}.manifest.json", hex_part(digest))), &bytes).unwrap();
        copy_image_blobs(layout_dir, &serde_json::from_slice(&bytes).unwrap(), out_dir);
    }
}

fn copy_image_blobs(layout_dir: &Path, manifest: &Value, out_dir: &Path) {
    let layers = manifest["layers"].as_array().unwrap();
    for descriptor in std::iter::once(&manifest["config"]).chain(layers) {
        let digest = descriptor["digest"].as_str().unwrap();
        fs::copy(blob_path(layout_dir, digest), out_dir.join(hex_part(digest))).unwrap();
    }
}

fn hex_part(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

fn write_manifest(format: Format, layout_dir: &Path, platform: (&str, &str), layers: &[LayerSpec]) -> ImageInfo {
    let mut diff_ids = Vec::new();
    let mut layer_descs = Vec::new();
    let mut layer_list = Vec::new();
    for spec in layers {
        let tar = tar_archive(&spec.files);
        diff_ids.push(sha256_digest(&tar));
        let gz = gzip(&tar);
        let digest = write_blob(layout_dir, &gz);
        layer_descs.push(json!({"mediaType": format.layer_type(), "digest": digest, "size": gz.len()}));
        layer_list.push((digest, gz.len() as u64));
    }
    let config = json!({
        "architecture": platform.1,
        "os": platform.0,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(layout_dir, &config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_type(),
        "config": {"mediaType": format.config_type(), "digest": config_digest, "size": config_bytes.len()},
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let manifest_digest = write_blob(layout_dir, &manifest_bytes);
    let total_size = config_bytes.len() as u64 + layer_list.iter().map(|(_, size)| size).sum::<u64>();
    ImageInfo {
        manifest_digest,
        manifest_bytes,
        media_type: format.manifest_type().to_string(),
        config_digest,
        layers: layer_list,
        platform: (platform.0.to_string(), platform.1.to_string()),
        total_size,
    }
}

fn init_layout(layout_dir: &Path) {
    fs::create_dir_all(layout_dir.join("blobs").join("sha256")).unwrap();
    fs::write(layout_dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index_path = layout_dir.join("index.json");
    if !index_path.exists() {
        let empty = json!({"schemaVersion": 2, "manifests": []});
        fs::write(index_path, serde_json::to_vec_pretty(&empty).unwrap()).unwrap();
    }
}

/// Points `ref_name` in the layout's index.json at the given manifest, replacing an earlier entry.
fn tag(layout_dir: &Path, ref_name: &str, media_type: &str, digest: &str, size: usize) {
    let index_path = layout_dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entries = index["manifests"].as_array_mut().unwrap();
    entries.retain(|e| e["annotations"][REF_NAME_ANNOTATION] != ref_name);
    entries.push(json!({
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {REF_NAME_ANNOTATION: ref_name},
    }));
    fs::write(index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
}

fn write_blob(layout_dir: &Path, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    fs::write(blob_path(layout_dir, &digest), data).unwrap();
    digest
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let level = if data.len() > STORE_ONLY_ABOVE { Compression::none() } else { Compression::default() };
    let mut encoder = GzBuilder::new().mtime(0).write(Vec::with_capacity(data.len() + 1024), level);
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A ustar archive of regular files, terminated by two zero blocks.
fn tar_archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let total: usize = files.iter().map(|(_, data)| 512 + data.len().div_ceil(512) * 512).sum();
    let mut out = Vec::with_capacity(total + 1024);
    for (name, data) in files {
        out.extend_from_slice(&ustar_header(name, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn ustar_header(name: &str, size: u64) -> [u8; 512] {
    assert!(name.len() <= 100, "tar member name longer than 100 bytes: {name}");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    put_octal(&mut h[100..108], 0o644);
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let checksum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    h
}

/// Zero-padded octal digits followed by a NUL, filling `field`.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert_eq!(text.len(), digits, "value {value} does not fit a {digits}-digit tar field");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// xorshift64* output with a period of [`RANDOM_PERIOD`] bytes: deterministic, quick to make even in
/// unoptimised builds, and incompressible for gzip, whose window is only 32 KiB.
fn pseudo_random_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let period = size.min(RANDOM_PERIOD);
    let mut block = Vec::with_capacity(period.div_ceil(8) * 8);
    for _ in 0..period.div_ceil(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        block.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    block.truncate(period);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let take = (size - out.len()).min(period);
        out.extend_from_slice(&block[..take]);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This machine's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An architecture other than this machine's (for a second platform of an index).
pub fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}
