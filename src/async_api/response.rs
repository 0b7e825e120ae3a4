//! Errors as HTTP responses (cargo feature `axum`), so that `?` works in an
//! axum handler returning `Result<_, larder::Error>`.

use axum_core::response::{IntoResponse, Response};
use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;

use crate::error::Error;

/// [`Error::status_code`] with a plain-text body, and `Retry-After: 1` on a
/// 503. A client error (404, 409, 400, 422) carries the error's `Display`
/// text, which says what to change, except a refused write's database
/// message and constraint name (a 409 reads `conflict writing users 3:
/// Unique`, a 422 `value refused on users: a column cannot hold it`), which
/// describe the schema and are logged at DEBUG; a server error carries only its status's
/// reason ("Service Unavailable", "Internal Server Error"), since its text
/// names the database's host, user, tables or SQL, which are no client's
/// business: it is logged at WARN instead. An axum handler returning
/// `Result<_, larder::Error>` then uses `?` on every larder call:
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
        let body = if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
            status
                .canonical_reason()
                .unwrap_or("Server Error")
                .to_owned()
        } else {
            client_text(&self)
        };
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a client is told of a client error. A refused write (409, 422)
/// names the write and the kind of refusal, not the database's message or
/// constraint: those describe the schema (PostgreSQL's DETAIL even quotes
/// the conflicting row's key), so they go to the log at DEBUG instead.
fn client_text(error: &Error) -> String {
    match error {
        Error::Conflict {
            table, id, kind, ..
        } => {
            tracing::debug!(error = %error, "write refused");
            let conflict = Error::Conflict {
                table: *table,
                id: *id,
                kind: *kind,
                constraint: None,
                source: None,
            };
            conflict.to_string()
        }
        Error::InvalidValue { table, .. } => {
            tracing::debug!(error = %error, "value refused");
            let on = table
                .map(|table| format!(" on {table}"))
                .unwrap_or_default();
            format!("value refused{on}: a column cannot hold it")
        }
        _ => error.to_string(),
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

    fn body_of(response: Response) -> String {
        let read = axum::body::to_bytes(response.into_body(), usize::MAX);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        String::from_utf8(runtime.block_on(read).unwrap().to_vec()).unwrap()
    }

    /// The database's own words (PostgreSQL's DETAIL with the other row's
    /// key, MySQL's column and database names, constraint names) describe
    /// the schema, not what the client sent: a 409 or 422 says what kind
    /// of refusal it was, and the log keeps the rest.
    #[test]
    fn a_refused_write_shows_the_client_no_database_text() {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        let inside = "duplicate key value violates unique constraint \"users_email_key\"";
        let refusal = || {
            DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                Box::new(inside.to_owned()),
            )
        };
        let conflict = Error::Conflict {
            table: Some("users"),
            id: Some(3),
            kind: crate::ConflictKind::Unique,
            constraint: Some("users_email_key".into()),
            source: Some(refusal()),
        };
        let invalid = Error::InvalidValue {
            table: Some("users"),
            source: refusal(),
        };
        for (error, status) in [(conflict, 409), (invalid, 422)] {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            let body = body_of(response);
            assert!(!body.contains("users_email_key"), "{body}");
            assert!(!body.contains("duplicate key"), "{body}");
            assert!(
                body.contains("users"),
                "says which write was refused: {body}"
            );
        }
    }

    #[test]
    fn a_server_error_tells_the_client_its_status_and_nothing_inside() {
        let inside = "table larder_secret_table on host db-7.internal";
        let failed = Error::Migration {
            message: inside.into(),
        };
        let response = failed.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body_of(response), "Internal Server Error");

        let conflict = Error::version_mismatch("posts", 3, 1, 2);
        let shown = conflict.to_string();
        assert_eq!(
            body_of(conflict.into_response()),
            shown,
            "a client error says what happened"
        );
    }
}
