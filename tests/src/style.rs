//! Terminal colours for the demo: ANSI SGR codes, off when `NO_COLOR` is set (to anything
//! non-empty) or when standard output is not a terminal.

use std::io::IsTerminal as _;

/// Whether to colour output.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    /// Colours when standard output is a terminal and `NO_COLOR` is unset or empty.
    #[must_use]
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self { on: !no_color && std::io::stdout().is_terminal() }
    }

    /// Colours on or off explicitly.
    #[must_use]
    pub const fn new(on: bool) -> Self {
        Self { on }
    }

    /// `text` in SGR `code` (such as `"32"` for green).
    #[must_use]
    pub fn paint(self, code: &str, text: &str) -> String {
        if self.on { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    /// Dim.
    #[must_use]
    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Bold.
    #[must_use]
    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Green.
    #[must_use]
    pub fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Yellow.
    #[must_use]
    pub fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Red.
    #[must_use]
    pub fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Cyan.
    #[must_use]
    pub fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }

    /// Magenta.
    #[must_use]
    pub fn magenta(self, text: &str) -> String {
        self.paint("35", text)
    }
}
