//! Golden tests: the statistics against the Appendix D worked examples in
//! `tests/data/appendix_d_vectors.json` (W1–W6, G1–G6), plus hand-checked values citing formulas.

use firmware::stats::{
    Flag, FlagSet, GasValidity, MeanAccumulator, Reference, WaterAccumulator, WaterSummary, actual_flow_m3h,
    aggregate_flag_gas, converted, daily_mean_valid, dry_basis, emission_kg, excess_air, hourly_mean_valid,
    mean_flow_lps, minute_mean_valid, nox_from_mass, nox_from_ppm, ppm_to_mg, section_velocity, standard_dry_flow_m3h,
    standard_state,
};
use serde_json::Value;

const VECTORS: &str = include_str!("data/appendix_d_vectors.json");

fn example(id: &str) -> Value {
    let all: Vec<Value> = serde_json::from_str(VECTORS).unwrap();
    all.into_iter().find(|e| e["id"] == id).unwrap()
}

/// The result named `key` (a prefix of the JSON key is enough), or None for "undefined".
fn result(e: &Value, key: &str) -> Option<f64> {
    let map = e["results"].as_object().unwrap();
    let v = map.get(key).or_else(|| map.iter().find(|(k, _)| k.starts_with(key)).map(|(_, v)| v));
    v.unwrap_or_else(|| panic!("no result {key}")).as_f64()
}

fn num(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[track_caller]
fn close(got: Option<f64>, want: Option<f64>) {
    match (got, want) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-9 * w.abs().max(1e-12), "got {g}, want {w}"),
        (None, None) => {}
        _ => panic!("got {got:?}, want {want:?}"),
    }
}

const SLICE_S: f64 = 5.0;
const SLICES: u32 = 120; // (2): n >= 120 five-second slices per 10-minute block.

/// A 10-minute block of 120 slices at constant flow and COD, each valid or not.
fn block(q: f64, c: f64, q_ok: bool, c_ok: bool) -> WaterSummary {
    let mut acc = WaterAccumulator::new();
    for _ in 0..SLICES {
        acc.push_slice(q_ok.then_some(q), c_ok.then_some(c), SLICE_S);
    }
    acc.finish(600.0, SLICES)
}

#[test]
fn w1_one_block_from_120_slices() {
    let e = example("W1");
    let mut acc = WaterAccumulator::new();
    let mut variant = WaterAccumulator::new();
    for seg in e["data"]["segments"].as_array().unwrap() {
        for i in seg["first"].as_u64().unwrap()..=seg["last"].as_u64().unwrap() {
            let (q, c) = (num(&seg["Q_Ls"]), num(&seg["COD_mgL"]));
            acc.push_slice(Some(q), Some(c), SLICE_S);
            // Variant: slice 77's flow flagged B, so that slice has no volume and no load.
            variant.push_slice((i != 77).then_some(q), Some(c), SLICE_S);
        }
    }
    let s = acc.finish(600.0, SLICES);
    assert_eq!(s.n_volume, 120);
    close(s.volume_m3, result(&e, "D_m [m3]"));
    close(s.load_kg, result(&e, "G_m COD"));
    close(s.mean_flow_lps, result(&e, "Q_m [L/s]"));
    close(s.weighted_mgl, result(&e, "C_m weighted (12)"));
    close(s.arithmetic_mgl, result(&e, "C_m arithmetic (15)"));
    let v = variant.finish(600.0, SLICES);
    assert_eq!(v.n_volume, 119);
    assert_eq!(v.volume_m3, None, "n < 120: the block's volume is invalid");
    close(variant.finish(600.0, 1).volume_m3, result(&e, "variant: D_m if the n>=120 rule were waived"));
}

fn hour_from_blocks(e: &Value) -> WaterSummary {
    let mut hour = WaterAccumulator::new();
    for b in e["data"]["blocks"].as_array().unwrap() {
        let ok = |k: &str| b.get(k).and_then(Value::as_str).is_none_or(|f| f == "N");
        hour.push_summary(&block(num(&b["Q_Ls"]), num(&b["COD_mgL"]), ok("flow_flag"), ok("cod_flag")));
    }
    hour.finish(3600.0, 1)
}

#[test]
fn w2_one_hour_from_six_blocks() {
    let e = example("W2");
    let h = hour_from_blocks(&e);
    assert_eq!(h.n_volume, 6);
    close(h.volume_m3, result(&e, "D_h [m3]"));
    close(h.load_kg, result(&e, "G_h COD"));
    close(h.mean_flow_lps, result(&e, "Q_h [L/s]"));
    close(h.weighted_mgl, result(&e, "C_h weighted (13)"));
    close(h.arithmetic_mgl, result(&e, "C_h arithmetic (16)"));
}

#[test]
fn w3_hour_with_mixed_validity() {
    let e = example("W3");
    let h = hour_from_blocks(&e);
    assert_eq!((h.n_volume, h.n_load, h.n_conc), (5, 4, 5));
    close(h.volume_m3, result(&e, "D_h [m3]"));
    close(h.load_kg, result(&e, "G_h [kg]"));
    close(h.mean_flow_lps, result(&e, "Q_h [L/s] = D_h/3600"));
    close(h.weighted_mgl, result(&e, "C_h weighted, literal (13)"));
    close(h.weighted_matched_mgl, result(&e, "C_h weighted, matched"));
    close(h.arithmetic_mgl, result(&e, "C_h arithmetic (16)"));
}

#[test]
fn w4_day_from_hours() {
    let e = example("W4");
    for case in ["A", "B"] {
        let mut day = WaterAccumulator::new();
        for h in e["data"]["hours"].as_array().unwrap() {
            let flags = h[format!("flags_{case}")].as_array().unwrap();
            let (q_ok, c_ok) = (flags[0] == "N", flags[1] == "N");
            let (q, c) = (num(&h["Q_Ls"]), num(&h["COD_mgL"]));
            // An hour of six constant blocks: D_h = Q·3600·1e-3 (3), G_h = D_h·C·1e-3 (10).
            let d = q * 3600.0 * 1e-3;
            day.push_part(q_ok.then_some(d), (q_ok && c_ok).then_some(d * c * 1e-3), c_ok.then_some(c));
        }
        let s = day.finish(86_400.0, 1);
        if case == "A" {
            assert_eq!(s.n_volume, 22);
            close(s.volume_m3, result(&e, "A: D_d"));
            close(s.load_kg, result(&e, "A: G_d"));
            close(s.mean_flow_lps, result(&e, "A: Q_d [L/s] = D_d/86400"));
            close(s.weighted_mgl, result(&e, "A: C_d weighted (14)"));
            close(s.arithmetic_mgl, result(&e, "A: C_d arithmetic (17)"));
        } else {
            assert_eq!((s.n_volume, s.n_load, s.n_conc), (23, 22, 23));
            close(s.volume_m3, result(&e, "B: D_d"));
            close(s.load_kg, result(&e, "B: G_d"));
            close(s.weighted_mgl, result(&e, "B: C_d weighted literal"));
            close(s.weighted_matched_mgl, result(&e, "B: C_d weighted matched"));
            close(s.arithmetic_mgl, result(&e, "B: C_d arithmetic (17)"));
            close(s.mean_flow_lps, result(&e, "B: Q_d"));
        }
    }
}

#[test]
fn w5_zero_flow_leaves_the_weighted_mean_undefined() {
    let e = example("W5");
    let blocks: Vec<(f64, f64)> =
        e["data"]["blocks"].as_array().unwrap().iter().map(|b| (num(&b["Q_Ls"]), num(&b["COD_mgL"]))).collect();
    let mut part = WaterAccumulator::new();
    let mut zero = WaterAccumulator::new();
    for &(q, c) in &blocks {
        part.push_summary(&block(q, c, true, true));
        zero.push_summary(&block(0.0, c, true, true));
    }
    let p = part.finish(3600.0, 1);
    close(p.volume_m3, result(&e, "part-zero hour: D_h"));
    close(p.load_kg, result(&e, "part-zero hour: G_h"));
    close(p.mean_flow_lps, result(&e, "part-zero hour: Q_h"));
    close(p.weighted_mgl, result(&e, "part-zero hour: C_h weighted"));
    close(p.arithmetic_mgl, result(&e, "part-zero hour: C_h arithmetic"));
    let b = block(blocks[0].0, blocks[0].1, true, true);
    close(b.weighted_mgl, result(&e, "zero-flow block: C_m weighted"));
    close(b.arithmetic_mgl, result(&e, "zero-flow block: C_m arithmetic"));
    let z = zero.finish(3600.0, 1);
    close(z.volume_m3, result(&e, "all-zero hour: D_h"));
    close(z.load_kg, result(&e, "all-zero hour: G_h"));
    close(z.mean_flow_lps, result(&e, "all-zero hour: Q_h"));
    close(z.weighted_mgl, result(&e, "all-zero hour: C_h weighted"));
    close(z.arithmetic_mgl, result(&e, "all-zero hour: C_h arithmetic"));
}

#[test]
fn w6_totaliser_and_appendix_c_flow() {
    let e = example("W6");
    let d = num(&e["data"]["totaliser_end_m3"]) - num(&e["data"]["totaliser_start_m3"]);
    // Note to (1): the totaliser difference; f64 loses digits at 12345.678, hence 1e-9 relative.
    close(Some(d), result(&e, "totaliser: D_m"));
    close(mean_flow_lps(d, 600.0), result(&e, "totaliser: Q_m"));
    let cou = &e["data"]["appendix_c_flow_cou_m3"];
    close(mean_flow_lps(num(&cou["minute"]), 600.0), result(&e, "C.16 minute: w00000-Avg"));
    close(mean_flow_lps(num(&cou["hour"]), 3600.0), result(&e, "C.17 hour:"));
    close(mean_flow_lps(num(&cou["day"]), 86_400.0), result(&e, "C.18 day:"));
    // A20: the COD Cou printed in C.16-C.18 is a placeholder; (8)/(9) give this instead.
    let c = num(&e["data"]["appendix_c_cod_avg_mgL"]);
    close(Some(num(&cou["minute"]) * c * 1e-3), result(&e, "C.16 minute: w01018-Cou"));
    close(Some(num(&cou["day"]) * c * 1e-3), result(&e, "C.18 day:    w01018-Cou"));
}

#[test]
fn g1_one_reading_to_converted_concentration() {
    let e = example("G1");
    let d = &e["data"];
    let c_sn_wet = standard_state(num(&d["Cs_wet_actual_mg_m3"]), num(&d["Ba_Pa"]), num(&d["Ps_Pa"]), num(&d["ts_C"]));
    close(c_sn_wet, result(&e, "C_sn,wet"));
    let c_dry = c_sn_wet.and_then(|c| dry_basis(c, num(&d["Xsw_pct"])));
    close(c_dry, result(&e, "C_sn,dry"));
    let o2 = dry_basis(num(&d["O2_wet_pct"]), num(&d["Xsw_pct"])).unwrap();
    close(Some(o2), result(&e, "O2 dry"));
    close(excess_air(o2), result(&e, "alpha (27)"));
    let c = c_dry.unwrap();
    close(converted(c, o2, Reference::O2(6.0)), result(&e, "C_zs at O2s=6"));
    close(converted(c, o2, Reference::Alpha(1.4)), result(&e, "C_zs with alpha_s=1.4"));
    close(converted(c, o2, Reference::Alpha(1.7)), result(&e, "C_zs with alpha_s=1.7"));
    close(converted(c, o2, Reference::None), result(&e, "no reference given"));
}

#[test]
fn g2_ppm_and_nox() {
    let e = example("G2");
    close(Some(ppm_to_mg(35.0, 64.0)), result(&e, "SO2 35 ppm -> mg/m3 (20), M=64"));
    close(Some(ppm_to_mg(35.0, 64.066)), result(&e, "SO2 35 ppm -> mg/m3 (20), M=64.066"));
    let no = ppm_to_mg(150.0, 30.0);
    let no2 = ppm_to_mg(8.0, 46.0);
    close(Some(no), result(&e, "NO 150 ppm"));
    close(Some(no2), result(&e, "NO2 8 ppm"));
    close(Some(nox_from_mass(no, no2, 46.0, 30.0)), result(&e, "NOx as NO2 via (21)"));
    close(Some(nox_from_ppm(150.0, 8.0, 46.0)), result(&e, "NOx as NO2 via (22)"));
}

#[test]
fn g3_minute_mean_needs_12_samples() {
    let e = example("G3");
    let d = &e["data"];
    let v = GasValidity::default();
    for case in ["A", "B", "C"] {
        let mut acc = MeanAccumulator::new();
        for (s, f) in d["samples_mg_m3"].as_array().unwrap().iter().zip(d[format!("flags_{case}")].as_array().unwrap())
        {
            acc.push(num(s), Flag::from_char(f.as_str().unwrap().chars().next().unwrap()).unwrap(), FlagSet::MEASURED);
        }
        let s = acc.finish(v.samples_per_minute);
        let n = result(&e, &format!("{case}: n")).unwrap();
        assert_eq!(s.valid as f64, n);
        assert_eq!(minute_mean_valid(s.valid, &v), case == "A");
        match case {
            "A" => close(s.avg, result(&e, "A: minute mean")),
            "B" => {
                close(s.avg, result(&e, "B: minute mean (23)"));
                close(acc.finish(1).avg, result(&e, "B: mean of the 11"));
                close(Some(s.normal as f64 / s.total as f64), result(&e, "B: share"));
                assert_eq!(aggregate_flag_gas(s.normal, s.total), Flag::N, "A19: flag N, yet no valid mean");
            }
            _ => {
                close(s.avg, result(&e, "C: minute mean"));
                close(Some(s.normal as f64 / s.total as f64), result(&e, "C: share"));
                assert_eq!(aggregate_flag_gas(s.normal, s.total), Flag::D);
            }
        }
    }
}

#[test]
fn g4_one_hour_flow_emission_and_converted() {
    let e = example("G4");
    let d = &e["data"];
    let v = GasValidity::default();
    let series = |name: &str| -> Vec<f64> { d["values"][name].as_array().unwrap().iter().map(num).collect() };
    let analyzer_flags: Vec<Flag> = d["analyzer_flags (SO2,NOx,O2)"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Flag::from_char(f.as_str().unwrap().chars().next().unwrap()).unwrap())
        .collect();
    let hour = |name: &str, analyzer: bool, extra_b: bool| {
        let vals = series(name);
        let mut acc = MeanAccumulator::new();
        for minute in 0..60usize {
            let q = minute / 15;
            let mut flag = if analyzer { analyzer_flags[q] } else { Flag::N };
            if extra_b && minute == 37 {
                flag = Flag::B;
            }
            acc.push(vals[q], flag, FlagSet::MEASURED);
        }
        acc.finish(v.minutes_per_hour)
    };
    let so2 = hour("SO2", true, false);
    assert_eq!(so2.valid as f64, result(&e, "k (SO2").unwrap());
    assert!(hourly_mean_valid(so2.valid, &v));
    close(so2.avg, result(&e, "C_Qh SO2"));
    let nox = hour("NOx", true, false);
    close(nox.avg, result(&e, "C_Qh NOx"));
    let pm = hour("PM", false, false);
    close(pm.avg, result(&e, "C_Qh PM"));
    let o2 = hour("O2", true, false).avg.unwrap();
    close(Some(o2), result(&e, "O2 hour mean"));
    let c = &d["constants"];
    let mean = |name: &str| hour(name, false, false).avg.unwrap();
    // (29), (30), (31) on the hourly means (A14).
    let q_sh = actual_flow_m3h(num(&c["F"]), section_velocity(num(&c["Kv"]), mean("Vp")), 3600.0);
    close(Some(q_sh), result(&e, "Q_sh"));
    let q_snh = standard_dry_flow_m3h(q_sh, mean("ts"), num(&c["Ba"]), mean("Ps"), mean("Xsw"));
    close(q_snh, result(&e, "Q_snh"));
    let q_snh = q_snh.unwrap();
    close(Some(q_snh / 3600.0), result(&e, "a00000 as m3/s"));
    // (33) with the measured means (A15).
    close(Some(emission_kg(so2.avg.unwrap(), q_snh, 1e-6)), result(&e, "G_h SO2"));
    close(Some(emission_kg(nox.avg.unwrap(), q_snh, 1e-6)), result(&e, "G_h NOx"));
    close(Some(emission_kg(pm.avg.unwrap(), q_snh, 1e-6)), result(&e, "G_h PM"));
    // (28) way A: on the hourly means (A12).
    close(converted(so2.avg.unwrap(), o2, Reference::O2(6.0)), result(&e, "ZsAvg SO2, way A (28)"));
    close(converted(nox.avg.unwrap(), o2, Reference::O2(6.0)), result(&e, "ZsAvg NOx, way A"));
    close(converted(pm.avg.unwrap(), o2, Reference::O2(6.0)), result(&e, "ZsAvg PM, way A"));
    close(converted(so2.avg.unwrap(), o2, Reference::O2(9.0)), result(&e, "ZsAvg SO2, way A, if O2s were 9"));
    close(converted(so2.avg.unwrap(), o2, Reference::O2(11.0)), result(&e, "ZsAvg SO2, way A, if O2s were 11"));
    // Way B: mean of per-minute converted values over the analyzer's valid minutes.
    let (so2v, o2v) = (series("SO2"), series("O2"));
    let mut way_b = MeanAccumulator::new();
    for minute in 0..60usize {
        let q = minute / 15;
        way_b.push(converted(so2v[q], o2v[q], Reference::O2(6.0)).unwrap(), analyzer_flags[q], FlagSet::MEASURED);
    }
    close(way_b.finish(45).avg, result(&e, "ZsAvg SO2, way B"));
    // Variant: one more analyzer minute flagged B leaves k = 44 < 45: no mean, no emission.
    let so2_44 = hour("SO2", true, true);
    assert_eq!(so2_44.valid, 44);
    close(so2_44.avg, result(&e, "variant k=44: C_Qh SO2"));
    close(so2_44.avg.map(|c| emission_kg(c, q_snh, 1e-6)), result(&e, "variant k=44: G_h SO2"));
    close(Some(q_snh), result(&e, "variant k=44: Q_snh"));
}

#[test]
fn g5_day_needs_20_valid_hours() {
    let e = example("G5");
    let d = &e["data"];
    let v = GasValidity::default();
    let q: Vec<f64> = d["Q_snh_m3h"].as_array().unwrap().iter().map(num).collect();
    let c: Vec<f64> = d["SO2_mg_m3"].as_array().unwrap().iter().map(num).collect();
    for case in ["A", "B"] {
        let invalid = d[format!("invalid_{case}")].as_object().unwrap();
        let mut mean = MeanAccumulator::new();
        let (mut q_snd, mut g_d) = (firmware::stats::Sum::new(), firmware::stats::Sum::new());
        for h in 0..24 {
            let flag = invalid
                .get(&h.to_string())
                .map_or(Flag::N, |f| Flag::from_char(f.as_str().unwrap().chars().next().unwrap()).unwrap());
            mean.push(c[h], flag, FlagSet::MEASURED);
            if flag == Flag::N {
                q_snd.add(q[h]); // (32)
                g_d.add(emission_kg(c[h], q[h], 1e-6)); // (33), summed per A17
            }
        }
        let s = mean.finish(v.hours_per_day);
        assert_eq!(daily_mean_valid(s.valid, &v), case == "A");
        if case == "A" {
            assert_eq!(s.valid, 20);
            close(s.avg, result(&e, "A: C_Qd SO2 (25)"));
            close(Some(q_snd.value()), result(&e, "A: Q_snd"));
            close(Some(g_d.value()), result(&e, "A: G_d SO2 = sum"));
            close(Some(g_d.value() * 1e-3), result(&e, "A: G_d SO2 [t/d]"));
            close(Some(g_d.value() / q_snd.value() * 1e6), result(&e, "A: flow-weighted"));
        } else {
            assert_eq!(s.valid, 19);
            close(s.avg, result(&e, "B: C_Qd SO2 (25)"));
            close(Some(q_snd.value()), result(&e, "B: Q_snd"));
            close(Some(g_d.value()), result(&e, "B: G_d"));
        }
    }
}

#[test]
fn g6_edge_cases() {
    let e = example("G6");
    let r = Reference::O2(6.0);
    close(excess_air(0.0), result(&e, "O2 = 0.0 %: alpha"));
    close(converted(50.0, 0.0, r), result(&e, "O2 = 0.0 %: C_zs"));
    close(converted(50.0, 6.0, r), result(&e, "O2 = 6.0 %: C_zs"));
    close(converted(50.0, 19.0, r), result(&e, "O2 = 19.0 %: C_zs"));
    close(converted(50.0, 20.5, r), result(&e, "O2 = 20.5 %: C_zs"));
    close(excess_air(21.0), result(&e, "O2 = 21.0 %: alpha"));
    close(converted(50.0, 21.0, r), result(&e, "O2 = 21.0 %: C_zs"));
    close(converted(50.0, 21.4, r), result(&e, "O2 = 21.4 %: C_zs"));
    close(dry_basis(50.0, 100.0), result(&e, "Xsw = 100 %"));
    close(dry_basis(50.0, 0.0), result(&e, "Xsw = 0 %"));
    close(Some(actual_flow_m3h(7.07, 0.0, 3600.0)), result(&e, "V_sh = 0: Q_sh"));
    close(Some(emission_kg(50.0, 0.0, 1e-6)), result(&e, "V_sh = 0: G_h"));
    close(standard_state(50.0, 1000.0, -1000.0, 20.0), result(&e, "Ba+Ps = 0"));
    close(standard_dry_flow_m3h(100_000.0, 0.0, 101_325.0, 0.0, 0.0), result(&e, "ts = 0, Ba+Ps = 101325"));
}

#[test]
fn hand_checked_w2_first_block() {
    // (1)(2): 17.5 L/s x 600 s x 1e-3 = 10.5 m3; (8)(9): 10.5 x 40.1 x 1e-3 = 0.42105 kg;
    // (5) corrected: 10.5 / 600 x 1e3 = 17.5 L/s, matching C.16's w00000-Avg for Cou 10.5.
    let b = block(17.5, 40.1, true, true);
    close(b.volume_m3, Some(10.5));
    close(b.load_kg, Some(0.42105));
    close(b.mean_flow_lps, Some(17.5));
    close(b.weighted_mgl, Some(40.1));
}
