//! The HTTP front end: decode, forward to the owner, await the reply, encode. Nothing here
//! knows the state; every route is one [`Request`] (docs/sandboxd-api.md).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::{bad, ApiError};
use crate::model::Event;
use crate::owner::{Msg, Reply, Request};

/// The OpenAPI document (kept in docs/, a test checks the served copy is the same file).
pub const OPENAPI: &str = include_str!("../../docs/sandboxd-openapi.json");

/// What every handler gets: the owner's channel and the event bus.
#[derive(Clone)]
pub struct AppState {
    /// Requests to the owner.
    pub tx: mpsc::UnboundedSender<Msg>,
    /// Events, one per change.
    pub events: broadcast::Sender<Event>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &serde_json::json!({"message": self.message()}))
    }
}

fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn call<T>(st: &AppState, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    st.tx
        .send(Msg::Api(make(tx)))
        .map_err(|_| ApiError::Unavailable("sandboxd is shutting down".into()))?;
    rx.await
        .map_err(|_| ApiError::Internal("the request was dropped".into()))?
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(bad("missing JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn reply<T: Serialize>(status: StatusCode, r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => json_response(status, &v),
        Err(e) => e.into_response(),
    }
}

fn no_content(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], "OK").into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list_networks(State(st): State<AppState>) -> Response {
    // Networks dockerd created through the Docker plugin face (crate::docker), read under its
    // lock, which a plugin call may hold for a while: off the async workers.
    let docker = tokio::task::spawn_blocking(crate::docker::api_networks);
    let r = call(&st, Request::ListNetworks).await;
    let docker = docker.await.unwrap_or_default();
    let r = r.map(|mut v| {
        v.extend(docker);
        v
    });
    reply(StatusCode::OK, r)
}

async fn create_network(State(st): State<AppState>, body: Bytes) -> Response {
    let r = match decode(&body) {
        Ok(req) => call(&st, |r| Request::CreateNetwork(req, r)).await,
        Err(e) => Err(e),
    };
    reply(StatusCode::CREATED, r)
}

async fn get_network(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    reply(
        StatusCode::OK,
        call(&st, |r| Request::GetNetwork(name, r)).await,
    )
}

async fn delete_network(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    no_content(call(&st, |r| Request::DeleteNetwork(name, r)).await)
}

async fn list_sandboxes(State(st): State<AppState>) -> Response {
    let docker = tokio::task::spawn_blocking(crate::docker::api_sandboxes);
    let r = call(&st, Request::ListSandboxes).await;
    let docker = docker.await.unwrap_or_default();
    let r = r.map(|mut v| {
        v.extend(docker);
        v
    });
    reply(StatusCode::OK, r)
}

async fn create_sandbox(State(st): State<AppState>, body: Bytes) -> Response {
    let r = match decode(&body) {
        Ok(req) => call(&st, |r| Request::CreateSandbox(req, r)).await,
        Err(e) => Err(e),
    };
    reply(StatusCode::CREATED, r)
}

async fn get_sandbox(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    reply(
        StatusCode::OK,
        call(&st, |r| Request::GetSandbox(name, r)).await,
    )
}

async fn delete_sandbox(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    no_content(call(&st, |r| Request::DeleteSandbox(name, r)).await)
}

async fn connect(State(st): State<AppState>, Path(name): Path<String>, body: Bytes) -> Response {
    let r = match decode(&body) {
        Ok(req) => call(&st, |r| Request::Connect(name, req, r)).await,
        Err(e) => Err(e),
    };
    reply(StatusCode::CREATED, r)
}

async fn disconnect(
    State(st): State<AppState>,
    Path((name, network)): Path<(String, String)>,
) -> Response {
    no_content(call(&st, |r| Request::Disconnect(name, network, r)).await)
}

async fn repair(State(st): State<AppState>) -> Response {
    let mut r = call(&st, Request::Repair).await;
    // Docker's networks and endpoints (`--docker-plugin`) live beside the owner's.
    if let Ok(report) = &mut r {
        match tokio::task::spawn_blocking(crate::docker::repair).await {
            Ok(actions) => report.actions.extend(actions),
            Err(e) => report.actions.push(format!("docker repair failed: {e}")),
        }
    }
    reply(StatusCode::OK, r)
}

async fn events(State(st): State<AppState>) -> Response {
    let rx = st.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx));
                }
                // A slow reader missed events; carry on with the next ones.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::NotFound(format!("no such endpoint: {method} {}", uri.path())).into_response()
}

async fn not_allowed(method: Method, uri: Uri) -> Response {
    let e =
        serde_json::json!({"message": format!("method {method} is not allowed on {}", uri.path())});
    json_response(StatusCode::METHOD_NOT_ALLOWED, &e)
}

/// The router of API v1.
pub fn router(st: AppState) -> Router {
    Router::new()
        .route("/v1/_ping", get(ping))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(get_network).delete(delete_network),
        )
        .route("/v1/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route(
            "/v1/sandboxes/{name}",
            get(get_sandbox).delete(delete_sandbox),
        )
        .route("/v1/sandboxes/{name}/endpoints", post(connect))
        .route(
            "/v1/sandboxes/{name}/endpoints/{network}",
            delete(disconnect),
        )
        .route("/v1/_repair", post(repair))
        .route("/v1/events", get(events))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(st)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every route of the router is documented, and nothing else is.
    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
        paths.sort();
        let mut want = vec![
            "/v1/_ping",
            "/v1/openapi.json",
            "/v1/networks",
            "/v1/networks/{name}",
            "/v1/sandboxes",
            "/v1/sandboxes/{name}",
            "/v1/sandboxes/{name}/endpoints",
            "/v1/sandboxes/{name}/endpoints/{network}",
            "/v1/_repair",
            "/v1/events",
        ];
        want.sort();
        assert_eq!(paths, want);
        for schema in [
            "Network",
            "Sandbox",
            "Endpoint",
            "Event",
            "RepairReport",
            "Error",
        ] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
    }
}
