//! Checks of a remote sink across an outage, shared by the S3 and NFS tests: the sink reaches
//! its server through a [`TcpProxy`] the check takes down.

use ferry_sinks::{ObjectKey, PutMode, PutOutcome, Retry, Sink};

use crate::tcp_proxy::TcpProxy;

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// A server that goes away for a while (restart, failover, network blip): a put started during
/// the outage keeps trying until the server is back, and stores its whole object. The sink
/// must retry for longer than the check takes (the default deadline).
pub fn a_put_rides_out_an_outage(sink: &dyn Sink, proxy: &TcpProxy) {
    sink.put(&key("before"), b"up", PutMode::Create).unwrap();
    proxy.go_down();
    let chunk: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|scope| {
        let put = scope.spawn(|| sink.put(&key("chunks/ab/during"), &chunk, PutMode::Create));
        proxy.wait_for_refused(2);
        proxy.come_up();
        assert_eq!(put.join().unwrap().unwrap(), PutOutcome::Written);
    });
    assert_eq!(sink.get(&key("chunks/ab/during")).unwrap(), chunk);
}

/// A server that stays away: a read fails once the sink's (short) deadline has passed, as a
/// transient failure that says how often it was tried. Returns the error's message.
pub fn a_lasting_outage_fails_transiently(sink: &dyn Sink, proxy: &TcpProxy) -> String {
    sink.put(&key("kept"), b"x", PutMode::Create).unwrap();
    proxy.go_down();
    let err = sink.get(&key("kept")).unwrap_err();
    assert_eq!(err.retry(), Retry::Transient, "{err}");
    let shown = err.to_string();
    assert!(shown.contains("gave up after"), "{shown}");
    shown
}
