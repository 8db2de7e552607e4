//! List query strings: `page`, `per_page`, `q`, `sort` and a resource's
//! filters, read strictly. Anything unknown, repeated or malformed is a 400
//! that names the parameter, so a typo never silently returns everything.

use strata_db::repo::{ListParams, Spec};

use super::error::AppError;

/// The largest `page` accepted: far beyond any real list, small enough that
/// `page * per_page` never overflows anything downstream.
pub const MAX_PAGE: u32 = 10_000_000;
/// The longest `q` accepted, in characters.
pub const MAX_Q: usize = 200;

/// Reads a list request's query string for the resource `spec` describes.
pub fn parse_list(spec: &'static Spec, raw: Option<&str>) -> Result<ListParams, AppError> {
    let raw = raw.unwrap_or("");
    // `form_urlencoded` decodes bytes that are not UTF-8 into U+FFFD; a
    // client that sent them meant something else, so say so.
    if percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .is_err()
    {
        return Err(AppError::bad_request(
            "the query string is not valid UTF-8 once percent-decoded",
        ));
    }
    let mut params = spec.default_params();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        if seen.iter().any(|s| *s == name) {
            return Err(AppError::bad_param(&name, "is given more than once"));
        }
        // No database text holds NUL (PostgreSQL refuses it).
        if name.contains('\0') || value.contains('\0') {
            return Err(AppError::bad_param(
                &name,
                "must not contain NUL characters",
            ));
        }
        seen.push(name.to_string());
        match name.as_ref() {
            "page" => {
                params.page = value
                    .parse::<u32>()
                    .ok()
                    .filter(|p| (1..=MAX_PAGE).contains(p))
                    .ok_or_else(|| {
                        AppError::bad_param(
                            "page",
                            format!("must be an integer from 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            "per_page" => {
                params.per_page = value
                    .parse::<u32>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| {
                        AppError::bad_param("per_page", "must be an integer from 1 to 100")
                    })?;
            }
            "q" => {
                if value.chars().count() > MAX_Q {
                    return Err(AppError::bad_param(
                        "q",
                        format!("must be at most {MAX_Q} characters"),
                    ));
                }
                let q = value.trim();
                params.q = (!q.is_empty()).then(|| q.to_owned());
            }
            "sort" => {
                let (sort, descending) = spec
                    .parse_sort(&value)
                    .map_err(|e| AppError::bad_param("sort", e))?;
                params.sort = sort;
                params.descending = descending;
            }
            other => {
                let Some(filter) = spec.filter(other) else {
                    let mut known = vec!["page", "per_page", "q", "sort"];
                    known.extend(spec.filters.iter().map(|f| f.name));
                    return Err(AppError::bad_param(
                        other,
                        format!(
                            "is not a parameter of this list; known: {}",
                            known.join(", ")
                        ),
                    ));
                };
                params.filters.push(
                    filter
                        .parse(&value)
                        .map_err(|e| AppError::bad_param(other, e))?,
                );
            }
        }
    }
    Ok(params)
}

/// The cache key of a parsed list request: the same query in any parameter
/// order, or with defaults spelled out, gives the same key; different
/// queries never share one (strings are written escaped, filters sorted).
pub fn list_key(params: &ListParams) -> String {
    use std::fmt::Write;
    // Built piece by piece rather than with one `format!`: this runs on
    // every list read, and the formatting machinery was most of its cost.
    let mut key = String::with_capacity(64);
    let mut number = itoa::Buffer::new();
    key.push_str("list:p=");
    key.push_str(number.format(params.page));
    key.push_str("&n=");
    key.push_str(number.format(params.per_page));
    key.push_str("&s=");
    if params.descending {
        key.push('-');
    }
    key.push_str(params.sort.field);
    key.push_str("&q=");
    // Quoted and escaped (`Debug`), so a search's own `&` or `=` cannot
    // make two different lists' keys equal. Writing into a String cannot fail.
    let _ = write!(key, "{:?}", params.q);
    key.push_str("&f=");
    if !params.filters.is_empty() {
        let mut filters: Vec<String> = params.filters.iter().map(|f| format!("{f:?}")).collect();
        filters.sort_unstable();
        key.push_str(&filters.join("&"));
    }
    key
}

/// The key of the window a live list is served from: [`list_key`] without the page and
/// page size, since one window serves every page of its list.
pub fn window_key(params: &ListParams) -> String {
    let key = list_key(params);
    match key.find("&s=") {
        Some(i) => format!("win:{}", &key[i + 1..]),
        None => key,
    }
}

#[cfg(test)]
mod tests {
    use strata_db::model::{Contact, Deal};
    use strata_db::repo::Resource;

    use super::*;

    fn key<R: Resource>(raw: &str) -> String {
        list_key(&parse_list(&R::SPEC, Some(raw)).expect(raw))
    }

    /// The key text is what earlier versions wrote with one `format!`, so
    /// instances of both share their cached lists during an upgrade.
    #[test]
    fn list_keys_keep_their_format() {
        let formatted = |p: &ListParams| {
            let mut filters: Vec<String> = p.filters.iter().map(|f| format!("{f:?}")).collect();
            filters.sort_unstable();
            format!(
                "list:p={}&n={}&s={}{}&q={:?}&f={}",
                p.page,
                p.per_page,
                if p.descending { "-" } else { "" },
                p.sort.field,
                p.q,
                filters.join("&")
            )
        };
        for raw in [
            "",
            "page=10000000&per_page=100",
            "sort=amount_cents&q=%22a%26b%3D%22",
            "stage=won&open=false&sort=-amount_cents&page=3",
        ] {
            let params = parse_list(&Deal::SPEC, Some(raw)).expect(raw);
            assert_eq!(list_key(&params), formatted(&params), "{raw}");
        }
    }

    #[test]
    fn list_keys_ignore_order_and_spelled_out_defaults() {
        assert_eq!(
            key::<Deal>("stage=won&open=false&sort=-amount_cents"),
            key::<Deal>("sort=-amount_cents&open=false&stage=won&page=1&per_page=20")
        );
        assert_eq!(key::<Contact>(""), key::<Contact>("sort=-created_at"));
        assert_eq!(key::<Contact>("q=%20ann%20"), key::<Contact>("q=ann"));
    }

    #[test]
    fn different_lists_get_different_keys() {
        let keys = [
            key::<Contact>(""),
            key::<Contact>("page=2"),
            key::<Contact>("per_page=21"),
            key::<Contact>("sort=created_at"),
            key::<Contact>("q=ann"),
            key::<Contact>("q=Ann"),
            key::<Contact>("company=ann"),
            key::<Contact>("tag=ann"),
            key::<Contact>("q=a%26f%3Dx"),
            key::<Contact>("q=a&tag=f"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
