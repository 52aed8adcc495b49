//! systemd notification of the binary: the test binds a unix datagram socket, passes it as
//! `NOTIFY_SOCKET` with a short `WATCHDOG_USEC`, and checks that `READY=1`, `STATUS=` and
//! `WATCHDOG=1` arrive. Every wait is bounded.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::UnixDatagram;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_notifies_ready_status_and_watchdog() {
    let dir = temp_dir();
    let listen = free_port();
    let file = dir.join("ingest.toml");
    let text = format!(
        "[[listeners]]\naddr = \"127.0.0.1:{listen}\"\n[mqtt]\nembedded_port = 0\n[metrics]\nlisten = \"\"\n\
         [spool]\npath = \"{}\"\n[packet_log]\npath = \"\"\n[quality]\nstate_path = \"{}\"\n\
         [[registry]]\nmn = \"{MN}\"\npassword = \"{PW}\"\n",
        dir.join("spool").display(),
        dir.join("quality.json").display(),
    );
    std::fs::write(&file, text).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hj212-ingest"))
        .arg("--config")
        .arg(&file)
        .arg("-q")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (mut ready, mut status, mut watchdogs) = (false, None::<String>, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = vec![0u8; 4096];
    // At 100 ms per ping, three pings arrive well within the bounded wait.
    while !(ready && status.is_some() && watchdogs >= 3) {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("missing messages: ready {ready}, status {status:?}, pings {watchdogs}"))
            .unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        for line in message.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => ready = true,
                Some(("WATCHDOG", "1")) => {
                    assert!(ready, "WATCHDOG=1 before READY=1");
                    watchdogs += 1;
                }
                Some(("STATUS", text)) => status = Some(text.to_string()),
                _ => {}
            }
        }
    }
    let status = status.unwrap();
    assert!(status.contains("0 site connections"), "{status}");
    assert!(status.contains("MQTT broker"), "{status}");

    let pid = child.id().unwrap();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let exit = tokio::time::timeout(WAIT, child.wait()).await.expect("the binary did not stop").unwrap();
    assert!(exit.success(), "{exit}");
    // STOPPING=1 follows the signal.
    let mut stopping = false;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await {
        stopping |= String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}
