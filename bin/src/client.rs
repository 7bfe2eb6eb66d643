//! A minimal client of the nimbus API: logs in with a password and sends JSON requests with the token.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach nimbus at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} answered {status}: {message}")]
    Api { method: Method, path: String, status: StatusCode, message: String },
    #[error("the login answer had no X-Subject-Token header")]
    NoToken,
}

/// A logged-in session with a nimbus cloud.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// The `message` of an OpenStack error body, whatever its outer key, or the raw text.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    parsed
        .as_ref()
        .and_then(|v| v.as_object())
        .and_then(|o| o.values().next())
        .and_then(|inner| inner.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("a plain HTTP client")
}

impl Client {
    /// Logs in as `user` with a token scoped to `project`.
    pub async fn login(base: &str, user: &str, password: &str, project: &str) -> Result<Client, ClientError> {
        let http = http_client();
        let base = base.trim_end_matches('/').to_string();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }});
        let url = format!("{base}/identity/v3/auth/tokens");
        let response = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url: base.clone(), source })?;
        let status = response.status();
        let token = response.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string);
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ClientError::Api {
                method: Method::POST,
                path: "/identity/v3/auth/tokens".into(),
                status,
                message: error_message(&text),
            });
        }
        Ok(Client { http, base, token: token.ok_or(ClientError::NoToken)? })
    }

    /// The same session on a connection pool of its own, so its connections are made (and driven) on the
    /// runtime that first uses them.
    pub fn with_own_connections(&self) -> Client {
        Client { http: http_client(), base: self.base.clone(), token: self.token.clone() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends a request and returns the status and the raw body, whatever the status.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).header("x-auth-token", &self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response =
            request.send().await.map_err(|source| ClientError::Unreachable { url: self.base.clone(), source })?;
        let status = response.status();
        Ok((status, response.bytes().await.unwrap_or_default()))
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty), whatever the status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Sends a request and fails on any non-2xx answer, with the API's message.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let (status, value) = self.raw(method.clone(), path, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(ClientError::Api { method, path: path.to_string(), status, message: error_message(&value.to_string()) })
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// A GET whose answer is read straight into `T` (only the fields `T` names), for callers that poll.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(Method::GET, path, None).await?;
        let failed = |message| ClientError::Api { method: Method::GET, path: path.to_string(), status, message };
        if !status.is_success() {
            return Err(failed(error_message(&String::from_utf8_lossy(&bytes))));
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("unexpected answer: {e}")))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::DELETE, path, None).await
    }
}
