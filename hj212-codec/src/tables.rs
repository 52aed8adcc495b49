//! Code tables of HJ 212-2017: pollutant, system, process, site-information and command codes.
//!
//! Everything here is a plain `static` slice of `&'static str`-based records, so the module needs
//! neither `alloc` nor any dependency. The lookups are linear scans; the largest table has about
//! 120 rows.
//!
//! # Sources
//!
//! | Item | Source |
//! |---|---|
//! | [`WATER`] | HJ 212-2017 Appendix B, Table B.1 (水监测因子编码表, after HJ 525-2009), every row |
//! | [`GAS`] | Table B.2 (气监测因子编码表, after HJ 524-2009), every row including all VOC rows |
//! | [`NOISE`] | Table B.3 (声环境监测因子编码表) |
//! | [`PROCESS_WATER`], [`PROCESS_GAS`] | Tables B.5 and B.7 (process / 工况 factors, ST 52 / 51); process groups from Tables B.4 and B.6 |
//! | [`SYSTEMS`] | §6.6.1 Table 5 (系统编码表) |
//! | [`info_category`] | Tables B.8 (device class) and B.9 (information class) |
//! | [`INFO_CODES`] | Table B.10 (现场端信息编码表), every row |
//! | [`INFO_CODES_HEBEI`] | Hebei "dynamic control" (动态管控) extension as implemented in public code (see the item docs) |
//! | [`DYNAMIC_CONTROL`], [`DYNAMIC_CONTROL_HEBEI`] | dynamic-control groups of the project's domain notes (`dynamic-control-and-analyzers.md` §3.7) |
//! | [`COMMANDS`] | §6.6.5 Table 9 (命令编码表), plus HJ/T 212-2005-only and provisional HJ 212-2025 codes |
//!
//! The rows were transcribed from the text extraction of the standard and cross-checked against the
//! project's protocol digest. The 2005 column is the standard's own "原编码" (original code) column.
//!
//! # Representation
//!
//! * **Chinese names** are verbatim from the text extraction of the standard. That extraction puts
//!   a space between a Chinese and a Latin run (`pH 值`, `进水口 COD`); the printed PDF may not.
//!   Names that wrap across lines in the PDF were joined following the same convention.
//! * **Units** are printed in Chinese in the standard; this module stores the equivalent symbol:
//!
//!   | Printed | Stored | Printed | Stored |
//!   |---|---|---|---|
//!   | `毫克/升` | `mg/L` | `毫克/立方米` | `mg/m³` |
//!   | `微克/升` | `µg/L` | `纳克/立方米` | `ng/m³` (kept as printed, see errata) |
//!   | `纳克/升` | `ng/L` | `立方米/秒`, `立方米/小时` | `m³/s`, `m³/h` |
//!   | `升/秒` | `L/s` | `立方米` | `m³` |
//!   | `千克`, `克`, `毫克` | `kg`, `g`, `mg` | `摄氏度` | `°C` |
//!   | `个/升` | `count/L` | `千帕`, `帕` | `kPa`, `Pa` |
//!   | `贝可[勒尔]/升` | `Bq/L` | `米/秒` | `m/s` |
//!   | `微西[门子]/厘米` | `µS/cm` | `[角]度` | `°` |
//!   | `[色]度` | `degree` (colour) | `平方米` | `m²` |
//!   | `分贝` | `dB` | `吨/平方千米•月` | `t/(km²·month)` |
//!   | `安[培]` | `A` | `毫伏[特]` | `mV` |
//!   | `伏[特]` | `V` | `千瓦[特][小]时` | `kWh` |
//!   | `米` | `m` | `千克/立方米` | `kg/m³` |
//!   | `转/分钟` | `r/min` | `分钟`, `秒` | `min`, `s` |
//!
//!   无量纲 (dimensionless) and `--` (none / user-defined) are both stored as `""`.
//! * **Data types** use the notation of §6.3.3.2.2 (`N5.2`, `C890`), or `""` where none is printed.
//!
//! # Errata in the printed tables (spec digest §14) and how they are handled
//!
//! * Table B.2 gives 纳克/立方米 (ng/m³) with emission unit 克 (g) for CH4 (a05002), NH3 (a21001),
//!   the ambient metals (a20007, a20026, a20044, a20058) and particulates (a34001–a34005). For
//!   ambient work µg/m³ would be normal. The printed value is kept; treat units as configuration.
//! * Table B.2 prints type `N1.6` for a20007 and no type for a34011 (降尘); kept as printed.
//! * Table B.10 prints the unit of `i33102` (station-room **humidity**) as 摄氏度 (°C); kept as
//!   printed (`°C`), although `%` is obviously meant.
//! * Table B.10 prints the production-load code as `I33400` with an upper-case `I`. The table stores
//!   the canonical `i33400`, and [`info_code`] / [`info_code_in`] also accept `I33400`.
//! * Tables B.5 / B.7 print `e701xx` twice (lift pump, then chemical dosing) and `g119xx` twice
//!   (desulphurisation rate, then inlet SO2). Both rows are kept as printed; [`process`] returns the
//!   first one. Some implementations remap the second rows to `e711xx` and `g200xx`; that remapping
//!   is not part of the standard and is not done here.
//! * Smaller printed oddities kept verbatim: `e205xx` "出水口 PH", `e412xx` "搅拌器转态" (for 状态),
//!   `g113xx` "吸收塔除物器电流" (for 除雾器), `e303xx` 鼓风量 with unit mg/L, and the gap
//!   `e611xx`–`e613xx` in Table B.5.
//! * Ozone is not in Table B.2, although real packets use the HJ 524 code `a05024`; it is not added.

// ---------------------------------------------------------------------------------------------
// Pollutant codes (Tables B.1–B.3) and process codes (Tables B.5, B.7)
// ---------------------------------------------------------------------------------------------

/// One row of a pollutant / monitoring-factor table (Tables B.1, B.2, B.3, B.5, B.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollutantInfo {
    /// The HJ 212-2017 code, e.g. `w01018`, `a21026`, `LA`, or a process pattern such as `e101xx`.
    pub code: &'static str,
    /// English name (a translation; not part of the standard).
    pub name_en: &'static str,
    /// Chinese name, verbatim from the standard (中文名称).
    pub name_zh: &'static str,
    /// The HJ/T 212-2005 code from the "原编码" column, if the standard prints one.
    pub code_2005: Option<&'static str>,
    /// Default concentration unit (缺省计量单位（浓度）) as a symbol; `""` means dimensionless.
    pub unit: &'static str,
    /// Default emission (load) unit (缺省计量单位（排放量）), if the standard prints one.
    pub emission_unit: Option<&'static str>,
    /// Default data type of the concentration (缺省数据类型), e.g. `N5.1`; `""` if none is printed.
    pub data_type: &'static str,
}

const fn p(
    code: &'static str,
    name_en: &'static str,
    name_zh: &'static str,
    code_2005: Option<&'static str>,
    unit: &'static str,
    emission_unit: Option<&'static str>,
    data_type: &'static str,
) -> PollutantInfo {
    PollutantInfo { code, name_en, name_zh, code_2005, unit, emission_unit, data_type }
}

/// A process (工况) factor row: no 2005 code and no emission unit.
const fn pr(
    code: &'static str,
    name_en: &'static str,
    name_zh: &'static str,
    unit: &'static str,
    data_type: &'static str,
) -> PollutantInfo {
    PollutantInfo { code, name_en, name_zh, code_2005: None, unit, emission_unit: None, data_type }
}

const MG_L: &str = "mg/L";
const UG_L: &str = "µg/L";
const NG_L: &str = "ng/L";
const MG_M3: &str = "mg/m³";
const NG_M3: &str = "ng/m³";
const KG: Option<&str> = Some("kg");
const G: Option<&str> = Some("g");
const MG: Option<&str> = Some("mg");
const NONE: Option<&str> = None;
const fn c(code: &'static str) -> Option<&'static str> {
    Some(code)
}

/// Water monitoring factors: HJ 212-2017 Table B.1 (水监测因子编码表, codes from HJ 525-2009),
/// every row as printed (63 rows).
///
/// `w20138`–`w20144` (dissolved Cu, Zn, Se, As, Hg, Cd, Pb) have no 2005 code.
pub static WATER: &[PollutantInfo] = &[
    p("w00000", "Wastewater (flow)", "污水", c("B01"), "L/s", Some("m³"), "N5.2"),
    p("w01001", "pH", "pH 值", c("001"), "", NONE, "N2.2"),
    p("w01002", "Colour", "色度", c("002"), "degree", NONE, "N3.2"),
    p("w01006", "Total dissolved solids", "溶解性总固体", None, MG_L, KG, "N4"),
    p("w01009", "Dissolved oxygen", "溶解氧", None, MG_L, NONE, "N3.1"),
    p("w01010", "Water temperature", "水温", None, "°C", NONE, "N3.1"),
    p("w01012", "Suspended solids", "悬浮物", c("003"), MG_L, KG, "N4"),
    p("w01014", "Conductivity", "电导率", None, "µS/cm", NONE, "N3.1"),
    p("w01017", "Five-day biochemical oxygen demand (BOD5)", "五日生化需氧量", c("010"), MG_L, KG, "N5.1"),
    p("w01018", "Chemical oxygen demand (COD)", "化学需氧量", c("011"), MG_L, KG, "N5.1"),
    p("w01019", "Permanganate index", "高锰酸盐指数", None, MG_L, KG, "N3.1"),
    p("w01020", "Total organic carbon (TOC)", "总有机碳", c("015"), MG_L, KG, "N3.1"),
    p("w02003", "Faecal coliforms", "粪大肠菌群", c("550"), "count/L", NONE, "N9"),
    p("w02006", "Total bacteria count", "细菌总数", None, "count/L", NONE, "N9"),
    p("w03001", "Gross alpha radioactivity", "总 α 放射性", c("570"), "Bq/L", NONE, "N3.1"),
    p("w03002", "Gross beta radioactivity", "总 β 放射性", c("571"), "Bq/L", NONE, "N3.1"),
    p("w19001", "Surfactants", "表面活性剂", None, MG_L, KG, "N3.2"),
    p("w19002", "Anionic surfactants", "阴离子表面活性剂", c("520"), MG_L, KG, "N3.2"),
    p("w20012", "Barium", "钡", c("039"), MG_L, KG, "N3.3"),
    p("w20023", "Boron", "硼", c("037"), MG_L, KG, "N3.3"),
    p("w20038", "Cobalt", "钴", c("040"), MG_L, KG, "N3.4"),
    p("w20061", "Molybdenum", "钼", c("038"), MG_L, KG, "N3.4"),
    p("w20089", "Thallium", "铊", c("041"), NG_L, MG, "N4"),
    p("w20092", "Tin", "锡", c("036"), MG_L, KG, "N3.1"),
    p("w20111", "Total mercury", "总汞", c("020"), UG_L, G, "N3.2"),
    p("w20113", "Alkyl mercury", "烷基汞", c("021"), NG_L, MG, "N4"),
    p("w20115", "Total cadmium", "总镉", c("022"), UG_L, G, "N3.1"),
    p("w20116", "Total chromium", "总铬", c("023"), MG_L, KG, "N3.3"),
    p("w20117", "Hexavalent chromium", "六价铬", c("024"), UG_L, G, "N2.3"),
    p("w20119", "Total arsenic", "总砷", c("026"), UG_L, G, "N2.3"),
    p("w20120", "Total lead", "总铅", c("027"), UG_L, G, "N4"),
    p("w20121", "Total nickel", "总镍", c("028"), MG_L, KG, "N3.2"),
    p("w20122", "Total copper", "总铜", c("029"), MG_L, KG, "N3.2"),
    p("w20123", "Total zinc", "总锌", c("030"), MG_L, KG, "N3.3"),
    p("w20124", "Total manganese", "总锰", c("031"), MG_L, KG, "N3.3"),
    p("w20125", "Total iron", "总铁", c("032"), MG_L, KG, "N3.3"),
    p("w20126", "Total silver", "总银", c("033"), MG_L, KG, "N3.3"),
    p("w20127", "Total beryllium", "总铍", c("034"), UG_L, G, "N3.3"),
    p("w20128", "Total selenium", "总硒", c("035"), UG_L, G, "N4.2"),
    p("w20138", "Copper", "铜", None, MG_L, KG, "N3.3"),
    p("w20139", "Zinc", "锌", None, MG_L, KG, "N3.3"),
    p("w20140", "Selenium", "硒", None, MG_L, KG, "N3.3"),
    p("w20141", "Arsenic", "砷", None, MG_L, KG, "N3.3"),
    p("w20142", "Mercury", "汞", None, UG_L, G, "N3.3"),
    p("w20143", "Cadmium", "镉", None, UG_L, G, "N3.3"),
    p("w20144", "Lead", "铅", None, MG_L, KG, "N3.3"),
    p("w21001", "Total nitrogen", "总氮", c("065"), MG_L, KG, "N4.2"),
    p("w21003", "Ammonia nitrogen", "氨氮", c("060"), MG_L, KG, "N4.2"),
    p("w21004", "Kjeldahl nitrogen", "凯氏氮", c("062"), MG_L, KG, "N3.1"),
    p("w21006", "Nitrite", "亚硝酸盐", c("063"), MG_L, KG, "N2.3"),
    p("w21007", "Nitrate", "硝酸盐", c("064"), MG_L, KG, "N2.3"),
    p("w21011", "Total phosphorus", "总磷", c("101"), MG_L, KG, "N3.2"),
    p("w21016", "Cyanide", "氰化物", c("070"), MG_L, KG, "N3.3"),
    p("w21017", "Fluoride", "氟化物", c("072"), MG_L, KG, "N4.2"),
    p("w21019", "Sulphide", "硫化物", c("071"), MG_L, KG, "N3.3"),
    p("w21022", "Chloride", "氯化物", c("090"), MG_L, KG, "N3.1"),
    p("w21038", "Sulphate", "硫酸盐", None, MG_L, KG, "N6"),
    p("w22001", "Petroleum oils", "石油类", c("080"), MG_L, KG, "N3.2"),
    p("w23002", "Volatile phenols", "挥发酚", c("110"), MG_L, KG, "N3.4"),
    p("w25043", "Benzo[a]pyrene", "苯并[α]芘", c("540"), UG_L, G, "N3.1"),
    p("w33001", "Hexachlorocyclohexane (HCH)", "六六六", c("350"), NG_L, MG, "N4"),
    p("w33007", "DDT", "滴滴涕", c("351"), NG_L, MG, "N4"),
    p("w99001", "Organic nitrogen", "有机氮", c("061"), MG_L, KG, "N3.1"),
];

/// Gas monitoring factors and flue-gas parameters: HJ 212-2017 Table B.2 (气监测因子编码表, codes
/// from HJ 524-2009), every row as printed (121 rows), including all VOC rows.
///
/// 2005 codes are two digits (`01`–`37`) for pollutants, `S01`–`S08` for flue-gas parameters and
/// `B02` for the flue-gas flow. The 2005 code `16` (苯系物, benzene series) has no row here.
/// The ng/m³ rows are an erratum in the printed table (see the module docs); they are kept.
pub static GAS: &[PollutantInfo] = &[
    p("a00000", "Flue gas (flow)", "废气", c("B02"), "m³/s", Some("m³"), "N6.1"),
    p("a01001", "Temperature", "温度", None, "°C", NONE, "N3.1"),
    p("a01002", "Humidity", "湿度", None, "%", NONE, "N3.1"),
    p("a01006", "Air pressure", "气压", None, "kPa", NONE, "N5.3"),
    p("a01007", "Wind speed", "风速", None, "m/s", NONE, "N4.1"),
    p("a01008", "Wind direction", "风向", None, "°", NONE, "N4"),
    p("a01010", "Ringelmann blackness", "林格曼黑度", c("37"), "", NONE, "N1"),
    p("a01011", "Flue-gas velocity", "烟气流速", c("S02"), "m/s", NONE, "N5.2"),
    p("a01012", "Flue-gas temperature", "烟气温度", c("S03"), "°C", NONE, "N3.1"),
    p("a01013", "Flue-gas pressure", "烟气压力", c("S08"), "kPa", NONE, "N5.3"),
    p("a01014", "Flue-gas humidity", "烟气湿度", c("S05"), "%", NONE, "N3.1"),
    p("a01015", "Cooler temperature", "制冷温度", c("S06"), "°C", NONE, "N3.1"),
    p("a01016", "Duct cross-section area", "烟道截面积", c("S07"), "m²", NONE, "N4.2"),
    p("a01017", "Flue-gas dynamic pressure", "烟气动压", c("S04"), "kPa", NONE, "N5.3"),
    p(
        "a01901",
        "Waste incinerator furnace mean combustion temperature",
        "垃圾焚烧炉膛内焚烧平均温度",
        None,
        "°C",
        NONE,
        "N4.1",
    ),
    p("a01902", "Waste incinerator furnace DCS temperature", "垃圾焚烧炉膛内 DCS 温度", None, "°C", NONE, "N4.1"),
    p("a05001", "Carbon dioxide", "二氧化碳", c("30"), MG_M3, KG, "N3.3"),
    p("a05002", "Methane", "甲烷", None, NG_M3, G, "N4.1"),
    p("a05008", "Trichlorofluoromethane", "三氯一氟甲烷", None, MG_M3, KG, "N7.3"),
    p("a05009", "Dichlorodifluoromethane", "二氯二氟甲烷", None, MG_M3, KG, "N7.3"),
    p("a05013", "Trichlorotrifluoroethane", "三氯三氟乙烷", None, MG_M3, KG, "N7.3"),
    p("a19001", "Oxygen content", "氧气含量", c("S01"), "%", NONE, "N3.1"),
    p("a20007", "Arsenic", "砷", None, NG_M3, G, "N1.6"),
    p("a20016", "Beryllium and its compounds", "铍及其化合物", c("36"), MG_M3, KG, "N4.4"),
    p("a20025", "Cadmium and its compounds", "镉及其化合物", c("33"), MG_M3, KG, "N3.4"),
    p("a20026", "Cadmium", "镉", None, NG_M3, G, "N3.3"),
    p("a20043", "Lead and its compounds", "铅及其化合物", c("32"), MG_M3, KG, "N2.4"),
    p("a20044", "Lead", "铅", None, NG_M3, G, "N3.3"),
    p("a20057", "Mercury and its compounds", "汞及其化合物", c("31"), MG_M3, KG, "N4.4"),
    p("a20058", "Mercury", "汞", None, NG_M3, G, "N3.2"),
    p("a20063", "Nickel and its compounds", "镍及其化合物", c("35"), MG_M3, KG, "N3.3"),
    p("a20091", "Tin and its compounds", "锡及其化合物", c("34"), MG_M3, KG, "N4.3"),
    p("a21001", "Ammonia", "氨（氨气）", c("10"), NG_M3, G, "N4.3"),
    p("a21002", "Nitrogen oxides (NOx)", "氮氧化物", c("03"), MG_M3, KG, "N5.1"),
    p("a21003", "Nitric oxide (NO)", "一氧化氮", None, MG_M3, KG, "N4.1"),
    p("a21004", "Nitrogen dioxide (NO2)", "二氧化氮", None, MG_M3, KG, "N4.1"),
    p("a21005", "Carbon monoxide (CO)", "一氧化碳", c("04"), MG_M3, KG, "N3.3"),
    p("a21017", "Cyanide", "氰化物", c("07"), MG_M3, KG, "N3.3"),
    p("a21018", "Fluoride", "氟化物", c("06"), MG_M3, KG, "N2.3"),
    p("a21022", "Chlorine", "氯气", c("11"), MG_M3, KG, "N4.3"),
    p("a21024", "Hydrogen chloride", "氯化氢", c("08"), MG_M3, KG, "N4.3"),
    p("a21026", "Sulphur dioxide (SO2)", "二氧化硫", c("02"), MG_M3, KG, "N5.2"),
    p("a21028", "Hydrogen sulphide", "硫化氢", c("05"), MG_M3, KG, "N3.2"),
    p("a23001", "Phenols", "酚类", c("27"), MG_M3, KG, "N3.3"),
    p("a24003", "Dichloromethane", "二氯甲烷", None, MG_M3, KG, "N7.3"),
    p("a24004", "Trichloromethane", "三氯甲烷", None, MG_M3, KG, "N7.3"),
    p("a24005", "Tetrachloromethane", "四氯甲烷", None, MG_M3, KG, "N7.3"),
    p("a24006", "Dibromochloromethane", "二溴一氯甲烷", None, MG_M3, KG, "N7.3"),
    p("a24007", "Bromodichloromethane", "一溴二氯甲烷", None, MG_M3, KG, "N7.3"),
    p("a24008", "Bromomethane", "溴甲烷", None, MG_M3, KG, "N7.3"),
    p("a24009", "Tribromomethane", "三溴甲烷", None, MG_M3, KG, "N7.3"),
    p("a24015", "Chloroethane", "氯乙烷", None, MG_M3, KG, "N7.3"),
    p("a24016", "1,1-Dichloroethane", "1,1-二氯乙烷", None, MG_M3, KG, "N7.3"),
    p("a24017", "1,2-Dichloroethane", "1,2-二氯乙烷", None, MG_M3, KG, "N7.3"),
    p("a24018", "1,1,1-Trichloroethane", "1,1,1-三氯乙烷", None, MG_M3, KG, "N7.3"),
    p("a24019", "1,1,2-Trichloroethane", "1,1,2-三氯乙烷", None, MG_M3, KG, "N7.3"),
    p("a24020", "1,1,2,2-Tetrachloroethane", "1,1,2,2-四氯乙烷", None, MG_M3, KG, "N7.3"),
    p("a24027", "1,2-Dichloropropane", "1,2-二氯丙烷", None, MG_M3, KG, "N7.3"),
    p("a24034", "1,2-Dibromoethane", "1,2-二溴乙烷", None, MG_M3, KG, "N7.3"),
    p("a24036", "Cyclohexane", "环己烷", None, MG_M3, KG, "N7.3"),
    p("a24042", "n-Hexane", "正己烷", None, MG_M3, KG, "N7.3"),
    p("a24043", "n-Heptane", "正庚烷", None, MG_M3, KG, "N7.3"),
    p("a24046", "Vinyl chloride", "氯乙烯", c("29"), MG_M3, KG, "N4.3"),
    p("a24047", "1,1-Dichloroethylene", "1,1-二氯乙烯", None, MG_M3, KG, "N7.3"),
    p("a24049", "Trichloroethylene", "三氯乙烯", None, MG_M3, KG, "N7.3"),
    p("a24050", "Tetrachloroethylene", "四氯乙烯", None, MG_M3, KG, "N7.3"),
    p("a24053", "Propylene", "丙烯", None, MG_M3, KG, "N7.3"),
    p("a24054", "1,3-Dichloropropene", "1,3-二氯丙烯", None, MG_M3, KG, "N7.3"),
    p("a24072", "1,4-Dioxane", "1,4-二恶烷", None, MG_M3, KG, "N7.3"),
    p("a24078", "1,3-Butadiene", "1,3-丁二烯", None, MG_M3, KG, "N7.3"),
    p("a24087", "Hydrocarbons", "碳氢化合物", c("25"), MG_M3, KG, "N5.2"),
    p("a24088", "Non-methane hydrocarbons (NMHC)", "非甲烷总烃", None, MG_M3, KG, "N7.3"),
    p("a24099", "Chloromethane", "氯甲烷", None, MG_M3, KG, "N7.3"),
    p("a24110", "trans-1,2-Dichloroethylene", "反式-1,2-二氯乙烯", None, MG_M3, KG, "N7.3"),
    p("a24111", "cis-1,2-Dichloroethylene", "顺式-1,2-二氯乙烯", None, MG_M3, KG, "N7.3"),
    p("a24112", "trans-1,3-Dichloropropene", "反式-1,3-二氯丙烯", None, MG_M3, KG, "N7.3"),
    p("a24113", "Hexachloro-1,3-butadiene", "六氯-1,3-丁二烯", None, MG_M3, KG, "N7.3"),
    p("a25002", "Benzene", "苯", None, MG_M3, KG, "N7.3"),
    p("a25003", "Toluene", "甲苯", c("17"), MG_M3, KG, "N4.2"),
    p("a25004", "Ethylbenzene", "乙苯", None, MG_M3, KG, "N7.3"),
    p("a25005", "Xylene", "二甲苯", c("18"), MG_M3, KG, "N4.2"),
    p("a25006", "1,2-Dimethylbenzene (o-xylene)", "1,2-二甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25007", "1,3-Dimethylbenzene (m-xylene)", "1,3-二甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25008", "1,4-Dimethylbenzene (p-xylene)", "1,4-二甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25010", "Chlorobenzene", "氯苯", c("23"), MG_M3, KG, "N4.3"),
    p("a25011", "1,2-Dichlorobenzene", "1,2-二氯苯", None, MG_M3, KG, "N7.3"),
    p("a25012", "1,3-Dichlorobenzene", "1,3-二氯苯", None, MG_M3, KG, "N7.3"),
    p("a25013", "1,4-Dichlorobenzene", "1,4-二氯苯", None, MG_M3, KG, "N7.3"),
    p("a25014", "1-Ethyl-4-methylbenzene", "1-乙基-4-甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25015", "1,2,4-Trichlorobenzene", "1,2,4-三氯苯", None, MG_M3, KG, "N7.3"),
    p("a25019", "1,2,4-Trimethylbenzene", "1,2,4-三甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25020", "1,2,3-Trimethylbenzene", "1,2,3-三甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25021", "1,3,5-Trimethylbenzene", "1,3,5-三甲基苯", None, MG_M3, KG, "N7.3"),
    p("a25023", "Nitrobenzene", "硝基苯", c("22"), MG_M3, KG, "N3.4"),
    p("a25038", "Vinylbenzene (styrene)", "乙烯基苯", None, MG_M3, KG, "N7.3"),
    p("a25044", "Benzo[a]pyrene", "苯并[a]芘", c("20"), MG_M3, KG, "N4.3"),
    p("a25072", "Tetrahydrofuran", "四氢呋喃", None, MG_M3, KG, "N7.3"),
    p("a26001", "Anilines", "苯胺类", c("21"), MG_M3, KG, "N4.3"),
    p("a29017", "Ethyl acetate", "乙酸乙酯", None, MG_M3, KG, "N7.3"),
    p("a29026", "Vinyl acetate", "乙酸乙烯酯", None, MG_M3, KG, "N7.3"),
    p("a30001", "Methanol", "甲醇", c("28"), MG_M3, KG, "N4.3"),
    p("a30008", "Isopropanol", "异丙醇", None, MG_M3, KG, "N7.3"),
    p("a30022", "Mercaptans", "硫醇", c("13"), MG_M3, KG, "N4.3"),
    p("a31001", "Formaldehyde", "甲醛", c("19"), MG_M3, KG, "N3.3"),
    p("a31002", "Acetaldehyde", "乙醛", c("26"), MG_M3, KG, "N3.4"),
    p("a31024", "Acetone", "丙酮", None, MG_M3, KG, "N7.3"),
    p("a31025", "2-Butanone", "2-丁酮", None, MG_M3, KG, "N7.3"),
    p("a31030", "Methyl isobutyl ketone", "甲基异丁基甲酮", None, MG_M3, KG, "N7.3"),
    p("a34001", "Total suspended particulates (TSP)", "总悬浮颗粒物 TSP", None, NG_M3, G, "N4.3"),
    p("a34002", "Inhalable particulates (PM10)", "可吸入颗粒物 PM10", None, NG_M3, G, "N3.3"),
    p("a34004", "Fine particulates (PM2.5)", "细微颗粒物 PM2.5", None, NG_M3, G, "N3.3"),
    p("a34005", "Submicron particulates (PM1.0)", "亚微米颗粒物 PM1.0", None, NG_M3, G, "N3.3"),
    p("a34011", "Dustfall", "降尘", None, "t/(km²·month)", NONE, ""),
    p("a34013", "Smoke and dust (particulate matter)", "烟尘", c("01"), MG_M3, KG, "N4"),
    p("a34017", "Carbon black dust", "炭黑尘", None, MG_M3, KG, "N4"),
    p("a34038", "Asphalt fume", "沥青烟", c("09"), MG_M3, KG, "N4.3"),
    p("a34039", "Sulphuric acid mist", "硫酸雾", c("14"), MG_M3, KG, "N4.3"),
    p("a34040", "Chromic acid mist", "铬酸雾", c("15"), MG_M3, KG, "N2.3"),
    p("a99010", "Acrylonitrile", "丙烯腈", None, MG_M3, KG, "N7.3"),
    p("a99049", "Phosgene", "光气", c("24"), MG_M3, KG, "N3.3"),
    p("a99051", "Carbon disulphide", "二硫化碳", c("12"), MG_M3, KG, "N4.3"),
];

/// Acoustic-environment factors: HJ 212-2017 Table B.3 (声环境监测因子编码表, items required by
/// GB 3096-2008), 12 rows, all in dB (分贝), type `N3.1`.
///
/// The codes are case-sensitive as printed (`Leq`, `LMx`). They are used as `LA-Rtd` (CN 2011),
/// `L5-Data` (2051 / 2061) and `L5-DayData` / `L5-NightData` (2031). No 2005 codes are printed;
/// 2005-era implementations list `B03` next to the same L-codes.
pub static NOISE: &[PollutantInfo] = &[
    p("LA", "A-weighted sound level", "A权声级", None, "dB", NONE, "N3.1"),
    p("L5", "Percentile sound level L5", "累计百分声级 L5", None, "dB", NONE, "N3.1"),
    p("L10", "Percentile sound level L10", "累计百分声级 L10", None, "dB", NONE, "N3.1"),
    p("L50", "Percentile sound level L50", "累计百分声级 L50", None, "dB", NONE, "N3.1"),
    p("L90", "Percentile sound level L90", "累计百分声级 L90", None, "dB", NONE, "N3.1"),
    p("L95", "Percentile sound level L95", "累计百分声级 L95", None, "dB", NONE, "N3.1"),
    p("Leq", "Equivalent continuous sound level", "等效声级", None, "dB", NONE, "N3.1"),
    p("Ldn", "Day-night equivalent sound level", "昼夜等效声级", None, "dB", NONE, "N3.1"),
    p("Ld", "Daytime equivalent sound level", "昼间等效声级", None, "dB", NONE, "N3.1"),
    p("Ln", "Night-time equivalent sound level", "夜间等效声级", None, "dB", NONE, "N3.1"),
    p("LMx", "Maximum instantaneous sound level", "最大的瞬时声级", None, "dB", NONE, "N3.1"),
    p("LMn", "Minimum instantaneous sound level", "最小的瞬时声级", None, "dB", NONE, "N3.1"),
];

/// Wastewater process (工况) factors, ST 52: HJ 212-2017 Table B.5, every row as printed (90 rows).
///
/// Codes are patterns `e<process><factor:2>xx`, where `xx` is the number of the device within the
/// process, `01`–`99` (§6.4.1). Process groups (Table B.4): `1` plant inlet, `2` plant outlet,
/// `3` conventional activated sludge, `4` oxidation ditch, `5` A/O – A²/O, `6` SBR, `7` biological
/// contact oxidation, `8` biofilter, `9` plant design parameters, `a`–`b` reserved.
///
/// Printed duplicate: `e701xx` appears twice (污水提升泵, then 加药量). Both rows are kept.
pub static PROCESS_WATER: &[PollutantInfo] = &[
    pr("e101xx", "Inlet flow", "进水口流量", "L/s", "N6.2"),
    pr("e102xx", "Inlet COD", "进水口 COD", MG_L, "N5.1"),
    pr("e103xx", "Inlet ammonia nitrogen", "进水口氨氮", MG_L, "N3.2"),
    pr("e104xx", "Inlet total phosphorus", "进水口总磷", MG_L, "N3.2"),
    pr("e105xx", "Inlet total nitrogen", "进水口总氮", MG_L, "N5.1"),
    pr("e106xx", "Inlet pH", "进水口 pH", "", "N2.2"),
    pr("e201xx", "Outlet flow", "出水口流量", "L/s", "N6.2"),
    pr("e202xx", "Outlet COD", "出水口 COD", MG_L, "N5.1"),
    pr("e203xx", "Outlet ammonia nitrogen", "出水口氨氮", MG_L, "N3.2"),
    pr("e204xx", "Outlet total phosphorus", "出水口总磷", MG_L, "N3.2"),
    pr("e205xx", "Outlet pH", "出水口 PH", "", "N2.2"),
    pr("e301xx", "Lift pump (current)", "污水提升泵", "A", "N4.2"),
    pr("e302xx", "Blower (current)", "鼓风机", "A", "N4.2"),
    pr("e303xx", "Air blowing rate (unit printed mg/L)", "鼓风量", MG_L, "N7"),
    pr("e304xx", "Biological tank sludge concentration", "生化池污泥浓度", MG_L, "N5.1"),
    pr("e305xx", "Biological tank dissolved oxygen", "生化池溶解氧浓度", MG_L, "N5.1"),
    pr("e306xx", "Excess sludge pump (current)", "污泥剩余泵", "A", "N4.2"),
    pr("e307xx", "Sludge return pump (current)", "污泥回流泵", "A", "N4.2"),
    pr("e308xx", "Returned sludge quantity", "污泥回流量", "kg", "N7"),
    pr("e309xx", "Excess sludge quantity", "污泥剩余量", "kg", "N7"),
    pr("e310xx", "Sludge filter press (current)", "污泥压滤机", "A", "N4.2"),
    pr("e311xx", "Valve state", "阀门状态", "", "N1"),
    pr("e312xx", "Sludge storage tank level", "储泥池液位", "m", "N2.3"),
    pr("e313xx", "Chemical dosing", "加药量", MG_L, "N5.1"),
    pr("e314xx", "Biological tank ORP", "生化池氧化还原电位", "mV", "N7"),
    pr("e401xx", "Lift pump (current)", "污水提升泵", "A", "N4.2"),
    pr("e402xx", "Aeration equipment (current)", "曝气设备", "A", "N4.2"),
    pr("e403xx", "Biological tank sludge concentration", "生化池污泥浓度", MG_L, "N5.1"),
    pr("e404xx", "Anaerobic tank dissolved oxygen", "厌氧池溶解氧浓度", MG_L, "N5.1"),
    pr("e405xx", "Anoxic tank dissolved oxygen", "缺氧池溶解氧浓度", MG_L, "N5.1"),
    pr("e406xx", "Aerobic tank dissolved oxygen", "好氧池溶解氧浓度", MG_L, "N5.1"),
    pr("e407xx", "Excess sludge pump (current)", "污泥剩余泵", "A", "N4.2"),
    pr("e408xx", "Sludge return pump (current)", "污泥回流泵", "A", "N4.2"),
    pr("e409xx", "Returned sludge quantity", "污泥回流量", "kg", "N4.2"),
    pr("e410xx", "Excess sludge quantity", "污泥剩余量", "kg", "N4.2"),
    pr("e411xx", "Sludge filter press (current)", "污泥压滤机", "A", "N4.2"),
    pr("e412xx", "Agitator state", "搅拌器转态", "", "N1"),
    pr("e413xx", "Valve state", "阀门状态", "", "N1"),
    pr("e414xx", "Anoxic tank ORP", "缺氧池氧化还原电位", "mV", "N7"),
    pr("e415xx", "Aerobic tank ORP", "好氧池氧化还原电位", "mV", "N7"),
    pr("e416xx", "Lift-pump sump level", "提升泵池液位", "m", "N2.3"),
    pr("e417xx", "Sludge storage tank level", "储泥池液位", "m", "N2.3"),
    pr("e418xx", "Chemical dosing", "加药量", MG_L, "N5.1"),
    pr("e501xx", "Lift pump (current)", "污水提升泵", "A", "N4.2"),
    pr("e502xx", "Aeration equipment (current)", "曝气设备", "A", "N4.2"),
    pr("e503xx", "Air supply state", "供气量状态", "", "N1"),
    pr("e504xx", "Biological tank sludge concentration", "生化池污泥浓度", MG_L, "N5.1"),
    pr("e505xx", "Anaerobic tank dissolved oxygen", "厌氧池溶解氧浓度", MG_L, "N5.1"),
    pr("e506xx", "Anoxic tank dissolved oxygen", "缺氧池溶解氧浓度", MG_L, "N5.1"),
    pr("e507xx", "Aerobic tank dissolved oxygen", "好氧池溶解氧浓度", MG_L, "N5.1"),
    pr("e508xx", "Mixed-liquor return pump (current)", "混合液回流泵", "A", "N4.2"),
    pr("e509xx", "Excess sludge pump (current)", "剩余污泥泵", "A", "N4.2"),
    pr("e510xx", "Excess sludge quantity", "剩余污泥量", "kg", "N7"),
    pr("e511xx", "Agitator state", "搅拌器状态", "", "N1"),
    pr("e512xx", "Valve state", "阀门状态", "", "N1"),
    pr("e513xx", "Anoxic tank ORP", "缺氧池氧化还原电位", "mV", "N7"),
    pr("e514xx", "Aerobic tank ORP", "好氧池氧化还原电位", "mV", "N7"),
    pr("e515xx", "Lift-pump sump level", "提升泵池液位", "m", "N2.3"),
    pr("e516xx", "Sludge storage tank level", "储泥池液位", "m", "N2.3"),
    pr("e517xx", "Chemical dosing", "加药量", MG_L, "N5.1"),
    pr("e601xx", "Lift pump (current)", "污水提升泵", "A", "N4.2"),
    pr("e602xx", "Aeration equipment (current)", "曝气设备", "A", "N4.2"),
    pr("e603xx", "SBR tank sludge concentration", "SBR 池污泥浓度", MG_L, "N5.1"),
    pr("e604xx", "SBR tank dissolved oxygen", "SBR 池溶解氧浓度", MG_L, "N5.1"),
    pr("e605xx", "Excess sludge pump (current)", "污泥剩余泵", "A", "N4.2"),
    pr("e606xx", "Sludge return pump (current)", "污泥回流泵", "A", "N4.2"),
    pr("e607xx", "Returned sludge quantity", "污泥回流量", "kg", "N7"),
    pr("e608xx", "Excess sludge quantity", "污泥剩余量", "kg", "N7"),
    pr("e609xx", "Sludge filter press (current)", "污泥压滤机", "A", "N4.2"),
    pr("e610xx", "Agitator (current)", "搅拌器", "A", "N4.2"),
    pr("e614xx", "SBR tank ORP during aeration and mixing", "SBR 池曝气搅拌时氧化还原电位", "mV", "N7"),
    pr("e615xx", "Valve state", "阀门状态", "", "N1"),
    pr("e616xx", "Lift-pump sump level", "提升泵池液位", "m", "N2.3"),
    pr("e617xx", "Sludge storage tank level", "储泥池液位", "m", "N2.3"),
    pr("e701xx", "Lift pump (current)", "污水提升泵", "A", "N4.2"),
    pr("e702xx", "Aeration equipment (current)", "曝气设备", "A", "N4.2"),
    pr("e703xx", "Contact oxidation tank sludge concentration", "接触氧化池污泥浓度", MG_L, "N5.1"),
    pr("e704xx", "Contact oxidation tank dissolved oxygen", "接触氧化池溶解氧浓度", MG_L, "N5.1"),
    pr("e705xx", "Excess sludge pump (current)", "剩余污泥泵", "A", "N4.2"),
    pr("e706xx", "Excess sludge quantity", "剩余污泥量", "kg", "N7"),
    pr("e707xx", "Sludge filter press (current)", "污泥压滤机", "A", "N4.2"),
    pr("e708xx", "Valve state", "阀门状态", "", "N1"),
    pr("e709xx", "Lift-pump sump level", "提升泵池液位", "m", "N2.3"),
    pr("e710xx", "Sludge storage tank level", "储泥池液位", "m", "N2.3"),
    pr("e701xx", "Chemical dosing (printed duplicate code)", "加药量", MG_L, "N5.1"),
    pr("e801xx", "Lift pump (current)", "污水提升泵", "A", "N4.2"),
    pr("e802xx", "Aeration equipment (current)", "曝气设备", "A", "N4.2"),
    pr("e803xx", "Sludge concentration", "污泥浓度", MG_L, "N5.1"),
    pr("e804xx", "Dissolved oxygen", "溶解氧浓度", MG_L, "N5.1"),
    pr("e805xx", "Excess sludge pump (current)", "剩余污泥泵", "A", "N4.2"),
];

/// Flue-gas process (工况) factors, ST 51: HJ 212-2017 Table B.7, every row as printed (55 rows).
///
/// Codes are patterns `g<process><factor:2>xx` (`xx` = device number, `01`–`99`). Process groups
/// (Table B.6): `1` wet FGD (limestone/lime–gypsum), `2` semi-dry FGD (circulating fluidised bed),
/// `3` SCR, `4` SNCR, `5` electrostatic precipitator, `6` bag filter, `7`–`8` reserved. The table
/// prints rows only for groups 1–3; the inlet/outlet rows `g119xx`–`g134xx` are printed at the end
/// but numbered in group 1.
///
/// Printed duplicate: `g119xx` appears twice (脱硫率, then 入口二氧化硫 SO2). Both rows are kept.
pub static PROCESS_GAS: &[PollutantInfo] = &[
    pr("g101xx", "Booster fan state", "增压风机状态", "", "N1"),
    pr("g102xx", "Booster fan current", "增压风机电流", "A", "N4.2"),
    pr("g103xx", "Slurry circulation pump state", "浆液循环泵状态", "", "N1"),
    pr("g104xx", "Slurry circulation pump current", "浆液循环泵电流", "A", "N4.2"),
    pr("g105xx", "Sealant (seal) state", "密封剂状态", "", "N1"),
    pr("g106xx", "Sealant (seal) current", "密封剂电流", "A", "N4.2"),
    pr("g107xx", "GGH running state", "GGH 运行状态", "", "N1"),
    pr("g108xx", "GGH motor current", "GGH 电机电流", "A", "N4.2"),
    pr("g109xx", "Slurry pump state", "浆液泵状态", "", "N1"),
    pr("g110xx", "Slurry pump flow", "浆液泵流量", "m³/h", "N4.3"),
    pr("g111xx", "Slurry pH in the desulphurisation tower", "脱硫塔内浆液 pH", "", "N2.2"),
    pr("g112xx", "Absorber demister state", "吸收塔除雾器状态", "", "N1"),
    pr("g113xx", "Absorber demister current", "吸收塔除物器电流", "A", "N4.2"),
    pr("g114xx", "Absorber agitator state", "吸收塔搅拌器状态", "", "N1"),
    pr("g115xx", "Absorber slurry density", "吸收塔浆液密度", "kg/m³", "N3.3"),
    pr("g116xx", "Bypass damper opening", "旁路挡板门开度", "°", "N4"),
    pr("g117xx", "Gypsum discharge pump state", "石膏排除泵状态", "", "N1"),
    pr("g118xx", "Gypsum discharge pump current", "石膏排除泵电流", "A", "N4.2"),
    pr("g119xx", "Desulphurisation efficiency", "脱硫率", "%", "N3.2"),
    pr("g201xx", "Tower water-spray pump current", "脱硫塔内喷水泵电流", "A", "N4.2"),
    pr("g202xx", "Desulphurising-agent conveyor (current)", "脱硫剂输送装置", "A", "N4.2"),
    pr("g203xx", "Gravimetric coal feeder metering signal", "称重给煤机计量信号", "", "N1"),
    pr("g204xx", "Furnace bed pressure", "炉膛床压", "Pa", "N7"),
    pr("g205xx", "Furnace bed temperature", "炉膛床温", "°C", "N5.1"),
    pr("g206xx", "Slag cooler speed", "冷渣器转速", "r/min", "N6"),
    pr("g207xx", "Return-feed fan current", "返料风机电流", "A", "N4.2"),
    pr("g208xx", "Induced-draft fan current", "引风机电流", "A", "N4.2"),
    pr("g209xx", "Primary air fan current", "一次风机电流", "A", "N4.2"),
    pr("g210xx", "Secondary air fan current", "二次风机电流", "A", "N4.2"),
    pr("g211xx", "Limestone feeder current", "石灰石给料机电流", "A", "N4.2"),
    pr("g212xx", "Desulphurisation efficiency", "脱硫率", "%", "N3.1"),
    pr("g301xx", "Ammonia injection system current", "氨喷射系统电流", "A", "N4.2"),
    pr("g302xx", "Dilution fan state", "稀释风机状态", "", "N1"),
    pr("g303xx", "Dilution fan current", "稀释风机电流", "A", "N4.2"),
    pr("g304xx", "Ammonia pump fan state", "氨泵风机状态", "", "N1"),
    pr("g305xx", "Ammonia pump fan current", "氨泵风机电流", "A", "N4.2"),
    pr("g306xx", "Bypass damper state", "旁路挡板状态", "", "N1"),
    pr("g307xx", "Bypass damper opening", "旁路挡板开度", "°", "N4"),
    pr("g308xx", "Bypass damper differential pressure", "旁路挡板左右压差", "kPa", "N5.3"),
    pr("g119xx", "Inlet SO2 (printed duplicate code)", "入口二氧化硫 SO2", MG_M3, "N3.3"),
    pr("g120xx", "Inlet NOx", "入口氮氧化物 NOx", MG_M3, "N3.3"),
    pr("g121xx", "Inlet oxygen content", "入口含氧量 O2", "%", "N3.1"),
    pr("g122xx", "Inlet flow", "入口流量", "m³/h", "N4.3"),
    pr("g123xx", "Inlet temperature", "入口温度", "°C", "N3.1"),
    pr("g124xx", "Inlet dust", "入口烟尘", MG_M3, "N3.3"),
    pr("g125xx", "Inlet pressure", "入口压力", "kPa", "N5.3"),
    pr("g126xx", "Inlet humidity", "入口湿度", "%", "N3.1"),
    pr("g127xx", "Outlet SO2", "出口二氧化硫 SO2", MG_M3, "N3.3"),
    pr("g128xx", "Outlet NOx", "出口氮氧化物 NOx", MG_M3, "N3.3"),
    pr("g129xx", "Outlet oxygen content", "出口含氧量 O2", "%", "N3.1"),
    pr("g130xx", "Outlet flow", "出口流量", "m³/h", "N4.3"),
    pr("g131xx", "Outlet temperature", "出口温度", "°C", "N3.1"),
    pr("g132xx", "Outlet dust", "出口烟尘", MG_M3, "N3.3"),
    pr("g133xx", "Outlet pressure", "出口压力", "kPa", "N5.3"),
    pr("g134xx", "Outlet humidity", "出口湿度", "%", "N3.1"),
];

fn find_pollutant(table: &'static [PollutantInfo], code: &str) -> Option<&'static PollutantInfo> {
    table.iter().find(|row| row.code == code)
}

/// Looks up a 2017 pollutant code in [`WATER`], [`GAS`] and [`NOISE`] (in that order).
///
/// The match is exact and case-sensitive, as the codes are printed (`w01018`, `a21026`, `Leq`).
/// Process codes (`e…` / `g…`) are looked up with [`process`]; site-information codes with
/// [`info_code`]. Returns `None` for codes outside the tables (e.g. ozone `a05024`, which real
/// devices send although Table B.2 lacks it).
///
/// ```
/// use hj212_codec::tables::pollutant;
/// let cod = pollutant("w01018").unwrap();
/// assert_eq!(cod.code_2005, Some("011"));
/// assert!(pollutant("W01018").is_none());
/// ```
#[must_use]
pub fn pollutant(code: &str) -> Option<&'static PollutantInfo> {
    find_pollutant(WATER, code).or_else(|| find_pollutant(GAS, code)).or_else(|| find_pollutant(NOISE, code))
}

/// The medium that an ST code implies for 2005 code lookup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Medium {
    Water,
    Gas,
}

fn medium_of_st(st: &str) -> Option<Medium> {
    match st {
        // Surface water, groundwater, seawater quality; surface-water, groundwater and marine
        // pollution sources; wastewater process monitoring.
        "21" | "24" | "26" | "32" | "33" | "34" | "52" => Some(Medium::Water),
        // Air quality, VOCs, air pollution source, construction dust, flue-gas process monitoring.
        "22" | "27" | "31" | "39" | "51" => Some(Medium::Gas),
        _ => None,
    }
}

fn find_2005(table: &'static [PollutantInfo], code: &str) -> Option<&'static PollutantInfo> {
    table.iter().find(|row| row.code_2005 == Some(code))
}

/// Maps an HJ/T 212-2005 pollutant code (the "原编码" column of Tables B.1 / B.2) to its 2017 row.
///
/// 2005 codes come in distinct shapes: water pollutants are three digits (`001`–`571`), gas
/// pollutants two digits (`01`–`37`), flue-gas parameters `S01`–`S08`, and the flows `B01`
/// (wastewater) / `B02` (flue gas). Matching is exact (so `01` never matches `S01`).
///
/// `st` is the packet's system code and selects the table when it names a medium:
/// * water STs (21, 24, 26, 32, 33, 34, 52) search [`WATER`] only;
/// * gas STs (22, 27, 31, 39, 51) search [`GAS`] only. As a tolerance (an inference, not from the
///   standard), a three-character code `0dd` that is not a gas code is retried as the two-digit
///   gas code `dd`, for devices that zero-pad gas codes to the width of water codes; under a gas
///   ST `010` thus means ammonia (`a21001`), never BOD5;
/// * any other ST (noise, interaction, out-of-table values) or no ST: both columns are searched;
///   they share no code, so the code's shape decides.
///
/// Noise has no 2005 codes in the standard; `B03`, which 2005-era implementations list for
/// noise, is not mapped.
///
/// ```
/// use hj212_codec::tables::pollutant_from_2005;
/// assert_eq!(pollutant_from_2005("S01", None).unwrap().code, "a19001");
/// assert_eq!(pollutant_from_2005("011", Some("32")).unwrap().code, "w01018");
/// assert_eq!(pollutant_from_2005("02", Some("31")).unwrap().code, "a21026");
/// assert_eq!(pollutant_from_2005("010", Some("31")).unwrap().code, "a21001");
/// assert_eq!(pollutant_from_2005("010", None).unwrap().code, "w01017");
/// ```
#[must_use]
pub fn pollutant_from_2005(code_2005: &str, st: Option<&str>) -> Option<&'static PollutantInfo> {
    match st.and_then(medium_of_st) {
        Some(Medium::Water) => find_2005(WATER, code_2005),
        Some(Medium::Gas) => find_2005(GAS, code_2005).or_else(|| {
            let b = code_2005.as_bytes();
            if b.len() == 3 && b[0] == b'0' && b[1].is_ascii_digit() && b[2].is_ascii_digit() {
                find_2005(GAS, &code_2005[1..])
            } else {
                None
            }
        }),
        None => find_2005(WATER, code_2005).or_else(|| find_2005(GAS, code_2005)),
    }
}

/// Looks up a concrete process (工况) code such as `e10101` or `g11902` in [`PROCESS_WATER`] and
/// [`PROCESS_GAS`].
///
/// A table pattern `e101xx` matches a six-character code with the same first four characters and
/// a device number of two ASCII digits `01`–`99`. The pattern itself (`e101xx`) also matches.
/// For the printed duplicates `e701xx` and `g119xx` the first printed row is returned (lift pump;
/// desulphurisation efficiency).
#[must_use]
pub fn process(code: &str) -> Option<&'static PollutantInfo> {
    let b = code.as_bytes();
    if b.len() != 6 {
        return None;
    }
    let table = match b[0] {
        b'e' => PROCESS_WATER,
        b'g' => PROCESS_GAS,
        _ => return None,
    };
    let suffix_ok = &b[4..] == b"xx" || (b[4].is_ascii_digit() && b[5].is_ascii_digit() && &b[4..] != b"00");
    if !suffix_ok {
        return None;
    }
    table.iter().find(|row| row.code.as_bytes()[..4] == b[..4])
}

// ---------------------------------------------------------------------------------------------
// System codes (Table 5)
// ---------------------------------------------------------------------------------------------

/// One row of the system-code table (ST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemInfo {
    /// The two-character ST value, e.g. `32`.
    pub code: &'static str,
    /// English name (a translation).
    pub name_en: &'static str,
    /// Chinese name, verbatim from Table 5 (系统名称).
    pub name_zh: &'static str,
    /// Whether HJ/T 212-2005 already had this code (its list: 21–23, 31–38, 41, 91).
    pub in_2005: bool,
}

const fn st(code: &'static str, name_en: &'static str, name_zh: &'static str, in_2005: bool) -> SystemInfo {
    SystemInfo { code, name_en, name_zh, in_2005 }
}

/// System codes: HJ 212-2017 §6.6.1 Table 5 (系统编码表, after GB/T 16706-1996), 20 rows.
///
/// Ranges: 10–29 environmental quality, 30–49 pollution sources, 50–69 process (工况)
/// monitoring, 91–99 system interaction, `A0`–`Z9` for unknown / extended systems.
///
/// Not in the table: `44` (electricity-use monitoring) and `45` (key production conditions) are
/// used by HJ 212-2025 according to public implementations ([`SYSTEMS_2025`], provisional); `80`
/// and three-digit values are seen in the wild. Receivers should accept ST values outside both.
pub static SYSTEMS: &[SystemInfo] = &[
    st("21", "Surface water quality monitoring", "地表水质量监测", true),
    st("22", "Air quality monitoring", "空气质量监测", true),
    st("23", "Acoustic environment quality monitoring", "声环境质量监测", true),
    st("24", "Groundwater quality monitoring", "地下水质量监测", false),
    st("25", "Soil quality monitoring", "土壤质量监测", false),
    st("26", "Seawater quality monitoring", "海水质量监测", false),
    st("27", "Volatile organic compounds monitoring", "挥发性有机物监测", false),
    st("31", "Atmospheric pollution source", "大气环境污染源", true),
    st("32", "Surface water pollution source", "地表水体环境污染源", true),
    st("33", "Groundwater pollution source", "地下水体环境污染源", true),
    st("34", "Marine pollution source", "海洋环境污染源", true),
    st("35", "Soil pollution source", "土壤环境污染源", true),
    st("36", "Noise pollution source", "声环境污染源", true),
    st("37", "Vibration pollution source", "振动环境污染源", true),
    st("38", "Radioactive pollution source", "放射性环境污染源", true),
    st("39", "Construction-site dust pollution source", "工地扬尘污染源", false),
    st("41", "Electromagnetic pollution source", "电磁环境污染源", true),
    st("51", "Flue-gas emission process monitoring", "烟气排放过程监控", false),
    st("52", "Wastewater discharge process monitoring", "污水排放过程监控", false),
    st("91", "System interaction (site–platform answers)", "系统交互", true),
];

/// System codes HJ 212-2025 adds, **provisional**: the standard's text was not available. ST 44 is
/// attested by two independent public sources (an implementation's test packet
/// `ST=44;CN=2011;…BeginTime…` and a guide quoting the standard's example); ST 45 by one only.
/// The Chinese names are those sources' (用电监控, 关键生产工况监控).
pub static SYSTEMS_2025: &[SystemInfo] = &[
    st("44", "Electricity-use monitoring (2025, provisional)", "用电监控", false),
    st("45", "Key production-condition monitoring (2025, provisional)", "关键生产工况监控", false),
];

/// Looks up an ST value (exact match) in [`SYSTEMS`], then in [`SYSTEMS_2025`].
#[must_use]
pub fn system(code: &str) -> Option<&'static SystemInfo> {
    SYSTEMS.iter().chain(SYSTEMS_2025).find(|row| row.code == code)
}

// ---------------------------------------------------------------------------------------------
// Site-information codes (Tables B.8–B.10)
// ---------------------------------------------------------------------------------------------

/// Information class of an `i…` code: its third character, per Table B.9 (现场端信息分类编码表).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InfoCategory {
    /// `1`: log (日志), carried as text between `//` and `//`.
    Log,
    /// `2`: state (状态).
    State,
    /// `3`: parameter (参数).
    Parameter,
    /// `4`, `5` (reserved, 预留扩充) or any other character.
    Other,
}

/// Device class of an `i…` code: its second character, per Table B.8 (现场端设备分类编码表).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceClass {
    /// `1`: online monitoring instrument / analyzer (在线监控（监测）仪器仪表).
    Analyzer,
    /// `2`: data acquisition and transmission unit (数据采集传输仪, 数采仪).
    Dau,
    /// `3`: auxiliary equipment (辅助设备).
    Auxiliary,
    /// `4`, `5` (reserved, 预留扩充; used by provincial extensions) or any other character.
    Other,
}

/// One row of a site-information code table (Table B.10 or a provincial extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoCodeInfo {
    /// The code, e.g. `i12001`. A code ending in `x` (`i3331x`) is a pattern; see
    /// [`InfoCodeInfo::matches`].
    pub code: &'static str,
    /// English name (a translation).
    pub name_en: &'static str,
    /// Chinese name, verbatim from the source table.
    pub name_zh: &'static str,
    /// Default unit as a symbol (see the module docs); `""` for dimensionless, none or user-defined.
    pub unit: &'static str,
    /// Default data type (`N2`, `C890`, `YYYYMMDDHHMMSS`); `""` where the source says user-defined
    /// or prints none.
    pub data_type: &'static str,
    /// The defined values, e.g. `"0 running (运行), 1 maintenance (维护)"`, or `""`.
    pub values: &'static str,
}

impl InfoCodeInfo {
    /// Whether this row is a pattern: its code ends in `x`, which stands for a device number.
    #[must_use]
    pub fn is_pattern(&self) -> bool {
        self.code.len() == 6 && self.code.ends_with('x')
    }

    /// Whether `code` is this row's code.
    ///
    /// A plain row matches its code exactly. A pattern row (`i3331x`) matches any six-character
    /// code with the same first five characters and an ASCII alphanumeric last character. Table
    /// B.10 says x is the device number `0`–`9` and "can be extended with the number of measuring
    /// points"; since the code has a fixed width, extension past 9 needs letters, so letters are
    /// accepted too.
    #[must_use]
    pub fn matches(&self, code: &str) -> bool {
        if self.code == code {
            return true;
        }
        self.is_pattern()
            && code.len() == 6
            && self.code.as_bytes()[..5] == code.as_bytes()[..5]
            && code.as_bytes()[5].is_ascii_alphanumeric()
    }
}

const fn ic(
    code: &'static str,
    name_en: &'static str,
    name_zh: &'static str,
    unit: &'static str,
    data_type: &'static str,
    values: &'static str,
) -> InfoCodeInfo {
    InfoCodeInfo { code, name_en, name_zh, unit, data_type, values }
}

const LOG_NOTE: &str = "text between \"//\" and \"//\", UTF-8 (日志信息在“//”之间, 使用 UTF-8 编码)";
const RUN_STOP_FAULT_MAINT: &str = "0 running (运行), 1 stopped (停机), 2 fault (故障), 3 maintenance (维护)";
const NORMAL_ABNORMAL: &str = "0 normal (正常), 1 abnormal (异常)";

/// Site-information codes, national: HJ 212-2017 Table B.10 (现场端信息编码表), every row
/// (38 rows, of which 4 are `x` patterns).
///
/// Used with CN 3020 / 3021 as `InfoId=<code>` and `<code>-Info=<value>`.
///
/// * The log rows (`i11001`, `i21001`, `i31001`) carry text between `//` and `//`, UTF-8; the
///   standard's notes to C.40 / C.41 limit a log to fewer than 890 bytes. Their `values` field
///   holds that description.
/// * `i13001`, `i13002`, `i13007`, `i13008`, `i13009`: unit and type "according to the actual
///   instrument" (单位、数据类型根据实际自定义); stored as `""`.
/// * `i13006`: unit printed 年月日时分秒, type `YYYYMMDD HHMMSS`; stored as type
///   `YYYYMMDDHHMMSS` with no unit.
/// * `i33102` (humidity) has unit °C as printed (erratum, kept).
/// * `i3331x`–`i3334x` are patterns: x = device number 0–9, uploaded on change or at a fixed
///   interval (测量数值变化或者以固定时间间隔上传).
/// * `i33400` is printed `I33400` (erratum); stored lower-case, both spellings are found.
///   It should be taken from the plant DCS when available, else from a sensor.
/// * `i12001` has no value 4.
pub static INFO_CODES: &[InfoCodeInfo] = &[
    // Analyzer: log, state, parameters.
    ic("i11001", "Analyzer run log", "运行日志", "", "C890", LOG_NOTE),
    ic(
        "i12001",
        "Analyzer working state",
        "工作状态",
        "",
        "N2",
        "0 running (运行), 1 maintenance (维护), 2 fault (故障), 3 calibration (校准), 5 back-blowing (反吹), \
         6 power failure (电源故障), 7 measuring (测量), 8 standardisation (标定), 9 standby (待机), 10 O&M (运维)",
    ),
    ic("i12002", "Analyzer–DAU communication state", "分析仪与数采仪通讯状态", "", "N1", NORMAL_ABNORMAL),
    ic("i12003", "COD analyzer alarm state", "COD 分析仪报警状态", "", "N1", "0 normal (正常), 1 alarm (报警)"),
    ic("i13001", "Measuring range", "测量量程", "", "", ""),
    ic("i13002", "Measuring precision", "测量精度", "", "", ""),
    ic("i13003", "Measuring interval", "测量间隔", "min", "N4", ""),
    ic("i13004", "Digestion temperature", "消解温度", "°C", "N3.1", ""),
    ic("i13005", "Digestion duration", "消解时长", "min", "N2", ""),
    ic("i13006", "Calibration time", "校准时间", "", "YYYYMMDDHHMMSS", ""),
    ic("i13007", "Intercept", "截距", "", "", ""),
    ic("i13008", "Slope", "斜率", "", "", ""),
    ic("i13009", "Detection limit", "测量检出限", "", "", ""),
    // DAU: log, state, parameters.
    ic("i21001", "DAU run log", "运行日志", "", "C890", LOG_NOTE),
    ic("i22001", "DAU working state", "工作状态", "", "N1", RUN_STOP_FAULT_MAINT),
    ic(
        "i22002",
        "DAU user state",
        "用户状态",
        "",
        "N1",
        "0 ordinary user (普通用户), 1 administrator (管理员), 2 maintainer (维护人员)",
    ),
    ic("i22003", "DAU–platform communication state", "数采仪与上位机通讯状态", "", "N1", NORMAL_ABNORMAL),
    ic(
        "i22101",
        "DAU channel communication state",
        "数采仪通道通讯状态",
        "",
        "N1",
        "0 normal (正常), 1 abnormal (异常), 2 no device on channel (通道未接设备)",
    ),
    ic("i23001", "Local atmospheric pressure", "本地大气压力", "kPa", "N3.3", ""),
    // Auxiliary equipment: log, state, parameters.
    ic("i31001", "Access-control log", "门禁日志", "", "C890", LOG_NOTE),
    ic("i32001", "Access-control state", "门禁状态", "", "N1", RUN_STOP_FAULT_MAINT),
    ic("i33001", "CEMS heated-line temperature", "CEMS 伴热管温度", "°C", "N4", ""),
    ic("i33002", "CEMS condenser temperature", "CEMS 冷凝温度", "°C", "N1.1", ""),
    ic("i33101", "Monitoring station room temperature", "监测站房温度", "°C", "N4", ""),
    ic("i33102", "Monitoring station room humidity (unit printed °C)", "监测站房湿度", "°C", "N4", ""),
    ic("i33103", "Monitoring station room voltage", "监测站房电压", "V", "N4", ""),
    ic("i33104", "Monitoring station raw-water pressure", "监测站房原水压力", "kPa", "N6", ""),
    ic("i33105", "Monitoring station sample inlet pressure 1", "监测站房进样压力 1", "kPa", "N6", ""),
    ic("i33106", "Monitoring station sample inlet pressure 2", "监测站房进样压力 2", "kPa", "N6", ""),
    ic("i33107", "Grit chamber cleaning time", "沉砂池清洗时间", "s", "N4", ""),
    ic("i33200", "Wastewater treatment plant current", "污水处理站（厂）电流量", "A", "N4.2", ""),
    ic("i33201", "Wastewater treatment plant cumulative energy", "污水处理站（厂）累计耗电量", "kWh", "N13", ""),
    ic("i33202", "Wastewater treatment plant daily energy", "污水处理站（厂）日耗电量", "kWh", "N7", ""),
    ic("i3331x", "Furnace upper combustion temperature (x = device number)", "炉膛内上部焚烧温度", "°C", "N4.1", ""),
    ic("i3332x", "Furnace middle combustion temperature (x = device number)", "炉膛内中部焚烧温度", "°C", "N4.1", ""),
    ic("i3333x", "Furnace lower combustion temperature (x = device number)", "炉膛内下部焚烧温度", "°C", "N4.1", ""),
    ic(
        "i3334x",
        "Furnace secondary-air injection point temperature (x = device number)",
        "炉膛内二次空气喷入点温度",
        "°C",
        "N4.1",
        "",
    ),
    ic("i33400", "Production load (printed I33400)", "生产负荷", "%", "N3.1", ""),
];

const ALARM_01: &str = "0 no alarm, 1 alarm";
const CAL_TIME: &str = "YYYYMMDDHHMMSS";

/// Site-information codes of the Hebei "dynamic control" (动态管控) extension, 89 rows.
///
/// The official Hebei document has not been found. The rows are taken from public implementations,
/// as collected in the project's domain notes (`dynamic-control-and-analyzers.md` §3.2):
/// * `srdgame/lua-HJ212`, `hj212/tags/hebei/info.lua` (names, types, units; added in commit
///   765200c, 2021-12-29, "added `HeBei` tags") and `hj212/tags/exinfo/status.lua`, `alarm.lua`
///   (value lists);
/// * `Yimning/Daily-Code`, `protocol/rtuacq_protocol.h` and its Hebei-mode analyzer drivers.
///
/// Contents:
/// * water analyzer state / alarm: `i12101`–`i12103`;
/// * water analyzer calibration and standard-check parameters: `i13101`–`i13130`, except
///   `i13102`, `i13114`, `i13117` and `i13121`, which the source comments out in favour of the
///   national `i13007`, `i13003`, `i13008` and `i13005`;
/// * gas (CEMS) analyzer state / alarm: `i12007`–`i12009`;
/// * gas analyzer calibration parameters: `i13010`–`i13029`;
/// * further Hebei codes from the same source: DAU `i22004`, `i22005`; flue-gas working
///   parameters `i23002`–`i23011`; door access `i3310A`–`i3310J`; door / power logs `i41001`,
///   `i41002`; water sampler `i42001`–`i42006`, `i43001`–`i43006`; video alarm `i52001`.
///
/// Not included: `i12004`–`i12006` (particulate / flow analyzer, meaning only inferred), and the
/// source's `i22002` / `i22003`, whose meanings contradict Table B.10.
///
/// Collisions to be aware of: other provinces give `i13010`–`i13031` different meanings (Jiangsu:
/// `i13010` = correction factor), and HJ 212-2025 uses `i23005`–`i23008` for the DAU ID, CPU ID
/// and MAC addresses (CN 1001 / 1002). Interpret these codes only under a Hebei profile.
///
/// Values written 50–54 in the state lists are local extensions of the source.
pub static INFO_CODES_HEBEI: &[InfoCodeInfo] = &[
    // Gas analyzer state and alarm.
    ic(
        "i12007",
        "Gas analyzer working state",
        "气态分析仪工作状态",
        "",
        "N2",
        "0 running (运行), 1 maintenance (维护), 2 fault (故障), 3 calibration (校准: 校标/校零), 5 back-blowing (反吹), \
         6 standardisation (标定), 50 measuring (测量), 51 span calibration (校标), 52 zero calibration (校零), \
         54 verification (校验), 99 other (其它)",
    ),
    ic("i12008", "Gas analyzer alarm state", "气态分析仪报警状态", "", "N2", ALARM_01),
    ic(
        "i12009",
        "Gas analyzer alarm detail",
        "气态分析仪报警详情",
        "",
        "N2",
        "0 normal (正常), 1 gas path blocked (气路堵塞), 2 upper-limit alarm (上限报警), 3 lower-limit alarm (下限报警), \
         4 no instrument air (缺仪表风), 5 temperature-control alarm (温控报警), 6 light-intensity alarm (光强弱报警), \
         7 heated-line temperature alarm (伴热管温度报警), 8 O2 sensor ageing (氧传感器老化报警), \
         9 probe temperature fault (探头温度故障)",
    ),
    // Water analyzer state and alarm.
    ic(
        "i12101",
        "Water analyzer working state",
        "工作状态",
        "",
        "N2",
        "0 idle (空闲), 1 sampling/measuring (做样), 2 cleaning (清洗), 3 maintenance (维护), 4 fault (故障), \
         5 calibration (校准), 6 standard check (标样核查), 50 measuring (测量), 51 over range (测量超限), \
         52 zero calibration (零点校准), 53 span calibration (量程校准), 54 verification (校验), 99 other (其它)",
    ),
    ic("i12102", "Water analyzer alarm state", "报警状态", "", "N2", ALARM_01),
    ic(
        "i12103",
        "Water analyzer alarm detail",
        "报警详情",
        "",
        "N2",
        "0 normal (正常), 1 no reagent (缺试剂), 2 no distilled water (缺蒸馏水), 3 no standard solution (缺标液), \
         4 no water sample (缺水样), 5 heating fault (加热故障), 6 light-source fault (光源故障), \
         7 above upper limit (测量值超上限), 8 below lower limit (测量值超下限), 9 waste-drain fault (排残液故障), \
         10 sampling fault (采样故障), 11 system fault (系统故障), 99 other",
    ),
    // Gas analyzer parameters.
    ic("i13010", "Span calibration drift", "量程校准漂移", "%", "N2.1", ""),
    ic("i13011", "Raw measurement value", "测量原始值", "", "", ""),
    ic("i13012", "Dilution ratio", "稀释比", "", "", ""),
    ic("i13013", "Range", "量程", MG_M3, "", ""),
    ic("i13014", "Contamination degree (turbidity method)", "污染度(浊度法)", "", "", ""),
    ic("i13015", "Smoothing time", "平滑时间", "min", "", ""),
    ic("i13016", "Blank particle count (beta-ray method)", "空白粒子数(贝它射线法)", "", "", ""),
    ic("i13017", "Particle count after sampling (beta-ray method)", "采样后粒子数(贝它射线法)", "", "", ""),
    ic("i13018", "Total sampled flow (beta-ray method)", "采样总流量(贝它射线法)", "", "", ""),
    ic("i13019", "Mass ratio (beta-ray method)", "质量比(贝它射线法)", "", "", ""),
    ic("i13020", "Sample flow (beta-ray method)", "采样流量(贝它射线法)", "", "", ""),
    ic("i13021", "Zero calibration time (source name: 点校准时间)", "点校准时间", "", CAL_TIME, ""),
    ic("i13022", "Zero calibration coefficient (intercept)", "零点校准系数", "", "", ""),
    ic("i13023", "Zero calibration concentration (zero gas)", "零点校准浓度", MG_M3, "", ""),
    ic("i13024", "Zero calibration raw value", "零点校准原始值", "", "", ""),
    ic("i13025", "Zero calibration drift", "零点校准漂移", "%", "N2.1", ""),
    ic("i13026", "Span calibration coefficient (slope)", "量程校准系数", "", "", ""),
    ic("i13027", "Span calibration time", "量程校准时间", "", CAL_TIME, ""),
    ic("i13028", "Span calibration concentration (span gas)", "量程校准浓度", "", "", ""),
    ic("i13029", "Span calibration raw value", "量程校准原始值", "", "", ""),
    // Water analyzer parameters.
    ic("i13101", "Zero calibration time", "零点校准时间", "", CAL_TIME, ""),
    ic("i13103", "Intercept 1 (second curve; source unit \"L\")", "截距1", "", "N5.2", ""),
    ic("i13104", "Zero calibration concentration", "零点校准浓度", MG_L, "", ""),
    ic("i13105", "Zero calibration raw value (e.g. absorbance)", "零点校准原始值", "", "", ""),
    ic("i13106", "Zero calibration drift", "零点校准漂移", "%", "N2.1", ""),
    ic("i13107", "Span calibration time", "量程校准时间", "", CAL_TIME, ""),
    ic("i13108", "Span calibration concentration", "量程校准浓度", MG_L, "", ""),
    ic("i13109", "Span calibration concentration 1", "量程校准浓度1", MG_L, "", ""),
    ic("i13110", "Span calibration raw value", "量程校准原始值", "", "", ""),
    ic("i13111", "Span calibration raw value 1", "量程校准原始值1", "", "", ""),
    ic("i13112", "Span calibration drift", "量程校准漂移", "%", "N2.1", ""),
    ic("i13113", "Span calibration drift 1", "量程校准漂移1", "%", "N2.1", ""),
    ic("i13115", "Raw measurement value", "测量原始值", "", "", ""),
    ic("i13116", "Current range", "当前量程", MG_L, "", ""),
    ic("i13118", "Slope 1", "斜率1", "", "N5.2", ""),
    ic("i13119", "Correction factor (corrected slope)", "校正因子(修正斜率)", "", "", ""),
    ic("i13120", "Correction factor (corrected intercept)", "修正因子(修正截距)", "", "", ""),
    ic("i13122", "Digestion temperature (alternative to i13004)", "消解温度", "°C", "", ""),
    ic("i13123", "Cooling time", "冷却时长", "min", "", ""),
    ic("i13124", "Ammonium ferrous sulphate standardisation time", "硫酸亚铁铵标定时间", "min", "", ""),
    ic("i13125", "Ammonium ferrous sulphate concentration", "硫酸亚铁铵浓度", "g/L", "", ""),
    ic("i13126", "Blank ammonium ferrous sulphate volume", "空白硫酸亚铁铵标准溶液体积", "L", "", ""),
    ic("i13127", "Potassium dichromate concentration", "重铬酸钾浓度", "g/L", "", ""),
    ic("i13128", "Standard check time", "标样核查时间", "", CAL_TIME, ""),
    ic("i13129", "Standard check deviation", "标样核查偏差百分比", "%", "N2.1", ""),
    ic("i13130", "Standard check reference concentration", "标样核查标液浓度", MG_L, "", ""),
    // DAU.
    ic("i22004", "DAU communication state", "数采仪通讯状态", "", "N2", NORMAL_ABNORMAL),
    ic(
        "i22005",
        "DAU alarm detail",
        "数采仪报警详情",
        "",
        "N2",
        "0 normal (正常), 1 mains power lost (市电中断), 2 automatic time sync failed (自动对时未成功)",
    ),
    ic("i23002", "Reference oxygen content", "基准氧含量", "", "N2.2", ""),
    ic("i23003", "Velocity field coefficient (Kv)", "速度场系数", "", "N2.4", ""),
    ic("i23004", "Pitot tube coefficient (Kp)", "皮托管系数", "", "N2.2", ""),
    ic("i23005", "Flue-gas humidity range", "烟气湿度量程", "%", "N5.2", ""),
    ic("i23006", "Flue-gas temperature range upper limit", "烟气温度量程上限", "°C", "N5.2", ""),
    ic("i23007", "Flue-gas temperature range lower limit", "烟气温度量程下限", "°C", "N5.2", ""),
    ic("i23008", "Flue-gas pressure range upper limit", "烟气压力量程上限", "kPa", "N5.2", ""),
    ic("i23009", "Flue-gas pressure range lower limit", "烟气压力量程下限", "kPa", "N5.2", ""),
    ic("i23010", "Flue-gas velocity range", "烟气流速量程", "m/s", "N5.2", ""),
    ic("i23011", "Local atmospheric pressure (Hebei, Pa)", "本地大气压（河北）", "Pa", "N5.2", ""),
    // Door access (auxiliary parameters).
    ic("i3310A", "Door access ID", "门禁编码", "", "C30", ""),
    ic("i3310B", "Door opening method", "开门方式", "", "N2", ""),
    ic("i3310C", "Door opening type", "开门类型", "", "N2", ""),
    ic("i3310D", "Door opening code", "开门编码", "", "C30", ""),
    ic("i3310E", "Door opening time", "开门时间", "", CAL_TIME, ""),
    ic("i3310F", "Door state", "门状态", "", "N2", ""),
    ic("i3310G", "IC card number", "IC卡卡号", "", "C32", ""),
    ic("i3310H", "Person photo number", "人员图像编号", "", "C12", ""),
    ic("i3310I", "Person photo address", "人员图像地址", "", "C100", ""),
    ic("i3310J", "Person name", "人员姓名", "", "C10", ""),
    // Logs.
    ic("i41001", "Door open/close record", "开关门记录", "", "C890", ""),
    ic("i41002", "Power-loss record", "断电记录", "", "C890", ""),
    // Water sampler.
    ic("i42001", "Sampler device state", "设备状态", "", "N2", ""),
    ic("i42002", "Sampler system time", "系统时间", "", CAL_TIME, ""),
    ic("i42003", "Sampler door state", "门禁状态", "", "N2", ""),
    ic("i42004", "Mixing bucket A working state", "混匀桶A桶工作状态", "", "N2", ""),
    ic("i42005", "Mixing bucket B working state", "混匀桶B桶工作状态", "", "N2", ""),
    ic("i42006", "Sampler exception state", "异常状态", "", "N2", ""),
    ic("i43001", "Sampling mode", "采样模式", "", "N2", ""),
    ic("i43002", "Sample retention mode", "留样模式", "", "N2", ""),
    ic("i43003", "Sample volume", "采样量", "mL", "N4", ""),
    ic("i43004", "Sampling interval", "采样间隔", "min", "N4", ""),
    ic("i43005", "Retained sample volume", "留样量", "mL", "N4", ""),
    ic("i43006", "Retention bottle number", "留样瓶编号", "", "N2", ""),
    // Video.
    ic("i52001", "Video alarm", "视频报警", "", "N2", ""),
];

/// Looks up a site-information code in [`INFO_CODES`] (national Table B.10).
///
/// See [`info_code_in`] for the matching rules.
#[must_use]
pub fn info_code(code: &str) -> Option<&'static InfoCodeInfo> {
    info_code_in(INFO_CODES, code)
}

/// Looks up a site-information code in `table` (e.g. [`INFO_CODES`] or [`INFO_CODES_HEBEI`]).
///
/// Order of matching:
/// 1. exact match of a row's code;
/// 2. a code starting with an upper-case `I` is retried with `i`, so the printed `I33400`
///    finds `i33400` (all stored codes start with a lower-case `i`);
/// 3. pattern rows (`i3331x`), see [`InfoCodeInfo::matches`].
///
/// To consult a provincial table with fall-back to the national one:
/// `info_code_in(INFO_CODES_HEBEI, code).or_else(|| info_code(code))`.
#[must_use]
pub fn info_code_in<'t>(table: &'t [InfoCodeInfo], code: &str) -> Option<&'t InfoCodeInfo> {
    if let Some(row) = table.iter().find(|row| row.code == code) {
        return Some(row);
    }
    // Every stored code starts with a lower-case `i`; retry `I…` (the printed `I33400`) as `i…`.
    if let Some(buf) = lower_leading_i(code) {
        return core::str::from_utf8(&buf).ok().and_then(|lower| info_code_in(table, lower));
    }
    table.iter().find(|row| row.is_pattern() && row.matches(code))
}

/// `code` with its leading `I` turned into `i`, if it is a six-byte code starting with `I`.
fn lower_leading_i(code: &str) -> Option<[u8; 6]> {
    let mut buf: [u8; 6] = code.as_bytes().try_into().ok()?;
    if buf[0] != b'I' {
        return None;
    }
    buf[0] = b'i';
    Some(buf)
}

/// Classifies a site-information code from its characters (Tables B.8 and B.9), whether or not
/// it is in any table.
///
/// The code must be six ASCII alphanumeric characters starting with `i` (or `I`, as in the
/// printed `I33400`). The second character gives the [`DeviceClass`] (`1` analyzer, `2` DAU,
/// `3` auxiliary, anything else `Other`); the third the [`InfoCategory`] (`1` log, `2` state,
/// `3` parameter, anything else `Other`). Returns `None` for anything else.
///
/// ```
/// use hj212_codec::tables::{info_category, DeviceClass, InfoCategory};
/// assert_eq!(info_category("i12001"), Some((DeviceClass::Analyzer, InfoCategory::State)));
/// assert_eq!(info_category("i3310A"), Some((DeviceClass::Auxiliary, InfoCategory::Parameter)));
/// assert_eq!(info_category("w01018"), None);
/// ```
#[must_use]
pub fn info_category(code: &str) -> Option<(DeviceClass, InfoCategory)> {
    let b = code.as_bytes();
    if b.len() != 6 || !(b[0] == b'i' || b[0] == b'I') || !b.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let device = match b[1] {
        b'1' => DeviceClass::Analyzer,
        b'2' => DeviceClass::Dau,
        b'3' => DeviceClass::Auxiliary,
        _ => DeviceClass::Other,
    };
    let category = match b[2] {
        b'1' => InfoCategory::Log,
        b'2' => InfoCategory::State,
        b'3' => InfoCategory::Parameter,
        _ => InfoCategory::Other,
    };
    Some((device, category))
}

// ---------------------------------------------------------------------------------------------
// Dynamic-control categories of site-information codes
// ---------------------------------------------------------------------------------------------

/// What a site-information code tells about an analyzer under dynamic control (动态管控): the
/// groups of the project's domain notes (`dynamic-control-and-analyzers.md` §3.7).
///
/// This is a different axis from [`InfoCategory`]: that one is read from the code's characters
/// (log, state, parameter); this one comes from a table and depends on the table in force, since
/// provinces give the same code different meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DynamicControl {
    /// Working state and alarms of the analyzer (工作状态, 报警), and the CEMS working parameters
    /// (工作参数: ranges, raw values, dilution, smoothing, flue-gas constants).
    Working,
    /// Running parameters (运行参数): range, precision, interval, digestion, cooling, raw signal,
    /// detection limit, titration reagents.
    Running,
    /// Calibration parameters (校准参数): calibration times, slope and intercept, zero and span
    /// calibration concentrations, raw values and drifts, correction factors.
    Calibration,
    /// Standard-check parameters (标样核查参数): check time, deviation, reference concentration.
    StandardCheck,
}

impl DynamicControl {
    /// A short stable name: `working`, `running`, `calibration`, `standard_check`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Working => "working",
            Self::Running => "running",
            Self::Calibration => "calibration",
            Self::StandardCheck => "standard_check",
        }
    }
}

/// One row of a dynamic-control table: an `i…` code (or an `x` pattern, as in
/// [`InfoCodeInfo::matches`]) and its category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicControlRow {
    /// The code.
    pub code: &'static str,
    /// Its category.
    pub category: DynamicControl,
}

const fn dc(code: &'static str, category: DynamicControl) -> DynamicControlRow {
    DynamicControlRow { code, category }
}

/// Dynamic-control categories of the national codes (HJ 212-2017 Table B.10).
///
/// The 2017 table covers only a thin slice of dynamic control (domain notes §2.2): the analyzer's
/// state and alarms (`i12001`–`i12003`), its running parameters (`i13001`–`i13005`, `i13009`) and
/// calibration (`i13006`–`i13008`). It has no standard-check codes; HJ 212-2025 carries standard
/// checks in CN 2062 instead.
pub static DYNAMIC_CONTROL: &[DynamicControlRow] = &[
    dc("i12001", DynamicControl::Working),
    dc("i12002", DynamicControl::Working),
    dc("i12003", DynamicControl::Working),
    dc("i13001", DynamicControl::Running),
    dc("i13002", DynamicControl::Running),
    dc("i13003", DynamicControl::Running),
    dc("i13004", DynamicControl::Running),
    dc("i13005", DynamicControl::Running),
    dc("i13006", DynamicControl::Calibration),
    dc("i13007", DynamicControl::Calibration),
    dc("i13008", DynamicControl::Calibration),
    dc("i13009", DynamicControl::Running),
];

/// Dynamic-control categories of the Hebei extension ([`INFO_CODES_HEBEI`]), consulted before
/// [`DYNAMIC_CONTROL`].
///
/// From the domain notes §3.2 and §3.7: water analyzer state and alarms `i12101`–`i12103`, gas
/// analyzer state and alarms `i12007`–`i12009`; water running parameters (`i13115` raw signal,
/// `i13116` current range, `i13122`–`i13127`), calibration (`i13101`–`i13113`, `i13118`–`i13120`)
/// and standard check (`i13128`–`i13130`). The CEMS list of §3.7 ("working parameters") is split:
/// its zero and span calibration codes (`i13010`, `i13021`–`i13029`) are calibration, the rest
/// (`i13011`–`i13020`, flue-gas constants `i23002`–`i23013`) working.
pub static DYNAMIC_CONTROL_HEBEI: &[DynamicControlRow] = &[
    // Gas analyzer state and alarm.
    dc("i12007", DynamicControl::Working),
    dc("i12008", DynamicControl::Working),
    dc("i12009", DynamicControl::Working),
    // Water analyzer state and alarm.
    dc("i12101", DynamicControl::Working),
    dc("i12102", DynamicControl::Working),
    dc("i12103", DynamicControl::Working),
    // Gas (CEMS) parameters.
    dc("i13010", DynamicControl::Calibration),
    dc("i13011", DynamicControl::Working),
    dc("i13012", DynamicControl::Working),
    dc("i13013", DynamicControl::Working),
    dc("i13014", DynamicControl::Working),
    dc("i13015", DynamicControl::Working),
    dc("i13016", DynamicControl::Working),
    dc("i13017", DynamicControl::Working),
    dc("i13018", DynamicControl::Working),
    dc("i13019", DynamicControl::Working),
    dc("i13020", DynamicControl::Working),
    dc("i13021", DynamicControl::Calibration),
    dc("i13022", DynamicControl::Calibration),
    dc("i13023", DynamicControl::Calibration),
    dc("i13024", DynamicControl::Calibration),
    dc("i13025", DynamicControl::Calibration),
    dc("i13026", DynamicControl::Calibration),
    dc("i13027", DynamicControl::Calibration),
    dc("i13028", DynamicControl::Calibration),
    dc("i13029", DynamicControl::Calibration),
    // Water analyzer calibration.
    dc("i13101", DynamicControl::Calibration),
    dc("i13103", DynamicControl::Calibration),
    dc("i13104", DynamicControl::Calibration),
    dc("i13105", DynamicControl::Calibration),
    dc("i13106", DynamicControl::Calibration),
    dc("i13107", DynamicControl::Calibration),
    dc("i13108", DynamicControl::Calibration),
    dc("i13109", DynamicControl::Calibration),
    dc("i13110", DynamicControl::Calibration),
    dc("i13111", DynamicControl::Calibration),
    dc("i13112", DynamicControl::Calibration),
    dc("i13113", DynamicControl::Calibration),
    dc("i13118", DynamicControl::Calibration),
    dc("i13119", DynamicControl::Calibration),
    dc("i13120", DynamicControl::Calibration),
    // Water analyzer running parameters.
    dc("i13115", DynamicControl::Running),
    dc("i13116", DynamicControl::Running),
    dc("i13122", DynamicControl::Running),
    dc("i13123", DynamicControl::Running),
    dc("i13124", DynamicControl::Running),
    dc("i13125", DynamicControl::Running),
    dc("i13126", DynamicControl::Running),
    dc("i13127", DynamicControl::Running),
    // Water analyzer standard check.
    dc("i13128", DynamicControl::StandardCheck),
    dc("i13129", DynamicControl::StandardCheck),
    dc("i13130", DynamicControl::StandardCheck),
    // Flue-gas working parameters.
    dc("i23002", DynamicControl::Working),
    dc("i23003", DynamicControl::Working),
    dc("i23004", DynamicControl::Working),
    dc("i23005", DynamicControl::Working),
    dc("i23006", DynamicControl::Working),
    dc("i23007", DynamicControl::Working),
    dc("i23008", DynamicControl::Working),
    dc("i23009", DynamicControl::Working),
    dc("i23010", DynamicControl::Working),
    dc("i23011", DynamicControl::Working),
    dc("i23012", DynamicControl::Working),
    dc("i23013", DynamicControl::Working),
];

/// The dynamic-control category of `code` in `table` alone (no fall-back), matching as
/// [`info_code_in`] does (exact, then `I…` as `i…`).
///
/// To consult a provincial table with fall-back to the national one:
/// `dynamic_control_in(DYNAMIC_CONTROL_HEBEI, code).or_else(|| dynamic_control(code))`.
///
/// ```
/// use hj212_codec::tables::{dynamic_control, dynamic_control_in, DynamicControl, DYNAMIC_CONTROL_HEBEI};
/// assert_eq!(dynamic_control("i13008"), Some(DynamicControl::Calibration));
/// assert_eq!(dynamic_control("i13128"), None);
/// assert_eq!(dynamic_control_in(DYNAMIC_CONTROL_HEBEI, "i13128"), Some(DynamicControl::StandardCheck));
/// ```
#[must_use]
pub fn dynamic_control_in(table: &[DynamicControlRow], code: &str) -> Option<DynamicControl> {
    if let Some(row) = table.iter().find(|row| row.code == code) {
        return Some(row.category);
    }
    let buf = lower_leading_i(code)?;
    let lower = core::str::from_utf8(&buf).ok()?;
    table.iter().find(|row| row.code == lower).map(|row| row.category)
}

/// The dynamic-control category of `code` under the national table ([`DYNAMIC_CONTROL`]).
#[must_use]
pub fn dynamic_control(code: &str) -> Option<DynamicControl> {
    dynamic_control_in(DYNAMIC_CONTROL, code)
}

// ---------------------------------------------------------------------------------------------
// Command codes (Table 9 and the other versions)
// ---------------------------------------------------------------------------------------------

/// Protocol version a table entry belongs to.
///
/// The version is carried in the header `Flag` bits V5..V0 (`Flag >> 2`): `0` = HJ/T 212-2005,
/// `1` = HJ 212-2017, `2` = HJ 212-2025. Ordered by age, so ranges can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TableVersion {
    /// HJ/T 212-2005. Its text was not available; 2005 entries come from implementations.
    V2005,
    /// HJ 212-2017.
    V2017,
    /// HJ 212-2025 (in force since 2026-01-01). Its text was not available; entries are provisional.
    V2025,
}

impl TableVersion {
    /// The version encoded in a header `Flag` value (bits V5..V0 = `flag >> 2`), if known.
    ///
    /// Note that 2005 packets often carry no `Flag` at all, and 2005 flags only use bits 0–1.
    #[must_use]
    pub const fn from_flag(flag: u8) -> Option<Self> {
        match flag >> 2 {
            0 => Some(Self::V2005),
            1 => Some(Self::V2017),
            2 => Some(Self::V2025),
            _ => None,
        }
    }
}

/// How a command is exchanged (HJ 212-2017 §6.5, §6.6.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommandClass {
    /// Request (请求命令): platform → site, answered by 9011, optional data, then 9012.
    Request,
    /// Upload (上传命令): site → platform, answered by 9014 if the Flag asks for it.
    Upload,
    /// Notification (通知命令): answered by 9013.
    Notification,
    /// Interaction / answer (交互命令): 9011–9014.
    Answer,
    /// The same CN is a platform request and a site upload (the site's reply data, and for some
    /// CNs also spontaneous uploads).
    RequestOrUpload,
}

/// One command code (CN) with the version range in which it has this meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// The command number, e.g. `2011`.
    pub cn: u16,
    /// English name (a translation).
    pub name_en: &'static str,
    /// Chinese name. For 2017 entries, the request name (or the only name) from Table 9 verbatim;
    /// for 2005 and 2025 entries, the name used by implementations (the texts were not available).
    pub name_zh: &'static str,
    /// The Chinese name of the site-to-platform direction under the same CN, if it has its own
    /// (Table 9's 上传… names for 2017; the implementation's name for 2025's 1014).
    pub name_zh_upload: Option<&'static str>,
    /// How the command is exchanged.
    pub class: CommandClass,
    /// First version with this meaning.
    pub since: TableVersion,
    /// First version in which this meaning no longer exists, or `None` if still current.
    pub removed_in: Option<TableVersion>,
    /// `true` for entries not verified against a standard's text: every 2025-only entry, which
    /// comes from public implementations, and the 2005-only entries, which come from 2005-era
    /// implementations.
    pub provisional: bool,
}

impl CommandInfo {
    /// Whether this entry applies to `version`.
    #[must_use]
    pub fn valid_in(&self, version: TableVersion) -> bool {
        self.since <= version && self.removed_in.is_none_or(|end| version < end)
    }
}

#[allow(clippy::too_many_arguments)]
const fn cmd(
    cn: u16,
    name_en: &'static str,
    name_zh: &'static str,
    name_zh_upload: Option<&'static str>,
    class: CommandClass,
    since: TableVersion,
    removed_in: Option<TableVersion>,
    provisional: bool,
) -> CommandInfo {
    CommandInfo { cn, name_en, name_zh, name_zh_upload, class, since, removed_in, provisional }
}

use CommandClass::{Answer, Notification, Request, RequestOrUpload, Upload};
use TableVersion::{V2005, V2017, V2025};

/// Command codes (CN), 53 entries: HJ 212-2017 §6.6.5 Table 9 (命令编码表) in full, the
/// HJ/T 212-2005-only codes, and provisional HJ 212-2025 codes.
///
/// One entry per (CN, meaning); use [`command`] for a version-aware lookup. Two CNs change
/// meaning between versions:
/// * **1001**: 2005 "set over-limit alarm time" (`WarnTime`); reserved in 2017; 2025 "upload DAU
///   hardware serial numbers" (`i23005`–`i23008`).
/// * **3014**: 2005 "set sampling schedule" (`PolId`, list of `CTime` hours); 2017 "comparison
///   sampling" (the schedule moved to 3016 / 3017).
///
/// Reserved ranges in 2017: 1001–1010, 1073–1999, 2082–2999, 3022–3999, 9015–9999. HJ 212-2025
/// uses some of them (1001, 1002, 1014, 2013, 2052, 2062, 2111, 3022, 3024, 9015).
///
/// Sources and caveats:
/// * 2017: Table 9, verbatim names (请求 name in `name_zh`, 上传 name in `name_zh_upload`).
/// * 2005-only (1001, 1021/1022, 1031/1032, 1041/1042, 2071/2072, 3014 schedule): reconstructed
///   from 2005-era implementations (spec digest §11); CNs shared with 2017 are marked `since`
///   2005 per the same sources. In 2005, 1072 carried the new password as `PW=` inside CP, and
///   3013 is also described as "equipment operation" (设备操作).
/// * 2025: from one public C# implementation (spec digest §13, `hj212-2025.md` §5), unverified.
///   That implementation also marks 2061 noise hourly data, 3014, 3015, 3016 and 3017 as deleted
///   in 2025; since that is unconfirmed, those 2017 entries are kept valid in 2025. 3011 is
///   "zero / span calibration and adjustment" with a `CalibrationType` field in 2025.
/// * Vendor login / heartbeat 9021 / 9022 seen with 2005 devices are not included.
pub static COMMANDS: &[CommandInfo] = &[
    // Initialisation.
    cmd(1000, "Set timeout and retry count", "设置超时时间及重发次数", None, Request, V2005, None, false),
    cmd(1001, "Set over-limit alarm time (WarnTime)", "设置超限报警时间", None, Request, V2005, Some(V2017), true),
    cmd(1001, "Upload DAU hardware serial numbers", "上传数采仪硬件序号", None, Notification, V2025, None, true),
    cmd(1002, "Set DAU MN", "设置数采仪MN编码", None, Request, V2025, None, true),
    // Parameters.
    cmd(1011, "Get / upload site time", "提取现场机时间", Some("上传现场机时间"), RequestOrUpload, V2005, None, false),
    cmd(1012, "Set site time", "设置现场机时间", None, Request, V2005, None, false),
    cmd(1013, "Site time calibration request", "现场机时间校准请求", None, Notification, V2017, None, false),
    cmd(
        1014,
        "Key exchange: site asks for a key (answered by 9013) / platform sets a new key",
        "上位机下发新密钥",
        Some("现场机获取新密钥"),
        Request,
        V2025,
        None,
        true,
    ),
    cmd(
        1021,
        "Get / upload pollutant alarm thresholds",
        "提取污染物报警门限值",
        None,
        RequestOrUpload,
        V2005,
        Some(V2017),
        true,
    ),
    cmd(1022, "Set pollutant alarm thresholds", "设置污染物报警门限值", None, Request, V2005, Some(V2017), true),
    cmd(
        1031,
        "Get / upload upper-computer (alarm target) address",
        "提取上位机地址",
        None,
        RequestOrUpload,
        V2005,
        Some(V2017),
        true,
    ),
    cmd(1032, "Set upper-computer (alarm target) address", "设置上位机地址", None, Request, V2005, Some(V2017), true),
    cmd(
        1041,
        "Get / upload daily data report time",
        "提取数据上报时间",
        None,
        RequestOrUpload,
        V2005,
        Some(V2017),
        true,
    ),
    cmd(1042, "Set daily data report time", "设置数据上报时间", None, Request, V2005, Some(V2017), true),
    cmd(
        1061,
        "Get / upload real-time data interval",
        "提取实时数据间隔",
        Some("上传实时数据间隔"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(1062, "Set real-time data interval", "设置实时数据间隔", None, Request, V2005, None, false),
    cmd(
        1063,
        "Get / upload minute-data interval",
        "提取分钟数据间隔",
        Some("上传分钟数据间隔"),
        RequestOrUpload,
        V2017,
        None,
        false,
    ),
    cmd(1064, "Set minute-data interval", "设置分钟数据间隔", None, Request, V2017, None, false),
    cmd(1072, "Set site access password", "设置现场机密码", None, Request, V2005, None, false),
    // Data.
    cmd(
        2011,
        "Real-time pollutant data: start / upload",
        "取污染物实时数据",
        Some("上传污染物实时数据"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(2012, "Stop real-time pollutant data", "停止察看污染物实时数据", None, Notification, V2005, None, false),
    cmd(
        2013,
        "Raw monitoring data: get / upload",
        "取原始监测数据",
        Some("上传原始监测数据"),
        RequestOrUpload,
        V2025,
        None,
        true,
    ),
    cmd(
        2021,
        "Equipment running state: start / upload",
        "取设备运行状态数据",
        Some("上传设备运行状态数据"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(2022, "Stop equipment running state", "停止察看设备运行状态", None, Notification, V2005, None, false),
    cmd(
        2031,
        "Daily pollutant history: get / upload",
        "取污染物日历史数据",
        Some("上传污染物日历史数据"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(
        2041,
        "Daily equipment running-time history: get / upload",
        "取设备运行时间日历史数据",
        Some("上传设备运行时间日历史数据"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(
        2051,
        "Minute pollutant data: get / upload",
        "取污染物分钟数据",
        Some("上传污染物分钟数据"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(
        2052,
        "Noise single-measurement data: get / upload",
        "取噪声单次测量数据",
        Some("上传噪声单次测量数据"),
        RequestOrUpload,
        V2025,
        None,
        true,
    ),
    cmd(
        2061,
        "Hourly pollutant data: get / upload",
        "取污染物小时数据",
        Some("上传污染物小时数据"),
        RequestOrUpload,
        V2005,
        None,
        false,
    ),
    cmd(
        2062,
        "Automatic standard-sample check / calibration data: get / upload",
        "取自动标样核查校准数据",
        Some("上传自动标样核查校准数据"),
        RequestOrUpload,
        V2025,
        None,
        true,
    ),
    cmd(
        2071,
        "Pollutant alarm records: get / upload",
        "取污染物报警记录",
        None,
        RequestOrUpload,
        V2005,
        Some(V2017),
        true,
    ),
    cmd(2072, "Alarm event upload", "上传报警事件", None, Upload, V2005, Some(V2017), true),
    cmd(2081, "Upload DAU power-on time", "上传数采仪开机时间", None, Upload, V2017, None, false),
    cmd(2111, "Upload furnace temperature 5-minute mean", "上传炉膛温度5min均值", None, Upload, V2025, None, true),
    // Control.
    cmd(3011, "Zero and span calibration", "零点校准量程校准", None, Request, V2005, None, false),
    cmd(3012, "Immediate sampling", "即时采样", None, Request, V2005, None, false),
    cmd(3013, "Start cleaning / back-blowing", "启动清洗/反吹", None, Request, V2005, None, false),
    cmd(
        3014,
        "Set analyzer sampling schedule (CTime hours)",
        "设置采样时间周期",
        None,
        Request,
        V2005,
        Some(V2017),
        true,
    ),
    cmd(3014, "Comparison sampling", "比对采样", None, Request, V2017, None, false),
    cmd(
        3015,
        "Over-limit sample retention / upload retention info",
        "超标留样",
        Some("上传超标留样信息"),
        RequestOrUpload,
        V2017,
        None,
        false,
    ),
    cmd(3016, "Set sampling period", "设置采样时间周期", None, Request, V2017, None, false),
    cmd(
        3017,
        "Get / upload sampling period",
        "提取采样时间周期",
        Some("上传采样时间周期"),
        RequestOrUpload,
        V2017,
        None,
        false,
    ),
    cmd(
        3018,
        "Get / upload sample-output time",
        "提取出样时间",
        Some("上传出样时间"),
        RequestOrUpload,
        V2017,
        None,
        false,
    ),
    cmd(
        3019,
        "Get / upload device unique ID",
        "提取设备唯一标识",
        Some("上传设备唯一标识"),
        RequestOrUpload,
        V2017,
        None,
        false,
    ),
    cmd(
        3020,
        "Get / upload site information",
        "提取现场机信息",
        Some("上传现场机信息"),
        RequestOrUpload,
        V2017,
        None,
        false,
    ),
    cmd(3021, "Set site parameter", "设置现场机参数", None, Request, V2017, None, false),
    cmd(3022, "Issue immediate sample-retention task", "下发即时留样任务", None, Request, V2025, None, true),
    cmd(3024, "Start standard-sample check", "启动标样核查", None, Request, V2025, None, true),
    // Interaction.
    cmd(9011, "Request answer (QnRtn)", "请求应答", None, Answer, V2005, None, false),
    cmd(9012, "Execution result (ExeRtn)", "执行结果", None, Answer, V2005, None, false),
    cmd(9013, "Notification answer", "通知应答", None, Answer, V2005, None, false),
    cmd(9014, "Data answer", "数据应答", None, Answer, V2005, None, false),
    cmd(9015, "Heartbeat", "心跳包", None, Notification, V2025, None, true),
];

/// Looks up the meaning of `cn` under protocol `version`.
///
/// Returns `None` if the CN is not defined in that version (e.g. 1001 under 2017, where it is
/// reserved). Vendor CNs are never found.
///
/// ```
/// use hj212_codec::tables::{command, TableVersion};
/// assert_eq!(command(3014, TableVersion::V2017).unwrap().name_zh, "比对采样");
/// assert_eq!(command(3014, TableVersion::V2005).unwrap().name_zh, "设置采样时间周期");
/// assert!(command(1001, TableVersion::V2017).is_none());
/// ```
#[must_use]
pub fn command(cn: u16, version: TableVersion) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|row| row.cn == cn && row.valid_in(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_unique(codes: &[&str], allowed_duplicates: &[&str]) {
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                if a == b {
                    assert!(allowed_duplicates.contains(a), "duplicate code {a}");
                }
            }
        }
    }

    fn codes(table: &[PollutantInfo]) -> [&'static str; 128] {
        assert!(table.len() <= 128);
        let mut out = [""; 128];
        for (slot, row) in out.iter_mut().zip(table) {
            *slot = row.code;
        }
        out
    }

    fn count_nonempty(codes: &[&str]) -> usize {
        codes.iter().filter(|c| !c.is_empty()).count()
    }

    #[test]
    fn row_counts() {
        assert_eq!(WATER.len(), 63);
        assert_eq!(GAS.len(), 121);
        assert_eq!(NOISE.len(), 12);
        assert_eq!(PROCESS_WATER.len(), 90);
        assert_eq!(PROCESS_GAS.len(), 55);
        assert_eq!(SYSTEMS.len(), 20);
        assert_eq!(INFO_CODES.len(), 38);
        assert_eq!(INFO_CODES_HEBEI.len(), 89);
        assert_eq!(COMMANDS.len(), 53);
    }

    #[test]
    fn pollutant_codes_unique() {
        for table in [WATER, GAS, NOISE] {
            let c = codes(table);
            assert_eq!(count_nonempty(&c), table.len());
            assert_unique(&c[..table.len()], &[]);
        }
        // Across the three tables too.
        for row in WATER.iter().chain(GAS).chain(NOISE) {
            assert!(core::ptr::eq(pollutant(row.code).unwrap(), row), "{}", row.code);
        }
    }

    #[test]
    fn process_codes_unique_except_printed_duplicates() {
        let c = codes(PROCESS_WATER);
        assert_unique(&c[..PROCESS_WATER.len()], &["e701xx"]);
        let c = codes(PROCESS_GAS);
        assert_unique(&c[..PROCESS_GAS.len()], &["g119xx"]);
        assert_eq!(PROCESS_WATER.iter().filter(|r| r.code == "e701xx").count(), 2);
        assert_eq!(PROCESS_GAS.iter().filter(|r| r.code == "g119xx").count(), 2);
    }

    #[test]
    fn codes_well_formed() {
        for row in WATER {
            assert!(row.code.len() == 6 && row.code.starts_with('w'), "{}", row.code);
            if let Some(old) = row.code_2005 {
                assert!(old == "B01" || (old.len() == 3 && old.bytes().all(|b| b.is_ascii_digit())), "{old}");
            }
        }
        for row in GAS {
            assert!(row.code.len() == 6 && row.code.starts_with('a'), "{}", row.code);
            if let Some(old) = row.code_2005 {
                let b = old.as_bytes();
                let ok = old == "B02"
                    || (b.len() == 2 && b.iter().all(u8::is_ascii_digit))
                    || (b.len() == 3 && b[0] == b'S' && b[1] == b'0');
                assert!(ok, "{old}");
            }
        }
        for row in PROCESS_WATER.iter().chain(PROCESS_GAS) {
            assert!(row.code.len() == 6 && row.code.ends_with("xx"), "{}", row.code);
            assert!(process(row.code).is_some(), "{}", row.code);
        }
        for row in SYSTEMS {
            assert_eq!(row.code.len(), 2);
        }
    }

    #[test]
    fn codes_2005_unique() {
        let mut all = [""; 128];
        let mut n = 0;
        for row in WATER.iter().chain(GAS) {
            if let Some(old) = row.code_2005 {
                all[n] = old;
                n += 1;
            }
        }
        assert_unique(&all[..n], &[]);
        for row in WATER.iter().chain(GAS) {
            if let Some(old) = row.code_2005 {
                assert_eq!(pollutant_from_2005(old, None).unwrap().code, row.code);
            }
        }
    }

    #[test]
    fn well_known_pollutants() {
        let cod = pollutant("w01018").unwrap();
        assert_eq!(cod.name_zh, "化学需氧量");
        assert_eq!(cod.code_2005, Some("011"));
        assert_eq!(cod.unit, "mg/L");
        assert_eq!(cod.emission_unit, Some("kg"));
        assert_eq!(cod.data_type, "N5.1");

        let so2 = pollutant("a21026").unwrap();
        assert_eq!(so2.name_zh, "二氧化硫");
        assert_eq!(so2.code_2005, Some("02"));

        assert_eq!(pollutant("w21003").unwrap().code_2005, Some("060"));
        assert_eq!(pollutant("a34013").unwrap().code_2005, Some("01"));
        assert_eq!(pollutant("a00000").unwrap().code_2005, Some("B02"));
        assert_eq!(pollutant("LA").unwrap().unit, "dB");
        assert_eq!(pollutant("LMn").unwrap().name_zh, "最小的瞬时声级");
        // Printed ng/m³ erratum kept.
        assert_eq!(pollutant("a21001").unwrap().unit, "ng/m³");
        assert!(pollutant("a05024").is_none());
        assert!(pollutant("").is_none());
        assert!(pollutant("e10101").is_none());
    }

    #[test]
    fn codes_2005() {
        assert_eq!(pollutant_from_2005("S01", None).unwrap().code, "a19001");
        assert_eq!(pollutant_from_2005("S01", Some("31")).unwrap().code, "a19001");
        assert_eq!(pollutant_from_2005("01", None).unwrap().code, "a34013");
        assert_eq!(pollutant_from_2005("011", None).unwrap().code, "w01018");
        assert_eq!(pollutant_from_2005("011", Some("32")).unwrap().code, "w01018");
        assert_eq!(pollutant_from_2005("B01", Some("32")).unwrap().code, "w00000");
        assert_eq!(pollutant_from_2005("B02", Some("31")).unwrap().code, "a00000");
        // ST selects the medium.
        assert!(pollutant_from_2005("02", Some("32")).is_none());
        assert!(pollutant_from_2005("550", Some("22")).is_none());
        // Zero-padded gas code under a gas ST.
        assert_eq!(pollutant_from_2005("011", Some("22")).unwrap().code, "a21022");
        assert_eq!(pollutant_from_2005("010", Some("31")).unwrap().code, "a21001");
        assert_eq!(pollutant_from_2005("010", Some("32")).unwrap().code, "w01017");
        assert_eq!(pollutant_from_2005("010", Some("91")).unwrap().code, "w01017");
        // 16 (benzene series) has no 2017 row; S09 does not exist.
        assert!(pollutant_from_2005("16", None).is_none());
        assert!(pollutant_from_2005("S09", None).is_none());
        assert!(pollutant_from_2005("s01", None).is_none());
    }

    #[test]
    fn process_lookup() {
        assert_eq!(process("e10101").unwrap().name_zh, "进水口流量");
        assert_eq!(process("e10199").unwrap().code, "e101xx");
        assert_eq!(process("e101xx").unwrap().code, "e101xx");
        assert!(process("e10100").is_none());
        assert!(process("e1010").is_none());
        assert!(process("e61101").is_none());
        assert_eq!(process("e70102").unwrap().name_zh, "污水提升泵");
        assert_eq!(process("g11901").unwrap().name_zh, "脱硫率");
        assert_eq!(process("g13401").unwrap().name_zh, "出口湿度");
        assert!(process("w01018").is_none());
    }

    #[test]
    fn systems() {
        let s = system("32").unwrap();
        assert_eq!(s.name_zh, "地表水体环境污染源");
        assert!(s.in_2005);
        assert!(!system("39").unwrap().in_2005);
        assert!(system("91").is_some());
        assert!(system("80").is_none());
        let c: [&str; 20] = core::array::from_fn(|i| SYSTEMS[i].code);
        assert_unique(&c, &[]);
        assert_eq!(SYSTEMS.iter().filter(|s| s.in_2005).count(), 13);
        assert_eq!(system("44").unwrap().name_zh, "用电监控");
        assert!(system("45").is_some() && !system("45").unwrap().in_2005);
        assert!(SYSTEMS_2025.iter().all(|s| SYSTEMS.iter().all(|t| t.code != s.code)));
    }

    fn info_codes_unique(table: &[InfoCodeInfo]) {
        for (i, a) in table.iter().enumerate() {
            for b in &table[i + 1..] {
                assert_ne!(a.code, b.code);
                assert!(!a.matches(b.code) && !b.matches(a.code), "{} overlaps {}", a.code, b.code);
            }
            assert!(info_category(a.code).is_some(), "{}", a.code);
            assert!(core::ptr::eq(info_code_in(table, a.code).unwrap(), a), "{}", a.code);
        }
    }

    #[test]
    fn info_tables_unique() {
        info_codes_unique(INFO_CODES);
        info_codes_unique(INFO_CODES_HEBEI);
        assert_eq!(INFO_CODES.iter().filter(|r| r.is_pattern()).count(), 4);
        assert_eq!(INFO_CODES_HEBEI.iter().filter(|r| r.is_pattern()).count(), 0);
    }

    #[test]
    fn info_lookups() {
        assert_eq!(info_category("i12001"), Some((DeviceClass::Analyzer, InfoCategory::State)));
        assert_eq!(info_category("i11001"), Some((DeviceClass::Analyzer, InfoCategory::Log)));
        assert_eq!(info_category("i23001"), Some((DeviceClass::Dau, InfoCategory::Parameter)));
        assert_eq!(info_category("I33400"), Some((DeviceClass::Auxiliary, InfoCategory::Parameter)));
        assert_eq!(info_category("i52001"), Some((DeviceClass::Other, InfoCategory::State)));
        assert_eq!(info_category("i14001"), Some((DeviceClass::Analyzer, InfoCategory::Other)));
        assert_eq!(info_category("i1200"), None);
        assert_eq!(info_category("i12-01"), None);
        assert_eq!(info_category("a12001"), None);

        assert_eq!(info_code("i13008").unwrap().name_en, "Slope");
        assert_eq!(info_code("i13008").unwrap().name_zh, "斜率");
        let state = info_code("i12001").unwrap();
        assert_eq!(state.data_type, "N2");
        assert!(state.values.starts_with("0 running"));
        assert!(!state.values.contains("4 "));
        assert_eq!(info_code("I33400").unwrap().code, "i33400");
        assert_eq!(info_code("i33400").unwrap().unit, "%");
        assert_eq!(info_code("i33102").unwrap().unit, "°C");
        assert_eq!(info_code("i33310").unwrap().code, "i3331x");
        assert_eq!(info_code("i33349").unwrap().code, "i3334x");
        assert_eq!(info_code("I33321").unwrap().code, "i3332x");
        assert!(info_code("i3335x").is_none());
        assert!(info_code("i12101").is_none());
        assert!(info_code("i3331").is_none());

        let hebei = info_code_in(INFO_CODES_HEBEI, "i12101").unwrap();
        assert!(hebei.values.contains("6 standard check"));
        assert_eq!(info_code_in(INFO_CODES_HEBEI, "i13130").unwrap().unit, "mg/L");
        assert_eq!(info_code_in(INFO_CODES_HEBEI, "i13010").unwrap().name_zh, "量程校准漂移");
        assert!(info_code_in(INFO_CODES_HEBEI, "i13102").is_none());
        assert!(info_code_in(INFO_CODES_HEBEI, "i13008").is_none());
        let with_fallback = |code| info_code_in(INFO_CODES_HEBEI, code).or_else(|| info_code(code));
        assert_eq!(with_fallback("i13008").unwrap().name_en, "Slope");
        for code in ["i12101", "i12102", "i12103", "i12007", "i12008", "i12009"] {
            assert!(info_code_in(INFO_CODES_HEBEI, code).is_some(), "{code}");
        }
        for n in 10..=29 {
            let code = [b'i', b'1', b'3', b'0', b'0' + n / 10, b'0' + n % 10];
            let code = core::str::from_utf8(&code).unwrap();
            assert!(info_code_in(INFO_CODES_HEBEI, code).is_some(), "{code}");
        }
        for n in 101..=130u8 {
            let code = [b'i', b'1', b'3', b'1', b'0' + (n % 100) / 10, b'0' + n % 10];
            let code = core::str::from_utf8(&code).unwrap();
            let skipped = matches!(n, 102 | 114 | 117 | 121);
            assert_eq!(info_code_in(INFO_CODES_HEBEI, code).is_none(), skipped, "{code}");
        }
    }

    #[test]
    fn dynamic_control_categories_follow_the_table_in_force() {
        use DynamicControl::{Calibration, Running, StandardCheck, Working};
        let hebei = |code| dynamic_control_in(DYNAMIC_CONTROL_HEBEI, code).or_else(|| dynamic_control(code));
        assert_eq!(dynamic_control("i12001"), Some(Working));
        assert_eq!(dynamic_control("I12001"), Some(Working));
        assert_eq!(dynamic_control("i13004"), Some(Running));
        assert_eq!(dynamic_control("i13008"), Some(Calibration));
        assert_eq!(dynamic_control("i11001"), None, "a log is no dynamic-control item");
        assert_eq!(dynamic_control("i22001"), None, "the DAU's own state is not the analyzer's");
        // Codes only the provincial table defines, or defines differently.
        for (code, category) in
            [("i12101", Working), ("i13010", Calibration), ("i13116", Running), ("i13128", StandardCheck)]
        {
            assert_eq!(dynamic_control(code), None, "{code}");
            assert_eq!(hebei(code), Some(category), "{code}");
        }
        assert_eq!(hebei("i13008"), Some(Calibration), "national codes still apply under Hebei");
        assert_eq!(StandardCheck.name(), "standard_check");
        // Every row names a code the matching information table knows (or a Hebei range code the
        // domain notes list without a name: i23012, i23013).
        for row in DYNAMIC_CONTROL {
            assert!(info_code(row.code).is_some(), "{}", row.code);
        }
        for row in DYNAMIC_CONTROL_HEBEI {
            let named = info_code_in(INFO_CODES_HEBEI, row.code).is_some();
            assert!(named || matches!(row.code, "i23012" | "i23013"), "{}", row.code);
            assert!(dynamic_control(row.code).is_none(), "{} is listed in both tables", row.code);
        }
    }

    #[test]
    fn commands() {
        // Table 9, every CN, under 2017.
        let table9 = [
            1000, 1011, 1012, 1013, 1061, 1062, 1063, 1064, 1072, 2011, 2012, 2021, 2022, 2031, 2041, 2051, 2061, 2081,
            3011, 3012, 3013, 3014, 3015, 3016, 3017, 3018, 3019, 3020, 3021, 9011, 9012, 9013, 9014,
        ];
        for cn in table9 {
            let c = command(cn, V2017).unwrap();
            assert!(!c.provisional, "{cn}");
            assert!(command(cn, V2025).is_some(), "{cn}");
        }
        assert_eq!(COMMANDS.iter().filter(|c| c.valid_in(V2017)).count(), table9.len());

        for cn in [1001, 1021, 1022, 1031, 1032, 1041, 1042, 2071, 2072] {
            assert!(command(cn, V2005).is_some(), "{cn}");
            assert!(command(cn, V2017).is_none(), "{cn}");
        }
        for cn in [1001, 1002, 1014, 2013, 2052, 2062, 2111, 3022, 3024, 9015] {
            let c = command(cn, V2025).unwrap();
            assert!(c.provisional && c.since == V2025, "{cn}");
        }
        assert_eq!(command(1001, V2005).unwrap().name_zh, "设置超限报警时间");
        assert_eq!(command(1001, V2025).unwrap().name_zh, "上传数采仪硬件序号");
        assert_eq!(command(3014, V2005).unwrap().name_zh, "设置采样时间周期");
        assert_eq!(command(3014, V2017).unwrap().name_zh, "比对采样");
        assert_eq!(command(1011, V2017).unwrap().class, CommandClass::RequestOrUpload);
        assert_eq!(command(1011, V2017).unwrap().name_zh_upload, Some("上传现场机时间"));
        assert_eq!(command(1013, V2017).unwrap().class, CommandClass::Notification);
        assert_eq!(command(9014, V2005).unwrap().class, CommandClass::Answer);
        assert!(command(1013, V2005).is_none());
        assert!(command(9021, V2005).is_none());

        // At most one entry per (CN, version).
        for a in COMMANDS {
            for v in [V2005, V2017, V2025] {
                let n = COMMANDS.iter().filter(|b| b.cn == a.cn && b.valid_in(v)).count();
                assert!(n <= 1, "{} {:?}", a.cn, v);
            }
        }
    }

    #[test]
    fn version_from_flag() {
        assert_eq!(TableVersion::from_flag(4), Some(V2017));
        assert_eq!(TableVersion::from_flag(5), Some(V2017));
        assert_eq!(TableVersion::from_flag(9), Some(V2025));
        assert_eq!(TableVersion::from_flag(3), Some(V2005));
        assert_eq!(TableVersion::from_flag(12), None);
        assert!(V2005 < V2017 && V2017 < V2025);
    }
}
