//! `ldap_filter`, `ldap_search_base` and the group settings' tokens, with the meanings
//! Cyrus's saslauthd gives them (`lak.c`), and RFC 4515 escaping of every value put into a
//! filter, so that no user name can change a filter's structure.
//!
//! | token | value |
//! |---|---|
//! | `%%` | `%` |
//! | `%u` | the user name as sent (`alice@example.org` or `alice`) |
//! | `%U` | the part of `%u` before its first `@` |
//! | `%d` | the part of `%u` after its first `@`, or the realm when there is none |
//! | `%r` | the realm |
//! | `%R` | `@` and the realm |
//! | `%s` | the service |
//! | `%D` | the user's DN (group filters) |
//! | `%1`..`%9` | the domain's labels from the right (`%1` = `org` in `example.org`): of `%d` |
//!
//! A token whose value is empty expands to nothing, as in Cyrus; an unknown `%x` is dropped.

/// The values tokens stand for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokens<'a> {
    /// `%u`.
    pub user: &'a str,
    /// `%r`.
    pub realm: &'a str,
    /// `%s`.
    pub service: &'a str,
    /// `%D`.
    pub dn: &'a str,
}

/// RFC 4515 escaping of an assertion value: `*`, `(`, `)`, `\` and NUL as `\2a`, `\28`,
/// `\29`, `\5c`, `\00` (Cyrus escapes the same five).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The `n`th label of `domain` from the right (1-based), when it has that many.
fn label(domain: &str, n: usize) -> Option<&str> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    labels.len().checked_sub(n).map(|i| labels[i])
}

/// Expands `pattern`'s tokens, each value escaped.
pub fn expand(pattern: &str, t: &Tokens<'_>) -> String {
    let domain_of_user = t
        .user
        .split_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty());
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(token) = chars.next() else {
            break; // a lone % at the end: dropped, as Cyrus does
        };
        match token {
            '%' => out.push('%'),
            'u' => out += &escape(t.user),
            'U' => out += &escape(t.user.split('@').next().unwrap_or_default()),
            'd' => out += &escape(domain_of_user.unwrap_or(t.realm)),
            'r' => out += &escape(t.realm),
            'R' if !t.realm.is_empty() => {
                out.push('@');
                out += &escape(t.realm);
            }
            's' => out += &escape(t.service),
            'D' => out += &escape(t.dn),
            '1'..='9' => {
                let n = token as usize - '0' as usize;
                let domain = domain_of_user.unwrap_or(t.realm);
                if let Some(l) = label(domain, n) {
                    out += &escape(l);
                }
            }
            _ => {}
        }
    }
    out
}

/// The attributes a filter pattern's items test (RFC 4515), lowercased, each once; `None`
/// when one cannot be told from the pattern: a token where an attribute stands, or an
/// extensible match without one (which tests every attribute).
pub fn attributes(pattern: &str) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    // An item starts the pattern (a filter without its parentheses) or follows a `(` that
    // opens no `&`, `|`, `!` or nested filter; values hold no unescaped parenthesis.
    let starts = std::iter::once(0).chain(
        pattern
            .match_indices('(')
            .map(|(i, _)| i + 1)
            .filter(|&i| !pattern[i..].starts_with(['&', '|', '!', '('])),
    );
    for start in starts {
        let item = &pattern[start..];
        if start == 0 && item.starts_with('(') {
            continue;
        }
        let end = item.find(['=', '~', '<', '>', ':', ')'])?;
        let name = &item[..end];
        let valid = !item[end..].starts_with(')')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ';'));
        if !valid {
            return None;
        }
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attributes_a_filter_tests() {
        let of = |p: &str| attributes(p).map(|a| a.join(" "));
        assert_eq!(of("(uid=%u)").as_deref(), Some("uid"));
        assert_eq!(
            of("(&(objectClass=posixAccount)(|(uid=%U)(mail=%u))(!(pwdAccountLockedTime=*)))")
                .as_deref(),
            Some("objectclass uid mail pwdaccountlockedtime")
        );
        assert_eq!(of("uid=%u").as_deref(), Some("uid"));
        assert_eq!(of("(&(UID=%u)(uid>=a)(cn~=%u))").as_deref(), Some("uid cn"));
        assert_eq!(of("(mail:caseExactMatch:=%u)").as_deref(), Some("mail"));
        // Tokens where an attribute stands, an extensible match on every attribute, garbage.
        assert_eq!(of("(%s=%u)"), None);
        assert_eq!(of("(:dn:2.5.13.5:=%u)"), None);
        assert_eq!(of("(uid)"), None);
        assert_eq!(of(""), None);
        assert_eq!(of("(&)"), None);
    }

    fn t<'a>(user: &'a str, realm: &'a str) -> Tokens<'a> {
        Tokens {
            user,
            realm,
            service: "smtp",
            dn: "",
        }
    }

    #[test]
    fn tokens_as_cyrus_expands_them() {
        let tok = t("alice@mail.example.org", "other.test");
        assert_eq!(expand("(uid=%u)", &tok), "(uid=alice@mail.example.org)");
        assert_eq!(expand("(uid=%U)", &tok), "(uid=alice)");
        assert_eq!(
            expand("%d|%r|%R", &tok),
            "mail.example.org|other.test|@other.test"
        );
        assert_eq!(expand("dc=%2,dc=%1", &tok), "dc=example,dc=org");
        assert_eq!(expand("%3 %4", &tok), "mail ");
        assert_eq!(
            expand("(&(uid=%U)(svc=%s))%%", &tok),
            "(&(uid=alice)(svc=smtp))%"
        );
        let bare = t("bob", "example.net");
        assert_eq!(
            expand("uid=%U,dc=%2,dc=%1 %d", &bare),
            "uid=bob,dc=example,dc=net example.net"
        );
        assert_eq!(expand("%R%x%", &t("bob", "")), "");
    }

    #[test]
    fn values_cannot_change_the_filter() {
        let tok = t("*)(uid=*))(|(uid=*", "example.org");
        let filter = expand("(uid=%u)", &tok);
        assert_eq!(
            filter,
            "(uid=\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a)"
        );
        assert_eq!(expand("%u", &t("a\\b\0c", "")), "a\\5cb\\00c");
        // The pattern's own parentheses stay; only values are escaped.
        assert_eq!(filter.matches('(').count(), 1);
    }
}
