//! smctl, the operator's command line for the PICCOLO StateManager, as a
//! library: the command line ([`cli`]), the commands over
//! `transport_grpc::StateManagerClient` ([`commands`]), the output formats
//! ([`output`]), the report file format ([`report`]) and the mermaid
//! diagrams generated from the core's tables ([`diagram`]), which
//! docs/state-machines.md shows.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod commands;
pub mod diagram;
pub mod output;
pub mod report;

use std::process::ExitCode;

use statemachine_core::ErrorCode;
use transport_grpc::ClientError;

/// The exit codes scripts can test (also in `smctl --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: the daemon refused (the error code's name and message are printed).
    Refused = 1,
    /// 2: a usage error (clap's), or bad input found before any call.
    Usage = 2,
    /// 3: the daemon cannot be reached or did not answer in time.
    Unreachable = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Why a command failed: what to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// The error code's name (`INVALID_STATE_TRANSITION`), when the daemon gave one.
    pub code: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// Bad input found before calling the daemon (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            code: None,
            message: message.into(),
        }
    }

    /// A refusal with the daemon's error code (exit 1; UNAVAILABLE and
    /// TIMEOUT exit 3).
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        let exit = match code {
            ErrorCode::ResourceUnavailable | ErrorCode::Timeout => Exit::Unreachable,
            _ => Exit::Refused,
        };
        Self {
            exit,
            code: Some(code_name(code).to_owned()),
            message: message.into(),
        }
    }

    /// The line printed on stderr.
    pub fn line(&self) -> String {
        match &self.code {
            Some(code) => format!("smctl: {code}: {}", self.message),
            None => format!("smctl: {}", self.message),
        }
    }
}

/// An error code's name without the `ERROR_CODE_` prefix.
pub fn code_name(code: ErrorCode) -> &'static str {
    let name = code.as_proto_name();
    name.strip_prefix("ERROR_CODE_").unwrap_or(name)
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match &error {
            ClientError::InvalidEndpoint { .. } | ClientError::Tls { .. } => {
                Failure::usage(error.to_string())
            }
            ClientError::Connect { .. } | ClientError::Timeout(_) => Failure {
                exit: Exit::Unreachable,
                code: None,
                message: error.to_string(),
            },
            ClientError::Status(status) => {
                let code = error.error_code();
                let unreachable = matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                );
                let mut failure = Failure::refused(code, status.message().to_owned());
                if unreachable {
                    failure.exit = Exit::Unreachable;
                }
                failure
            }
            ClientError::Refused(message) => Failure {
                exit: Exit::Refused,
                code: Some("REFUSED".to_owned()),
                message: message.clone(),
            },
            ClientError::Failed { code, message } => Failure::refused(*code, message.clone()),
            ClientError::Malformed(_) => {
                Failure::refused(ErrorCode::InternalError, error.to_string())
            }
        }
    }
}
