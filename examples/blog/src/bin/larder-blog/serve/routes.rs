//! The server's routes and their handlers: HTTP in, [`Data`] calls, pages out.
//! Every failure becomes a status here, through [`Failure`]'s one mapping.

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::data::Failure;
use super::pages;
use super::state::AppState;

/// The server's router; `debug_routes` adds the routes that break things on
/// purpose.
pub(crate) fn router(state: AppState, debug_routes: bool) -> Router {
    let mut router = Router::new()
        .route("/", get(front_page))
        .route("/posts/{id}", get(post_page))
        .route("/posts/{id}/comments", post(add_comment))
        .route("/posts/{id}/edit", post(edit_post))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/static", get(static_page));
    if debug_routes {
        router = router.route("/debug/panic-in-tx", post(panic_in_tx));
    }
    router
        .layer(axum::middleware::map_response(forbid_sniffing))
        .with_state(state)
}

/// Every answer, axum's own rejections included (`text/plain` pages that
/// quote the path or form the client sent), is read as the type it says:
/// a browser that sniffed such a page as HTML would run what the URL held.
async fn forbid_sniffing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let shown = if status.is_server_error() {
            // The database's own words (tables, SQL, the driver's message)
            // are for the operator's log, not for whoever sent the request.
            tracing::warn!(status = self.status, error = %self.message, "request failed");
            server_error_text(status)
        } else {
            &self.message
        };
        let mut response = (status, Html(pages::error(self.status, shown))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Transient by definition (see data::status_of): tell clients when to retry.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a client is told of a server error: whether retrying may help.
fn server_error_text(status: StatusCode) -> &'static str {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        "the database is busy or out of reach; try again in a moment"
    } else {
        "the server failed to answer this request; its log says why"
    }
}

async fn front_page(State(state): State<AppState>) -> Result<Html<String>, Failure> {
    Ok(Html(state.data.front_page().await?))
}

async fn post_page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Html<String>, Failure> {
    match state.data.post_page(id).await? {
        Some((post, comments)) => Ok(Html(pages::post(&post, &comments))),
        None => Err(Failure::new(404, format!("posts {id} not found"))),
    }
}

#[derive(Deserialize)]
struct CommentForm {
    author_id: i64,
    body: String,
}

/// 303 to the post page, whose fragment names the new comment so a client
/// (`probe-coherence`) knows which id to look for.
async fn add_comment(
    State(state): State<AppState>,
    Path(post_id): Path<i64>,
    Form(form): Form<CommentForm>,
) -> Result<Redirect, Failure> {
    storable("body", &form.body, MAX_COMMENT_BYTES)?;
    filled("body", &form.body)?;
    let author_id = form.author_id;
    let id = state
        .data
        .add_comment(post_id, author_id, form.body)
        .await
        .map_err(|failure| refused_comment(failure, author_id))?;
    Ok(Redirect::to(&format!("/posts/{post_id}#c{id}")))
}

/// A comment's 409 in words its writer can act on: the one constraint a
/// comment can break is a foreign key, and its post was found just before.
fn refused_comment(failure: Failure, author_id: i64) -> Failure {
    if failure.status != 409 {
        return failure;
    }
    Failure::new(
        409,
        format!("users {author_id} not found: a comment needs an existing author"),
    )
}

#[derive(Deserialize)]
struct EditForm {
    title: String,
    body: String,
    version: i64,
}

async fn edit_post(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Form(form): Form<EditForm>,
) -> Result<Redirect, Failure> {
    storable("title", &form.title, MAX_TITLE_BYTES)?;
    filled("title", &form.title)?;
    one_line("title", &form.title)?;
    storable("body", &form.body, usize::MAX)?;
    state
        .data
        .edit_post(id, form.version, form.title, form.body)
        .await?;
    Ok(Redirect::to(&format!("/posts/{id}")))
}

/// The longest title the server takes: MySQL's `TEXT`, the smallest column
/// a backend gives it (post bodies are `LONGTEXT` there, bounded by axum's
/// 2 MB request limit; comments by [`MAX_COMMENT_BYTES`]).
const MAX_TITLE_BYTES: usize = 65_535;

/// The longest comment the server takes. A post page shows every comment
/// in full, so each one is paid for by every reader of its post: at axum's
/// 2 MB body limit, 30 requests made one post page 60 MB.
const MAX_COMMENT_BYTES: usize = 16_384;

/// Refuses, as a 422 and before anything is written, text that some backend
/// cannot store: a NUL (PostgreSQL's text holds none) or more than
/// `max_bytes`. Every backend gives the same answer to the same request.
fn storable(field: &str, text: &str, max_bytes: usize) -> Result<(), Failure> {
    if text.contains('\0') {
        return Err(Failure::new(422, format!("{field} holds a NUL character")));
    }
    if text.len() > max_bytes {
        return Err(Failure::new(
            422,
            format!(
                "{field} is {} bytes, over the {max_bytes} allowed",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Refuses, as a 422, text that is empty or only white space: a comment
/// box submitted empty, a title field cleared by mistake (the front page
/// would list the post as a link with no text to click).
fn filled(field: &str, text: &str) -> Result<(), Failure> {
    if text.trim().is_empty() {
        return Err(Failure::new(422, format!("{field} is empty")));
    }
    Ok(())
}

/// Refuses, as a 422, text holding a line break: the edit form shows a
/// title in an `<input>`, whose value a browser gives back without them, so
/// such a title would change at every save through the form.
fn one_line(field: &str, text: &str) -> Result<(), Failure> {
    if text.contains(['\n', '\r']) {
        return Err(Failure::new(422, format!("{field} holds a line break")));
    }
    Ok(())
}

/// 200 `ok` when a pooled connection answers, else the failure (503 while
/// the database is unreachable): a load balancer stops sending traffic to a
/// process that could only fail it.
async fn health(State(state): State<AppState>) -> Result<&'static str, Failure> {
    state.data.health().await?;
    Ok("ok")
}

async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let pool = state.data.pool_state();
    Json(serde_json::json!({
        "mode": state.mode,
        "cache": state.cache,
        "pool": {
            "size": state.pool_size,
            "connections": pool.connections,
            "idle": pool.idle,
            "in_use": pool.connections.saturating_sub(pool.idle),
        },
        "larder": state.data.cache_stats(),
    }))
}

async fn static_page(State(state): State<AppState>) -> Html<Bytes> {
    Html(state.static_page.clone())
}

async fn panic_in_tx(State(state): State<AppState>) -> Result<&'static str, Failure> {
    state.data.panic_in_tx().await?;
    Ok("did not panic")
}
