//! A newc ("070701") cpio archive, the format the kernel unpacks an initramfs from, written
//! entry by entry so large binaries stream from disk instead of being held in memory.
//! Entries must come parents first; [`super::initramfs`] orders them by path.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A cpio archive being written; [`Cpio::finish`] writes the trailer.
pub struct Cpio {
    out: BufWriter<File>,
    next_inode: u32,
}

impl Cpio {
    pub fn create(path: &Path) -> io::Result<Cpio> {
        Ok(Cpio { out: BufWriter::with_capacity(1 << 20, File::create(path)?), next_inode: 1 })
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, S_IFDIR | 0o755, 2, 0)?;
        Ok(())
    }

    /// A character device node (the kernel opens `/dev/console` for init before anything mounts).
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        self.write_header(name, S_IFCHR | 0o600, 1, 0, (major, minor))
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, S_IFLNK | 0o777, 1, target.len())?;
        self.out.write_all(target.as_bytes())?;
        self.pad(target.len())
    }

    pub fn bytes(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, S_IFREG | mode, 1, data.len())?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    /// Copies the host file at `source` (following symlinks) in as `name`.
    pub fn file(&mut self, name: &str, mode: u32, source: &Path) -> io::Result<()> {
        let mut input = File::open(source)?;
        let len = input.metadata()?.len() as usize;
        self.header(name, S_IFREG | mode, 1, len)?;
        let copied = io::copy(&mut input, &mut self.out)? as usize;
        if copied != len {
            return Err(io::Error::other(format!("{} changed size while being archived", source.display())));
        }
        self.pad(len)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.header("TRAILER!!!", 0, 1, 0)?;
        self.out.flush()
    }

    /// The 110-byte header and the NUL-terminated name, padded to four bytes. Names are
    /// relative (no leading `/`), as the kernel expects.
    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: usize) -> io::Result<()> {
        self.write_header(name, mode, nlink, size, (0, 0))
    }

    fn write_header(&mut self, name: &str, mode: u32, nlink: u32, size: usize, rdev: (u32, u32)) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(size).map_err(|_| io::Error::other(format!("{name} is over 4 GiB")))?;
        let inode = self.next_inode;
        self.next_inode += 1;
        let fields = [inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for field in fields {
            head.push_str(&format!("{field:08X}"));
        }
        self.out.write_all(head.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        self.out.write_all(&[0u8; 3][..(4 - written % 4) % 4])
    }
}
