//! One module per `ward` subcommand.

pub mod mtls;
pub mod sentry;
