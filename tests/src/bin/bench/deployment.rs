//! One deployment under test: the instances, their clients, the engine that acks every
//! resume and hands its arrival time to the join waiting for it, and the join itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::producer::FutureProducer;
use rendezvous_client::{Client, Credentials, ResumeFeed, v1};
use rendezvous_tests::procs::{Instance, api_response, publish, service_event};
use rendezvous_tests::security::{SecureDeployment, tls_channel};
use rendezvous_tests::{seed, seed_variables};
use serde_json::json;
use tokio::sync::oneshot;
use tonic::transport::Endpoint;

use crate::cgroup::CpuLimit;
use crate::measure::*;
use crate::{Args, Setup};

/// Resumes that reached the engine before their join asked for them, and joins waiting.
#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) waiting: HashMap<String, oneshot::Sender<Instant>>,
    pub(crate) early: HashMap<String, Instant>,
}

pub(crate) type SharedMailbox = Arc<Mutex<Mailbox>>;

/// The engine: a [`ResumeFeed`] per instance, subscribed there, handing each resume's
/// arrival time to the join that waits for it (the feed acks it after the handler).
pub(crate) fn engine(endpoint: Endpoint, mailbox: SharedMailbox) {
    // Over TLS the endpoint presents the engine's client certificate: no token per message.
    let feed = ResumeFeed::new([endpoint]).max_in_flight(1024);
    let handler = move |resume: v1::Resume| {
        let at = Instant::now();
        let mut m = mailbox.lock().expect("lock");
        match m.waiting.remove(&resume.wait_id) {
            Some(tx) => {
                let _ = tx.send(at);
            }
            None => {
                m.early.insert(resume.wait_id, at);
            }
        }
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    tokio::spawn(async move {
        if let Err(e) = feed.run(handler, std::future::pending::<()>()).await {
            eprintln!("bench: the engine's resume feed stopped: {e}");
        }
    });
}

/// One deployment under test: instances, clients, the engine, optionally a producer.
pub(crate) struct Deployment {
    pub(crate) instances: Vec<Instance>,
    pub(crate) waits: Vec<Client>,
    pub(crate) callbacks: Vec<Client>,
    pub(crate) mailbox: SharedMailbox,
    pub(crate) producer: Option<FutureProducer>,
    pub(crate) config: String,
    /// The instances' CPU limits (`--cpu-quota`), removed after the instances stop.
    limits: Vec<CpuLimit>,
}

impl Deployment {
    pub(crate) async fn start(
        args: &Args,
        setup: Setup,
        database_url: &str,
        bootstrap: Option<&str>,
    ) -> Result<Self> {
        let secure = args
            .secure
            .then(|| SecureDeployment::create(&args.out.join("tls"), false))
            .transpose()?;
        let mut instances = Vec::new();
        let mut limits = Vec::new();
        for i in 1..=setup.instances {
            let name = format!("instance-{i}");
            let mut env: Vec<(String, String)> = [
                ("RENDEZVOUS__DATABASE__URL", database_url),
                ("RENDEZVOUS__API__ENABLED", "false"),
                ("RENDEZVOUS__TELEMETRY__LOG_FORMAT", "json"),
                ("RENDEZVOUS__TELEMETRY__LOG_LEVEL", "warn"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            env.push((
                "RENDEZVOUS__DATA_DIR".into(),
                args.out.join(&name).display().to_string(),
            ));
            match bootstrap {
                Some(b) => {
                    env.push(("RENDEZVOUS__KAFKA__BROKERS".into(), b.into()));
                    env.push((
                        "RENDEZVOUS__KAFKA__TOPICS".into(),
                        rendezvous_tests::procs::SERVICE_TOPIC.into(),
                    ));
                    env.push(("RENDEZVOUS__KAFKA__GROUP_INSTANCE_ID".into(), name.clone()));
                    // Both brokers hold a fetch to its end (docs/configuration.md,
                    // kafka.fetch_wait); to the service the bench's embedded cluster is a
                    // remote broker, so "auto" would mean 500 ms.
                    if std::env::var_os("RENDEZVOUS__KAFKA__FETCH_WAIT").is_none() {
                        env.push(("RENDEZVOUS__KAFKA__FETCH_WAIT".into(), "10ms".into()));
                    }
                }
                None => env.push(("RENDEZVOUS__KAFKA__ENABLED".into(), "false".into())),
            }
            let instance = match &secure {
                Some(s) => {
                    env.extend(s.env.iter().cloned());
                    Instance::start(&args.binary, &name, env, &args.out)
                        .await?
                        .with_credentials(s.credentials.clone())
                }
                None => Instance::start(&args.binary, &name, env, &args.out).await?,
            };
            if let (Some(cores), Some(pid)) = (args.cpu_quota, instance.proc.pid()) {
                limits.push(CpuLimit::apply(pid, &name, cores)?);
            }
            instances.push(instance);
        }
        let mailbox = SharedMailbox::default();
        let mut waits = Vec::new();
        let mut callbacks = Vec::new();
        let (engine_token, gateway_token) = match &secure {
            Some(s) => (
                Credentials::bearer(&s.credentials.engine_token)?,
                Credentials::bearer(&s.credentials.gateway_key)?,
            ),
            None => (Credentials::none(), Credentials::none()),
        };
        for instance in &instances {
            // Requests go over a channel without a client certificate, with a bearer token.
            let channel = match &secure {
                Some(s) => tls_channel(instance.port(), &s.credentials.ca, None).await?,
                None => instance.channel().await?,
            };
            waits.push(Client::new(channel.clone()).with_credentials(engine_token.clone()));
            callbacks.push(Client::new(channel).with_credentials(gateway_token.clone()));
            engine(instance.endpoint()?, mailbox.clone());
        }
        let producer = match bootstrap {
            Some(b) => Some(
                rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", b)
                    .set("linger.ms", "1")
                    .create()?,
            ),
            None => None,
        };
        let mut config = seed("01-wait-for-both.json");
        // Callback mode: the call is recorded, the response comes through DeliverApiResponse.
        config["data"]["apiCall"]["url"] = json!("https://external-service.example/actions");
        Ok(Self {
            instances,
            waits,
            callbacks,
            mailbox,
            producer,
            config: config.to_string(),
            limits,
        })
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.instances.iter().filter_map(|i| i.proc.pid()).collect()
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        for instance in &mut self.instances {
            instance.proc.terminate()?;
        }
        self.limits.clear();
        Ok(())
    }

    /// One join; returns (register latency, last event sent → resume received).
    pub(crate) async fn join(&self, execution_id: String) -> Result<(Duration, Duration)> {
        let k = fastrand::usize(..self.waits.len());
        let started = Instant::now();
        let r = self.waits[k]
            .register_wait(v1::RegisterWaitRequest {
                execution_id: execution_id.clone(),
                node_id: "wait-1".into(),
                node_config_json: self.config.clone(),
                input_variables: seed_variables(),
                ..Default::default()
            })
            .await?;
        let registered = started.elapsed();
        let (tx, rx) = oneshot::channel();
        {
            let mut m = self.mailbox.lock().expect("lock");
            match m.early.remove(&r.wait_id) {
                Some(at) => {
                    let _ = tx.send(at);
                }
                None => {
                    m.waiting.insert(r.wait_id.clone(), tx);
                }
            }
        }
        let api_first = fastrand::bool();
        let mut last = Instant::now();
        for step in 0..2 {
            if step == 1 {
                last = Instant::now();
            }
            if (step == 0) == api_first {
                self.api_response(k, &r.correlation_id, &execution_id)
                    .await?;
            } else {
                self.kafka_event(k, &r.correlation_id, &execution_id)
                    .await?;
            }
        }
        let resumed = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .with_context(|| format!("no resume for wait {} within 60 s", r.wait_id))??;
        Ok((registered, resumed.saturating_duration_since(last)))
    }

    pub(crate) async fn api_response(
        &self,
        k: usize,
        correlation_id: &str,
        execution_id: &str,
    ) -> Result<()> {
        self.callbacks[k]
            .deliver_api_response(api_response(correlation_id, execution_id))
            .await?;
        Ok(())
    }

    pub(crate) async fn kafka_event(
        &self,
        k: usize,
        correlation_id: &str,
        execution_id: &str,
    ) -> Result<()> {
        match &self.producer {
            Some(producer) => publish(producer, correlation_id, execution_id).await?,
            None => {
                self.callbacks[k]
                    .deliver_event(v1::DeliverEventRequest {
                        correlation_id: correlation_id.into(),
                        execution_id: execution_id.into(),
                        source: "kafka".into(),
                        payload_json: service_event(correlation_id, execution_id),
                        event_key: format!("kafka-{correlation_id}"),
                        tenant_id: String::new(),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// `joins` joins, `concurrency` at a time.
    pub(crate) async fn run(
        &self,
        name: &str,
        joins: usize,
        concurrency: usize,
    ) -> Result<RunReport> {
        let pids = self.pids();
        let cpu_before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect::<Result<_>>()?;
        let next = AtomicUsize::new(0);
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| async {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= joins {
                    return Ok::<_, anyhow::Error>(samples);
                }
                samples.push(self.join(format!("{name}-{run_id}-{i}")).await?);
            }
        });
        let results = futures_util::future::try_join_all(workers).await?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu: Duration = pids
            .iter()
            .zip(&cpu_before)
            .map(|(p, before)| cpu_time(*p).map(|after| after.saturating_sub(*before)))
            .sum::<Result<Duration>>()?;
        let (register, latency): (Vec<Duration>, Vec<Duration>) =
            results.into_iter().flatten().unzip();
        Ok(RunReport {
            name: name.into(),
            joins,
            concurrency,
            seconds,
            last_event_to_resume: Percentiles::of(latency),
            register: Percentiles::of(register),
            cpu_ms_per_join: cpu.as_secs_f64() * 1000.0 / joins as f64,
            peak_rss_mib: pids
                .iter()
                .map(|p| peak_rss_mib(*p))
                .collect::<Result<_>>()?,
        })
    }
}
