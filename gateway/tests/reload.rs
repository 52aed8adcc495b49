//! SIGHUP on the real `hj212-gateway` binary: a valid configuration replaces the running one (the
//! uplink moves to another platform address, nothing queued is lost), an invalid one is logged and
//! ignored, and one that validates but cannot start (its metrics port is taken) falls back to the
//! configuration that ran before.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hj212_gateway::{SledStore, Store as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
#[path = "common/recorder.rs"]
mod recorder;
use recorder::{Seen, qn_cn};

const WAIT: Duration = Duration::from_secs(20);

async fn platform(stop: &CancellationToken) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    recorder::serve(listener, seen.clone(), common::MN, common::PW, Duration::ZERO, 1, stop.clone());
    (addr, seen)
}

fn received(seen: &Mutex<Seen>) -> usize {
    seen.lock().unwrap().receipts.len()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stderr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.stderr")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_configuration_and_keeps_running_on_a_bad_one() {
    let dir = common::temp_dir("reload");
    let pty = common::analyzer_on_pty(common::cod_simulator());
    let stop = CancellationToken::new();
    let (addr_a, seen_a) = platform(&stop).await;
    let (addr_b, seen_b) = platform(&stop).await;
    let config = common::write_daemon_config(&dir, &pty.path, &addr_a, "");
    let mut child = common::spawn_daemon(&config, &dir);
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    until("uploads at platform A", || received(&seen_a) >= 3).await;

    // 1. A valid configuration: the uplink moves to B.
    common::write_daemon_config(&dir, &pty.path, &addr_b, "");
    kill(pid, Signal::SIGHUP).unwrap();
    until("uploads at platform B after the reload", || received(&seen_b) >= 3).await;
    until("A's connection to close", || seen_a.lock().unwrap().conns.iter().all(|c| c.closed.is_some())).await;
    let a_final = received(&seen_a);
    assert!(stderr(&dir).contains("Configuration reloaded."), "{}", stderr(&dir));

    // 2. An invalid one: logged, ignored, data keeps flowing to B.
    std::fs::write(&config, "[acquisition]\nmin_interval_mins = 7\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    until("the refusal in the log", || stderr(&dir).contains("the running one is kept")).await;
    assert!(stderr(&dir).contains("acquisition.min_interval_mins"), "the log does not name the setting");
    let b_now = received(&seen_b);
    until("uploads at B after the bad reload", || received(&seen_b) >= b_now + 3).await;
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited on a bad configuration");

    // 3. Valid but cannot start (the metrics port is taken): back to the previous configuration.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = format!("[metrics]\naddress = \"{}\"\n", taken.local_addr().unwrap());
    common::write_daemon_config(&dir, &pty.path, &addr_a, &extra);
    kill(pid, Signal::SIGHUP).unwrap();
    until("the fallback in the log", || stderr(&dir).contains("going back to the previous one")).await;
    let b_now = received(&seen_b);
    until("uploads at B on the previous configuration", || received(&seen_b) >= b_now + 3).await;
    assert_eq!(received(&seen_a), a_final, "platform A got uploads from a configuration that did not start");
    drop(taken);

    // A clean stop, then nothing lost: every upload logged as sent reached A or B or is queued.
    kill(pid, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no clean stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}; {}", stderr(&dir));
    stop.cancel();
    let store = SledStore::open(&dir.join("store"), &["p".to_string()], u64::MAX).expect("reopen the store");
    let queued: HashSet<String> = store
        .queue_range("p", 0, usize::MAX)
        .unwrap()
        .iter()
        .filter_map(|(_, r)| qn_cn(&r.frame))
        .map(|(q, _)| q)
        .collect();
    let got: HashSet<String> =
        [&seen_a, &seen_b].iter().flat_map(|s| s.lock().unwrap().receipts.clone()).map(|r| r.qn).collect();
    let log = std::fs::read_to_string(dir.join("packets.log")).unwrap();
    let mut sent = 0;
    for line in log.lines() {
        let Ok(rec) = hj212_codec::log::Record::parse_line(line) else { continue };
        if rec.direction != hj212_codec::log::Direction::Out {
            continue;
        }
        let Some((qn, cn)) = qn_cn(&rec.frame) else { continue };
        if cn >= 9000 {
            continue;
        }
        sent += 1;
        assert!(got.contains(&qn) || queued.contains(&qn), "QN {qn} (CN {cn}) sent but neither received nor queued");
    }
    assert!(sent >= 9, "too little traffic: {sent}");
    let _ = std::fs::remove_dir_all(&dir);
}
