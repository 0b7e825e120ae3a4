//! What every handler shares: the data source and the start-up's
//! pre-rendered static page.

use axum::body::Bytes;

use super::data::Data;

/// Cheap to clone: axum clones it into every request.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) data: Data,
    /// The front page as rendered at start-up, served as-is by `/static`:
    /// the ceiling a cached page is measured against (same size, no work).
    pub(crate) static_page: Bytes,
    /// `larder` or `plain`, and whether the cache is on, for `/stats`.
    pub(crate) mode: &'static str,
    pub(crate) cache: bool,
    pub(crate) pool_size: u32,
}
