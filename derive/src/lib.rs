//! `#[derive(larder::Entity)]`; see the `larder` crate.

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]

use proc_macro::TokenStream;

/// Placeholder until the derive is written.
#[proc_macro_derive(Entity, attributes(larder))]
pub fn derive_entity(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
