//! The Kafka ingress against the embedded broker and a real store: the basics (matching,
//! duplicates, sharing, crashes), topics that do not exist or appear late, and records that
//! fail.

mod basics;
mod faulty;
mod records;
mod support;
mod topics;
