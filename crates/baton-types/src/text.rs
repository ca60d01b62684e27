//! Text cut to a budget: the start of a string that fits, never splitting a character.

/// The longest start of `text` that takes at most `max_bytes` written as a JSON string
/// (quotes and escapes included), never splitting a character.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    let mut kept = 2; // the quotes
    let mut end = 0;
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if kept + escaped > max_bytes {
            break;
        }
        kept += escaped;
        end = at + c.len_utf8();
    }
    &text[..end]
}

/// `text` within `max_bytes` of UTF-8, ending in `…` when cut.
pub fn clipped(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let ellipsis = '…'.len_utf8();
    let mut end = max_bytes.saturating_sub(ellipsis);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clipped_text_keeps_its_budget_and_whole_characters() {
        assert_eq!(clipped("short", 10), "short");
        let cut = clipped("ééééé", 6);
        assert!(cut.len() <= 6, "{cut}");
        assert_eq!(cut, "é…");
    }
}
