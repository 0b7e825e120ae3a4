//! `#[derive(larder::Entity)]`; see the `larder` crate.
//!
//! The derive only reads `#[larder(...)]` and checks the struct; the impl
//! itself is `larder::entity!`'s, so that both ways of declaring an entity
//! produce the same code.

#![deny(missing_docs, unreachable_pub)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::punctuated::Punctuated;
use syn::{Data, DeriveInput, Fields, LitStr, Path, Token, Type};

/// Implements `larder::Entity` for a diesel model whose table has an `id
/// BIGINT` primary key, by expanding to `larder::entity!`. The struct needs an
/// `id: i64` field, no generics, and one `#[larder(...)]` attribute with:
///
/// - `table = tags`: the module diesel's `table!` declared (a path such as
///   `schema::tags` works too); the table's SQL name (its `#[sql_name]`,
///   else the module's name) is the entity's `Entity::TABLE`; a table
///   declared in a database schema (`app.tags`) is refused;
/// - `new = NewTag`: the `Insertable` type `create` takes;
/// - `changes = TagChanges`: the `AsChangeset` type `update` takes;
/// - `deleted_with = ["posts"]` (optional): tables whose deletes cascade into
///   this one, `Entity::DELETED_WITH`.
///
/// A field marked `#[larder(key)]` (of type `i64` or `Option<i64>`, named as
/// its column in `table!`) puts the column's SQL name (its `#[sql_name]`, if
/// any) in `Entity::KEY_COLUMNS`: lists read with `larder::Read::eq` on it
/// are retired only by changes to their own rows.
///
/// The expansion names `::larder` and `::diesel`, so the crate must depend on
/// both under those names. The example below is tested on `larder::Entity`.
///
/// ```ignore
/// use diesel::prelude::*;
///
/// diesel::table! { tags (id) { id -> BigInt, post_id -> BigInt, label -> Text } }
///
/// #[derive(Debug, Queryable, larder::Entity)]
/// #[larder(table = tags, new = NewTag, changes = TagChanges, deleted_with = ["posts"])]
/// pub struct Tag { pub id: i64, #[larder(key)] pub post_id: i64, pub label: String }
///
/// #[derive(Insertable)]
/// #[diesel(table_name = tags)]
/// pub struct NewTag { pub post_id: i64, pub label: String }
///
/// #[derive(AsChangeset, Default)]
/// #[diesel(table_name = tags)]
/// pub struct TagChanges { pub label: Option<String> }
/// ```
///
/// expands to
///
/// ```text
/// ::larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges, deleted_with: ["posts"], keys: [post_id] });
/// ```
#[proc_macro_derive(Entity, attributes(larder))]
pub fn derive_entity(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// What `#[larder(...)]` says.
struct Attributes {
    table: Path,
    new: Type,
    changes: Type,
    deleted_with: Option<Punctuated<LitStr, Token![,]>>,
}

/// The struct's fields marked `#[larder(key)]`.
type Keys = Vec<syn::Ident>;

/// The derive, on parsed input: the `entity!` call, or every error found in
/// the attribute and in the struct at once.
fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    match (parse_attributes(&input), check_struct(&input)) {
        (Ok(attributes), Ok(keys)) => Ok(emit(&input.ident, &attributes, &keys)),
        (Err(mut err), Err(more)) => {
            err.combine(more);
            Err(err)
        }
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => Err(err),
    }
}

/// Reads every `#[larder(...)]` on the struct; each key at most once, and
/// `table`, `new` and `changes` required.
fn parse_attributes(input: &DeriveInput) -> syn::Result<Attributes> {
    let (mut table, mut new, mut changes, mut deleted_with) = (None, None, None, None);
    let mut last = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("larder")) {
        last = Some(attr);
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string);
            match key.as_deref() {
                Some("table") => set(&mut table, &meta, table_path(meta.value()?.parse()?)?),
                Some("new") => set(&mut new, &meta, meta.value()?.parse()?),
                Some("changes") => set(&mut changes, &meta, meta.value()?.parse()?),
                Some("deleted_with") => {
                    let value = meta.value()?;
                    let content;
                    syn::bracketed!(content in value);
                    let parents = Punctuated::parse_terminated(&content)?;
                    parents.iter().try_for_each(check_parent)?;
                    set(&mut deleted_with, &meta, parents)
                }
                _ => Err(meta.error(
                    "unknown key in #[larder(...)]: expected `table`, `new`, `changes` or `deleted_with`",
                )),
            }
        })?;
    }
    let Some(attr) = last else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(Entity)] needs #[larder(table = ..., new = ..., changes = ...)] on the struct",
        ));
    };
    let missing = |key: &str| {
        syn::Error::new_spanned(attr, format!("#[larder(...)] is missing `{key} = ...`"))
    };
    Ok(Attributes {
        table: table.ok_or_else(|| missing("table"))?,
        new: new.ok_or_else(|| missing("new"))?,
        changes: changes.ok_or_else(|| missing("changes"))?,
        deleted_with,
    })
}

/// A `deleted_with` table must be named as its capture triggers report it:
/// a plain SQL name (letters, digits and `_`, not starting with a digit),
/// without a schema. Any other name matches no delete.
fn check_parent(parent: &LitStr) -> syn::Result<()> {
    let name = parent.value();
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_well && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        parent,
        "a `deleted_with` table is named by its plain SQL name, as its capture triggers \
         report it (`\"posts\"`, not `\"blog.posts\"`): any other name matches no delete",
    ))
}

/// Stores a key's value, refusing a second one.
fn set<T>(
    slot: &mut Option<T>,
    meta: &syn::meta::ParseNestedMeta<'_>,
    value: T,
) -> syn::Result<()> {
    if slot.replace(value).is_some() {
        return Err(meta.error("this key is given twice in #[larder(...)]"));
    }
    Ok(())
}

/// `table` as `entity!` takes it: plain segments, as in `tags` or `schema::tags`.
fn table_path(path: Path) -> syn::Result<Path> {
    let plain = path.leading_colon.is_none() && path.segments.iter().all(|s| s.arguments.is_none());
    if !plain {
        return Err(syn::Error::new_spanned(
            path,
            "`table` names the module of diesel's `table!`, as in `tags` or `schema::tags`",
        ));
    }
    Ok(path)
}

/// The struct must be one `entity!` can implement `Entity` for: named fields,
/// no generics, an `id: i64` field; returns its key fields.
fn check_struct(input: &DeriveInput) -> syn::Result<Keys> {
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => fields,
            _ => {
                return Err(syn::Error::new(
                    input.ident.span(),
                    "#[derive(Entity)] needs a struct with named fields, one of them `id: i64`",
                ))
            }
        },
        Data::Enum(data) => return Err(not_a_struct(data.enum_token.span)),
        Data::Union(data) => return Err(not_a_struct(data.union_token.span)),
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "an entity cannot be generic: larder caches each entity as one concrete `'static` type",
        ));
    }
    let id = fields
        .named
        .iter()
        .find(|f| f.ident.as_ref().is_some_and(|i| i == "id"));
    let Some(id) = id else {
        return Err(syn::Error::new(
            input.ident.span(),
            "an entity needs an `id: i64` field, its table's BIGINT primary key",
        ));
    };
    if !is_i64(&id.ty) {
        return Err(syn::Error::new_spanned(
            &id.ty,
            "the `id` field must be `i64`, its table's BIGINT primary key",
        ));
    }
    key_fields(fields)
}

/// The fields marked `#[larder(key)]`: each `i64` or `Option<i64>`, not `id`.
fn key_fields(fields: &syn::FieldsNamed) -> syn::Result<Keys> {
    let mut keys = Keys::new();
    for field in &fields.named {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("larder")) {
            attr.parse_nested_meta(|meta| {
                if !meta.path.is_ident("key") {
                    return Err(
                        meta.error("unknown key in a field's #[larder(...)]: expected `key`")
                    );
                }
                let Some(ident) = field.ident.clone().filter(|i| i != "id") else {
                    return Err(meta.error("`id` is the primary key, not a key column"));
                };
                if !(is_i64(&field.ty) || is_option_i64(&field.ty)) {
                    return Err(syn::Error::new_spanned(
                        &field.ty,
                        "a #[larder(key)] field must be `i64` or `Option<i64>`",
                    ));
                }
                if keys.contains(&ident) {
                    return Err(meta.error("this field is marked #[larder(key)] twice"));
                }
                keys.push(ident);
                Ok(())
            })?;
        }
    }
    Ok(keys)
}

/// `Option<i64>` (any path ending so).
fn is_option_i64(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    last.ident == "Option"
        && args.args.len() == 1
        && matches!(args.args.first(), Some(syn::GenericArgument::Type(inner)) if is_i64(inner))
}

fn not_a_struct(span: Span) -> syn::Error {
    syn::Error::new(span, "#[derive(Entity)] applies to structs only")
}

/// `i64`, `std::primitive::i64` and the like: a path whose last segment is `i64`.
fn is_i64(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "i64" && last.arguments.is_none())
}

/// The `larder::entity!` call.
fn emit(model: &syn::Ident, attributes: &Attributes, keys: &Keys) -> TokenStream2 {
    let Attributes {
        table,
        new,
        changes,
        deleted_with,
    } = attributes;
    let deleted_with = deleted_with
        .as_ref()
        .map(|parents| quote!(, deleted_with: [#parents]));
    let keys = (!keys.is_empty()).then(|| quote!(, keys: [#(#keys),*]));
    quote! {
        ::larder::entity!(#model { table: #table, new: #new, changes: #changes #deleted_with #keys });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(source: &str) -> Result<String, String> {
        let input = syn::parse_str(source).unwrap();
        expand(input)
            .map(|tokens| tokens.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn expands_to_the_entity_macro() {
        let expanded = expand_str(
            r#"#[larder(table = tags, new = NewTag, changes = TagChanges, deleted_with = ["posts"])]
               pub struct Tag { pub id: i64, pub post_id: i64, pub label: String }"#,
        );
        let expected = quote! {
            ::larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges, deleted_with: ["posts"] });
        };
        assert_eq!(expanded, Ok(expected.to_string()));
    }

    #[test]
    fn deleted_with_is_optional_and_table_may_be_a_path() {
        let expanded = expand_str(
            "#[derive(Debug)] #[larder(table = schema::tags)] #[larder(new = NewTag, changes = TagChanges)]
             struct Tag { id: std::primitive::i64 }",
        );
        let expected = quote! {
            ::larder::entity!(Tag { table: schema::tags, new: NewTag, changes: TagChanges });
        };
        assert_eq!(expanded, Ok(expected.to_string()));
    }

    #[test]
    fn key_fields_become_keys() {
        let expanded = expand_str(
            "#[larder(table = tags, new = NewTag, changes = TagChanges)]
             struct Tag { id: i64, #[larder(key)] post_id: i64, #[larder(key)] parent_id: Option<i64>, label: String }",
        );
        let expected = quote! {
            ::larder::entity!(Tag { table: tags, new: NewTag, changes: TagChanges, keys: [post_id, parent_id] });
        };
        assert_eq!(expanded, Ok(expected.to_string()));
    }

    #[test]
    fn refuses_what_entity_cannot_implement() {
        let cases = [
            ("struct Tag { id: i64 }", "needs #[larder(table"),
            ("#[larder(table = tags, new = N)] struct Tag { id: i64 }", "missing `changes = ...`"),
            ("#[larder(table = tags, new = N, changes = C, cache = 1)] struct Tag { id: i64 }", "unknown key"),
            ("#[larder(table = tags, table = tags)] struct Tag { id: i64 }", "given twice"),
            ("#[larder(table = ::tags, new = N, changes = C)] struct Tag { id: i64 }", "module of diesel's `table!`"),
            ("#[larder(table = t, new = N, changes = C, deleted_with = [posts])] struct Tag { id: i64 }", "expected string literal"),
            ("#[larder(table = t, new = N, changes = C, deleted_with = [\"blog.posts\"])] struct Tag { id: i64 }", "plain SQL name"),
            ("#[larder(table = t, new = N, changes = C, deleted_with = [\"posts \"])] struct Tag { id: i64 }", "plain SQL name"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag(i64);", "named fields"),
            ("#[larder(table = t, new = N, changes = C)] enum Tag { A }", "structs only"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag<T> { id: i64, t: T }", "cannot be generic"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag<'a> { id: i64, s: &'a str }", "cannot be generic"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { key: i64 }", "needs an `id: i64` field"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { id: i32 }", "must be `i64`"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { id: Option<i64> }", "must be `i64`"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { id: i64, #[larder(key)] label: String }", "must be `i64` or `Option<i64>`"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { #[larder(key)] id: i64 }", "not a key column"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { id: i64, #[larder(index)] post_id: i64 }", "expected `key`"),
            ("#[larder(table = t, new = N, changes = C)] struct Tag { id: i64, #[larder(key, key)] post_id: i64 }", "twice"),
        ];
        for (source, message) in cases {
            let err = expand_str(source).expect_err(source);
            assert!(err.contains(message), "{source}: {err}");
        }
    }

    #[test]
    fn reports_the_attribute_and_the_struct_errors_together() {
        let input = syn::parse_str("#[larder(table = t)] struct Tag { id: u64 }").unwrap();
        let messages: Vec<String> = expand(input)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("missing `new = ...`") && messages[1].contains("must be `i64`")
        );
    }
}
