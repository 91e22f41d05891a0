//! What `--image-file` names, resolved to files and told apart by content
//! (never by name), as the Go ociregistry does: a comma list of paths and
//! globs; each file is a tarball when it starts with the gzip magic or has a
//! tar header's `ustar` magic at byte 257, else an image list (UTF-8 text).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::image_ref::ImageRef;

/// The largest image list read (a list of a million images is far smaller).
const MAX_LIST_BYTES: u64 = 16 * 1024 * 1024;

/// One file to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An image list: the references on its lines, or why a line is not one.
    List { path: PathBuf, lines: Vec<Line> },
    /// A `docker save` or OCI layout tarball, gzipped or not; `label` names
    /// it in messages when `path` is not what the user gave (a staged copy).
    Tarball { path: PathBuf, gzipped: bool, label: Option<String> },
}

/// One non-blank, non-comment line of an image list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `file:line`, to name it in messages.
    pub origin: String,
    pub text: String,
    pub image: Result<ImageRef, String>,
}

/// Splits `spec` on commas, expands each part as a glob (a plain path
/// matches itself) and reads what each file is. A part that matches nothing,
/// an unreadable file or an oversized list is an error naming it.
pub fn resolve(spec: &str) -> Result<Vec<Input>, String> {
    let mut paths = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let matches = glob::glob(part).map_err(|e| format!("--image-file: {part:?} is not a valid glob: {e}"))?;
        let before = paths.len();
        for m in matches {
            let path = m.map_err(|e| format!("--image-file: {part:?}: {e}"))?;
            if path.is_file() {
                paths.push(path);
            }
        }
        if paths.len() == before {
            return Err(format!("--image-file: no file matches {part:?}"));
        }
    }
    if paths.is_empty() {
        return Err("--image-file: no file given".to_string());
    }
    paths.into_iter().map(|p| read_input(&p)).collect()
}

fn read_input(path: &Path) -> Result<Input, String> {
    let name = path.display();
    let mut f = File::open(path).map_err(|e| format!("cannot open {name}: {e}"))?;
    let mut head = Vec::with_capacity(512);
    f.by_ref().take(512).read_to_end(&mut head).map_err(|e| format!("cannot read {name}: {e}"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Input::Tarball { path: path.to_path_buf(), gzipped: true, label: None });
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Input::Tarball { path: path.to_path_buf(), gzipped: false, label: None });
    }
    let mut rest = Vec::new();
    f.take(MAX_LIST_BYTES).read_to_end(&mut rest).map_err(|e| format!("cannot read {name}: {e}"))?;
    head.extend_from_slice(&rest);
    if head.len() as u64 >= MAX_LIST_BYTES {
        return Err(format!("{name}: an image list larger than {MAX_LIST_BYTES} bytes is refused"));
    }
    let text = String::from_utf8(head)
        .map_err(|_| format!("{name} is neither a tarball nor an image list (it is not UTF-8 text)"))?;
    Ok(Input::List { path: path.to_path_buf(), lines: parse_list(&name.to_string(), &text) })
}

/// The references of an image list: one per line, surrounding blanks
/// ignored, blank lines and lines starting with `#` skipped, and text after
/// ` #` on a line taken as a comment.
pub fn parse_list(name: &str, text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split(" #").next().unwrap_or_default().trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            Some(Line { origin: format!("{name}:{}", i + 1), text: line.to_string(), image: ImageRef::parse(line) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_skip_comments_and_blanks_and_keep_bad_lines_named() {
        let lines = parse_list("l.txt", "# images\n\n  quay.io/a/b:v1  \nnot-qualified:1\nquay.io/c # why\n\t# x\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].image.as_ref().unwrap().to_string(), "quay.io/a/b:v1");
        assert_eq!(lines[1].origin, "l.txt:4");
        assert!(lines[1].image.is_err());
        assert_eq!(lines[2].image.as_ref().unwrap().to_string(), "quay.io/c:latest");
    }

    #[test]
    fn files_are_told_apart_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.tar");
        std::fs::write(&list, "quay.io/a:1\n").unwrap();
        let gz = dir.path().join("images.txt");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        let plain = dir.path().join("x");
        std::fs::write(&plain, &tar).unwrap();
        std::fs::write(dir.path().join("bin"), [0xff, 0xfe, 0]).unwrap();
        let spec = format!("{}, {},{}", list.display(), gz.display(), plain.display());
        let inputs = resolve(&spec).unwrap();
        assert!(matches!(&inputs[0], Input::List { lines, .. } if lines.len() == 1));
        assert!(matches!(&inputs[1], Input::Tarball { gzipped: true, .. }));
        assert!(matches!(&inputs[2], Input::Tarball { gzipped: false, .. }));
        let all = resolve(&format!("{}/*", dir.path().display()));
        assert!(all.unwrap_err().contains("not UTF-8"));
        let none = resolve(&format!("{}/*.nothing", dir.path().display())).unwrap_err();
        assert!(none.contains("no file matches"), "{none}");
    }
}
