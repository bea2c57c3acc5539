//! The Kafka ingress against the embedded broker and a real store: the basics (matching,
//! duplicates, sharing, crashes), topics that do not exist or appear late, records that
//! fail and their replay, Kafka by tenant (what a topic's configuration allows), compressed records (every
//! codec), and TLS and SASL to the broker.

mod basics;
mod codecs;
mod faulty;
mod records;
mod replay;
mod security;
mod support;
mod tenants;
mod topics;
