//! The `hj212` CLI as a user runs it: real processes, real files, stdout, stderr and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn hj212(args: &[&str], stdin: Option<&[u8]>) -> Output {
    hj212_env(args, stdin, &[("NO_COLOR", None), ("HJ212_COLOR", Some("never"))])
}

/// Environment changes for a run: `Some` sets a variable, `None` removes it.
type Env<'a> = &'a [(&'a str, Option<&'a str>)];

/// Runs `hj212` with standard output on a pipe and the given environment: `Some` sets a
/// variable, `None` removes it (NO_COLOR, HJ212_COLOR and TERM are what the colour choice reads).
fn hj212_env(args: &[&str], stdin: Option<&[u8]>, env: Env<'_>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hj212"));
    cmd.args(args);
    set_env(&mut cmd, env);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("hj212 runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn set_env(cmd: &mut Command, env: Env<'_>) {
    for (name, value) in env {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
}

/// Runs `hj212` with standard output on a pseudo-terminal, so that `--color auto` sees a
/// terminal; returns what it wrote there and its exit code.
fn hj212_on_a_terminal(args: &[&str], env: Env<'_>) -> (Vec<u8>, Option<i32>) {
    use std::io::Read;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hj212"));
    cmd.args(args);
    set_env(&mut cmd, env);
    cmd.stdin(Stdio::null()).stdout(Stdio::from(pty.slave)).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("hj212 runs");
    // The child holds the only slave descriptor now: once it exits, reading the master ends.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status.code())
}

fn has_escapes(out: &[u8]) -> bool {
    out.windows(2).any(|w| w == b"\x1b[")
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

#[test]
fn a_usage_error_exits_two() {
    let cases: [(&[&str], &str); 4] = [
        (&["decode", "--no-such-flag"], "error: unexpected argument '--no-such-flag'"),
        (&["decode", "--crc", "crc32"], "error: invalid value 'crc32' for '--crc <CRC>'"),
        (&["check", "--max-len", "many"], "error: invalid value 'many' for '--max-len <MAX_LEN>'"),
        (&["no-such-command"], "error: unrecognized subcommand 'no-such-command'"),
    ];
    for (args, message) in cases {
        let out = hj212(args, Some(b""));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(message), "{args:?}: {err}");
    }
    // No command at all: the help goes to stderr, and it is still a usage error.
    let out = hj212(&[], Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: hj212 [OPTIONS] <COMMAND>"));
    // A bad value in the environment is a usage error too.
    let out = hj212_env(&["check", "-"], Some(b""), &[("HJ212_COLOR", Some("purple"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: invalid value 'purple' for '--color <COLOR>'"));
}

#[test]
fn a_missing_file_is_an_io_error_and_exits_two() {
    let dir = tmp("missing");
    let missing = dir.join("no-such.hj212");
    let missing = missing.to_str().unwrap();
    for cmd in ["decode", "check"] {
        let out = hj212(&[cmd, missing], None);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("error: cannot open {missing}: ")), "{cmd}: {err}");
        assert!(out.stdout.is_empty(), "{cmd}: no summary for a run that could not read its input");
    }
    // An IO error outranks invalid frames read before it (which alone would exit 1).
    let out = hj212(&["check", sample().to_str().unwrap(), missing], None);
    assert_eq!(out.status.code(), Some(2));
    // A directory cannot be read as a stream either.
    let out = hj212(&["decode", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: cannot read "));
}

#[test]
fn colour_follows_the_terminal_no_color_and_hj212_color() {
    let dir = tmp("colour");
    let file = dir.join("one.hj212");
    std::fs::write(
        &file,
        b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n",
    )
    .unwrap();
    let args = ["decode", file.to_str().unwrap()];
    let term = ("TERM", Some("xterm"));

    // Standard output on a pipe: `auto` never colours, with or without NO_COLOR.
    for no_color in [None, Some("1")] {
        let out = hj212_env(&args, None, &[("HJ212_COLOR", None), ("NO_COLOR", no_color), term]);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok  1062"), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(!has_escapes(&out.stdout), "NO_COLOR={no_color:?} on a pipe");
    }

    // On a terminal `auto` colours, unless NO_COLOR is set (to anything but the empty string,
    // per no-color.org) or TERM is dumb; HJ212_COLOR=never turns it off too.
    let cases: [(Env<'_>, bool); 6] = [
        (&[("HJ212_COLOR", None), ("NO_COLOR", None), term], true),
        (&[("HJ212_COLOR", Some("auto")), ("NO_COLOR", None), term], true),
        (&[("HJ212_COLOR", None), ("NO_COLOR", Some("1")), term], false),
        (&[("HJ212_COLOR", None), ("NO_COLOR", Some("")), term], true),
        (&[("HJ212_COLOR", None), ("NO_COLOR", None), ("TERM", Some("dumb"))], false),
        (&[("HJ212_COLOR", Some("never")), ("NO_COLOR", None), term], false),
    ];
    for (env, coloured) in cases {
        let (out, code) = hj212_on_a_terminal(&args, env);
        assert_eq!(code, Some(0), "{env:?}");
        assert!(String::from_utf8_lossy(&out).contains("1062"), "{env:?}: {}", String::from_utf8_lossy(&out));
        assert_eq!(has_escapes(&out), coloured, "{env:?}: {}", String::from_utf8_lossy(&out));
    }
    // `--color never` on a terminal stays plain.
    let (out, _) = hj212_on_a_terminal(&["--color", "never", "decode", args[1]], &[("NO_COLOR", None), term]);
    assert!(!has_escapes(&out));

    // An explicit `always` (flag or HJ212_COLOR) forces colour even on a pipe, and wins over
    // NO_COLOR: no-color.org has per-program settings and command-line flags override it.
    for (extra, env) in [
        (&["--color", "always"][..], &[("HJ212_COLOR", None), ("NO_COLOR", None)][..]),
        (&["--color", "always"], &[("HJ212_COLOR", None), ("NO_COLOR", Some("1"))]),
        (&[], &[("HJ212_COLOR", Some("always")), ("NO_COLOR", None)]),
        (&[], &[("HJ212_COLOR", Some("always")), ("NO_COLOR", Some("1"))]),
    ] {
        let mut all: Vec<&str> = extra.to_vec();
        all.extend_from_slice(&args);
        let out = hj212_env(&all, None, env);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\x1b[32mok \x1b[0m"), "{extra:?} {env:?}: {text}");
    }
    // The flag outranks the variable, both ways.
    let out = hj212_env(&["--color", "never", args[0], args[1]], None, &[("HJ212_COLOR", Some("always"))]);
    assert!(!has_escapes(&out.stdout));
    let out = hj212_env(&["--color", "always", args[0], args[1]], None, &[("HJ212_COLOR", Some("never"))]);
    assert!(has_escapes(&out.stdout));
    // `--json` is never coloured.
    let out = hj212_env(&["decode", "--json", args[1]], None, &[("HJ212_COLOR", Some("always"))]);
    assert!(!has_escapes(&out.stdout));
}

/// The nonconforming vectors whose CRC is a Modbus CRC, with the `--crc` value that matches:
/// `modbus` (printed high byte first) or `modbus-le` (low byte first).
fn modbus_vectors() -> Vec<(&'static str, Vec<u8>)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hj212-codec/tests/vectors/nonconforming.txt"),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut comment = "";
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            comment = c;
        } else if line.starts_with("##") {
            let variant = if comment.contains("CRC == CRC-16/MODBUS printed LOW byte first") {
                "modbus-le"
            } else if comment.contains("CRC == CRC-16/MODBUS printed high byte first") {
                "modbus"
            } else {
                continue;
            };
            let mut wire = line.strip_suffix("\\r\\n").unwrap().as_bytes().to_vec();
            wire.extend_from_slice(b"\r\n");
            out.push((variant, wire));
        }
    }
    out
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

#[test]
fn crc_choice_on_the_modbus_vectors() {
    let vectors = modbus_vectors();
    assert_eq!(vectors.iter().filter(|(v, _)| *v == "modbus-le").count(), 3);
    assert_eq!(vectors.iter().filter(|(v, _)| *v == "modbus").count(), 13);
    let mut over_1024 = 0;
    for (matching, wire) in &vectors {
        let label = String::from_utf8_lossy(&wire[..40.min(wire.len())]).into_owned();
        let wrong = if *matching == "modbus" { "modbus-le" } else { "modbus" };
        let mut lenient_deviations = None;
        for (mode, strict) in [(&["--lenient"][..], false), (&[][..], true)] {
            let run = |crc: &str| {
                let mut args = vec!["decode", "--json", "--crc", crc];
                args.extend_from_slice(mode);
                args.push("-");
                let out = hj212(&args, Some(wire));
                let lines = json_lines(&out.stdout);
                assert_eq!(lines.len(), 2, "{label} {args:?}: one frame and the summary");
                assert_eq!(lines[0]["type"], "frame");
                assert_eq!(lines[0]["offset"], 0);
                (lines[0].clone(), out.status.code())
            };

            // The matching variant: the CRC is accepted and reported as a deviation.
            let (frame, code) = run(matching);
            assert_eq!(frame["crc"]["variant"], *matching, "{label}");
            assert_eq!(frame["crc"]["received"], frame["crc"]["computed"], "{label}");
            let deviations: Vec<String> =
                frame["deviations"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
            assert!(deviations.iter().any(|d| d == "non_standard_crc"), "{label}: {deviations:?}");
            // Leniently the frame is valid; strictly it is valid unless something besides the
            // chosen CRC departs from the standard (two captures are over 1024 bytes).
            let others = deviations.iter().any(|d| d != "non_standard_crc");
            let valid = !strict || !others;
            assert_eq!(frame["valid"], valid, "{label} strict={strict}: {frame}");
            assert_eq!(code, Some(if valid { 0 } else { 1 }), "{label} strict={strict}");
            if valid {
                assert!(frame["error"].is_null());
            } else {
                assert_eq!(frame["error"]["kind"], "data_too_long", "{label}");
                assert_eq!(frame["error"]["offset"], 6);
            }
            if strict {
                assert_eq!(lenient_deviations.as_ref(), Some(&deviations), "{label}: same deviations in both modes");
                over_1024 += usize::from(others);
            } else {
                lenient_deviations = Some(deviations.clone());
            }

            // The wrong variants: a CRC mismatch at the CRC's offset, exit 1.
            for crc in ["hj212", wrong] {
                let (frame, code) = run(crc);
                assert_eq!(frame["valid"], false, "{label} --crc {crc}");
                assert_eq!(code, Some(1), "{label} --crc {crc}");
                assert!(frame["crc"]["variant"].is_null(), "{label} --crc {crc}");
                let expected = if others && strict { "data_too_long" } else { "crc_mismatch" };
                assert_eq!(frame["error"]["kind"], expected, "{label} --crc {crc}: {frame}");
                if expected == "crc_mismatch" {
                    let crc_at = wire.len() - 6;
                    assert_eq!(frame["error"]["offset"], crc_at, "{label} --crc {crc}");
                }
                assert!(!frame["deviations"].as_array().unwrap().iter().any(|d| d == "non_standard_crc"));
            }

            // `auto` finds the variant; strictly, a Modbus CRC nobody asked for is refused.
            let (frame, code) = run("auto");
            assert_eq!(frame["crc"]["variant"], *matching, "{label}");
            assert_eq!(frame["valid"], !strict, "{label} --crc auto strict={strict}");
            assert_eq!(code, Some(i32::from(strict)), "{label} --crc auto strict={strict}");
            if strict {
                let expected = if others { "data_too_long" } else { "non_standard_crc" };
                assert_eq!(frame["error"]["kind"], expected, "{label}");
            }
        }
    }
    assert_eq!(over_1024, 2, "the two long captures of the low-byte-first device");
}

#[test]
fn crc_choice_applies_to_a_whole_stream_of_one_peer() {
    // Every Modbus-high vector back to back, as one peer would send them.
    let stream: Vec<u8> = modbus_vectors().into_iter().filter(|(v, _)| *v == "modbus").flat_map(|(_, w)| w).collect();
    let out = hj212(&["check", "--json", "--crc", "modbus", "-"], Some(&stream));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["frames"], 13);
    assert_eq!(summary["valid"], 13, "{summary}");
    assert_eq!(summary["deviations"]["non_standard_crc"], 13);
    assert_eq!(out.status.code(), Some(0));
    let out = hj212(&["check", "--json", "--crc", "modbus-le", "-"], Some(&stream));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["valid"], 0);
    assert_eq!(summary["errors"]["crc_mismatch"], 13);
    assert_eq!(out.status.code(), Some(1));
}
