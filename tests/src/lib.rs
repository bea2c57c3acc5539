//! Black-box tests of Rendezvous: they start the real application on loopback (port 0) and
//! drive it over gRPC the way a workflow engine and a callback gateway do. Helpers live here;
//! the tests live in `tests/tests/`.
