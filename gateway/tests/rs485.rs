//! RS-485 direction control on real serial devices (pseudo-terminals): the kernel RS-485 mode is
//! refused by a pty's driver, which is counted and logged while polling goes on; a DE line on a
//! GPIO `value` file is driven and left in receive; a DE line that cannot be driven fails the port.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hj212_gateway::config::{DeGpio, Rs485};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
#[path = "common/recorder.rs"]
mod recorder;
use recorder::Seen;

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the gateway on a pty analyzer with `port` edited by `edit`; returns the platform's record,
/// the gateway and its token once `ready` holds.
async fn run(
    name: &str,
    edit: impl FnOnce(&mut hj212_gateway::config::SerialPort),
) -> (Arc<Mutex<Seen>>, hj212_gateway::Gateway, CancellationToken, std::path::PathBuf, common::Pty) {
    let dir = common::temp_dir(name);
    let pty = common::analyzer_on_pty(common::cod_simulator());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    recorder::serve(listener, seen.clone(), common::MN, common::PW, Duration::ZERO, 7, stop.clone());
    let mut cfg = common::config(&dir, &pty.path, addr);
    edit(&mut cfg.serial[0]);
    let gw = hj212_gateway::start(cfg, stop.clone()).await.unwrap();
    (seen, gw, stop, dir, pty)
}

fn real_time_uploads(seen: &Mutex<Seen>) -> usize {
    seen.lock().unwrap().receipts.iter().filter(|r| r.cn == 2011).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_without_rs485_mode_is_counted_and_polled_anyway() {
    let (seen, gw, stop, dir, _pty) = run("rs485-pty", |p| {
        p.rs485 = Some(Rs485 { delay_rts_after_send_ms: 1, ..Rs485::default() });
    })
    .await;
    until("real-time data", || real_time_uploads(&seen) >= 3).await;
    assert!(gw.metrics().rs485_refused.load(Ordering::Relaxed) >= 1, "the refusal was not counted");
    let text = gw.metrics().render(gw.store().as_ref(), &["p".to_string()]);
    assert!(text.lines().any(|l| l.starts_with("hj212_gateway_rs485_refused_total ") && !l.ends_with(" 0")), "{text}");
    stop.cancel();
    gw.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpio_de_line_is_raised_for_each_request_and_left_in_receive() {
    // The "value file" is a FIFO, so that every write is seen in order (a sysfs file keeps only
    // the last one).
    let value = std::env::temp_dir().join(format!("hj212-de-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&value);
    nix::unistd::mkfifo(&value, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut reader = std::fs::OpenOptions::new().read(true).custom_flags(libc_o_nonblock()).open(&value).unwrap();
    let levels = Arc::new(Mutex::new(String::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (levels, done) = (levels.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !done.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(n) if n > 0 => levels.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let path = value.clone();
    let (seen, gw, stop, dir, _pty) = run("rs485-gpio", move |p| {
        p.de_gpio = Some(DeGpio { value_path: path, active_low: false });
    })
    .await;
    until("real-time data", || real_time_uploads(&seen) >= 3).await;
    stop.cancel();
    gw.wait().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    // Receive at open, then high before and low after every request; at rest it receives.
    let levels = levels.lock().unwrap().clone();
    let writes: Vec<&str> = levels.lines().collect();
    let requests = gw.metrics().poll_cycles.load(Ordering::Relaxed);
    assert_eq!(writes.first(), Some(&"0"), "{levels:?}");
    assert!(writes[1..].chunks(2).all(|p| p == ["1", "0"]), "not raised then lowered around each request: {levels:?}");
    assert!(writes.len() as u64 > 2 * requests, "{} writes for {requests} poll cycles", writes.len());
    assert_eq!(gw.metrics().port_failures.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_file(&value);
    let _ = std::fs::remove_dir_all(&dir);
}

fn libc_o_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_de_line_that_cannot_be_driven_fails_the_port() {
    let missing = std::env::temp_dir().join(format!("hj212-no-such-gpio-{}/value", std::process::id()));
    let (seen, gw, stop, dir, _pty) = run("rs485-nogpio", move |p| {
        p.de_gpio = Some(DeGpio { value_path: missing, active_low: false });
    })
    .await;
    until("a port failure", || gw.metrics().port_failures.load(Ordering::Relaxed) >= 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.metrics().poll_cycles.load(Ordering::Relaxed), 0, "polled without a DE line");
    assert_eq!(real_time_uploads(&seen), 0);
    stop.cancel();
    gw.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
