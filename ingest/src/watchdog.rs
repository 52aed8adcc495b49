//! systemd service notification: how often the daemon's main loop pings the watchdog
//! (`WATCHDOG=1`) and what its `STATUS=` line says.
//!
//! The computation is pure (it takes the environment values as arguments) so it can be tested
//! without a service manager; the binary reads `WATCHDOG_USEC`, `WATCHDOG_PID` and
//! `NOTIFY_SOCKET` and sends the messages from its main loop.

use std::time::Duration;

/// How often to refresh `STATUS=` when systemd listens (`NOTIFY_SOCKET`) but no watchdog is
/// configured.
pub const STATUS_ONLY_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest ping interval used, whatever `WATCHDOG_USEC` says.
pub const MIN_PING_INTERVAL: Duration = Duration::from_millis(10);

/// The watchdog ping interval: half of `WATCHDOG_USEC`, as systemd recommends.
///
/// `None` when the watchdog is not enabled for this process: the variable is absent, not a
/// positive integer, or `WATCHDOG_PID` names another process.
#[must_use]
pub fn ping_interval(watchdog_usec: Option<&str>, watchdog_pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = watchdog_pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec: u64 = watchdog_usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2).max(MIN_PING_INTERVAL))
}

/// What the main loop does on each tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The tick period.
    pub interval: Duration,
    /// Whether each tick sends `WATCHDOG=1` (otherwise only `STATUS=`).
    pub watchdog: bool,
}

/// The main loop's notification plan from the environment values: watchdog pings at half the
/// interval when enabled, else a `STATUS=` refresh when a notification socket is set, else
/// nothing.
#[must_use]
pub fn plan(
    notify_socket: Option<&str>,
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    own_pid: u32,
) -> Option<Plan> {
    if notify_socket.is_none_or(str::is_empty) {
        return None;
    }
    match ping_interval(watchdog_usec, watchdog_pid, own_pid) {
        Some(interval) => Some(Plan { interval, watchdog: true }),
        None => Some(Plan { interval: STATUS_ONLY_INTERVAL, watchdog: false }),
    }
}

/// The `STATUS=` text: open site connections and the MQTT broker state.
#[must_use]
pub fn status_line(connections: u64, broker_connected: bool) -> String {
    let broker = if broker_connected { "connected" } else { "disconnected" };
    format!("{connections} site connections; MQTT broker {broker}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_watchdog_usec() {
        assert_eq!(ping_interval(Some("30000000"), None, 7), Some(Duration::from_secs(15)));
        assert_eq!(ping_interval(Some(" 200000 "), None, 7), Some(Duration::from_millis(100)));
        assert_eq!(ping_interval(Some("3"), None, 7), Some(MIN_PING_INTERVAL));
    }

    #[test]
    fn disabled_watchdog() {
        assert_eq!(ping_interval(None, None, 7), None);
        assert_eq!(ping_interval(Some("0"), None, 7), None);
        assert_eq!(ping_interval(Some("-5"), None, 7), None);
        assert_eq!(ping_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn watchdog_pid_must_be_ours() {
        assert_eq!(ping_interval(Some("2000000"), Some("7"), 7), Some(Duration::from_secs(1)));
        assert_eq!(ping_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(ping_interval(Some("2000000"), Some("x"), 7), None);
    }

    #[test]
    fn plan_needs_a_socket() {
        assert_eq!(plan(None, Some("2000000"), None, 7), None);
        assert_eq!(plan(Some(""), Some("2000000"), None, 7), None);
        assert_eq!(
            plan(Some("/run/x"), Some("2000000"), None, 7),
            Some(Plan { interval: Duration::from_secs(1), watchdog: true })
        );
        assert_eq!(plan(Some("/run/x"), None, None, 7), Some(Plan { interval: STATUS_ONLY_INTERVAL, watchdog: false }));
    }

    #[test]
    fn status_text() {
        assert_eq!(status_line(3, true), "3 site connections; MQTT broker connected");
        assert_eq!(status_line(0, false), "0 site connections; MQTT broker disconnected");
    }
}
