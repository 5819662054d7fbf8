//! Plays the browser on keygate's own login page, for demos, load generators and tests
//! (feature `headless`). A real app opens the authorization URL in the system browser
//! (ASWebAuthenticationSession, Custom Tabs) and never sees the password; this module
//! exists so a program can walk the same flow without one.

use url::Url;

/// Why a headless sign-in did not end in a redirect to the app.
#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    /// keygate could not be reached, or answered with something unreadable.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The page is not keygate's login page (no CSRF cookie).
    #[error("the login page set no CSRF cookie")]
    NoCookie,
    /// The form was refused (wrong password, TOTP required, throttled…).
    #[error("sign-in did not redirect back to the app (HTTP {0})")]
    NoRedirect(reqwest::StatusCode),
}

/// GETs the login page at `authorize_url`, fills in the form with `user` and `password`
/// (keeping every hidden field, the CSRF token among them), POSTs it, and returns the
/// redirect the app would receive (`…?code=…&state=…`), to pass to
/// [`crate::Client::exchange_code`].
pub async fn sign_in(
    authorize_url: &Url,
    user: &str,
    password: &str,
) -> Result<String, HeadlessError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = http.get(authorize_url.as_str()).send().await?;
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or(HeadlessError::NoCookie)?
        .to_owned();
    let html = page.text().await?;
    let mut form = hidden_fields(&html);
    form.push(("username".into(), user.into()));
    form.push(("password".into(), password.into()));
    let mut post = authorize_url.clone();
    post.set_query(None);
    let resp = http
        .post(post.as_str())
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await?;
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(HeadlessError::NoRedirect(resp.status()))
}

/// The `<input type="hidden">` fields of keygate's login form, values unescaped.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut form = Vec::new();
    for piece in html.split("<input type=\"hidden\" name=\"").skip(1) {
        let Some((name, rest)) = piece.split_once('"') else {
            continue;
        };
        let Some(value) = rest
            .split("value=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
        else {
            continue;
        };
        let value = value
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        form.push((name.to_owned(), value));
    }
    form
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_fields_are_read_and_unescaped() {
        let html = r#"<form><input type="hidden" name="csrf" value="a&amp;b">
            <input type="text" name="username" value="x">
            <input type="hidden" name="state" value="&quot;s&quot;"></form>"#;
        assert_eq!(
            hidden_fields(html),
            vec![
                ("csrf".to_owned(), "a&b".to_owned()),
                ("state".to_owned(), "\"s\"".to_owned())
            ]
        );
    }
}
