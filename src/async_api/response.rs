//! Errors as HTTP responses (cargo feature `axum`), so that `?` works in an
//! axum handler returning `Result<_, larder::Error>`.

use axum_core::response::{IntoResponse, Response};
use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;

use crate::error::Error;

/// [`Error::status_code`] with the error's `Display` text as a plain-text
/// body (which never holds a password), and `Retry-After: 1` on a 503. An
/// axum handler returning `Result<_, larder::Error>` then uses `?` on every
/// larder call:
///
/// ```
/// use axum::extract::{Path, State};
/// use larder_blog::User;
///
/// async fn user_name(
///     State(store): State<larder::Store>,
///     Path(id): Path<i64>,
/// ) -> Result<String, larder::Error> {
///     let user = store.async_repo::<User>().get(id).await?; // a hit never leaves this thread
///     let user = user.ok_or(larder::Error::NotFound { table: "users", id })?; // 404
///     Ok(user.name.clone())
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = larder_blog::open(dir.path().join("doc.db").to_str().unwrap())?;
/// let app: axum::Router = axum::Router::new()
///     .route("/users/{id}", axum::routing::get(user_name))
///     .with_state(store); // Store is Clone: one per process, shared by every handler
/// # Ok::<(), larder::Error>(())
/// ```
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.to_string()).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_and_body_come_from_the_error() {
        let response = Error::version_mismatch("posts", 3, 1, 2).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(response.headers().get(RETRY_AFTER).is_none());
        let response = Error::NotFound {
            table: "users",
            id: 9,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
