//! The Rendezvous gRPC API: the `rendezvous.v1` contract (generated from `proto/` by
//! `cargo xtask codegen` and checked in) and the tonic server adapter that maps it onto the
//! service's use cases: requests are parsed into typed commands at the edge (`request.rs`),
//! errors become gRPC statuses in one place (`status.rs`). The same port takes callbacks over
//! plain HTTP, signed the Standard Webhooks way (`http_callbacks.rs`, `webhook.rs`).

mod admin;
pub mod auth;
mod convert;
mod http_callbacks;
mod request;
mod resume_stream;
mod server;
mod status;
pub mod webhook;

pub use http_callbacks::{API_RESPONSE_PATH, MAX_BODY_BYTES};
pub use request::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use resume_stream::{MAX_IN_FLIGHT, ResumeStream, ResumeStreamConfig};
pub use server::GrpcApi;
pub use status::to_status;

/// The generated `rendezvous.v1` messages, clients and servers (they live in the client
/// crate, so that engines get them without the server).
pub use rendezvous_client::v1;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::v1;

    #[test]
    fn descriptor_set_describes_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(v1::FILE_DESCRIPTOR_SET).unwrap();
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "rendezvous.v1")
            .expect("rendezvous.v1 is described");
        let services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
        assert_eq!(services, ["WaitService", "CallbackService", "AdminService"]);
        let waits = &file.service[0];
        let methods: Vec<&str> = waits.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            [
                "RegisterWait",
                "ResumeStream",
                "GetWait",
                "ListWaits",
                "CancelWait"
            ]
        );
        assert!(waits.method[1].client_streaming() && waits.method[1].server_streaming());
    }

    #[test]
    fn messages_round_trip_on_the_wire() {
        let request = v1::RegisterWaitRequest {
            execution_id: "exec-1".into(),
            node_id: "node-1".into(),
            node_config_json: r#"{"type":"wait_events","data":{}}"#.into(),
            ..Default::default()
        };
        let bytes = request.encode_to_vec();
        assert_eq!(
            v1::RegisterWaitRequest::decode(bytes.as_slice()).unwrap(),
            request
        );
        let ack = v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Ack(v1::Ack {
                resume_id: "r".into(),
            })),
        };
        assert_eq!(
            v1::ResumeStreamRequest::decode(ack.encode_to_vec().as_slice()).unwrap(),
            ack
        );
    }
}
