//! Tasks: create, list, get, end, attach; and the daemon's status.

use hyper::Method;

use super::{Client, ClientError, task_path, transport::to_json};
use crate::protocol::{
    Attached, CreateTask, Refusals, Status, Task, TaskFilter, TaskToken, TokenQuery,
};

impl Client {
    /// `POST /v1/tasks`.
    pub async fn create_task(&self, req: &CreateTask) -> Result<Task, ClientError> {
        self.call(Method::POST, "/v1/tasks", Some(to_json(req)?))
            .await
    }

    /// `GET /v1/tasks?...`: newest first, as `filter` selects.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, ClientError> {
        let path = format!("/v1/tasks{}", super::query_string(filter));
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/self/token?audience=X`: a JWT-SVID for this process's own task.
    pub async fn self_token(&self, audience: &str) -> Result<TaskToken, ClientError> {
        let q = TokenQuery {
            audience: audience.to_owned(),
        };
        let path = format!("/v1/self/token{}", super::query_string(&q));
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn get_task(&self, id: &str) -> Result<Task, ClientError> {
        self.call(Method::GET, &task_path(id), None).await
    }

    /// `GET /v1/tasks/{id}/suggestion`: the task's distinct refusals and their grants.
    pub async fn suggestion(&self, id: &str) -> Result<Refusals, ClientError> {
        let path = format!("{}/suggestion", task_path(id));
        self.call(Method::GET, &path, None).await
    }

    /// `GET /v1/tasks/{id}/suggestion?sync=true`: the refusals once the daemon has
    /// recorded what the kernel had queued (`synced` says whether it could).
    pub async fn suggestion_synced(&self, id: &str) -> Result<Refusals, ClientError> {
        let path = format!("{}/suggestion?sync=true", task_path(id));
        self.call(Method::GET, &path, None).await
    }

    /// `DELETE /v1/tasks/{id}`: ends the task.
    pub async fn end_task(&self, id: &str) -> Result<Task, ClientError> {
        self.call(Method::DELETE, &task_path(id), None).await
    }

    /// `POST /v1/tasks/{id}/attach`: the daemon tags the process that opened the
    /// connection (`SO_PEERCRED`), i.e. this one.
    pub async fn attach(&self, id: &str) -> Result<Attached, ClientError> {
        let path = format!("{}/attach", task_path(id));
        self.call(Method::POST, &path, None).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }
}
