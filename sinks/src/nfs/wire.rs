//! The slice of NFSv3 (RFC 1813), MOUNT and the portmapper that the NFS sink uses, behind
//! types of our own: the rest of the sink never sees the protocol crate.
//!
//! The XDR types and RPC framing come from `nfs3_client`, whose calls are `async` over a
//! transport trait. Ferry's sinks are blocking (one uploader thread, one request in flight),
//! so [`Tcp`] implements that trait with plain blocking socket calls and every call is driven
//! to completion with `futures::executor::block_on`: no runtime, no extra threads.
//!
//! - [`mount_export`]: portmapper -> MOUNT -> root file handle of the export that holds a path.
//! - [`Pool`]: idle connections to the NFS service; [`Conn`] is one borrowed connection, put back
//!   when dropped unless a transport failure broke it.
//! - [`Failure`]: what went wrong, classified so the sink can map it to a
//!   [`SinkError`](crate::SinkError) and decide whether to retry.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::executor::block_on;
use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::nfs3_types::mount::{self as mnt, dirpath, mountstat3};
use nfs3_client::nfs3_types::nfs3::{
    self as p, Nfs3Option, Nfs3Result, cookieverf3, createhow3, diropargs3, fattr3, filename3,
    ftype3, nfs_fh3, nfsstat3, sattr3, stable_how,
};
use nfs3_client::nfs3_types::portmap::IPPROTO_TCP;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{
    MountClient, MountError as RpcMountError, Nfs3Client, PortmapperClient, RpcError,
};

/// A file handle: opaque bytes the server hands out, valid across connections.
pub(super) type Handle = nfs_fh3;

/// Socket timeout of every call: a server that stops answering fails the call after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The portmapper's well-known port.
const PORTMAPPER_PORT: u16 = 111;
/// NFS's well-known port, used when the portmapper does not know the service.
const NFS_PORT: u16 = 2049;
/// FSINFO property bit: the file system supports hard links.
const FSF3_LINK: u32 = 0x0001;
/// READDIRPLUS sizes: bytes of names and cookies, and of the whole reply, per page.
const DIR_COUNT: u32 = 64 << 10;
const DIR_MAX: u32 = 256 << 10;

/// The NFSv3 statuses the sink tells apart; the rest are [`Status::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    NoEnt,
    Exist,
    NotDir,
    IsDir,
    NotEmpty,
    Perm,
    Access,
    NoSpc,
    Dquot,
    ReadOnlyFs,
    Stale,
    BadHandle,
    Jukebox,
    Io,
    Other(nfsstat3),
}

impl From<nfsstat3> for Status {
    fn from(status: nfsstat3) -> Status {
        match status {
            nfsstat3::NFS3ERR_NOENT => Status::NoEnt,
            nfsstat3::NFS3ERR_EXIST => Status::Exist,
            nfsstat3::NFS3ERR_NOTDIR => Status::NotDir,
            nfsstat3::NFS3ERR_ISDIR => Status::IsDir,
            nfsstat3::NFS3ERR_NOTEMPTY => Status::NotEmpty,
            nfsstat3::NFS3ERR_PERM => Status::Perm,
            nfsstat3::NFS3ERR_ACCES => Status::Access,
            nfsstat3::NFS3ERR_NOSPC => Status::NoSpc,
            nfsstat3::NFS3ERR_DQUOT => Status::Dquot,
            nfsstat3::NFS3ERR_ROFS => Status::ReadOnlyFs,
            nfsstat3::NFS3ERR_STALE => Status::Stale,
            nfsstat3::NFS3ERR_BADHANDLE => Status::BadHandle,
            nfsstat3::NFS3ERR_JUKEBOX => Status::Jukebox,
            nfsstat3::NFS3ERR_IO => Status::Io,
            other => Status::Other(other),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Status::NoEnt => "no such file or directory (NFS3ERR_NOENT)",
            Status::Exist => "already exists (NFS3ERR_EXIST)",
            Status::NotDir => "not a directory (NFS3ERR_NOTDIR)",
            Status::IsDir => "is a directory (NFS3ERR_ISDIR)",
            Status::NotEmpty => "directory not empty (NFS3ERR_NOTEMPTY)",
            Status::Perm | Status::Access => "permission denied (NFS3ERR_ACCES)",
            Status::NoSpc => "no space left on the server (NFS3ERR_NOSPC)",
            Status::Dquot => "quota exceeded (NFS3ERR_DQUOT)",
            Status::ReadOnlyFs => "read-only export (NFS3ERR_ROFS)",
            Status::Stale | Status::BadHandle => "stale file handle (NFS3ERR_STALE)",
            Status::Jukebox => "server busy (NFS3ERR_JUKEBOX)",
            Status::Io => "I/O error on the server (NFS3ERR_IO)",
            Status::Other(status) => return write!(f, "{status}"),
        };
        f.write_str(text)
    }
}

/// Why an NFS operation failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server answered with an error status.
    Status {
        procedure: &'static str,
        status: Status,
    },
    /// The server refused the credentials (RPC `AUTH_ERROR`).
    Denied(String),
    /// The connection failed: refused, reset, timed out, or a reply that does not parse. The
    /// connection is dropped; a new one may succeed.
    Transport(String),
    /// A COMMIT's write verifier differs from the WRITEs': the server restarted and may have
    /// lost the unstable data, which must be written again.
    VerifierChanged,
}

impl Failure {
    pub(super) fn status(&self) -> Option<Status> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the same operation, started again (on a new connection, after re-resolving
    /// handles), can succeed.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            Failure::Transport(_) | Failure::VerifierChanged => true,
            Failure::Status { status, .. } => matches!(
                status,
                Status::Jukebox | Status::Stale | Status::BadHandle | Status::Io
            ),
            Failure::Denied(_) => false,
        }
    }

    /// A handle the sink cached no longer names anything (a directory was removed and made again).
    pub(super) fn is_stale(&self) -> bool {
        matches!(self.status(), Some(Status::Stale | Status::BadHandle))
    }

    fn from_rpc(err: RpcError) -> Failure {
        match err {
            RpcError::Auth(stat) => Failure::Denied(format!("{stat:?}")),
            other => Failure::Transport(other.to_string()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status { procedure, status } => write!(f, "{procedure} failed: {status}"),
            Failure::Denied(reason) => write!(f, "the server refused the credentials: {reason}"),
            Failure::Transport(reason) => write!(f, "connection failed: {reason}"),
            Failure::VerifierChanged => {
                f.write_str("the server restarted during the write (write verifier changed)")
            }
        }
    }
}

/// A blocking TCP stream as `nfs3_client`'s transport: each "async" call completes at once.
struct Tcp(TcpStream);

impl Tcp {
    fn connect(addr: SocketAddr) -> std::io::Result<Tcp> {
        let stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT)?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        stream.set_write_timeout(Some(CALL_TIMEOUT))?;
        // Requests are written in pieces (record mark, header, payload): never wait for acks.
        stream.set_nodelay(true)?;
        Ok(Tcp(stream))
    }
}

impl AsyncRead for Tcp {
    /// A read of 0 bytes into a non-empty buffer is the server closing the connection: an
    /// error (a lost connection, retried on a new one), never a value the RPC layer could
    /// loop on.
    /// A read that waits [`CALL_TIMEOUT`] for data fails with [`std::io::ErrorKind::TimedOut`],
    /// saying so (the socket reports it as "resource temporarily unavailable").
    async fn async_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf).map_err(|e| timed_out(e, "no reply"))? {
            0 if !buf.is_empty() => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the NFS server closed the connection",
            )),
            n => Ok(n),
        }
    }
}

impl AsyncWrite for Tcp {
    async fn async_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| timed_out(e, "the request was not accepted"))
    }
}

/// A socket timeout (`EAGAIN` from a blocking socket with a timeout) as a plain statement of
/// what did not happen in time; other errors unchanged.
fn timed_out(error: std::io::Error, what: &str) -> std::io::Error {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{what} from the NFS server within {} s",
                CALL_TIMEOUT.as_secs()
            ),
        ),
        _ => error,
    }
}

/// AUTH_SYS (AUTH_UNIX) credentials of this process: uid, gid and host name.
fn credentials() -> opaque_auth<'static> {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let gid = rustix::process::getegid().as_raw();
    opaque_auth::auth_unix(&auth_unix {
        stamp: rand::random(),
        machinename: Opaque::owned(host.into_bytes()),
        uid: rustix::process::geteuid().as_raw(),
        gid,
        gids: vec![gid],
    })
}

/// Where the NFS service is and who we are to it.
#[derive(Clone)]
pub(super) struct Server {
    addr: SocketAddr,
    credentials: opaque_auth<'static>,
}

impl Server {
    fn connect(&self) -> Result<Nfs3Client<Tcp>, Failure> {
        let tcp = Tcp::connect(self.addr)
            .map_err(|e| Failure::Transport(format!("connect to {}: {e}", self.addr)))?;
        Ok(Nfs3Client::new_with_auth(
            tcp,
            self.credentials.clone(),
            opaque_auth::default(),
        ))
    }
}

/// What the server says about sizes, from FSINFO.
pub(super) struct Sizes {
    pub(super) read: u32,
    pub(super) write: u32,
}

/// What [`mount_export`] found.
pub(super) struct Mounted {
    pub(super) server: Server,
    /// The export's path as the MOUNT service named it.
    pub(super) export: String,
    /// The export's root directory.
    pub(super) root: Handle,
    /// Path components below the export root that lead to the repository.
    pub(super) below: Vec<String>,
    /// Preferred transfer sizes, each clamped to `4 KiB..=max_transfer`.
    pub(super) sizes: Sizes,
}

/// Why [`mount_export`] failed.
#[derive(Debug)]
pub(super) enum MountError {
    /// No service answered (no portmapper, nothing listening).
    Unreachable(String),
    /// The MOUNT service refused every candidate export for lack of permission.
    Denied(String),
    /// No export that this host may mount contains the path (servers hide exports closed to
    /// a host, so "not exported" and "not to you" look alike); the exports the server lists.
    NoExport { exports: Vec<String> },
    /// The export cannot hold a repository.
    Unsuitable(String),
}

/// Finds the export holding `path` on `host`: asks the portmapper (port 111) for the MOUNT
/// service, then tries to mount `path` and each of its ancestors, longest first, so
/// `/srv/nfs/backups/vm1` works whether the export is `/srv/nfs` or `/srv/nfs/backups`. The
/// NFS service is at `nfs_port`, else where the portmapper says, else 2049.
pub(super) fn mount_export(
    host: &str,
    nfs_port: Option<u16>,
    path: &[String],
    max_transfer: u32,
) -> Result<Mounted, MountError> {
    let ip = (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| MountError::Unreachable(format!("cannot resolve host {host}")))?
        .ip();
    let at = |port| SocketAddr::new(ip, port);
    let unreachable = |what: &str, err: &dyn fmt::Display| {
        MountError::Unreachable(format!("{what} of {host} does not answer: {err}"))
    };
    let portmapper = "the portmapper (rpcbind, port 111)";
    let tcp = Tcp::connect(at(PORTMAPPER_PORT)).map_err(|e| unreachable(portmapper, &e))?;
    let mut ports = PortmapperClient::new(tcp);
    let mount_port = block_on(ports.getport(mnt::PROGRAM, mnt::VERSION, IPPROTO_TCP))
        .map_err(|e| unreachable(&format!("{portmapper} for MOUNT v3"), &e))?;
    let nfs_port = match nfs_port {
        Some(port) => port,
        None => block_on(ports.getport(p::PROGRAM, p::VERSION, IPPROTO_TCP)).unwrap_or(NFS_PORT),
    };

    let credentials = credentials();
    let tcp = Tcp::connect(at(mount_port)).map_err(|e| unreachable("the MOUNT service", &e))?;
    let mut mount = MountClient::new_with_auth(tcp, credentials.clone(), opaque_auth::default());
    let mut denied = None;
    let mut found = None;
    for depth in (0..=path.len()).rev() {
        let candidate = format!("/{}", path[..depth].join("/"));
        let request = dirpath(Opaque::owned(candidate.clone().into_bytes()));
        match block_on(mount.mnt(request)) {
            Ok(ok) => {
                let root = nfs_fh3 {
                    data: Opaque::owned(ok.fhandle.0.to_vec()),
                };
                found = Some((candidate, root, depth));
                break;
            }
            Err(RpcMountError::Denied(mountstat3::MNT3ERR_ACCES | mountstat3::MNT3ERR_PERM)) => {
                denied.get_or_insert(candidate);
            }
            Err(RpcMountError::Denied(_)) => {}
            Err(RpcMountError::Rpc(err)) => return Err(unreachable("the MOUNT service", &err)),
        }
    }
    let Some((export, root, depth)) = found else {
        // Some servers (ganesha) answer MNT3ERR_ACCES for paths they do not export at all: the
        // export list tells a refusal from a path outside every export.
        let exports: Vec<String> = block_on(mount.export())
            .map(|list| {
                list.0
                    .iter()
                    .map(|node| String::from_utf8_lossy(node.ex_dir.0.as_ref()).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let holds = |export: &str| {
            let export = export.trim_end_matches('/');
            let wanted = format!("/{}", path.join("/"));
            wanted == export || wanted.starts_with(&format!("{export}/"))
        };
        return Err(match denied {
            Some(candidate) if exports.iter().any(|e| holds(e)) => MountError::Denied(format!(
                "the server refuses to export {candidate} to this host"
            )),
            _ => MountError::NoExport { exports },
        });
    };

    let server = Server {
        addr: at(nfs_port),
        credentials,
    };
    let pool = Pool::new(server.clone());
    let info = pool
        .conn()
        .and_then(|mut conn| conn.fsinfo(&root))
        .map_err(|e| unreachable(&format!("the NFS service at {}", server.addr), &e))?;
    if info.properties & FSF3_LINK == 0 {
        return Err(MountError::Unsuitable(format!(
            "the export {export} does not support hard links, which put-if-absent needs"
        )));
    }
    let transfer = |preferred: u32, max: u32| {
        let size = if preferred > 0 { preferred } else { max };
        size.clamp(4096, max_transfer)
    };
    Ok(Mounted {
        server,
        export,
        root,
        below: path[depth..].to_vec(),
        sizes: Sizes {
            read: transfer(info.rtpref, info.rtmax),
            write: transfer(info.wtpref, info.wtmax),
        },
    })
}

/// Idle connections to one NFS service. Connections are made on demand, so at most as many
/// exist as threads have used the sink at once (the engine's uploader count).
pub(super) struct Pool {
    server: Server,
    idle: Mutex<Vec<Nfs3Client<Tcp>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("server", &self.server.addr)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(super) fn new(server: Server) -> Pool {
        Pool {
            server,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one.
    pub(super) fn conn(&self) -> Result<Conn<'_>, Failure> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let client = match idle {
            Some(client) => client,
            None => self.server.connect()?,
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
        })
    }
}

/// File attributes the sink uses.
#[derive(Debug, Clone)]
pub(super) struct Attr {
    kind: ftype3,
    pub(super) size: u64,
    pub(super) fileid: u64,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub(super) mtime: (u32, u32),
}

impl Attr {
    pub(super) fn is_file(&self) -> bool {
        self.kind == ftype3::NF3REG
    }

    pub(super) fn is_dir(&self) -> bool {
        self.kind == ftype3::NF3DIR
    }
}

impl From<fattr3> for Attr {
    fn from(attr: fattr3) -> Attr {
        Attr {
            kind: attr.type_,
            size: attr.size,
            fileid: attr.fileid,
            mtime: (attr.mtime.seconds, attr.mtime.nseconds),
        }
    }
}

fn attr_of(attr: Nfs3Option<fattr3>) -> Option<Attr> {
    match attr {
        Nfs3Option::Some(attr) => Some(attr.into()),
        Nfs3Option::None => None,
    }
}

/// One directory entry from READDIRPLUS.
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) attr: Option<Attr>,
    pub(super) handle: Option<Handle>,
}

/// One READDIRPLUS page.
pub(super) struct Page {
    pub(super) entries: Vec<Entry>,
    /// Where the next page starts.
    pub(super) cookie: u64,
    pub(super) verifier: CookieVerf,
    pub(super) eof: bool,
}

/// The directory's cookie verifier, handed back with every page request after the first.
pub(super) type CookieVerf = [u8; 8];

/// The verifier WRITE and COMMIT return; it changes when the server restarts.
pub(super) type WriteVerf = [u8; 8];

/// What one WRITE did.
pub(super) struct Written {
    pub(super) count: u32,
    /// The data is only in the server's memory until a COMMIT.
    pub(super) unstable: bool,
    pub(super) verifier: WriteVerf,
}

/// One connection, returned to its [`Pool`] on drop unless a transport failure broke it.
/// Each method is one NFS procedure.
pub(super) struct Conn<'p> {
    pool: &'p Pool,
    client: Option<Nfs3Client<Tcp>>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(client);
        }
    }
}

fn dirop<'a>(dir: &Handle, name: &'a str) -> diropargs3<'a> {
    diropargs3 {
        dir: dir.clone(),
        name: filename3::from(name.as_bytes()),
    }
}

fn mode(mode: u32) -> sattr3 {
    sattr3 {
        mode: Nfs3Option::Some(mode),
        ..sattr3::default()
    }
}

impl Conn<'_> {
    /// Runs one procedure; a transport failure drops the connection (its stream may hold half
    /// a reply), an NFS error status becomes [`Failure::Status`].
    fn call<T, E>(
        &mut self,
        procedure: &'static str,
        f: impl AsyncFnOnce(&mut Nfs3Client<Tcp>) -> Result<Nfs3Result<T, E>, RpcError>,
    ) -> Result<T, Failure> {
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| Failure::Transport("connection already failed".into()))?;
        match block_on(f(client)) {
            Ok(Nfs3Result::Ok(value)) => Ok(value),
            Ok(Nfs3Result::Err((status, _))) => Err(Failure::Status {
                procedure,
                status: status.into(),
            }),
            Err(err) => {
                if !err.is_connection_reusable() {
                    self.client = None;
                }
                Err(Failure::from_rpc(err))
            }
        }
    }

    fn fsinfo(&mut self, root: &Handle) -> Result<p::FSINFO3resok, Failure> {
        let args = p::FSINFO3args::from(root.clone());
        self.call("FSINFO", async |c| c.fsinfo(&args).await)
    }

    /// LOOKUP of `name` in `dir`: its handle, and its attributes when the reply has them.
    pub(super) fn lookup(
        &mut self,
        dir: &Handle,
        name: &str,
    ) -> Result<(Handle, Option<Attr>), Failure> {
        let args = p::LOOKUP3args {
            what: dirop(dir, name),
        };
        let found = self.call("LOOKUP", async |c| c.lookup(&args).await)?;
        Ok((found.object, attr_of(found.obj_attributes)))
    }

    pub(super) fn getattr(&mut self, object: &Handle) -> Result<Attr, Failure> {
        let args = p::GETATTR3args::from(object.clone());
        let got = self.call("GETATTR", async |c| c.getattr(&args).await)?;
        Ok(got.obj_attributes.into())
    }

    /// LOOKUP, with the attributes fetched separately when the reply lacks them.
    pub(super) fn lookup_attr(
        &mut self,
        dir: &Handle,
        name: &str,
    ) -> Result<(Handle, Attr), Failure> {
        let (handle, attr) = self.lookup(dir, name)?;
        let attr = match attr {
            Some(attr) => attr,
            None => self.getattr(&handle)?,
        };
        Ok((handle, attr))
    }

    /// CREATE in GUARDED mode (fails with `NFS3ERR_EXIST` if `name` exists) with `file_mode`.
    pub(super) fn create_new(
        &mut self,
        dir: &Handle,
        name: &str,
        file_mode: u32,
    ) -> Result<Handle, Failure> {
        let args = p::CREATE3args {
            where_: dirop(dir, name),
            how: createhow3::GUARDED(mode(file_mode)),
        };
        let created = self.call("CREATE", async |c| c.create(&args).await)?;
        match created.obj {
            Nfs3Option::Some(handle) => Ok(handle),
            Nfs3Option::None => Ok(self.lookup(dir, name)?.0),
        }
    }

    pub(super) fn mkdir(
        &mut self,
        dir: &Handle,
        name: &str,
        dir_mode: u32,
    ) -> Result<Handle, Failure> {
        let args = p::MKDIR3args {
            where_: dirop(dir, name),
            attributes: mode(dir_mode),
        };
        let made = self.call("MKDIR", async |c| c.mkdir(&args).await)?;
        match made.obj {
            Nfs3Option::Some(handle) => Ok(handle),
            Nfs3Option::None => Ok(self.lookup(dir, name)?.0),
        }
    }

    pub(super) fn write_unstable(
        &mut self,
        file: &Handle,
        offset: u64,
        data: &[u8],
    ) -> Result<Written, Failure> {
        let args = p::WRITE3args {
            file: file.clone(),
            offset,
            count: data.len() as u32,
            stable: stable_how::UNSTABLE,
            data: Opaque::borrowed(data),
        };
        let written = self.call("WRITE", async |c| c.write(&args).await)?;
        Ok(Written {
            count: written.count,
            unstable: written.committed == stable_how::UNSTABLE,
            verifier: written.verf.0,
        })
    }

    /// COMMIT of the whole file; returns the server's write verifier.
    pub(super) fn commit(&mut self, file: &Handle) -> Result<WriteVerf, Failure> {
        let args = p::COMMIT3args {
            file: file.clone(),
            offset: 0,
            count: 0,
        };
        Ok(self.call("COMMIT", async |c| c.commit(&args).await)?.verf.0)
    }

    /// One READ: up to `count` bytes at `offset`, and whether it reached the end of the file.
    pub(super) fn read(
        &mut self,
        file: &Handle,
        offset: u64,
        count: u32,
    ) -> Result<(Vec<u8>, bool), Failure> {
        let args = p::READ3args {
            file: file.clone(),
            offset,
            count,
        };
        let read = self.call("READ", async |c| c.read(&args).await)?;
        Ok((read.data.0.into_owned(), read.eof))
    }

    /// LINK: gives `file` the additional name `name` in `dir`; `NFS3ERR_EXIST` if taken.
    pub(super) fn link(&mut self, file: &Handle, dir: &Handle, name: &str) -> Result<(), Failure> {
        let args = p::LINK3args {
            file: file.clone(),
            link: dirop(dir, name),
        };
        self.call("LINK", async |c| c.link(&args).await).map(drop)
    }

    /// RENAME within one directory, replacing `to` atomically if it exists.
    pub(super) fn rename(&mut self, dir: &Handle, from: &str, to: &str) -> Result<(), Failure> {
        let args = p::RENAME3args {
            from: dirop(dir, from),
            to: dirop(dir, to),
        };
        self.call("RENAME", async |c| c.rename(&args).await)
            .map(drop)
    }

    pub(super) fn remove(&mut self, dir: &Handle, name: &str) -> Result<(), Failure> {
        let args = p::REMOVE3args {
            object: dirop(dir, name),
        };
        self.call("REMOVE", async |c| c.remove(&args).await)
            .map(drop)
    }

    pub(super) fn rmdir(&mut self, dir: &Handle, name: &str) -> Result<(), Failure> {
        let args = p::RMDIR3args {
            object: dirop(dir, name),
        };
        self.call("RMDIR", async |c| c.rmdir(&args).await).map(drop)
    }

    /// One READDIRPLUS page starting after `cookie`.
    pub(super) fn readdirplus(
        &mut self,
        dir: &Handle,
        cookie: u64,
        verifier: CookieVerf,
    ) -> Result<Page, Failure> {
        let args = p::READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf: cookieverf3(verifier),
            dircount: DIR_COUNT,
            maxcount: DIR_MAX,
        };
        let page = self.call("READDIRPLUS", async |c| c.readdirplus(&args).await)?;
        let mut next = cookie;
        let entries = page
            .reply
            .entries
            .0
            .into_iter()
            .map(|entry| {
                next = entry.cookie;
                Entry {
                    name: String::from_utf8_lossy(entry.name.as_ref()).into_owned(),
                    attr: attr_of(entry.name_attributes),
                    handle: match entry.name_handle {
                        Nfs3Option::Some(handle) => Some(handle),
                        Nfs3Option::None => None,
                    },
                }
            })
            .collect();
        Ok(Page {
            entries,
            cookie: next,
            verifier: page.cookieverf.0,
            eof: page.reply.eof,
        })
    }
}
