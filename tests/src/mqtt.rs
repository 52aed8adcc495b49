//! The platform side's MQTT client: a subscriber to `{prefix}/#` and a publisher of commands.
//!
//! The subscriber uses a persistent session (clean session off) so that a reconnect does not lose
//! QoS 1 messages queued for it at the broker.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One message received.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload as JSON (`Value::String` with the text when it is not JSON).
    pub payload: Value,
    /// When the subscriber received it.
    pub received: std::time::Instant,
}

/// A subscriber running on its own task until the token is cancelled.
#[derive(Debug)]
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Message>,
    client: AsyncClient,
}

impl Subscriber {
    /// Connects to `broker` as `client_id`, subscribes to `filter` at QoS 1 and waits for the
    /// SUBACK (at most ten seconds).
    ///
    /// # Errors
    /// No SUBACK in time.
    pub async fn connect(
        broker: (&str, u16),
        client_id: &str,
        filter: &str,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut options = MqttOptions::new(client_id, broker.0, broker.1);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(false);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let sub_client = client.clone();
        let filter = filter.to_string();
        tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => {
                        let _ = sub_client.try_disconnect();
                        return;
                    }
                    e = eventloop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::ConnAck(c))) if !c.session_present => {
                        // A broker that forgot us: subscribe again.
                        let _ = sub_client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.payload).into_owned()));
                        if tx
                            .send(Message { topic: p.topic.clone(), payload, received: std::time::Instant::now() })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .map_err(|_| anyhow::anyhow!("no SUBACK from the broker within 10 s"))??;
        Ok(Self { rx, client })
    }

    /// The next message, or `None` when none arrives within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Message> {
        tokio::time::timeout(limit, self.rx.recv()).await.ok().flatten()
    }

    /// The next message, waiting as long as it takes (`None` once the subscriber stopped).
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Every message already received, without waiting.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
        out
    }

    /// Publishes `payload` on `topic` at QoS 1 through this client's connection.
    ///
    /// # Errors
    /// The client's request queue is closed.
    pub async fn publish(&self, topic: &str, payload: &Value) -> anyhow::Result<()> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.to_string().into_bytes()).await?;
        Ok(())
    }
}

/// A data topic `{prefix}/{mn}/{cn}`: the MN and CN, or `None` for status, reply, command,
/// quarantine and data-quality (alert, report, recovery) topics.
#[must_use]
pub fn data_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (mn, cn) = rest.split_once('/')?;
    if matches!(mn, "status" | "reply" | "cmd" | "quarantine" | "alert" | "report" | "recovery") || cn.contains('/') {
        return None;
    }
    Some((mn, cn))
}
