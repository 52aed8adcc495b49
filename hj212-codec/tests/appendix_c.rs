//! Every HJ 212-2017 Appendix C example (Section B of the golden vectors) as a golden test, by CN:
//! the packet decodes strictly, reads as the typed message its role calls for, and the typed
//! message written back gives the standard's data segment.
#![cfg(feature = "alloc")]

use hj212_codec::message::{Header, Message};
use hj212_codec::{Command, DecodeOptions, Decoded, ExeRtn, QnRtn, Split, Splitter};

struct Example {
    comment: String,
    wire: Vec<u8>,
}

fn section_b() -> Vec<Example> {
    let text = include_str!("vectors/conforming.txt");
    let mut out = Vec::new();
    let mut in_b = false;
    let mut comment = String::new();
    for line in text.lines() {
        if line.starts_with("# ===== Section") {
            in_b = line.contains("Section B");
        } else if let Some(c) = line.strip_prefix("# ") {
            comment = c.to_string();
        } else if in_b && line.starts_with("##") {
            let mut wire = line.strip_suffix("\\r\\n").unwrap().as_bytes().to_vec();
            wire.extend_from_slice(b"\r\n");
            out.push(Example { comment: std::mem::take(&mut comment), wire });
        }
    }
    out
}

/// The role the vector's comment gives: request from the platform, response or upload from the site, or answer.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Role {
    Initiating,
    Response,
    Answer,
}

fn role(comment: &str) -> Role {
    if comment.contains("(answer)") || comment.contains("answer)") {
        Role::Answer
    } else if comment.contains("(initiating") {
        Role::Initiating
    } else if comment.contains("(response") {
        Role::Response
    } else {
        panic!("no role in comment: {comment}")
    }
}

/// What a message of this CN and role must be.
fn expected_kind(cn: u16, role: Role, m: &Message) -> bool {
    use Message as M;
    match (cn, role) {
        (1000, _) => matches!(m, M::SetTimeoutRetry { over_time: 5, re_count: 3 }),
        (1011, Role::Initiating) => matches!(m, M::GetTime { pol_id: Some(_) }),
        (1011, Role::Response) => matches!(m, M::TimeReply { .. }),
        (1012, _) => matches!(m, M::SetTime { .. }),
        (1013, _) => matches!(m, M::TimeCalibrationRequest { pol_id: Some(_) }),
        (1061, Role::Initiating) => matches!(m, M::GetRtdInterval),
        (1061, Role::Response) => matches!(m, M::RtdIntervalReply { seconds: 30 }),
        (1062, _) => matches!(m, M::SetRtdInterval { seconds: 30 }),
        (1063, Role::Initiating) => matches!(m, M::GetMinInterval),
        (1063, Role::Response) => matches!(m, M::MinIntervalReply { minutes: 10 }),
        (1064, _) => matches!(m, M::SetMinInterval { minutes: 10 }),
        (1072, _) => matches!(m, M::SetPassword { new_pw } if new_pw == "654321"),
        (2011 | 2021, Role::Initiating) => matches!(m, M::StartUpload(_) | M::Data { .. }),
        (2011 | 2021 | 2031 | 2041 | 2051 | 2061, Role::Response) => matches!(m, M::Data { .. }),
        (2012 | 2022, _) => matches!(m, M::StopUpload(_)),
        (2031 | 2041 | 2051 | 2061, Role::Initiating) => matches!(m, M::HistoryRequest { .. } | M::Data { .. }),
        (2081, _) => matches!(m, M::RestartTime { .. }),
        (3011..=3014, _) => matches!(m, M::AnalyzerControl { pol_id, .. } if pol_id == "w01018"),
        (3015, Role::Initiating) => matches!(m, M::OverLimitSampling | M::OverLimitSampleReply { vase_no: 1, .. }),
        (3015, Role::Response) => matches!(m, M::OverLimitSampleReply { vase_no: 1, .. }),
        (3016, _) => matches!(m, M::SetSamplingPeriod { ctime: 2, .. }),
        (3017, Role::Initiating) => matches!(m, M::GetSamplingPeriod { .. }),
        (3017, Role::Response) => matches!(m, M::SamplingPeriodReply { ctime: 2, .. }),
        (3018, Role::Initiating) => matches!(m, M::GetSampleOutputTime { .. }),
        (3018, Role::Response) => matches!(m, M::SampleOutputTimeReply { stime: 40, .. }),
        (3019, Role::Initiating) => matches!(m, M::GetInstrumentId { .. } | M::InstrumentId { data_time: Some(_), .. }),
        (3019, Role::Response) => matches!(m, M::InstrumentId { .. }),
        (3020, Role::Initiating) => matches!(m, M::GetSiteInfo { .. } | M::SiteInfo { .. }),
        (3020, Role::Response) => matches!(m, M::SiteInfo { .. }),
        (3021, _) => matches!(m, M::SetSiteInfo { info_id, value, .. } if info_id == "i13004" && value == "168.0"),
        (9011, Role::Answer) => matches!(m, M::RequestAnswer { qn_rtn: QnRtn::Ready }),
        (9012, Role::Answer) => matches!(m, M::ExecutionResult { exe_rtn: ExeRtn::Success }),
        (9013, Role::Answer) => matches!(m, M::NotificationAnswer),
        (9014, Role::Answer) => matches!(m, M::DataAnswer),
        _ => false,
    }
}

/// The standard prints stray spaces and joins BeginTime/EndTime with either separator.
fn normalise(s: &str) -> String {
    s.replace(' ', "").replace(",EndTime=", ";EndTime=")
}

#[test]
fn every_appendix_c_example_decodes_types_and_re_encodes() {
    let examples = section_b();
    assert_eq!(examples.len(), 62);
    let mut by_cn = std::collections::BTreeMap::<u16, usize>::new();
    for ex in &examples {
        let Split::Frame(frame) = Splitter::default().split(&ex.wire, true) else { panic!("{}", ex.comment) };
        let packet =
            Decoded::new(frame, DecodeOptions::STRICT).verdict().unwrap_or_else(|e| panic!("{}: {e}", ex.comment));
        let m = Message::from_packet(&packet).unwrap_or_else(|e| panic!("{}: {e}", ex.comment));
        let cn = packet.cn();
        assert_eq!(m.cn(), cn);
        let role = role(&ex.comment);
        assert!(expected_kind(cn, role, &m), "CN {cn} {role:?} read as {m:?}\n{}", ex.comment);
        // Answers carry ST=91 and Flag=4; requests Flag=5 (Appendix C throughout).
        if role == Role::Answer {
            assert_eq!(packet.st(), "91");
            assert_eq!(packet.flag().map(|f| f.0), Some(4));
            assert!(Command::from_value(cn).is_answer());
        }
        let header = Header {
            qn: packet.qn(),
            st: packet.st(),
            pw: packet.pw().unwrap(),
            mn: packet.mn().unwrap(),
            flag: packet.flag(),
        };
        let again = m.to_packet(&header).data_segment();
        assert_eq!(normalise(&again), normalise(packet.as_str()), "{}", ex.comment);
        *by_cn.entry(cn).or_default() += 1;
    }
    // Every CN of Table 9 appears, with its answers.
    let cns: Vec<u16> = by_cn.keys().copied().collect();
    for cn in [
        1000, 1011, 1012, 1013, 1061, 1062, 1063, 1064, 1072, 2011, 2012, 2021, 2022, 2031, 2041, 2051, 2061, 2081,
        3011, 3012, 3013, 3014, 3015, 3016, 3017, 3018, 3019, 3020, 3021, 9011, 9012, 9013, 9014,
    ] {
        assert!(cns.contains(&cn), "CN {cn} has no Appendix C example");
    }
}

/// Appendix C examples that the standard misprints (C.19 `Flag=5CP=&&`, C.22/C.48 `…534,ST=32`).
/// The `…` placeholder (more items) is left out. Strict receivers refuse them with the place of
/// the misprint; lenient receivers read them and name the deviation.
#[test]
fn misprinted_appendix_c_examples_are_read_leniently() {
    let cases: [(&str, &str, usize); 3] = [
        (
            "QN=20160802000000001;ST=32;CN=2041;PW=123456;MN=010000A8900016F000169DC0;Flag=5CP=&&DataTime=20160801000000;SB1-RT=1.1;SB2-RT=2.1&&",
            "misplaced_cp",
            6 + 79,
        ),
        (
            "QN=20160801085857534,ST=32;CN=2031;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801000000;w00000-Cou=1512.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=2142.0,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&",
            "header_comma",
            6 + 20,
        ),
        (
            "QN=20160801085857534,ST=32;CN=2061;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801080000;w00000-Cou=63.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=63.0,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&",
            "header_comma",
            6 + 20,
        ),
    ];
    for (seg, deviation, at) in cases {
        let wire = hj212_codec::encode::frame(seg.as_bytes(), hj212_codec::CrcVariant::Hj212, false);
        let Split::Frame(frame) = Splitter::default().split(&wire, true) else { panic!() };
        let strict = Decoded::new(frame, DecodeOptions::STRICT);
        assert_eq!(strict.verdict().unwrap_err().offset(), at, "{seg}");
        let lenient = Decoded::new(frame, DecodeOptions::LENIENT);
        let packet = lenient.verdict().unwrap();
        assert_eq!(lenient.deviations().names().collect::<Vec<_>>(), [deviation]);
        assert_eq!(packet.st(), "32");
        let m = Message::from_packet(&packet).unwrap();
        let Message::Data { items, .. } = m else { panic!("{m:?}") };
        assert!(items.len() >= 2);
    }
}
