//! [`Engine`]: the one object the daemon drives.
//!
//! ```text
//! every accepted frame     → engine.feed_message(now, mn, &message)   (or feed_packet)
//! connect/close/CRC/auth   → engine.feed_event(now, event)
//! commands sent down       → engine.feed_event(now, Event::CommandSent { .. })
//! every ~10–60 s           → engine.tick(now)
//! each returns Vec<Action>: alerts to publish, history requests to send, recovery outcomes and
//! settled daily records to store.
//! on shutdown / periodically → engine.save(now)      (EngineState, serde)
//! at start                   → Engine::restore(cfg, state, now)
//! ```

use std::collections::{BTreeMap, VecDeque};

use hj212_codec::Packet;
use hj212_codec::codes::{ExeRtn, QnRtn};
use hj212_codec::message::{DataItemRef, DataItems, Message};
use hj212_codec::time::DateTime;

use crate::quality::accounting::{DailyRecord, Flags, Ledger, StreamCtx};
use crate::quality::comparison::{ComparisonReport, LabSample, OnlineStore, OnlineValue, compare};
use crate::quality::config::QualityConfig;
use crate::quality::expect::{Expectation, MnExpect};
use crate::quality::link::{Failures, LinkStatus, MnLink};
use crate::quality::persist::{EngineState, LEDGER_DAYS, MnSaved};
use crate::quality::recovery::{Ending, Outstanding, Planner, RecoveryRecord, conclude};
use crate::quality::rules::{Item, Rules};
use crate::quality::{Action, Alert, DAY, Event, HOUR, Ms, Rule, dt, minutes};

/// CNs whose records are accounted (when expected).
const ACCOUNTED: [u16; 4] = [2011, 2051, 2061, 2031];
/// Recovery records kept for [`Engine::recovery_records`].
const RECOVERY_LOG: usize = 1000;

#[derive(Debug)]
struct MnState {
    expect: MnExpect,
    link: MnLink,
    /// From when data are expected.
    start: Ms,
    registered: bool,
    name: String,
    stops: Vec<(Ms, Ms)>,
}

/// A 1062/1064 the platform sent, waiting for the DAU's result.
#[derive(Debug, Clone)]
struct PendingSet {
    message: Message,
    at: Ms,
}

/// The data-quality engine. Sans-IO: every input carries the current time; see the module docs
/// of [`crate::quality`].
#[derive(Debug)]
pub struct Engine {
    cfg: QualityConfig,
    epoch: Option<Ms>,
    mns: BTreeMap<String, MnState>,
    ledger: Ledger,
    planner: Planner,
    rules: Rules,
    failures: Failures,
    online: OnlineStore,
    emitted_through: BTreeMap<(String, u16), i64>,
    recovery_log: VecDeque<RecoveryRecord>,
    /// Interval commands sent per MN, oldest first, until their result (not saved).
    pending_sets: BTreeMap<String, VecDeque<PendingSet>>,
}

impl Engine {
    /// An engine with this configuration (registry included).
    #[must_use]
    pub fn new(cfg: QualityConfig) -> Self {
        Self {
            cfg,
            epoch: None,
            mns: BTreeMap::new(),
            ledger: Ledger::default(),
            planner: Planner::default(),
            rules: Rules::default(),
            failures: Failures::default(),
            online: OnlineStore::default(),
            emitted_through: BTreeMap::new(),
            recovery_log: VecDeque::new(),
            pending_sets: BTreeMap::new(),
        }
    }

    /// The durable state as of `now`, to be stored and given back to [`Engine::restore`] after
    /// a restart. What is in it, and what is deliberately left out, is described in
    /// [`crate::quality::persist`].
    #[must_use]
    pub fn save(&self, now: DateTime) -> EngineState {
        let from = self.ledger_horizon(now.to_millis());
        let mns = self
            .mns
            .iter()
            .map(|(mn, st)| {
                let saved = MnSaved {
                    expect: st.expect.clone(),
                    link: st.link.clone(),
                    start: st.start,
                    stops: st.stops.clone(),
                };
                (mn.clone(), saved)
            })
            .collect();
        EngineState::new(
            now,
            self.epoch,
            mns,
            self.ledger.since(from),
            self.planner.clone(),
            self.rules.clone(),
            self.failures.clone(),
            self.emitted_through.clone(),
        )
    }

    /// The oldest period start the ledger keeps: today and the [`LEDGER_DAYS`] days before,
    /// the days a record may still take to settle, and at least the recovery lookback. Older
    /// days live on as the daily records already emitted. The same horizon bounds what is saved,
    /// so a running engine holds no more than a restarted one.
    fn ledger_horizon(&self, now: Ms) -> Ms {
        let rc = &self.cfg.recovery;
        let lookback = minutes(rc.hourly_lookback_hours.max(rc.minute_lookback_hours) * 60.0);
        let settle_days = (self.cfg.accounting.settle_hours.max(0.0) / 24.0).ceil() as i64;
        ((now.div_euclid(DAY) - LEDGER_DAYS - settle_days) * DAY).min(now - lookback)
    }

    /// An engine with this configuration and the state a previous run saved. The configuration
    /// wins where both speak (registry streams, pollutants, names, `active_from`); what the
    /// engine learnt is kept; connections and outstanding requests of the previous run are
    /// not (see [`crate::quality::persist`]).
    #[must_use]
    pub fn restore(cfg: QualityConfig, state: EngineState, now: DateTime) -> Self {
        let mut e = Self::new(cfg);
        let saved_at = state.saved_at().map_or_else(|| now.to_millis(), |t| t.to_millis());
        for (mn, saved) in state.mns {
            let site = e.cfg.site(&mn);
            let mut expect = MnExpect::new(site, &e.cfg);
            expect.inherit(&saved.expect);
            let start = site
                .and_then(|s| s.active_from.as_deref())
                .and_then(DateTime::parse)
                .map_or(saved.start, |t| t.to_millis());
            let st = MnState {
                expect,
                link: saved.link.restored(saved_at),
                start,
                registered: site.is_some(),
                name: site.map(|s| s.name.clone()).unwrap_or_default(),
                stops: saved.stops,
            };
            e.mns.insert(mn, st);
        }
        e.ledger = state.ledger;
        e.planner = state.planner.restored();
        e.rules = state.rules;
        e.failures = state.failures;
        e.emitted_through = state.emitted_through;
        // Sites registered since the save are new: expected from now, not from the old epoch.
        e.epoch = Some(state.epoch.unwrap_or_else(|| now.to_millis()));
        e.add_registered(now.to_millis());
        e
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &QualityConfig {
        &self.cfg
    }

    /// Replaces the configuration (a registry reload). Learnt state is kept; registered MNs new
    /// to the engine start being expected now (or from their `active_from`).
    pub fn set_config(&mut self, now: DateTime, cfg: QualityConfig) {
        self.cfg = cfg;
        let now = now.to_millis();
        for site in self.cfg.sites.clone() {
            if let Some(st) = self.mns.get_mut(&site.mn) {
                st.expect = rebuild(&st.expect, &site, &self.cfg);
                st.registered = true;
                st.name.clone_from(&site.name);
            }
        }
        self.epoch.get_or_insert(now);
        self.add_registered(now);
    }

    /// Registered MNs the engine does not know yet are expected from the engine's first call.
    fn ensure_registry(&mut self, now: Ms) {
        // `new` leaves the registry to the first call; `restore` and `set_config` add it at once
        // and set the epoch, so this walks the registry once, not once per frame.
        if self.epoch.is_none() {
            self.epoch = Some(now);
            self.add_registered(now);
        }
    }

    /// Adds the registered MNs the engine does not know yet, expected from their `active_from`,
    /// else from `default_start`.
    fn add_registered(&mut self, default_start: Ms) {
        for site in &self.cfg.sites {
            if !self.mns.contains_key(&site.mn) {
                let start =
                    site.active_from.as_deref().and_then(DateTime::parse).map_or(default_start, |t| t.to_millis());
                self.mns.insert(
                    site.mn.clone(),
                    MnState {
                        expect: MnExpect::new(Some(site), &self.cfg),
                        link: MnLink::default(),
                        start,
                        registered: true,
                        name: site.name.clone(),
                        stops: Vec::new(),
                    },
                );
            }
        }
    }

    fn state(&mut self, mn: &str, now: Ms) -> &mut MnState {
        self.ensure_registry(now);
        let cfg = &self.cfg;
        self.mns.entry(mn.to_string()).or_insert_with(|| MnState {
            expect: MnExpect::new(None, cfg),
            link: MnLink::default(),
            start: now,
            registered: false,
            name: String::new(),
            stops: Vec::new(),
        })
    }

    /// Declares an approved stop (停产/停运) of an MN: its periods are not expected.
    pub fn declare_stop(&mut self, now: DateTime, mn: &str, begin: DateTime, end: DateTime) {
        let st = self.state(mn, now.to_millis());
        st.stops.push((begin.to_millis(), end.to_millis()));
    }

    /// A decoded message received from `mn` (data, site information, interval replies, 9011/9012).
    pub fn feed_message(&mut self, now: DateTime, mn: &str, msg: &Message) -> Vec<Action> {
        let now = now.to_millis();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut actions = Vec::new();
        self.state(mn, now).link.received(now);
        match msg {
            Message::RtdIntervalReply { .. } | Message::MinIntervalReply { .. } => self.interval_in_force(mn, msg, now),
            Message::Data { data_time, items, .. } => {
                self.on_data(now, mn, msg.cn(), *data_time, items, &mut alerts);
            }
            Message::SiteInfo { data_time, pol_id, items } => {
                self.rules.on_site_info(
                    &self.cfg,
                    mn,
                    data_time.to_millis(),
                    pol_id.as_deref(),
                    items,
                    now,
                    &mut alerts,
                );
            }
            Message::RequestAnswer { qn_rtn } if self.planner.is_outstanding(mn) => {
                if let Some(o) = self.planner.answered(mn, *qn_rtn == QnRtn::Ready) {
                    actions.push(self.conclude(mn, &o, now, Ending::Refused));
                }
            }
            // Without a history request outstanding, a refusal answers the oldest interval
            // command sent (matched as history requests are: the next answer from that MN).
            Message::RequestAnswer { qn_rtn } if *qn_rtn != QnRtn::Ready => {
                self.next_pending_set(mn, now);
            }
            Message::ExecutionResult { exe_rtn } => {
                if let Some(o) = self.planner.finish(mn) {
                    let ending = if matches!(exe_rtn, ExeRtn::Success | ExeRtn::NoData) {
                        Ending::Answered
                    } else {
                        Ending::Refused
                    };
                    actions.push(self.conclude(mn, &o, now, ending));
                } else if let Some(set) = self.next_pending_set(mn, now)
                    && *exe_rtn == ExeRtn::Success
                {
                    self.interval_in_force(mn, &set, now);
                }
            }
            _ => {}
        }
        actions.extend(alerts.into_iter().map(Action::Alert));
        actions
    }

    /// A data upload: expectations, accounting, comparison values and the rules.
    fn on_data<I: Item>(
        &mut self,
        now: Ms,
        mn: &str,
        cn: u16,
        data_time: DateTime,
        items: &[I],
        alerts: &mut Vec<Alert>,
    ) {
        let t = data_time.to_millis();
        let codes: Vec<&str> =
            items.iter().map(|i| i.code()).filter(|c| !c.starts_with("SB") && !c.starts_with('i')).collect();
        let cfg = &self.cfg;
        let Some(st) = self.mns.get_mut(mn) else { return };
        if ACCOUNTED.contains(&cn) {
            st.expect.observe(cn, t, &codes, cfg);
        }
        let period = st.expect.interval(cn).map_or(0, |(i, _)| Ms::from(i) * 1000);
        // Only streams that are accounted are recorded: a site's real-time data (2011, every
        // 30 s) is not, unless its registry entry lists it.
        if ACCOUNTED.contains(&cn) && period > 0 && st.expect.expected(cn) {
            let pollutants = st.expect.pollutants(cn);
            let ctx = StreamCtx {
                mn,
                cn,
                interval_ms: period,
                start: st.start,
                stops: &st.stops,
                pollutants,
                valid_flags: &cfg.accounting.valid_flags,
                grace: minutes(cfg.accounting.grace_minutes),
            };
            let flags = Flags::new(
                items.iter().filter(|i| codes.contains(&i.code())).map(|i| (i.code(), i.get("Flag").unwrap_or("N"))),
            );
            self.ledger.record(&ctx, t, now, flags);
        }
        if cfg.comparison.online_cns.contains(&cn) {
            for i in items.iter().filter(|i| codes.contains(&i.code())) {
                let v = if cn == 2011 { i.number("Rtd") } else { i.number("Avg") };
                if let Some(value) = v.filter(|v| !cfg.is_sentinel(*v)) {
                    self.online.push(mn, i.code(), cn, data_time, value, i.get("Flag").unwrap_or("N"));
                }
            }
        }
        self.rules.on_data(&self.cfg, mn, cn, t, period, items, now, alerts);
    }

    /// Convenience: reads the MN of a parsed packet and feeds it with [`Engine::feed_frame`].
    pub fn feed_packet(&mut self, now: DateTime, packet: &Packet<'_>) -> Vec<Action> {
        self.feed_frame(now, packet.mn().unwrap_or(""), packet)
    }

    /// A parsed frame received from `mn`. The uploads of every few seconds (2011, 2051, 2061,
    /// 2031) are read where they lie, borrowed from the frame; every other message is decoded
    /// and given to [`Engine::feed_message`]. Both ways give the same result. A packet whose
    /// message does not parse still counts as traffic.
    pub fn feed_frame(&mut self, now: DateTime, mn: &str, packet: &Packet<'_>) -> Vec<Action> {
        if let Some(data_time) = upload_time(packet) {
            let now = now.to_millis();
            self.state(mn, now).link.received(now);
            let items = DataItems::of(packet);
            let items: Vec<DataItemRef<'_>> = items.iter().collect();
            let mut alerts = Vec::new();
            self.on_data(now, mn, packet.cn(), data_time, &items, &mut alerts);
            return alerts.into_iter().map(Action::Alert).collect();
        }
        match Message::from_packet(packet) {
            Ok(m) => self.feed_message(now, mn, &m),
            Err(_) => {
                self.state(mn, now.to_millis()).link.received(now.to_millis());
                Vec::new()
            }
        }
    }

    /// A link or protocol event.
    pub fn feed_event(&mut self, now: DateTime, event: Event) -> Vec<Action> {
        let now = now.to_millis();
        let mut out = Vec::new();
        match event {
            Event::Connected { mn } => self.state(&mn, now).link.connect(now),
            Event::Disconnected { mn } => self.state(&mn, now).link.disconnect(now),
            Event::CrcFailure { key } => {
                out.extend(
                    self.failures.failure(&key, Rule::RepeatedCrcFailures, now, &self.cfg.link).map(Action::Alert),
                );
            }
            Event::AuthFailure { key } => {
                out.extend(
                    self.failures.failure(&key, Rule::RepeatedAuthFailures, now, &self.cfg.link).map(Action::Alert),
                );
            }
            Event::CommandSent { mn, message } => match &message {
                Message::AnalyzerControl { cn, pol_id, .. } if cn.value() == 3011 => {
                    self.rules.on_calibration_command(&mn, pol_id, now);
                }
                Message::SetRtdInterval { .. } | Message::SetMinInterval { .. } => {
                    self.pending_sets.entry(mn).or_default().push_back(PendingSet { message, at: now });
                }
                _ => {}
            },
            Event::CommandFinished { mn, message, ok } => {
                if let Some(queue) = self.pending_sets.get_mut(&mn) {
                    if let Some(i) = queue.iter().position(|p| p.message == message) {
                        queue.remove(i);
                    }
                    if queue.is_empty() {
                        self.pending_sets.remove(&mn);
                    }
                }
                if ok {
                    self.interval_in_force(&mn, &message, now);
                }
            }
            Event::HistoryFinished { mn, ok } => {
                if let Some(o) = self.planner.finish(&mn) {
                    out.push(self.conclude(&mn, &o, now, if ok { Ending::Answered } else { Ending::Refused }));
                }
            }
        }
        out
    }

    /// The interval a DAU uses now: its reply to 1061/1063, or a 1062/1064 it executed.
    fn interval_in_force(&mut self, mn: &str, msg: &Message, now: Ms) {
        match msg {
            Message::RtdIntervalReply { seconds } | Message::SetRtdInterval { seconds } => {
                let st = self.state(mn, now);
                st.expect.announce(2011, u32::from(*seconds));
                st.expect.announce(2021, u32::from(*seconds));
            }
            Message::MinIntervalReply { minutes } | Message::SetMinInterval { minutes } => {
                self.state(mn, now).expect.announce(2051, u32::from(*minutes) * 60);
            }
            _ => {}
        }
    }

    /// Takes the oldest interval command of `mn` still waiting for its result (within
    /// `recovery.reply_timeout_minutes`).
    fn next_pending_set(&mut self, mn: &str, now: Ms) -> Option<Message> {
        let window = minutes(self.cfg.recovery.reply_timeout_minutes);
        let queue = self.pending_sets.get_mut(mn)?;
        let mut found = None;
        while let Some(p) = queue.pop_front() {
            if now - p.at <= window {
                found = Some(p.message);
                break;
            }
        }
        if queue.is_empty() {
            self.pending_sets.remove(mn);
        }
        found
    }

    fn conclude(&mut self, mn: &str, o: &Outstanding, now: Ms, ending: Ending) -> Action {
        let ledger = &self.ledger;
        let cn = o.cn();
        let rec = conclude(mn, o, now, ending, |p| ledger.has(mn, cn, p));
        self.recovery_log.push_back(rec.clone());
        while self.recovery_log.len() > RECOVERY_LOG {
            self.recovery_log.pop_front();
        }
        Action::Recovery(rec)
    }

    /// The allowance of silence for an MN.
    fn allowance(&self, st: &MnState) -> Ms {
        let shortest = st.expect.shortest_interval().map_or(HOUR, |s| Ms::from(s) * 1000);
        ((self.cfg.link.silence_factor * shortest as f64) as Ms).max(minutes(self.cfg.link.silence_floor_minutes))
    }

    /// Time passes: link rules, parameter-change verdicts, recovery (timeouts and new requests),
    /// settled daily records, pruning.
    pub fn tick(&mut self, now: DateTime) -> Vec<Action> {
        let now = now.to_millis();
        self.ensure_registry(now);
        let mut out = Vec::new();
        let mut alerts = Vec::new();
        self.rules.tick(&self.cfg, now, &mut alerts);
        self.failures.tick(now, &self.cfg.link);
        let allowances: Vec<(String, Ms)> = self.mns.iter().map(|(m, st)| (m.clone(), self.allowance(st))).collect();
        for (mn, allowance) in allowances {
            if let Some(st) = self.mns.get_mut(&mn) {
                alerts.extend(st.link.check(&mn, now, allowance, st.start, &self.cfg.link));
            }
        }
        out.extend(alerts.into_iter().map(Action::Alert));
        // Recovery.
        for (mn, o) in self.planner.timed_out(now, &self.cfg.recovery) {
            out.push(self.conclude(&mn, &o, now, Ending::TimedOut));
        }
        if self.cfg.recovery.enabled {
            self.plan_recovery(now, &mut out);
        }
        self.emit_daily(now, &mut out);
        // Pruning.
        let keep = Ms::from(self.cfg.accounting.keep_days.max(1)) * DAY;
        self.ledger.prune(self.ledger_horizon(now));
        self.planner.prune(now - keep);
        let horizon = now - minutes(self.cfg.comparison.keep_online_hours * 60.0);
        self.online.prune(horizon);
        let window = minutes(self.cfg.recovery.reply_timeout_minutes);
        self.pending_sets.retain(|_, q| {
            q.retain(|p| now - p.at <= window);
            !q.is_empty()
        });
        out
    }

    fn ctx<'a>(
        &self,
        mn: &'a str,
        st: &'a MnState,
        cn: u16,
        pollutants: &'a [String],
        grace: Ms,
    ) -> Option<StreamCtx<'a>> {
        let (interval, _) = st.expect.interval(cn)?;
        Some(StreamCtx {
            mn,
            cn,
            interval_ms: Ms::from(interval) * 1000,
            start: st.start,
            stops: &st.stops,
            pollutants,
            valid_flags: &[],
            grace,
        })
    }

    fn plan_recovery(&mut self, now: Ms, out: &mut Vec<Action>) {
        let rc = self.cfg.recovery.clone();
        let order = self.planner.rotate(self.mns.keys().cloned().collect());
        for mn in order {
            if !self.planner.global_ok(now, &rc) {
                break;
            }
            let Some(st) = self.mns.get(&mn) else { continue };
            if !self.planner.mn_ok(now, &mn, &rc) || !st.link.is_connected(now, &self.cfg.link) {
                continue;
            }
            for &cn in &rc.cns {
                if !st.expect.expected(cn) {
                    continue;
                }
                let Some(ctx) = self.ctx(&mn, st, cn, &[], minutes(rc.grace_minutes)) else { continue };
                let lookback = if cn == 2051 { rc.minute_lookback_hours } else { rc.hourly_lookback_hours };
                let missing = self.ledger.missing(&ctx, now - minutes(lookback * 60.0), now, now);
                let askable = self.planner.askable(now, &mn, cn, missing, &rc);
                if let Some(message) = self.planner.start(now, &mn, cn, &askable, &rc) {
                    out.push(Action::Request { mn: mn.clone(), message });
                    break;
                }
            }
        }
    }

    fn record(&self, mn: &str, st: &MnState, cn: u16, day: i64, now: Ms) -> Option<DailyRecord> {
        let pollutants = st.expect.pollutants(cn);
        let mut ctx = self.ctx(mn, st, cn, pollutants, minutes(self.cfg.accounting.grace_minutes))?;
        ctx.valid_flags = &self.cfg.accounting.valid_flags;
        Some(self.ledger.daily(&ctx, day, now))
    }

    fn accounted(st: &MnState) -> Vec<u16> {
        st.expect.expected_cns().into_iter().filter(|cn| ACCOUNTED.contains(cn)).collect()
    }

    fn emit_daily(&mut self, now: Ms, out: &mut Vec<Action>) {
        let settled = (now - minutes(self.cfg.accounting.settle_hours * 60.0)).div_euclid(DAY) - 1;
        let keep = i64::from(self.cfg.accounting.keep_days.max(1));
        let mut marks = Vec::new();
        for (mn, st) in &self.mns {
            for cn in Self::accounted(st) {
                let key = (mn.clone(), cn);
                let first = self
                    .emitted_through
                    .get(&key)
                    .map_or_else(|| st.start.div_euclid(DAY).max(settled - keep + 1), |d| d + 1);
                for day in first..=settled {
                    if let Some(r) = self.record(mn, st, cn, day, now) {
                        out.push(Action::Daily(r));
                    }
                }
                if first <= settled {
                    marks.push((key, settled));
                }
            }
        }
        self.emitted_through.extend(marks);
    }

    /// Daily records of one MN (or all), every accounted stream, for the days from `from` to
    /// `to` (inclusive, civil days), as of `now`. Days before an MN's monitoring start are left out.
    #[must_use]
    pub fn daily_records(&self, now: DateTime, mn: Option<&str>, from: DateTime, to: DateTime) -> Vec<DailyRecord> {
        let now = now.to_millis();
        let (d0, d1) = (from.to_millis().div_euclid(DAY), to.to_millis().div_euclid(DAY));
        let mut out = Vec::new();
        for (m, st) in self.mns.iter().filter(|(m, _)| mn.is_none_or(|x| x == m.as_str())) {
            for cn in Self::accounted(st) {
                for day in d0.max(st.start.div_euclid(DAY))..=d1 {
                    out.extend(self.record(m, st, cn, day, now));
                }
            }
        }
        out
    }

    /// Networking status of every known MN (registered or seen): never connected, online,
    /// silent, offline, and since when.
    #[must_use]
    pub fn network_status(&self, now: DateTime) -> Vec<LinkStatus> {
        let now = now.to_millis();
        self.mns
            .iter()
            .map(|(mn, st)| {
                let (state, since) = st.link.state(now, self.allowance(st), st.start, &self.cfg.link);
                LinkStatus {
                    mn: mn.clone(),
                    name: st.name.clone(),
                    registered: st.registered,
                    state,
                    since: since.map(dt),
                    last_seen: st.link.last_rx.map(dt),
                    connected: st.link.is_connected(now, &self.cfg.link),
                }
            })
            .collect()
    }

    /// What the engine expects of an MN (empty when unknown).
    #[must_use]
    pub fn expectations(&self, mn: &str) -> Vec<Expectation> {
        self.mns.get(mn).map(|st| st.expect.all()).unwrap_or_default()
    }

    /// The last finished recovery requests, oldest first (at most 1000).
    #[must_use]
    pub fn recovery_records(&self) -> Vec<RecoveryRecord> {
        self.recovery_log.iter().cloned().collect()
    }

    /// The online values kept for comparisons (CNs `comparison.online_cns`, `keep_online_hours`).
    #[must_use]
    pub fn online_values(&self) -> Vec<OnlineValue> {
        self.online.values(|_, _| true)
    }

    /// Compares laboratory samples with the online values the engine kept.
    #[must_use]
    pub fn compare_lab(&self, lab: &[LabSample]) -> ComparisonReport {
        let online = self.online.values(|mn, pollutant| lab.iter().any(|l| l.mn == mn && l.pollutant == pollutant));
        compare(lab, &online, &self.cfg.comparison)
    }
}

/// Rebuilds expectations from a new registry entry, keeping what was announced or learnt.
/// The `DataTime` of a 2011/2051/2061/2031 upload, read as [`Message::from_packet`] reads it;
/// `None` for anything else (a history request, an empty start request, a bad time), which is
/// then decoded in full.
fn upload_time(packet: &Packet<'_>) -> Option<DateTime> {
    if !matches!(packet.cn(), 2011 | 2051 | 2061 | 2031) {
        return None;
    }
    let mut data_time = None;
    for pair in packet.cp().pairs() {
        match pair.key() {
            "BeginTime" => return None,
            "DataTime" if data_time.is_none() => data_time = Some(pair.value().and_then(DateTime::parse)),
            _ => {}
        }
    }
    data_time.flatten()
}

fn rebuild(old: &MnExpect, site: &crate::quality::config::SiteEntry, cfg: &QualityConfig) -> MnExpect {
    let mut e = MnExpect::new(Some(site), cfg);
    e.inherit(old);
    e
}

#[cfg(test)]
mod tests {
    use hj212_codec::codes::Command;
    use hj212_codec::message::DataItem;

    use super::*;
    use crate::quality::MINUTE;
    use crate::quality::config::{SiteEntry, StreamSpec};
    use crate::quality::link::LinkState;
    use crate::quality::recovery::RecoveryOutcome;

    const T0: Ms = 20_000 * DAY;

    fn hourly(t: Ms, cod: f64) -> Message {
        Message::Data {
            cn: Command::HourlyData,
            data_time: dt(t),
            items: vec![
                DataItem {
                    code: "w01018".into(),
                    fields: vec![("Avg".into(), cod.to_string()), ("Flag".into(), "N".into())],
                },
                // A flow that varies, as real flows do (a constant one would be a flat line).
                DataItem {
                    code: "w00000".into(),
                    fields: vec![
                        ("Avg".into(), format!("{:.2}", 5.1 + (t / HOUR % 7) as f64 * 0.13)),
                        ("Flag".into(), "N".into()),
                    ],
                },
            ],
        }
    }
    fn site(mn: &str) -> SiteEntry {
        SiteEntry {
            mn: mn.into(),
            name: format!("site {mn}"),
            streams: vec![StreamSpec { cn: 2061, interval_s: None }],
            ..SiteEntry::default()
        }
    }
    fn engine(mns: &[&str]) -> Engine {
        Engine::new(QualityConfig { sites: mns.iter().map(|m| site(m)).collect(), ..QualityConfig::default() })
    }
    fn requests(actions: &[Action]) -> Vec<(String, Message)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request { mn, message } => Some((mn.clone(), message.clone())),
                _ => None,
            })
            .collect()
    }
    fn alerts(actions: &[Action]) -> Vec<Rule> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Alert(a) => Some(a.rule),
                _ => None,
            })
            .collect()
    }

    /// The frames of a site that trips most rules: real-time values with a frozen COD, ammonia
    /// above total nitrogen, oxygen out of range, a lost analyzer (flag B) and a calibration
    /// flag (C); hourly values with loads and no flow; an unpowered facility (2021); a history
    /// request, a time that is not one, a reply and site information among them.
    fn busy_site(mn: &str) -> Vec<(Ms, String)> {
        let seg =
            |cn: u16, cp: String| format!("QN=20260101000000000;ST=32;CN={cn};PW=123456;MN={mn};Flag=5;CP=&&{cp}&&");
        let mut frames = Vec::new();
        for i in 0..480 {
            let t = T0 + i * 30_000;
            let cod_flag = match i {
                100..=140 => "B",
                200 => "C",
                _ => "N",
            };
            let cp = format!(
                "DataTime={};w01018-Rtd=23.4,w01018-Flag={cod_flag};w21003-Rtd={:.2},w21003-Flag=N;\
                 w21001-Rtd=1.5,w21001-Flag=N;a19001-Rtd={},a19001-Flag=N;SB1-RS=0;i33200-Rtd=0.1",
                dt(t),
                2.0 + (i % 5) as f64 * 0.1,
                if i % 50 == 0 { 25.0 } else { 8.0 }
            );
            frames.push((t + 2_000, seg(2011, cp)));
            if i % 120 == 0 {
                let h = t - HOUR;
                let cp = format!(
                    "DataTime={};w01018-Avg=23.4,w01018-Cou=4.1,w01018-Flag=N;w00000-Avg=0,w00000-Cou=0,w00000-Flag=N",
                    dt(h)
                );
                frames.push((t + 5_000, seg(2061, cp)));
                frames.push((t + 6_000, seg(2021, format!("DataTime={};SB1-RS=0;SB2-RS=1", dt(t)))));
            }
        }
        frames.push((T0 + 300_000, seg(2061, format!("BeginTime={};EndTime={}", dt(T0), dt(T0 + HOUR)))));
        frames.push((T0 + 310_000, seg(2011, "DataTime=20261340990000;w01018-Rtd=1".into())));
        frames.push((T0 + 320_000, seg(9012, "ExeRtn=1".into())));
        frames.push((T0 + 330_000, seg(3020, format!("DataTime={};PolId=w01018;i12001-Info=3", dt(T0)))));
        frames.push((T0 + 340_000, seg(2011, "&&".trim_matches('&').to_string())));
        frames.sort_by_key(|(at, _)| *at);
        frames
    }

    #[test]
    fn frames_read_in_place_give_what_decoded_messages_give() {
        let mut cfg = QualityConfig { sites: vec![site("A")], ..QualityConfig::default() };
        cfg.flat_line.cns.push(2011);
        cfg.flat_line.min_hours = 1.0;
        let mut read = Engine::new(cfg.clone());
        let mut decoded = Engine::new(cfg);
        let (mut from_read, mut from_decoded) = (Vec::new(), Vec::new());
        let frames = busy_site("A");
        for (at, seg) in &frames {
            let packet = Packet::parse(seg.as_bytes()).unwrap();
            from_read.extend(read.feed_frame(dt(*at), "A", &packet));
            from_decoded.extend(match Message::from_packet(&packet) {
                Ok(m) => decoded.feed_message(dt(*at), "A", &m),
                Err(_) => decoded.feed_message(dt(*at), "A", &Message::Heartbeat),
            });
        }
        let end = dt(frames.last().unwrap().0 + MINUTE);
        from_read.extend(read.tick(end));
        from_decoded.extend(decoded.tick(end));
        // The series must exercise the rules, or the comparison says little.
        let fired = alerts(&from_read);
        for rule in [
            Rule::FlatLine,
            Rule::AmmoniaAboveTotalNitrogen,
            Rule::OxygenOutOfRange,
            Rule::AnalyzerCommFailure,
            Rule::LoadWithoutFlow,
        ] {
            assert!(fired.contains(&rule), "{rule:?} not raised; raised: {fired:?}");
        }
        assert_eq!(from_read, from_decoded);
        assert_eq!(read.save(end), decoded.save(end));
        assert_eq!(
            read.daily_records(end, None, dt(T0 - DAY), end),
            decoded.daily_records(end, None, dt(T0 - DAY), end)
        );
        assert_eq!(read.online_values(), decoded.online_values());
    }

    #[test]
    fn the_ledger_holds_accounted_streams_for_a_few_days_only() {
        // A week of a site's real-time data every 30 s and hourly data: the real-time stream is
        // not accounted (the registry does not list it) and must not pile up, and the hourly
        // periods are kept for the last few days only, as many as a restarted engine would have.
        let mut e = engine(&["A"]);
        let days = 7;
        for i in 0..days * 2880 {
            let t = T0 + i * 30_000;
            let rtd = format!("QN=1;ST=32;CN=2011;PW=1;MN=A;Flag=5;CP=&&DataTime={};w01018-Rtd={}&&", dt(t), i % 7);
            e.feed_packet(dt(t + 1_000), &Packet::parse(rtd.as_bytes()).unwrap());
            if i % 120 == 119 {
                e.feed_message(dt(t + 2_000), "A", &hourly(t + 30_000 - HOUR, 20.0 + (i % 11) as f64));
                e.tick(dt(t + 3_000));
            }
        }
        let now = T0 + days * DAY;
        e.tick(dt(now));
        let held = e.ledger.held();
        assert_eq!(held.keys().cloned().collect::<Vec<_>>(), [("A".to_string(), 2061)], "2011 is not accounted");
        let (hourly_periods, oldest) = held[&("A".to_string(), 2061)];
        let horizon = e.ledger_horizon(now);
        assert!(oldest >= horizon - DAY && horizon > T0, "oldest {oldest} horizon {horizon}");
        let kept_days = (LEDGER_DAYS + 2) as usize;
        assert!(hourly_periods <= kept_days * 24, "{hourly_periods} hourly periods held");
        // What the engine holds is what it saves.
        assert_eq!(e.save(dt(now)).ledger.held(), held);
    }

    #[test]
    fn gap_is_requested_recovered_and_accounted() {
        let mut e = engine(&["A"]);
        e.tick(dt(T0));
        e.feed_event(dt(T0), Event::Connected { mn: "A".into() });
        let mut actions = Vec::new();
        for h in 0..24 {
            let arrive = T0 + (h + 1) * HOUR + MINUTE;
            if h != 5 && h != 6 {
                actions.extend(e.feed_message(dt(arrive), "A", &hourly(T0 + h * HOUR, 20.0 + h as f64 * 0.7)));
            }
            e.feed_message(dt(arrive), "A", &Message::Heartbeat);
            if h == 7 {
                // 07:xx: hours 5 and 6 are past their grace → one request for both.
                let a = e.tick(dt(arrive + 30 * MINUTE));
                let r = requests(&a);
                assert_eq!(r.len(), 1, "{a:?}");
                assert_eq!(
                    r[0].1,
                    Message::HistoryRequest {
                        cn: Command::HourlyData,
                        begin: dt(T0 + 5 * HOUR),
                        end: dt(T0 + 6 * HOUR)
                    }
                );
                assert!(requests(&e.tick(dt(arrive + 31 * MINUTE))).is_empty(), "outstanding: no second request");
                // The DAU answers: 9011, the two records, 9012.
                let t = arrive + 32 * MINUTE;
                e.feed_message(dt(t), "A", &Message::RequestAnswer { qn_rtn: QnRtn::Ready });
                e.feed_message(dt(t), "A", &hourly(T0 + 5 * HOUR, 23.0));
                e.feed_message(dt(t), "A", &hourly(T0 + 6 * HOUR, 24.0));
                let done = e.feed_message(dt(t), "A", &Message::ExecutionResult { exe_rtn: ExeRtn::Success });
                let Some(Action::Recovery(rec)) = done.first() else { panic!("{done:?}") };
                assert_eq!((rec.outcome, rec.recovered, rec.still_missing), (RecoveryOutcome::Closed, 2, 0));
            }
        }
        assert!(alerts(&actions).is_empty(), "{actions:?}");
        // The day settles three hours after midnight: one record, complete, 24/24, 2 late.
        let a = e.tick(dt(T0 + DAY + 3 * HOUR + MINUTE));
        let daily: Vec<&DailyRecord> = a
            .iter()
            .filter_map(|a| match a {
                Action::Daily(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(daily.len(), 1, "{a:?}");
        let d = daily[0];
        assert_eq!((d.cn, d.expected, d.received, d.valid, d.late, d.complete), (2061, 24, 24, 24, 2, true));
        assert!(e.tick(dt(T0 + DAY + 4 * HOUR)).iter().all(|a| !matches!(a, Action::Daily(_))), "emitted once");
        // (The next day's hours 00–02 are missing by then, so a second request went out and timed out.)
        assert_eq!(e.recovery_records()[0].outcome, RecoveryOutcome::Closed);
        let recs = e.daily_records(dt(T0 + DAY + 4 * HOUR), Some("A"), dt(T0), dt(T0 + DAY));
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].transmission_rate, Some(1.0));
    }

    fn minute_record(t: Ms, cod: f64) -> Message {
        Message::Data {
            cn: Command::MinuteData,
            data_time: dt(t),
            items: vec![DataItem {
                code: "w01018".into(),
                fields: vec![("Avg".into(), format!("{cod:.1}")), ("Flag".into(), "N".into())],
            }],
        }
    }

    /// Minute data (2051, ten-minute records) lost while the uplink was down are asked for with a
    /// 2051 history request once the DAU is back, for exactly the periods past the recovery grace
    /// (default 20 minutes); the period still within it is asked for later; the replies close both.
    #[test]
    fn a_minute_gap_is_requested_with_2051_and_closed_by_the_replies() {
        let site = SiteEntry {
            mn: "M".into(),
            streams: vec![StreamSpec { cn: 2051, interval_s: Some(600) }],
            ..SiteEntry::default()
        };
        let mut e = Engine::new(QualityConfig { sites: vec![site], ..QualityConfig::default() });
        assert_eq!(e.config().recovery.grace_minutes, 20.0);
        let at = |m: i64| T0 + m * MINUTE;
        let cod = |p: Ms| 30.0 + (p / MINUTE % 70) as f64 * 0.1;
        let (offline_from, back) = (55, 110); // 00:55 to 01:50
        e.tick(dt(at(0)));
        e.feed_event(dt(at(0)), Event::Connected { mn: "M".into() });
        let mut sent = Vec::new();
        let mut finished = Vec::new();
        for m in 1..=180 {
            let now = dt(at(m));
            if m == offline_from {
                e.feed_event(now, Event::Disconnected { mn: "M".into() });
            }
            if m == back {
                e.feed_event(now, Event::Connected { mn: "M".into() });
            }
            // Each record goes up a minute after its ten-minute period; offline, it is lost.
            let online = !(offline_from..back).contains(&m);
            if m % 10 == 1 && m > 10 && online {
                let p = at(m - 11);
                e.feed_message(now, "M", &minute_record(p, cod(p)));
            }
            // The DAU answers a request the minute after: 9011, the records asked for, 9012.
            if let Some(&(_, Message::HistoryRequest { begin, end, .. })) = sent.last().filter(|(t, _)| *t == m - 1) {
                e.feed_message(now, "M", &Message::RequestAnswer { qn_rtn: QnRtn::Ready });
                let mut p = begin.to_millis();
                while p <= end.to_millis() {
                    e.feed_message(now, "M", &minute_record(p, cod(p)));
                    p += 10 * MINUTE;
                }
                let done = e.feed_message(now, "M", &Message::ExecutionResult { exe_rtn: ExeRtn::Success });
                finished.extend(done.into_iter().filter_map(|a| match a {
                    Action::Recovery(r) => Some(r),
                    _ => None,
                }));
            }
            sent.extend(requests(&e.tick(now)).into_iter().map(|(mn, msg)| {
                assert_eq!(mn, "M");
                (m, msg)
            }));
        }
        let minute_request = |from: i64, to: i64| Message::HistoryRequest {
            cn: Command::MinuteData,
            begin: dt(at(from)),
            end: dt(at(to)),
        };
        // Nothing while offline. Back at 01:50: 00:50–01:20 (BeginTime/EndTime are the first and
        // last period starts); 01:30 ended at 01:40 and is within its grace, so it waits for the
        // next request, 15 minutes later (`per_mn_spacing_minutes`).
        assert_eq!(sent, vec![(back, minute_request(50, 80)), (back + 15, minute_request(90, 90))]);
        // On the wire: CN=2051, CP=&&BeginTime=…;EndTime=…&& (T0 is 2024-10-04 00:00).
        assert_eq!(sent[0].1.cn(), 2051);
        let cp: Vec<(String, Option<String>)> =
            sent[0].1.to_cp().into_iter().flatten().map(|p| (p.key, p.value)).collect();
        let pair = |k: &str, v: &str| (k.to_string(), Some(v.to_string()));
        assert_eq!(cp, vec![pair("BeginTime", "20241004005000"), pair("EndTime", "20241004012000")]);
        // Both requests were closed by the replies.
        let summary: Vec<_> = finished
            .iter()
            .map(|r| (r.cn, r.begin, r.end, r.missing_before, r.recovered, r.still_missing, r.outcome))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2051, dt(at(50)), dt(at(80)), 4, 4, 0, RecoveryOutcome::Closed),
                (2051, dt(at(90)), dt(at(90)), 1, 1, 0, RecoveryOutcome::Closed),
            ]
        );
        assert_eq!(e.recovery_records(), finished);
        // The day so far: every due period received, the five recovered ones late.
        let recs = e.daily_records(dt(at(180)), Some("M"), dt(T0), dt(T0));
        let [r] = recs.as_slice() else { panic!("{recs:?}") };
        assert_eq!((r.cn, r.interval_s, r.expected, r.received, r.late), (2051, 600, 17, 17, 5), "{r:?}");
        assert!(r.missing_periods.is_empty(), "{r:?}");
    }

    #[test]
    fn no_request_storm() {
        let names: Vec<String> = (0..50).map(|i| format!("MN{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut e = engine(&refs);
        e.tick(dt(T0));
        for m in &names {
            e.feed_event(dt(T0), Event::Connected { mn: m.clone() });
        }
        // Nobody sent anything for ten hours: everyone has gaps.
        let t = T0 + 10 * HOUR;
        let first = requests(&e.tick(dt(t)));
        assert_eq!(first.len(), 10, "global_per_minute");
        assert!(requests(&e.tick(dt(t + 10_000))).is_empty(), "still within the minute");
        let second = requests(&e.tick(dt(t + MINUTE)));
        assert_eq!(second.len(), 10);
        assert!(second.iter().all(|(m, _)| !first.iter().any(|(f, _)| f == m)), "round robin, no MN twice");
        // Outstanding limit: 20 in flight → nothing more until some finish or time out.
        assert!(requests(&e.tick(dt(t + 2 * MINUTE))).is_empty());
        // Timeouts finish them; the same MN waits for its spacing and retry delay.
        let a = e.tick(dt(t + 11 * MINUTE));
        assert_eq!(
            a.iter().filter(|a| matches!(a, Action::Recovery(r) if r.outcome == RecoveryOutcome::TimedOut)).count(),
            20
        );
        // A disconnected DAU is never asked.
        let mut e = engine(&["X"]);
        e.tick(dt(T0));
        e.feed_event(dt(T0), Event::Connected { mn: "X".into() });
        e.feed_event(dt(T0 + MINUTE), Event::Disconnected { mn: "X".into() });
        assert!(requests(&e.tick(dt(T0 + 10 * HOUR))).is_empty());
    }

    #[test]
    fn silent_offline_and_never_connected() {
        let mut e = engine(&["A", "B", "C"]);
        e.tick(dt(T0));
        e.feed_event(dt(T0), Event::Connected { mn: "A".into() });
        e.feed_event(dt(T0), Event::Connected { mn: "B".into() });
        // A: hourly data on time for 6 hours → never silent. B: sends once, then nothing.
        e.feed_message(dt(T0 + MINUTE), "B", &hourly(T0 - HOUR, 20.0));
        let mut rules = Vec::new();
        for h in 1..=6 {
            e.feed_message(dt(T0 + h * HOUR + MINUTE), "A", &hourly(T0 + (h - 1) * HOUR, 20.0 + h as f64));
            rules.extend(alerts(&e.tick(dt(T0 + h * HOUR + 2 * MINUTE))));
        }
        assert_eq!(rules, vec![Rule::SilentDau], "B only, once");
        let st = e.network_status(dt(T0 + 6 * HOUR));
        let get = |mn: &str| st.iter().find(|s| s.mn == mn).unwrap().clone();
        assert_eq!(get("A").state, LinkState::Online);
        assert_eq!((get("B").state, get("B").since), (LinkState::Silent, Some(dt(T0 + MINUTE))));
        assert_eq!((get("C").state, get("C").since), (LinkState::NeverConnected, Some(dt(T0))));
        e.feed_event(dt(T0 + 6 * HOUR), Event::Disconnected { mn: "B".into() });
        let a = e.tick(dt(T0 + 7 * HOUR));
        assert_eq!(alerts(&a), vec![Rule::StoppedTransmitting]);
        assert_eq!(e.network_status(dt(T0 + 7 * HOUR)).iter().find(|s| s.mn == "B").unwrap().state, LinkState::Offline);
        let text = crate::quality::report::render_network_status(&e.network_status(dt(T0 + 7 * HOUR)));
        assert!(text.contains("never connected") && text.contains("offline"));
    }

    #[test]
    fn announcements_set_expectations_and_comparison_uses_kept_values() {
        let mut e = Engine::new(QualityConfig::default());
        e.feed_message(dt(T0), "U", &Message::MinIntervalReply { minutes: 5 });
        for h in 0..3 {
            e.feed_message(dt(T0 + (h + 1) * HOUR), "U", &hourly(T0 + h * HOUR, 40.0 + h as f64));
        }
        let x = e.expectations("U");
        assert_eq!(x.len(), 1, "{x:?}");
        assert_eq!((x[0].cn, x[0].interval_s), (2061, 3600));
        assert_eq!(x[0].pollutants, vec!["w00000".to_string(), "w01018".to_string()]);
        let minute = Message::Data {
            cn: Command::MinuteData,
            data_time: dt(T0),
            items: vec![DataItem { code: "w01018".into(), fields: vec![("Avg".into(), "1".into())] }],
        };
        e.feed_message(dt(T0 + HOUR), "U", &minute);
        let x = e.expectations("U");
        assert_eq!((x[0].cn, x[0].interval_s, x[0].source), (2051, 300, crate::quality::IntervalSource::Announced));
        let lab =
            crate::quality::comparison::parse_lab_csv(&format!("U,w01018,{},41.5\n", dt(T0 + HOUR + 10 * MINUTE)))
                .unwrap();
        let r = e.compare_lab(&lab);
        // 41 (01:00) and 42 (02:00) lie within ±60 minutes of 01:10.
        assert_eq!(r.rows[0].online_value, Some(41.5));
        assert_eq!(r.rows[0].pass, Some(true));
    }

    #[test]
    fn an_executed_interval_command_sets_the_expectation() {
        let site = SiteEntry {
            mn: "A".into(),
            streams: vec![StreamSpec { cn: 2051, interval_s: None }, StreamSpec { cn: 2011, interval_s: None }],
            ..SiteEntry::default()
        };
        let interval = |e: &Engine, cn: u16| {
            e.expectations("A").iter().find(|x| x.cn == cn).map(|x| (x.interval_s, x.source)).unwrap()
        };
        let sent = |e: &mut Engine, t: Ms, message: Message| {
            e.feed_event(dt(t), Event::CommandSent { mn: "A".into(), message });
        };
        let mut e = Engine::new(QualityConfig { sites: vec![site], ..QualityConfig::default() });
        e.tick(dt(T0));
        assert_eq!(interval(&e, 2051), (600, crate::quality::IntervalSource::Default));
        // Matched by QN by the daemon: a refused set changes nothing, an executed one does.
        let five = Message::SetMinInterval { minutes: 5 };
        sent(&mut e, T0, five.clone());
        e.feed_event(dt(T0), Event::CommandFinished { mn: "A".into(), message: five.clone(), ok: false });
        assert_eq!(interval(&e, 2051).0, 600);
        sent(&mut e, T0 + MINUTE, five.clone());
        assert_eq!(interval(&e, 2051).0, 600, "not before the DAU executed it");
        e.feed_event(dt(T0 + MINUTE), Event::CommandFinished { mn: "A".into(), message: five, ok: true });
        assert_eq!(interval(&e, 2051), (300, crate::quality::IntervalSource::Announced));
        // Without QN matching: the MN's next 9012 answers the oldest set sent.
        sent(&mut e, T0 + HOUR, Message::SetRtdInterval { seconds: 60 });
        let fail = Message::ExecutionResult { exe_rtn: ExeRtn::from_value(2) };
        e.feed_message(dt(T0 + HOUR), "A", &fail);
        assert_eq!(interval(&e, 2011).0, 30, "failed: unchanged");
        sent(&mut e, T0 + 2 * HOUR, Message::SetRtdInterval { seconds: 60 });
        e.feed_message(dt(T0 + 2 * HOUR + 5_000), "A", &Message::ExecutionResult { exe_rtn: ExeRtn::Success });
        assert_eq!(interval(&e, 2011).0, 60);
        // A set whose answer never came is forgotten after reply_timeout_minutes.
        sent(&mut e, T0 + 3 * HOUR, Message::SetMinInterval { minutes: 1 });
        e.feed_message(dt(T0 + 3 * HOUR + 11 * MINUTE), "A", &Message::ExecutionResult { exe_rtn: ExeRtn::Success });
        assert_eq!(interval(&e, 2051).0, 300);
    }

    #[test]
    fn crc_and_calibration_command_events() {
        let mut e = Engine::new(QualityConfig::default());
        let n = (0..5)
            .flat_map(|i| e.feed_event(dt(T0 + i * 1000), Event::CrcFailure { key: "10.0.0.9:5000".into() }))
            .count();
        assert_eq!(n, 1);
        // A slope change preceded by a 3011 sent by the platform: no alert.
        let info = |v: &str| Message::SiteInfo {
            data_time: dt(T0),
            pol_id: Some("w01018".into()),
            items: vec![hj212_codec::message::InfoItem { code: "i13008".into(), value: v.into() }],
        };
        e.feed_message(dt(T0), "A", &info("1.0"));
        e.feed_event(
            dt(T0 + MINUTE),
            Event::CommandSent {
                mn: "A".into(),
                message: Message::AnalyzerControl {
                    cn: Command::Calibrate,
                    pol_id: "w01018".into(),
                    calibration_type: None,
                },
            },
        );
        let changed = Message::SiteInfo {
            data_time: dt(T0 + 30 * MINUTE),
            pol_id: Some("w01018".into()),
            items: vec![hj212_codec::message::InfoItem { code: "i13008".into(), value: "1.2".into() }],
        };
        e.feed_message(dt(T0 + 30 * MINUTE), "A", &changed);
        assert!(!alerts(&e.tick(dt(T0 + 5 * HOUR))).contains(&Rule::UncalibratedParameterChange));
    }
}
