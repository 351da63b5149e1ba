//! Logging to stderr, the only place the CNI spec leaves free for it (stdout carries the result).
//!
//! Not `tracing`: the plugin runs once per pod and exits, and startup time matters more than
//! spans. Lines are `brindle[pid] LEVEL message key=value ...`, one per event.

use std::fmt::Write as _;
use std::io::Write as _;

/// How much the plugin writes to stderr; `log_level` in the network configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum LogLevel {
    Off,
    /// Default: failures only.
    #[default]
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "off" => Some(LogLevel::Off),
            "error" => Some(LogLevel::Error),
            "warn" | "warning" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" | "trace" => Some(LogLevel::Debug),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            LogLevel::Off => "OFF",
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        }
    }
}

/// A stderr logger with a level and fields that every line repeats (command, container).
#[derive(Clone, Debug, Default)]
pub(crate) struct Logger {
    level: LogLevel,
    fields: Vec<(&'static str, String)>,
}

impl Logger {
    pub(crate) fn new(level: LogLevel) -> Self {
        Logger {
            level,
            fields: Vec::new(),
        }
    }

    pub(crate) fn set_level(&mut self, level: LogLevel) {
        self.level = level;
    }

    /// Adds a field printed on every following line.
    pub(crate) fn with(&mut self, key: &'static str, value: impl Into<String>) {
        self.fields.push((key, value.into()));
    }

    pub(crate) fn enabled(&self, level: LogLevel) -> bool {
        level != LogLevel::Off && level <= self.level
    }

    pub(crate) fn log(
        &self,
        level: LogLevel,
        msg: &str,
        fields: &[(&str, &dyn std::fmt::Display)],
    ) {
        if !self.enabled(level) {
            return;
        }
        let mut line = format!("brindle[{}] {} {msg}", std::process::id(), level.label());
        for (k, v) in &self.fields {
            let _ = write!(line, " {k}={v:?}");
        }
        for (k, v) in fields {
            let _ = write!(line, " {k}={:?}", v.to_string());
        }
        line.push('\n');
        // A closed stderr must not fail the plugin.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    pub(crate) fn error(&self, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        self.log(LogLevel::Error, msg, fields);
    }

    pub(crate) fn info(&self, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        self.log(LogLevel::Info, msg, fields);
    }

    pub(crate) fn debug(&self, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        self.log(LogLevel::Debug, msg, fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(LogLevel::parse("INFO"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("warning"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("none"), Some(LogLevel::Off));
        assert_eq!(LogLevel::parse("chatty"), None);
        let l = Logger::new(LogLevel::Info);
        assert!(l.enabled(LogLevel::Error));
        assert!(l.enabled(LogLevel::Info));
        assert!(!l.enabled(LogLevel::Debug));
        assert!(!l.enabled(LogLevel::Off));
        assert!(!Logger::new(LogLevel::Off).enabled(LogLevel::Error));
    }
}
