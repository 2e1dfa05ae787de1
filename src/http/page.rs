//! The Dial page as served: `assets/index.html` with the camera's name (escaped) in its
//! title and header, and the banner for a camera without a password, which names the
//! config file to set one in.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");

/// What the page says besides the picture.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageInfo<'a> {
    /// The camera's name (`[server] name`, by default the host name).
    pub camera_name: &'a str,
    /// `None`: a password is set (the page offers to log out). `Some(file)`: no password
    /// is set; the banner says so and names `file` as the place to set one.
    pub open_in: Option<&'a str>,
    /// The key that sets the password: `[server] password` (the relay's is
    /// `[relay_server] password`).
    pub password_key: &'a str,
}

/// The Dial page for `info`.
pub(crate) fn dial_page(info: PageInfo<'_>) -> Response {
    let banner = match info.open_in {
        Some(file) => format!(
            "<p id=\"open-warning\" class=\"warning\" role=\"alert\">No password is set: anyone \
             who can reach this address can watch and listen. Set <code>{}</code> in {}.</p>",
            html_escape(info.password_key),
            html_escape(file)
        ),
        None => "<form method=\"post\" action=\"logout\" class=\"logout\"><button \
                 type=\"submit\">Log out</button></form>"
            .to_owned(),
    };
    let page = INDEX_HTML
        .replace("<!--name-->", &html_escape(info.camera_name))
        .replace("<!--auth-->", &banner);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `text` safe inside HTML text and attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn the_name_is_escaped_in_title_and_header() {
        let page = body(dial_page(PageInfo {
            camera_name: "<script>alert(1)</script> & \"door\"",
            open_in: None,
            password_key: "[server] password",
        }))
        .await;
        let escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;door&quot;";
        assert!(
            page.contains(&format!("<title>{escaped} · peercam</title>")),
            "{page}"
        );
        assert!(page.contains(&format!(">{escaped}</h1>")), "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("action=\"logout\""));
        assert!(!page.contains("open-warning"));
    }

    #[tokio::test]
    async fn the_banner_names_the_file_in_use() {
        let page = body(dial_page(PageInfo {
            camera_name: "cam",
            open_in: Some("/home/pi/<my>.toml"),
            password_key: "[server] password",
        }))
        .await;
        assert!(page.contains("open-warning"), "{page}");
        assert!(
            page.contains("<code>[server] password</code> in /home/pi/&lt;my&gt;.toml."),
            "{page}"
        );
        assert!(!page.contains("/etc/peercam/peercam.toml"), "{page}");
    }
}
