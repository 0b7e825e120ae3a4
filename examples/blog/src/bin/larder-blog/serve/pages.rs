//! The server's HTML: what each page shows, rendered from plain view structs
//! so that both modes (larder and plain diesel) produce the same bytes for
//! the same data. Every user-written text is escaped.

use std::fmt::Write;

/// A post as the front page lists it, borrowing its texts from the rows
/// read for this request: the page is built from them without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrontItem<'a> {
    pub(crate) id: i64,
    pub(crate) title: &'a str,
    pub(crate) author: &'a str,
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
/// Written piece by piece into one buffer sized up front: the cached front
/// page is mostly this function's work, and formatting machinery, a
/// reallocation or a `String` per escaped text cost more than its reads.
pub(crate) fn front(items: &[FrontItem<'_>]) -> String {
    let texts: usize = items.iter().map(|i| i.title.len() + i.author.len()).sum();
    let mut html = String::with_capacity(256 + texts + items.len() * 128);
    push_head(&mut html, "larder blog");
    html.push_str("<h1>larder blog</h1>\n<ul id=\"posts\">\n");
    let mut number = itoa::Buffer::new();
    for item in items {
        html.push_str("<li><a href=\"/posts/");
        html.push_str(number.format(item.id));
        html.push_str("\">");
        escape_into(&mut html, item.title);
        html.push_str("</a> by <span class=\"author\">");
        escape_into(&mut html, item.author);
        html.push_str("</span>, <span class=\"comments\">");
        html.push_str(number.format(item.comments));
        html.push_str(" comments</span></li>\n");
    }
    html.push_str("</ul>\n</body></html>\n");
    html
}

/// A post page: the post, its author, its comments with theirs, and the
/// forms to comment and to edit. Each comment carries `data-comment-id`,
/// which `check-pages` and `probe-coherence` read.
pub(crate) fn post(post: &PostView, comments: &[CommentView]) -> String {
    // Sized and written as `front` is, for the same reason.
    let texts: usize = comments.iter().map(|c| c.author.len() + c.body.len()).sum();
    let own = 2 * (post.title.len() + post.body.len()) + post.author.len();
    let mut html = String::with_capacity(768 + own + texts + comments.len() * 64);
    let mut number = itoa::Buffer::new();
    push_head(&mut html, &post.title);
    html.push_str("<article data-post-id=\"");
    html.push_str(number.format(post.id));
    html.push_str("\" data-version=\"");
    html.push_str(number.format(post.version));
    html.push_str("\">\n<h1>");
    escape_into(&mut html, &post.title);
    html.push_str("</h1>\n<p class=\"author\">by ");
    escape_into(&mut html, &post.author);
    html.push_str("</p>\n<div class=\"body\">");
    escape_into(&mut html, &post.body);
    html.push_str("</div>\n</article>\n<h2>");
    html.push_str(number.format(comments.len()));
    html.push_str(" comments</h2>\n<ol id=\"comments\">\n");
    for comment in comments {
        let id = number.format(comment.id);
        html.push_str("<li id=\"c");
        html.push_str(id);
        html.push_str("\" data-comment-id=\"");
        html.push_str(id);
        html.push_str("\"><b>");
        escape_into(&mut html, &comment.author);
        html.push_str("</b>: ");
        escape_into(&mut html, &comment.body);
        html.push_str("</li>\n");
    }
    html.push_str("</ol>\n<form method=\"post\" action=\"/posts/");
    html.push_str(number.format(post.id));
    html.push_str(
        "/comments\"><input name=\"author_id\" type=\"number\"> \
         <textarea name=\"body\"></textarea> <button>Comment</button></form>\n\
         <form method=\"post\" action=\"/posts/",
    );
    html.push_str(number.format(post.id));
    html.push_str("/edit\"><input type=\"hidden\" name=\"version\" value=\"");
    html.push_str(number.format(post.version));
    html.push_str("\"><input name=\"title\" value=\"");
    escape_into(&mut html, &post.title);
    // HTML drops one newline after `<textarea>`: this one, not the body's.
    html.push_str("\"> <textarea name=\"body\">\n");
    escape_into(&mut html, &post.body);
    html.push_str("</textarea> <button>Save</button></form>\n</body></html>\n");
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
    let mut html = String::new();
    push_head(&mut html, title);
    html
}

fn push_head(html: &mut String, title: &str) {
    html.push_str("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>");
    escape_into(html, title);
    html.push_str("</title></head><body>\n");
}

/// Text made safe for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// [`escape`] appended to `out`: the runs between special characters are
/// copied whole, as most texts have none.
fn escape_into(out: &mut String, text: &str) {
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        // The special characters are ASCII, so `at` is a char boundary.
        out.push_str(&text[start..at]);
        out.push_str(entity);
        start = at + 1;
    }
    out.push_str(&text[start..]);
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
            title: evil,
            author: evil,
            comments: 0,
        }]);
        assert!(!front.contains("<script>"), "{front}");
    }

    /// HTML drops one newline right after `<textarea>`: a body that starts
    /// with a blank line lost it each time its post was saved through the
    /// edit form.
    #[test]
    fn the_edit_form_gives_back_a_body_that_starts_with_a_newline() {
        let view = PostView {
            id: 1,
            title: "t".into(),
            body: "\nstarts on the second line".into(),
            version: 1,
            author: "a".into(),
        };
        let page = post(&view, &[]);
        let form = &page[page.rfind("<textarea name=\"body\">").expect("edit form")..];
        let start = "<textarea name=\"body\">".len();
        let end = form.find("</textarea>").expect("end of the textarea");
        // What a browser puts in the field: the text, less one leading newline.
        let shown = form[start..end]
            .strip_prefix('\n')
            .unwrap_or(&form[start..end]);
        assert_eq!(shown, view.body);
    }

    #[test]
    fn escaping_keeps_the_text_around_the_special_characters() {
        assert_eq!(
            escape("a<b>&\"c\"'d' é"),
            "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39; é"
        );
        assert_eq!(escape(""), "");
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
