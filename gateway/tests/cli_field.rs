//! The field commands of `hj212` (modbus, sim, poll, outbox, maintenance) as a user runs them:
//! the real binary against simulated analyzers on pseudo-terminals (the simulator runs here, on
//! the pty's master side; the CLI opens the slave path as it would `/dev/ttyUSB0`), and against
//! pymodbus, a Modbus implementation we did not write. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware::profile::{Code, Target, Value};
use firmware::sim::Simulator;

mod common;

fn hj212(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hj212"))
        .args(args)
        .env("HJ212_COLOR", "never")
        .stdin(Stdio::null())
        .output()
        .expect("hj212 runs")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hj212-cli-field-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills the child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ----- Pseudo-terminals -----

use common::{analyzer_on_pty, open_pty as pty};

fn cod_simulator(unit: Option<u8>) -> Arc<Mutex<Simulator>> {
    let mut profile = firmware::profile::OwnedProfile::from_profile(&firmware::profile::builtin::SURFACE_WATER_COD);
    if let Some(u) = unit {
        profile.set_unit(u);
    }
    let mut sim = Simulator::new(&profile.as_profile());
    sim.response_delay_us = 1_000;
    sim.set(&Target::Pollutant(Code::new("w01018")), Value::Number(42.5));
    sim.set(&Target::Status, Value::Code(1));
    sim.set(&Target::Info(Code::new("i13001")), Value::Number(1000.0));
    sim.set(&Target::Info(Code::new("i13008")), Value::Number(1.0));
    Arc::new(Mutex::new(sim))
}

// ----- modbus read / scan -----

#[test]
fn modbus_read_decodes_a_cdab_float_and_reports_exceptions_and_timeouts() {
    let line = analyzer_on_pty(cod_simulator(None));
    let path = line.path.clone();
    let port = path.to_str().unwrap();
    let base = ["modbus", "read", "--port", port, "--baud", "9600", "--unit", "1", "--fc", "3"];
    let out = hj212(&[&base[..], &["--addr", "0x1008", "--count", "2", "--type", "f32", "--order", "cdab"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("raw: 0x0000 0x422A"), "{stdout}");
    assert!(stdout.contains("0x1008 f32 cdab = 42.5"), "{stdout}");

    let out = hj212(
        &[&base[..], &["--addr", "0x1008", "--count", "2", "--type", "f32", "--order", "cdab", "--json"]].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["values"][0], 42.5);
    assert_eq!(v["registers"], serde_json::json!([0, 0x422A]));

    // An unmapped address: the device refuses with exception 2; exit 1, said clearly.
    let out = hj212(&[&base[..], &["--addr", "0x0000", "--count", "1"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("illegal data address"), "{}", text(&out));

    // Nobody at unit 9: a timeout; exit 1.
    let out = hj212(&["modbus", "read", "--port", port, "--unit", "9", "--addr", "0x1008", "--timeout-ms", "200"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no response before the timeout"), "{}", text(&out));

    // A port that does not exist: an IO error, exit 2.
    let out = hj212(&["modbus", "read", "--port", "/nonexistent/tty", "--addr", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn modbus_scan_finds_only_the_simulators_units() {
    let line = analyzer_on_pty(cod_simulator(Some(3)));
    let path = line.path.clone();
    let out = hj212(&[
        "modbus",
        "scan",
        "--port",
        path.to_str().unwrap(),
        "--from",
        "1",
        "--to",
        "6",
        "--addr",
        "0x1008",
        "--count",
        "2",
        "--timeout-ms",
        "100",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["found"], serde_json::json!([3]), "{}", text(&out));

    // A probe address the device does not map still finds it (an exception is an answer).
    let out =
        hj212(&["modbus", "scan", "--port", path.to_str().unwrap(), "--from", "2", "--to", "4", "--timeout-ms", "100"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("unit 3: exception 0x02"), "{stdout}");
    assert!(stdout.contains("1 of 3 units answered: 3"), "{stdout}");
}

// ----- sim analyzer / sim platform -----

#[test]
fn sim_analyzer_serves_a_profile_that_modbus_read_can_read() {
    // Two ptys joined by a relay here: the simulator opens one slave, the reader the other.
    let a = pty();
    let b = pty();
    for (mut from, mut to) in [(a.master.try_clone().unwrap(), b.master.try_clone().unwrap()), (b.master, a.master)] {
        std::thread::spawn(move || {
            let mut chunk = [0u8; 256];
            loop {
                match from.read(&mut chunk) {
                    Ok(n) if n > 0 => {
                        let _ = to.write_all(&chunk[..n]);
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }
    let _sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_hj212"))
            .args(["sim", "analyzer", "--profile", "word-swapped-cod", "--unit", "12", "--set", "w01018=17.25"])
            .args(["--port", a.path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = hj212(&[
            "modbus",
            "read",
            "--port",
            b.path.to_str().unwrap(),
            "--unit",
            "12",
            "--addr",
            "0",
            "--count",
            "2",
            "--type",
            "f32",
            "--order",
            "cdab",
            "--timeout-ms",
            "300",
        ]);
        if out.status.code() == Some(0) {
            assert!(String::from_utf8_lossy(&out.stdout).contains("= 17.25"), "{}", text(&out));
            break;
        }
        assert!(Instant::now() < deadline, "the simulator never answered: {}", text(&out));
    }
    drop((a.slave, b.slave));
}

fn frame(data: &str) -> Vec<u8> {
    format!("##{:04}{data}{:04X}\r\n", data.len(), hj212_codec::crc::hj212(data.as_bytes())).into_bytes()
}

#[test]
fn sim_platform_acknowledges_an_upload_and_prints_it() {
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_hj212"))
            .args(["sim", "platform", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let addr = first.split_whitespace().nth(3).expect("address in the banner").trim_end_matches(';').to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let qn = "20260101000000001";
    let data = format!(
        "QN={qn};ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20260101000000;w01018-Rtd=42.5,w01018-Flag=N&&"
    );
    sock.write_all(&frame(&data)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    while !got.ends_with(b"\r\n") {
        let n = sock.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed");
        got.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.contains("CN=9014"), "{answer}");
    assert!(answer.contains(&format!("QN={qn}")), "{answer}");
    drop(sock);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains("w01018-Rtd=42.5") && Instant::now() < deadline {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    assert!(seen.contains("2011") && seen.contains("w01018-Rtd=42.5"), "{seen}");
}

// ----- pymodbus -----

/// True when python3 with pymodbus and pyserial is here; otherwise fails under CI=true and
/// skips elsewhere.
fn pymodbus_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pymodbus, serial"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "python3 with pymodbus and pyserial is needed: pip install pymodbus pyserial";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped: {msg}");
    }
    ok
}

#[test]
fn modbus_read_against_pymodbus() {
    if !pymodbus_available() {
        return;
    }
    let a = pty();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymodbus_server.py");
    let _server = Killed(
        Command::new("python3")
            .arg(&script)
            .args([a.path.to_str().unwrap(), "7"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // pymodbus opens the slave path; we relay its master side to a second pty for the CLI.
    let b = pty();
    for (mut from, mut to) in [(a.master.try_clone().unwrap(), b.master.try_clone().unwrap()), (b.master, a.master)] {
        std::thread::spawn(move || {
            let mut chunk = [0u8; 256];
            loop {
                match from.read(&mut chunk) {
                    Ok(n) if n > 0 => {
                        let _ = to.write_all(&chunk[..n]);
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = b.path.to_str().unwrap().to_string();
    loop {
        let out = hj212(&[
            "modbus",
            "read",
            "--port",
            &port,
            "--unit",
            "7",
            "--addr",
            "0x1008",
            "--count",
            "2",
            "--type",
            "f32",
            "--order",
            "cdab",
            "--timeout-ms",
            "500",
            "--json",
        ]);
        if out.status.code() == Some(0) {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["values"][0], 42.5, "{}", text(&out));
            break;
        }
        assert!(Instant::now() < deadline, "pymodbus never answered: {}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = hj212(&["modbus", "read", "--port", &port, "--unit", "7", "--addr", "0x1000", "--type", "u16"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("= 1234"), "{}", text(&out));
    drop((a.slave, b.slave));
}

// ----- poll -----

fn gateway_toml(dir: &Path, device: &Path) -> PathBuf {
    let path = dir.join("gateway.toml");
    let text = format!(
        r#"
[site]
mn = "010000A8900016F000169DC0"
pw = "123456"
st = "21"

[acquisition]
snapshot_interval_secs = 0

[[serial]]
device = "{}"
baud = 9600
response_timeout_ms = 300
retries = 0
inter_request_delay_ms = 2

[[serial.analyzer]]
name = "cod"
profile = "surface-water-cod"
unit = 1

[[platform]]
name = "city"
address = "127.0.0.1:9"

[[platform]]
name = "province"
address = "127.0.0.1:9"

[store]
path = "{}"

[packet_log]
path = "{}"
"#,
        device.display(),
        dir.join("store").display(),
        dir.join("packets.log").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn poll_prints_the_real_time_upload_and_the_snapshot_without_sending() {
    let dir = tmp("poll");
    let line = analyzer_on_pty(cod_simulator(None));
    let path = line.path.clone();
    let config = gateway_toml(&dir, &path);
    let out = hj212(&["poll", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2011 "), "{stdout}");
    assert!(stdout.contains("w01018-Rtd=42.5"), "{stdout}");
    assert!(stdout.contains("3020 "), "{stdout}");
    assert!(stdout.contains("MN=010000A8900016F000169DC0"), "{stdout}");
    // Nothing was stored.
    assert!(!dir.join("store").exists());

    let out = hj212(&["poll", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let frames: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(frames.iter().all(|f| f["valid"] == true), "{frames:?}");

    // An analyzer that does not answer: exit 1, and the data says so.
    let nobody = pty();
    let silent = gateway_toml(&dir, &nobody.path);
    let out = hj212(&["poll", "--config", silent.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no response"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- outbox -----

#[test]
fn outbox_shows_each_platforms_queue_and_a_held_lock() {
    use hj212_gateway::store::{Record, SledStore, Store};
    let dir = tmp("outbox");
    let store_path = dir.join("store");
    let names = vec!["city".to_string(), "province".to_string()];
    let record = |cn: u16, t: i64, written: i64| Record {
        cn,
        data_time_ms: t,
        written_ms: written,
        frame: format!("##0010CN={cn}\r\n").into_bytes(),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    {
        let s = SledStore::open(&store_path, &names, 1000).unwrap();
        // 2026-01-01 00:00:00 and 01:00:00 (civil).
        let first = s.append(&record(2061, 1_767_225_600_000, now - 3_600_000)).unwrap();
        s.append(&record(2011, 1_767_229_200_000, now - 60_000)).unwrap();
        s.append(&record(2011, 1_767_229_230_000, now)).unwrap();
        s.remove("city", first).unwrap();
        // While the store is open (as the daemon holds it), outbox says so and exits 2.
        let out = hj212(&["outbox", "--store", store_path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("locked"), "{}", text(&out));
    }
    let out = hj212(&["outbox", "--store", store_path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |n: &str| rows.iter().find(|r| r["platform"] == n).unwrap_or_else(|| panic!("{n}: {rows:?}")).clone();
    let city = find("city");
    assert_eq!(city["depth"], 2);
    assert_eq!(city["oldest"]["cn"], 2011);
    assert_eq!(city["oldest"]["data_time"], "20260101010000");
    let province = find("province");
    assert_eq!(province["depth"], 3);
    assert_eq!(province["oldest"]["cn"], 2061);
    assert_eq!(province["oldest"]["age_s"], 3600);
    assert_eq!(province["newest"]["data_time"], "20260101010030");

    let config = gateway_toml(&dir, Path::new("/dev/null"));
    let out = hj212(&["outbox", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("province: 3 queued"), "{stdout}");
    assert!(
        stdout.contains("oldest: #") && stdout.contains("CN=2061 DataTime=20260101000000 written 60m ago"),
        "{stdout}"
    );

    let out = hj212(&["outbox", "--store", dir.join("nothing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- maintenance -----

#[test]
fn maintenance_start_and_stop_write_the_file_even_while_the_store_is_locked() {
    use hj212_gateway::store::SledStore;
    let dir = tmp("maintenance");
    let store_path = dir.join("store");
    let file = dir.join("maintenance.json");
    // The daemon holds the store's lock the whole time: the commands do not need the store.
    let _held = SledStore::open(&store_path, &["city".to_string()], 1000).unwrap();
    let store = store_path.to_str().unwrap();
    let out = hj212(&["maintenance", "stop", "--store", store, "--summary", "x"]);
    assert_eq!(out.status.code(), Some(2), "nothing open: {}", text(&out));
    let out = hj212(&["maintenance", "start", "--store", store, "--operator", "Op A", "--reason", "更换试剂"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("//Op A: 更换试剂//"), "{}", text(&out));
    let out = hj212(&["maintenance", "start", "--store", store, "--operator", "B", "--reason", "again"]);
    assert_eq!(out.status.code(), Some(2), "already open: {}", text(&out));
    let open: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(open["operator"], "Op A");
    assert_eq!(open["reason"], "更换试剂");
    assert!(open["stop_ms"].is_null());
    let out = hj212(&["maintenance", "stop", "--store", store, "--summary", "reagent replaced"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let closed: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(closed["summary"], "reagent replaced");
    assert!(closed["stop_ms"].as_i64().unwrap() >= closed["start_ms"].as_i64().unwrap());
    let out = hj212(&["maintenance", "stop", "--store", store, "--summary", "again"]);
    assert_eq!(out.status.code(), Some(2), "closed already: {}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
