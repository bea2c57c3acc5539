//! Group commit: concurrent store requests coalesced into one statement per batch.
//!
//! A request that arrives while `max_in_flight` batches are running waits and goes into the
//! next batch together with everything else that arrived meanwhile (up to `max_batch`). Under
//! light load every request is its own batch at once — batching adds no delay; only load makes
//! batches grow, and then one statement (and one commit) carries many requests. The sizes go
//! to the `rendezvous_group_commit_batch_size` histogram.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use rendezvous_ports::StoreError;
use tokio::sync::{Semaphore, mpsc, oneshot};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// `rendezvous_group_commit_batch_size{statement}`: requests per batch statement.
fn batch_sizes() -> opentelemetry::metrics::Histogram<u64> {
    opentelemetry::global::meter("rendezvous")
        .u64_histogram("rendezvous.group_commit.batch_size")
        .with_description(
            "Requests carried by one group-commit statement, by statement (changes, finds, fresh).",
        )
        .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
        .build()
}

/// A queue in front of a batch operation; cloning shares the queue.
pub(crate) struct Batcher<Req, Resp> {
    queue: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Req, Resp> fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the batching task. `run` gets a batch and returns one result per request, in
    /// order. The task ends when the last clone of the batcher is dropped.
    pub(crate) fn spawn<F, Fut>(
        statement: &'static str,
        max_batch: usize,
        max_in_flight: usize,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Resp, StoreError>>> + Send + 'static,
    {
        let (queue, mut requests) = mpsc::channel::<(Req, Reply<Resp>)>(max_batch * max_in_flight);
        let run = Arc::new(run);
        let sizes = batch_sizes();
        let label = [opentelemetry::KeyValue::new("statement", statement)];
        let slots = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(async move {
            while let Some(first) = requests.recv().await {
                // Waiting for a free slot is what lets the next batch fill up.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch
                    && let Ok(next) = requests.try_recv()
                {
                    batch.push(next);
                }
                sizes.record(batch.len() as u64, &label);
                let run = run.clone();
                tokio::spawn(async move {
                    let (batch, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.into_iter().unzip();
                    let results = run(batch).await;
                    drop(slot);
                    // A missing result (a bug) drops its reply: that caller gets an error.
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                });
            }
        });
        Self { queue }
    }

    /// Queues a request and waits for its result.
    pub(crate) async fn call(&self, request: Req) -> Result<Resp, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store's batch writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Other("the store's batch writer dropped a request without an answer".into())
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn("test", 16, 1, move |batch: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(batch.len());
                // Hold the only slot a moment so that the others queue up behind it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                batch
                    .into_iter()
                    .map(|n| {
                        if n == 7 {
                            Err(StoreError::Other("seven".into()))
                        } else {
                            Ok(n * 10)
                        }
                    })
                    .collect()
            }
        });
        let calls: Vec<_> = (0..40u32)
            .map(|n| {
                let b = batcher.clone();
                tokio::spawn(async move { (n, b.call(n).await) })
            })
            .collect();
        for call in calls {
            let (n, result) = call.await.unwrap();
            match result {
                Ok(v) => assert_eq!(v, n * 10),
                Err(e) => {
                    assert_eq!(n, 7);
                    assert!(e.to_string().contains("seven"));
                }
            }
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&s| s <= 16), "{sizes:?}");
        assert!(sizes.len() < 40, "no batching happened: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lone_request_is_answered_without_waiting_for_company() {
        let batcher = Batcher::spawn("test", 64, 2, |batch: Vec<u8>| async move {
            batch.into_iter().map(Ok).collect()
        });
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), batcher.call(3)).await;
        assert_eq!(answer.unwrap().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_result_missing_from_the_batch_is_an_error_not_a_hang() {
        let batcher: Batcher<u8, u8> =
            Batcher::spawn("test", 8, 1, |_batch: Vec<u8>| async move { Vec::new() });
        let err = batcher.call(1).await.unwrap_err();
        assert!(err.to_string().contains("without an answer"), "{err}");
    }
}
