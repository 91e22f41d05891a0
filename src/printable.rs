//! Text that came from outside (an upstream's error, a file name in a cache
//! being imported) made fit for a log line or a message: control characters
//! replaced by `?` (no forged lines or terminal escapes), at most 300
//! characters kept.

/// The most characters kept.
const MAX_CHARS: usize = 300;

/// `text` with control characters replaced and its length bounded.
pub fn printable(text: &str) -> String {
    text.chars().take(MAX_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn controls_are_replaced_and_length_bounded() {
        assert_eq!(super::printable("a\nb\x1b[31m"), "a?b?[31m");
        assert_eq!(super::printable(&"x".repeat(1000)).len(), super::MAX_CHARS);
    }
}
