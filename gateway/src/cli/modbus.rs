//! `hj212 modbus read` and `hj212 modbus scan`: wiring checks with the firmware's async Modbus
//! RTU master over tokio-serial, the same master and adapter the daemon's serial task uses.
//!
//! Exit codes: 0 when the device answered (scan: when any unit answered), 1 when it refused
//! (exception) or the transport failed (timeout, CRC, wrong unit…), 2 when the port cannot be
//! opened or the arguments are unusable.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use embedded_io_adapters::tokio_1::FromTokio;
use firmware::modbus::{AsyncMaster, Error, FunctionCode, MasterConfig, Request, Response};
use firmware::profile::{ByteOrder, Code, PointSpec, Target, Value, ValueType};
use serde_json::json;
use tokio_serial::SerialPortBuilderExt;

use crate::rs485::{self, DePin, GpioPin};
use crate::serial::TokioDelay;

/// Serial line settings shared by the Modbus and simulator commands.
#[derive(Debug, Clone, clap::Args)]
pub struct LineOpts {
    /// The serial device, such as `/dev/ttyUSB0`.
    #[arg(long)]
    pub port: PathBuf,
    /// Baud rate.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Parity.
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    pub parity: ParityArg,
    /// Stop bits.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop: u8,
}

/// RS-485 direction control of a master on a UART wired to the transceiver (USB adapters switch
/// direction themselves and need neither).
#[derive(Debug, Clone, clap::Args)]
pub struct DirectionOpts {
    /// Put the port in the kernel's RS-485 mode (RTS drives DE, active while sending).
    #[arg(long, conflicts_with = "de_gpio")]
    pub rs485: bool,
    /// Drive DE through this GPIO `value` file (such as `/sys/class/gpio/gpio17/value`).
    #[arg(long, value_name = "VALUE_FILE")]
    pub de_gpio: Option<PathBuf>,
    /// The DE GPIO is active low.
    #[arg(long, requires = "de_gpio")]
    pub de_active_low: bool,
}

/// Parity on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParityArg {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

impl LineOpts {
    /// A tokio-serial builder for these settings (8 data bits, no flow control).
    #[must_use]
    pub fn builder(&self) -> tokio_serial::SerialPortBuilder {
        let parity = match self.parity {
            ParityArg::None => tokio_serial::Parity::None,
            ParityArg::Even => tokio_serial::Parity::Even,
            ParityArg::Odd => tokio_serial::Parity::Odd,
        };
        let stop = if self.stop == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One };
        tokio_serial::new(self.port.to_string_lossy(), self.baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(parity)
            .stop_bits(stop)
            .flow_control(tokio_serial::FlowControl::None)
    }
}

/// Value types for `modbus read --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    /// One register, unsigned.
    U16,
    /// One register, signed.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, signed.
    I32,
    /// Two registers, IEEE 754 single.
    F32,
    /// Four registers, IEEE 754 double.
    F64,
    /// One register of four BCD digits.
    Bcd,
}

impl TypeArg {
    const fn value_type(self) -> ValueType {
        match self {
            Self::U16 => ValueType::U16,
            Self::I16 => ValueType::I16,
            Self::U32 => ValueType::U32,
            Self::I32 => ValueType::I32,
            Self::F32 => ValueType::F32,
            Self::F64 => ValueType::F64,
            Self::Bcd => ValueType::Bcd16,
        }
    }
}

/// Byte orders for `modbus read --order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// Big-endian.
    Abcd,
    /// Word-swapped (low register first).
    Cdab,
    /// Byte-swapped within each register.
    Badc,
    /// Little-endian.
    Dcba,
}

impl OrderArg {
    const fn order(self) -> ByteOrder {
        match self {
            Self::Abcd => ByteOrder::ABCD,
            Self::Cdab => ByteOrder::CDAB,
            Self::Badc => ByteOrder::BADC,
            Self::Dcba => ByteOrder::DCBA,
        }
    }
}

/// Parses `0x1008`, `4104` or `0b…` as a number.
fn parse_u16(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let (digits, radix) =
        if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) { (h, 16) } else { (t, 10) };
    u16::from_str_radix(&digits.replace('_', ""), radix).map_err(|e| format!("{s:?}: {e}"))
}

/// What to read.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadOpts {
    /// The serial line.
    #[command(flatten)]
    pub line: LineOpts,
    /// Direction control.
    #[command(flatten)]
    pub direction: DirectionOpts,
    /// The unit (slave) address, 1–247.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub unit: u8,
    /// Function code: 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub fc: u8,
    /// First address (protocol address, 0-based; decimal or 0x hex).
    #[arg(long, value_parser = parse_u16)]
    pub addr: u16,
    /// Registers (or bits) to read.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=2000))]
    pub count: u16,
    /// How to decode the registers; values follow one another from `--addr`.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::U16)]
    pub value_type: TypeArg,
    /// Byte order of multi-register values.
    #[arg(long, value_enum, default_value_t = OrderArg::Abcd)]
    pub order: OrderArg,
    /// Milliseconds to wait for the answer.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u32,
    /// Extra attempts after a transport error.
    #[arg(long, default_value_t = 0)]
    pub retries: u8,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What to scan.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanOpts {
    /// The serial line.
    #[command(flatten)]
    pub line: LineOpts,
    /// Direction control.
    #[command(flatten)]
    pub direction: DirectionOpts,
    /// First unit address asked.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub from: u8,
    /// Last unit address asked.
    #[arg(long, default_value_t = 247, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub to: u8,
    /// Function code of the probe.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub fc: u8,
    /// Address of the probe.
    #[arg(long, default_value = "0", value_parser = parse_u16)]
    pub addr: u16,
    /// Registers (or bits) the probe reads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=125))]
    pub count: u16,
    /// Milliseconds to wait for each unit.
    #[arg(long, default_value_t = 200)]
    pub timeout_ms: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The Modbus subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModbusCmd {
    /// Read registers or bits from one unit and decode them.
    Read(ReadOpts),
    /// Find which unit addresses answer on a line (an exception reply counts as present).
    Scan(ScanOpts),
}

type CliMaster = AsyncMaster<FromTokio<tokio_serial::SerialStream>, DePin, TokioDelay>;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")
}

fn open_master(line: &LineOpts, direction: &DirectionOpts, timeout_ms: u32, retries: u8) -> Result<CliMaster> {
    let stream = line.builder().open_native_async().with_context(|| format!("cannot open {}", line.port.display()))?;
    if direction.rs485 {
        rs485::apply(&stream, &crate::config::Rs485::default())
            .with_context(|| format!("{}: the driver refused the RS-485 mode", line.port.display()))?;
    }
    let de = match &direction.de_gpio {
        None => DePin::None,
        Some(path) => DePin::Gpio(
            GpioPin::open(path, direction.de_active_low)
                .with_context(|| format!("cannot drive the DE line {}", path.display()))?,
        ),
    };
    let mut cfg = MasterConfig::new(line.baud);
    cfg.response_timeout_us = timeout_ms.saturating_mul(1000);
    cfg.retries = retries;
    cfg.inter_request_delay_us = cfg.timing.t3_5_us.max(2_000);
    Ok(AsyncMaster::new(FromTokio::new(stream), de, TokioDelay, cfg))
}

fn function(fc: u8) -> FunctionCode {
    FunctionCode::from_u8(fc).unwrap_or(FunctionCode::ReadHoldingRegisters)
}

/// Runs a Modbus subcommand.
///
/// # Errors
/// The port cannot be opened or standard output is closed.
pub fn run(cmd: &ModbusCmd) -> Result<u8> {
    let rt = runtime()?;
    match cmd {
        ModbusCmd::Read(o) => rt.block_on(read(o)),
        ModbusCmd::Scan(o) => rt.block_on(scan(o)),
    }
}

/// Hex text of registers: `0x4228 0x0000`.
fn hex_regs(regs: &[u16]) -> String {
    regs.iter().map(|r| format!("0x{r:04X}")).collect::<Vec<_>>().join(" ")
}

fn value_text(v: Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        Value::Code(c) => c.to_string(),
        Value::Time(t) => {
            let mut b = [0u8; 14];
            t.write_hj212(&mut b);
            String::from_utf8_lossy(&b).into_owned()
        }
    }
}

/// Decodes consecutive values of `ty` from `regs`.
fn decode_values(regs: &[u16], ty: TypeArg, order: OrderArg) -> Vec<Result<Value, String>> {
    let spec = PointSpec {
        unit: 1,
        function: FunctionCode::ReadHoldingRegisters,
        address: 0,
        value: ty.value_type(),
        order: order.order(),
        scale: 1.0,
        offset: 0.0,
        target: Target::Pollutant(Code::new("x00000")),
    };
    let width = usize::from(ty.value_type().registers());
    regs.chunks(width).filter(|c| c.len() == width).map(|c| spec.decode(c).map_err(|e| format!("{e:?}"))).collect()
}

async fn read(o: &ReadOpts) -> Result<u8> {
    let fc = function(o.fc);
    if !fc.is_bit() && o.count > 125 {
        bail!("--count {} is more than 125 registers", o.count);
    }
    let Some(request) = Request::read(fc, o.addr, o.count) else { bail!("function {} is not a read", o.fc) };
    let mut master = open_master(&o.line, &o.direction, o.timeout_ms, o.retries)?;
    let mut out = io::stdout().lock();
    let result = master.transact(o.unit, &request).await;
    let base = json!({"unit": o.unit, "fc": o.fc, "address": o.addr, "count": o.count});
    match result {
        Ok(Response::Registers(r)) => {
            let regs: Vec<u16> = r.iter().collect();
            let values = decode_values(&regs, o.value_type, o.order);
            if o.json {
                let mut v = base;
                v["type"] = json!("registers");
                v["registers"] = json!(regs);
                v["hex"] = json!(hex_regs(&regs));
                v["value_type"] = json!(format!("{:?}", o.value_type).to_lowercase());
                v["order"] = json!(format!("{:?}", o.order).to_lowercase());
                v["values"] = values
                    .iter()
                    .map(|r| match r {
                        Ok(Value::Number(n)) => json!(n),
                        Ok(Value::Code(c)) => json!(c),
                        Ok(other) => json!(value_text(*other)),
                        Err(e) => json!({"error": e}),
                    })
                    .collect();
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "unit {} fc {} @0x{:04X} ({}) x{}", o.unit, o.fc, o.addr, o.addr, regs.len())?;
                writeln!(out, "raw: {}", hex_regs(&regs))?;
                for (i, v) in values.iter().enumerate() {
                    let at = usize::from(o.addr) + i * usize::from(o.value_type.value_type().registers());
                    let ty = format!("{:?} {:?}", o.value_type, o.order).to_lowercase();
                    match v {
                        Ok(v) => writeln!(out, "0x{at:04X} {ty} = {}", value_text(*v))?,
                        Err(e) => writeln!(out, "0x{at:04X} {ty} = (cannot decode: {e})")?,
                    }
                }
            }
            Ok(0)
        }
        Ok(Response::Bits(b)) => {
            let bits: Vec<u8> = (0..usize::from(o.count)).map(|i| u8::from(b.get(i).unwrap_or(false))).collect();
            if o.json {
                let mut v = base;
                v["type"] = json!("bits");
                v["bits"] = json!(bits);
                writeln!(out, "{v}")?;
            } else {
                let text: Vec<String> = bits.iter().map(u8::to_string).collect();
                writeln!(out, "unit {} fc {} @0x{:04X} x{}", o.unit, o.fc, o.addr, o.count)?;
                writeln!(out, "bits: {}", text.join(" "))?;
            }
            Ok(0)
        }
        Ok(_) => {
            writeln!(io::stderr(), "error: unexpected response shape")?;
            Ok(1)
        }
        Err(Error::Io(e)) => Err(anyhow::anyhow!("serial port {}: {e}", o.line.port.display())),
        Err(e) => {
            let (kind, text) = describe(&e);
            if o.json {
                let mut v = base;
                v["type"] = json!("error");
                v["kind"] = json!(kind);
                v["message"] = json!(text);
                writeln!(out, "{v}")?;
            }
            writeln!(io::stderr(), "{kind}: {text}")?;
            Ok(1)
        }
    }
}

fn describe<E: core::fmt::Debug>(e: &Error<E>) -> (&'static str, String) {
    match e {
        Error::Exception(x) => ("exception", format!("{x} ({})", exception_name(x.code.to_u8()))),
        Error::Frame(f) => ("transport", f.to_string()),
        other => ("error", other.to_string()),
    }
}

const fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target failed to respond",
        _ => "unknown exception",
    }
}

async fn scan(o: &ScanOpts) -> Result<u8> {
    if o.from > o.to {
        bail!("--from {} is after --to {}", o.from, o.to);
    }
    let fc = function(o.fc);
    let Some(request) = Request::read(fc, o.addr, o.count) else { bail!("function {} is not a read", o.fc) };
    let mut master = open_master(&o.line, &o.direction, o.timeout_ms, 0)?;
    let mut out = io::stdout().lock();
    let mut found = Vec::new();
    for unit in o.from..=o.to {
        let outcome = match master.transact(unit, &request).await {
            Ok(_) => Some("answered".to_string()),
            Err(Error::Exception(x)) => {
                Some(format!("exception {:#04x} ({})", x.code.to_u8(), exception_name(x.code.to_u8())))
            }
            Err(Error::Io(e)) => return Err(anyhow::anyhow!("serial port {}: {e}", o.line.port.display())),
            Err(_) => None,
        };
        if let Some(what) = outcome {
            if o.json {
                writeln!(out, "{}", json!({"type": "unit", "unit": unit, "result": what}))?;
            } else {
                writeln!(out, "unit {unit}: {what}")?;
            }
            found.push(unit);
        }
    }
    if o.json {
        writeln!(out, "{}", json!({"type": "summary", "from": o.from, "to": o.to, "found": found}))?;
    } else {
        let list: Vec<String> = found.iter().map(u8::to_string).collect();
        writeln!(
            out,
            "{} of {} units answered{}",
            found.len(),
            usize::from(o.to - o.from) + 1,
            if list.is_empty() { String::new() } else { format!(": {}", list.join(" ")) }
        )?;
    }
    Ok(u8::from(found.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_hex_and_decimal() {
        assert_eq!(parse_u16("0x1008"), Ok(0x1008));
        assert_eq!(parse_u16("4104"), Ok(4104));
        assert!(parse_u16("0x10000").is_err());
    }

    #[test]
    fn cdab_floats_decode() {
        // 42.5f32 = 0x422A0000; CDAB puts the low word first.
        let v = decode_values(&[0x0000, 0x422A], TypeArg::F32, OrderArg::Cdab);
        assert_eq!(v, vec![Ok(Value::Number(42.5))]);
    }
}
