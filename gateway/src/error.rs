//! The gateway's one error type.

use axum::http::StatusCode;

/// Everything the gateway's IPFS side answers with other than content, and
/// what starting it can fail with. Every variant prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A malformed CID, parameter or header: 400.
    #[error("{0}")]
    BadRequest(String),
    /// No such content (or path inside it): 404.
    #[error("{0}")]
    NotFound(String),
    /// A private file: never served in plaintext here: 403.
    #[error("{0}")]
    Private(String),
    /// A `Range` no byte satisfies: 416 (with the file's size).
    #[error("the range is outside the file's {size} bytes")]
    Unsatisfiable { size: u64 },
    /// The network failed or sent what does not verify: 502.
    #[error("{0}")]
    Upstream(String),
    /// Too many fetches at once: 503.
    #[error("{0}")]
    Busy(String),
    /// The gateway's configuration or home.
    #[error("{0}")]
    Config(String),
    /// Local I/O (the cache, the metadata store): 500.
    #[error("{0}")]
    Io(String),
}

impl GatewayError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Private(_) => StatusCode::FORBIDDEN,
            GatewayError::Unsatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Config(_) | GatewayError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A client library error, as the IPFS side answers it.
    pub fn from_client(cid: &str, e: crowd_client::Error) -> Self {
        use crowd_client::Error as E;
        match e {
            E::NotFound(line) => GatewayError::NotFound(line),
            E::Private(_) | E::NeedsCapability(_) => GatewayError::Private(format!(
                "{cid} is a private file: it is served only to its capability's holders (crowd get crowd:…)"
            )),
            E::Input(line) => GatewayError::BadRequest(line),
            E::Io(line) => GatewayError::Io(line),
            other => GatewayError::Upstream(other.to_string()),
        }
    }
}

impl axum::response::IntoResponse for GatewayError {
    fn into_response(self) -> axum::response::Response {
        let mut response = crowd_web::error(self.status(), &self.to_string());
        if let GatewayError::Unsatisfiable { size } = self {
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!("bytes */{size}")) {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONTENT_RANGE, v);
            }
        }
        response
    }
}
