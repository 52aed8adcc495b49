//! Renderers: the transmission table (text), the per-MN completeness calendar (SVG, hand-written
//! text, no crate), the networking-status table (text) and the JSON of `hj212-ingest report`.
//! All are pure functions of records.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use hj212_codec::time::DateTime;

use crate::quality::accounting::DailyRecord;
use crate::quality::link::{LinkState, LinkStatus};
use crate::quality::{DAY, date_string};

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// A text table of daily records, one line per record, with a total line per MN and CN.
#[must_use]
pub fn render_table(records: &[DailyRecord]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:<10} {:>4} {:>5} {:>8} {:>8} {:>6} {:>5} {:>4} {:>8} {:>8} {:>8}",
        "MN", "date", "CN", "int/s", "expected", "received", "valid", "late", "exc", "transm.", "effect.", "tr×eff"
    );
    let mut totals: BTreeMap<(&str, u16), (u32, u32, u32)> = BTreeMap::new();
    for r in records {
        let _ = writeln!(
            s,
            "{:<24} {:<10} {:>4} {:>5} {:>8} {:>8} {:>6} {:>5} {:>4} {:>8} {:>8} {:>8}{}",
            r.mn,
            r.date,
            r.cn,
            r.interval_s,
            r.expected,
            r.received,
            r.valid,
            r.late,
            r.excused,
            pct(r.transmission_rate),
            pct(r.effective_rate),
            pct(r.transmission_effective_rate),
            if r.complete { "" } else { "  (day in progress)" }
        );
        let t = totals.entry((r.mn.as_str(), r.cn)).or_default();
        t.0 += r.expected;
        t.1 += r.received;
        t.2 += r.valid;
    }
    if records.len() > 1 {
        let _ = writeln!(s);
        for ((mn, cn), (e, rc, v)) in totals {
            let ratio = |a: u32, b: u32| (b > 0).then(|| f64::from(a) / f64::from(b));
            let _ = writeln!(
                s,
                "{:<24} {:<10} {:>4} {:>5} {:>8} {:>8} {:>6} {:>5} {:>4} {:>8} {:>8} {:>8}",
                mn,
                "total",
                cn,
                "",
                e,
                rc,
                v,
                "",
                "",
                pct(ratio(rc, e)),
                pct(ratio(v, rc)),
                pct(ratio(v, e))
            );
        }
    }
    s
}

/// Which rate colours the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarMetric {
    /// received / expected.
    Transmission,
    /// valid / received.
    Effective,
    /// valid / expected (the assessment's 传输有效率).
    TransmissionEffective,
}

/// Colour bands: (lower bound inclusive, fill, legend text).
const BANDS: [(f64, &str, &str); 5] = [
    (0.95, "#1a9850", "≥ 95 %"),
    (0.90, "#91cf60", "90–95 %"),
    (0.75, "#fee08b", "75–90 %"),
    (0.50, "#fc8d59", "50–75 %"),
    (f64::NEG_INFINITY, "#d73027", "< 50 %"),
];
const NO_DATA: &str = "#e0e0e0";

fn colour(rate: Option<f64>) -> &'static str {
    match rate {
        None => NO_DATA,
        Some(r) => BANDS.iter().find(|(lo, _, _)| r >= *lo).map_or(NO_DATA, |b| b.1),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn day_number(date: &str) -> Option<i64> {
    let digits: String = date.chars().filter(char::is_ascii_digit).collect();
    DateTime::parse(&format!("{digits}000000")).map(|t| t.to_millis().div_euclid(DAY))
}

/// An SVG calendar of one MN's completeness: one block per month, one cell per day (Monday
/// first), coloured by `metric` of the records of stream `cn`; grey where nothing was expected or
/// no record exists; a dashed outline for a day still in progress. Hovering a cell shows its
/// numbers (`<title>`).
#[must_use]
pub fn render_calendar_svg(mn: &str, cn: u16, records: &[DailyRecord], metric: CalendarMetric) -> String {
    const CELL: i64 = 30;
    const GAP: i64 = 3;
    const COLS: i64 = 3;
    let by_day: BTreeMap<i64, &DailyRecord> =
        records.iter().filter(|r| r.mn == mn && r.cn == cn).filter_map(|r| Some((day_number(&r.date)?, r))).collect();
    let mut months: Vec<(i32, u8)> = by_day
        .keys()
        .map(|&d| {
            let t = crate::quality::dt(d * DAY);
            (i32::from(t.year), t.month)
        })
        .collect();
    months.dedup();
    let block_w = 7 * (CELL + GAP) + 24;
    let block_h = 7 * (CELL + GAP) + 40;
    let n = i64::try_from(months.len()).unwrap_or(0).max(1);
    let rows = (n + COLS - 1) / COLS;
    let width = COLS.min(n) * block_w + 20;
    let height = rows * block_h + 110;
    let what = match metric {
        CalendarMetric::Transmission => "transmission rate",
        CalendarMetric::Effective => "effective rate",
        CalendarMetric::TransmissionEffective => "transmission × effective rate",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ =
        writeln!(s, r#"<text x="10" y="24" font-size="16" font-weight="bold">{} — CN {cn} {what}</text>"#, escape(mn));
    for (i, &(year, month)) in months.iter().enumerate() {
        let i = i64::try_from(i).unwrap_or(0);
        let ox = 10 + (i % COLS) * block_w;
        let oy = 40 + (i / COLS) * block_h;
        let _ = writeln!(
            s,
            r#"<text x="{ox}" y="{}" font-size="13" font-weight="bold">{year:04}-{month:02}</text>"#,
            oy + 14
        );
        for (c, wd) in ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"].iter().enumerate() {
            let x = ox + i64::try_from(c).unwrap_or(0) * (CELL + GAP) + CELL / 2;
            let _ = writeln!(
                s,
                r##"<text x="{x}" y="{}" font-size="10" text-anchor="middle" fill="#555">{wd}</text>"##,
                oy + 30
            );
        }
        let Some(first) = day_number(&format!("{year:04}-{month:02}-01")) else { continue };
        let next =
            if month == 12 { format!("{:04}-01-01", year + 1) } else { format!("{year:04}-{:02}-01", month + 1) };
        let last = day_number(&next).unwrap_or(first + 28);
        let offset = (first + 3).rem_euclid(7); // 1970-01-01 was a Thursday.
        for d in first..last {
            let k = d - first + offset;
            let x = ox + (k % 7) * (CELL + GAP);
            let y = oy + 36 + (k / 7) * (CELL + GAP);
            let rec = by_day.get(&d);
            let rate = rec.and_then(|r| match metric {
                CalendarMetric::Transmission => r.transmission_rate,
                CalendarMetric::Effective => r.effective_rate,
                CalendarMetric::TransmissionEffective => r.transmission_effective_rate,
            });
            let stroke =
                if rec.is_some_and(|r| !r.complete) { r##" stroke="#333" stroke-dasharray="3,2""## } else { "" };
            let title = match rec {
                Some(r) => format!(
                    "{} CN {}: expected {}, received {}, valid {}, late {}; transmission {}, effective {}, product {}{}",
                    r.date,
                    r.cn,
                    r.expected,
                    r.received,
                    r.valid,
                    r.late,
                    pct(r.transmission_rate),
                    pct(r.effective_rate),
                    pct(r.transmission_effective_rate),
                    if r.complete { "" } else { " (in progress)" }
                ),
                None => format!("{}: no record", date_string(d)),
            };
            let _ = writeln!(
                s,
                r#"<g><title>{}</title><rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" rx="3" fill="{}"{stroke}/><text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text></g>"#,
                escape(&title),
                colour(rate),
                x + CELL / 2,
                y + CELL / 2 + 4,
                d - first + 1
            );
        }
    }
    let ly = height - 50;
    let mut lx = 10;
    for (_, fill, label) in BANDS.iter().map(|b| (b.0, b.1, b.2)).chain([(0.0, NO_DATA, "no data")]) {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{ly}" width="14" height="14" fill="{fill}"/><text x="{}" y="{}" font-size="11">{label}</text>"#,
            lx + 18,
            ly + 11
        );
        lx += 80;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" font-size="10" fill="#555">dashed: day in progress. Rates as defined by the O&amp;M assessment (received/expected, valid/received).</text>"##,
        ly + 34
    );
    s.push_str("</svg>\n");
    s
}

/// A text table of networking status.
#[must_use]
pub fn render_network_status(rows: &[LinkStatus]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:<16} {:<4} {:<16} {:<14} {:<14} conn",
        "MN", "name", "reg", "state", "since", "last seen"
    );
    for r in rows {
        let state = match r.state {
            LinkState::NeverConnected => "never connected",
            LinkState::Online => "online",
            LinkState::Silent => "silent",
            LinkState::Offline => "offline",
        };
        let t = |t: Option<DateTime>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
        let _ = writeln!(
            s,
            "{:<24} {:<16} {:<4} {:<16} {:<14} {:<14} {}",
            r.mn,
            r.name,
            if r.registered { "yes" } else { "no" },
            state,
            t(r.since),
            t(r.last_seen),
            if r.connected { "yes" } else { "no" }
        );
    }
    s
}

/// The networking section of `hj212-ingest report`: a heading with the time the status was
/// taken (`as_of`, the state file's `written_at`), the table of [`render_network_status`], and a
/// count per state. Registered MNs that never connected are listed with the start of their
/// monitoring, MNs that stopped transmitting (offline) or went silent with their last traffic.
#[must_use]
pub fn render_network_section(rows: &[LinkStatus], as_of: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Networking status as of {as_of}:");
    if rows.is_empty() {
        let _ = writeln!(s, "(no networking status)");
        return s;
    }
    s.push_str(&render_network_status(rows));
    let count = |state: LinkState| rows.iter().filter(|r| r.state == state).count();
    let _ = writeln!(
        s,
        "{} online, {} silent, {} offline, {} never connected",
        count(LinkState::Online),
        count(LinkState::Silent),
        count(LinkState::Offline),
        count(LinkState::NeverConnected)
    );
    s
}

/// One element of the JSON of `hj212-ingest report --json`: a daily record, its fields unchanged
/// and in their order, then `network`, the networking status of its MN as of `as_of`, or `null`
/// when there is none for that MN. Adding a field keeps every reader of the earlier output (an
/// array of daily records) working.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow<'a> {
    /// The record.
    #[serde(flatten)]
    pub record: &'a DailyRecord,
    /// The networking status of the record's MN.
    pub network: Option<NetworkAsOf<'a>>,
}

/// A [`LinkStatus`] with the time it was taken (the state file's `written_at`).
#[derive(Debug, Clone, Serialize)]
pub struct NetworkAsOf<'a> {
    /// The status.
    #[serde(flatten)]
    pub status: &'a LinkStatus,
    /// When it was taken, `YYYYMMDDhhmmss`.
    pub as_of: &'a str,
}

/// The rows of `hj212-ingest report --json`, one per record (see [`ReportRow`]).
#[must_use]
pub fn report_rows<'a>(records: &'a [DailyRecord], network: &'a [LinkStatus], as_of: &'a str) -> Vec<ReportRow<'a>> {
    records
        .iter()
        .map(|record| ReportRow {
            record,
            network: network.iter().find(|n| n.mn == record.mn).map(|status| NetworkAsOf { status, as_of }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(date: &str, rate: Option<f64>, complete: bool) -> DailyRecord {
        DailyRecord {
            mn: "MN<1>".into(),
            date: date.into(),
            cn: 2061,
            interval_s: 3600,
            expected: 24,
            excused: 0,
            received: 20,
            valid: 18,
            late: 1,
            transmission_rate: rate,
            effective_rate: Some(0.9),
            transmission_effective_rate: rate,
            complete,
            missing_periods: vec![],
            pollutants: vec![],
        }
    }

    #[test]
    fn table_and_calendar() {
        let recs = vec![
            rec("2026-02-27", Some(1.0), true),
            rec("2026-02-28", Some(0.8), true),
            rec("2026-03-01", Some(0.3), true),
            rec("2026-03-02", None, false),
        ];
        let t = render_table(&recs);
        assert!(t.contains("2026-02-28") && t.contains("80.0%") && t.contains("total") && t.contains("in progress"));
        let svg = render_calendar_svg("MN<1>", 2061, &recs, CalendarMetric::TransmissionEffective);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("MN&lt;1&gt;"), "escaped");
        assert!(svg.contains("2026-02") && svg.contains("2026-03"));
        // February 2026 has 28 cells, March 31.
        assert_eq!(svg.matches("<g><title>").count(), 28 + 31);
        assert!(svg.contains("#1a9850") && svg.contains("#fee08b") && svg.contains("#d73027"));
        assert!(svg.contains("stroke-dasharray"));
        // 2026-03-01 is a Sunday: its cell is in the last column.
        let line = svg.lines().find(|l| l.contains("<title>2026-03-01")).unwrap();
        assert!(line.contains(&format!("x=\"{}\"", 10 + 7 * 33 + 24 + 6 * 33)), "{line}");
        assert_eq!(day_number("1970-01-02"), Some(1));
    }

    fn status(mn: &str, state: LinkState, since: &str) -> LinkStatus {
        LinkStatus {
            mn: mn.into(),
            name: String::new(),
            registered: true,
            state,
            since: DateTime::parse(since),
            last_seen: None,
            connected: false,
        }
    }

    #[test]
    fn network_section_and_report_rows() {
        let rows = vec![
            status("MN<1>", LinkState::Offline, "20260301083000"),
            status("MN2", LinkState::NeverConnected, "20260226000000"),
        ];
        let text = render_network_section(&rows, "20260302101500");
        assert!(text.starts_with("Networking status as of 20260302101500:"), "{text}");
        let line = |mn: &str| text.lines().find(|l| l.starts_with(mn)).unwrap_or_else(|| panic!("{mn}: {text}"));
        assert!(line("MN<1>").contains("offline") && line("MN<1>").contains("20260301083000"), "{text}");
        assert!(line("MN2").contains("never connected") && line("MN2").contains("20260226000000"), "{text}");
        assert!(text.contains("0 online, 0 silent, 1 offline, 1 never connected"), "{text}");
        assert!(render_network_section(&[], "20260302101500").contains("(no networking status)"));

        let mut other = rec("2026-03-01", Some(0.5), true);
        other.mn = "MN3".into();
        let records = [rec("2026-03-01", Some(0.5), true), other];
        let json = serde_json::to_string(&report_rows(&records, &rows, "20260302101500")).unwrap();
        // The record's fields come first, in their order, then `network`.
        let plain = serde_json::to_string(&records[0]).unwrap();
        assert!(json.starts_with(&format!("[{},\"network\":{{", &plain[..plain.len() - 1])), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 2);
        // The record's own fields are unchanged: a reader of the earlier output still gets the
        // record (serde ignores the added field).
        assert_eq!(serde_json::from_value::<DailyRecord>(a[0].clone()).unwrap(), rec("2026-03-01", Some(0.5), true));
        assert_eq!(a[0]["network"]["state"], "offline");
        assert_eq!(a[0]["network"]["since"], "20260301083000");
        assert_eq!(a[0]["network"]["as_of"], "20260302101500");
        assert!(a[1]["network"].is_null(), "no status for MN3");
    }
}
