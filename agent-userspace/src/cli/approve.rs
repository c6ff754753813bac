//! `leash approve|deny TASK GRANT`: decide on a grant pending approval.

use std::process::ExitCode;

use leash::client::Client;

use super::output;

#[derive(Debug, clap::Args)]
pub(crate) struct DecideArgs {
    /// Task id.
    pub id: String,
    /// Grant id of the pending grant (`leash task show` marks it pending).
    pub grant_id: String,
}

pub(crate) fn run(client: &Client, args: &DecideArgs, approve: bool) -> anyhow::Result<ExitCode> {
    super::block_on(client.decide_grant(&args.id, &args.grant_id, approve))??;
    output::print(&format!(
        "{} {}",
        if approve { "approved" } else { "rejected" },
        output::clean(&args.grant_id)
    ))?;
    Ok(ExitCode::SUCCESS)
}
