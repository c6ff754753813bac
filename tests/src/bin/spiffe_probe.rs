//! A SPIFFE workload, written against the `spiffe` crate's Workload API client (a stock
//! client library, not leash's): the integration tests run it inside and outside a task.
//!
//! - `fetch AUD`: fetches a JWT-SVID for AUD and the JWT bundles, verifies the token
//!   against the bundles offline, asks the Workload API to validate it, and prints
//!   `{"token", "spiffe_id", "validated"}`.
//! - `validate AUD TOKEN`: asks the Workload API to validate TOKEN; prints the SPIFFE ID.
//! - `watch-bundles MS`: streams the JWT bundles; prints `{"first", "next", "second"}`:
//!   the first set's key ids, then `changed` (and the next set's key ids), `open` (no
//!   new set within MS milliseconds, the stream still open) or `ended`.
//!
//! The endpoint comes from `SPIFFE_ENDPOINT_SOCKET`. Any failure is printed on stderr
//! and exits 1.

use spiffe::{JwtSvid, WorkloadApiClient};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(out) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<String, String> {
    let client = WorkloadApiClient::connect_env()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match args {
        [cmd, aud] if cmd == "fetch" => {
            let svid = client
                .fetch_jwt_svid(&[aud.as_str()], None)
                .await
                .map_err(|e| format!("fetch_jwt_svid: {e:?}"))?;
            let bundles = client
                .fetch_jwt_bundles()
                .await
                .map_err(|e| format!("fetch_jwt_bundles: {e:?}"))?;
            let token = svid.token().to_owned();
            let offline = JwtSvid::parse_and_validate(&token, &bundles, &[aud.as_str()])
                .map_err(|e| format!("offline validation: {e:?}"))?;
            let online = client
                .validate_jwt_token(aud, &token)
                .await
                .map_err(|e| format!("validate_jwt_token: {e:?}"))?;
            Ok(serde_json::json!({
                "token": token,
                "spiffe_id": offline.spiffe_id().to_string(),
                "validated": online.spiffe_id().to_string(),
            })
            .to_string())
        }
        [cmd, aud, token] if cmd == "validate" => client
            .validate_jwt_token(aud, token)
            .await
            .map(|s| s.spiffe_id().to_string())
            .map_err(|e| format!("validate_jwt_token: {e:?}")),
        [cmd, ms] if cmd == "watch-bundles" => watch(&client, ms.parse().unwrap_or(0)).await,
        _ => Err(
            "usage: leash-spiffe-probe fetch AUD | validate AUD TOKEN | watch-bundles MS".into(),
        ),
    }
}

async fn watch(client: &WorkloadApiClient, ms: u64) -> Result<String, String> {
    use futures_util::StreamExt as _;
    let kids = |set: &spiffe::JwtBundleSet| -> Vec<String> {
        let mut ids: Vec<String> = set
            .iter()
            .flat_map(|(_, b)| b.jwt_authorities().map(|a| a.key_id().to_owned()))
            .collect();
        ids.sort();
        ids
    };
    let mut stream = Box::pin(
        client
            .stream_jwt_bundles()
            .await
            .map_err(|e| format!("stream_jwt_bundles: {e:?}"))?,
    );
    let first = match stream.next().await {
        Some(Ok(set)) => kids(&set),
        Some(Err(e)) => return Err(format!("first bundle: {e:?}")),
        None => return Err("the stream ended before a bundle".into()),
    };
    let wait = std::time::Duration::from_millis(ms);
    let (next, second) = match tokio::time::timeout(wait, stream.next()).await {
        Err(_) => ("open", Vec::new()),
        Ok(None) => ("ended", Vec::new()),
        Ok(Some(Ok(set))) => ("changed", kids(&set)),
        Ok(Some(Err(e))) => return Err(format!("next bundle: {e:?}")),
    };
    Ok(serde_json::json!({"first": first, "next": next, "second": second}).to_string())
}
