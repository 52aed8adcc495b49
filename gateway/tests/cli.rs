//! The `hj212` CLI as a user runs it: real processes, real files, stdout, stderr and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn hj212(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hj212"));
    cmd.args(args).env_remove("NO_COLOR").env("HJ212_COLOR", "never");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("hj212 runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hj212-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/samples/mixed.hj212")
}

fn vectors(file: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../hj212-codec/tests/vectors").join(file))
            .unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("##")) {
        out.extend_from_slice(line.strip_suffix("\\r\\n").unwrap().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn check_counts_and_exit_codes_follow_the_mode() {
    let strict = hj212(&["check", "--json", sample().to_str().unwrap()], None);
    assert_eq!(strict.status.code(), Some(1), "{}", String::from_utf8_lossy(&strict.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(summary["frames"], 21);
    assert_eq!(summary["valid"], 18);
    assert_eq!(summary["errors"]["crc_mismatch"], 2);
    assert_eq!(summary["broken"]["truncated"], 1);
    let lenient = hj212(&["check", "--json", "--lenient", sample().to_str().unwrap()], None);
    let summary: serde_json::Value = serde_json::from_slice(&lenient.stdout).unwrap();
    assert_eq!(summary["valid"], 21);
    assert_eq!(summary["deviations"]["non_standard_crc"], 2);
    // The truncated frame still makes the run exit 1.
    assert_eq!(lenient.status.code(), Some(1));
    let clean = hj212(&["check"], Some(&vectors("conforming.txt")));
    assert_eq!(clean.status.code(), Some(0), "{}", String::from_utf8_lossy(&clean.stdout));
    assert!(String::from_utf8_lossy(&clean.stdout).starts_with("127 frames: 127 valid, 0 invalid"));
}

#[test]
fn decode_json_reports_frames_skips_and_errors_with_offsets() {
    let out = hj212(&["decode", "--json", sample().to_str().unwrap()], None);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let first = &lines[0];
    assert_eq!(first["type"], "frame");
    assert_eq!(first["offset"], 0);
    assert_eq!(first["valid"], true);
    assert_eq!(first["cn"], "1062");
    assert_eq!(first["cp"], serde_json::json!([[["RtdInterval", "30"]]]));
    let bad: Vec<_> = lines.iter().filter(|l| l["valid"] == false).collect();
    assert_eq!(bad.len(), 3);
    let crc = bad.iter().find(|l| l["error"]["kind"] == "crc_mismatch").unwrap();
    assert!(crc["error"]["message"].as_str().unwrap().starts_with("crc mismatch at byte "));
    assert!(crc["qn"].is_string(), "fields of an invalid frame are still reported");
    let skipped: Vec<_> = lines.iter().filter(|l| l["type"] == "skipped").collect();
    assert!(skipped.iter().any(|s| s["reason"] == "truncated"));
    assert_eq!(lines.last().unwrap()["type"], "summary");
}

#[test]
fn decode_json_then_encode_reproduces_the_stream() {
    let stream = vectors("conforming.txt");
    let decoded = hj212(&["decode", "--json", "-"], Some(&stream));
    assert_eq!(decoded.status.code(), Some(0));
    let encoded = hj212(&["encode"], Some(&decoded.stdout));
    assert_eq!(encoded.status.code(), Some(0), "{}", String::from_utf8_lossy(&encoded.stderr));
    assert_eq!(encoded.stdout, stream);
}

#[test]
fn encode_reports_bad_lines_with_their_numbers() {
    let out = hj212(&["encode"], Some(b"{\"type\":\"frame\",\"cn\":\"2011\"}\nnot json\n"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1: field \"st\" is required"), "{err}");
    assert!(err.contains("line 2: not JSON"), "{err}");
}

#[test]
fn crc_of_a_segment_and_of_a_frame() {
    let seg = "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
    let out = hj212(&["crc", seg], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1C80\n");
    let out = hj212(&["crc", &format!("##0101{seg}1C08\\r\\n")], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1C80 (frame says 1C08: mismatch)\n");
    let modbus = "##0086QN=20170516010101001;ST=22;CN=1072;PW=123456;MN=ABCDEFG1234567;Flag=3;CP=&&PW=654321&&E476";
    let out = hj212(&["crc", modbus], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "E681 (frame says E476: matches the modbus variant)\n");
}

#[test]
fn a_closed_pipe_exits_zero() {
    let big: Vec<u8> = vectors("conforming.txt").repeat(50);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hj212"))
        .args(["decode", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&big);
    });
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    writer.join().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn tail_shows_and_filters_packet_log_records() {
    use hj212_codec::log::{Direction, LogWriter};
    let dir = tmp("tail");
    let path = dir.join("packets.log");
    let mut w = LogWriter::open(&path, 1 << 20, 2, true).unwrap();
    let up = b"##0162QN=20231008123340461;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20231008123340;w01008-SampleTime=20231008123340,w01008-Rtd=123.456&&F441\r\n";
    let ack = b"##0087QN=20160801085000001;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&C241\r\n";
    w.write(1_764_340_996_123, Direction::In, "127.0.0.1:40112", up, false).unwrap();
    w.write(1_764_340_996_200, Direction::Out, "127.0.0.1:40112", ack, false).unwrap();
    w.write(1_764_340_996_300, Direction::In, "127.0.0.1:40112", b"##0010garbage!", true).unwrap();
    w.flush().unwrap();
    drop(w);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("PW=123456"), "passwords never reach the log");

    let out = hj212(&["tail", path.to_str().unwrap()], None);
    let shown = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0]
            .starts_with("2025-11-28 14:43:16.123 <- 127.0.0.1:40112 2011 real-time data MN=010000A8900016F000169DC0"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("w01008-Rtd=123.456"));
    assert!(lines[1].contains("-> 127.0.0.1:40112 9014 data answer"));
    assert!(lines[2].contains("not a frame"));
    assert_eq!(out.status.code(), Some(1));

    let only_out = hj212(&["tail", "--dir", "out", "--json", path.to_str().unwrap()], None);
    let recs: Vec<serde_json::Value> = only_out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["frame"]["cn"], "9014");
    assert_eq!(recs[0]["masked"], true);
    assert_eq!(recs[0]["frame"]["pw"], "******");
    assert_eq!(only_out.status.code(), Some(0));

    let by_cn = hj212(&["tail", "--cn", "2011", path.to_str().unwrap()], None);
    assert_eq!(String::from_utf8_lossy(&by_cn.stdout).lines().count(), 1);
}
