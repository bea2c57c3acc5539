//! The embedded Kafka: librdkafka's in-process mock cluster on a thread of its own (it is not
//! `Send`), for the zero-setup default and for tests. It speaks the real Kafka protocol over
//! TCP on 127.0.0.1, so any Kafka client can produce to it.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

enum Command {
    CreateTopic {
        topic: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), String>>,
    },
}

/// A running mock cluster; stopped on drop.
#[derive(Debug)]
pub struct EmbeddedKafka {
    bootstrap: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CreateTopic { topic, .. } => write!(f, "CreateTopic({topic})"),
        }
    }
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self, String> {
        let (ready_tx, ready) = mpsc::channel();
        let (commands, received) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || match MockCluster::new(brokers) {
                Ok(cluster) => {
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    // Serve commands until every sender is gone, then stop the cluster.
                    for command in received {
                        match command {
                            Command::CreateTopic {
                                topic,
                                partitions,
                                reply,
                            } => {
                                let result = cluster
                                    .create_topic(&topic, partitions, 1)
                                    .map_err(|e| e.to_string());
                                let _ = reply.send(result);
                            }
                        }
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("starting the embedded Kafka: {e}")));
                }
            })
            .map_err(|e| format!("starting the embedded Kafka thread: {e}"))?;
        let bootstrap = ready
            .recv()
            .map_err(|_| "the embedded Kafka thread died".to_owned())??;
        Ok(Self {
            bootstrap,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// Its bootstrap servers (`127.0.0.1:port,...`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic with this many partitions (topics are also created on first use).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .as_ref()
            .ok_or("the embedded Kafka is stopped")?
            .send(Command::CreateTopic {
                topic: topic.to_owned(),
                partitions,
                reply,
            })
            .map_err(|_| "the embedded Kafka thread died".to_owned())?;
        answer
            .recv()
            .map_err(|_| "the embedded Kafka thread died".to_owned())?
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
