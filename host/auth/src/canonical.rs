//! The SigV4 canonical request, rebuilt from what arrived.
//!
//! Rules (as botocore and aws-sigv4 apply them for services other than S3):
//! the path is normalised (dot segments and empty segments removed, a trailing
//! slash kept) and percent-encoded again, so `%20` on the wire becomes `%2520`;
//! query parameters are decoded (`+` is a space), re-encoded with only
//! unreserved characters left bare, and sorted; signed headers are lower-case,
//! values trimmed with inner runs of spaces collapsed, repeated headers joined
//! by commas.

use axum::http::HeaderMap;

use crate::error::AuthError;

/// Characters SigV4 leaves unencoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn encode_into(out: &mut String, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The canonical URI of a raw (as sent, percent-encoded) request path.
pub fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalised = String::with_capacity(raw_path.len() + 1);
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    let trailing = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|end| raw_path.ends_with(end));
    if normalised.is_empty() || trailing {
        normalised.push('/');
    }
    let mut out = String::with_capacity(normalised.len() + 8);
    encode_into(&mut out, normalised.as_bytes(), true);
    out
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The canonical query string of a raw query (without the `?`).
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let mut key = String::new();
            let mut value = String::new();
            encode_into(&mut key, &form_decode(k), false);
            encode_into(&mut value, &form_decode(v), false);
            (key, value)
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The canonical headers block (each `name:value\n`) for `signed`, which must
/// be lower-case, sorted and present in the request.
pub fn canonical_headers(headers: &HeaderMap, signed: &[&str]) -> Result<String, AuthError> {
    let mut out = String::new();
    for name in signed {
        let mut values = headers.get_all(*name).iter().peekable();
        if values.peek().is_none() {
            return Err(AuthError::InvalidSignature(format!(
                "signed header `{name}` is not in the request"
            )));
        }
        out.push_str(name);
        out.push(':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = value.to_str().map_err(|_| {
                AuthError::InvalidSignature(format!("signed header `{name}` is not visible ASCII"))
            })?;
            let mut words = value.split_ascii_whitespace();
            if let Some(first) = words.next() {
                out.push_str(first);
                for word in words {
                    out.push(' ');
                    out.push_str(word);
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_encoded_twice() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/dispatch"), "/dispatch");
        assert_eq!(canonical_uri("/v1//dispatch/"), "/v1/dispatch/");
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
        assert_eq!(canonical_uri("/ü"), "/%C3%BC");
    }

    #[test]
    fn query_parameters_are_decoded_reencoded_and_sorted() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("q=a+b&x=%2F&flag"), "flag=&q=a%20b&x=%2F");
        assert_eq!(canonical_query("k=%zz"), "k=%25zz");
    }

    #[test]
    fn headers_are_trimmed_collapsed_and_joined() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.com".parse().unwrap());
        headers.append("x-multi", " a   b ".parse().unwrap());
        headers.append("x-multi", "c".parse().unwrap());
        assert_eq!(
            canonical_headers(&headers, &["host", "x-multi"]).unwrap(),
            "host:example.com\nx-multi:a b,c\n"
        );
        assert!(canonical_headers(&headers, &["x-missing"]).is_err());
    }
}
