//! Command-line parsing with the semantics of glibc `getopt_long`, which every Cyrus tool
//! uses: short options cluster (`-cp`), an argument may be attached (`-uexample.org`) or
//! separate (`-u example.org`), options and operands may be mixed (glibc permutes them),
//! and `--` ends the options. Long options take `--name=value` or `--name value`.
//!
//! One parser serves the daemon and every tool, so their error texts are alike and match
//! what users of the Cyrus binaries have seen (`invalid option -- 'x'`). Each program's
//! options are one table of [`OptDef`]s, which the parser reads and from which the manual
//! pages and shell completions are made (`crate::manual`), so that they cannot drift apart.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// One option: for the parser, its letter and long name and whether it takes an argument;
/// for the manual and completions, the argument's name and kind and the help text.
#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    /// `-x`.
    pub short: Option<char>,
    /// `--name`.
    pub long: Option<&'static str>,
    /// The argument's name in the manual (`path`), when the option takes one.
    pub arg: Option<&'static str>,
    /// What the argument is, for completions.
    pub kind: ArgKind,
    /// One paragraph for the manual.
    pub help: &'static str,
}

/// What an option's argument is, for shell completions.
#[derive(Debug, Clone, Copy)]
pub enum ArgKind {
    /// None, or anything.
    Any,
    /// A file.
    File,
    /// A directory.
    Dir,
    /// A user name.
    User,
    /// A group name.
    Group,
    /// One of the words this gives (a function, so that a list built at run time, such as
    /// the passdbs of `passdb::MODULES`, can be one).
    OneOf(fn() -> Vec<&'static str>),
}

impl OptDef {
    /// A flag without an argument.
    pub const fn flag(
        short: Option<char>,
        long: Option<&'static str>,
        help: &'static str,
    ) -> OptDef {
        OptDef {
            short,
            long,
            arg: None,
            kind: ArgKind::Any,
            help,
        }
    }

    /// An option with an argument named `arg`, of `kind`.
    pub const fn with(
        short: Option<char>,
        long: Option<&'static str>,
        arg: &'static str,
        kind: ArgKind,
        help: &'static str,
    ) -> OptDef {
        OptDef {
            short,
            long,
            arg: Some(arg),
            kind,
            help,
        }
    }
}

/// What a program accepts: its option table.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// The options.
    pub options: &'a [OptDef],
}

/// One option as it was given, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The letter (`"u"`) or the long name (`"sasldb"`).
    pub name: String,
    /// The argument, when the option takes one.
    pub value: Option<OsString>,
}

impl Opt {
    /// The argument as UTF-8, or an error that names the option.
    pub fn str_value(&self) -> Result<&str, GetoptError> {
        let value = self.value.as_deref().unwrap_or_default();
        value
            .to_str()
            .ok_or_else(|| GetoptError::NotUtf8(self.display_name()))
    }

    /// The argument's raw bytes (passwords and user names need not be UTF-8).
    pub fn bytes_value(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default().as_bytes()
    }

    /// `-u` or `--sasldb`, for messages.
    fn display_name(&self) -> String {
        if self.name.chars().count() == 1 {
            format!("-{}", self.name)
        } else {
            format!("--{}", self.name)
        }
    }
}

/// The parsed command line.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Options, in order.
    pub opts: Vec<Opt>,
    /// Operands (non-option arguments), in order.
    pub operands: Vec<OsString>,
}

/// A command line that does not fit the [`Spec`]; the texts are glibc's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetoptError {
    /// An unknown short option.
    #[error("invalid option -- '{0}'")]
    InvalidOption(char),
    /// An unknown long option.
    #[error("unrecognized option '--{0}'")]
    UnrecognizedOption(String),
    /// A short option that needs an argument was last.
    #[error("option requires an argument -- '{0}'")]
    MissingShortArgument(char),
    /// A long option that needs an argument was last.
    #[error("option '--{0}' requires an argument")]
    MissingLongArgument(String),
    /// `--flag=value` for a long option that takes none.
    #[error("option '--{0}' doesn't allow an argument")]
    UnexpectedArgument(String),
    /// An argument that must be text is not UTF-8.
    #[error("the argument of {0} is not valid UTF-8")]
    NotUtf8(String),
}

impl Spec<'_> {
    fn short_takes_arg(&self, c: char) -> Option<bool> {
        self.options
            .iter()
            .find(|o| o.short == Some(c))
            .map(|o| o.arg.is_some())
    }

    fn long_takes_arg(&self, name: &str) -> Option<bool> {
        self.options
            .iter()
            .find(|o| o.long == Some(name))
            .map(|o| o.arg.is_some())
    }

    /// Parses `args` (without the program name).
    pub fn parse<I>(&self, args: I) -> Result<Parsed, GetoptError>
    where
        I: IntoIterator<Item = OsString>,
    {
        let mut parsed = Parsed::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let bytes = arg.as_bytes();
            if bytes == b"--" {
                parsed.operands.extend(args.by_ref());
                break;
            }
            if let Some(long) = bytes.strip_prefix(b"--") {
                let (name, inline) = match long.iter().position(|&b| b == b'=') {
                    Some(i) => (
                        &long[..i],
                        Some(OsStr::from_bytes(&long[i + 1..]).to_owned()),
                    ),
                    None => (long, None),
                };
                let name = String::from_utf8_lossy(name).into_owned();
                let Some(takes) = self.long_takes_arg(&name) else {
                    return Err(GetoptError::UnrecognizedOption(name));
                };
                let value = match (takes, inline) {
                    (true, Some(v)) => Some(v),
                    (true, None) => Some(
                        args.next()
                            .ok_or_else(|| GetoptError::MissingLongArgument(name.clone()))?,
                    ),
                    (false, Some(_)) => return Err(GetoptError::UnexpectedArgument(name)),
                    (false, None) => None,
                };
                parsed.opts.push(Opt { name, value });
                continue;
            }
            if bytes.len() < 2 || bytes[0] != b'-' {
                parsed.operands.push(arg);
                continue;
            }
            let cluster = &bytes[1..];
            let mut i = 0;
            while i < cluster.len() {
                let c = char::from(cluster[i]);
                let takes = self
                    .short_takes_arg(c)
                    .filter(|_| cluster[i].is_ascii())
                    .ok_or(GetoptError::InvalidOption(c))?;
                if !takes {
                    parsed.opts.push(Opt {
                        name: c.to_string(),
                        value: None,
                    });
                    i += 1;
                    continue;
                }
                let rest = &cluster[i + 1..];
                let value = if rest.is_empty() {
                    args.next().ok_or(GetoptError::MissingShortArgument(c))?
                } else {
                    OsStr::from_bytes(rest).to_owned()
                };
                parsed.opts.push(Opt {
                    name: c.to_string(),
                    value: Some(value),
                });
                break;
            }
        }
        Ok(parsed)
    }
}

/// The program name as invoked (`basename argv[0]`), as Cyrus prints it in messages.
pub fn program_name(default: &str) -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| default.to_owned())
}

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_name())
    }
}

/// How an option is written: `-a authmech`, `--config file`, `-v, --version`.
pub fn option_words(o: &OptDef) -> (Vec<String>, Option<&'static str>) {
    let mut names = Vec::new();
    if let Some(c) = o.short {
        names.push(format!("-{c}"));
    }
    if let Some(l) = o.long {
        names.push(format!("--{l}"));
    }
    (names, o.arg)
}

/// The options as a usage text lists them: the names and argument, then the help wrapped at
/// 80 columns.
pub fn option_list<'a>(options: impl Iterator<Item = &'a OptDef>) -> String {
    const HELP_COLUMN: usize = 27;
    let mut out = String::new();
    for o in options {
        let (names, arg) = option_words(o);
        let mut head = format!("  {}", names.join(", "));
        if let Some(arg) = arg {
            head += &format!(" <{arg}>");
        }
        let mut line = if head.len() + 1 < HELP_COLUMN {
            format!("{head:<HELP_COLUMN$}")
        } else {
            out += &head;
            out.push('\n');
            " ".repeat(HELP_COLUMN)
        };
        for word in o.help.split_whitespace() {
            if line.len() + word.len() > 80 && !line.trim().is_empty() {
                out += line.trim_end();
                out.push('\n');
                line = " ".repeat(HELP_COLUMN);
            }
            line += word;
            line.push(' ');
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn flag(c: char) -> OptDef {
        OptDef::flag(Some(c), None, "")
    }
    const fn arg(c: char) -> OptDef {
        OptDef::with(Some(c), None, "x", ArgKind::Any, "")
    }
    const SPEC: Spec<'static> = Spec {
        options: &[
            flag('v'),
            flag('p'),
            flag('c'),
            flag('d'),
            flag('n'),
            arg('f'),
            arg('u'),
            arg('a'),
            flag('h'),
            flag('?'),
            OptDef::flag(None, Some("json"), ""),
            OptDef::with(None, Some("sasldb"), "x", ArgKind::File, ""),
        ],
    };

    fn parse(args: &[&str]) -> Result<Parsed, GetoptError> {
        SPEC.parse(args.iter().map(OsString::from))
    }

    fn names(p: &Parsed) -> Vec<(String, Option<String>)> {
        p.opts
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    o.value.as_ref().map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn clusters_attached_and_separate_arguments() {
        let p = parse(&["-cp", "-uexample.org", "alice", "-f", "/tmp/db"]).unwrap();
        assert_eq!(
            names(&p),
            vec![
                ("c".into(), None),
                ("p".into(), None),
                ("u".into(), Some("example.org".into())),
                ("f".into(), Some("/tmp/db".into())),
            ]
        );
        assert_eq!(p.operands, vec![OsString::from("alice")]);
    }

    #[test]
    fn long_options_and_double_dash() {
        let p = parse(&["--sasldb=/a", "--json", "--sasldb", "/b", "--", "-c"]).unwrap();
        assert_eq!(p.opts.len(), 3);
        assert_eq!(p.opts[2].value.as_deref(), Some(OsStr::new("/b")));
        assert_eq!(p.operands, vec![OsString::from("-c")]);
    }

    #[test]
    fn errors_use_glibc_texts() {
        assert_eq!(
            parse(&["-x"]).unwrap_err().to_string(),
            "invalid option -- 'x'"
        );
        assert_eq!(
            parse(&["-u"]).unwrap_err().to_string(),
            "option requires an argument -- 'u'"
        );
        assert_eq!(
            parse(&["--nope"]).unwrap_err().to_string(),
            "unrecognized option '--nope'"
        );
        assert_eq!(
            parse(&["--json=1"]).unwrap_err().to_string(),
            "option '--json' doesn't allow an argument"
        );
        assert_eq!(
            parse(&["--sasldb"]).unwrap_err().to_string(),
            "option '--sasldb' requires an argument"
        );
        assert_eq!(parse(&["-:"]).unwrap_err(), GetoptError::InvalidOption(':'));
    }

    #[test]
    fn lone_dash_is_an_operand() {
        let p = parse(&["-"]).unwrap();
        assert_eq!(p.operands, vec![OsString::from("-")]);
    }
}
