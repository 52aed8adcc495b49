//! The exchange state machine, driven as a pair: a site and a platform [`Session`] wired
//! together in memory with a manual clock (the shape of quinn-proto's `Pair`). Every frame that
//! crosses the wire is decoded strictly with the codec's `Splitter` and `Decoded`, logged with
//! the clock reading, and asserted on field by field or byte by byte against HJ 212-2017
//! Appendix C.

#![cfg(feature = "alloc")]

use hj212_codec::encode::OwnedPacket;
use hj212_codec::message::{DataItem, Message};
use hj212_codec::qn::QnGenerator;
use hj212_codec::session::{AckToken, Config, Event, Failure, Now, Role, Session, SessionError};
use hj212_codec::time::DateTime;
use hj212_codec::{Command, DecodeOptions, Decoded, ExeRtn, Packet, QnRtn, Split, Splitter};

const MN: &str = "010000A8900016F000169DC0";
const PW: &str = "123456";
/// The QN of the Appendix C examples: 2016-08-01 08:58:57.223.
const BASE: &str = "20160801085857223";

/// A frame as it crossed the wire, decoded.
#[derive(Debug, Clone)]
struct F {
    data: String,
    qn: Option<String>,
    st: String,
    cn: u16,
    pw: Option<String>,
    mn: Option<String>,
    flag: Option<u8>,
    pnum: Option<u16>,
    pno: Option<u16>,
    cp: String,
}

fn with_packet<R>(bytes: &[u8], f: impl FnOnce(&Packet<'_>) -> R) -> R {
    let Split::Frame(frame) = Splitter::default().split(bytes, true) else {
        panic!("not a frame: {}", String::from_utf8_lossy(bytes))
    };
    assert_eq!(frame.len(), bytes.len(), "one frame per transmit");
    assert!(bytes.ends_with(b"\r\n"));
    let decoded = Decoded::new(frame, DecodeOptions::STRICT);
    let packet = decoded.verdict().unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)));
    f(&packet)
}

fn decode(bytes: &[u8]) -> F {
    with_packet(bytes, |p| F {
        data: p.as_str().to_string(),
        qn: p.qn().map(str::to_string),
        st: p.st().to_string(),
        cn: p.cn(),
        pw: p.pw().map(str::to_string),
        mn: p.mn().map(str::to_string),
        flag: p.flag().map(|f| f.0),
        pnum: p.pnum(),
        pno: p.pno(),
        cp: p.cp().as_str().to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToPlatform,
    ToSite,
}

#[derive(Debug, Clone)]
struct Sent {
    at: u64,
    dir: Dir,
    f: F,
}

type Filter = Box<dyn FnMut(Dir, &F) -> bool>;

/// Two sessions, a wire and a manual clock.
struct Pair {
    site: Session,
    platform: Session,
    ms: u64,
    base_ms: i64,
    log: Vec<Sent>,
    site_events: Vec<Event>,
    platform_events: Vec<Event>,
    /// Returns false to lose a frame on the wire (it is still logged).
    deliver: Filter,
}

fn site_config() -> Config {
    Config::new(Role::Site, MN, PW, "32")
}

fn platform_config() -> Config {
    Config::new(Role::Platform, MN, PW, "32")
}

impl Pair {
    fn new() -> Self {
        Self::with(site_config(), platform_config())
    }

    fn with(site: Config, platform: Config) -> Self {
        Self {
            site: Session::new(site),
            platform: Session::new(platform),
            ms: 0,
            base_ms: DateTime::parse(BASE).unwrap().to_millis(),
            log: Vec::new(),
            site_events: Vec::new(),
            platform_events: Vec::new(),
            deliver: Box::new(|_, _| true),
        }
    }

    fn now(&self) -> Now {
        Now::new(self.ms, DateTime::from_millis(self.base_ms + self.ms as i64).unwrap())
    }

    /// Moves frames both ways until the wire is quiet, collecting events.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.site.poll_transmit() {
                moved = true;
                let f = decode(&bytes);
                self.log.push(Sent { at: self.ms, dir: Dir::ToPlatform, f: f.clone() });
                if (self.deliver)(Dir::ToPlatform, &f) {
                    let now = self.now();
                    with_packet(&bytes, |p| self.platform.handle_packet(now, p));
                }
            }
            while let Some(bytes) = self.platform.poll_transmit() {
                moved = true;
                let f = decode(&bytes);
                self.log.push(Sent { at: self.ms, dir: Dir::ToSite, f: f.clone() });
                if (self.deliver)(Dir::ToSite, &f) {
                    let now = self.now();
                    with_packet(&bytes, |p| self.site.handle_packet(now, p));
                }
            }
            while let Some(e) = self.site.poll_event() {
                self.site_events.push(e);
            }
            while let Some(e) = self.platform.poll_event() {
                self.platform_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Runs the clock to `to`, firing every timer on the way at its own instant.
    fn advance(&mut self, to: u64) {
        loop {
            let next = [self.site.poll_timeout(), self.platform.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= to => {
                    self.ms = self.ms.max(t);
                    let now = self.now();
                    self.site.handle_timeout(now);
                    self.platform.handle_timeout(now);
                    self.drive();
                }
                _ => break,
            }
        }
        self.ms = to;
        self.drive();
    }

    fn frames(&self, dir: Dir) -> Vec<&Sent> {
        self.log.iter().filter(|s| s.dir == dir).collect()
    }

    fn take_site_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.site_events)
    }

    fn take_platform_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.platform_events)
    }

    /// The QN of the single `Request` event the site got.
    fn site_request(&mut self) -> (String, Message) {
        let events = self.take_site_events();
        match events.as_slice() {
            [Event::Request { qn, message: Ok(m), .. }] => (qn.clone(), m.clone()),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    fn cns(&self) -> Vec<(Dir, u16)> {
        self.log.iter().map(|s| (s.dir, s.f.cn)).collect()
    }
}

fn t(s: &str) -> DateTime {
    DateTime::parse(s).unwrap()
}

/// The hourly data of C.47, with `extra` more items to make it long.
fn hourly(extra: usize) -> Message {
    let item = |code: &str, fields: &[(&str, &str)]| DataItem {
        code: code.into(),
        fields: fields.iter().map(|(s, v)| ((*s).to_string(), (*v).to_string())).collect(),
    };
    let mut items = vec![
        item("w00000", &[("Cou", "63.0"), ("Min", "16.4"), ("Avg", "17.5"), ("Max", "20.1"), ("Flag", "N")]),
        item("w01001", &[("Min", "7.1"), ("Avg", "7.5"), ("Max", "7.8"), ("Flag", "N")]),
        item("w01018", &[("Cou", "63.0"), ("Min", "40.1"), ("Avg", "40.1"), ("Max", "40.1"), ("Flag", "N")]),
    ];
    for i in 0..extra {
        let code = format!("w2{i:04}");
        items.push(item(&code, &[("Cou", "63.0"), ("Min", "16.4"), ("Avg", "17.5"), ("Max", "20.1"), ("Flag", "N")]));
    }
    Message::Data { cn: Command::HourlyData, data_time: t("20160801080000"), items }
}

fn history_request() -> Message {
    Message::HistoryRequest { cn: Command::HourlyData, begin: t("20160801080000"), end: t("20160801080000") }
}

const C47_DATA: &str = "QN=20160801085857534;ST=32;CN=2061;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&DataTime=20160801080000;w00000-Cou=63.0,w00000-Min=16.4,w00000-Avg=17.5,w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,w01001-Flag=N;w01018-Cou=63.0,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,w01018-Flag=N&&";

// ----- Requests with 9011 / 9012 -----

#[test]
fn set_rtd_interval_is_answered_with_9011_and_9012_as_in_c6() {
    let mut pair = Pair::new();
    let now = pair.now();
    let qn = pair.platform.submit(now, Message::SetRtdInterval { seconds: 30 }, true).unwrap();
    assert_eq!(qn, BASE);
    pair.drive();
    let (rq, message) = pair.site_request();
    assert_eq!((rq.as_str(), message), (BASE, Message::SetRtdInterval { seconds: 30 }));
    pair.site.accept(pair.now(), &rq).unwrap();
    pair.drive();
    assert_eq!(pair.take_platform_events(), vec![Event::Accepted { qn: qn.clone() }]);
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    assert_eq!(pair.take_platform_events(), vec![Event::Completed { qn, exe_rtn: ExeRtn::Success }]);

    // The bytes are those of the standard (C.6 with the Appendix C PW).
    let data: Vec<&str> = pair.log.iter().map(|s| s.f.data.as_str()).collect();
    assert_eq!(
        data,
        [
            "QN=20160801085857223;ST=32;CN=1062;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&",
            "QN=20160801085857223;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&",
            "QN=20160801085857223;ST=91;CN=9012;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&ExeRtn=1&&",
        ]
    );
    assert_eq!(pair.cns(), [(Dir::ToSite, 1062), (Dir::ToPlatform, 9011), (Dir::ToPlatform, 9012)]);
    // Nothing is left open on either side.
    assert_eq!((pair.site.poll_timeout(), pair.platform.poll_timeout()), (None, None));
    assert_eq!((pair.site.open_exchanges(), pair.platform.open_exchanges()), (0, 0));
}

#[test]
fn get_time_reply_carries_data_between_9011_and_9012_as_in_c2() {
    let mut pair = Pair::new();
    let qn = pair.platform.submit(pair.now(), Message::GetTime { pol_id: Some("w01018".into()) }, true).unwrap();
    pair.drive();
    let (rq, message) = pair.site_request();
    assert_eq!(message, Message::GetTime { pol_id: Some("w01018".into()) });
    pair.advance(311);
    pair.site.accept(pair.now(), &rq).unwrap();
    let reply = Message::TimeReply { pol_id: Some("w01018".into()), system_time: t("20160801085857") };
    let handle = pair.site.reply(pair.now(), &rq, reply, false).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();

    let to_platform = pair.frames(Dir::ToPlatform);
    assert_eq!(to_platform.iter().map(|s| s.f.cn).collect::<Vec<_>>(), [9011, 1011, 9012]);
    let data = &to_platform[1].f;
    // A data response uses the site's ST, not 91, its own QN and Flag 4 (no answer wanted).
    assert_eq!((data.st.as_str(), data.qn.as_deref(), data.flag), ("32", Some(handle.as_str()), Some(4)));
    assert_eq!(data.qn.as_deref(), Some("20160801085857534"));
    assert_eq!(data.cp, "PolId=w01018;SystemTime=20160801085857");

    let events = pair.take_platform_events();
    assert!(matches!(&events[0], Event::Accepted { qn: q } if *q == qn));
    let Event::Upload { packet, needs_ack: false, request: Some(r), .. } = &events[1] else { panic!("{events:?}") };
    assert_eq!((r, packet.cp_get("SystemTime")), (&qn, Some("20160801085857")));
    assert_eq!(events[2], Event::Completed { qn, exe_rtn: ExeRtn::Success });
    assert_eq!(pair.platform.poll_timeout(), None);
}

// ----- History requests, C.47–C.50 -----

#[test]
fn c47_history_without_answer_or_split() {
    let mut pair = Pair::new();
    let qn = pair.platform.submit(pair.now(), history_request(), true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.advance(311);
    pair.site.accept(pair.now(), &rq).unwrap();
    pair.site.reply(pair.now(), &rq, hourly(0), false).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    let data: Vec<&str> = pair.log.iter().map(|s| s.f.data.as_str()).collect();
    assert_eq!(
        data,
        [
            "QN=20160801085857223;ST=32;CN=2061;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&BeginTime=20160801080000;EndTime=20160801080000&&",
            "QN=20160801085857223;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&",
            C47_DATA,
            "QN=20160801085857223;ST=91;CN=9012;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&ExeRtn=1&&",
        ]
    );
    let events = pair.take_platform_events();
    assert!(matches!(&events[1], Event::Upload { needs_ack: false, request: Some(r), .. } if *r == qn));
    assert_eq!(events[2], Event::Completed { qn, exe_rtn: ExeRtn::Success });
}

#[test]
fn c48_history_with_answer_waits_for_9014_before_9012() {
    let mut pair = Pair::new();
    let qn = pair.platform.submit(pair.now(), history_request(), true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.advance(311);
    pair.site.accept(pair.now(), &rq).unwrap();
    let reply = pair.site.reply(pair.now(), &rq, hourly(0), true).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    // The data went with Flag 5 and the 9012 is held back until the platform answers it.
    assert_eq!(pair.cns(), [(Dir::ToSite, 2061), (Dir::ToPlatform, 9011), (Dir::ToPlatform, 2061)]);
    assert_eq!(pair.log[2].f.data, C47_DATA.replace("Flag=4", "Flag=5"));
    let events = pair.take_platform_events();
    let Event::Upload { token, needs_ack: true, request: Some(_), .. } = &events[1] else { panic!("{events:?}") };
    // The platform stores it (the broker's PUBACK) before answering.
    pair.advance(2_000);
    assert_eq!(pair.log.len(), 3, "no automatic 9014");
    pair.platform.ack(pair.now(), *token).unwrap();
    pair.drive();
    let answer = &pair.log[3].f;
    assert_eq!(answer.data, "QN=20160801085857534;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&");
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn: reply }]);
    assert_eq!(pair.log[4].f.cn, 9012);
    assert_eq!(pair.take_platform_events(), vec![Event::Completed { qn, exe_rtn: ExeRtn::Success }]);
    assert_eq!(pair.platform.ack(pair.now(), *token), Err(SessionError::UnknownToken));
}

#[test]
fn c49_split_history_without_answer_goes_back_to_back() {
    let mut pair = Pair::new();
    let qn = pair.platform.submit(pair.now(), history_request(), true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.advance(311);
    pair.site.accept(pair.now(), &rq).unwrap();
    pair.site.reply(pair.now(), &rq, hourly(30), false).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    let parts: Vec<&F> = pair.frames(Dir::ToPlatform).into_iter().map(|s| &s.f).filter(|f| f.cn == 2061).collect();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    let pnum = u16::try_from(parts.len()).unwrap();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!((p.flag, p.pnum, p.pno), (Some(6), Some(pnum), Some(u16::try_from(i + 1).unwrap())));
        assert!(p.cp.starts_with("DataTime=20160801080000;"), "every part repeats DataTime");
        assert!(p.data.len() <= 1024);
    }
    // Each part has its own QN (C.49: …534, …535).
    assert_eq!(parts[0].qn.as_deref(), Some("20160801085857534"));
    assert_eq!(parts[1].qn.as_deref(), Some("20160801085857535"));
    assert!(pair.frames(Dir::ToSite).iter().all(|s| s.f.cn != 9014), "Flag 6 parts are not answered");
    assert_eq!(pair.log.last().unwrap().f.cn, 9012);
    let events = pair.take_platform_events();
    let uploads: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::Upload { .. })).collect();
    let [Event::Upload { packet, needs_ack: false, qn: uq, .. }] = uploads.as_slice() else { panic!("{events:?}") };
    // Reassembled: one message with every item, Flag D cleared, the QN of part 1.
    assert_eq!(uq.as_deref(), Some("20160801085857534"));
    assert_eq!((packet.field("Flag"), packet.field("PNUM")), (Some("4"), None));
    assert_eq!(packet.cp.len(), 1 + 3 + 30);
    assert_eq!(events.last(), Some(&Event::Completed { qn, exe_rtn: ExeRtn::Success }));
}

#[test]
fn c50_split_history_with_answer_waits_for_9014_per_part() {
    let mut pair = Pair::new();
    let qn = pair.platform.submit(pair.now(), history_request(), true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.advance(311);
    pair.site.accept(pair.now(), &rq).unwrap();
    let reply = pair.site.reply(pair.now(), &rq, hourly(30), true).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    // Parts before the last are answered by the platform session as they arrive, each with its
    // own QN, and the site sends the next part only after that answer.
    let sequence: Vec<(Dir, u16, Option<String>)> =
        pair.log.iter().skip(2).map(|s| (s.dir, s.f.cn, s.f.qn.clone())).collect();
    let n = sequence.iter().filter(|s| s.1 == 2061).count();
    assert!(n >= 2);
    for k in 0..n - 1 {
        let (d, cn, part_qn) = &sequence[2 * k];
        assert_eq!((*d, *cn), (Dir::ToPlatform, 2061));
        assert_eq!(sequence[2 * k + 1], (Dir::ToSite, 9014, part_qn.clone()));
    }
    let last = pair.log[2 + 2 * (n - 1)].clone();
    assert_eq!((last.f.cn, last.f.flag, last.f.pno), (2061, Some(7), Some(u16::try_from(n).unwrap())));
    assert_eq!(pair.log.len(), 2 + 2 * (n - 1) + 1, "the last part waits for the platform's ack; 9012 waits too");
    let events = pair.take_platform_events();
    let Some(Event::Upload { token, needs_ack: true, .. }) = events.iter().find(|e| matches!(e, Event::Upload { .. }))
    else {
        panic!("{events:?}")
    };
    pair.platform.ack(pair.now(), *token).unwrap();
    pair.drive();
    let tail: Vec<&F> = pair.log.iter().rev().take(2).map(|s| &s.f).collect();
    assert_eq!((tail[1].cn, tail[1].qn.as_deref()), (9014, last.f.qn.as_deref()));
    assert_eq!(
        tail[1].data,
        format!("QN={};ST=91;CN=9014;PW={PW};MN={MN};Flag=4;CP=&&&&", last.f.qn.as_deref().unwrap())
    );
    assert_eq!(tail[0].cn, 9012);
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn: reply }]);
    assert_eq!(pair.take_platform_events(), vec![Event::Completed { qn, exe_rtn: ExeRtn::Success }]);
}

// ----- Notifications -----

#[test]
fn stop_realtime_2012_is_answered_with_9013_by_the_site() {
    let mut pair = Pair::new();
    let qn = pair.platform.submit(pair.now(), Message::StopUpload(Command::StopRealTimeData), true).unwrap();
    pair.drive();
    let data: Vec<&str> = pair.log.iter().map(|s| s.f.data.as_str()).collect();
    assert_eq!(
        data,
        [
            "QN=20160801085857223;ST=32;CN=2012;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&&&",
            "QN=20160801085857223;ST=91;CN=9013;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&",
        ]
    );
    let events = pair.take_site_events();
    assert!(matches!(&events[..], [Event::Notification { cn: 2012, qn: Some(q), .. }] if *q == qn));
    assert_eq!(pair.take_platform_events(), vec![Event::Acked { qn }]);
    assert_eq!(pair.platform.poll_timeout(), None);
}

#[test]
fn time_calibration_1013_is_answered_with_9013_by_the_platform_as_in_c4() {
    let mut pair = Pair::new();
    let qn =
        pair.site.submit(pair.now(), Message::TimeCalibrationRequest { pol_id: Some("w01018".into()) }, true).unwrap();
    pair.drive();
    let data: Vec<&str> = pair.log.iter().map(|s| s.f.data.as_str()).collect();
    assert_eq!(
        data,
        [
            "QN=20160801085857223;ST=32;CN=1013;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&PolId=w01018&&",
            "QN=20160801085857223;ST=91;CN=9013;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&",
        ]
    );
    assert!(matches!(&pair.take_platform_events()[..], [Event::Notification { cn: 1013, .. }]));
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn }]);
}

// ----- Uploads -----

fn realtime() -> Message {
    Message::Data {
        cn: Command::RealTimeData,
        data_time: t("20160801085857"),
        items: vec![DataItem {
            code: "w01018".into(),
            fields: vec![("Rtd".into(), "2.2".into()), ("Flag".into(), "N".into())],
        }],
    }
}

#[test]
fn realtime_upload_with_a1_is_acked_only_when_the_platform_says_so() {
    let mut pair = Pair::new();
    let qn = pair.site.submit(pair.now(), realtime(), true).unwrap();
    pair.drive();
    assert_eq!(pair.log.len(), 1);
    assert_eq!(
        pair.log[0].f.data,
        "QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;w01018-Rtd=2.2,w01018-Flag=N&&"
    );
    let events = pair.take_platform_events();
    let [Event::Upload { token, qn: Some(uq), needs_ack: true, request: None, packet }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!((uq, packet.cp_get("w01018-Rtd")), (&qn, Some("2.2")));
    // The broker is slow: nothing is answered, and the site's record stays.
    pair.advance(5_000);
    assert_eq!(pair.log.len(), 1);
    assert!(pair.take_site_events().is_empty());
    pair.platform.ack(pair.now(), *token).unwrap();
    pair.drive();
    assert_eq!(
        pair.log[1].f.data,
        "QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&"
    );
    assert_eq!(pair.log[1].at, 5_000);
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn }]);
    assert_eq!(pair.site.poll_timeout(), None);
}

#[test]
fn upload_without_a_is_sent_once_and_forgotten() {
    let mut pair = Pair::new();
    pair.site.submit(pair.now(), realtime(), false).unwrap();
    pair.drive();
    assert_eq!(pair.log[0].f.flag, Some(4));
    assert!(matches!(&pair.take_platform_events()[..], [Event::Upload { needs_ack: false, .. }]));
    assert_eq!((pair.site.poll_timeout(), pair.site.open_exchanges()), (None, 0));
    pair.advance(60_000);
    assert_eq!(pair.log.len(), 1);
}

#[test]
fn a_resent_upload_is_reported_once_and_reanswered_after_the_ack() {
    let mut pair = Pair::new();
    let qn = pair.site.submit(pair.now(), realtime(), true).unwrap();
    pair.drive();
    // The platform holds the ack longer than OverTime: the site resends, the platform does not
    // report the same upload twice.
    pair.advance(10_000);
    assert_eq!(pair.frames(Dir::ToPlatform).len(), 2);
    let events = pair.take_platform_events();
    let [Event::Upload { token, .. }] = &events[..] else { panic!("{events:?}") };
    // The 9014 is lost; the next resend is answered again from memory, without a new event.
    pair.deliver = Box::new(|dir, f| !(dir == Dir::ToSite && f.cn == 9014));
    pair.platform.ack(pair.now(), *token).unwrap();
    pair.drive();
    pair.deliver = Box::new(|_, _| true);
    pair.advance(20_000);
    let to_site = pair.frames(Dir::ToSite);
    assert_eq!(to_site.len(), 2);
    assert!(to_site.iter().all(|s| s.f.cn == 9014 && s.f.qn.as_deref() == Some(qn.as_str())));
    assert_eq!(to_site[1].at, 20_000);
    assert!(pair.take_platform_events().is_empty());
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn }]);
}

#[test]
fn long_upload_with_a1_is_split_with_flag_7_and_acked_after_the_last_part() {
    let mut pair = Pair::new();
    let qn = pair.site.submit(pair.now(), hourly(30), true).unwrap();
    pair.drive();
    let parts: Vec<&F> = pair.frames(Dir::ToPlatform).into_iter().map(|s| &s.f).collect();
    assert!(parts.len() >= 2);
    assert!(parts.iter().all(|p| p.flag == Some(7)));
    assert_eq!(parts[0].qn.as_deref(), Some(qn.as_str()));
    let events = pair.take_platform_events();
    let [Event::Upload { token, .. }] = &events[..] else { panic!("{events:?}") };
    assert!(pair.take_site_events().is_empty(), "not acked before the last part's 9014");
    pair.platform.ack(pair.now(), *token).unwrap();
    pair.drive();
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn }]);
}

// ----- Refusals -----

#[test]
fn a_request_with_a_wrong_password_is_refused_with_qnrtn_3() {
    let mut platform = platform_config();
    platform.pw = "999999".into();
    let mut pair = Pair::with(site_config(), platform);
    let qn = pair.platform.submit(pair.now(), Message::SetRtdInterval { seconds: 30 }, true).unwrap();
    pair.drive();
    // Answered with the requester's own PW and MN.
    assert_eq!(
        pair.log[1].f.data,
        "QN=20160801085857223;ST=91;CN=9011;PW=999999;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=3&&"
    );
    assert_eq!((pair.log[1].f.pw.as_deref(), pair.log[1].f.st.as_str()), (Some("999999"), "91"));
    assert_eq!(
        pair.take_site_events(),
        vec![Event::AutoRefused { qn: Some(qn.clone()), cn: 1062, qn_rtn: QnRtn::BadPassword }]
    );
    assert_eq!(pair.take_platform_events(), vec![Event::Refused { qn, qn_rtn: QnRtn::BadPassword }]);
    assert_eq!((pair.platform.poll_timeout(), pair.platform.open_exchanges()), (None, 0));
    assert_eq!(pair.log.len(), 2, "no 9012 after a refusal");
}

#[test]
fn wrong_mn_and_unknown_cn_are_refused_and_the_check_list_is_configurable() {
    let mut platform = platform_config();
    platform.mn = "010000A8900016F000169DC1".into();
    let mut pair = Pair::with(site_config(), platform);
    pair.platform.submit(pair.now(), Message::SetRtdInterval { seconds: 30 }, true).unwrap();
    pair.drive();
    assert_eq!((pair.log[1].f.cn, pair.log[1].f.mn.as_deref()), (9011, Some("010000A8900016F000169DC1")));
    assert_eq!(pair.log[1].f.cp, "QnRtn=4");

    let mut pair = Pair::new();
    let other = Message::Other { cn: 3050, cp: Vec::new() };
    pair.platform.submit(pair.now(), other.clone(), true).unwrap();
    pair.drive();
    assert_eq!(pair.log[1].f.cp, "QnRtn=8");
    assert_eq!(pair.take_platform_events()[0], Event::Refused { qn: BASE.into(), qn_rtn: QnRtn::BadCn });

    // With the CN check off, the runtime decides.
    let mut site = site_config();
    site.checks.commands = None;
    let mut pair = Pair::with(site, platform_config());
    pair.platform.submit(pair.now(), other, true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.site.refuse(pair.now(), &rq, QnRtn::Refused).unwrap();
    pair.drive();
    assert_eq!(pair.log[1].f.cp, "QnRtn=2");
    assert_eq!(pair.site.accept(pair.now(), &rq), Err(SessionError::UnknownRequest));
}

#[test]
fn the_site_runtime_calls_in_the_wrong_order_are_errors() {
    let mut pair = Pair::new();
    pair.platform.submit(pair.now(), history_request(), true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    let now = pair.now();
    assert!(matches!(pair.site.reply(now, &rq, hourly(0), false), Err(SessionError::InvalidState(_))));
    assert!(matches!(pair.site.finish(now, &rq, ExeRtn::Success), Err(SessionError::InvalidState(_))));
    assert_eq!(pair.site.accept(now, "20000101000000000"), Err(SessionError::UnknownRequest));
    assert_eq!(pair.platform.accept(now, &rq), Err(SessionError::WrongRole));
    assert_eq!(pair.site.ack(now, AckToken(0)), Err(SessionError::WrongRole));
    pair.site.accept(now, &rq).unwrap();
    assert!(matches!(pair.site.accept(now, &rq), Err(SessionError::InvalidState(_))));
}

// ----- Timeouts and resends -----

#[test]
fn an_unanswered_upload_is_resent_recount_times_then_fails() {
    let mut pair = Pair::new();
    pair.deliver = Box::new(|dir, _| dir == Dir::ToSite);
    let qn = pair.site.submit(pair.now(), realtime(), true).unwrap();
    pair.drive();
    pair.advance(39_999);
    assert!(pair.take_site_events().is_empty());
    pair.advance(100_000);
    // Sent at 0, then after each OverTime (10 s), ReCount (3) times; failed at 40 s.
    let sent: Vec<u64> = pair.frames(Dir::ToPlatform).iter().map(|s| s.at).collect();
    assert_eq!(sent, [0, 10_000, 20_000, 30_000]);
    assert!(pair.frames(Dir::ToPlatform).iter().all(|s| s.f.qn.as_deref() == Some(qn.as_str())), "same QN");
    assert_eq!(pair.take_site_events(), vec![Event::Failed { qn, cn: 2011, reason: Failure::NoAnswer { sent: 4 } }]);
    assert_eq!(pair.site.poll_timeout(), None);
}

#[test]
fn an_unanswered_request_is_resent_then_fails_and_a_lost_9011_is_repeated() {
    let mut pair = Pair::new();
    pair.deliver = Box::new(|dir, _| dir == Dir::ToPlatform);
    let qn = pair.platform.submit(pair.now(), Message::SetRtdInterval { seconds: 30 }, true).unwrap();
    pair.drive();
    pair.advance(50_000);
    let sent: Vec<u64> = pair.frames(Dir::ToSite).iter().map(|s| s.at).collect();
    assert_eq!(sent, [0, 10_000, 20_000, 30_000]);
    assert_eq!(
        pair.take_platform_events(),
        vec![Event::Failed { qn, cn: 1062, reason: Failure::NoAnswer { sent: 4 } }]
    );

    // The request arrives but the first 9011 is lost: the platform resends, the site repeats
    // its 9011 without reporting the request twice.
    let mut pair = Pair::new();
    let mut lost = false;
    pair.deliver = Box::new(move |dir, f| {
        let lose = dir == Dir::ToPlatform && f.cn == 9011 && !lost;
        lost |= lose;
        !lose
    });
    let qn = pair.platform.submit(pair.now(), Message::SetRtdInterval { seconds: 30 }, true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.site.accept(pair.now(), &rq).unwrap();
    pair.drive();
    pair.advance(10_000);
    assert!(pair.take_site_events().is_empty());
    assert_eq!(pair.take_platform_events(), vec![Event::Accepted { qn: qn.clone() }]);
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    assert_eq!(pair.take_platform_events(), vec![Event::Completed { qn, exe_rtn: ExeRtn::Success }]);
}

#[test]
fn cn_1000_sets_overtime_and_recount_of_the_site() {
    let mut pair = Pair::new();
    pair.platform.submit(pair.now(), Message::SetTimeoutRetry { over_time: 5, re_count: 2 }, true).unwrap();
    pair.drive();
    assert_eq!(pair.log[0].f.cp, "OverTime=5;ReCount=2");
    let (rq, _) = pair.site_request();
    pair.site.accept(pair.now(), &rq).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.drive();
    assert_eq!((pair.site.config().over_time_ms, pair.site.config().re_count), (5_000, 2));

    pair.advance(1_000);
    pair.log.clear();
    pair.deliver = Box::new(|dir, _| dir == Dir::ToSite);
    let qn = pair.site.submit(pair.now(), realtime(), true).unwrap();
    pair.drive();
    pair.advance(30_000);
    let sent: Vec<u64> = pair.frames(Dir::ToPlatform).iter().map(|s| s.at).collect();
    assert_eq!(sent, [1_000, 6_000, 11_000]);
    assert_eq!(pair.take_site_events(), vec![Event::Failed { qn, cn: 2011, reason: Failure::NoAnswer { sent: 3 } }]);
}

#[test]
fn an_unanswered_reply_aborts_its_request() {
    let mut pair = Pair::new();
    pair.platform.submit(pair.now(), history_request(), true).unwrap();
    pair.drive();
    let (rq, _) = pair.site_request();
    pair.site.accept(pair.now(), &rq).unwrap();
    pair.deliver = Box::new(|dir, _| dir == Dir::ToSite);
    let reply = pair.site.reply(pair.now(), &rq, hourly(0), true).unwrap();
    pair.site.finish(pair.now(), &rq, ExeRtn::Success).unwrap();
    pair.advance(60_000);
    assert_eq!(
        pair.take_site_events(),
        vec![
            Event::Failed { qn: reply, cn: 2061, reason: Failure::NoAnswer { sent: 4 } },
            Event::Failed { qn: rq, cn: 2061, reason: Failure::Aborted },
        ]
    );
    assert!(pair.frames(Dir::ToPlatform).iter().all(|s| s.f.cn != 9012));
    assert_eq!(pair.site.open_exchanges(), 0);
}

// ----- Execution timeout (§6.2.2) -----

/// Feeds the platform a frame from a hand-driven site.
fn feed(platform: &mut Session, now: Now, p: &OwnedPacket) {
    let bytes = p.to_frame(hj212_codec::CrcVariant::Hj212).unwrap();
    with_packet(&bytes, |packet| platform.handle_packet(now, packet));
}

fn answer(qn: &str, cn: u16, cp: (&str, &str)) -> OwnedPacket {
    let mut p = OwnedPacket::new(Some(qn), "91", cn, PW, MN, Some(hj212_codec::Flag(4)));
    p.push_group([cp]);
    p
}

#[test]
fn the_execution_timeout_restarts_on_every_sub_packet() {
    let base = DateTime::parse(BASE).unwrap().to_millis();
    let at = |ms: u64| Now::new(ms, DateTime::from_millis(base + ms as i64).unwrap());
    let mut platform = Session::new(platform_config());
    let qn = platform.submit(at(0), history_request(), true).unwrap();
    while platform.poll_transmit().is_some() {}
    feed(&mut platform, at(100), &answer(&qn, 9011, ("QnRtn", "1")));
    assert_eq!(platform.poll_event(), Some(Event::Accepted { qn: qn.clone() }));
    assert_eq!(platform.poll_timeout(), Some(10_100));

    // Three Flag 6 sub-packets, 8 s apart: each one restarts the 10 s execution timer.
    let mut whole = hourly(50).to_packet(&hj212_codec::message::Header {
        qn: Some("20160801085900000"),
        st: "32",
        pw: PW,
        mn: MN,
        flag: Some(hj212_codec::Flag(4)),
    });
    whole.set_field("Flag", "4");
    let parts = hj212_codec::subpacket::split(&whole, 1024, &mut QnGenerator::new(), t("20160801085900000")).unwrap();
    assert!(parts.len() >= 3);
    let mut ms = 100;
    for part in &parts {
        ms += 8_000;
        platform.handle_timeout(at(ms));
        assert!(platform.poll_event().is_none(), "no timeout at {ms}");
        feed(&mut platform, at(ms), part);
        assert_eq!(platform.poll_timeout(), Some(ms + 10_000));
    }
    assert!(platform.poll_transmit().is_none(), "Flag 6 parts are not answered");
    let Some(Event::Upload { request: Some(r), needs_ack: false, .. }) = platform.poll_event() else { panic!() };
    assert_eq!(r, qn);
    ms += 8_000;
    platform.handle_timeout(at(ms));
    feed(&mut platform, at(ms), &answer(&qn, 9012, ("ExeRtn", "1")));
    assert_eq!(platform.poll_event(), Some(Event::Completed { qn, exe_rtn: ExeRtn::Success }));

    // Without data the request fails 10 s after the 9011.
    let mut platform = Session::new(platform_config());
    let qn = platform.submit(at(0), history_request(), true).unwrap();
    feed(&mut platform, at(100), &answer(&qn, 9011, ("QnRtn", "1")));
    let _ = platform.poll_event();
    platform.handle_timeout(at(10_099));
    assert_eq!(platform.poll_event(), None);
    platform.handle_timeout(at(10_100));
    assert_eq!(platform.poll_event(), Some(Event::Failed { qn, cn: 2061, reason: Failure::ExecutionTimeout }));
}

// ----- Answers are never answered -----

#[test]
fn answers_are_never_answered_even_with_a_set() {
    let now = Now::new(0, t(BASE));
    for role in [Role::Site, Role::Platform] {
        let mut session = Session::new(Config::new(role, MN, PW, "32"));
        for (cn, cp) in [(9011, "QnRtn=1"), (9012, "ExeRtn=1"), (9013, ""), (9014, "")] {
            let data = format!("QN=20160801085857999;ST=91;CN={cn};PW={PW};MN={MN};Flag=5;CP=&&{cp}&&");
            let bytes = hj212_codec::encode::frame(data.as_bytes(), hj212_codec::CrcVariant::Hj212, false);
            with_packet(&bytes, |p| session.handle_packet(now, p));
            assert_eq!(session.poll_transmit(), None, "{role:?} answered {cn}");
            assert_eq!(session.poll_event(), Some(Event::Stray { cn, qn: Some("20160801085857999".into()) }));
        }
        assert_eq!(session.poll_timeout(), None);
    }
}

// ----- 2005-style peers -----

fn feed_raw(session: &mut Session, now: Now, data: &str) -> Vec<F> {
    let bytes = hj212_codec::encode::frame(data.as_bytes(), hj212_codec::CrcVariant::Hj212, false);
    with_packet(&bytes, |p| session.handle_packet(now, p));
    std::iter::from_fn(|| session.poll_transmit()).map(|b| decode(&b)).collect()
}

#[test]
fn a_2005_style_site_gets_the_2005_form_of_9014() {
    let now = Now::new(0, t(BASE));
    let mut platform = Session::new(Config::new(Role::Platform, "88888880000001", PW, "32"));
    // No header QN, A=1 without version bits.
    let out = feed_raw(
        &mut platform,
        now,
        "ST=32;CN=2051;PW=123456;MN=88888880000001;Flag=1;CP=&&QN=20040516010101001;DataTime=20040516010000;B01-Avg=36.91&&",
    );
    assert!(out.is_empty(), "not answered before ack");
    let Some(Event::Upload { token, needs_ack: true, qn: None, .. }) = platform.poll_event() else { panic!() };
    platform.ack(now, token).unwrap();
    let f = decode(&platform.poll_transmit().unwrap());
    assert_eq!(f.data, "ST=91;CN=9014;PW=123456;MN=88888880000001;CP=&&QN=20040516010101001;CN=2051&&");

    // A header QN with 2005 version bits: the QN goes into CP.
    let out = feed_raw(
        &mut platform,
        now,
        "QN=20040516010101002;ST=32;CN=2011;PW=123456;MN=88888880000001;Flag=1;CP=&&DataTime=20040516010101;B01-Rtd=36.91&&",
    );
    assert!(out.is_empty());
    let Some(Event::Upload { token, .. }) = platform.poll_event() else { panic!() };
    platform.ack(now, token).unwrap();
    let f = decode(&platform.poll_transmit().unwrap());
    assert_eq!(f.data, "ST=91;CN=9014;PW=123456;MN=88888880000001;CP=&&QN=20040516010101002;CN=2011&&");

    // 2005 site sending 1013 style notification without Flag still gets its 9013.
    let out = feed_raw(&mut platform, now, "QN=20040516010101003;ST=32;CN=1013;PW=123456;MN=88888880000001;CP=&&&&");
    assert_eq!(out[0].data, "ST=91;CN=9013;PW=123456;MN=88888880000001;CP=&&QN=20040516010101003&&");
}

#[test]
fn a_2005_style_platform_gets_2005_answers_and_data_with_the_qn_in_cp() {
    let now = Now::new(0, t(BASE));
    let mut site = Session::new(Config::new(Role::Site, "88888880000001", PW, "32"));
    let out = feed_raw(&mut site, now, "QN=20040516010101001;ST=32;CN=1011;PW=123456;MN=88888880000001;Flag=3;CP=&&&&");
    assert!(out.is_empty());
    let Some(Event::Request { qn, .. }) = site.poll_event() else { panic!() };
    site.accept(now, &qn).unwrap();
    site.reply(now, &qn, Message::TimeReply { pol_id: None, system_time: t("20040516010101") }, false).unwrap();
    site.finish(now, &qn, ExeRtn::Success).unwrap();
    let out: Vec<F> = std::iter::from_fn(|| site.poll_transmit()).map(|b| decode(&b)).collect();
    assert_eq!(out[0].data, "ST=91;CN=9011;PW=123456;MN=88888880000001;Flag=0;CP=&&QN=20040516010101001;QnRtn=1&&");
    assert_eq!((out[1].cn, out[1].st.as_str()), (1011, "32"));
    assert_eq!(out[1].cp, "QN=20040516010101001;SystemTime=20040516010101");
    assert_eq!(out[2].data, "ST=91;CN=9012;PW=123456;MN=88888880000001;CP=&&QN=20040516010101001;ExeRtn=1&&");
}

#[test]
fn a_2005_9014_without_header_qn_matches_our_upload_by_cp_qn() {
    let mut pair = Pair::new();
    let qn = pair.site.submit(pair.now(), realtime(), true).unwrap();
    pair.drive();
    let _ = pair.take_platform_events();
    let data = format!("ST=91;CN=9014;PW={PW};MN={MN};CP=&&QN={qn};CN=2011&&");
    let now = pair.now();
    let out = feed_raw(&mut pair.site, now, &data);
    assert!(out.is_empty());
    assert_eq!(pair.site.poll_event(), Some(Event::Acked { qn }));
}

// ----- Bounded memory -----

#[test]
fn overflow_is_an_error_never_a_panic() {
    let mut site = site_config();
    site.limits.max_exchanges = 2;
    let mut platform = platform_config();
    platform.limits.max_pending_acks = 1;
    platform.limits.max_queued_frames = 1;
    let mut pair = Pair::with(site, platform);
    pair.deliver = Box::new(|dir, _| dir == Dir::ToPlatform);
    let now = pair.now();
    let first = pair.site.submit(now, realtime(), true).unwrap();
    pair.site.submit(now, realtime(), true).unwrap();
    assert!(!pair.site.can_submit());
    assert_eq!(pair.site.submit(now, realtime(), true), Err(SessionError::TooManyExchanges { max: 2 }));
    pair.drive();
    // The platform remembers one pending ack; the second upload pushes the first out.
    let events = pair.take_platform_events();
    assert!(matches!(events[0], Event::Upload { token: AckToken(0), .. }));
    assert_eq!(events[1], Event::Error(SessionError::PendingAcksFull { max: 1, dropped: AckToken(0) }));
    assert!(matches!(events[2], Event::Upload { token: AckToken(1), .. }));
    assert_eq!(pair.platform.ack(pair.now(), AckToken(0)), Err(SessionError::UnknownToken));
    // A full transmit queue refuses the ack and keeps the token.
    let stop = Message::StopUpload(Command::StopRealTimeData);
    pair.platform.submit(pair.now(), stop, false).unwrap();
    assert_eq!(pair.platform.ack(pair.now(), AckToken(1)), Err(SessionError::TransmitQueueFull { max: 1 }));
    pair.drive();
    pair.deliver = Box::new(|_, _| true);
    pair.platform.ack(pair.now(), AckToken(1)).unwrap();
    pair.drive();
    let acked: Vec<Event> = pair.take_site_events().into_iter().filter(|e| matches!(e, Event::Acked { .. })).collect();
    assert_eq!(acked.len(), 1);
    assert_ne!(acked[0], Event::Acked { qn: first });
}

#[test]
fn a_2005_site_without_qns_is_acked_by_cn() {
    let mut site = site_config();
    site.version = hj212_codec::Version::V2005;
    site.qn_in_uploads = false;
    let mut pair = Pair::with(site, platform_config());
    let handle = pair.site.submit(pair.now(), realtime(), true).unwrap();
    pair.drive();
    let upload = &pair.log[0].f;
    assert_eq!((upload.qn.as_deref(), upload.flag), (None, Some(1)));
    let events = pair.take_platform_events();
    let [Event::Upload { token, qn: None, needs_ack: true, .. }] = &events[..] else { panic!("{events:?}") };
    pair.platform.ack(pair.now(), *token).unwrap();
    pair.drive();
    assert_eq!(pair.log[1].f.data, format!("ST=91;CN=9014;PW={PW};MN={MN};CP=&&CN=2011&&"));
    assert_eq!(pair.take_site_events(), vec![Event::Acked { qn: handle }]);
}
