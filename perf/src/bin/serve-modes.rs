//! Microbenchmark server for `bench-scripts/serve-modes`: answers every HTTP/1.1
//! request (keep-alive, pipelining tolerated, request line and headers ignored)
//! with `200 OK` and the body of one file, sent by one of the serve-path
//! candidates of issue 3, on either monoio driver:
//!
//! - `read`: `monoio::fs::File::read_at` into a reused 256 KiB buffer (the head
//!   goes in front of the first chunk), then `write_all`; the file is opened once
//!   per worker.
//! - `mmap`: the file mapped once per worker (memmap2, populated), the head
//!   written, then the whole mapping handed to `write_all` through an `IoBuf`
//!   wrapper: the kernel copies from the page cache mapping, no user-space copy.
//! - `splice`: the stack-notes §3 workaround: a std `File` opened per response,
//!   wrapped as a monoio `TcpStream` (io_uring only: the epoll driver cannot
//!   register a regular file), then `splice_to_pipe`/`splice_from_pipe` through a
//!   per-connection pipe (64 KiB, monoio cannot resize it).
//! - `sendfile`: as `src/serve/sendfile.rs`: a std `File` opened per response,
//!   the head written, then `sendfile(2)` with the socket `O_NONBLOCK` for the call
//!   and `writable(false)` when the socket buffer is full.
//! - `memory`: head and body preloaded as one `Bytes`, one `write_all`.
//!
//! One runtime per `--threads`, each with its own `SO_REUSEPORT` listener, like
//! the server; sockets get `TCP_NODELAY`, like the server.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::unix::{new_pipe, Pipe};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Read,
    Mmap,
    Splice,
    Sendfile,
    Memory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Driver {
    Uring,
    Legacy,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Serve one file over HTTP/1.1 keep-alive with a chosen send mode (serve-path microbenchmark)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, value_enum, default_value = "uring")]
    driver: Driver,
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 18181)]
    port: u16,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Address to listen on (loopback only for benchmarks).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
}

/// The read buffer of the `read` mode.
const CHUNK: usize = 256 * 1024;
/// The most moved through the pipe at once (the pipe's default capacity).
const PIPE_CHUNK: u64 = 64 * 1024;
/// Requests larger than this are refused.
const MAX_HEAD: usize = 64 * 1024;

/// A whole file mapping as a monoio send buffer.
struct MapBuf(Rc<memmap2::Mmap>);

// SAFETY: the mapping lives as long as the Rc, is never remapped or written,
// and its address does not move when the wrapper does.
unsafe impl IoBuf for MapBuf {
    fn read_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.0.len()
    }
}

/// What one worker serves.
struct Ctx {
    mode: Mode,
    path: PathBuf,
    len: u64,
    head: Bytes,
    /// `memory`: head + body.
    full: Option<Bytes>,
    /// `mmap`: the file mapped once.
    map: Option<Rc<memmap2::Mmap>>,
    /// `read`: the file opened once.
    file: Option<monoio::fs::File>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.mode == Mode::Splice && args.driver == Driver::Legacy {
        anyhow::bail!(
            "splice needs the io_uring driver: monoio's splice source must be a registered fd and \
             epoll cannot register a regular file (EPERM)"
        );
    }
    let len = std::fs::metadata(&args.file)?.len();
    let addr = SocketAddr::new(args.host, args.port);
    let mut handles = Vec::new();
    for i in 0..args.threads {
        let args = args.clone();
        handles.push(std::thread::Builder::new().name(format!("serve-{i}")).spawn(move || -> io::Result<()> {
            match args.driver {
                Driver::Uring => {
                    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .with_entries(1024)
                        .enable_timer()
                        .build()?;
                    rt.block_on(worker(args, addr, len))
                }
                Driver::Legacy => {
                    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build()?;
                    rt.block_on(worker(args, addr, len))
                }
            }
        })?);
    }
    eprintln!(
        "serve-modes: {:?} on {:?} driver, {} bytes, {addr}, {} threads",
        args.mode, args.driver, len, args.threads
    );
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    Ok(())
}

async fn worker(args: Args, addr: SocketAddr, len: u64) -> io::Result<()> {
    let head = Bytes::from(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    ));
    let mut ctx =
        Ctx { mode: args.mode, path: args.file.clone(), len, head: head.clone(), full: None, map: None, file: None };
    match args.mode {
        Mode::Memory => {
            let mut v = head.to_vec();
            v.extend_from_slice(&std::fs::read(&args.file)?);
            ctx.full = Some(Bytes::from(v));
        }
        Mode::Mmap => {
            let f = std::fs::File::open(&args.file)?;
            // SAFETY: the benchmark's files are never modified while served.
            let map = unsafe { memmap2::MmapOptions::new().populate().map(&f)? };
            ctx.map = Some(Rc::new(map));
        }
        Mode::Read => ctx.file = Some(monoio::fs::File::open(&args.file).await?),
        Mode::Splice | Mode::Sendfile => {}
    }
    let ctx = Rc::new(ctx);
    let listener = TcpListener::bind_with_config(addr, &ListenerOpts::new().reuse_port(true).backlog(1024))?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        monoio::spawn(async move {
            if let Err(e) = connection(stream, ctx).await {
                if !matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
                    eprintln!("connection: {e}");
                }
            }
        });
    }
}

/// Per-connection state reused across requests.
struct Conn {
    buf: Vec<u8>,
    pipe: Option<(Pipe, Pipe)>,
}

async fn connection(mut stream: TcpStream, ctx: Rc<Ctx>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut req: Vec<u8> = Vec::with_capacity(4096);
    let conn = RefCell::new(Conn {
        buf: if ctx.mode == Mode::Read { Vec::with_capacity(CHUNK) } else { Vec::new() },
        pipe: if ctx.mode == Mode::Splice { Some(new_pipe()?) } else { None },
    });
    loop {
        let end = loop {
            if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if req.len() >= MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
            }
            if req.len() == req.capacity() {
                req.reserve(4096);
            }
            let filled = req.len();
            let (r, slice) = stream.read(req.slice_mut(filled..)).await;
            req = slice.into_inner();
            if r? == 0 {
                return Ok(());
            }
        };
        req.drain(..end);
        respond(&mut stream, &ctx, &conn).await?;
    }
}

fn check<T>(r: monoio::BufResult<usize, T>) -> io::Result<T> {
    let (r, b) = r;
    r?;
    Ok(b)
}

async fn respond(stream: &mut TcpStream, ctx: &Ctx, conn: &RefCell<Conn>) -> io::Result<()> {
    match ctx.mode {
        Mode::Memory => {
            let full = ctx.full.clone().expect("memory body");
            check(stream.write_all(full).await)?;
        }
        Mode::Mmap => {
            check(stream.write_all(ctx.head.clone()).await)?;
            let map = ctx.map.clone().expect("mapping");
            check(stream.write_all(MapBuf(map)).await)?;
        }
        Mode::Read => {
            let file = ctx.file.as_ref().expect("file");
            let mut buf = std::mem::take(&mut conn.borrow_mut().buf);
            buf.clear();
            buf.extend_from_slice(&ctx.head);
            let mut pos = 0u64;
            while pos < ctx.len {
                // Fill the buffer (after the head, the first time) from `pos`.
                while buf.len() < buf.capacity() && pos < ctx.len {
                    let filled = buf.len();
                    let want = ((ctx.len - pos) as usize).min(buf.capacity() - filled);
                    let (r, slice) = file.read_at(buf.slice_mut(filled..filled + want), pos).await;
                    buf = slice.into_inner();
                    let n = r?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its size"));
                    }
                    pos += n as u64;
                }
                buf = check(stream.write_all(buf).await)?;
                buf.clear();
            }
            conn.borrow_mut().buf = buf;
        }
        Mode::Sendfile => {
            let file = std::fs::File::open(&ctx.path)?;
            check(stream.write_all(ctx.head.clone()).await)?;
            // The server's own sendfile path, so this measures what it ships.
            ociregistry::serve::sendfile::send_range(stream, file.as_raw_fd(), 0, ctx.len).await?;
        }
        Mode::Splice => {
            let file = std::fs::File::open(&ctx.path)?;
            check(stream.write_all(ctx.head.clone()).await)?;
            // A fresh file description per response, so the shared offset (monoio
            // splices at offset -1) is ours alone. For a Range it would be lseek'd here.
            // SAFETY: the fd is owned and handed over to the wrapper, which closes it.
            let mut src = TcpStream::from_std(unsafe { std::net::TcpStream::from_raw_fd(file.into_raw_fd()) })?;
            let (mut pr, mut pw) = conn.borrow_mut().pipe.take().expect("pipe");
            let r = splice_body(&mut src, stream, &mut pr, &mut pw, ctx.len).await;
            conn.borrow_mut().pipe = Some((pr, pw));
            r?;
        }
    }
    Ok(())
}

async fn splice_body(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    pr: &mut Pipe,
    pw: &mut Pipe,
    len: u64,
) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let want = left.min(PIPE_CHUNK) as u32;
        let mut n = src.splice_to_pipe(pw, want).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its size"));
        }
        left -= n as u64;
        while n > 0 {
            let m = dst.splice_from_pipe(pr, n).await?;
            if m == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed"));
            }
            n -= m;
        }
    }
    Ok(())
}
