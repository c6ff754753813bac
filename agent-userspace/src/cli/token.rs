//! `leash token --audience X`: from inside a task, an identity token (JWT-SVID) for it,
//! which a service checks against the node's keys (`/.well-known/jwks.json`).

use std::process::ExitCode;

use leash::client::Client;

use super::output;

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The service the token is for (its `aud`).
    #[arg(long, value_name = "AUDIENCE")]
    pub audience: String,
    /// Print the API's JSON (token, SPIFFE ID, expiry, key id) instead of the token.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(client: &Client, args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let t = super::block_on(client.self_token(&args.audience))??;
    if args.json {
        output::print_json(&t)?;
    } else {
        output::print(&t.token)?;
    }
    Ok(ExitCode::SUCCESS)
}
