//! The NFS sink against a real NFS server (nfs-ganesha, NFSv3 over TCP on 127.0.0.1).

#[path = "support/nfs_server.rs"]
#[allow(dead_code)]
mod nfs_server;
#[path = "support/outage.rs"]
mod outage;
#[path = "support/tcp_proxy.rs"]
#[allow(dead_code)]
mod tcp_proxy;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use ferry_sinks::nfs::{NfsConfig, NfsSink};
use ferry_sinks::retry::RetryPolicy;
use ferry_sinks::{ObjectKey, PutMode, PutOutcome, Sink, SinkError, conformance};
use nfs_server::{Scratch, closing_server, config_of, nfs_root, silent_server};
use tcp_proxy::TcpProxy;

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

#[test]
fn conformance_on_an_export() {
    let scratch = Scratch::new("conformance");
    let sink = NfsSink::create(&scratch.config()).unwrap();
    conformance::run_all(&sink);
}

#[test]
fn leftovers_of_interrupted_puts_on_an_export() {
    let scratch = Scratch::new("leftovers");
    let sink = NfsSink::create(&scratch.config()).unwrap();
    // What a put killed between CREATE and RENAME leaves: a temp file on the export.
    let plant = |dir: &str, name: &str, data: &[u8]| {
        let dir = scratch.local.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    conformance::leftovers_are_found_and_removed(&sink, &plant);
}

#[test]
fn remove_empty_dirs_removes_a_tree_without_files_and_keeps_what_holds_one() {
    let scratch = Scratch::new("prune");
    let sink = NfsSink::create(&scratch.config()).unwrap();
    for k in ["gone/a/b/x", "gone/c/y", "part/empty/z", "part/keep/obj"] {
        sink.put(&key(k), b"data", PutMode::Create).unwrap();
    }
    for k in ["gone/a/b/x", "gone/c/y", "part/empty/z"] {
        sink.delete(&key(k)).unwrap();
    }
    sink.remove_empty_dirs("gone/").unwrap();
    sink.remove_empty_dirs("part/").unwrap();
    sink.remove_empty_dirs("never/was/").unwrap();
    assert!(!scratch.local.join("gone").exists());
    assert!(!scratch.local.join("part/empty").exists());
    assert_eq!(sink.get(&key("part/keep/obj")).unwrap(), b"data");
    // The cached handles of removed directories are gone too: a put there works again.
    sink.put(&key("gone/a/b/x"), b"again", PutMode::Create)
        .unwrap();
    assert_eq!(sink.get(&key("gone/a/b/x")).unwrap(), b"again");
}

#[test]
fn create_makes_private_directories_and_files() {
    let scratch = Scratch::new("modes");
    let mut config = scratch.config();
    config.path.extend(["deeper".to_owned(), "repo".to_owned()]);
    let sink = NfsSink::create(&config).unwrap();
    sink.put(&key("chunks/ab/obj"), b"data", PutMode::Create)
        .unwrap();
    let repo = scratch.local.join("deeper/repo");
    for dir in [
        scratch.local.clone(),
        repo.clone(),
        repo.join("chunks"),
        repo.join("chunks/ab"),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let file = std::fs::metadata(repo.join("chunks/ab/obj")).unwrap();
    assert_eq!(file.permissions().mode() & 0o777, 0o600);
    assert_eq!(file.nlink(), 1, "the temp name was not removed");
    assert_eq!(std::fs::read(repo.join("chunks/ab/obj")).unwrap(), b"data");
    assert!(
        sink.location().starts_with("nfs://127.0.0.1/"),
        "{}",
        sink.location()
    );
}

#[test]
fn open_of_a_missing_directory_names_it() {
    let scratch = Scratch::new("missing");
    let err = NfsSink::open(&scratch.config()).unwrap_err();
    assert!(
        matches!(&err, SinkError::Location { reason, .. } if reason.contains("does not exist")),
        "{err}"
    );
    assert!(!scratch.local.exists(), "open created the directory");
}

#[test]
fn a_path_outside_every_export_is_named() {
    nfs_server::ensure_server();
    let config = config_of("nfs://127.0.0.1/no/such/export/repo");
    let err = NfsSink::open(&config).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, SinkError::Location { .. }), "{shown}");
    assert!(
        shown
            .contains("no export of 127.0.0.1 that this host may mount holds /no/such/export/repo"),
        "{shown}"
    );
    // The message lists what the server does export.
    let export = nfs_root().join("export");
    assert!(shown.contains(export.to_str().unwrap()), "{shown}");
}

/// The server maps every user of the `squashed` export to nobody, who may not write into the
/// root-owned 0700 directory `private`: puts and listings are refused by name.
#[test]
fn credentials_the_server_does_not_accept_are_access_denied() {
    nfs_server::ensure_server();
    let url = format!(
        "nfs://127.0.0.1{}/private",
        nfs_root().join("squashed").display()
    );
    let sink = NfsSink::open(&config_of(&url)).unwrap();
    let err = sink.put(&key("obj"), b"x", PutMode::Create).unwrap_err();
    assert!(
        matches!(&err, SinkError::AccessDenied { reason, .. } if reason.contains("permission denied")),
        "{err}"
    );
    let err = sink
        .list("")
        .unwrap()
        .find_map(Result::err)
        .expect("list refused");
    assert!(matches!(err, SinkError::AccessDenied { .. }), "{err}");
}

#[test]
fn a_read_only_export_refuses_puts_by_name() {
    nfs_server::ensure_server();
    let url = format!("nfs://127.0.0.1{}", nfs_root().join("readonly").display());
    let sink = NfsSink::open(&config_of(&url)).unwrap();
    let err = sink.put(&key("obj"), b"x", PutMode::Create).unwrap_err();
    assert!(
        matches!(&err, SinkError::AccessDenied { reason, .. } if reason.contains("read-only")),
        "{err}"
    );
}

#[test]
fn no_server_on_a_host_is_a_location_error() {
    // 127.0.0.2 is loopback too, but the test server binds 127.0.0.1 only.
    let config = NfsConfig {
        host: "127.0.0.2".into(),
        port: None,
        path: vec!["export".into()],
    };
    // A filer not answering yet is waited for (here: 1 s), then named.
    let err = NfsSink::open_with(&config, RetryPolicy::with_deadline(Duration::from_secs(1)))
        .unwrap_err();
    // rpcbind listens on every address, so it answers; the MOUNT service (127.0.0.1 only)
    // does not.
    assert!(
        matches!(&err, SinkError::Location { reason, .. }
            if reason.contains("127.0.0.2") && reason.contains("does not answer")
                && reason.contains("gave up after")),
        "{err}"
    );
}

/// A server that reads each request and then closes the connection cleanly (FIN, no reset):
/// every try ends in a clear error at once. The end of the stream used to be handed to the RPC
/// layer as an empty read, which it retried forever at 100% CPU, deaf to SIGTERM.
#[test]
fn a_server_that_closes_connections_is_an_error_not_a_hang() {
    let port = closing_server();
    // The real export (MOUNT answers through rpcbind), NFS itself on the closing port.
    let scratch = Scratch::new("closer");
    let config = NfsConfig {
        port: Some(port),
        ..scratch.config()
    };
    let err = NfsSink::open_with(&config, RetryPolicy::with_deadline(Duration::from_secs(1)))
        .unwrap_err();
    assert!(
        matches!(&err, SinkError::Location { reason, .. }
            if reason.contains("closed the connection") && reason.contains("gave up after")),
        "{err}"
    );
}

/// What a crash between CREATE of the temp file and its LINK leaves: invisible to get and list,
/// and the key stays free.
#[test]
fn an_interrupted_put_leaves_nothing_visible() {
    let scratch = Scratch::new("interrupted");
    let sink = NfsSink::create(&scratch.config()).unwrap();
    sink.put(&key("chunks/ab/kept"), b"kept", PutMode::Create)
        .unwrap();
    std::fs::write(
        scratch.local.join("chunks/ab/.tmp-0123456789abcdef"),
        b"partial",
    )
    .unwrap();
    std::fs::write(scratch.local.join(".tmp-fedcba9876543210"), b"partial").unwrap();
    let listed: Vec<String> = sink
        .list("")
        .unwrap()
        .map(|m| m.unwrap().key.to_string())
        .collect();
    assert_eq!(listed, ["chunks/ab/kept"]);
    assert_eq!(
        sink.put(&key("chunks/ab/new"), b"new", PutMode::Create)
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(sink.get(&key("chunks/ab/new")).unwrap(), b"new");
}

/// Large objects cross many WRITE/READ transfers; ranged reads start mid-transfer.
#[test]
fn objects_larger_than_one_transfer() {
    let scratch = Scratch::new("large");
    let sink = NfsSink::create(&scratch.config()).unwrap();
    let data: Vec<u8> = (0..(9u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
    sink.put(&key("big"), &data, PutMode::Create).unwrap();
    assert_eq!(sink.get(&key("big")).unwrap(), data);
    let (start, end) = ((3 << 20) - 5, (7 << 20) + 3);
    assert_eq!(
        sink.get_range(&key("big"), start as u64, end as u64)
            .unwrap(),
        &data[start..end]
    );
    assert_eq!(std::fs::read(scratch.local.join("big")).unwrap(), data);
}

/// A server that stops answering: the call fails after the 30 s call timeout and says so (the
/// socket's "resource temporarily unavailable" used to be the whole message).
#[test]
fn a_stalled_server_times_out_and_says_so() {
    let scratch = Scratch::new("stalled");
    let config = NfsConfig {
        port: Some(silent_server()),
        ..scratch.config()
    };
    let err = NfsSink::open_with(&config, RetryPolicy::with_deadline(Duration::ZERO)).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("no reply from the NFS server within 30 s"),
        "{shown}"
    );
    assert!(!shown.contains("temporarily unavailable"), "{shown}");
}

/// A proxy in front of the real NFS service, and a sink that reaches it through the proxy.
fn behind_proxy(scratch: &Scratch, retry: RetryPolicy) -> (TcpProxy, NfsSink) {
    NfsSink::create(&scratch.config()).unwrap();
    let proxy = TcpProxy::start("127.0.0.1:2049".parse().unwrap());
    let config = NfsConfig {
        port: Some(proxy.port),
        ..scratch.config()
    };
    let sink = NfsSink::open_with(&config, retry).unwrap();
    (proxy, sink)
}

/// The filer goes away for a while (failover, restart): a put started during the outage is
/// retried on new connections until it is back, and stores its object.
#[test]
fn an_outage_shorter_than_the_deadline_is_ridden_out() {
    let scratch = Scratch::new("outage");
    let (proxy, sink) = behind_proxy(&scratch, RetryPolicy::default());
    outage::a_put_rides_out_an_outage(&sink, &proxy);
}

/// A filer that stays away: the operation fails after the deadline, transient, and says how
/// often it was tried.
#[test]
fn a_lasting_outage_is_a_transient_error() {
    let scratch = Scratch::new("lasting");
    let (proxy, sink) = behind_proxy(&scratch, RetryPolicy::with_deadline(Duration::from_secs(1)));
    outage::a_lasting_outage_fails_transiently(&sink, &proxy);
}
