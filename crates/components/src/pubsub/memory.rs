//! `pubsub.in-memory`: a broker inside one sidecar process, for development and tests (Dapr's in-memory pub/sub
//! is the same: it does not cross processes). Every subscription of a topic receives every message published
//! after it started; a message no subscription takes is gone. A message whose handler returns `Err` is delivered
//! again after a second, for as long as the subscription runs. Nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Handler, Message, PubSub, PubSubError, PublishRequest, SubscribeRequest, Subscription};

/// How long an unacknowledged message waits before it is delivered again.
const REDELIVERY_DELAY: Duration = Duration::from_secs(1);
/// Messages handled at once per subscription.
const CONCURRENCY: usize = 64;

type Subscribers = HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>;

/// The in-process broker.
#[derive(Default)]
pub struct InMemoryPubSub {
    subscribers: Arc<Mutex<Subscribers>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl InMemoryPubSub {
    pub fn new() -> InMemoryPubSub {
        InMemoryPubSub::default()
    }
}

#[async_trait]
impl PubSub for InMemoryPubSub {
    async fn publish(&self, request: PublishRequest) -> Result<(), PubSubError> {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(list) = subscribers.get_mut(&request.topic) {
            // A closed receiver is a subscription that ended: forget it.
            list.retain(|(_, tx)| {
                tx.send(Message {
                    topic: request.topic.clone(),
                    data: request.data.clone(),
                    metadata: Default::default(),
                })
                .is_ok()
            });
        }
        Ok(())
    }

    async fn subscribe(&self, request: SubscribeRequest, handler: Handler) -> Result<Subscription, PubSubError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(request.topic.clone())
            .or_default()
            .push((id, tx.clone()));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let subscribers = self.subscribers.clone();
        let topic = request.topic;
        let task = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut running = tokio::task::JoinSet::new();
            loop {
                let message = tokio::select! {
                    _ = &mut stop_rx => break,
                    message = rx.recv() => match message { Some(m) => m, None => break },
                };
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let handler = handler.clone();
                let again = tx.clone();
                running.spawn(async move {
                    let result = handler(message.clone()).await;
                    drop(permit);
                    if result.is_err() {
                        tokio::time::sleep(REDELIVERY_DELAY).await;
                        let _ = again.send(message);
                    }
                });
                // Reap finished deliveries so the set does not grow.
                while running.try_join_next().is_some() {}
            }
            running.abort_all();
            if let Some(list) = subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_mut(&topic) {
                list.retain(|(other, _)| *other != id);
            }
        });
        Ok(Subscription::new(stop_tx, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::NotHandled;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn publish(topic: &str, data: &'static str) -> PublishRequest {
        PublishRequest { topic: topic.into(), data: data.into(), metadata: Default::default() }
    }

    #[tokio::test]
    async fn fans_out_redelivers_and_stops() {
        let broker = InMemoryPubSub::new();
        let (seen_tx, mut seen) = mpsc::unbounded_channel::<(u8, Message)>();
        let failures = Arc::new(AtomicUsize::new(0));
        let mut subs = Vec::new();
        for n in 0..2u8 {
            let seen_tx = seen_tx.clone();
            let failures = failures.clone();
            let handler: Handler = Arc::new(move |m: Message| {
                let seen_tx = seen_tx.clone();
                let failures = failures.clone();
                async move {
                    // Subscriber 1 refuses the first message once: it must come again.
                    if n == 1 && failures.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(NotHandled("not yet".into()));
                    }
                    let _ = seen_tx.send((n, m));
                    Ok(())
                }
                .boxed()
            });
            let request = SubscribeRequest { topic: "orders".into(), metadata: Default::default() };
            subs.push(broker.subscribe(request, handler).await.unwrap());
        }
        broker.publish(publish("orders", "a")).await.unwrap();
        broker.publish(publish("other", "b")).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let (n, m) = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
            assert_eq!((m.topic.as_str(), &m.data[..]), ("orders", &b"a"[..]));
            got.push(n);
        }
        got.sort();
        assert_eq!(got, [0, 1]);
        assert_eq!(failures.load(Ordering::SeqCst), 2, "subscriber 1 saw the message twice");

        for sub in subs {
            sub.close().await;
        }
        broker.publish(publish("orders", "c")).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), seen.recv()).await.is_err());
    }
}
