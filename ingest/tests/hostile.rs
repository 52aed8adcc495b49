//! Hostile input: garbage, an endless frame, slowloris, 2000 idle connections, wrong passwords
//! and replayed frames, all at once, while an honest site keeps sending. The honest site's frames
//! must be published and acknowledged within a bound the whole time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The bound on frame → publish → 9014 for the honest site while the attack runs.
const HONEST_BOUND: Duration = Duration::from_secs(3);
const IDLE_CONNECTIONS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_stop_an_honest_one() {
    let d = Daemon::start(|c| {
        c.limits.max_connections = IDLE_CONNECTIONS + 100;
        c.limits.max_garbage_bytes = 4096;
        c.limits.frame_timeout_secs = 3;
        c.limits.max_frames_per_minute_per_mn = 0;
    })
    .await;
    let addr = d.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Garbage: reconnects and sprays bytes without a frame, again and again.
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        while !s.load(Ordering::Relaxed) {
            let Ok(mut c) = TcpStream::connect(addr).await else { continue };
            let mut buf = vec![0u8; 8192];
            for b in &mut buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            while c.write_all(&buf).await.is_ok() && !s.load(Ordering::Relaxed) {}
        }
    }));
    // An endless frame: a `##9999` header, then a stream that never ends.
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            let Ok(mut c) = TcpStream::connect(addr).await else { continue };
            let _ = c.write_all(b"##9999QN=").await;
            let chunk = [b'9'; 1024];
            while c.write_all(&chunk).await.is_ok() && !s.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }));
    // Slowloris: one byte of a valid frame per second.
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        let frame = upload("20240102030499999", 2011, true, PW);
        let mut c = TcpStream::connect(addr).await.unwrap();
        for b in frame {
            if s.load(Ordering::Relaxed) || c.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }));
    // Wrong passwords and replayed frames, as fast as the socket takes them.
    let s = stop.clone();
    tasks.push(tokio::spawn(async move {
        let wrong = upload("20240102030488888", 2011, true, "000000");
        let replay = upload("20240102030477777", 2011, false, PW);
        let mut c = TcpStream::connect(addr).await.unwrap();
        while !s.load(Ordering::Relaxed) {
            if c.write_all(&wrong).await.is_err() || c.write_all(&replay).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }));
    // Thousands of idle connections.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.expect("connect hung").unwrap());
    }
    until("the idle connections", WAIT, || d.counter("connections_open") as usize >= IDLE_CONNECTIONS).await;

    // The honest site, meanwhile.
    let mut sub = Subscriber::connect(d.handle().mqtt_addr()).await;
    let mut dau = Dau::connect(addr).await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let qn = format!("2024010203041{i:04}");
        let t = Instant::now();
        dau.send(&upload(&qn, 2011, true, PW)).await;
        let answer = tokio::time::timeout(HONEST_BOUND, dau.frame()).await.expect("honest 9014 too late");
        assert_eq!(answer.field("QN"), Some(qn.as_str()));
        loop {
            let (_, v) = tokio::time::timeout(HONEST_BOUND, sub.next()).await.expect("honest publish too late");
            if v["qn"] == qn.as_str() {
                break;
            }
        }
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("worst honest frame-to-9014-and-publish latency under attack: {worst:?}");

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    drop(idle);
    assert!(d.counter("connections_garbage_closed") >= 1, "garbage connections were not closed");
    assert!(d.counter("auth_refused") >= 10);
    assert!(d.counter("duplicates") >= 10);
    assert!(d.counter("connections_frame_timeout") >= 1, "the slowloris or endless frame was not cut");
    d.stop().await;
}
