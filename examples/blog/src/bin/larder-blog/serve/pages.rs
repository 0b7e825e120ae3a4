//! The server's HTML: what each page shows, rendered from plain view structs
//! so that both modes (larder and plain diesel) produce the same bytes for
//! the same data. Every user-written text is escaped.

use std::fmt::Write;

/// A post as the front page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrontItem {
    pub(crate) id: i64,
    pub(crate) title: String,
    pub(crate) author: String,
    pub(crate) comments: i64,
}

/// A post as its own page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostView {
    pub(crate) id: i64,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) version: i64,
    pub(crate) author: String,
}

/// A comment on a post page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommentView {
    pub(crate) id: i64,
    pub(crate) author: String,
    pub(crate) body: String,
}

/// The front page: the most recent posts with their authors and comment counts.
pub(crate) fn front(items: &[FrontItem]) -> String {
    let mut html = head("larder blog");
    html.push_str("<h1>larder blog</h1>\n<ul id=\"posts\">\n");
    for item in items {
        let _ = writeln!(
            html,
            "<li><a href=\"/posts/{}\">{}</a> by <span class=\"author\">{}</span>, \
             <span class=\"comments\">{} comments</span></li>",
            item.id,
            escape(&item.title),
            escape(&item.author),
            item.comments
        );
    }
    html.push_str("</ul>\n</body></html>\n");
    html
}

/// A post page: the post, its author, its comments with theirs, and the
/// forms to comment and to edit. Each comment carries `data-comment-id`,
/// which `check-pages` and `probe-coherence` read.
pub(crate) fn post(post: &PostView, comments: &[CommentView]) -> String {
    let mut html = head(&post.title);
    let _ = write!(
        html,
        "<article data-post-id=\"{}\" data-version=\"{}\">\n<h1>{}</h1>\n\
         <p class=\"author\">by {}</p>\n<div class=\"body\">{}</div>\n</article>\n\
         <h2>{} comments</h2>\n<ol id=\"comments\">\n",
        post.id,
        post.version,
        escape(&post.title),
        escape(&post.author),
        escape(&post.body),
        comments.len()
    );
    for comment in comments {
        let _ = writeln!(
            html,
            "<li id=\"c{0}\" data-comment-id=\"{0}\"><b>{1}</b>: {2}</li>",
            comment.id,
            escape(&comment.author),
            escape(&comment.body)
        );
    }
    let _ = write!(
        html,
        "</ol>\n<form method=\"post\" action=\"/posts/{0}/comments\">\
         <input name=\"author_id\" type=\"number\"> <textarea name=\"body\"></textarea> \
         <button>Comment</button></form>\n\
         <form method=\"post\" action=\"/posts/{0}/edit\">\
         <input type=\"hidden\" name=\"version\" value=\"{1}\">\
         <input name=\"title\" value=\"{2}\"> <textarea name=\"body\">{3}</textarea> \
         <button>Save</button></form>\n</body></html>\n",
        post.id,
        post.version,
        escape(&post.title),
        escape(&post.body)
    );
    html
}

/// An error page: the status and a one-line reason.
pub(crate) fn error(status: u16, message: &str) -> String {
    let mut html = head(&status.to_string());
    let _ = write!(
        html,
        "<h1>{status}</h1>\n<p>{}</p>\n</body></html>\n",
        escape(message)
    );
    html
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\n",
        escape(title)
    )
}

/// Text made safe for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// The comment ids a post page shows, in page order.
pub(crate) fn comment_ids(html: &str) -> Vec<i64> {
    const MARK: &str = "data-comment-id=\"";
    html.match_indices(MARK)
        .filter_map(|(at, _)| {
            let rest = &html[at + MARK.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_everywhere_it_appears() {
        let evil = "<script>alert(\"x\")</script> & 'y'";
        let page = post(
            &PostView {
                id: 1,
                title: evil.into(),
                body: evil.into(),
                version: 1,
                author: evil.into(),
            },
            &[CommentView {
                id: 2,
                author: evil.into(),
                body: evil.into(),
            }],
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("\"x\""), "{page}");
        let front = front(&[FrontItem {
            id: 1,
            title: evil.into(),
            author: evil.into(),
            comments: 0,
        }]);
        assert!(!front.contains("<script>"), "{front}");
    }

    #[test]
    fn comment_ids_are_read_back_from_a_post_page() {
        let comments: Vec<_> = [5, 9, 12]
            .map(|id| CommentView {
                id,
                author: "a".into(),
                body: "data-comment-id=\"77\"".into(),
            })
            .into();
        let view = PostView {
            id: 1,
            title: "t".into(),
            body: "b".into(),
            version: 3,
            author: "a".into(),
        };
        assert_eq!(comment_ids(&post(&view, &comments)), [5, 9, 12]);
    }
}
