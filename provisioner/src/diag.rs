//! Source locations and diagnostics.
//!
//! Every stage before execution collects *all* of its errors as [`Diagnostic`]s, each with the
//! file, line and column it came from, instead of stopping at the first one.

use std::fmt;
use std::sync::Arc;

/// A position in a source file. Lines and columns are 1-based, as editors show them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Loc {
    pub fn new(file: impl Into<Arc<str>>, line: u32, col: u32) -> Self {
        Loc {
            file: file.into(),
            line,
            col,
        }
    }

    /// A location that names only a file (for errors about a file as a whole).
    pub fn file(file: impl Into<Arc<str>>) -> Self {
        Loc::new(file, 0, 0)
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => write!(f, "{}", self.file),
            (l, 0) => write!(f, "{}:{}", self.file, l),
            (l, c) => write!(f, "{}:{}:{}", self.file, l, c),
        }
    }
}

/// One problem found in the input, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub loc: Option<Loc>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(loc: Option<Loc>, message: impl Into<String>) -> Self {
        Diagnostic {
            loc,
            message: message.into(),
        }
    }

    pub fn at(loc: &Loc, message: impl Into<String>) -> Self {
        Diagnostic::new(Some(loc.clone()), message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(loc) => write!(f, "{}: {}", loc, self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// An ordered collection of diagnostics. Stages push into it and keep going.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Diagnostics(Vec::new())
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.push(Diagnostic::at(loc, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Sorted by file, line and column, duplicates removed: the order an operator reads them in.
    pub fn sorted(mut self) -> Self {
        self.0
            .sort_by(|a, b| a.loc.cmp(&b.loc).then(a.message.cmp(&b.message)));
        self.0.dedup();
        self
    }

    /// `Ok(value)` when nothing was reported, else every diagnostic.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self.sorted())
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_display_omits_unknown_parts() {
        assert_eq!(Loc::new("a.yml", 3, 5).to_string(), "a.yml:3:5");
        assert_eq!(Loc::new("a.yml", 3, 0).to_string(), "a.yml:3");
        assert_eq!(Loc::file("a.yml").to_string(), "a.yml");
    }

    #[test]
    fn diagnostics_sort_by_location_and_dedup() {
        let mut d = Diagnostics::new();
        d.error(&Loc::new("b.yml", 1, 1), "x");
        d.error(&Loc::new("a.yml", 9, 1), "y");
        d.error(&Loc::new("a.yml", 2, 1), "z");
        d.error(&Loc::new("a.yml", 2, 1), "z");
        let s = d.sorted().to_string();
        assert_eq!(s, "a.yml:2:1: z\na.yml:9:1: y\nb.yml:1:1: x\n");
    }
}
