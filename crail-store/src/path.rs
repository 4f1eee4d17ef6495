//! Path syntax. Every path that enters the namenode goes through [`parse`], so the namespace
//! code only ever sees well-formed components.

use std::fmt;

/// Limits on path shape, enforced by the namenode (and checked early by the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathLimits {
    /// Bytes in a whole path.
    pub max_path_len: usize,
    /// Bytes in one component.
    pub max_name_len: usize,
    /// Components below the root.
    pub max_depth: usize,
}

impl Default for PathLimits {
    fn default() -> Self {
        Self {
            max_path_len: 4096,
            max_name_len: 255,
            max_depth: 32,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// Not valid UTF-8.
    NotUtf8,
    /// Does not start with `/`.
    NotAbsolute,
    /// An empty component (`//`, or a trailing `/`).
    EmptyComponent,
    /// A `.` or `..` component.
    DotComponent,
    /// A NUL byte.
    Nul,
    /// Longer than the limit.
    TooLong {
        /// Bytes in the path.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A component longer than the limit.
    NameTooLong {
        /// Bytes in the component.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Deeper than the limit.
    TooDeep {
        /// Components in the path.
        depth: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => f.write_str("not valid UTF-8"),
            Self::NotAbsolute => f.write_str("must start with '/'"),
            Self::EmptyComponent => f.write_str("empty component ('//' or trailing '/')"),
            Self::DotComponent => f.write_str("'.' and '..' are not allowed"),
            Self::Nul => f.write_str("contains a NUL byte"),
            Self::TooLong { len, max } => write!(f, "{len} bytes, the limit is {max}"),
            Self::NameTooLong { len, max } => {
                write!(f, "a component of {len} bytes, the limit is {max}")
            }
            Self::TooDeep { depth, max } => write!(f, "{depth} levels deep, the limit is {max}"),
        }
    }
}

#[cfg(feature = "server")]
/// Checks `path` and returns its components (empty for the root `/`).
pub(crate) fn parse<'a>(
    path: &'a [u8],
    limits: &PathLimits,
) -> std::result::Result<Vec<&'a str>, PathProblem> {
    let path = std::str::from_utf8(path).map_err(|_| PathProblem::NotUtf8)?;
    check(path, limits)
}

/// Like [`parse`] for a path already known to be UTF-8.
pub(crate) fn check<'a>(
    path: &'a str,
    limits: &PathLimits,
) -> std::result::Result<Vec<&'a str>, PathProblem> {
    if path.len() > limits.max_path_len {
        return Err(PathProblem::TooLong {
            len: path.len(),
            max: limits.max_path_len,
        });
    }
    let rest = path.strip_prefix('/').ok_or(PathProblem::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut components = Vec::with_capacity(8);
    for name in rest.split('/') {
        check_name(name, limits)?;
        components.push(name);
    }
    if components.len() > limits.max_depth {
        return Err(PathProblem::TooDeep {
            depth: components.len(),
            max: limits.max_depth,
        });
    }
    Ok(components)
}

/// Checks one component (a name inside a container).
pub(crate) fn check_name(name: &str, limits: &PathLimits) -> std::result::Result<(), PathProblem> {
    match name {
        "" => Err(PathProblem::EmptyComponent),
        "." | ".." => Err(PathProblem::DotComponent),
        _ if name.len() > limits.max_name_len => Err(PathProblem::NameTooLong {
            len: name.len(),
            max: limits.max_name_len,
        }),
        _ if name.contains('\0') => Err(PathProblem::Nul),
        _ => Ok(()),
    }
}

/// Joins a parent path and a child name.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(path: &str) -> Vec<&str> {
        check(path, &PathLimits::default()).unwrap()
    }

    fn bad(path: &[u8]) -> PathProblem {
        parse(path, &PathLimits::default()).unwrap_err()
    }

    #[test]
    fn accepts_well_formed_paths() {
        assert!(ok("/").is_empty());
        assert_eq!(ok("/a"), ["a"]);
        assert_eq!(ok("/a/b c/ü"), ["a", "b c", "ü"]);
        assert_eq!(ok("/.hidden/..x"), [".hidden", "..x"]);
    }

    #[test]
    fn refuses_malformed_paths() {
        assert_eq!(bad(b""), PathProblem::NotAbsolute);
        assert_eq!(bad(b"a/b"), PathProblem::NotAbsolute);
        assert_eq!(bad(b"//a"), PathProblem::EmptyComponent);
        assert_eq!(bad(b"/a/"), PathProblem::EmptyComponent);
        assert_eq!(bad(b"/a//b"), PathProblem::EmptyComponent);
        assert_eq!(bad(b"/a/./b"), PathProblem::DotComponent);
        assert_eq!(bad(b"/a/.."), PathProblem::DotComponent);
        assert_eq!(bad(b"/a\0b"), PathProblem::Nul);
        assert_eq!(bad(b"/\xff\xfe"), PathProblem::NotUtf8);
        let long_name = format!("/{}", "x".repeat(256));
        assert!(matches!(
            bad(long_name.as_bytes()),
            PathProblem::NameTooLong { len: 256, .. }
        ));
        let deep = "/d".repeat(33);
        assert!(matches!(
            bad(deep.as_bytes()),
            PathProblem::TooDeep { depth: 33, .. }
        ));
        let long = format!("/{}", ["y"; 3000].join("/"));
        assert!(matches!(bad(long.as_bytes()), PathProblem::TooLong { .. }));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(components) = parse(&bytes, &PathLimits::default()) {
                let rebuilt = format!("/{}", components.join("/"));
                prop_assert_eq!(rebuilt.as_bytes(), &bytes[..]);
            }
        }
    }
}
