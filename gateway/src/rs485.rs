//! RS-485 direction control on Linux: the kernel's RS-485 mode (`TIOCSRS485`), and a driver-enable
//! (DE) line on a GPIO.
//!
//! Most USB–RS-485 adapters switch direction by themselves and need neither. A UART wired to a
//! transceiver on the board needs one of the two:
//!
//! - **Kernel RS-485 mode** (`[serial.rs485]`): the UART driver raises RTS (wired to DE) around
//!   each transmission, with the delays given, as `Documentation/driver-api/serial/serial-rs485.rst`
//!   describes. Set once when the port opens. A port whose driver does not support it (a USB
//!   adapter, a pseudo-terminal) refuses with `ENOTTY`: that is logged once per open as a warning
//!   naming the port, counted (`rs485_refused_total`), and polling goes on, since such a port
//!   usually switches direction itself.
//! - **A GPIO DE line** (`[serial.de_gpio]`): the master raises the line before the first byte of
//!   a request and lowers it once the kernel has sent the last one (`tcdrain`), through the
//!   GPIO's sysfs `value` file (`/sys/class/gpio/gpioN/value`, exported and set to `out`
//!   beforehand, for example by a udev rule or a boot script). A line that cannot be opened or
//!   written fails the port, which is reopened with back-off like any other port failure.
//!
//! The ioctl is the only `unsafe` code in the gateway.

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::Rs485;

/// `SER_RS485_ENABLED` and the other flags of `struct serial_rs485` (`include/uapi/linux/serial.h`).
const ENABLED: u32 = 1 << 0;
const RTS_ON_SEND: u32 = 1 << 1;
const RTS_AFTER_SEND: u32 = 1 << 2;
const RX_DURING_TX: u32 = 1 << 4;
const TERMINATE_BUS: u32 = 1 << 5;

/// `struct serial_rs485`: 32 bytes, delays in milliseconds.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SerialRs485 {
    flags: u32,
    delay_rts_before_send: u32,
    delay_rts_after_send: u32,
    padding: [u32; 5],
}

impl SerialRs485 {
    fn from_config(c: &Rs485) -> Self {
        let mut flags = 0;
        for (on, bit) in [
            (c.enabled, ENABLED),
            (c.rts_on_send, RTS_ON_SEND),
            (c.rts_after_send, RTS_AFTER_SEND),
            (c.rx_during_tx, RX_DURING_TX),
            (c.terminate_bus, TERMINATE_BUS),
        ] {
            if on {
                flags |= bit;
            }
        }
        Self {
            flags,
            delay_rts_before_send: c.delay_rts_before_send_ms,
            delay_rts_after_send: c.delay_rts_after_send_ms,
            padding: [0; 5],
        }
    }
}

/// Puts the port behind `fd` into the RS-485 mode of `config`.
///
/// # Errors
/// The driver refused (`ENOTTY`: it has no RS-485 mode; `EINVAL`: a setting it cannot do).
pub fn apply(fd: &impl AsRawFd, config: &Rs485) -> std::io::Result<()> {
    let mut settings = SerialRs485::from_config(config);
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` is an open descriptor borrowed from `fd` for the duration of the call, and
    // TIOCSRS485 reads (and may write back) exactly one `struct serial_rs485`, which `settings`
    // is: `repr(C)`, 32 bytes, the kernel's layout on every architecture we build for.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(raw, libc::TIOCSRS485 as _, &raw mut settings) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A DE line driven through a GPIO's sysfs `value` file.
#[derive(Debug)]
pub struct GpioPin {
    path: PathBuf,
    file: File,
    active_low: bool,
}

impl GpioPin {
    /// Opens the `value` file at `path` for writing and drives the line inactive (receive).
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub fn open(path: &Path, active_low: bool) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut pin = Self { path: path.to_path_buf(), file, active_low };
        pin.drive(false)?;
        Ok(pin)
    }

    /// The `value` file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn drive(&mut self, transmit: bool) -> std::io::Result<()> {
        let level = if transmit != self.active_low { b"1\n" } else { b"0\n" };
        // A sysfs attribute is written whole at offset 0; a sink that cannot seek (a pipe, as in
        // the tests) takes the writes in sequence.
        match self.file.seek(SeekFrom::Start(0)) {
            Err(e) if e.raw_os_error() != Some(libc::ESPIPE) => return Err(e),
            _ => {}
        }
        self.file.write_all(level)
    }
}

/// The error of a DE line: the IO error, as an embedded-hal pin error.
#[derive(Debug)]
pub struct PinError(pub std::io::Error);

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

/// The DE line of a port: none (the adapter or the kernel switches direction) or a GPIO.
#[derive(Debug)]
pub enum DePin {
    /// Nothing to drive.
    None,
    /// A GPIO, high while transmitting (unless active low).
    Gpio(GpioPin),
}

impl embedded_hal::digital::ErrorType for DePin {
    type Error = PinError;
}

impl embedded_hal::digital::OutputPin for DePin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        match self {
            Self::None => Ok(()),
            Self::Gpio(p) => p.drive(false).map_err(PinError),
        }
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        match self {
            Self::None => Ok(()),
            Self::Gpio(p) => p.drive(true).map_err(PinError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_have_the_kernel_layout_and_flags() {
        assert_eq!(std::mem::size_of::<SerialRs485>(), 32);
        let c = Rs485 { delay_rts_before_send_ms: 2, delay_rts_after_send_ms: 3, ..Rs485::default() };
        let s = SerialRs485::from_config(&c);
        // Enabled, RTS high while sending and low after: the usual wiring of RTS to DE.
        assert_eq!(s.flags, ENABLED | RTS_ON_SEND);
        assert_eq!((s.delay_rts_before_send, s.delay_rts_after_send), (2, 3));
        let c = Rs485 { rts_on_send: false, rts_after_send: true, terminate_bus: true, ..Rs485::default() };
        assert_eq!(SerialRs485::from_config(&c).flags, ENABLED | RTS_AFTER_SEND | TERMINATE_BUS);
    }

    #[test]
    fn a_pty_has_no_rs485_mode_and_says_so() {
        let pty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/ptmx").expect("open /dev/ptmx");
        let err = apply(&pty, &Rs485::default()).expect_err("a pty has no RS-485 mode");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    }

    #[test]
    fn a_gpio_line_is_written_whole_high_while_sending_and_inverted_when_active_low() {
        use embedded_hal::digital::OutputPin as _;
        let dir = std::env::temp_dir().join(format!("hj212-gpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("value");
        std::fs::write(&path, "x\n").unwrap();
        let mut pin = DePin::Gpio(GpioPin::open(&path, false).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n", "receive at open");
        pin.set_high().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        pin.set_low().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        let mut inverted = GpioPin::open(&path, true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n", "active low: receive is 1");
        inverted.drive(true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        assert!(GpioPin::open(&dir.join("missing"), false).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
