//! Grants of a task: add, revoke, approve or deny.

use hyper::Method;

use super::{Client, ClientError, encode_component, task_path, transport::to_json};
use crate::protocol::{AddGrant, GrantAdded};

impl Client {
    /// `POST /v1/tasks/{id}/grants`.
    pub async fn add_grant(&self, id: &str, req: &AddGrant) -> Result<GrantAdded, ClientError> {
        let path = format!("{}/grants", task_path(id));
        self.call(Method::POST, &path, Some(to_json(req)?)).await
    }

    /// `DELETE /v1/tasks/{id}/grants/{grant_id}`.
    pub async fn revoke_grant(&self, id: &str, grant_id: &str) -> Result<(), ClientError> {
        let path = format!("{}/grants/{}", task_path(id), encode_component(grant_id));
        self.call_empty(Method::DELETE, &path).await
    }

    /// `POST /v1/tasks/{id}/grants/{grant_id}/approve` (`approve`) or `.../deny`.
    pub async fn decide_grant(
        &self,
        id: &str,
        grant_id: &str,
        approve: bool,
    ) -> Result<(), ClientError> {
        let path = format!(
            "{}/grants/{}/{}",
            task_path(id),
            encode_component(grant_id),
            if approve { "approve" } else { "deny" }
        );
        self.call_empty(Method::POST, &path).await
    }
}
