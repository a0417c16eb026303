//! Workspace system tests: they run the `statemanager` and `smctl`
//! binaries against each other over real gRPC (tests/tests/*.rs). The
//! fixtures are in tests/tests/support/. This library is empty.
