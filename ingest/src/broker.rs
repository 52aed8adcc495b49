//! The embedded MQTT broker: rumqttd 0.20, run in-process on 127.0.0.1 when no external broker
//! is configured.
//!
//! rumqttd runs its router and each server on threads of its own with their own runtimes, and has
//! no way to stop them: the embedded broker lives until the process exits. It learns its port from
//! its configuration and cannot report a port the OS picked, so port 0 is resolved here by binding
//! a throw-away socket first (a small race with other programs on the same machine, acceptable for
//! a loopback broker).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts rumqttd on `127.0.0.1:port` (0 picks a free port) and waits until it accepts
/// connections.
///
/// # Errors
/// The port is taken, or the broker did not come up within five seconds.
pub async fn start(port: u16) -> anyhow::Result<SocketAddr> {
    let probe = StdListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("embedded MQTT broker: cannot bind 127.0.0.1:{port}"))?;
    let addr = probe.local_addr()?;
    drop(probe);

    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 1024 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "hj212-ingest-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "The embedded MQTT broker stopped.");
            }
        })
        .context("embedded MQTT broker: cannot start its thread")?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::time::timeout(Duration::from_secs(1), probe_mqtt(addr)).await.is_ok_and(|r| r.is_ok()) {
            tracing::info!(%addr, "Embedded MQTT broker is up.");
            return Ok(addr);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("embedded MQTT broker did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that an MQTT 3.1.1 server answers a CONNECT with a CONNACK, then disconnects politely
/// (a bare TCP connect-and-close makes rumqttd log an error).
async fn probe_mqtt(addr: SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s, client id "hj212-probe".
    let mut connect = vec![0x10, 23, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 11];
    connect.extend_from_slice(b"hj212-probe");
    s.write_all(&connect).await?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(std::io::Error::other("unexpected CONNACK"));
    }
    // DISCONNECT.
    s.write_all(&[0xE0, 0]).await?;
    Ok(())
}
