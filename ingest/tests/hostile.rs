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
        // Off: the replayed frames carry the site's real password (a captured frame does), so
        // they authenticate and rightly count against the site's budget. Wrong passwords do not
        // (`wrong_passwords_do_not_use_up_a_sites_rate_budget`).
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

/// An upload from the test site's MN with a wrong password and a Modbus CRC (low byte first).
fn forged_modbus(qn: &str) -> Vec<u8> {
    use hj212_codec::encode::OwnedPacket;
    use hj212_codec::packet::{Flag, Version};
    let mut p = OwnedPacket::new(Some(qn), "32", 2011, "000000", MN, Some(Flag::new(Version::V2017, false, true)));
    p.push_group([("DataTime", "20240102030400")]);
    p.push_group([("w01018-Rtd", "99.9"), ("w01018-Flag", "N")]);
    p.to_frame(hj212_codec::CrcVariant::ModbusLowFirst).unwrap()
}

/// The CRC variant a site is answered with is learnt only from frames that authenticate: a frame
/// that claims the site's MN with a wrong password and a Modbus CRC changes neither the site's
/// 9014s nor the platform's requests to it. (`Dau::frame` decodes strictly: a frame with any CRC
/// but the HJ 212 one fails it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_frame_cannot_switch_the_crc_a_site_is_answered_with() {
    let d = Daemon::start(|_| {}).await;
    let broker = d.handle().mqtt_addr();
    let mut sub = Subscriber::connect(broker).await;
    let mut site = Dau::connect(d.addr()).await;
    site.send(&upload("20240102030420001", 2011, true, PW)).await;
    assert_eq!(site.frame().await.field("CN"), Some("9014"));
    sub.next_on("hj212/").await;

    let mut forger = Dau::connect(d.addr()).await;
    for i in 0..5 {
        forger.send(&forged_modbus(&format!("2024010203042100{i}"))).await;
    }
    until("the forged frames to be refused", WAIT, || d.counter("auth_refused") == 5).await;
    forger.nothing().await;

    // A platform request to the site goes out in the site's own variant.
    mqtt_publish(broker, &format!("hj212/cmd/{MN}"), br#"{"id":"crc","cn":1062,"RtdInterval":30}"#).await;
    let request = site.frame().await;
    assert_eq!(request.field("CN"), Some("1062"));
    site.send(&upload("20240102030420002", 2011, true, PW)).await;
    let answer = site.frame().await;
    assert_eq!((answer.field("CN"), answer.field("QN")), (Some("9014"), Some("20240102030420002")));
    d.stop().await;
}

/// The per-MN rate limit counts only frames that authenticated: a flood with the site's MN and a
/// wrong password uses none of the site's budget (it is bounded by its own per-peer budget, past
/// which refusals are only counted), while the site's own frames over the limit are still dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_do_not_use_up_a_sites_rate_budget() {
    const LIMIT: u32 = 5;
    let d = Daemon::start(|c| c.limits.max_frames_per_minute_per_mn = LIMIT).await;
    let mut attacker = Dau::connect(d.addr()).await;
    for i in 0..20 {
        attacker.send(&upload(&format!("2024010203043{i:04}"), 2011, true, "000000")).await;
    }
    until("the flood to be refused", WAIT, || d.counter("auth_refused") == 20).await;
    assert_eq!(d.counter("auth_refused_throttled"), 20 - u64::from(LIMIT), "refusals past the peer's budget");
    assert_eq!(d.counter("frames_rate_limited"), 0);

    let mut site = Dau::connect(d.addr()).await;
    for i in 0..LIMIT {
        let qn = format!("2024010203044{i:04}");
        site.send(&upload(&qn, 2011, true, PW)).await;
        assert_eq!(site.frame().await.field("QN"), Some(qn.as_str()), "the site's frame {i} within its budget");
    }
    site.send(&upload("20240102030449999", 2011, true, PW)).await;
    site.nothing().await;
    assert_eq!(d.counter("frames_rate_limited"), 1, "the site's own frames are still limited");
    d.stop().await;
}

/// A client that sends uploads and never reads its answers: its 9014s pile up to
/// `limits.max_queued_answers`, then it is closed, logged and counted, while an honest site is
/// still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_closed() {
    let d = Daemon::start(|c| {
        c.limits.max_frames_per_minute_per_mn = 0;
        c.limits.max_queued_answers = 16;
    })
    .await;
    let addr = d.addr();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (_unread, mut wr) = stream.into_split();
    let sender = tokio::spawn(async move {
        let mut sent = 0u32;
        // Far more answers than the socket buffers hold; stops when the daemon closes it.
        while sent < 200_000 {
            let mut batch = Vec::new();
            for _ in 0..100 {
                batch.extend_from_slice(&upload(&format!("2024{sent:013}"), 2011, true, PW));
                sent += 1;
            }
            if wr.write_all(&batch).await.is_err() {
                break;
            }
        }
        sent
    });
    until("the unread connection to be closed", Duration::from_secs(60), || {
        d.counter("connections_unread_closed") == 1
    })
    .await;
    let sent = tokio::time::timeout(WAIT, sender).await.expect("the sender was not cut off").unwrap();
    assert!(sent < 200_000, "the daemon kept reading a client that does not read");
    until("the connection to be gone", WAIT, || d.counter("connections_open") == 0).await;

    let mut site = Dau::connect(addr).await;
    site.send(&upload("20240102030450000", 2011, true, PW)).await;
    assert_eq!(site.frame().await.field("QN"), Some("20240102030450000"));
    d.stop().await;
}
